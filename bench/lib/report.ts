/**
 * The results file's shape, and its rendering as Markdown (latest.md) and SVG.
 * Every figure printed here is read from the results object; nothing is typed in by hand.
 */
import type { Summary } from './hist';
import { type Panel, renderSvg } from './svg';
import { BASELINE_ROWS, type MicroResult, ROW_LABELS, type Row, type RunResult } from './types';

export interface Machine {
  host: string;
  cpu: string;
  cores: number;
  mhz: number | null;
  cpuFlags: string[];
  memoryBytes: number;
  kernel: string;
  node: string;
  v8: string;
  rustc: string | null;
  commit: string | null;
  dirty: boolean;
}

export interface Probe {
  rate: number;
  sustained: boolean;
  p99Ns: number | null;
  achieved: number;
  growing: boolean;
  censored: number;
  foreignCpuPercent: number;
  /** The hand-written row: the hash its process chose (null for other rows). */
  hash: string | null;
  /** Failed while other processes used > 10 % of the machine: not counted, run again. */
  retried: boolean;
}

export interface Sustainable {
  row: Row;
  rate: number;
  /** This row's sustainable rate over the strongest baseline's (`Results.baseline`). */
  ratioToBaseline: number | null;
  capped: boolean;
  probes: Probe[];
  at: (RunResult & { foreignCpuPercent: number }) | null;
}

export interface Settings {
  players: number;
  rooms: number;
  roomSize: number;
  hz: number;
  rate: number;
  payload: number;
  frameBytes: number;
  auth: string;
  sliceMs: number;
  warmupS: number;
  windowS: number;
  drainLimitS: number;
  probe: { warmupS: number; windowS: number; drainLimitS: number; maxRate: number; resolution: number; maxProbes: number; votes: number };
  wtWorkers: number;
  equalLoadFraction: number;
}

/**
 * A run with what the rest of the machine did meanwhile: `foreignCpuPercent`, the busy
 * time not the run's own (other processes, kernel threads, interrupts and the host's
 * steal), and `stealPercent`, the host's steal alone (absent in results before 8c4b630).
 */
export type Measured = RunResult & { foreignCpuPercent: number; stealPercent?: number };

export interface Results {
  /** 2: the hand-written row, `baseline`, `ratioToBaseline` (was `ratioToPureNode`, against the js engine). */
  version: 2;
  kind: 'full' | 'quick';
  date: string;
  command: string;
  durationS: number;
  machine: Machine;
  settings: Settings;
  idle: Measured | null;
  macro: Measured[];
  sustainable: Sustainable[];
  /** The strongest baseline: the best sustainable rate among the rows without the addon (`BASELINE_ROWS`). */
  baseline: { row: Row; rate: number } | null;
  equalLoad: { rate: number; runs: Measured[] } | null;
  /** Every row at 1,000 and 10,000 moves/s. */
  lowRates: { rate: number; runs: Measured[] }[];
  /** One frame per message over loopback TCP (bench/permessage.ts). */
  perMessage: PerMessageRow[];
  micro: MicroResult[];
}

/** One row of the one-frame-per-message step (bench/permessage.ts); `valid`: frames that passed validation (hand) or were accepted (native), or whole frames counted (floor); `delivered`: moves that reached JavaScript. */
export interface PerMessageRow {
  row: 'floor' | 'hand' | 'native';
  rate: number;
  conns: number;
  messages: number;
  valid: number;
  delivered: number;
  jsThreadUsPerMessage: number;
  processUsPerMessage: number;
  /** Which of the interleaved runs (0-based); absent in results from before they were repeated. */
  rep?: number;
}

/** Per rate and row, the median of the interleaved runs (and every run's JS-thread figure). */
export function perMessageMedians(rows: PerMessageRow[]): { rate: number; row: PerMessageRow['row']; js: number; process: number; runs: PerMessageRow[] }[] {
  const median = (xs: number[]): number => {
    const v = [...xs].sort((a, b) => a - b);
    const m = v.length >> 1;
    return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
  };
  const out: { rate: number; row: PerMessageRow['row']; js: number; process: number; runs: PerMessageRow[] }[] = [];
  for (const rate of [...new Set(rows.map((r) => r.rate))]) {
    for (const row of [...new Set(rows.filter((r) => r.rate === rate).map((r) => r.row))]) {
      const runs = rows.filter((r) => r.rate === rate && r.row === row);
      out.push({ rate, row, js: median(runs.map((r) => r.jsThreadUsPerMessage)), process: median(runs.map((r) => r.processUsPerMessage)), runs });
    }
  }
  return out;
}

const COLORS: Record<Row, string> = { idle: '#999999', node: '#2ca02c', js: '#d62728', wt: '#ff7f0e', native: '#1f77b4' };

export function fmtNs(ns: number | null | undefined): string {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return 'n/a';
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(ns >= 1e10 ? 1 : 2)} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(ns >= 1e8 ? 0 : ns >= 1e7 ? 1 : 2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(ns >= 1e5 ? 0 : 1)} µs`;
  return `${ns.toFixed(ns >= 100 ? 0 : 1)} ns`;
}

export function fmtInt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'n/a';
  return Math.round(n).toLocaleString('en-US');
}

function fmtMiB(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(0)} MiB`;
}

function fmtMs(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`;
}

function ratio(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  return x >= 10 ? `${x.toFixed(0)}×` : `${x.toFixed(2)}×`;
}

/** The idle row's floor: how late the event loop ran each read of the clock (no moves). */
function floorOf(r: RunResult | null): Summary | null {
  if (r === null || r.row !== 'idle') return null;
  const f = r.floor ?? r.feedLag; // 6caf652's run kept it in `feedLag` (RunResult.floor)
  return f.count > 0 ? f : null;
}

function lat(r: RunResult, pick: (s: Summary) => number): string {
  const floor = floorOf(r);
  if (floor !== null) return fmtNs(pick(floor));
  if (r.latency === null) return '—';
  const v = fmtNs(pick(r.latency));
  return r.censored > 0 ? `≥ ${v}` : v;
}

/** Event-loop delay p99; when no timer ran in the window, the window itself bounds it from below. */
function eld(r: Measured): string {
  if (r.eventLoopDelaySamples === 0 && r.row !== 'idle') return `≥ ${fmtMs(r.windowS * 1000)} (no timer ran)`;
  return fmtMs(r.eventLoopDelayP99Ms);
}

function runTable(runs: Measured[]): string[] {
  const lines = [
    '| row | achieved moves/s | p50 | p99 | p99.9 | max | GC total / max | event-loop delay p99 | peak RSS | CPU, % of one core (JS thread, its time per move) | ingress alloc p99.9 | hot-path heap allocs | lost |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of runs) {
    const gc = `${fmtMs(r.gc.totalMs)} / ${fmtMs(r.gc.maxMs)}${r.workerGc === null ? '' : ` (workers ${fmtMs(r.workerGc.totalMs)} / ${fmtMs(r.workerGc.maxMs)})`}`;
    lines.push(
      `| ${ROW_LABELS[r.row]} | ${r.row === 'idle' ? '—' : fmtInt(r.achieved)} | ${lat(r, (s) => s.p50)} | ${lat(r, (s) => s.p99)} | ${lat(r, (s) => s.p999)} | ${lat(r, (s) => s.max)} | ${gc} | ${eld(r)} | ${fmtMiB(r.rssPeakBytes)} | ${r.cpuPercent.toFixed(0)} % (JS thread ${r.threads.main.toFixed(0)} %${r.row === 'idle' || r.achieved === 0 ? '' : `, ${fmtNs((r.threads.main / 100) * 1e9 / r.achieved)}/move`}) | ${r.alloc === null ? 'n/a' : fmtNs(r.alloc.p999)} | ${r.hotPathAllocations === null ? 'n/a' : fmtInt(r.hotPathAllocations)} | ${r.row === 'idle' ? '—' : fmtInt(r.lost)} |`,
    );
  }
  return lines;
}

function noteRuns(runs: Measured[]): string[] {
  const out: string[] = [];
  for (const r of runs) {
    if (r.row === 'idle') continue;
    const bits = [
      `${ROW_LABELS[r.row]}: accepted ${fmtInt(r.accepted)}, delivered ${fmtInt(r.delivered)}, rejected ${fmtInt(r.rejected)} (wrong tags planted in the load), lost ${fmtInt(r.lost)}, duplicates ${fmtInt(r.duplicates)}`,
      `Backpressure answers ${fmtInt(r.backpressureVerdicts)}`,
      r.rejectedByReason === null
        ? null
        : `rejections by reason: ${
            Object.entries(r.rejectedByReason)
              .filter(([, n]) => n > 0)
              .map(([k, n]) => `${k} ${fmtInt(n)}`)
              .join(', ') || 'none'
          }`,
      r.hash === null ? null : `hash chosen at startup: ${r.hash.chosen}`,
      r.censored > 0 ? `**${fmtInt(r.censored)} moves due in the window were still unsent at the drain limit** (counted at the latency they had reached: a lower bound)` : null,
      `dispatchStream call → JavaScript p99 ${r.fromDispatch === null ? 'n/a' : fmtNs(r.fromDispatch.p99)}`,
      r.engineDelivered === null ? null : `engine's own dispatch → delivered p99 ${fmtNs(r.engineDelivered.p99)}`,
      `feeder lateness p99 ${fmtNs(r.feedLag.p99)}`,
      `other processes used ${r.foreignCpuPercent.toFixed(0)} % of the machine meanwhile${r.stealPercent === undefined ? '' : ` (of which the host's steal ${r.stealPercent.toFixed(0)} %)`}`,
    ].filter((b) => b !== null);
    out.push(`- ${bits.join('; ')}.`);
  }
  return out;
}

interface Target {
  target: string;
  measured: string;
  met: boolean | null;
}

function targets(res: Results): Target[] {
  const t: Target[] = [];
  const floor = floorOf(res.idle);
  const micro = (name: string): MicroResult | undefined => res.micro.find((m) => m.name === name);
  const d = micro('dispatch() native');
  if (d !== undefined) t.push({ target: 'dispatch() ≤ 2× an empty N-API call taking a Buffer', measured: `${fmtNs(d.value)} vs ${fmtNs(d.floor)}: ${ratio(d.ratio)}`, met: d.ratio !== null && d.ratio <= 2 });
  const s = micro('dispatchStream() native');
  if (s !== undefined) t.push({ target: 'dispatchStream ≤ 30 ns per move', measured: `${fmtNs(s.value)} per move`, met: s.value <= 30 });
  const one = micro('dispatchStream() one frame per call');
  if (one !== undefined) {
    t.push({
      target: 'a one-frame dispatchStream call costs the JS thread no more than validating the frame by hand',
      measured: `${fmtNs(one.value)} vs ${fmtNs(one.floor)}: ${ratio(one.ratio)}`,
      met: one.ratio !== null && one.ratio <= 1,
    });
  }
  const pm = perMessageMedians(res.perMessage ?? []);
  for (const rate of [...new Set(pm.map((r) => r.rate))]) {
    const hand = pm.find((r) => r.rate === rate && r.row === 'hand');
    const nat = pm.find((r) => r.rate === rate && r.row === 'native');
    if (hand !== undefined && nat !== undefined) {
      const runs = nat.runs.length > 1 ? `medians of ${nat.runs.length} interleaved runs: ` : '';
      t.push({
        target: `one frame per message (loopback TCP, ${fmtInt(rate)} msgs/s): the JS thread pays no more than validating by hand`,
        measured: `${runs}${nat.js.toFixed(2)} vs ${hand.js.toFixed(2)} µs/message (process ${nat.process.toFixed(2)} vs ${hand.process.toFixed(2)})`,
        met: nat.js <= hand.js,
      });
    }
  }
  const read = micro('delivered-move read');
  if (read !== undefined) {
    t.push({
      target: 'reading a delivered move ≤ 2× the same reads from a plain Uint8Array',
      measured: `${fmtNs(read.value)} vs ${fmtNs(read.floor)} per move: ${ratio(read.ratio)}`,
      met: read.ratio !== null && read.ratio <= 2,
    });
  }
  const native = res.macro.find((r) => r.row === 'native');
  if (native !== undefined && native.hotPathAllocations !== null) {
    t.push({
      target: 'zero heap allocations per move on the hot path (steady state)',
      measured: `${fmtInt(native.hotPathAllocations)} counted over the ${fmtInt(native.windowMoves)} moves of the target-load window`,
      met: native.hotPathAllocations === 0,
    });
  }
  const a = micro('arena allocation (8 MiB ring, default)');
  if (a !== undefined) {
    const inSitu = native?.alloc?.p999;
    t.push({
      target: 'arena allocation p99.9 ≤ 100 ns',
      measured: `${fmtNs(a.value)} (micro, default 8 MiB ring, incl. a ~${fmtNs(a.extra?.clockFloorNs ?? Number.NaN)} clock read)${inSitu === undefined ? '' : `; ${fmtNs(inSitu)} in the target-load run (sampled 1 in 64)`}`,
      met: a.value <= 100 && (inSitu === undefined || inSitu <= 100),
    });
  }
  if (native !== undefined && native.latency !== null) {
    const l = native.latency;
    const vsFloor = (pick: (s: Summary) => number): string => (floor === null ? '' : ` (the idle floor: ${fmtNs(pick(floor))})`);
    t.push({ target: `${fmtInt(res.settings.rate)} moves/s on ${res.machine.cores} cores: p99 ≤ 1 ms`, measured: `${lat(native, (x) => x.p99)}${vsFloor((x) => x.p99)}`, met: native.censored === 0 && l.p99 <= 1e6 });
    t.push({ target: '… and p99.9 ≤ 2 ms', measured: `${lat(native, (x) => x.p999)}${vsFloor((x) => x.p999)}`, met: native.censored === 0 && l.p999 <= 2e6 });
    t.push({ target: '… and RSS ≤ 256 MiB', measured: fmtMiB(native.rssPeakBytes), met: native.rssPeakBytes <= 256 * (1 << 20) });
    if (res.idle !== null) {
      t.push({
        target: '… and V8 GC time no higher than with the dispatcher idle',
        measured: `${fmtMs(native.gc.totalMs)} vs ${fmtMs(res.idle.gc.totalMs)} idle (max pause ${fmtMs(native.gc.maxMs)} vs ${fmtMs(res.idle.gc.maxMs)})`,
        met: native.gc.totalMs <= Math.max(res.idle.gc.totalMs, 0) * 1.0 + 0.5,
      });
    }
  }
  const sn = res.sustainable.find((x) => x.row === 'native');
  const base = res.baseline;
  if (sn !== undefined) {
    t.push({ target: 'sustainable throughput ≥ 3,000,000 moves/s (the lean Go pipeline\'s level)', measured: `${fmtInt(sn.rate)} moves/s`, met: sn.rate >= 3_000_000 });
  }
  if (sn !== undefined && sn.ratioToBaseline !== null && base !== null) {
    t.push({
      target: `≥ 5× the sustainable throughput of the strongest baseline (${ROW_LABELS[base.row]})`,
      measured: `${fmtInt(sn.rate)} vs ${fmtInt(base.rate)} moves/s: ${ratio(sn.ratioToBaseline)}`,
      met: sn.ratioToBaseline >= 5,
    });
  }
  if (res.equalLoad !== null && base !== null) {
    const b = res.equalLoad.runs.find((r) => r.row === base.row);
    const nat = res.equalLoad.runs.find((r) => r.row === 'native');
    if (b?.latency && nat?.latency) {
      const x = b.latency.p999 / nat.latency.p999;
      t.push({
        target: `≥ 10× lower p99.9 than the strongest baseline (${ROW_LABELS[base.row]}) at a load both sustain`,
        measured: `${fmtNs(nat.latency.p999)} vs ${fmtNs(b.latency.p999)} at ${fmtInt(res.equalLoad.rate)} moves/s: ${ratio(x)}${floor === null ? '' : ` (the idle floor's p99.9: ${fmtNs(floor.p999)})`}`,
        met: x >= 10,
      });
    }
  }
  return t;
}

/** The hand-written row's hash: what each of its processes measured, and what it chose. */
function hashSection(res: Results): string[] {
  const runs: { where: string; r: Measured }[] = [];
  for (const r of res.macro) if (r.hash !== null) runs.push({ where: `target load, ${fmtInt(r.rate)} moves/s`, r });
  for (const x of res.sustainable) if (x.at !== null && x.at.hash !== null) runs.push({ where: `sustainable, passing probe at ${fmtInt(x.at.rate)} moves/s`, r: x.at });
  for (const r of res.equalLoad?.runs ?? []) if (r.hash !== null) runs.push({ where: `equal load, ${fmtInt(r.rate)} moves/s`, r });
  if (runs.length === 0) return [];
  const names = runs[0]!.r.hash!.candidates.map((c) => c.name);
  const L: string[] = [];
  L.push(`## ${ROW_LABELS.node}: the hash, measured and chosen at the start of each run`);
  L.push('');
  const h = runs[0]!.r.hash!;
  L.push(
    `Each run of the row times every candidate as the pipeline calls it (view, hash, constant-time compare) over ${fmtInt(h.itersPerTrial)} verifies of frames of the load (${h.signedBytes} signed bytes) per trial, median of ${h.candidates[0]!.trialsNs.length} round-robin trials, after a self-test against node:crypto, and keeps the fastest. ns per verify:`,
  );
  L.push('');
  L.push(`| run | chosen | ${names.map((n) => `\`${n}\``).join(' | ')} |`);
  L.push(`|---|---|${names.map(() => '---:').join('|')}|`);
  for (const { where, r } of runs) L.push(`| ${where} | \`${r.hash!.chosen}\` | ${r.hash!.candidates.map((c) => fmtNs(c.nsPerVerify)).join(' | ')} |`);
  const probes = res.sustainable.find((x) => x.row === 'node')?.probes ?? [];
  if (probes.length > 0) {
    const tally = new Map<string, number>();
    for (const p of probes) if (p.hash !== null) tally.set(p.hash, (tally.get(p.hash) ?? 0) + 1);
    L.push('');
    L.push(`Chosen by the ${probes.length} probes of the sustainable-rate search: ${[...tally].map(([k, n]) => `\`${k}\` ${n}×`).join(', ')}.`);
  }
  L.push('');
  L.push(...h.candidates.map((c) => `- \`${c.name}\`: ${c.what}.`));
  L.push('');
  return L;
}

export function renderMarkdown(res: Results, svgName: string): string {
  const s = res.settings;
  const m = res.machine;
  const L: string[] = [];
  L.push(`# Benchmark results: ${res.date.slice(0, 10)}, ${m.host}${res.kind === 'quick' ? ' (quick run)' : ''}`);
  L.push('');
  L.push(`Generated by \`${res.command}\` in ${res.durationS.toFixed(0)} s (commit ${m.commit ?? 'unknown'}${m.dirty ? ', with uncommitted changes' : ''}). Method: [bench/README.md](../README.md).`);
  L.push('');
  L.push(
    `Machine: ${m.cpu}${m.mhz === null ? '' : ` @ ${m.mhz.toFixed(0)} MHz`}, ${m.cores} cores (${m.cpuFlags.join(', ') || 'no SHA/AVX flags'}), ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB, Linux ${m.kernel}, Node.js ${m.node} (V8 ${m.v8})${m.rustc === null ? '' : `, ${m.rustc}`}.`,
  );
  L.push('');
  L.push(
    `Load: ${fmtInt(s.players)} players in ${fmtInt(s.rooms)} rooms × ${s.hz} Hz = **${fmtInt(s.rate)} moves/s**, ${s.payload}-byte payloads (${s.frameBytes}-byte frames), ${s.auth}, open loop in ${s.sliceMs} ms reads; ${s.warmupS} s warm-up, ${s.windowS} s measured. Latency: from the move's scheduled time to JavaScript holding it. One frame in 100,000 carries a wrong tag.`,
  );
  L.push('');
  L.push(`![latency by percentile](${svgName})`);
  L.push('');
  L.push(`## At the target load: ${fmtInt(s.rate)} moves/s`);
  L.push('');
  L.push(...runTable([...(res.idle === null ? [] : [res.idle]), ...res.macro]));
  L.push('');
  const floor = floorOf(res.idle);
  if (floor !== null) {
    L.push(
      `- ${ROW_LABELS.idle}: its latency cells are the floor — how late the event loop ran each ${s.sliceMs} ms read of the clock with no moves sent (one timer wake-up and one message between threads, no work; ${fmtInt(floor.count)} ${res.idle?.floor ? 'reads' : "wake-ups, each sampled at its oldest read, so the tail of late wake-ups reads low"}): what the harness and this machine alone add, measured in this row's own window. The hand-written and js rows cross the same threads and then work inline; the worker_threads and native rows cross more; a row measured in a quieter window can still show a lower tail than this one.`,
    );
  }
  L.push(...noteRuns(res.macro));
  L.push('');
  if (res.equalLoad !== null) {
    const lowest = res.sustainable.filter((x) => x.rate > 0).reduce<Sustainable | null>((a, x) => (a === null || x.rate < a.rate ? x : a), null);
    L.push(
      `## At a load every row sustains: ${fmtInt(res.equalLoad.rate)} moves/s (${(s.equalLoadFraction * 100).toFixed(0)} % of the lowest sustainable rate found${lowest === null ? '' : `, ${ROW_LABELS[lowest.row]}'s`})`,
    );
    L.push('');
    L.push(...runTable(res.equalLoad.runs));
    L.push('');
    L.push(...noteRuns(res.equalLoad.runs));
    L.push('');
  }
  for (const low of res.lowRates ?? []) {
    L.push(`## Every row at ${fmtInt(low.rate)} moves/s`);
    L.push('');
    L.push(...runTable(low.runs));
    L.push('');
  }
  if ((res.perMessage ?? []).length > 0) {
    L.push('## One frame per message over loopback TCP (bench/permessage.ts)');
    L.push('');
    L.push(
      "200 client connections (a child process) write one 120-byte frame per `write` (Nagle off), open loop on 1 ms ticks; the server's `'data'` handler gets about one frame per call. `floor`: the handler only counts bytes (what the sockets cost). `hand`: validation written inline (header checks, the hand-written JS SHA-256, compare). `native`: `dispatchStream(chunk)`, pull rooms drained by `drainAll()` every 50 ms. CPU from /proc (10 ms ticks).",
    );
    L.push('');
    const pm = perMessageMedians(res.perMessage);
    const many = pm.some((r) => r.runs.length > 1);
    if (many) {
      L.push('The rows take turns (floor, hand, native, floor, …); each figure is the median of its runs, every run in brackets.');
      L.push('');
    }
    L.push('| messages/s | row | JS thread µs/message | process µs/message | messages | valid |');
    L.push('|---:|---|---:|---:|---:|---:|');
    for (const r of pm) {
      const each = (f: (x: PerMessageRow) => number): string => (many ? ` (${r.runs.map((x) => f(x).toFixed(2)).join(', ')})` : '');
      const sum = (f: (x: PerMessageRow) => number): number => r.runs.reduce((n, x) => n + f(x), 0);
      L.push(
        `| ${fmtInt(r.rate)} | ${r.row} | ${r.js.toFixed(2)}${each((x) => x.jsThreadUsPerMessage)} | ${r.process.toFixed(2)}${each((x) => x.processUsPerMessage)} | ${fmtInt(sum((x) => x.messages))} | ${fmtInt(sum((x) => x.valid))} |`,
      );
    }
    L.push('');
  }
  if (res.sustainable.length > 0) {
    L.push(`## Sustainable throughput (p99 < 5 ms, no growing backlog, nothing left unsent)`);
    L.push('');
    L.push(
      `Search: short runs (${s.probe.warmupS} s warm-up, ${s.probe.windowS} s window), doubling from the first rate, then bisecting to within ${((s.probe.resolution - 1) * 100).toFixed(0)} %, capped at ${fmtInt(s.probe.maxRate)} moves/s. ${s.probe.votes > 1 ? `A rate holds when ${Math.floor(s.probe.votes / 2) + 1} of ${s.probe.votes} probes at it pass (the third runs only when the first two disagree); the p99 shown there is the worse passing probe's. ` : ''}A probe that failed while other processes used more than 10 % of the machine is struck through and run again (at most 3 times a row).`,
    );
    L.push('');
    const base = res.baseline;
    L.push(
      base === null
        ? `No baseline row (${BASELINE_ROWS.map((r) => ROW_LABELS[r]).join(', ')}) found a sustainable rate: no ratio.`
        : `Ratios are against the **strongest baseline**, the best sustainable rate among the rows without the addon (${BASELINE_ROWS.map((r) => ROW_LABELS[r]).join(', ')}): **${ROW_LABELS[base.row]}**, ${fmtInt(base.rate)} moves/s.`,
    );
    L.push('');
    L.push(`| row | sustainable moves/s | × ${base === null ? 'baseline' : ROW_LABELS[base.row]} | p99 there | p99.9 there | CPU there | probes (moves/s: pass ✓ / fail ✗) |`);
    L.push('|---|---:|---:|---:|---:|---:|---|');
    for (const x of res.sustainable) {
      const probes = x.probes.map((p) => (p.retried ? `~~${fmtInt(p.rate)} ✗~~ (others ${p.foreignCpuPercent.toFixed(0)} %, run again)` : `${fmtInt(p.rate)} ${p.sustained ? '✓' : '✗'}`)).join(', ');
      const name = base !== null && x.row === base.row ? `**${ROW_LABELS[x.row]}** (strongest baseline)` : ROW_LABELS[x.row];
      L.push(
        `| ${name} | ${x.rate > 0 ? fmtInt(x.rate) : 'none found'}${x.capped ? ' (cap)' : ''} | ${ratio(x.ratioToBaseline)} | ${x.at?.latency ? fmtNs(x.at.latency.p99) : 'n/a'} | ${x.at?.latency ? fmtNs(x.at.latency.p999) : 'n/a'} | ${x.at === null ? 'n/a' : `${x.at.cpuPercent.toFixed(0)} %`} | ${probes} |`,
      );
    }
    L.push('');
  }
  L.push(...hashSection(res));
  if (res.micro.length > 0) {
    L.push('## Micro floors (medians of repeated trials, each against its floor in the same process)');
    L.push('');
    L.push('| measure | value | floor | ratio | what |');
    L.push('|---|---:|---|---:|---|');
    for (const x of res.micro) {
      const v = x.unit === 'ns p99.9' ? `p99.9 ${fmtNs(x.value)} (p50 ${fmtNs(x.extra?.p50)}, p99 ${fmtNs(x.extra?.p99)}, max ${fmtNs(x.extra?.max)})` : `${fmtNs(x.value)} ${x.unit.replace('ns', '').trim()}`;
      L.push(`| ${x.name} | ${v} | ${x.floorName === null ? '—' : `${x.floorName}: ${fmtNs(x.floor)}`} | ${ratio(x.ratio)} | ${x.what} |`);
    }
    L.push('');
  }
  const t = targets(res);
  if (t.length > 0) {
    L.push('## Performance targets, as measured in this run');
    L.push('');
    L.push('| target | measured | |');
    L.push('|---|---|---|');
    for (const x of t) L.push(`| ${x.target} | ${x.measured} | ${x.met === null ? '?' : x.met ? 'met' : '**not met**'} |`);
    L.push('');
  }
  return `${L.join('\n')}\n`;
}

export function renderPlot(res: Results): string {
  const panels: Panel[] = [];
  const series = (runs: Measured[]): Panel['series'] =>
    runs.filter((r) => r.row !== 'idle' && r.curve.length > 0).map((r) => ({ label: `${ROW_LABELS[r.row]}${r.censored > 0 ? ' (≥: unsent moves)' : ''}`, color: COLORS[r.row], curve: r.curve }));
  panels.push({ title: `${fmtInt(res.settings.rate)} moves/s (target load)`, series: series(res.macro) });
  if (res.equalLoad !== null) panels.push({ title: `${fmtInt(res.equalLoad.rate)} moves/s (every row sustains)`, series: series(res.equalLoad.runs) });
  return renderSvg(panels, `move-dispatcher ${res.kind} benchmark, ${res.date.slice(0, 10)}, ${res.machine.host}: ${res.machine.cores} cores, ${res.settings.auth}, ${fmtInt(res.settings.rooms)} rooms`);
}
