/**
 * `npm run soak -- --minutes 10`: drives the native engine with hostile traffic and checks
 * the guarantees (README "Guarantees", docs/architecture.md) move by move.
 *
 * A worker thread plays the clients and the control plane: it owns the world (rooms, their
 * auth and delivery mode, players and their keys, per-player sequence numbers) and builds
 * `--cycle` seconds of traffic in 5 ms slices: the control operations of the slice (room
 * open/close, player join/leave/key rotation), then its frames, each one of
 *   valid · corrupted (a tag bit flipped) · forged (HMAC with another key) · oversize ·
 *   malformed (random bytes) · spoofed (dispatched with another player's sender id).
 * Signing costs ~1–3 µs a frame in Node, far more than the dispatcher spends, so the
 * traffic is built once, before the clock starts, and replayed cycle after cycle: between
 * cycles every room is closed and drained until forgotten, so the same frames (same
 * sequence numbers) are fresh again for the new incarnations.
 * The main thread is the game server, in open loop: each slice is due at its scheduled
 * time and, when the server is behind, later slices are dispatched back to back. It
 * applies the operations, dispatches each frame (and, for some valid frames it just had
 * accepted, dispatches them again: a replay), and tracks every accepted move until it is
 * delivered (push rooms: `onBatch`; pull rooms: `drain()` every 10 ms) or rejected.
 *
 * Checked, and counted as violations:
 * - each synchronous verdict is the one its kind calls for (or `Backpressure`);
 * - every accepted valid move is delivered exactly once, in dispatch order within its
 *   room (no duplicate, no gap); every accepted bad move is rejected once with its reason
 *   (`BadTag` for corrupted/forged frames, `Replay` for replays);
 * - at the end (flush, final drains, close) nothing is outstanding, and the dispatcher's own
 *   counters agree: accepted = delivered + rejected, and equal the harness's counts;
 * - RSS after warm-up stays under its first post-warm-up sample plus `--rss-slack-mb`.
 *
 * Options: --minutes N (10) or --seconds N, --rate N moves/s offered (400000), --cycle N
 * seconds of traffic built and replayed (4), --rooms N (256), --players N per room (8),
 * --seed N, --rss-slack-mb N (64), --shards N (default), --out FILE (the summary as JSON).
 * Exits 1 on any violation, printing the first ones.
 */
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Dispatcher, ErrorCode, Reason, REASON_NAMES, Verdict, VERDICT_NAMES, encodeMove, type MoveBatch } from '../index';

interface SoakConfig {
  seconds: number;
  cycle: number;
  rate: number;
  rooms: number;
  players: number;
  seed: number;
  rssSlackMb: number;
  shards: number;
  maxPayload: number;
  /** Where to write the summary as JSON (optional). */
  out: string | undefined;
  /** Self-test of the checker: pretend the 1000th delivered move never arrived. */
  injectFault: boolean;
}

/** What a frame is, as the generator made it. */
const enum Kind {
  Valid = 0,
  Corrupt = 1,
  Forged = 2,
  Oversize = 3,
  Malformed = 4,
  Spoofed = 5,
}
const KIND_NAMES = ['valid', 'corrupt', 'forged', 'oversize', 'malformed', 'spoofed'] as const;

/** A control operation, applied by the main thread before the slice's frames. */
type Op =
  | { op: 'open'; room: number; hmac: boolean; push: boolean }
  | { op: 'close'; room: number }
  | { op: 'join'; room: number; player: number; key: Uint8Array | undefined }
  | { op: 'leave'; room: number; player: number };

/** One slice: operations, then frames back to back in `bytes`, described by `meta`. */
interface Slice {
  ops: Op[];
  bytes: Uint8Array;
  /** Per frame: offset, length, kind, room, player, seq, sender. */
  meta: Uint32Array;
  done: boolean;
}
const META = 7;
const SLICE_MS = 5;
const PAYLOAD = 64;

function parseArgs(argv: string[]): SoakConfig {
  const get = (name: string, fallback: number): number => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return fallback;
    const n = Number(argv[i + 1]);
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be a positive number, got ${argv[i + 1]}`);
    return n;
  };
  const seconds = argv.includes('--seconds') ? get('seconds', 30) : get('minutes', 10) * 60;
  return {
    seconds,
    cycle: get('cycle', 4),
    rate: Math.floor(get('rate', 400_000)),
    rooms: Math.floor(get('rooms', 256)),
    players: Math.min(64, Math.floor(get('players', 8))),
    seed: Math.floor(get('seed', 1)),
    rssSlackMb: get('rss-slack-mb', 64),
    shards: argv.includes('--shards') ? Math.floor(get('shards', 1)) : 0,
    maxPayload: 256,
    out: argv.includes('--out') ? argv[argv.indexOf('--out') + 1] : undefined,
    injectFault: argv.includes('--inject-fault'),
  };
}

/** xorshift32: reproducible traffic from `--seed`. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

// ---------------------------------------------------------------------------------------
// Generator (worker thread)

interface GenRoom {
  id: number;
  hmac: boolean;
  push: boolean;
  open: boolean;
  /** Joined players and their keys (undefined in SHA-256 rooms). */
  members: Map<number, Uint8Array | undefined>;
}

function generator(cfg: SoakConfig): void {
  const port = parentPort!;
  const random = rng(cfg.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const newKey = (): Uint8Array => {
    const k = new Uint8Array(32);
    for (let i = 0; i < k.length; i++) k[i] = Math.floor(random() * 256);
    return k;
  };
  const rooms: GenRoom[] = [];
  /** Next sequence number per (room, player), never reused across incarnations. */
  const seqs = new Map<number, number>();
  const seqKey = (room: number, player: number): number => room * 65_536 + player;
  let nextId = 1;
  let ops: Op[] = [];

  const openRoom = (r: GenRoom): void => {
    r.open = true;
    ops.push({ op: 'open', room: r.id, hmac: r.hmac, push: r.push });
    for (let p = 1; p <= cfg.players; p++) {
      const key = r.hmac ? newKey() : undefined;
      r.members.set(p, key);
      ops.push({ op: 'join', room: r.id, player: p, key });
    }
  };
  for (let i = 0; i < cfg.rooms; i++) {
    const r: GenRoom = { id: i + 1, hmac: i % 2 === 0, push: i % 4 < 2, open: false, members: new Map() };
    rooms.push(r);
    openRoom(r);
  }

  const perSlice = Math.max(1, Math.round((cfg.rate * SLICE_MS) / 1000));
  const slices = Math.max(1, Math.round((cfg.cycle * 1000) / SLICE_MS));
  let slice = 0;
  const payload = new Uint8Array(PAYLOAD);
  const payloadView = new DataView(payload.buffer);
  const big = new Uint8Array(cfg.maxPayload + 1);

  const tick = (): void => {
    const done = slice === slices - 1;
    // Churn, about every 100 ms: close an open room, reopen a closed one, rotate or
    // replace a player.
    if (slice % 20 === 0 && slice > 0 && !done) {
      const open = rooms.filter((r) => r.open);
      const closed = rooms.filter((r) => !r.open);
      if (open.length > cfg.rooms / 2 && random() < 0.7) {
        const r = pick(open);
        r.open = false;
        r.members.clear();
        ops.push({ op: 'close', room: r.id });
      }
      if (closed.length > 0 && random() < 0.7) openRoom(pick(closed));
      const r = pick(rooms.filter((x) => x.open));
      const p = 1 + Math.floor(random() * cfg.players);
      if (r.members.has(p)) {
        if (random() < 0.5) {
          ops.push({ op: 'leave', room: r.id, player: p });
          r.members.delete(p);
        } else {
          const key = r.hmac ? newKey() : undefined; // joining again rotates the key
          r.members.set(p, key);
          ops.push({ op: 'join', room: r.id, player: p, key });
        }
      } else {
        const key = r.hmac ? newKey() : undefined;
        r.members.set(p, key);
        ops.push({ op: 'join', room: r.id, player: p, key });
      }
    }
    const frames: Uint8Array[] = [];
    const meta = new Uint32Array(perSlice * META);
    let at = 0;
    const open = rooms.filter((r) => r.open && r.members.size > 0);
    for (let i = 0; i < perSlice; i++) {
      const r = pick(open);
      const players = [...r.members.keys()];
      const player = pick(players);
      const key = r.members.get(player);
      const sk = seqKey(r.id, player);
      const seq = (seqs.get(sk) ?? 0) + 1;
      seqs.set(sk, seq);
      const roll = random();
      const kind = roll < 0.9 ? Kind.Valid : roll < 0.93 ? Kind.Corrupt : roll < 0.95 ? Kind.Forged : roll < 0.96 ? Kind.Oversize : roll < 0.97 ? Kind.Malformed : Kind.Spoofed;
      let frame: Uint8Array;
      let sender = player;
      const id = nextId++;
      payloadView.setFloat64(0, id, true);
      switch (kind) {
        case Kind.Valid:
        case Kind.Spoofed:
          frame = encodeMove({ room: r.id, player, seq, kind: 1, payload, key });
          if (kind === Kind.Spoofed) sender = player === 1 ? 2 : player - 1;
          break;
        case Kind.Corrupt:
          frame = encodeMove({ room: r.id, player, seq, kind: 1, payload, key });
          frame[frame.length - 1]! ^= 0x40;
          break;
        case Kind.Forged:
          // Signed with a key that is not the player's (in SHA-256 rooms: a stale digest).
          frame = r.hmac ? encodeMove({ room: r.id, player, seq, kind: 1, payload, key: newKey() }) : encodeMove({ room: r.id, player, seq, kind: 2, payload });
          if (!r.hmac) frame[30]! ^= 1; // payload changed after hashing
          break;
        case Kind.Oversize:
          frame = encodeMove({ room: r.id, player, seq, kind: 1, payload: big, key });
          break;
        default:
          frame = new Uint8Array(8 + Math.floor(random() * 40));
          for (let k = 0; k < frame.length; k++) frame[k] = Math.floor(random() * 256);
          frame[0] = 0; // never a valid magic
          break;
      }
      const m = i * META;
      meta[m] = at;
      meta[m + 1] = frame.length;
      meta[m + 2] = kind;
      meta[m + 3] = r.id;
      meta[m + 4] = player;
      meta[m + 5] = seq;
      meta[m + 6] = sender;
      frames.push(frame);
      at += frame.length;
    }
    const bytes = new Uint8Array(at);
    let o = 0;
    for (const f of frames) {
      bytes.set(f, o);
      o += f.length;
    }
    const msg: Slice = { ops, bytes, meta, done };
    ops = [];
    port.postMessage(msg, [bytes.buffer, meta.buffer]);
    slice++;
  };
  while (slice < slices) tick();
}

// ---------------------------------------------------------------------------------------
// Server (main thread)

interface Expected {
  /** Accepted valid moves, in dispatch order, per room: ids. */
  queue: number[];
  head: number;
}

class Checker {
  constructor(readonly injectFault: boolean) {}
  readonly violations: string[] = [];
  violationCount = 0;
  /** Per room: accepted valid moves awaiting delivery, in order. */
  readonly rooms = new Map<number, Expected>();
  /** Accepted bad moves awaiting their rejection: key -> expected reason(s). */
  readonly rejects = new Map<number, Reason[]>();
  offered = 0;
  accepted = 0;
  delivered = 0;
  rejected = 0;
  readonly verdicts = new Array<number>(VERDICT_NAMES.length).fill(0);
  readonly reasons = new Array<number>(REASON_NAMES.length).fill(0);
  readonly kinds = new Array<number>(KIND_NAMES.length).fill(0);
  replays = 0;

  violation(message: string): void {
    this.violationCount++;
    if (this.violations.length < 20) this.violations.push(message);
  }

  static key(room: number, player: number, seq: number): number {
    // room < 2^12, player < 2^7, seq < 2^32: exact in a double.
    return (room * 128 + player) * 2 ** 32 + seq;
  }

  expectDelivery(room: number, id: number): void {
    let e = this.rooms.get(room);
    if (e === undefined) {
      e = { queue: [], head: 0 };
      this.rooms.set(room, e);
    }
    e.queue.push(id);
  }

  expectRejection(room: number, player: number, seq: number, reason: Reason): void {
    const k = Checker.key(room, player, seq);
    const list = this.rejects.get(k);
    if (list === undefined) this.rejects.set(k, [reason]);
    else list.push(reason);
  }

  batch(batch: MoveBatch, room: number): void {
    const e = this.rooms.get(room);
    const dv = new DataView(batch.buffer);
    for (const move of batch) {
      const id = dv.getFloat64(move.frameOffset + 24, true);
      this.delivered++;
      if (this.injectFault && this.delivered === 1000) continue;
      if (e === undefined || e.head >= e.queue.length) {
        this.violation(`room ${room}: move ${id} (player ${move.player} seq ${move.seq}) delivered but not expected (duplicate or never accepted)`);
        continue;
      }
      const want = e.queue[e.head]!;
      if (want !== id) {
        this.violation(`room ${room}: delivered move ${id} where ${want} was next (order, gap or duplicate)`);
        // Resynchronise on the delivered id if it is pending further on.
        const at = e.queue.indexOf(id, e.head);
        if (at >= 0) e.head = at + 1;
        continue;
      }
      e.head++;
      if (e.head > 4096) {
        e.queue.splice(0, e.head);
        e.head = 0;
      }
    }
    for (const r of batch.rejections) {
      this.rejected++;
      this.reasons[r.reason]!++;
      const k = Checker.key(r.room, r.player, r.seq);
      const list = this.rejects.get(k);
      const at = list?.indexOf(r.reason) ?? -1;
      if (list === undefined || at < 0) {
        this.violation(`room ${r.room}: unexpected rejection ${REASON_NAMES[r.reason]} for player ${r.player} seq ${r.seq} (expected ${list?.map((x) => REASON_NAMES[x]).join('/') ?? 'delivery'})`);
        continue;
      }
      list.splice(at, 1);
      if (list.length === 0) this.rejects.delete(k);
    }
  }

  outstanding(): number {
    let n = this.rejects.size;
    for (const e of this.rooms.values()) n += e.queue.length - e.head;
    return n;
  }
}

async function server(cfg: SoakConfig): Promise<number> {
  const check = new Checker(cfg.injectFault);
  const d = new Dispatcher({
    maxPayload: cfg.maxPayload,
    roomBytes: 256 * 1024,
    ...(cfg.shards > 0 ? { shards: cfg.shards } : {}),
    onBatch: (batch) => check.batch(batch, batch.room!),
    onError: (error) => check.violation(`callback threw: ${String(error)}`),
  });
  const pullRooms = new Set<number>();
  const closingPull = new Set<number>();
  /** Rooms open on the server (to close them all between cycles). */
  const openRooms = new Set<number>();
  const drainAll = (): void => {
    for (const room of pullRooms) check.batch(d.drain(room), room);
    for (const room of closingPull) {
      try {
        check.batch(d.drain(room), room);
      } catch (error) {
        if ((error as { code?: string }).code === ErrorCode.UnknownRoom) closingPull.delete(room);
        else check.violation(`drain(${room}) of a closing room threw ${String(error)}`);
      }
    }
  };
  const drainTimer = setInterval(drainAll, 10);

  const apply = (op: Op): void => {
    try {
      switch (op.op) {
        case 'open':
          d.openRoom(op.room, { auth: op.hmac ? 'hmac-sha256' : 'sha256', delivery: op.push ? 'push' : 'pull' });
          openRooms.add(op.room);
          if (!op.push) {
            closingPull.delete(op.room);
            pullRooms.add(op.room);
          }
          break;
        case 'close':
          d.closeRoom(op.room);
          openRooms.delete(op.room);
          if (pullRooms.delete(op.room)) closingPull.add(op.room);
          break;
        case 'join':
          d.join(op.room, op.player, op.key === undefined ? {} : { key: op.key });
          break;
        case 'leave':
          d.leave(op.room, op.player);
          break;
      }
    } catch (error) {
      check.violation(`${op.op}(${op.room}) threw ${String(error)}`);
    }
  };

  const expectVerdict = (kind: Kind): Verdict => {
    switch (kind) {
      case Kind.Oversize:
        return Verdict.Oversize;
      case Kind.Malformed:
        return Verdict.Malformed;
      case Kind.Spoofed:
        return Verdict.WrongSender;
      default:
        return Verdict.Accepted;
    }
  };

  const onSlice = (s: Slice): void => {
    for (const op of s.ops) apply(op);
    const n = s.meta.length / META;
    for (let i = 0; i < n; i++) {
      const m = i * META;
      const at = s.meta[m]!;
      const len = s.meta[m + 1]!;
      const kind = s.meta[m + 2]! as Kind;
      const room = s.meta[m + 3]!;
      const player = s.meta[m + 4]!;
      const seq = s.meta[m + 5]!;
      const sender = s.meta[m + 6]!;
      const frame = s.bytes.subarray(at, at + len);
      check.offered++;
      check.kinds[kind]!++;
      const v = d.dispatch(frame, sender);
      check.verdicts[v]!++;
      if (v === Verdict.Backpressure) continue;
      const want = expectVerdict(kind);
      if (v !== want) {
        check.violation(`${KIND_NAMES[kind]} frame room ${room} player ${player} seq ${seq}: verdict ${VERDICT_NAMES[v]}, expected ${VERDICT_NAMES[want]}`);
        continue;
      }
      if (v !== Verdict.Accepted) continue;
      check.accepted++;
      if (kind === Kind.Valid) {
        check.expectDelivery(room, new DataView(frame.buffer, frame.byteOffset + 24, 8).getFloat64(0, true));
        // One valid move in 50, just accepted, is sent again: a replay.
        if (seq % 50 === 0) {
          const r = d.dispatch(frame, sender);
          check.offered++;
          check.replays++;
          check.verdicts[r]!++;
          if (r === Verdict.Accepted) {
            check.accepted++;
            check.expectRejection(room, player, seq, Reason.Replay);
          } else if (r !== Verdict.Backpressure) {
            check.violation(`replay of room ${room} player ${player} seq ${seq}: verdict ${VERDICT_NAMES[r]}`);
          }
        }
      } else {
        check.expectRejection(room, player, seq, Reason.BadTag);
      }
    }
  };

  // Build the traffic of one cycle (not timed).
  const built = performance.now();
  const cycle: Slice[] = [];
  const worker = new Worker(__filename, { workerData: cfg });
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (s: Slice) => {
      cycle.push(s);
      if (s.done) resolve();
    });
    worker.once('error', reject);
  });
  await worker.terminate();
  const frames = cycle.reduce((n, s) => n + s.meta.length / META, 0);
  console.log(`soak: built ${frames} frames (${cfg.cycle} s of traffic at ${cfg.rate}/s) in ${((performance.now() - built) / 1000).toFixed(1)} s; running ${cfg.seconds} s`);

  /** Closes every room, delivers and drains everything until each is forgotten. */
  const endCycle = async (): Promise<void> => {
    for (const room of [...openRooms]) apply({ op: 'close', room });
    await d.flush();
    drainAll();
    drainAll();
    if (closingPull.size > 0) check.violation(`rooms ${[...closingPull].join(',')} not forgotten after flush and drains`);
  };

  // RSS: sampled every second; the bound is set by the first sample after warm-up.
  const warmup = Math.min(60, Math.max(5, cfg.seconds * 0.2)) * 1000;
  const t0 = performance.now();
  let rssStart = 0;
  let rssMax = 0;
  let rssEnd = 0;
  let cycles = 0;
  let maxLagMs = 0;
  const tty = process.stdout.isTTY;
  let lastLog = -1;
  const sampler = setInterval(() => {
    const rss = process.memoryUsage().rss;
    const t = performance.now() - t0;
    if (t >= warmup) {
      if (rssStart === 0) rssStart = rss;
      rssMax = Math.max(rssMax, rss);
    }
    rssEnd = rss;
    const line = `soak ${(t / 1000).toFixed(0)}/${cfg.seconds}s  cycle ${cycles}  offered ${check.offered}  accepted ${check.accepted}  delivered ${check.delivered}  rejected ${check.rejected}  backpressure ${check.verdicts[Verdict.Backpressure]}  rss ${(rss / 2 ** 20).toFixed(0)} MiB  violations ${check.violationCount}`;
    const bucket = Math.floor(t / 30_000);
    if (tty) process.stdout.write(`\r${line}`);
    else if (bucket !== lastLog) {
      lastLog = bucket;
      console.log(line);
    }
  }, 1000);

  // Open loop: slice i of a cycle is due at cycleStart + i * SLICE_MS; a late server
  // dispatches the overdue slices back to back (their moves are not dropped).
  const end = t0 + cfg.seconds * 1000;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  while (performance.now() < end) {
    const cycleStart = performance.now();
    for (let i = 0; i < cycle.length && performance.now() < end; i++) {
      const due = cycleStart + i * SLICE_MS;
      const now = performance.now();
      if (due > now + 1) await sleep(due - now);
      else if ((i & 15) === 0) await sleep(0); // let deliveries and drains run
      maxLagMs = Math.max(maxLagMs, performance.now() - due);
      onSlice(cycle[i]!);
    }
    await endCycle();
    cycles++;
  }
  const wall = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  if (tty) process.stdout.write('\n');

  // Everything accepted is delivered or rejected by now; pull rooms are drained to the end.
  await d.flush();
  drainAll();
  await d.close();
  clearInterval(drainTimer);
  for (const room of [...pullRooms, ...closingPull]) {
    try {
      check.batch(d.drain(room), room);
    } catch (error) {
      if ((error as { code?: string }).code !== ErrorCode.UnknownRoom) check.violation(`final drain(${room}) threw ${String(error)}`);
    }
  }
  const st = d.stats({ topRooms: 0 });
  const outstanding = check.outstanding();
  if (outstanding > 0) check.violation(`${outstanding} accepted moves neither delivered nor rejected (lost)`);
  if (st.accepted !== st.delivered + st.rejected) check.violation(`stats: accepted ${st.accepted} != delivered ${st.delivered} + rejected ${st.rejected}`);
  if (st.accepted !== check.accepted || st.delivered !== check.delivered || st.rejected !== check.rejected) {
    check.violation(`stats disagree with the harness: accepted ${st.accepted}/${check.accepted}, delivered ${st.delivered}/${check.delivered}, rejected ${st.rejected}/${check.rejected}`);
  }
  const slackBytes = cfg.rssSlackMb * 2 ** 20;
  if (rssStart > 0 && rssMax > rssStart + slackBytes) {
    check.violation(`RSS grew after warm-up: ${(rssStart / 2 ** 20).toFixed(1)} MiB -> max ${(rssMax / 2 ** 20).toFixed(1)} MiB (bound +${cfg.rssSlackMb} MiB)`);
  }

  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const summary = {
    date: new Date().toISOString(),
    seconds: cfg.seconds,
    wallSeconds: Number(wall.toFixed(1)),
    offeredRate: cfg.rate,
    offered: check.offered,
    achievedRate: Math.round(check.offered / wall),
    accepted: check.accepted,
    acceptedRate: Math.round(check.accepted / wall),
    delivered: check.delivered,
    rejected: check.rejected,
    lost: outstanding,
    cycles,
    maxLagMs: Math.round(maxLagMs),
    replaysSent: check.replays,
    kinds: Object.fromEntries(KIND_NAMES.map((k, i) => [k, check.kinds[i]])),
    verdicts: Object.fromEntries(VERDICT_NAMES.map((k, i) => [k, check.verdicts[i]])),
    reasons: Object.fromEntries(REASON_NAMES.map((k, i) => [k, check.reasons[i]])),
    rss: { afterWarmup: mib(rssStart), max: mib(rssMax), end: mib(rssEnd), slack: `${cfg.rssSlackMb} MiB` },
    violations: check.violationCount,
  };
  console.log(JSON.stringify(summary, null, 2));
  if (cfg.out !== undefined) {
    const { cpus, hostname } = await import('node:os');
    const { writeFileSync } = await import('node:fs');
    const machine = { host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, config: cfg };
    writeFileSync(cfg.out, `${JSON.stringify({ ...summary, machine }, null, 2)}\n`);
  }
  for (const v of check.violations) console.error(`VIOLATION: ${v}`);
  console.log(check.violationCount === 0 ? 'soak: OK, 0 violations' : `soak: FAILED, ${check.violationCount} violations`);
  return check.violationCount === 0 ? 0 : 1;
}

if (isMainThread) {
  const cfg = parseArgs(process.argv.slice(2));
  server(cfg).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
} else {
  generator(workerData as SoakConfig);
}
