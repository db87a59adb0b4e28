/**
 * `npm start`: simulated players send SHA-256 moves through the native engine.
 *
 * A worker thread plays the clients: on a fixed schedule (open loop) it encodes each
 * player's moves with the time they were due, and posts them to the main thread in
 * chunks, as socket data would arrive. The main thread is the game server: it feeds the
 * chunks to `dispatchStream`, and receives validated moves through `onBatch` (push rooms),
 * where it measures dispatch → JavaScript latency from the scheduled send time.
 *
 * Options (environment or flags): --players N (10000), --hz N (20), --seconds N (10),
 * --engine native|js (native), --payload N (64), --shards N (library default).
 */
import { createHash } from 'node:crypto';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Dispatcher, Verdict, type MoveBatch } from '../index';

interface DemoConfig {
  players: number;
  hz: number;
  seconds: number;
  payload: number;
  engine: 'native' | 'js';
  /** 0: the library's default. */
  shards: number;
}

const ROOM_SIZE = 10;
/** Clients send in 2 ms slices: each slice is one "socket read" on the server. */
const SLICE_MS = 2;
/** One frame in 10,000 is corrupted on purpose, to show rejections. */
const CORRUPT_EVERY = 10_000;

function parseArgs(argv: string[]): DemoConfig {
  const get = (name: string, fallback: number): number => {
    const i = argv.indexOf(`--${name}`);
    const raw = i >= 0 ? argv[i + 1] : process.env[`DEMO_${name.toUpperCase()}`];
    const n = raw === undefined ? fallback : Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be a positive number, got ${raw}`);
    return n;
  };
  const e = argv.indexOf('--engine');
  const engine = e >= 0 ? argv[e + 1] : 'native';
  if (engine !== 'native' && engine !== 'js') throw new TypeError(`--engine must be native or js, got ${engine}`);
  return {
    players: Math.floor(get('players', 10_000)),
    hz: get('hz', 20),
    seconds: get('seconds', 10),
    payload: Math.max(8, Math.floor(get('payload', 64))),
    engine,
    shards: argv.includes('--shards') || process.env.DEMO_SHARDS !== undefined ? Math.floor(get('shards', 1)) : 0,
  };
}

/** Absolute milliseconds, comparable across threads. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

// ---------------------------------------------------------------------------------------
// Clients (worker thread)

function runClients(cfg: DemoConfig): void {
  const port = parentPort!;
  const frameLen = 56 + cfg.payload;
  const seqs = new Uint32Array(cfg.players);
  const perSlice = (cfg.players * cfg.hz * SLICE_MS) / 1000;
  const start = nowMs() + 50;
  const end = start + cfg.seconds * 1000;
  let carry = 0;
  let next = 0;
  let sent = 0;
  let slice = 0;
  const tick = (): void => {
    const due = start + slice * SLICE_MS;
    if (due >= end) {
      port.postMessage({ done: true, sent });
      return;
    }
    carry += perSlice;
    const n = Math.floor(carry);
    carry -= n;
    const chunk = new Uint8Array(n * frameLen);
    const dv = new DataView(chunk.buffer);
    for (let i = 0; i < n; i++) {
      const player = next;
      next = (next + 1) % cfg.players;
      const seq = ++seqs[player]!;
      const at = i * frameLen;
      chunk[at] = 0x4d;
      chunk[at + 1] = 0x56;
      chunk[at + 2] = 1;
      dv.setUint32(at + 4, Math.floor(player / ROOM_SIZE), true);
      dv.setUint32(at + 8, player, true);
      dv.setUint32(at + 12, seq, true);
      dv.setUint32(at + 16, slice, true);
      dv.setUint16(at + 20, 1, true);
      dv.setUint16(at + 22, cfg.payload, true);
      dv.setFloat64(at + 24, due, true);
      const digest = createHash('sha256').update(chunk.subarray(at, at + 24 + cfg.payload)).digest();
      chunk.set(digest, at + 24 + cfg.payload);
      if ((sent + i) % CORRUPT_EVERY === CORRUPT_EVERY - 1) chunk[at + 24 + cfg.payload] = chunk[at + 24 + cfg.payload]! ^ 0xff;
    }
    sent += n;
    slice++;
    port.postMessage(chunk, [chunk.buffer]);
    setTimeout(tick, Math.max(0, start + slice * SLICE_MS - nowMs()));
  };
  setTimeout(tick, Math.max(0, start - nowMs()));
}

// ---------------------------------------------------------------------------------------
// Server (main thread)

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function fmt(ms: number): string {
  return ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;
}

async function runServer(cfg: DemoConfig): Promise<void> {
  const rooms = Math.ceil(cfg.players / ROOM_SIZE);
  const total = Math.ceil(cfg.players * cfg.hz * cfg.seconds) + 1024;
  const latencies = new Float64Array(total);
  const serverLatencies = new Float64Array(total);
  /** Arrival time of each client slice (frames carry their slice number in `tick`). */
  const arrivals = new Float64Array(Math.ceil((cfg.seconds * 1000) / SLICE_MS) + 16);
  let samples = 0;
  let delivered = 0;
  let rejected = 0;
  const onBatch = (batch: MoveBatch): void => {
    const now = nowMs();
    const dv = new DataView(batch.buffer);
    for (const move of batch) {
      if (samples < total) {
        serverLatencies[samples] = now - (arrivals[move.tick] ?? now);
        latencies[samples++] = now - dv.getFloat64(move.frameOffset + 24, true);
      }
    }
    delivered += batch.count;
    rejected += batch.rejections.length;
  };
  const d = new Dispatcher({ engine: cfg.engine, onBatch, ...(cfg.shards > 0 ? { shards: cfg.shards } : {}) });
  for (let r = 0; r < rooms; r++) {
    d.openRoom(r, { delivery: 'push' });
    for (let p = r * ROOM_SIZE; p < Math.min(cfg.players, (r + 1) * ROOM_SIZE); p++) d.join(r, p);
  }

  const tty = process.stdout.isTTY === true;
  console.log(
    `move-dispatcher demo: ${cfg.players.toLocaleString()} players in ${rooms.toLocaleString()} rooms × ${cfg.hz} Hz ` +
      `= ${(cfg.players * cfg.hz).toLocaleString()} moves/s (${cfg.payload}-byte payloads, SHA-256), ${cfg.seconds} s, engine: ${d.engine}`,
  );
  const worker = new Worker(__filename, { workerData: cfg });
  let backlog: Uint8Array[] = [];
  let backpressured = 0;
  const feed = (chunk: Uint8Array): void => {
    let rest = chunk;
    while (rest.length > 0) {
      const r = d.dispatchStream(rest);
      rest = rest.subarray(r.consumed);
      if (r.backpressure) {
        backpressured++;
        backlog.push(rest);
        return;
      }
      if (r.malformed) throw new Error('demo produced a malformed frame');
    }
  };
  const started = Date.now();
  let lastShown = 0;
  const progress = (): void => {
    const s = d.stats();
    const secs = (Date.now() - started) / 1000;
    const line = `  ${secs.toFixed(1).padStart(5)} s  accepted ${s.accepted.toLocaleString().padStart(11)}  delivered ${delivered
      .toLocaleString()
      .padStart(11)}  rejected ${rejected.toLocaleString().padStart(5)}  ${(s.accepted / Math.max(secs, 0.001)).toFixed(0).padStart(8)} moves/s`;
    if (tty) process.stdout.write(`\r${line}`);
    else if (secs - lastShown >= 2) {
      lastShown = secs;
      console.log(line);
    }
  };
  const timer = setInterval(progress, tty ? 250 : 500);
  const sent = await new Promise<number>((resolve, reject) => {
    worker.on('error', reject);
    worker.on('message', (msg: Uint8Array | { done: true; sent: number }) => {
      if (msg instanceof Uint8Array) {
        if (msg.length >= 24) arrivals[new DataView(msg.buffer, msg.byteOffset).getUint32(16, true)] = nowMs();
        if (backlog.length > 0) {
          const pending = backlog;
          backlog = [];
          for (const c of pending) feed(c);
        }
        if (backlog.length > 0) backlog.push(msg);
        else feed(msg);
      } else {
        resolve(msg.sent);
      }
    });
  });
  while (backlog.length > 0) {
    const pending = backlog;
    backlog = [];
    for (const c of pending) feed(c);
    await new Promise((r) => setTimeout(r, 1));
  }
  await d.flush();
  clearInterval(timer);
  progress();
  if (tty) process.stdout.write('\n');
  await worker.terminate();
  const stats = d.stats();
  await d.close();

  const sorted = latencies.subarray(0, samples).sort();
  const server = serverLatencies.subarray(0, samples).sort();
  const elapsed = (Date.now() - started) / 1000;
  const lost = stats.accepted - stats.delivered - stats.rejected;
  console.log('');
  console.log(`  sent            ${sent.toLocaleString()} frames`);
  console.log(`  accepted        ${stats.accepted.toLocaleString()}  (${(stats.accepted / cfg.seconds).toFixed(0)} moves/s over the ${cfg.seconds} s schedule)`);
  console.log(`  delivered       ${stats.delivered.toLocaleString()}`);
  console.log(
    `  rejected        ${stats.rejected.toLocaleString()}  (BadTag ${stats.reasons.BadTag}, Replay ${stats.reasons.Replay})`,
  );
  console.log(`  refused         ${(stats.dispatched - stats.accepted).toLocaleString()} (backpressure ${stats.verdicts.Backpressure}, retried ${backpressured} times; not a member ${stats.verdicts.NotMember})`);
  console.log(`  lost            ${lost}  (accepted − delivered − rejected)`);
  const line = (a: Float64Array): string =>
    `p50 ${fmt(percentile(a, 50))}  p99 ${fmt(percentile(a, 99))}  p99.9 ${fmt(percentile(a, 99.9))}  max ${fmt(a[a.length - 1] ?? Number.NaN)}`;
  console.log(`  latency         socket read (dispatchStream) → onBatch:   ${line(server)}`);
  console.log(`                  scheduled send → onBatch (open loop):      ${line(sorted)}`);
  console.log(`                  (the second includes the simulated clients' own delays: they share this machine)`);
  console.log(`  wall time       ${elapsed.toFixed(1)} s`);
  if (lost !== 0 || stats.verdicts.Accepted !== stats.accepted || Verdict.Accepted !== 0) process.exitCode = 1;
}

if (isMainThread) {
  runServer(parseArgs(process.argv.slice(2))).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
} else {
  runClients(workerData as DemoConfig);
}
