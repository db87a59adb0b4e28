/**
 * `JsEngine`: the pure TypeScript twin of the native engine, and the tuned pure-Node
 * baseline the benchmarks compare against. It implements docs/architecture.md exactly;
 * the conformance and differential tests hold both engines to the same answers.
 *
 * # Threads
 * None: the "shard workers" run on the JS thread, in one `setImmediate` round scheduled
 * when work arrives (no timers). A round processes everything queued on every ready
 * shard, then makes each shard's push delivery (one out per shard) and answers flushes,
 * then calls `wake()` once.
 *
 * # Backpressure
 * The same accounting as the native engine, so both refuse at the same points: moves in
 * flight per shard against `channelCapacity`; ingress ring bytes per shard
 * (`align8(24 + frame.length)` per record, the ring's tail skipped when a record does not
 * fit before its end); bytes reserved per room against `roomBytes`.
 *
 * # Allocation
 * `dispatch` allocates nothing: the frame is copied into the shard's preallocated ring and
 * queued in typed arrays. Validation allocates nothing either: tags are checked in place in
 * the ring (src/sha256.ts; HMAC from midstates computed at `join`).
 *
 * # Deliveries
 * Validated frames are appended to their room's memory (one area per room, grown up to
 * `roomBytes`, never seen by JavaScript). A delivery (src/delivery.ts) copies rooms out of
 * it into a fresh `ArrayBuffer`, after which the room's memory is reused at once;
 * `releaseDelivery` detaches that buffer (`structuredClone` with a transfer list).
 *
 * # Shutdown
 * `shutdown()` stops processing and makes `dispatch` answer `Closed`; pull rooms can
 * still be drained.
 *
 * # Shard failure
 * Each shard's turn in a round runs in try/catch. A shard whose turn throws is failed: a
 * `failed` delivery goes out, its rooms answer `Closed` (dispatch) and `Status.Closed`
 * (control calls), and its later turns run in failed mode — moves not yet validated are
 * rejected `ShardFailed`, control ops and flush markers still pass in order, validated
 * moves are still delivered — so `flush()` and `close()` work and nothing is lost.
 */
import { AUTH_HMAC, FLAG_HMAC, FRAME_OVERHEAD, HEADER_BYTES, MAGIC_0, MAGIC_1, Reason, REASON_NAMES, REPLAY_WINDOW, VERDICT_NAMES, Verdict, WIRE_VERSION } from './constants';
import { readU32LE } from './encode';
import { hmacMidstates, verifyHmac, verifySha256 } from './sha256';
import { PULL_SHARD, detachBuffer, writeDelivery } from './delivery';
import { type Delivery, type Engine, type EngineConfig, type EngineCounters, type EngineShardStats, type PromHistograms, type RawRejection, Status, type StreamResult, type WakeFn } from './engine';
import { CoarseHistogram, LATENCY_LE_NS, LogHistogram, SIZE_LE } from './histogram';
import { RECORD_HEADER_BYTES } from './options';
import type { AllocatorStats, LatencyStats, RateLimit } from './types';

/** Smallest ingress record (empty payload): bounds how many moves a ring can hold. */
const MIN_RECORD = align8(RECORD_HEADER_BYTES + FRAME_OVERHEAD);
/** Room memory before a room's first validated move. */
const NO_BYTES = new Uint8Array(0);
/** Room memory's first size (it doubles as needed, up to `roomBytes`). */
const MIN_ROOM_MEMORY = 1024;
/** `validate()` answer for a move that passed. */
const VALID = -1;

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Worker-side state of one player in one room: its key (as HMAC midstates) and its anti-replay window. */
class Player {
  /** Highest seq accepted so far (0: none yet). */
  top = 0;
  /** The window bitmap, 128 bits: bit i of `w0..w3` (i = 0 in `w0`'s low bit) marks `top - i` as seen. */
  w0 = 0;
  w1 = 0;
  w2 = 0;
  w3 = 0;

  constructor(public key: Int32Array | null) {}

  /** The replay window (architecture.md "Validation" step 3): true if `seq` is accepted, and records it. */
  accept(seq: number): boolean {
    if (seq > this.top) {
      this.shift(seq - this.top);
      this.w0 |= 1;
      this.top = seq;
      return true;
    }
    const age = this.top - seq;
    if (age >= REPLAY_WINDOW) return false;
    const mask = 1 << (age & 31);
    switch (age >>> 5) {
      case 0:
        if ((this.w0 & mask) !== 0) return false;
        this.w0 |= mask;
        return true;
      case 1:
        if ((this.w1 & mask) !== 0) return false;
        this.w1 |= mask;
        return true;
      case 2:
        if ((this.w2 & mask) !== 0) return false;
        this.w2 |= mask;
        return true;
      default:
        if ((this.w3 & mask) !== 0) return false;
        this.w3 |= mask;
        return true;
    }
  }

  /** Ages every mark by `n` seqs (bit i moves to bit i + n; bits past 127 fall off). */
  private shift(n: number): void {
    if (n >= REPLAY_WINDOW) {
      this.w0 = this.w1 = this.w2 = this.w3 = 0;
      return;
    }
    let a = this.w0;
    let b = this.w1;
    let c = this.w2;
    let d = this.w3;
    for (; n >= 32; n -= 32) {
      d = c;
      c = b;
      b = a;
      a = 0;
    }
    if (n > 0) {
      const back = 32 - n;
      d = (d << n) | (c >>> back);
      c = (c << n) | (b >>> back);
      b = (b << n) | (a >>> back);
      a <<= n;
    }
    this.w0 = a;
    this.w1 = b;
    this.w2 = c;
    this.w3 = d;
  }
}

/** A room: the dispatch-side view (open, auth, reserved bytes, members) and the worker-side view (players, halves). */
/** A player's token bucket. */
interface Bucket {
  tokens: number;
  /** `performance.now()` of the last refill. */
  at: number;
}

/** Refills `b` for the time elapsed; whether a token is available. */
function refill(b: Bucket, rate: RateLimit): boolean {
  const now = performance.now();
  b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) / 1000) * rate.perSecond);
  b.at = now;
  return b.tokens >= 1;
}

class Room {
  /** False once `closeRoom` was called (until reopened): frames answer `UnknownRoom`. */
  open = true;
  /** Bytes of accepted frames not yet handed to JavaScript (in flight, validated or rejected). */
  reserved = 0;
  /**
   * Dispatch-side membership: the sync `NotMember` check and `leave`'s `UnknownPlayer`
   * status, with each member's rate-limit bucket.
   */
  readonly members = new Map<number, Bucket>();
  /** Per-player rate limit, or null. */
  rate: RateLimit | null = null;
  /** Worker-side players, updated in order with the moves by the shard's controls. */
  readonly players = new Map<number, Player>();
  /**
   * Validated frames waiting for a delivery, from byte 0 to `fillLen` (never seen by
   * JavaScript: deliveries copy them out). Allocated on the first validated move, grown by
   * doubling up to `roomBytes` (the budget keeps `fillLen` within it).
   */
  bytes: Uint8Array<ArrayBuffer> = NO_BYTES;
  fillLen = 0;
  fillCount = 0;
  rejections: RawRejection[] = [];
  /** Frame bytes of `rejections` (still reserved until delivered). */
  rejectedBytes = 0;
  /** Listed for delivery: push rooms in the shard's `pushPending`, pull rooms in the engine's `#pullPending`. */
  listed = false;
  /** Dispatch time (`performance.now()`) of each move in `bytes`. */
  stamps: number[] = [];
  /** Reported overloaded, not yet recovered. */
  overloaded = false;
  /** Dispatch → delivered of this room's moves since its last overload event (null: events off). */
  waits: CoarseHistogram | null = null;

  constructor(
    readonly id: number,
    readonly shard: Shard,
    /** 1 for HMAC-SHA256 (flags bit 0), 0 for SHA-256. */
    public auth: number,
    public push: boolean,
  ) {}

  /** Validated moves or rejections wait for delivery. */
  hasContent(): boolean {
    return this.fillCount > 0 || this.rejections.length > 0;
  }
}

const OP_JOIN = 0;
const OP_LEAVE = 1;
const OP_CLOSE = 2;
const OP_FLUSH = 3;

/** One `requestFlush`: answered once every shard has passed its marker. */
interface FlushRequest {
  readonly token: number;
  remaining: number;
}

/** A control call queued on a shard, taken after the shard's first `at` moves. */
type Control =
  | { readonly at: number; readonly op: typeof OP_JOIN | typeof OP_LEAVE | typeof OP_CLOSE; readonly room: Room; readonly player: number; readonly key: Int32Array | null }
  | { readonly at: number; readonly op: typeof OP_FLUSH; readonly request: FlushRequest };

/** One shard: its ingress ring, its move queue (typed arrays) and its control queue. */
class Shard {
  constructor(
    /** Its index: the `shard` of its push deliveries' header. */
    readonly index: number,
  ) {}

  /** Ingress ring, `arenaBytes`, allocated on the first accepted move. */
  ring = NO_BYTES;
  /** Per queued move: offset of the frame in `ring`, and ring bytes it holds (skip + record). */
  starts = new Int32Array(0);
  costs = new Int32Array(0);
  /** Per queued move: `performance.now()` at dispatch. */
  stamps = new Float64Array(0);
  rooms: (Room | undefined)[] = [];
  head = 0;
  tail = 0;
  /** Moves ever queued / ever validated: `enqueued - processed` are in flight. */
  enqueued = 0;
  processed = 0;
  /** Where the next record starts in `ring` (before any skip at the wrap). */
  writePos = 0;
  /** Ring bytes held by queued records, skipped tails included. */
  used = 0;
  /** High-water marks since the last reset, and times the write position went back to 0. */
  depthHighWater = 0;
  usedHighWater = 0;
  wraps = 0;
  /** Reported overloaded, not yet recovered. */
  overloaded = false;
  /** Dispatch → validated on this shard: since creation (metrics, stats) and since its last overload event. */
  readonly validatedNs = new LogHistogram(60e9);
  readonly waits = new CoarseHistogram();
  readonly controls: Control[] = [];
  controlHead = 0;
  /** Push rooms with content waiting for delivery. */
  readonly pushPending: Room[] = [];
  /** The shard's push delivery JavaScript holds (at most one out), or null. */
  out: ArrayBuffer | null = null;
  /** Listed in the engine's ready list. */
  ready = false;
  /** The worker failed: its moves are rejected `ShardFailed`, its rooms refuse everything. */
  failed = false;
  /** Test hook: throw at the start of the next turn. */
  failNext = false;

  /** Allocates the ring and a queue as long as the most moves the ring and `channelCapacity` allow. */
  allocate(config: EngineConfig): void {
    const slots = Math.min(config.channelCapacity, Math.floor(config.arenaBytes / MIN_RECORD));
    this.ring = new Uint8Array(config.arenaBytes);
    this.starts = new Int32Array(slots);
    this.costs = new Int32Array(slots);
    this.stamps = new Float64Array(slots);
    this.rooms = new Array<Room | undefined>(slots).fill(undefined);
  }
}

/** The pure TypeScript engine (see the module documentation). */
export class JsEngine implements Engine {
  readonly kind = 'js' as const;
  readonly #config: EngineConfig;
  readonly #wake: WakeFn;
  /** A round run inside a call (`#catchUp`) wakes on the next microtask, not inside the call. */
  #wakeLater = false;
  readonly #shards: Shard[];
  readonly #rooms = new Map<number, Room>();
  /**
   * Shards with work, processed by the next round: `#ready[0..#readyCount)` (and a spare
   * list swapped in per round). Counted rather than emptied with `length = 0`, which would
   * make V8 drop the backing store and the next round allocate one.
   */
  #ready: Shard[] = [];
  #readyCount = 0;
  #spare: Shard[] = [];
  #outbox: Delivery[] = [];
  /** Histograms (nanoseconds, except batch sizes), as the native engine keeps them. */
  readonly #deliveredNs = new LogHistogram(60e9);
  readonly #arenaAllocNs = new LogHistogram(60e9);
  readonly #batchSize = new LogHistogram(1 << 20);
  /** Rooms reported overloaded and not yet recovered. */
  #overloadedRooms: Room[] = [];
  #eventWakeQueued = false;
  /** `wantWritable()` was called and no capacity was freed since. */
  #wantWritable = false;
  /** A round is running (its end calls `wake()` once). */
  #inRound = false;
  /** Capacity was freed during this round while `wantWritable` was armed. */
  #writableWake = false;
  #immediate: ReturnType<typeof setImmediate> | null = null;
  #paused = false;
  #shut = false;
  /** `closeInput()` or `shutdown()` ran: new frames answer Closed, control calls Status.Closed. */
  #refusing = false;
  /** Some shard has failed (its rooms answer Closed). */
  #anyFailed = false;
  readonly #verdicts = new Array<number>(VERDICT_NAMES.length).fill(0);
  /** `Backpressure` by cause: queue, arena, room budget. */
  readonly #pressure = [0, 0, 0];
  readonly #reasons = new Array<number>(REASON_NAMES.length).fill(0);
  #delivered = 0;
  #batches = 0;
  /** Pull rooms with content waiting for a drain (`drainAll` takes them in this order). */
  #pullPending: Room[] = [];
  /** The rooms of the delivery being built (reused). */
  #taking: Room[] = [];

  constructor(config: EngineConfig, wake: WakeFn) {
    this.#config = config;
    this.#wake = wake;
    this.#shards = Array.from({ length: config.shards }, (_, i) => new Shard(i));
  }

  dispatch(frame: Uint8Array, sender: number): number {
    const verdict = this.#check(frame, 0, frame.length, sender);
    this.#verdicts[verdict]!++;
    return verdict;
  }

  dispatchStream(chunk: Uint8Array, sender: number): StreamResult {
    const end = chunk.length;
    let at = 0;
    let accepted = 0;
    let rejected = 0;
    let backpressure = false;
    let malformed = false;
    while (end - at >= HEADER_BYTES) {
      if (!headerOk(chunk, at)) {
        malformed = true;
        this.#verdicts[this.#refusing ? Verdict.Closed : Verdict.Malformed]!++;
        break;
      }
      const length = FRAME_OVERHEAD + payloadLength(chunk, at);
      if (end - at < length) break;
      const verdict = this.#check(chunk, at, length, sender);
      this.#verdicts[verdict]!++;
      if (verdict === Verdict.Backpressure) {
        backpressure = true;
        break;
      }
      if (verdict === Verdict.Accepted) accepted++;
      else rejected++;
      at += length;
    }
    return { consumed: at, accepted, rejected, backpressure, malformed };
  }

  openRoom(room: number, auth: number, push: boolean, rate: RateLimit | null = null): Status {
    if (this.#refusing || this.#shardFailed(room)) return Status.Closed;
    const flag = auth === AUTH_HMAC ? FLAG_HMAC : 0;
    const existing = this.#rooms.get(room);
    if (existing === undefined) {
      const r = new Room(room, this.#shards[room % this.#config.shards]!, flag, push);
      r.rate = rate;
      if (this.#config.overloadRoomBytes > 0) r.waits = new CoarseHistogram();
      // A room forgotten while overloaded comes back overloaded: one subject, one recovery.
      const k = this.#overloadedRooms.findIndex((o) => o.id === room);
      if (k >= 0) {
        this.#overloadedRooms[k] = r;
        r.overloaded = true;
      }
      this.#rooms.set(room, r);
      return Status.Ok;
    }
    if (existing.open) return Status.RoomExists;
    // A closing room's pending moves are on their way by its current delivery mode.
    if (existing.push !== push) return Status.WrongDelivery;
    existing.open = true;
    existing.auth = flag;
    existing.rate = rate;
    return Status.Ok;
  }

  join(room: number, player: number, key: Uint8Array | null): Status {
    const r = this.#openRoom(room);
    if (typeof r === 'number') return r;
    if ((key === null) !== (r.auth === 0)) return Status.WrongDelivery;
    // Joining again (key rotation) keeps the bucket: it cannot refill a rate limit.
    if (!r.members.has(player)) r.members.set(player, { tokens: r.rate?.burst ?? 0, at: performance.now() });
    // The key's HMAC midstates, computed now: the caller's buffer is never kept.
    this.#control(r, OP_JOIN, player, key === null ? null : hmacMidstates(key));
    return Status.Ok;
  }

  leave(room: number, player: number): Status {
    const r = this.#openRoom(room);
    if (typeof r === 'number') return r;
    if (!r.members.delete(player)) return Status.UnknownPlayer;
    this.#control(r, OP_LEAVE, player, null);
    return Status.Ok;
  }

  closeRoom(room: number): Status {
    const r = this.#openRoom(room);
    if (typeof r === 'number') return r;
    r.open = false;
    r.members.clear();
    this.#control(r, OP_CLOSE, 0, null);
    this.#forgetIfDone(r);
    return Status.Ok;
  }

  drain(room: number): ArrayBuffer | null | Status {
    const r = this.#rooms.get(room);
    if (r === undefined) return Status.UnknownRoom;
    if (r.push) return Status.WrongDelivery;
    this.#catchUp();
    let buffer: ArrayBuffer | null = null;
    if (r.hasContent()) {
      // It stays in #pullPending (listed): drainAll skips rooms without content.
      this.#taking.push(r);
      buffer = this.#take(PULL_SHARD);
    }
    this.#forgetIfDone(r);
    this.#checkRecovery();
    return buffer;
  }

  drainAll(): ArrayBuffer | null {
    this.#catchUp();
    const list = this.#pullPending;
    for (const room of list) {
      room.listed = false;
      if (room.hasContent()) this.#taking.push(room);
    }
    list.length = 0;
    const buffer = this.#taking.length === 0 ? null : this.#take(PULL_SHARD);
    this.#checkRecovery();
    return buffer;
  }

  releaseDelivery(buffer: ArrayBuffer, shard: number): void {
    detachBuffer(buffer);
    if (shard !== PULL_SHARD) this.freeShard(buffer, shard);
  }

  readonly detach = detachBuffer;

  freeShard(buffer: ArrayBuffer, shard: number): void {
    const s = this.#shards[shard];
    // Once per delivery: a stale or repeated release never frees the shard's next one.
    if (s === undefined || s.out !== buffer) return;
    s.out = null;
    if (s.pushPending.length > 0) this.#schedule(s);
  }

  hasRoom(room: number): boolean {
    return this.#rooms.has(room);
  }

  requestFlush(token: number): void {
    this.#checkRecovery();
    if (this.#shut) {
      // Nothing will run again: answer now, but never call wake() from inside a call.
      this.#outbox.push({ type: 'flushed', token });
      queueMicrotask(this.#wake);
      return;
    }
    const request: FlushRequest = { token, remaining: this.#shards.length };
    for (const shard of this.#shards) {
      shard.controls.push({ at: shard.enqueued, op: OP_FLUSH, request });
      this.#schedule(shard);
    }
  }

  wantWritable(): void {
    this.#wantWritable = true;
  }

  /** Capacity was freed (queue slots and ring bytes, or room budget): the armed wake-up fires. */
  #freed(): void {
    if (!this.#wantWritable) return;
    this.#wantWritable = false;
    if (this.#inRound) this.#writableWake = true;
    // Outside a round (drain): never wake JavaScript from inside a call.
    else queueMicrotask(this.#wake);
  }

  poll(): Delivery[] {
    this.#checkRecovery();
    const out = this.#outbox;
    this.#outbox = [];
    return out;
  }

  #pressed(room: Room, cause: 0 | 1 | 2): Verdict {
    this.#pressure[cause]!++;
    this.#watch(room);
    return Verdict.Backpressure;
  }

  /** Reports the room's shard queue or the room itself when it reaches its overload mark. */
  #watch(room: Room): void {
    const { overloadQueueDepth: q, overloadRoomBytes: rb } = this.#config;
    const shard = room.shard;
    const depth = shard.enqueued - shard.processed;
    if (q > 0 && !shard.overloaded && depth >= q) {
      shard.overloaded = true;
      this.#event('shard', this.#shards.indexOf(shard), false, depth, q, shard.waits);
    }
    if (rb > 0 && !room.overloaded && room.reserved >= rb) {
      room.overloaded = true;
      this.#overloadedRooms.push(room);
      this.#event('room', room.id, false, room.reserved, rb, room.waits);
    }
  }

  /** Recovery: an overloaded shard or room back at half its mark (or a room forgotten). */
  #checkRecovery(): void {
    // Runs at every poll: plain loops, and no new array unless a room is overloaded.
    const { overloadQueueDepth: q, overloadRoomBytes: rb } = this.#config;
    for (let i = 0; i < this.#shards.length; i++) {
      const shard = this.#shards[i]!;
      if (!shard.overloaded) continue;
      const depth = shard.enqueued - shard.processed;
      if (depth <= q / 2) {
        shard.overloaded = false;
        this.#event('shard', i, true, depth, q, shard.waits);
      }
    }
    if (this.#overloadedRooms.length === 0) return;
    this.#overloadedRooms = this.#overloadedRooms.filter((room) => {
      if (room.reserved > rb / 2 && this.#rooms.get(room.id) === room) return true;
      room.overloaded = false;
      this.#event('room', room.id, true, room.reserved, rb, room.waits);
      return false;
    });
  }

  #event(subject: 'shard' | 'room', id: number, recovered: boolean, depth: number, threshold: number, waits: CoarseHistogram | null): void {
    // The p99 wait since the subject's previous event (0 if nothing was recorded).
    const p99WaitNs = waits === null ? 0 : waits.quantile(0.99);
    waits?.clear();
    this.#outbox.push({ type: 'overload', event: { subject, id, recovered, depth, threshold, p99WaitNs } });
    if (!this.#eventWakeQueued) {
      // Never wake JavaScript from inside dispatch: notify on the next microtask.
      this.#eventWakeQueued = true;
      queueMicrotask(() => {
        this.#eventWakeQueued = false;
        this.#wake();
      });
    }
  }

  shardStats(): EngineShardStats[] {
    return this.#shards.map((s) => ({
      queueDepth: s.enqueued - s.processed,
      queueHighWater: s.depthHighWater,
      arenaCapacity: this.#config.arenaBytes,
      arenaUsed: s.used,
      arenaHighWater: s.usedHighWater,
      arenaWraps: s.wraps,
    }));
  }

  roomStats(top: number): { room: number; bytes: number }[] {
    const rows: { room: number; bytes: number }[] = [];
    for (const r of this.#rooms.values()) if (r.reserved > 0) rows.push({ room: r.id, bytes: r.reserved });
    rows.sort((a, b) => b.bytes - a.bytes || a.room - b.room);
    return rows.slice(0, top);
  }

  latencies(reset: boolean): LatencyStats | null {
    return {
      validatedNs: LogHistogram.merged(
        this.#shards.map((s) => s.validatedNs),
        reset,
      ),
      deliveredNs: this.#deliveredNs.snapshot(reset),
      arenaAllocNs: this.#arenaAllocNs.snapshot(reset),
      batchSize: this.#batchSize.snapshot(reset),
    };
  }

  promHistograms(): PromHistograms | null {
    return {
      validated: this.#shards.map((s) => s.validatedNs.cumulative(LATENCY_LE_NS)),
      delivered: this.#deliveredNs.cumulative(LATENCY_LE_NS),
      arenaAlloc: this.#arenaAllocNs.cumulative(LATENCY_LE_NS),
      batchSize: this.#batchSize.cumulative(SIZE_LE),
    };
  }

  allocator(): AllocatorStats | null {
    return null;
  }

  resetHighWater(): void {
    for (const s of this.#shards) {
      s.depthHighWater = 0;
      s.usedHighWater = 0;
    }
  }

  counters(): EngineCounters {
    const verdicts = this.#verdicts.slice();
    const reasons = this.#reasons.slice();
    return {
      dispatched: verdicts.reduce((a, b) => a + b, 0),
      accepted: verdicts[Verdict.Accepted]!,
      verdicts,
      reasons,
      delivered: this.#delivered,
      rejected: reasons.reduce((a, b) => a + b, 0),
      batches: this.#batches,
      backpressure: this.#pressure.slice(),
    };
  }

  closeInput(): void {
    this.#refusing = true;
  }

  shutdown(): void {
    if (this.#shut) return;
    this.#refusing = true;
    this.#shut = true;
    if (this.#immediate !== null) clearImmediate(this.#immediate);
    this.#immediate = null;
    for (const room of this.#rooms.values()) {
      for (const player of room.players.values()) player.key?.fill(0);
      room.players.clear();
    }
  }

  /** @internal Test hook (see `Engine.pause`). */
  pause(paused: boolean): void {
    this.#paused = paused;
    if (!paused && this.#readyCount > 0) this.#scheduleRound();
  }

  // ---- dispatch side -------------------------------------------------------------------

  /** The sync checks of architecture.md, in order; queues the frame when they pass. */
  #check(buf: Uint8Array, at: number, length: number, sender: number): Verdict {
    if (this.#refusing) return Verdict.Closed;
    if (length < HEADER_BYTES || !headerOk(buf, at)) return Verdict.Malformed;
    const len = payloadLength(buf, at);
    if (len > this.#config.maxPayload) return Verdict.Oversize;
    if (length !== FRAME_OVERHEAD + len) return Verdict.Malformed;
    if ((buf[at + 12]! | buf[at + 13]! | buf[at + 14]! | buf[at + 15]!) === 0) return Verdict.Malformed;
    const roomId = readU32LE(buf, at + 4);
    // Any room of a failed shard, open or not, is closed.
    if (this.#shardFailed(roomId)) return Verdict.Closed;
    const room = this.#rooms.get(roomId);
    if (room === undefined || !room.open) return Verdict.UnknownRoom;
    if ((buf[at + 3]! & FLAG_HMAC) !== room.auth) return Verdict.AuthMismatch;
    const player = readU32LE(buf, at + 8);
    if (sender >= 0 && sender !== player) return Verdict.WrongSender;
    // Membership (the player is the sender here, when one is given): a non-member spends
    // nothing, no token, no budget, no queue slot.
    const bucket = room.members.get(player);
    if (bucket === undefined) return Verdict.NotMember;
    // Rate limit: the member's own bucket.
    const rate = room.rate;
    if (rate !== null && !refill(bucket, rate)) return Verdict.RateLimited;
    const verdict = this.#enqueue(room, buf, at, length);
    if (rate !== null && verdict === Verdict.Accepted) bucket.tokens -= 1;
    return verdict;
  }

  /** Capacity checks (queue, ring, room), then the copy into the ring. */
  #enqueue(room: Room, buf: Uint8Array, at: number, length: number): Verdict {
    const shard = room.shard;
    const cap = this.#config.arenaBytes;
    if (shard.enqueued - shard.processed >= this.#config.channelCapacity) return this.#pressed(room, 0);
    const record = align8(RECORD_HEADER_BYTES + length);
    const skip = shard.writePos + record > cap ? cap - shard.writePos : 0;
    if (shard.used + skip + record > cap) return this.#pressed(room, 1);
    if (room.reserved + length > this.#config.roomBytes) return this.#pressed(room, 2);
    if (skip > 0 || shard.writePos + record === cap) shard.wraps++;
    if (shard.ring.length === 0) shard.allocate(this.#config);
    const start = skip === 0 ? shard.writePos : 0;
    const now = performance.now();
    // A view made by the constructor, not `subarray` (no species lookup: about half the cost).
    shard.ring.set(at === 0 && length === buf.length ? buf : new Uint8Array(buf.buffer, buf.byteOffset + at, length), start);
    // Arena allocation time, on every 64th move (as the native engine samples it).
    if ((shard.enqueued & 63) === 0) this.#arenaAllocNs.record((performance.now() - now) * 1e6);
    shard.writePos = start + record === cap ? 0 : start + record;
    shard.used += skip + record;
    const slot = shard.tail;
    shard.starts[slot] = start;
    shard.stamps[slot] = now;
    shard.costs[slot] = skip + record;
    shard.rooms[slot] = room;
    shard.tail = slot + 1 === shard.starts.length ? 0 : slot + 1;
    shard.enqueued++;
    shard.depthHighWater = Math.max(shard.depthHighWater, shard.enqueued - shard.processed);
    shard.usedHighWater = Math.max(shard.usedHighWater, shard.used);
    room.reserved += length;
    this.#schedule(shard);
    this.#watch(room);
    return Verdict.Accepted;
  }

  /** Whether `room`'s shard has failed. */
  #shardFailed(room: number): boolean {
    return this.#anyFailed && this.#shards[room % this.#config.shards]!.failed;
  }

  /** The room if it is open, or the status a control call answers. */
  #openRoom(room: number): Room | Status {
    if (this.#refusing || this.#shardFailed(room)) return Status.Closed;
    const r = this.#rooms.get(room);
    return r === undefined || !r.open ? Status.UnknownRoom : r;
  }

  #control(room: Room, op: typeof OP_JOIN | typeof OP_LEAVE | typeof OP_CLOSE, player: number, key: Int32Array | null): void {
    const shard = room.shard;
    shard.controls.push({ at: shard.enqueued, op, room, player, key });
    this.#schedule(shard);
  }

  /**
   * A closed room with nothing left to deliver is forgotten (drain then answers
   * `UnknownRoom`). JavaScript holds deliveries, never room memory: what it holds does not
   * keep a room.
   */
  #forgetIfDone(room: Room): void {
    if (!room.open && room.reserved === 0 && this.#rooms.get(room.id) === room) {
      this.#rooms.delete(room.id);
    }
  }

  #schedule(shard: Shard): void {
    if (!shard.ready) {
      shard.ready = true;
      this.#ready[this.#readyCount++] = shard;
    }
    if (this.#immediate === null && !this.#paused && !this.#shut) this.#scheduleRound();
  }

  /**
   * Runs the scheduled processing round now: a drain holds every move dispatched before
   * it, as the native engine's does (it runs its workers' remaining steps).
   */
  #catchUp(): void {
    if (this.#immediate === null || this.#readyCount === 0) return;
    clearImmediate(this.#immediate);
    // Inside a call (drain, drainAll, flush...): the round's wake-up must not run the
    // dispatcher's poll (push deliveries, dispatchAsync retries) inside that call, as the
    // native engine's wake-up never does: it comes once the caller's code has returned.
    this.#wakeLater = true;
    try {
      this.#round();
    } finally {
      this.#wakeLater = false;
    }
  }

  #scheduleRound(): void {
    this.#immediate = setImmediate(this.#round);
  }

  // ---- worker side ---------------------------------------------------------------------

  /** One processing round: every ready shard, then one `wake()` if something is ready for `poll()`. */
  readonly #round = (): void => {
    this.#immediate = null;
    if (this.#paused || this.#shut) return;
    const before = this.#outbox.length;
    const shards = this.#ready;
    const n = this.#readyCount;
    this.#ready = this.#spare;
    this.#readyCount = 0;
    this.#inRound = true;
    try {
      for (let k = 0; k < n; k++) {
        const shard = shards[k]!;
        shard.ready = false;
        try {
          this.#process(shard);
        } catch (error) {
          this.#fail(shard, error);
        }
      }
    } finally {
      this.#inRound = false;
    }
    this.#spare = shards;
    const writable = this.#writableWake;
    this.#writableWake = false;
    if (this.#outbox.length > before || writable) {
      if (this.#wakeLater) queueMicrotask(this.#wake);
      else this.#wake();
    }
  };

  /**
   * The shard's worker failed with `error`: report it, then run the rest of its queue in
   * failed mode (moves rejected `ShardFailed`, controls and flush markers in order).
   */
  #fail(shard: Shard, error: unknown): void {
    if (shard.failed) return; // failed mode itself threw: nothing sensible is left to do
    shard.failed = true;
    this.#anyFailed = true;
    let message: string;
    try {
      message = error instanceof Error ? error.message : String(error);
    } catch {
      message = 'an exception that cannot be converted to a string';
    }
    this.#outbox.push({ type: 'failed', shard: this.#shards.indexOf(shard), message });
    try {
      this.#process(shard);
    } catch {
      // Failed mode validates nothing; if even it throws, the shard stays as it is.
    }
  }

  /** @internal Test hook: the shard's next turn throws, as a bug in the worker would. */
  failShard(shard: number): void {
    const s = this.#shards[shard];
    if (s === undefined || s.failed || this.#shut) return;
    s.failNext = true;
    this.#schedule(s);
  }

  /** Takes the shard's moves and controls in call order until dry (or blocked at a flush marker), then delivers. */
  #process(shard: Shard): void {
    if (shard.failNext) {
      shard.failNext = false;
      throw new Error('injected failure (test hook)');
    }
    for (;;) {
      const control = shard.controls[shard.controlHead];
      if (control !== undefined && control.at === shard.processed) {
        if (!this.#apply(shard, control)) return;
        shard.controlHead++;
      } else if (shard.processed !== shard.enqueued) {
        this.#processMove(shard);
      } else {
        break;
      }
    }
    shard.controls.length = 0;
    shard.controlHead = 0;
    this.#deliverPending(shard);
  }

  /** Applies one control; false when a flush marker must wait for a push room's release. */
  #apply(shard: Shard, control: Control): boolean {
    if (control.op === OP_FLUSH) return this.#passFlushMarker(shard, control.request);
    const room = control.room;
    switch (control.op) {
      case OP_JOIN: {
        const player = room.players.get(control.player);
        if (player === undefined) {
          room.players.set(control.player, new Player(control.key));
        } else {
          // A rejoin's new key replaces the old one, whose midstates are wiped.
          if (player.key !== control.key) player.key?.fill(0);
          player.key = control.key;
        }
        break;
      }
      case OP_LEAVE:
        room.players.get(control.player)?.key?.fill(0);
        room.players.delete(control.player);
        break;
      case OP_CLOSE:
        for (const player of room.players.values()) player.key?.fill(0);
        room.players.clear();
        break;
    }
    return true;
  }

  /** Delivers the shard's push rooms; answers the marker unless one of them waits for a release. */
  #passFlushMarker(shard: Shard, request: FlushRequest): boolean {
    this.#deliverPending(shard);
    if (shard.pushPending.length > 0) return false;
    if (--request.remaining === 0) this.#outbox.push({ type: 'flushed', token: request.token });
    return true;
  }

  /**
   * Validates the move at the head of the shard's queue (in failed mode: rejects it
   * `ShardFailed`) and frees its ring record. The move leaves the queue only once it is
   * appended or rejected: if validation throws, it is still there for failed mode.
   */
  #processMove(shard: Shard): void {
    const slot = shard.head;
    const start = shard.starts[slot]!;
    const room = shard.rooms[slot]!;
    const ring = shard.ring;
    const len = payloadLength(ring, start);
    const player = readU32LE(ring, start + 8);
    const seq = readU32LE(ring, start + 12);
    const stamp = shard.stamps[slot]!;
    if (shard.failed) {
      this.#reject(room, player, seq, Reason.ShardFailed, FRAME_OVERHEAD + len);
    } else {
      const reason = this.#validate(room, ring, start, len, player, seq);
      const waitNs = (performance.now() - stamp) * 1e6;
      shard.validatedNs.record(waitNs);
      shard.waits.record(waitNs);
      if (reason === VALID) {
        // The stamp first: a batch that fills up (maxBatchMoves) is delivered inside
        // #append, and its moves' dispatch → delivered times are recorded then.
        room.stamps.push(stamp);
        this.#append(room, ring, start, FRAME_OVERHEAD + len);
      } else {
        this.#reject(room, player, seq, reason, FRAME_OVERHEAD + len);
      }
    }
    shard.rooms[slot] = undefined;
    shard.head = slot + 1 === shard.starts.length ? 0 : slot + 1;
    shard.processed++;
    shard.used -= shard.costs[slot]!;
    this.#freed();
  }

  /** Validation steps 1–3: a `Reason`, or `VALID`. */
  #validate(room: Room, ring: Uint8Array, start: number, len: number, playerId: number, seq: number): number {
    const player = room.players.get(playerId);
    // Cannot happen since membership is checked at dispatch (`NotMember`) and join / leave /
    // closeRoom reach the worker in order with the moves; kept as a safety net.
    if (player === undefined) return Reason.UnknownPlayer;
    // In place in the ring, no allocation (src/sha256.ts): the tag follows header and payload.
    const signed = HEADER_BYTES + len;
    if ((ring[start + 3]! & FLAG_HMAC) === 0) {
      if (!verifySha256(ring, start, signed)) return Reason.BadTag;
    } else if (player.key === null || !verifyHmac(player.key, ring, start, signed)) {
      return Reason.BadTag;
    }
    return player.accept(seq) ? VALID : Reason.Replay;
  }

  #append(room: Room, ring: Uint8Array, start: number, length: number): void {
    const end = room.fillLen + length;
    if (end > room.bytes.length) {
      // Within roomBytes: the room's budget counts these bytes until they are delivered.
      const grown = new Uint8Array(Math.min(this.#config.roomBytes, Math.max(end, 2 * room.bytes.length, MIN_ROOM_MEMORY)));
      grown.set(room.bytes.subarray(0, room.fillLen));
      room.bytes = grown;
    }
    room.bytes.set(new Uint8Array(ring.buffer, ring.byteOffset + start, length), room.fillLen);
    room.fillLen = end;
    room.fillCount++;
    this.#list(room);
    // A full batch does not wait for the queue to run dry (if the shard has no delivery out).
    if (room.push && room.fillCount >= this.#config.maxBatchMoves) this.#deliverPending(room.shard);
  }

  #reject(room: Room, player: number, seq: number, reason: number, length: number): void {
    room.rejections.push({ room: room.id, player, seq, reason });
    room.rejectedBytes += length;
    this.#reasons[reason]!++;
    this.#list(room);
  }

  /** The room has content: list it for its shard's next push delivery, or for `drainAll`. */
  #list(room: Room): void {
    if (room.listed) return;
    room.listed = true;
    if (room.push) room.shard.pushPending.push(room);
    else this.#pullPending.push(room);
  }

  /**
   * Makes the shard's push delivery: every listed push room, in one buffer, unless the shard
   * already has one out (then they stay listed until it is released).
   */
  #deliverPending(shard: Shard): void {
    if (shard.out !== null) return;
    const list = shard.pushPending;
    for (const room of list) {
      room.listed = false;
      if (room.hasContent()) this.#taking.push(room);
      else this.#forgetIfDone(room);
    }
    list.length = 0;
    if (this.#taking.length === 0) return;
    const buffer = this.#take(shard.index);
    shard.out = buffer;
    this.#outbox.push({ type: 'delivery', buffer });
  }

  /**
   * Copies the rooms of `#taking` into one delivery (src/delivery.ts) and empties them: their
   * budget is handed back and their memory is reusable at once. Delivered now: drain() or
   * drainAll() returns it, or the round hands it to JavaScript before it ends.
   */
  #take(shard: number): ArrayBuffer {
    const rooms = this.#taking;
    const buffer = writeDelivery(shard, rooms);
    const now = performance.now();
    let freed = 0;
    for (const room of rooms) {
      const count = room.fillCount;
      if (count > 0) {
        const waits = room.waits;
        for (const stamp of room.stamps) {
          const ns = (now - stamp) * 1e6;
          this.#deliveredNs.record(ns);
          waits?.record(ns);
        }
        room.stamps.length = 0;
        this.#batchSize.record(count);
        this.#delivered += count;
      }
      // Like the native engine: every room entry (moves or rejections) counts.
      this.#batches++;
      const cost = room.fillLen + room.rejectedBytes;
      freed += cost;
      room.reserved -= cost;
      room.fillLen = 0;
      room.fillCount = 0;
      room.rejections.length = 0;
      room.rejectedBytes = 0;
    }
    for (const room of rooms) this.#forgetIfDone(room);
    rooms.length = 0;
    if (freed > 0) this.#freed();
    return buffer;
  }
}

/** Magic, version and flags (only bit 0 may be set). */
function headerOk(buf: Uint8Array, at: number): boolean {
  return buf[at] === MAGIC_0 && buf[at + 1] === MAGIC_1 && buf[at + 2] === WIRE_VERSION && (buf[at + 3]! & ~FLAG_HMAC) === 0;
}

function payloadLength(buf: Uint8Array, at: number): number {
  return buf[at + 22]! | (buf[at + 23]! << 8);
}
