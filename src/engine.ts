/**
 * The low-level engine contract. `Dispatcher` (src/dispatcher.ts) validates every
 * argument and option, then drives one `Engine`: the native addon (src/native.ts)
 * or the pure TypeScript twin (src/js-engine.ts). Both must behave identically;
 * the conformance and differential tests hold them to it.
 *
 * Engines never throw for anything a caller controls: control calls answer a
 * `Status` code that `Dispatcher` turns into a typed error.
 */
import type { ListenAddresses, NativeListenOptions } from './ingress';
import type { AllocatorStats, LatencyStats, OverloadEvent, RateLimit, StreamResult } from './types';

/** A histogram as Prometheus needs it: cumulative counts at the bounds `le` (in the histogram's unit). */
export interface PromHistogram {
  le: number[];
  cumulative: number[];
  count: number;
  sum: number;
}

/** The histograms `metrics()` exposes. */
export interface PromHistograms {
  /** One per shard (exported with a `shard` label). */
  validated: PromHistogram[];
  delivered: PromHistogram;
  batchSize: PromHistogram;
  arenaAlloc: PromHistogram;
}

/** Answer of the control calls (`openRoom`, `join`, `leave`, `closeRoom`) and of a failed `drain`. */
export const Status = {
  Ok: 0,
  UnknownRoom: 1,
  RoomExists: 2,
  UnknownPlayer: 3,
  WrongDelivery: 4,
  Closed: 5,
  /** The memory the call needs (a pull room's `roomBytes`) could not be allocated. */
  OutOfMemory: 6,
} as const;
export type Status = (typeof Status)[keyof typeof Status];

/** Resolved engine configuration (every option has a value). */
export interface EngineConfig {
  workerThreads: number;
  shards: number;
  /** Moves in flight per shard (dispatched, not yet validated). */
  channelCapacity: number;
  /** Bytes of each shard's ingress arena (frames awaiting validation). */
  arenaBytes: number;
  /** Bytes a room may hold undelivered (in flight + validated, not yet drained). */
  roomBytes: number;
  maxPayload: number;
  /** Flush a push room's batch once it holds this many moves. */
  maxBatchMoves: number;
  /** false, or the list of CPU ids, one per worker thread, round-robin. */
  pinCores: number[] | null;
  /** Reserved: the native runtime's blocking pool, unused so far (see docs/architecture.md "Runtime threads"). */
  maxBlockingThreads: number;
  threadName: string;
  /** Overload marks (0 = off). */
  overloadQueueDepth: number;
  overloadRoomBytes: number;
}

/** One asynchronous rejection: an accepted move that failed validation. */
export interface RawRejection {
  room: number;
  player: number;
  seq: number;
  /** A `Reason` value. */
  reason: number;
}

/**
 * What the engine hands to JavaScript asynchronously: push deliveries (one shard's push rooms
 * in one delivery buffer, src/delivery.ts), flush completions, events, shard failures.
 */
export type Delivery =
  /** A push delivery of one shard (its header names the shard); the shard delivers again once it is released. */
  | { type: 'delivery'; buffer: ArrayBuffer }
  | { type: 'flushed'; token: number }
  | { type: 'overload'; event: OverloadEvent }
  /** The shard's worker failed (once per shard); `message` is the panic / exception message. */
  | { type: 'failed'; shard: number; message: string }
  | { type: 'connection'; flags: number; room: number; player: number; id: number; peer: readonly number[] };

export type { StreamResult } from './types';

/** Counters the guarantees are stated in. */
export interface EngineCounters {
  dispatched: number;
  accepted: number;
  /** Indexed by `Verdict` value. */
  verdicts: number[];
  /** Indexed by `Reason` value. */
  reasons: number[];
  /** Moves delivered to JavaScript (copied into deliveries). */
  delivered: number;
  /** Accepted moves rejected by validation (sum of `reasons`). */
  rejected: number;
  /** Room entries delivered (rooms with moves or rejections, per delivery). */
  batches: number;
  /** `Backpressure` by cause: [queue, arena, room budget]. */
  backpressure: number[];
}

/** One shard's queue and arena. High-water marks are exact on the js engine and upper bounds on the native one. */
export interface EngineShardStats {
  queueDepth: number;
  queueHighWater: number;
  arenaCapacity: number;
  arenaUsed: number;
  arenaHighWater: number;
  arenaWraps: number;
}

export interface Engine {
  readonly kind: 'native' | 'js';
  /** `sender < 0` means no sender check. Returns a `Verdict`. */
  dispatch(frame: Uint8Array, sender: number): number;
  dispatchStream(chunk: Uint8Array, sender: number): StreamResult;
  /** `rate`: per-player token bucket, or null for none. */
  openRoom(room: number, auth: number, push: boolean, rate?: RateLimit | null): Status;
  /** `key` is null in sha256 rooms. Joining again replaces the key and keeps the replay window. */
  join(room: number, player: number, key: Uint8Array | null): Status;
  leave(room: number, player: number): Status;
  closeRoom(room: number): Status;
  /**
   * Pull rooms: a delivery (src/delivery.ts, shard `PULL_SHARD`) holding this one room's moves
   * and rejections since its last drain; `null` when nothing is pending; a `Status` when the
   * room is unknown (`UnknownRoom`) or a push room (`WrongDelivery`).
   */
  drain(room: number): ArrayBuffer | null | Status;
  /** Pull rooms: one delivery holding every pull room with something pending; `null` when none has. */
  drainAll(): ArrayBuffer | null;
  /**
   * JavaScript is done with a delivery: detaches `buffer` (unless it is already detached) and,
   * for a push delivery (`shard` ≠ `PULL_SHARD`, as read from the header when the delivery
   * was handed out), lets that shard deliver again (each shard keeps at most one push
   * delivery out). Idempotent.
   */
  releaseDelivery(buffer: ArrayBuffer, shard: number): void;
  /**
   * Lets the push delivery `buffer` of `shard` free its shard without detaching it (the
   * caller keeps reading it; its later release must pass `PULL_SHARD`, which only detaches).
   * `close()` uses it for batches a `batches()` loop still holds.
   */
  freeShard(buffer: ArrayBuffer, shard: number): void;
  /**
   * Detaches a delivery's buffer without the engine (its dispatcher may be gone): a function
   * that holds no reference to the engine.
   */
  readonly detach: (buffer: ArrayBuffer) => void;
  /** Whether the room is open or still closing (not yet forgotten). */
  hasRoom(room: number): boolean;
  /** Ask every shard to report `{type:'flushed', token}` once everything queued before is delivered. */
  requestFlush(token: number): void;
  /**
   * Arms a one-shot notification: the engine calls `wake()` after it next frees capacity
   * (takes moves off a shard queue and frees their arena records, or delivers / forgets
   * room budget). Arming again before that is the same as arming once. Never calls `wake()`
   * from inside this call.
   */
  wantWritable(): void;
  /** Deliveries ready for JavaScript, in order. */
  poll(): Delivery[];
  counters(): EngineCounters;
  shardStats(): EngineShardStats[];
  /** The `top` rooms with the most undelivered bytes, largest first (ties: lower id first); empty rooms left out. */
  roomStats(top: number): { room: number; bytes: number }[];
  /** Starts new high-water intervals. */
  resetHighWater(): void;
  /** Histograms for `stats()` (null where the engine keeps none); `reset` starts new intervals. */
  latencies(reset: boolean): LatencyStats | null;
  /** Histograms for `metrics()` at fixed bounds, never reset (null where none are kept). */
  promHistograms(): PromHistograms | null;
  allocator(): AllocatorStats | null;
  /** From now on dispatch answers Closed and control calls Status.Closed; queued work still runs. */
  closeInput(): void;
  /** Stop threads / timers. Idempotent. After it, dispatch answers Closed. */
  shutdown(): void;
  /** Native ingress (the native engine only). */
  listen?(options: NativeListenOptions): NativeListenInfo;
  stopListening?(): void;
  /** Connections of a stopped ingress that have not finished closing yet. */
  ingressClosing?(): number;
  /** 0 sent, 1 backpressure, 2 dropped, 3 closed. */
  send?(room: number, player: number, bytes: Uint8Array): number;
  broadcast?(room: number, bytes: Uint8Array, except: number[] | undefined): number;
  /** With `code` / `reason`: what a WebSocket's close frame says instead of 1000 "kicked". */
  disconnect?(room: number, player: number | undefined, code: number | undefined, reason: string | undefined): number;
  ingressStats?(): NativeIngressStats | null;
  /** @internal Test hook: stop (true) or restart (false) validation, to fill queues deterministically. */
  pause(paused: boolean): void;
  /** @internal Test hook: the shard's worker fails (panics / throws) at its next turn. */
  failShard(shard: number): void;
}

/** Called by an engine (possibly many times) when `poll()` has something new. */
export type WakeFn = () => void;

/** The addresses `listen` bound (addon): the same fields it takes. */
export type NativeListenInfo = ListenAddresses;

/** Native ingress counters (addon). */
export interface NativeIngressStats {
  open: number;
  acceptedConnections: number;
  refusedConnections: number;
  closedConnections: number;
  bytesIn: number;
  bytesOut: number;
  messagesOut: number;
  droppedOut: number;
}
