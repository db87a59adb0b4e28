/**
 * `npm run bench [-- --quick] [options]`: the benchmark suite (method: bench/README.md).
 *
 * Steps, each in a fresh child process: micro floors (bench/micro.ts); the idle baseline;
 * the four rows at the target load (bench/load.ts); a search for each row's sustainable
 * rate (the rows taking turns, one probe each per round); the four rows again at a load every row sustains, and at 1,000 and 10,000 moves/s;
 * one frame per message over loopback TCP (bench/permessage.ts). Writes
 * `<out>/<date>-<host>.json`, and refreshes `<out>/latest.md` and `<out>/latency.svg`.
 * `--quick` (CI's smoke test) runs shorter windows and writes to `bench/results/quick/`
 * (ignored by git) unless `--out` says otherwise.
 *
 * Options: --quick, --out DIR, --players N (50000), --room-size N (10), --hz N (20),
 * --payload N (64), --auth sha256|hmac-sha256, --rows node,js,wt,native, --no-micro,
 * --no-sustainable, --no-low-rates, --no-per-message, --wt-workers N, --window S,
 * --keep-frames, --wait-idle S (before each
 * step, wait up to S seconds for other processes to leave the machine quiet).
 * `node dist/bench/run.js --render FILE.json` runs nothing: it rewrites latest.md and
 * latency.svg beside a result file from it (after a change of the report's wording).
 */
import { execFileSync, fork } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, hostname, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { benchAddonPath } from './lib/binding';
import type { PerMessageResult, PerMessageSpec } from './permessage';
import { ensureStore, frameLength, type Store, type StoreSpec } from './lib/frames';
import { fmtInt, fmtNs, type Machine, type Measured, type Probe, renderMarkdown, renderPlot, type Results, type Settings, type Sustainable } from './lib/report';
import { BASELINE_ROWS, type MicroResult, microTrials, ROW_LABELS, ROWS, type Row, type RunResult, type RunSpec } from './lib/types';

const ROOT = join(__dirname, '..', '..');
/** A failed probe during which other processes used more than this share of the machine is run again… */
const DISTURBED_PERCENT = 10;
/** …at most this many times per row. */
const PROBE_RETRIES = 3;
/** Deletes the frame store (set once it exists); runs on exit, error and Ctrl-C. */
let cleanup = (): void => {};

// ---------------------------------------------------------------------------------------
// options

interface Options {
  quick: boolean;
  out: string;
  players: number;
  roomSize: number;
  hz: number;
  payload: number;
  auth: 'sha256' | 'hmac-sha256';
  rows: Row[];
  micro: boolean;
  sustainable: boolean;
  /** Every row at 1,000 and 10,000 moves/s. */
  lowRates: boolean;
  /** One frame per message over loopback TCP (bench/permessage.ts). */
  perMessage: boolean;
  wtWorkers: number;
  window: number | null;
  keepFrames: boolean;
  waitIdle: number;
}

function parseArgs(argv: string[]): Options {
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, fallback: number): number => {
    const raw = value(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be a positive number, got ${raw}`);
    return n;
  };
  const quick = argv.includes('--quick');
  const auth = value('auth') ?? 'sha256';
  if (auth !== 'sha256' && auth !== 'hmac-sha256') throw new TypeError(`--auth must be sha256 or hmac-sha256, got ${auth}`);
  const rows = (value('rows') ?? ROWS.join(',')).split(',').map((r) => r.trim()) as Row[];
  for (const r of rows) if (!(ROWS as readonly string[]).includes(r)) throw new TypeError(`--rows takes ${ROWS.join(', ')}; got ${r}`);
  return {
    quick,
    out: value('out') ?? join(ROOT, 'bench', 'results', ...(quick ? ['quick'] : [])),
    players: Math.floor(num('players', 50_000)),
    roomSize: Math.floor(num('room-size', 10)),
    hz: num('hz', 20),
    payload: Math.floor(num('payload', 64)),
    auth,
    rows,
    micro: !argv.includes('--no-micro'),
    sustainable: !argv.includes('--no-sustainable'),
    lowRates: !argv.includes('--no-low-rates'),
    perMessage: !argv.includes('--no-per-message'),
    wtWorkers: Math.floor(num('wt-workers', Math.max(1, availableParallelism() - 1))),
    window: value('window') === undefined ? null : num('window', 8),
    keepFrames: argv.includes('--keep-frames'),
    waitIdle: value('wait-idle') === undefined ? 0 : num('wait-idle', 600),
  };
}

// ---------------------------------------------------------------------------------------
// machine

function sh(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], cwd: ROOT }).trim();
  } catch {
    return null;
  }
}

function machine(): Machine {
  let model = cpus()[0]?.model ?? 'unknown CPU';
  let mhz: number | null = cpus()[0]?.speed ?? null;
  let flags: string[] = [];
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    model = /model name\s*:\s*(.*)/.exec(info)?.[1]?.trim() ?? model;
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1];
    if (m !== undefined) mhz = Number(m);
    const f = new Set((/flags\s*:\s*(.*)/.exec(info)?.[1] ?? '').split(/\s+/));
    flags = ['sha_ni', 'avx2', 'avx512f'].filter((x) => f.has(x));
  } catch {
    // not Linux: os.cpus() only
  }
  const status = sh('git', ['status', '--porcelain', '--untracked-files=no']);
  return {
    host: hostname(),
    cpu: model,
    cores: availableParallelism(),
    mhz,
    cpuFlags: flags,
    memoryBytes: totalmem(),
    kernel: `${release()} (${sh('uname', ['-v']) ?? '?'})`,
    node: process.versions.node,
    v8: process.versions.v8,
    rustc: sh('rustc', ['--version']),
    commit: sh('git', ['rev-parse', '--short', 'HEAD']),
    dirty: status !== null && status.length > 0,
  };
}

/**
 * Busy and total jiffies of the whole machine (/proc/stat), or null off Linux. `busy`
 * includes `steal`: time the host ran something else on a vCPU that wanted to run.
 */
function machineJiffies(): { busy: number; total: number; steal: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total, steal: v[7] ?? 0 };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// progress

const tty = process.stdout.isTTY === true;
let lastLine = '';

function status(line: string): void {
  if (!tty) return;
  const cols = process.stdout.columns ?? 120;
  lastLine = line.length > cols - 1 ? `${line.slice(0, cols - 2)}…` : line;
  process.stdout.write(`\r\x1b[K${lastLine}`);
}

function say(line: string): void {
  if (tty && lastLine !== '') process.stdout.write('\r\x1b[K');
  lastLine = '';
  console.log(line);
}

// ---------------------------------------------------------------------------------------
// children

interface ChildProgress {
  type: 'progress';
  phase: string;
  elapsed?: number;
  total?: number;
  sent?: number;
  done?: number;
  backlog?: number;
}

/** `--wait-idle S`: before each step, wait up to S seconds for the rest of the machine to go quiet. */
let waitIdleS = 0;

async function waitForIdle(label: string): Promise<void> {
  if (waitIdleS <= 0) return;
  const until = Date.now() + waitIdleS * 1000;
  for (;;) {
    const a = machineJiffies();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineJiffies();
    if (a === null || b === null) return;
    const busy = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * 100;
    if (busy < 10 || Date.now() >= until) return;
    status(`${label}  waiting for the machine to go quiet (others use ${busy.toFixed(0)} %)…`);
  }
}

async function child<T>(script: string, arg: unknown, label: string): Promise<{ result: T; foreignCpuPercent: number; stealPercent: number }> {
  await waitForIdle(label);
  const before = machineJiffies();
  const t0 = Date.now();
  const proc = fork(join(__dirname, script), [JSON.stringify(arg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let cpuMs = 0;
  const result = await new Promise<T>((resolve, reject) => {
    let got: T | undefined;
    proc.on('message', (m: ChildProgress | { type: 'result'; result: T; cpuMs: number } | { type: 'error'; message: string }) => {
      if (m.type === 'progress') {
        const p = m;
        const clock = p.elapsed === undefined ? '' : ` ${p.elapsed.toFixed(1)}/${(p.total ?? 0).toFixed(1)} s`;
        const backlog = p.backlog === undefined ? '' : `  backlog ${fmtInt(p.backlog)}`;
        status(`${label}  ${p.phase}${clock}${backlog}`);
      } else if (m.type === 'result') {
        got = m.result;
        cpuMs = m.cpuMs;
      } else {
        reject(new Error(`${label}: ${m.message}`));
      }
    });
    proc.on('exit', (code) => {
      if (got !== undefined) resolve(got);
      else reject(new Error(`${label}: the child exited with ${code} before reporting`));
    });
  });
  const after = machineJiffies();
  const wallMs = Date.now() - t0;
  let foreign = 0;
  let steal = 0;
  if (before !== null && after !== null) {
    const busyMs = (after.busy - before.busy) * 10;
    foreign = Math.max(0, ((busyMs - cpuMs) / (wallMs * availableParallelism())) * 100);
    steal = Math.min(foreign, ((after.steal - before.steal) * 10 * 100) / (wallMs * availableParallelism()));
  }
  return { result, foreignCpuPercent: foreign, stealPercent: steal };
}

// ---------------------------------------------------------------------------------------

/** `--render FILE.json`: rewrites latest.md and latency.svg beside a result file (no run). */
function renderOnly(file: string): void {
  const res = JSON.parse(readFileSync(file, 'utf8')) as Results;
  const dir = dirname(file);
  writeFileSync(join(dir, 'latency.svg'), renderPlot(res));
  writeFileSync(join(dir, 'latest.md'), renderMarkdown(res, 'latency.svg'));
  say(`rewrote ${relative(process.cwd(), join(dir, 'latest.md'))} and latency.svg from ${relative(process.cwd(), file)}`);
}

/**
 * One row's search for its sustainable rate: from 100,000 moves/s, double until a rate
 * fails, then bisect (geometric mean) to `resolution`, at most `maxProbes` rates. A rate
 * holds when a majority of `votes` probes at it pass (stopping once the majority is
 * decided): one probe per rate let a single stall of the shared machine decide the row's
 * rate either way. A failure while other processes held the machine says nothing about the
 * row: that probe is run again (it stays listed), at most PROBE_RETRIES times a row.
 * Driven one probe at a time (`rate`, then `record`), so that rows can take turns.
 */
class RateSearch {
  readonly probes: Probe[] = [];
  /** The highest rate that held, and the probe reported for it (the worse passing one). */
  lo = 0;
  best: Measured | null = null;
  /** The lowest rate that failed. */
  #hi = Number.POSITIVE_INFINITY;
  /** The rate of the next probe, its rate's number (from 1) and its vote there (from 1). */
  rate: number;
  step = 1;
  done = false;
  #retries = 0;
  #passes = 0;
  #fails = 0;
  #worstPass: Measured | null = null;
  readonly #need: number;

  constructor(
    readonly row: Row,
    private readonly p: Settings['probe'],
    /** Rates are whole multiples of it (one move per player per slice). */
    private readonly unit: number,
  ) {
    this.#need = Math.floor(p.votes / 2) + 1;
    this.rate = this.#round(100_000);
  }

  #round(r: number): number {
    return Math.max(this.unit, Math.round(r / this.unit) * this.unit);
  }

  get vote(): number {
    return this.#passes + this.#fails + 1;
  }

  record(r: Measured): void {
    const disturbed = !r.sustained && r.foreignCpuPercent > DISTURBED_PERCENT && this.#retries < PROBE_RETRIES;
    this.probes.push({
      rate: this.rate,
      sustained: r.sustained,
      p99Ns: r.latency?.p99 ?? null,
      achieved: r.achieved,
      growing: r.growing,
      censored: r.censored,
      foreignCpuPercent: r.foreignCpuPercent,
      hash: r.hash?.chosen ?? null,
      retried: disturbed,
    });
    if (disturbed) {
      this.#retries++;
      return;
    }
    if (r.sustained) {
      this.#passes++;
      if (this.#worstPass === null || (r.latency?.p99 ?? 0) > (this.#worstPass.latency?.p99 ?? 0)) this.#worstPass = r;
    } else {
      this.#fails++;
    }
    if (this.#passes < this.#need && this.#fails < this.#need) return;
    // The rate is decided: the next one, or the end.
    if (this.#passes >= this.#need) {
      this.lo = this.rate;
      this.best = this.#worstPass;
    } else {
      this.#hi = this.rate;
    }
    this.#passes = 0;
    this.#fails = 0;
    this.#worstPass = null;
    const { lo, p } = this;
    const hi = this.#hi;
    let next: number;
    if (hi === Number.POSITIVE_INFINITY) next = Math.min(p.maxRate, this.rate * 2);
    else if (lo === 0) next = this.rate / 2;
    else next = Math.sqrt(lo * hi);
    next = this.#round(next);
    if (
      this.step >= p.maxProbes ||
      lo >= p.maxRate ||
      next < this.unit ||
      (lo > 0 && hi !== Number.POSITIVE_INFINITY && hi / lo <= p.resolution) ||
      next === this.rate ||
      next === lo ||
      next === hi
    ) {
      this.done = true;
      return;
    }
    this.rate = next;
    this.step++;
  }
}

async function main(): Promise<void> {
  const render = process.argv.indexOf('--render');
  if (render >= 0) {
    const file = process.argv[render + 1];
    if (file === undefined || file.startsWith('--')) throw new TypeError('--render takes a result file (.json)');
    renderOnly(file);
    return;
  }
  const opts = parseArgs(process.argv.slice(2));
  waitIdleS = opts.waitIdle;
  // Every step (children inherit the environment) runs the dispatcher on the bench build of
  // the addon, which also carries the micro benchmarks' exports: one binary per process.
  process.env.MOVE_DISPATCHER_NATIVE_PATH ??= benchAddonPath();
  const started = Date.now();
  const m = machine();
  const q = opts.quick;
  const sliceMs = 1;
  const rateUnit = 1000 / sliceMs;
  const roundRate = (r: number): number => Math.max(rateUnit, Math.round(r / rateUnit) * rateUnit);
  const spec: StoreSpec = { players: opts.players, roomSize: opts.roomSize, payload: opts.payload, auth: opts.auth };
  const settings: Settings = {
    players: opts.players,
    rooms: Math.ceil(opts.players / opts.roomSize),
    roomSize: opts.roomSize,
    hz: opts.hz,
    rate: roundRate(opts.players * opts.hz),
    payload: opts.payload,
    frameBytes: frameLength(spec),
    auth: opts.auth,
    sliceMs,
    warmupS: q ? 0.5 : 2,
    windowS: opts.window ?? (q ? 2 : 8),
    drainLimitS: q ? 2 : 5,
    probe: q
      ? { warmupS: 0.5, windowS: 1, drainLimitS: 0.5, maxRate: 4_000_000, resolution: 1.3, maxProbes: 6, votes: 1 }
      : { warmupS: 1, windowS: 2, drainLimitS: 1, maxRate: 4_000_000, resolution: 1.1, maxProbes: 12, votes: 3 },
    wtWorkers: opts.wtWorkers,
    equalLoadFraction: 0.5,
  };
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  say(`move-dispatcher benchmark (${q ? 'quick' : 'full'}): ${m.cpu}, ${m.cores} cores, Node.js ${m.node}`);
  say(
    `load: ${fmtInt(settings.players)} players, ${fmtInt(settings.rooms)} rooms, ${settings.hz} Hz = ${fmtInt(settings.rate)} moves/s, ${settings.payload}-byte payloads, ${settings.auth}`,
  );

  let store: Store | null = null;
  // The store is this run's own (a directory per process), so that another run on the
  // machine, finishing first, cannot delete it mid-run; --keep-frames shares one between runs.
  const storeDir = join(tmpdir(), 'move-dispatcher-bench', ...(opts.keepFrames ? [] : [`run-${process.pid}`]));
  const storeFor = async (frames: number): Promise<Store> => {
    if (store === null || store.frames < frames) {
      status(`encoding the frame store (${fmtInt(frames)} frames, ${settings.auth}, all cores)…`);
      const t = Date.now();
      store = await ensureStore(spec, Math.max(frames, store?.frames ?? 0), storeDir);
      say(`frame store: ${fmtInt(store.frames)} frames (${((store.frames * settings.frameBytes) / 2 ** 20).toFixed(0)} MiB), ${((Date.now() - t) / 1000).toFixed(1)} s`);
    }
    return store;
  };
  cleanup = (): void => {
    if (store !== null && !opts.keepFrames) {
      rmSync(store.path, { force: true });
      rmSync(`${store.path}.json`, { force: true });
      rmSync(storeDir, { recursive: true, force: true });
    }
  };
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });

  const load = async (row: Row, rate: number, warmupS: number, windowS: number, drainLimitS: number, label: string): Promise<Measured> => {
    // The idle row sends nothing: it needs no frames.
    const s = row === 'idle' ? { path: '', spec, frames: 0 } : await storeFor(opts.players + Math.ceil(rate * (warmupS + windowS)) + rateUnit);
    const runSpec: RunSpec = { row, rate, spec, store: s, warmupS, windowS, drainLimitS, sliceMs, wtWorkers: opts.wtWorkers };
    const { result, foreignCpuPercent, stealPercent } = await child<RunResult>('load.js', runSpec, label);
    return { ...result, foreignCpuPercent, stealPercent };
  };
  const brief = (r: Measured): string =>
    r.row === 'idle'
      ? `GC ${r.gc.totalMs.toFixed(1)} ms, CPU ${r.cpuPercent.toFixed(0)} %, RSS ${(r.rssPeakBytes / 2 ** 20).toFixed(0)} MiB`
      : `achieved ${fmtInt(r.achieved)}/s, p50 ${fmtNs(r.latency?.p50)}, p99 ${r.censored > 0 ? '≥ ' : ''}${fmtNs(r.latency?.p99)}, p99.9 ${fmtNs(
          r.latency?.p999,
        )}, CPU ${r.cpuPercent.toFixed(0)} %, lost ${r.lost}${r.hash === null ? '' : `, hash ${r.hash.chosen} (${r.hash.candidates.map((c) => `${c.name} ${fmtNs(c.nsPerVerify)}`).join(', ')})`}${
          r.foreignCpuPercent > 10 ? `  [other processes: ${r.foreignCpuPercent.toFixed(0)} % of the machine${r.stealPercent === undefined || r.stealPercent < 0.5 ? '' : `, of which host steal ${r.stealPercent.toFixed(0)} %`}]` : ''
        }`;

  const results: Results = {
    version: 2,
    kind: q ? 'quick' : 'full',
    date: new Date().toISOString(),
    command,
    durationS: 0,
    machine: m,
    settings,
    idle: null,
    macro: [],
    sustainable: [],
    baseline: null,
    equalLoad: null,
    lowRates: [],
    perMessage: [],
    micro: [],
  };

  // 1. micro floors
  if (opts.micro) {
    const m = microTrials(q);
    const s = await storeFor(m.perTrial * (m.warm + m.trials));
    const { result } = await child<MicroResult[]>('micro.js', { store: s, quick: q }, 'micro');
    results.micro = result;
    for (const x of result) say(`micro  ${x.name.padEnd(40)} ${fmtNs(x.value).padStart(9)} ${x.unit.replace('ns', '').trim()}${x.ratio === null ? '' : `  (${x.ratio.toFixed(2)}× ${x.floorName})`}`);
  }

  // 2. idle baseline and the target load
  results.idle = await load('idle', settings.rate, settings.warmupS, settings.windowS, 0, 'idle baseline');
  say(`idle   ${ROW_LABELS.idle.padEnd(32)} ${brief(results.idle)}`);
  for (const row of opts.rows) {
    const r = await load(row, settings.rate, settings.warmupS, settings.windowS, settings.drainLimitS, `target ${fmtInt(settings.rate)}/s · ${ROW_LABELS[row]}`);
    results.macro.push(r);
    say(`target ${ROW_LABELS[row].padEnd(32)} ${brief(r)}`);
  }

  // 3. sustainable throughput
  if (opts.sustainable) {
    const p = settings.probe;
    // The rows' searches take turns, one probe each per round: this VM's speed drifts over
    // minutes, and rows searched one after the other would each be measured in a different
    // stretch of it — a drift that lands on the ratios between rows.
    const searches = opts.rows.map((row) => new RateSearch(row, p, rateUnit));
    for (let round = 1; searches.some((x) => !x.done); round++) {
      for (const x of searches) {
        if (x.done) continue;
        const label = `sustainable · round ${round} · ${ROW_LABELS[x.row]} · rate ${x.step}${p.votes > 1 ? `, probe ${x.vote}` : ''}: ${fmtInt(x.rate)}/s`;
        const r = await load(x.row, x.rate, p.warmupS, p.windowS, p.drainLimitS, label);
        if (r.lost !== 0 || r.duplicates !== 0) results.macro.push(r); // surfaced below as a failure
        x.record(r);
      }
    }
    for (const x of searches) {
      const y: Sustainable = { row: x.row, rate: x.lo, ratioToBaseline: null, capped: x.lo >= p.maxRate, probes: x.probes, at: x.best };
      results.sustainable.push(y);
      say(`sustainable ${ROW_LABELS[x.row].padEnd(27)} ${x.lo > 0 ? `${fmtInt(x.lo)} moves/s (p99 ${fmtNs(x.best?.latency?.p99)})` : 'none found'}; probes: ${x.probes.map((z) => `${fmtInt(z.rate)}${z.sustained ? '✓' : z.retried ? '✗(disturbed, run again)' : '✗'}`).join(' ')}`);
    }
    // The strongest baseline: the best sustainable rate among the rows without the addon.
    const candidates = results.sustainable.filter((x) => BASELINE_ROWS.includes(x.row) && x.rate > 0);
    const strongest = candidates.reduce<Sustainable | null>((a, x) => (a === null || x.rate > a.rate ? x : a), null);
    if (strongest !== null) {
      results.baseline = { row: strongest.row, rate: strongest.rate };
      for (const x of results.sustainable) x.ratioToBaseline = x.rate / strongest.rate;
      say(`strongest baseline: ${ROW_LABELS[strongest.row]} (${fmtInt(strongest.rate)} moves/s)`);
    }

    // 4. every row at a load they all sustain: a fraction of the lowest sustainable rate found
    const base = Math.min(...results.sustainable.map((y) => y.rate).filter((y) => y > 0));
    if (Number.isFinite(base) && base > 0) {
      const rate = roundRate(base * settings.equalLoadFraction);
      const runs: Measured[] = [];
      for (const row of opts.rows) {
        const r = await load(row, rate, settings.warmupS, settings.windowS, settings.drainLimitS, `equal load ${fmtInt(rate)}/s · ${ROW_LABELS[row]}`);
        runs.push(r);
        say(`equal  ${ROW_LABELS[row].padEnd(32)} ${brief(r)}`);
      }
      results.equalLoad = { rate, runs };
    }
  }

  // 5. every row at two low rates (the js engine's tail at 1,000 and 10,000 moves/s)
  if (opts.lowRates) {
    for (const rate of [1_000, 10_000]) {
      const runs: Measured[] = [];
      for (const row of opts.rows) {
        const r = await load(row, rate, settings.warmupS, settings.windowS, settings.drainLimitS, `low rate ${fmtInt(rate)}/s · ${ROW_LABELS[row]}`);
        runs.push(r);
        say(`low    ${ROW_LABELS[row].padEnd(32)} ${brief(r)}`);
      }
      results.lowRates.push({ rate, runs });
    }
  }

  // 6. one frame per message over loopback TCP: the JavaScript thread's time per message
  if (opts.perMessage) {
    const conns = 200;
    // The rows differ by a few tenths of a µs and this VM drifts by as much between runs:
    // the rows take turns (floor, hand, native, floor, …) and the report gives medians.
    const reps = q ? 1 : 3;
    for (const rate of [20_000, 50_000]) {
      for (let rep = 0; rep < reps; rep++) {
        for (const row of ['floor', 'hand', 'native'] as const) {
          const { result } = await child<PerMessageResult>(
            'permessage.js',
            { row, rate, conns, seconds: q ? 2 : 4, rooms: 100 } satisfies PerMessageSpec,
            `one frame per message · ${row} · ${fmtInt(rate)}/s · run ${rep + 1}/${reps}`,
          );
          results.perMessage.push({ ...result, rep });
          say(`permsg ${row.padEnd(8)} ${fmtInt(rate)}/s over ${conns} connections (run ${rep + 1}/${reps}): JS thread ${result.jsThreadUsPerMessage.toFixed(2)} µs/msg, process ${result.processUsPerMessage.toFixed(2)} µs/msg (${fmtInt(result.messages)} messages, ${fmtInt(result.valid)} valid)`);
        }
      }
    }
  }

  results.durationS = (Date.now() - started) / 1000;
  cleanup();

  // 5. write
  mkdirSync(opts.out, { recursive: true });
  const day = results.date.slice(0, 10);
  const jsonPath = join(opts.out, `${q ? 'quick-' : ''}${day}-${m.host}.json`);
  writeFileSync(jsonPath, `${JSON.stringify(results, null, 1)}\n`);
  const svgName = 'latency.svg';
  writeFileSync(join(opts.out, svgName), renderPlot(results));
  const md = renderMarkdown(results, svgName);
  writeFileSync(join(opts.out, 'latest.md'), md);
  say('');
  say(md);
  say(`wrote ${relative(process.cwd(), jsonPath)}, ${relative(process.cwd(), join(opts.out, 'latest.md'))} and ${relative(process.cwd(), join(opts.out, svgName))} in ${results.durationS.toFixed(0)} s`);

  const all = [...results.macro, ...(results.equalLoad?.runs ?? []), ...results.sustainable.flatMap((x) => (x.at === null ? [] : [x.at]))];
  const broken = all.filter((r) => r.lost !== 0 || r.duplicates !== 0);
  if (broken.length > 0) {
    say(`FAILED: ${broken.map((r) => `${ROW_LABELS[r.row]} at ${fmtInt(r.rate)}/s lost ${r.lost}, duplicates ${r.duplicates}`).join('; ')}`);
    process.exitCode = 1;
  }
  if (!existsSync(jsonPath)) process.exitCode = 1;
}

main().catch((error: unknown) => {
  cleanup();
  say(`benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exitCode = 1;
});
