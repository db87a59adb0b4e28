/**
 * The WebSocket ingress benchmark (`npm run bench:ingress`; `-- --quick` for a ~75 s smoke
 * run). One load — WebSocket over loopback, open loop, one 120-byte v1 frame per message and
 * 8 frames per message — against five servers:
 *
 * - `native`       this package's native ingress, push rooms, `onDelivery` (bench/ingress-server.ts)
 * - `native-pull`  the same, pull rooms, `drainAll()` every 50 ms (a 20 Hz game loop)
 * - `ws-hand`      npm `ws` + validation by hand inline in the message handler (bench/hand)
 * - `ws-dispatch`  npm `ws` + `dispatchStream(message, sender)`, pull rooms, `drainAll()` every 50 ms
 * - `go`           net/http + gorilla/websocket, goroutine per connection, crypto/sha256,
 *                  replay windows, room inboxes, one consumer goroutine (bench/wsload/cmd/wsgo)
 *
 * The load generator is bench/wsload/cmd/wsload (Go, built here with `go build`): see its
 * header for the schedule (1 ms ticks, planned send times stamped in the payload: no
 * coordinated omission). It runs on the same machine, sharing its cores with the server.
 *
 * Per row and shape: a fresh server process and a generator holding `--conns` connections;
 * the rate (messages/s) steps up the ladder until a step fails — p99 ≥ the gate (5 ms; pull
 * rows 50 ms + 5 ms: their latency includes the wait for the next drain), or any move lost
 * (sent − received), or the generator could not send what it planned. Server CPU per message
 * is utime + stime of every thread (/proc/<pid>/stat) over the window / messages sent in it;
 * the Node rows' JavaScript thread's part (its schedstat time) is reported beside it.
 * Then RSS per idle connection (fresh server; VmRSS after connecting N clients that each sent
 * one message and idled 2 s, minus VmRSS before, / N; "before" is read after a warm-up of
 * `--rss-warm` (200) other clients that connected, sent one message and left, so that the
 * process's first-use costs — code pages first run, a thread's read buffer, the allocator's
 * caches, V8's young generation grown by the first deliveries — are not counted as the
 * connections'; the figure from the fresh server's RSS, which also counts what the warm-up
 * left behind, is reported beside it) and
 * connections held per process
 * (fresh server, cap = `ulimit -Hn` − 300; more attempts than the cap, from two generator
 * processes: held, refused with 503, failed otherwise, and how long the slowest refusal took).
 *
 * Writes `bench/results/ingress/<date>-<host>.json` and `latest.md` (quick: under
 * `bench/results/quick/ingress/`, ignored by git). `--render <json>` only rewrites the
 * `latest.md` beside a result file from it (after a change to the report's wording).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { issueTicket } from '../index';
import type { IngressRow, IngressServerSpec } from './ingress-server';

type Row = IngressRow | 'go';
const ALL_ROWS: Row[] = ['native', 'native-pull', 'ws-hand', 'ws-dispatch', 'go'];
const PULL_ROWS = new Set<Row>(['native-pull', 'ws-dispatch']);
const GATE_MS = 5;
const PULL_TICK_MS = 50;

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const opt = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const nums = (s: string | undefined): number[] | undefined => s?.split(',').map(Number);
const quick = flag('quick');
const rows = (opt('rows')?.split(',') as Row[] | undefined) ?? ALL_ROWS;
for (const r of rows) if (!ALL_ROWS.includes(r)) throw new Error(`--rows: unknown row ${r} (${ALL_ROWS.join(', ')})`);
const shapes = nums(opt('frames')) ?? [1, 8];
const conns = Number(opt('conns') ?? (quick ? 200 : 2000));
const roomSize = Number(opt('room-size') ?? 10);
const warmMs = Number(opt('warm') ?? (quick ? 0.3 : 1)) * 1000;
const windowMs = Number(opt('window') ?? (quick ? 1 : 3)) * 1000;
const drainMs = 300;
const ladders: Record<number, number[]> = {
  1: nums(opt('rates')) ?? (quick ? [10_000, 20_000] : [10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 140_000, 180_000, 240_000, 320_000]),
  8: nums(opt('rates8')) ?? (quick ? [2_500] : [2_500, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000]),
};
/** The rate every row is compared at (p99, CPU per message), per shape. */
const commonRate: Record<number, number> = { 1: Number(opt('common-rate') ?? 20_000), 8: Number(opt('common-rate8') ?? 2_500) };
const rssSizes = flag('no-rss') ? [] : (nums(opt('rss')) ?? (quick ? [1_000] : [1_000, 5_000, 15_000]));
/** Clients that connect, send one message and leave before an RSS baseline is read (0: none). */
const rssWarm = Number(opt('rss-warm') ?? 200);
const noCap = flag('no-cap');
/** Skips the load ladders (`--no-load --no-cap`: only the idle-RSS rows, e.g. `--rows native --rss 15000`; `--no-rss` skips those). */
const noLoad = flag('no-load');
const hardLimit = Number(spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim()) || 1024;
/** The cap every server is given (native: maxConnections), and how many connections the test attempts. */
const capConns = quick ? 300 : Math.max(100, hardLimit - 300);
const capAttempts = quick ? 400 : capConns + 1_300;
const sources = 32;
const root = join(__dirname, '..', '..');
const outDir = opt('out') ?? join(root, 'bench', 'results', quick ? 'quick' : '', 'ingress');
const retries = quick ? 0 : 1;
/** Probes per rate: a rate holds when a majority of them pass (quick: one decides). */
const votes = quick ? 1 : 3;

// ---------------------------------------------------------------- processes

interface Proc {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  /** The next JSON line of `type` (lines of other types are kept for later). */
  next(type: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  send(line: string): void;
  stop(): Promise<void>;
}

function start(cmd: string, args: string[], what: string): Proc {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const queue: Record<string, unknown>[] = [];
  const waiters: { type: string; resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  let stderr = '';
  let exited: string | null = null;
  child.stderr.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-4000);
  });
  const deliver = (): void => {
    for (let w = 0; w < waiters.length; w++) {
      const i = queue.findIndex((m) => m.type === waiters[w]!.type);
      if (i >= 0) {
        const [m] = queue.splice(i, 1);
        waiters.splice(w--, 1)[0]!.resolve(m!);
      }
    }
  };
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      queue.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      process.stderr.write(`[${what}] ${line}\n`);
      return;
    }
    deliver();
  });
  child.on('exit', (code, signal) => {
    exited = `${what} exited (${code ?? signal})${stderr === '' ? '' : `: ${stderr.trim()}`}`;
    for (const w of waiters.splice(0)) w.reject(new Error(exited));
  });
  return {
    child,
    pid: child.pid!,
    next(type, timeoutMs = 120_000) {
      return new Promise((resolve, reject) => {
        if (exited !== null && !queue.some((m) => m.type === type)) return reject(new Error(exited));
        const t = setTimeout(() => reject(new Error(`${what}: no '${type}' in ${timeoutMs} ms; stderr: ${stderr.trim()}`)), timeoutMs);
        waiters.push({
          type,
          resolve: (v) => {
            clearTimeout(t);
            resolve(v);
          },
          reject: (e) => {
            clearTimeout(t);
            reject(e);
          },
        });
        deliver();
      });
    },
    send(line) {
      if (exited === null) child.stdin.write(`${line}\n`);
    },
    stop() {
      return new Promise((resolve) => {
        if (exited !== null) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        child.on('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.stdin.end();
      });
    },
  };
}

let bin = '';
const ticketKey = randomBytes(32);
let ticketDir = '';
let nextTicketFile = 0;

function buildGo(): { goVersion: string } {
  bin = mkdtempSync(join(tmpdir(), 'wsbench-'));
  ticketDir = bin;
  const cwd = join(root, 'bench', 'wsload');
  for (const cmd of ['wsload', 'wsgo']) {
    const r = spawnSync('go', ['build', '-o', join(bin, cmd), `./cmd/${cmd}`], { cwd, encoding: 'utf8', stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`go build ./cmd/${cmd} failed (is Go ≥ 1.22 installed?)`);
  }
  return { goVersion: spawnSync('go', ['version'], { encoding: 'utf8' }).stdout.trim() };
}

/** Tickets for players [first, first + n): one a line, valid 300 s (single use: minted per connect). */
function tickets(first: number, n: number): string {
  const lines: string[] = [];
  for (let p = first; p < first + n; p++) lines.push(issueTicket(ticketKey, { room: Math.floor(p / roomSize), player: p, ttlMs: 300_000 }));
  const file = join(ticketDir, `tickets-${nextTicketFile++}.txt`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** The warm-up clients' first player: past every RSS size's, on a room boundary. */
const rssWarmFirst = Math.ceil(Math.max(0, ...rssSizes) / roomSize) * roomSize;
const maxPlayers = Math.max(conns, ...rssSizes, noCap ? 0 : capAttempts);
const rooms = Math.ceil(maxPlayers / roomSize);
/** Rooms of the RSS rows' servers: the warm-up's players too (the load servers keep `rooms`). */
const rssRooms = Math.max(rooms, Math.ceil((rssWarmFirst + rssWarm) / roomSize));

async function startServer(row: Row, cap: number, serverRooms = rooms): Promise<{ proc: Proc; port: number }> {
  let proc: Proc;
  if (row === 'go') {
    proc = start(join(bin, 'wsgo'), ['-ticket-key', ticketKey.toString('hex'), '-rooms', String(serverRooms), '-room-size', String(roomSize), '-cap', String(cap)], 'wsgo');
  } else {
    const spec: IngressServerSpec = { row, rooms: serverRooms, roomSize, cap, ticketKeyHex: ticketKey.toString('hex') };
    proc = start(process.execPath, [join(__dirname, 'ingress-server.js'), JSON.stringify(spec)], row);
  }
  const ready = await proc.next('ready', 60_000);
  return { proc, port: ready.port as number };
}

function startGen(port: number, n: number, first: number, frames: number): Proc {
  return start(
    join(bin, 'wsload'),
    ['-url', `ws://127.0.0.1:${port}/`, '-tickets', tickets(first, n), '-conns', String(n), '-first', String(first), '-room-size', String(roomSize), '-sources', String(sources), '-burst', '2000', '-frames', String(frames)],
    'wsload',
  );
}

// ---------------------------------------------------------------- /proc

/** utime + stime of every thread of `pid`, in ms (10 ms ticks). */
function cpuMs(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

/** Time on CPU of the process's main thread (the JavaScript thread of a Node server), in ms (schedstat: ns). */
function mainThreadCpuMs(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return Number.NaN;
  }
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? Number.NaN : Number(m[1]);
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- steps

interface Latency {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

interface Step {
  rate: number;
  frames: number;
  pass: boolean;
  why: string[];
  attempt: number;
  /** Whether it counted towards its rate's verdict (a failure while other processes held the machine is run again instead). */
  counted: boolean;
  plannedMessages: number;
  sentMessages: number;
  sentMoves: number;
  receivedMoves: number;
  lost: number;
  latencyMs: { p50: number; p99: number; p999: number; max: number };
  serverCpuMs: number;
  serverCpuPercent: number;
  cpuUsPerMessage: number;
  cpuUsPerMove: number;
  /** The JavaScript thread's share of `cpuUsPerMessage` (Node rows; null for Go). */
  jsCpuUsPerMessage: number | null;
  generatorCpuPercent: number;
  /** CPU of every other process on the machine during the window, % of one core. */
  otherCpuPercent: number;
  generatorLagUs: { p50: number; p99: number; max: number };
  server: Record<string, unknown>;
}

async function step(row: Row, server: Proc, gen: Proc, rate: number, frames: number, attempt: number): Promise<Step> {
  server.send('reset');
  await server.next('reset');
  gen.send(`run ${rate} ${warmMs} ${windowMs} ${drainMs}`);
  await gen.next('window-start', 60_000);
  const s0 = cpuMs(server.pid);
  const j0 = mainThreadCpuMs(server.pid);
  const g0 = cpuMs(gen.pid);
  const m0 = machineTicks();
  const t0 = performance.now();
  await gen.next('window-end', windowMs + 60_000);
  const wall = performance.now() - t0;
  const s1 = cpuMs(server.pid);
  const j1 = mainThreadCpuMs(server.pid);
  const g1 = cpuMs(gen.pid);
  const m1 = machineTicks();
  const res = await gen.next('result', 120_000);
  server.send('stats');
  const st = await server.next('stats');
  const lat = st.latencyNs as Latency;
  const sentMessages = res.sentMessages as number;
  const sentMoves = res.sentMoves as number;
  const receivedMoves = st.measured as number;
  const serverCpu = s1 - s0;
  const genCpu = g1 - g0;
  const machineMs = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * cpus().length * wall;
  const ms = (ns: number): number => (Number.isFinite(ns) && ns >= 0 ? ns / 1e6 : Number.NaN);
  const gate = GATE_MS + (PULL_ROWS.has(row) ? PULL_TICK_MS : 0);
  const why: string[] = [];
  const p99 = ms(lat.p99);
  if (!(p99 < gate)) why.push(`p99 ${p99.toFixed(2)} ms ≥ ${gate} ms`);
  if (receivedMoves !== sentMoves) why.push(`lost ${sentMoves - receivedMoves} of ${sentMoves} moves`);
  if (sentMessages < (res.plannedMessages as number)) why.push(`generator sent ${sentMessages} of ${res.plannedMessages as number} planned messages`);
  if ((res.writeErrors as number) > 0 || (res.deadConns as number) > 0) why.push(`${res.deadConns as number} connections died`);
  const { type: _t, latencyNs: _l, ...server2 } = st;
  return {
    rate,
    frames,
    pass: why.length === 0,
    why,
    attempt,
    counted: true,
    plannedMessages: res.plannedMessages as number,
    sentMessages,
    sentMoves,
    receivedMoves,
    lost: sentMoves - receivedMoves,
    latencyMs: { p50: ms(lat.p50), p99, p999: ms(lat.p999), max: ms(lat.max) },
    serverCpuMs: serverCpu,
    serverCpuPercent: (serverCpu / wall) * 100,
    cpuUsPerMessage: (serverCpu * 1000) / Math.max(1, sentMessages),
    cpuUsPerMove: (serverCpu * 1000) / Math.max(1, sentMoves),
    jsCpuUsPerMessage: row === 'go' ? null : ((j1 - j0) * 1000) / Math.max(1, sentMessages),
    generatorCpuPercent: (genCpu / wall) * 100,
    otherCpuPercent: Math.max(0, ((machineMs - serverCpu - genCpu) / wall) * 100),
    generatorLagUs: { p50: res.lagP50Us as number, p99: res.lagP99Us as number, max: res.lagMaxUs as number },
    server: server2,
  };
}

interface LoadResult {
  row: Row;
  frames: number;
  conns: number;
  connected: Record<string, unknown>;
  gateMs: number;
  steps: Step[];
  sustainable: number | null;
  /** The step that stands for the sustainable rate (see `representative`). */
  atSustainable: Step | null;
  atCommon: Step | null;
  error?: string;
}

/**
 * The step that stands for a rate's votes: by p99, the median of three, the worse of two.
 */
function representative(steps: Step[]): Step | null {
  const sorted = [...steps].sort((a, b) => a.latencyMs.p99 - b.latencyMs.p99);
  return sorted[Math.floor(sorted.length / 2)] ?? null;
}

async function load(row: Row, frames: number): Promise<LoadResult> {
  const gateMs = GATE_MS + (PULL_ROWS.has(row) ? PULL_TICK_MS : 0);
  const out: LoadResult = { row, frames, conns, connected: {}, gateMs, steps: [], sustainable: null, atSustainable: null, atCommon: null };
  const { proc: server, port } = await startServer(row, capConns);
  const gen = startGen(port, conns, 0, frames);
  try {
    out.connected = await gen.next('connected');
    const { type: _t, ...c } = out.connected;
    out.connected = c;
    if ((c.held as number) !== conns) throw new Error(`only ${c.held as number} of ${conns} connections opened: ${JSON.stringify(c)}`);
    // A rate holds when a majority of `votes` probes at it pass (stopping once that is
    // decided): one probe per rate let a single stall of the shared machine decide a row's
    // figure either way. A failure while other processes used more than 10 % of a core is
    // run again (`retries` times) and not counted.
    const need = Math.floor(votes / 2) + 1;
    for (const rate of ladders[frames] ?? []) {
      const counted: Step[] = [];
      let passes = 0;
      let disturbed = 0;
      while (passes < need && counted.length - passes < need) {
        const s = await step(row, server, gen, rate, frames, counted.length + disturbed + 1);
        out.steps.push(s);
        log(
          `    ${String(rate).padStart(7)} msg/s  p50 ${s.latencyMs.p50.toFixed(2)}  p99 ${s.latencyMs.p99.toFixed(2)}  p99.9 ${s.latencyMs.p999.toFixed(2)} ms  ` +
            `cpu ${s.cpuUsPerMessage.toFixed(1)} µs/msg (${s.serverCpuPercent.toFixed(0)} %${s.jsCpuUsPerMessage === null ? '' : `; JS thread ${s.jsCpuUsPerMessage.toFixed(2)}`})  gen ${s.generatorCpuPercent.toFixed(0)} %  other ${s.otherCpuPercent.toFixed(0)} %  lost ${s.lost}  ${s.pass ? 'ok' : s.why.join('; ')}`,
        );
        if (!s.pass && s.otherCpuPercent > 10 && disturbed < retries) {
          log(`    ${rate}/s failed while other processes used ${s.otherCpuPercent.toFixed(0)} % — again (not counted)`);
          disturbed++;
          s.counted = false;
          continue;
        }
        counted.push(s);
        if (s.pass) passes++;
      }
      const held = passes >= need;
      if (rate === commonRate[frames]) out.atCommon = representative(counted);
      if (!held) break;
      out.sustainable = rate;
      out.atSustainable = representative(counted.filter((s) => s.pass));
    }
    // Every row is compared at the common rate: run it if the ladder stopped below it.
    const common = commonRate[frames];
    if (out.atCommon === null && common !== undefined && !out.steps.some((s) => s.rate >= common)) {
      const s = await step(row, server, gen, common, frames, 1);
      out.steps.push(s);
      out.atCommon = s;
      log(`    ${String(common).padStart(7)} msg/s (common rate)  p50 ${s.latencyMs.p50.toFixed(2)}  p99 ${s.latencyMs.p99.toFixed(2)} ms  cpu ${s.cpuUsPerMessage.toFixed(1)} µs/msg  lost ${s.lost}  ${s.pass ? 'ok' : s.why.join('; ')}`);
    }
  } catch (e) {
    out.error = e instanceof Error ? e.message : String(e);
    log(`    error: ${out.error}`);
  } finally {
    gen.send('close');
    await gen.stop();
    await server.stop();
  }
  return out;
}

interface RssResult {
  row: Row;
  conns: number;
  held: number;
  /** VmRSS of the fresh server, before the warm-up. */
  coldKiB: number;
  /** VmRSS after the warm-up: the baseline. */
  baseKiB: number;
  loadedKiB: number;
  kibPerConn: number;
  /** (loaded − cold) / held: with the process's first-use costs, and what the warm-up left behind. */
  coldKibPerConn?: number;
  /** Warm-up clients before the baseline (absent in results from before the warm-up). */
  warm?: number;
  pinged: number;
  received: number;
  /** Native rows: growth per connection of jemalloc's stats.allocated, .active and .resident, in bytes. */
  jemallocBytesPerConn?: { allocated: number; active: number; resident: number };
}

async function rss(row: Row, n: number): Promise<RssResult> {
  const { proc: server, port } = await startServer(row, Math.max(capConns, n + 100), rssRooms);
  let gen: Proc | null = null;
  try {
    await sleep(1_000);
    const coldKiB = rssKiB(server.pid);
    let baseKiB = coldKiB;
    if (rssWarm > 0) {
      server.send('stats');
      await server.next('stats');
      const w = startGen(port, rssWarm, rssWarmFirst, 1);
      try {
        await w.next('connected', 60_000);
        w.send('ping');
        await w.next('pinged', 60_000);
      } finally {
        w.send('close');
        await w.stop();
      }
      await sleep(1_000);
      baseKiB = rssKiB(server.pid);
    }
    server.send('stats');
    const st0 = await server.next('stats');
    gen = startGen(port, n, 0, 1);
    const c = await gen.next('connected', 180_000);
    gen.send('ping');
    const p = await gen.next('pinged', 60_000);
    await sleep(2_000);
    const loadedKiB = rssKiB(server.pid);
    server.send('stats');
    const st = await server.next('stats');
    const held = Math.max(1, c.held as number);
    type Je = { allocated: number; active: number; resident: number };
    const a0 = st0.jemalloc as Je | undefined;
    const a1 = st.jemalloc as Je | undefined;
    return {
      row,
      conns: n,
      held: c.held as number,
      coldKiB,
      baseKiB,
      loadedKiB,
      kibPerConn: (loadedKiB - baseKiB) / held,
      coldKibPerConn: (loadedKiB - coldKiB) / held,
      warm: rssWarm,
      pinged: p.sent as number,
      received: (st.received as number) - (st0.received as number),
      ...(a0 !== undefined && a1 !== undefined
        ? { jemallocBytesPerConn: { allocated: (a1.allocated - a0.allocated) / held, active: (a1.active - a0.active) / held, resident: (a1.resident - a0.resident) / held } }
        : {}),
    };
  } finally {
    if (gen !== null) {
      gen.send('close');
      await gen.stop();
    }
    await server.stop();
  }
}

interface CapResult {
  row: Row;
  cap: number;
  attempted: number;
  held: number;
  refused503: number;
  refusedOther: number;
  failed: number;
  byStatus: Record<string, number>;
  worstRefusalMs: number;
  connectMs: number;
  serverConnections: unknown;
  serverRssKiB: number;
}

async function capTest(row: Row): Promise<CapResult> {
  const { proc: server, port } = await startServer(row, capConns);
  const gens: Proc[] = [];
  try {
    // Each generator process is bound by the same fd limit: split the attempts.
    const parts = Math.ceil(capAttempts / Math.max(1, hardLimit - 2_000));
    const per = Math.ceil(capAttempts / parts);
    const t0 = performance.now();
    for (let g = 0; g < parts; g++) gens.push(startGen(port, Math.min(per, capAttempts - g * per), g * per, 1));
    const cs = await Promise.all(gens.map((g) => g.next('connected', 300_000)));
    const connectMs = performance.now() - t0;
    await sleep(1_000);
    server.send('stats');
    const st = await server.next('stats');
    const sum = (k: string): number => cs.reduce((a, c) => a + (c[k] as number), 0);
    const byStatus: Record<string, number> = {};
    for (const c of cs) for (const [k, v] of Object.entries(c.byStatus as Record<string, number>)) byStatus[k] = (byStatus[k] ?? 0) + v;
    return {
      row,
      cap: capConns,
      attempted: sum('attempted'),
      held: sum('held'),
      refused503: sum('refused503'),
      refusedOther: sum('refusedOther'),
      failed: sum('failed'),
      byStatus,
      worstRefusalMs: Math.max(...cs.map((c) => c.worstRefusalMs as number)),
      connectMs,
      serverConnections: st.connections,
      serverRssKiB: rssKiB(server.pid),
    };
  } finally {
    for (const g of gens) g.send('close');
    await Promise.all(gens.map((g) => g.stop()));
    await server.stop();
  }
}

// ---------------------------------------------------------------- report

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

const f1 = (x: number | undefined | null, d = 1): string => (x === undefined || x === null || !Number.isFinite(x) ? '—' : x.toFixed(d));
const k = (x: number | null): string => (x === null ? '< ladder' : x >= 1000 ? `${x / 1000}k` : String(x));

/** CPU per message, with the JavaScript thread's part in parentheses (Node rows). */
const withJs = (x: Step | null | undefined): string =>
  x === null || x === undefined ? '—' : `${f1(x.cpuUsPerMessage)}${x.jsCpuUsPerMessage === null ? '' : ` (${f1(x.jsCpuUsPerMessage, 2)})`}`;

function markdown(r: Report): string {
  const L: string[] = [];
  L.push(`# WebSocket ingress benchmark${r.quick ? ' — QUICK SMOKE RUN (short windows, few connections: not the official figures)' : ''}`);
  L.push('');
  const p = r.provenance;
  const made = p === undefined ? '' : ` Generated by \`${p.command}\` in ${p.durationS.toFixed(0)} s (commit ${p.commit ?? '?'}${p.dirty ? ', tracked files modified' : ''}).`;
  L.push(`${r.date}, ${r.machine.cpu} × ${r.machine.cores}, Linux ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.go}; \`ulimit -Hn\` ${r.machine.hardLimit}.${made}`);
  L.push(
    `**The load generator (bench/wsload, Go) runs on the same ${r.machine.cores} cores as the server under test**; its CPU and that of every other process are in the step table. ` +
      `${r.config.conns} connections from ${r.config.sources ?? sources} source addresses, open loop on 1 ms ticks, warm-up ${r.config.warmMs / 1000} s, window ${r.config.windowMs / 1000} s a step. ` +
      `Latency: planned send time (stamped in the payload) → JavaScript (Go: the consumer goroutine) holds the validated move. ` +
      `Gate: p99 < ${r.config.gateMs} ms (pull rows: < ${r.config.pullGateMs} ms, their latency includes the wait for the next ${r.config.pullGateMs - r.config.gateMs} ms \`drainAll()\`), nothing lost, the generator on plan` +
      (r.config.votes > 1 ? `; a rate holds when ${Math.floor(r.config.votes / 2) + 1} of ${r.config.votes} steps at it pass (the figures shown at the common rate are its median step by p99 (of two, the worse); at the sustainable rate, the worse of the passing steps).` : '.'),
  );
  L.push('');
  for (const frames of r.config.shapes) {
    L.push(`## ${frames} frame${frames === 1 ? '' : 's'} per message`);
    L.push('');
    L.push(`| row | sustainable msgs/s | CPU µs/msg @ ${k(r.config.commonRate[frames] ?? 0)}/s (JS thread) | p50 / p99 / p99.9 ms @ ${k(r.config.commonRate[frames] ?? 0)}/s | CPU µs/msg @ sustainable (JS thread) | lost @ ${k(r.config.commonRate[frames] ?? 0)}/s |`);
    L.push('|---|---|---|---|---|---|');
    for (const l of r.loads.filter((x) => x.frames === frames)) {
      const c = l.atCommon;
      const top = l.atSustainable;
      L.push(
        `| ${l.row} | ${l.error !== undefined ? `error: ${l.error}` : k(l.sustainable)} | ${withJs(c)} | ${c === null ? '—' : `${f1(c.latencyMs.p50, 2)} / ${f1(c.latencyMs.p99, 2)} / ${f1(c.latencyMs.p999, 2)}`} | ${withJs(top)} | ${c?.lost ?? '—'} |`,
      );
    }
    L.push('');
  }
  if (r.rss.length > 0) {
    const warm = r.rss[0]?.warm ?? 0;
    L.push('## RSS per idle connection (KiB; each client sent one message, then idled 2 s)');
    L.push('');
    if (warm > 0) {
      L.push(
        `Baseline read after a warm-up of ${warm} other clients that connected, sent one message and left (the process's first-use costs are not the connections'); ` +
          'in brackets, the same from the fresh server\'s RSS: first-use costs included, and what the warm-up clients left behind.',
      );
      L.push('');
    }
    L.push(`| row | ${r.config.rssSizes.map((n) => `${k(n)} conns`).join(' | ')} |`);
    L.push(`|---|${r.config.rssSizes.map(() => '---').join('|')}|`);
    for (const row of r.config.rows) {
      const cells = r.config.rssSizes.map((n) => {
        const x = r.rss.find((y) => y.row === row && y.conns === n);
        if (x === undefined) return '—';
        const cold = x.coldKibPerConn === undefined || (x.warm ?? 0) === 0 ? '' : ` (${f1(x.coldKibPerConn, 2)})`;
        return `${f1(x.kibPerConn, 2)}${cold}${x.held !== n ? ` (held ${x.held})` : ''}`;
      });
      L.push(`| ${row} | ${cells.join(' | ')} |`);
    }
    L.push('');
  }
  if (r.cap.length > 0) {
    L.push(`## Connections held per process (cap ${r.cap[0]!.cap}, \`ulimit -Hn\` ${r.machine.hardLimit}; ${r.cap[0]!.attempted} attempted)`);
    L.push('');
    L.push('| row | held | refused 503 | other refusals / failures | slowest refusal ms | connect all s | server RSS MiB |');
    L.push('|---|---|---|---|---|---|---|');
    for (const c of r.cap) {
      const other = Object.entries(c.byStatus)
        .filter(([s]) => s !== '503')
        .map(([s, n]) => `${s}: ${n}`)
        .join(', ');
      L.push(`| ${c.row} | ${c.held} | ${c.refused503} | ${other === '' ? '0' : other} | ${f1(c.worstRefusalMs, 1)} | ${f1(c.connectMs / 1000, 1)} | ${f1(c.serverRssKiB / 1024, 0)} |`);
    }
    L.push('');
  }
  L.push('## Every step');
  L.push('');
  L.push('| row | frames | msgs/s | pass | p50 / p99 / p99.9 ms | server CPU µs/msg (% core) | JS thread µs/msg | generator % | other % | gen lag p99 µs | lost | why |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const l of r.loads) {
    for (const s of l.steps) {
      L.push(
        `| ${l.row} | ${s.frames} | ${s.rate} | ${s.pass ? 'yes' : s.counted ? 'no' : 'no (not counted: run again)'} | ${f1(s.latencyMs.p50, 2)} / ${f1(s.latencyMs.p99, 2)} / ${f1(s.latencyMs.p999, 2)} | ${f1(s.cpuUsPerMessage)} (${f1(s.serverCpuPercent, 0)}) | ${f1(s.jsCpuUsPerMessage, 2)} | ${f1(s.generatorCpuPercent, 0)} | ${f1(s.otherCpuPercent, 0)} | ${f1(s.generatorLagUs.p99, 0)} | ${s.lost} | ${s.why.join('; ')} |`,
      );
    }
  }
  L.push('');
  return L.join('\n');
}

interface Report {
  date: string;
  quick: boolean;
  machine: { host: string; cpu: string; cores: number; kernel: string; node: string; go: string; hardLimit: number };
  config: { rows: Row[]; shapes: number[]; conns: number; roomSize: number; warmMs: number; windowMs: number; drainMs: number; ladders: Record<number, number[]>; commonRate: Record<number, number>; rssSizes: number[]; cap: number; capAttempts: number; gateMs: number; pullGateMs: number; votes: number; sources?: number };
  loads: LoadResult[];
  rss: RssResult[];
  cap: CapResult[];
  note: string;
  /** Where the figures come from (absent in results written before it existed). */
  provenance?: { commit: string | null; dirty: boolean; command: string; durationS: number };
}

/** The checkout's commit and whether its tracked files differ from it (null off git). */
function gitState(): { commit: string | null; dirty: boolean } {
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return { commit: rev.status === 0 ? rev.stdout.trim() : null, dirty: status.status === 0 && status.stdout.trim().length > 0 };
}

async function main(): Promise<void> {
  const renderOnly = opt('render');
  if (flag('render') && (renderOnly === undefined || renderOnly.startsWith('--'))) throw new TypeError('--render takes a result file (.json)');
  if (renderOnly !== undefined) {
    // `--render <json>`: rewrite latest.md beside a committed result with this report's
    // wording; no load is run and no figure changes.
    const report = JSON.parse(readFileSync(renderOnly, 'utf8')) as Report;
    writeFileSync(join(dirname(renderOnly), 'latest.md'), markdown(report));
    log(`rewrote ${join(dirname(renderOnly), 'latest.md')} from ${renderOnly}`);
    return;
  }
  const t0 = performance.now();
  const { goVersion } = buildGo();
  const report: Report = {
    date: new Date().toISOString(),
    quick,
    machine: { host: hostname(), cpu: cpus()[0]?.model ?? '?', cores: cpus().length, kernel: release(), node: process.version, go: goVersion, hardLimit },
    config: { rows, shapes, conns, roomSize, warmMs, windowMs, drainMs, ladders, commonRate, rssSizes, cap: capConns, capAttempts, gateMs: GATE_MS, pullGateMs: GATE_MS + PULL_TICK_MS, votes, sources },
    loads: [],
    rss: [],
    cap: [],
    note: 'The load generator shares the machine with the server under test.',
  };
  for (const frames of noLoad ? [] : shapes) {
    for (const row of rows) {
      log(`${row}, ${frames} frame(s)/message, ${conns} connections`);
      report.loads.push(await load(row, frames));
    }
  }
  for (const row of rows) {
    for (const n of rssSizes) {
      try {
        const x = await rss(row, n);
        report.rss.push(x);
        const j = x.jemallocBytesPerConn;
        const alloc = j === undefined ? '' : `; jemalloc per connection: ${f1(j.allocated, 0)} B allocated, ${f1(j.active, 0)} active, ${f1(j.resident, 0)} resident`;
        log(`${row}: RSS ${f1(x.kibPerConn, 2)} KiB per idle connection at ${x.held}/${n} (${f1(x.coldKibPerConn ?? Number.NaN, 2)} from the fresh server's RSS)${alloc} (received ${x.received} pings)`);
      } catch (e) {
        log(`${row}: RSS at ${n}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
  if (!noCap) {
    for (const row of rows) {
      try {
        const c = await capTest(row);
        report.cap.push(c);
        log(`${row}: held ${c.held} of ${c.attempted} (cap ${c.cap}); 503 ${c.refused503}; other ${JSON.stringify(c.byStatus)}; slowest refusal ${f1(c.worstRefusalMs)} ms`);
      } catch (e) {
        log(`${row}: connection cap: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
  const args = process.argv.slice(2).join(' ');
  report.provenance = { ...gitState(), command: `npm run bench:ingress${args === '' ? '' : ` -- ${args}`}`, durationS: (performance.now() - t0) / 1000 };
  mkdirSync(outDir, { recursive: true });
  const day = report.date.slice(0, 10);
  const host = hostname();
  writeFileSync(join(outDir, `${day}-${host}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(outDir, 'latest.md'), markdown(report));
  rmSync(bin, { recursive: true, force: true });
  log(`\nwrote ${join(outDir, `${day}-${host}.json`)} and latest.md in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const broken = report.loads.some((l) => l.error !== undefined);
  process.exitCode = broken ? 1 : 0;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/ingress: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  if (bin !== '') rmSync(bin, { recursive: true, force: true });
  process.exit(1);
});
