/**
 * Public types of move-dispatcher. Everything here is part of the contract; the exact
 * semantics are in docs/architecture.md.
 */
import type { Reason, Verdict } from './constants';

/** Room authentication mode. */
export type AuthMode = 'sha256' | 'hmac-sha256';
/** Room delivery mode: `pull` rooms are drained by the game loop (`drain`, `drainAll`), `push` rooms deliver to `onDelivery` / `onBatch` / `batches()`. */
export type DeliveryMode = 'pull' | 'push';

export interface DispatcherOptions {
  /** `'native'` (default): the Rust addon. `'js'`: the same contract in pure TypeScript. */
  engine?: 'native' | 'js';
  /** Tokio worker threads (native). Default: `min(shards, cores)`, at least 1. Range 1..=64. */
  workerThreads?: number;
  /** Shards: independent queues, arenas and workers; a room lives on `room % shards`. Default: cores − 1 (at least 1, at most 64), so the JavaScript thread keeps a core. Range 1..=256. */
  shards?: number;
  /** Moves in flight per shard before `Backpressure`. Default 65,536. Range 1..=2^24. */
  channelCapacity?: number;
  /**
   * How many `dispatchAsync` calls may wait for capacity at once; beyond it `dispatchAsync`
   * resolves `Verdict.Backpressure` at once, so the dispatcher never holds more than this
   * many callers' frames. Default: `channelCapacity` (as resolved). Range 1..=2^24.
   */
  maxPendingAsync?: number;
  /** Bytes of each shard's ingress arena. Default 8 MiB. Range 64 KiB..=1 GiB, and at least 2 × (88 + maxPayload). */
  arenaBytes?: number;
  /** Bytes a room may hold undelivered before `Backpressure` (validated moves wait in room memory of this size, touched lazily, until they are copied into a delivery). Default 256 KiB. Range 4 KiB..=64 MiB, at least 56 + maxPayload. */
  roomBytes?: number;
  /** Largest payload accepted, in bytes. Default 1024. Range 0..=65535. */
  maxPayload?: number;
  /** A push batch is delivered once it holds this many moves, even if the queue is not dry. Default 4096. Range 1..=2^20. */
  maxBatchMoves?: number;
  /** Pin worker threads to cores: `true` = one core per worker in order, or an explicit list. Default false. */
  pinCores?: boolean | number[];
  /**
   * Reserved: sizes the native runtime's blocking-thread pool, which nothing uses yet (the
   * journal and native ingress will). Validated and reported in `stats().runtime`; changing
   * it has no effect today. Default 4. Range 1..=512.
   */
  maxBlockingThreads?: number;
  /** Name prefix of the native threads (≤ 15 bytes shown by the OS). Default `'move-disp'`. */
  threadName?: string;
  /**
   * Push delivery, many rooms per call: called with each push delivery (the validated moves
   * and rejections of every push room of one shard that had something, in one `ArrayBuffer`).
   * The delivery is released — detached: every view over it reads as empty — when the
   * callback returns; call `batch.copy()` on a room to keep its data. Iterating it allocates
   * nothing per room or per move. A throw, or the rejection of a promise it returns, is
   * reported through `onError` (or `process.emitWarning`) and does not stop delivery.
   *
   * Give `onDelivery` or `onBatch`, not both (the constructor throws
   * `ERR_MOVE_DISPATCHER_INVALID_OPTION`, field `onDelivery`). With `onDelivery`, `batches()`
   * receives nothing.
   */
  onDelivery?: (delivery: Delivery) => void;
  /**
   * Push delivery, one room per call (compatibility with `onDelivery`'s per-room path): called
   * once per room of each push delivery with a `MoveBatch` of that room. Each batch is
   * released when the callback returns (call `batch.copy()` to keep its data); the delivery's
   * memory is detached once all its batches are released. A throw, or the rejection of a
   * promise it returns, is reported through `onError` (or `process.emitWarning`) and does not
   * stop delivery.
   */
  onBatch?: (batch: MoveBatch) => void;
  /**
   * Called with errors thrown by `onDelivery`, `onBatch`, `onOverload` or `onRecovered`, and
   * with an `ERR_MOVE_DISPATCHER_SHARD_FAILED` error (field `shard`) once per shard whose
   * worker failed. Default: `process.emitWarning`.
   */
  onError?: (error: unknown) => void;
  /**
   * Overload marks: a shard whose queue reaches `queueDepth` moves, or a room holding
   * `roomBytes` undelivered bytes, is reported to `onOverload`; `onRecovered` follows once it
   * falls to half the mark. Defaults: 75% of `channelCapacity` and of `roomBytes`; 0 turns a
   * mark off. Recovery is noticed on `drain()`, `drainAll()`, push deliveries and `flush()`.
   * Tracked only when `onOverload` or `onRecovered` is given (nothing else observes it).
   */
  overload?: { queueDepth?: number; roomBytes?: number };
  /** A shard queue or a room crossed its overload mark (asynchronous, never inside `dispatch`). */
  onOverload?: (event: OverloadEvent) => void;
  /** A shard queue or a room reported by `onOverload` fell back to half its mark. */
  onRecovered?: (event: OverloadEvent) => void;
}

/** An overload or recovery notification, for the control plane (stop placing rooms on a hot shard, kick a flooding player). */
export interface OverloadEvent {
  subject: 'shard' | 'room';
  /** The shard index or the room id. */
  id: number;
  recovered: boolean;
  /** Queue depth in moves (shard) or undelivered bytes (room) when noticed. */
  depth: number;
  threshold: number;
  /**
   * p99 of the subject's own waits since its previous event, in ns: dispatch → validated on
   * that shard, or dispatch → delivered of that room's moves (0 if none were recorded).
   * Shards use the HDR histograms; rooms a coarse per-room one (at most 25% above).
   */
  p99WaitNs: number;
}

export interface RoomOptions {
  /** Default `'sha256'`. */
  auth?: AuthMode;
  /** Default `'pull'`. */
  delivery?: DeliveryMode;
  /**
   * Per-player token bucket, keyed by the `sender` given to dispatch (the frame's player when
   * none is given): `perSecond` moves a second on average, bursts of up to `burst`. A frame
   * without a token answers `Verdict.RateLimited` and spends nothing. Each member's bucket
   * starts full at `join`; a non-member answers `Verdict.NotMember` first and has no bucket
   * to spend. Off by default.
   */
  rateLimit?: RateLimit;
}

/** A rate limit: `perSecond` > 0 (finite), `burst` an integer ≥ 1. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface JoinOptions {
  /** HMAC key, 16–64 bytes; required in `hmac-sha256` rooms, refused in `sha256` rooms. */
  key?: Uint8Array;
}

/** An accepted move that failed asynchronous validation. */
export interface Rejection {
  room: number;
  player: number;
  seq: number;
  reason: Reason;
}

/** A reused, read-only view of one move inside a batch (valid during one iteration step). */
export interface MoveView {
  readonly room: number;
  readonly player: number;
  readonly seq: number;
  readonly tick: number;
  readonly kind: number;
  /**
   * The payload, a view into the delivery memory (no copy of the bytes). Reading it creates
   * a `Uint8Array` view object each time: for zero allocations read the bytes at
   * `payloadOffset .. payloadOffset + payloadLength` of `batch.buffer` (`delivery.bytes`)
   * through a view you already hold.
   */
  readonly payload: Uint8Array;
  /** Offset of the payload in `batch.buffer` (= `delivery.bytes`): `frameOffset + 24`. */
  readonly payloadOffset: number;
  /** Length of the payload in bytes: `frameLength - 56`. */
  readonly payloadLength: number;
  /** Offset of the frame in `batch.buffer` (= `delivery.bytes`). */
  readonly frameOffset: number;
  /** Length of the whole frame (56 + payload length). */
  readonly frameLength: number;
}

/**
 * Validated moves of one room, back to back in the memory of the delivery that brought
 * them: frames from `offset` to `offset + length` of `buffer`, in dispatch order.
 * `buffer` is the delivery's `ArrayBuffer`, shared with the other rooms of the delivery;
 * nothing writes it again, and releasing detaches it (every view over it then reads as
 * empty). A pull batch is valid until `release()` or the room's next `drain()`;
 * a push batch until `onBatch` returns (or the `batches()` loop asks for the next one).
 * `copy()` keeps the data longer.
 */
export interface MoveBatch extends Iterable<MoveView> {
  readonly room: number;
  readonly count: number;
  /** The delivery's `ArrayBuffer` (detached once the delivery is released). */
  readonly buffer: ArrayBuffer;
  /** Offset of the room's first frame in `buffer`. */
  readonly offset: number;
  readonly length: number;
  /**
   * The room's rejections in the order they occurred (an array built on first read; reading
   * it for the first time after release throws `ERR_MOVE_DISPATCHER_BATCH_RELEASED`).
   */
  readonly rejections: readonly Rejection[];
  /** True once released (or, for a pull batch, once the room was drained again); reading it then throws `ERR_MOVE_DISPATCHER_BATCH_RELEASED`. */
  readonly released: boolean;
  /**
   * Releases the batch. Idempotent. For the room view a `Delivery` hands out while it is
   * iterated, this releases the whole delivery.
   */
  release(): void;
  /** A batch with the same moves and rejections in memory of its own (valid until its own `release()`). */
  copy(): MoveBatch;
  /** The frames as one `Uint8Array` view over `buffer` (no copy). */
  bytes(): Uint8Array;
  /** Iterates the moves with one reused view (no allocation per move). */
  [Symbol.iterator](): Iterator<MoveView>;
}

/**
 * Many rooms' moves and rejections in ONE `ArrayBuffer` that nobody writes again
 * (`drainAll()`, or a push delivery handed to `onDelivery`). Iterate it for one `MoveBatch`
 * view per room (the SAME reused object, moved from room to room), and each room for its
 * moves (one reused `MoveView`): a loop allocates nothing per room or per move.
 *
 * `release()` detaches `buffer`: every view handed out (`bytes`, `batch.bytes()`,
 * `move.payload`, `new Uint8Array(batch.buffer)`) then has byteLength 0, and iterating
 * throws `ERR_MOVE_DISPATCHER_BATCH_RELEASED`. A `drainAll()` delivery is released by the
 * next `drainAll()`; a push delivery when `onDelivery` returns.
 */
export interface Delivery extends Iterable<MoveBatch> {
  /** Moves in the delivery (all rooms). */
  readonly count: number;
  /** Rooms in the delivery: those with moves or rejections. */
  readonly rooms: number;
  /** The delivery's memory (an empty buffer for an empty delivery); detached once released. */
  readonly buffer: ArrayBuffer;
  /** `buffer` as one `Uint8Array`: `move.frameOffset` and `move.payloadOffset` index into it. */
  readonly bytes: Uint8Array;
  /** Every room's rejections, room after room, each room's in order (built on first read). */
  readonly rejections: readonly Rejection[];
  readonly released: boolean;
  /** Detaches the memory (and lets a push delivery's shard deliver again). Idempotent. */
  release(): void;
  /** One reused `MoveBatch` view per room, in the delivery's room order. */
  [Symbol.iterator](): Iterator<MoveBatch>;
}

export interface StreamResult {
  /** Bytes consumed from the start of the chunk (whole frames only); keep the rest. */
  consumed: number;
  accepted: number;
  rejected: number;
  /** Stopped at a frame that met `Backpressure` (it was not consumed). */
  backpressure: boolean;
  /** Stopped at bytes that are not a frame header: the stream is out of sync, drop the connection. */
  malformed: boolean;
}

/** Options of `stats()`. */
export interface StatsOptions {
  /** Start new intervals for the high-water marks after this snapshot. Default false. */
  reset?: boolean;
  /** How many rooms `rooms` lists (those holding the most undelivered bytes). Default 10. */
  topRooms?: number;
}

/** One shard's queue and ingress arena. */
export interface ShardStats {
  shard: number;
  /** Moves dispatched and not yet taken by the worker. */
  queueDepth: number;
  /** Highest queue depth since the last reset (native: an upper bound, refreshed every 64 moves). */
  queueHighWater: number;
  arena: {
    capacity: number;
    /** Bytes holding frames not yet validated. */
    used: number;
    /** Highest `used` since the last reset (native: an upper bound, like `queueHighWater`). */
    highWater: number;
    /** Times the arena's bump pointer went back to its start (ring rotations). */
    wraps: number;
  };
}

/** A room's undelivered bytes: in flight, validated and rejected, not yet handed to JavaScript. */
export interface RoomStats {
  room: number;
  bytes: number;
}

/** One HDR histogram (3 significant digits): summary and the non-empty buckets, enough to rebuild it. */
export interface HistogramStats {
  count: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  /** The 99.9th percentile. */
  p999: number;
  max: number;
  mean: number;
  sum: number;
  /** `[highest value of the bucket, count]` for each non-empty bucket, ascending. */
  buckets: [number, number][];
}

/** Latency (nanoseconds) and batch-size histograms since the last reset. */
export interface LatencyStats {
  /** Dispatch → validated by the shard worker. */
  validatedNs: HistogramStats;
  /** Dispatch → handed to JavaScript (copied into a delivery: a `drain()` / `drainAll()`, or a push delivery for `onDelivery` / `onBatch`). */
  deliveredNs: HistogramStats;
  /** Arena allocation (the bump-pointer copy of a frame), timed on every 64th dispatch. */
  arenaAllocNs: HistogramStats;
  /** Moves per delivered room entry (rooms with at least one move). */
  batchSize: HistogramStats;
}

/** Allocator figures of the process (native engine). */
export interface AllocatorStats {
  /** jemalloc `stats.*` in bytes (epoch advanced per snapshot), or null where jemalloc is not the allocator. */
  jemalloc: { allocated: number; active: number; resident: number; mapped: number; retained: number } | null;
  /** Heap allocations made on the hot path (dispatch, validation) since the process started, counted by the global allocator; null if not measured. */
  hotPathAllocations: number | null;
}

/** How the engine runs. */
export interface RuntimeStats {
  /** Tokio worker threads (0 on the js engine: it runs on the JavaScript thread). */
  workerThreads: number;
  maxBlockingThreads: number;
  shards: number;
  /** Core of each worker thread, in order, or null when not pinned. */
  pinnedCores: number[] | null;
  threadName: string;
}

/** Counters the guarantees are stated in. After `flush()` (and draining pull rooms): accepted = delivered + rejected. */
export interface DispatcherStats {
  engine: 'native' | 'js';
  /** Frames passed to dispatch / dispatchStream / dispatchAsync (each one counts once per verdict). */
  dispatched: number;
  accepted: number;
  /** Count per verdict name. */
  verdicts: Record<keyof typeof Verdict, number>;
  /** Count per reason name. */
  reasons: Record<keyof typeof Reason, number>;
  /** Moves handed to JavaScript (drains and push deliveries). */
  delivered: number;
  /** Accepted moves rejected by validation. */
  rejected: number;
  /**
   * Room entries handed to JavaScript: each room with moves or rejections in a `drain()`,
   * `drainAll()` or push delivery counts once.
   */
  batches: number;
  /** `Backpressure` verdicts by cause (they add up to `verdicts.Backpressure`). */
  backpressure: { queue: number; arena: number; room: number };
  shards: ShardStats[];
  /** The rooms holding the most undelivered bytes, largest first (see `StatsOptions.topRooms`). */
  rooms: RoomStats[];
  runtime: RuntimeStats;
  /** Histograms (both engines; the js engine's come from `performance.now()`). */
  latency: LatencyStats | null;
  /** Allocator figures (native engine; null on the js engine). */
  allocator: AllocatorStats | null;
  /** Native ingress (`listen`); null when not listening. Its frames' verdicts count in `verdicts` above. */
  ingress: IngressStats | null;
}

/** Native ingress figures (`stats().ingress`). */
export interface IngressStats {
  /** Connections open now, handshakes in flight included (each holds a slot of `maxConnections`). */
  connections: number;
  /** Connections admitted (ticket checked) since `listen`. */
  accepted: number;
  /** Connections refused before opening: bad ticket, `maxConnections`, `maxHandshakesPerAddress`, bad or slow handshake. */
  refused: number;
  /** Admitted connections closed since. */
  closed: number;
  bytesIn: number;
  bytesOut: number;
  /** Outbound messages written whole. */
  messagesOut: number;
  /** `send` / `broadcast` calls that dropped a connection for backpressure. */
  dropped: number;
}

export interface EncodeMoveInput {
  room: number;
  player: number;
  seq: number;
  tick?: number;
  kind?: number;
  payload?: Uint8Array;
  /** HMAC key (16–64 bytes): makes an HMAC-SHA256 frame (flags bit 0). Absent: SHA-256. */
  key?: Uint8Array;
}

