/**
 * `Dispatcher`: the public API. It validates every argument, then drives one engine
 * (native addon or pure TypeScript twin), and owns the deliveries handed to JavaScript
 * (`drain`, `drainAll`, push: `onDelivery`, `onBatch`, `batches()`; src/delivery.ts),
 * `flush()`, `dispatchAsync()` and `close()`.
 */
import { isUint8Array } from 'node:util/types';
import { AUTH_HMAC, AUTH_SHA256, MAX_KEY_BYTES, MIN_KEY_BYTES, REASON_NAMES, VERDICT_NAMES, Verdict } from './constants';
import { type Engine, type EngineConfig, Status } from './engine';
import { type ErrorCode as ErrorCodeType, ErrorCode, rangeError, stateError, typeError } from './errors';
import { type DeliveryReleaseHook, DeliveryView, type RoomBatch, emptyBatch } from './delivery';
import { registerEngine } from './internal';
import { type ConnectionInfo, type DisconnectInfo, type DisconnectOptions, type IngressServer, type ListenedTransports, type ListenOptions, type SendResult, type Transport, MAX_CLOSE_REASON_BYTES, SEND_RESULTS, connectionEvent, resolveListenOptions } from './ingress';
import { JsEngine } from './js-engine';
import { loadNativeEngine } from './native';
import { renderMetrics } from './metrics';
import { allKeys, copyOfBytes, describe, rejectUnknownKeys, resolveOptions } from './options';
import type {
  Delivery,
  DispatcherOptions,
  DispatcherStats,
  OverloadEvent,
  RateLimit,
  StatsOptions,
  JoinOptions,
  MoveBatch as MoveBatchType,
  RoomOptions,
  StreamResult,
} from './types';

const U32_MAX = 0xffff_ffff;
const ROOM_KEYS = allKeys<RoomOptions>()(['auth', 'delivery', 'rateLimit']);
const RATE_LIMIT_KEYS = allKeys<RateLimit>()(['perSecond', 'burst']);
const JOIN_KEYS = allKeys<JoinOptions>()(['key']);
const STATS_KEYS = allKeys<StatsOptions>()(['reset', 'topRooms']);
const noop = (): void => {};
/** Dispatchers with calls waiting on their engine's wake-up (see `#keptAlive`). */
const WAITING = new Set<object>();

/** `disconnect()`'s options: `undefined` when none is given (the default close), else both resolved. */
function checkDisconnectOptions(options: unknown): { code: number; reason: string } | undefined {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw typeError(ErrorCode.InvalidArgument, `disconnect: options must be an object, got ${describe(options)}`, { field: 'options' });
  }
  rejectUnknownKeys(options, ['code', 'reason'], 'disconnect', ErrorCode.InvalidArgument);
  const { code, reason } = options as DisconnectOptions;
  if (code === undefined && reason === undefined) return undefined;
  if (code !== undefined && typeof code !== 'number') {
    throw typeError(ErrorCode.InvalidArgument, `disconnect: code must be a number, got ${describe(code)}`, { field: 'code' });
  }
  if (code !== undefined && (!Number.isInteger(code) || (code !== 1000 && (code < 3000 || code > 4999)))) {
    throw rangeError(ErrorCode.InvalidArgument, `disconnect: code must be 1000 or an integer from 3000 to 4999, got ${describe(code)}`, { field: 'code' });
  }
  if (reason !== undefined && typeof reason !== 'string') {
    throw typeError(ErrorCode.InvalidArgument, `disconnect: reason must be a string, got ${describe(reason)}`, { field: 'reason' });
  }
  if (reason !== undefined) {
    const bytes = Buffer.from(reason, 'utf8');
    // A lone surrogate has no UTF-8: the client would read U+FFFD instead of the text given.
    if (bytes.toString('utf8') !== reason) {
      throw rangeError(ErrorCode.InvalidArgument, 'disconnect: reason must be well-formed text (it holds a lone surrogate)', { field: 'reason' });
    }
    if (bytes.length > MAX_CLOSE_REASON_BYTES) {
      throw rangeError(ErrorCode.InvalidArgument, `disconnect: reason must be at most ${MAX_CLOSE_REASON_BYTES} bytes of UTF-8, got ${bytes.length}`, { field: 'reason' });
    }
  }
  return { code: code ?? 1000, reason: reason ?? 'kicked' };
}

function checkId(value: unknown, field: string, method: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > U32_MAX) {
    const fn = typeof value === 'number' ? rangeError : typeError;
    throw fn(ErrorCode.InvalidArgument, `${method}: ${field} must be an integer in 0..=4294967295, got ${describe(value)}`, { field });
  }
  return value;
}

function checkBytes(value: unknown, field: string, method: string): Uint8Array {
  // `isUint8Array` reads the object's internal slots: it accepts views from another realm (vm
  // contexts), which instanceof misses, and refuses a Proxy or an object that merely has
  // Uint8Array.prototype as its prototype, which instanceof lets through.
  if (!isUint8Array(value)) {
    // Never echo a string here: a key or a frame passed as a (hex, base64, binary) string by
    // mistake would end up in logs.
    const got = typeof value === 'string' ? `a string of ${value.length} characters` : describe(value);
    throw typeError(ErrorCode.InvalidArgument, `${method}: ${field} must be a Uint8Array (or Buffer), got ${got}`, { field });
  }
  return value;
}

function checkRateLimit(value: unknown): RateLimit | null {
  if (value === undefined) return null;
  if (typeof value !== 'object' || value === null) {
    throw typeError(ErrorCode.InvalidArgument, `openRoom: rateLimit must be an object { perSecond, burst }, got ${describe(value)}`, { field: 'rateLimit' });
  }
  rejectUnknownKeys(value, RATE_LIMIT_KEYS, 'openRoom', ErrorCode.InvalidArgument, 'rateLimit.');
  const { perSecond, burst } = value as Partial<RateLimit>;
  if (typeof perSecond !== 'number' || !Number.isFinite(perSecond) || perSecond <= 0 || perSecond > 1e9) {
    throw rangeError(ErrorCode.InvalidArgument, `openRoom: rateLimit.perSecond must be a number in (0, 1e9], got ${describe(perSecond)}`, {
      field: 'rateLimit.perSecond',
    });
  }
  if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 1 || burst > 1e9) {
    throw rangeError(ErrorCode.InvalidArgument, `openRoom: rateLimit.burst must be an integer in 1..=1e9, got ${describe(burst)}`, {
      field: 'rateLimit.burst',
    });
  }
  return { perSecond, burst };
}

/** The error of an operation whose `AbortSignal` aborted (the signal's reason as `cause`). */
function aborted(method: string, signal: AbortSignal): Error {
  return Object.assign(stateError(ErrorCode.Aborted, `${method}: aborted`), { cause: signal.reason as unknown });
}

function checkSender(sender: unknown, method: string): number {
  return sender === undefined ? -1 : checkId(sender, 'sender', method);
}

/** One caller waiting in a list (`waitIn`); whoever frees it calls `resolve`. */
interface Waiter {
  resolve: () => void;
}

/**
 * Waits in `list` until something resolves the waiter, or `signal` aborts: then the waiter
 * leaves the list and the promise rejects with `abortError()` (resolves without one).
 */
function waitIn(list: Waiter[], signal: AbortSignal | undefined, abortError?: () => Error): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const waiter: Waiter = {
      resolve: () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
    };
    const onAbort = (): void => {
      const at = list.indexOf(waiter);
      if (at >= 0) list.splice(at, 1);
      if (abortError === undefined) resolve();
      else reject(abortError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    list.push(waiter);
  });
}

/** A `dispatchAsync` call waiting for capacity. */
interface AsyncCall {
  frame: Uint8Array;
  sender: number;
  resolve: (verdict: Verdict) => void;
}

/** A first-in first-out queue with O(1) `shift` (an array and a head index, compacted as it goes). */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Empties the queue, returning what it held in order. */
  takeAll(): T[] {
    const items = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return items;
  }
}

export class Dispatcher {
  /** Which engine runs this dispatcher. */
  readonly engine: 'native' | 'js';
  readonly #engine: Engine;
  readonly #config: EngineConfig;
  readonly #onDelivery: ((delivery: Delivery) => void) | undefined;
  readonly #onBatch: ((batch: MoveBatchType) => void) | undefined;
  readonly #onError: ((error: unknown) => void) | undefined;
  readonly #onOverload: ((event: OverloadEvent) => void) | undefined;
  readonly #onRecovered: ((event: OverloadEvent) => void) | undefined;
  /** The last batch handed out by `drain()`, per pull room (released by the room's next drain). */
  readonly #lastDrain = new Map<number, RoomBatch>();
  /** The last delivery handed out by `drainAll()` (released by the next `drainAll()`). */
  #lastDrainAll: DeliveryView | undefined;
  /** Rooms closed with moves possibly pending: their `#lastDrain` entry goes once they are forgotten. */
  readonly #closingRooms = new Set<number>();
  /** Push batches (one per room of a push delivery) waiting for a `batches()` consumer. */
  readonly #pending: MoveBatchType[] = [];
  /** Batches a `batches()` loop holds now (released when it asks for the next). */
  readonly #held = new Set<MoveBatchType>();
  readonly #batchWaiters: Waiter[] = [];
  readonly #flushes = new Map<number, () => void>();
  /** `dispatchAsync` calls waiting for capacity, in call order (at most `#maxPendingAsync`). */
  readonly #asyncQueue = new Fifo<AsyncCall>();
  readonly #maxPendingAsync: number;
  /** `whenWritable()` calls waiting for the next event that may have freed capacity. */
  readonly #writableWaiters: Waiter[] = [];
  /** `engine.wantWritable()` was called and no wake-up came since. */
  #armed = false;
  /**
   * Something that may free capacity (an engine wake-up, a drain, a push release) happened
   * since the last `Backpressure` this dispatcher answered: `whenWritable()` resolves at once.
   */
  #freedSincePressure = true;
  /** A microtask will retry `dispatchAsync` calls and wake `whenWritable()` callers. */
  #kickQueued = false;
  #nextToken = 1;
  /**
   * Keeps the process alive while a flush or close is pending: the engine's wake-up is
   * weak (it never holds the process open by itself), but an awaited flush must finish.
   */
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  /** Calls waiting on the engine's wake-up (flush, dispatchAsync, whenWritable): `#keepAlive` runs while any does. */
  #waiting = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #polling = false;
  /** Failed shards and their failure messages (reported once each to onError). */
  readonly #failedShards = new Map<number, string>();
  /**
   * Release hooks of pull deliveries (detach) and push deliveries (detach, and the shard may
   * deliver again). A delivery JavaScript keeps (a pull room's last drain) must not keep the
   * dispatcher alive: the hooks reach it through a WeakRef, and once it is gone they only
   * detach the buffer.
   */
  /** Native ingress, once `listen()` started it. */
  #ingress: IngressState | undefined;
  readonly #releasePull: DeliveryReleaseHook;
  readonly #releasePush: DeliveryReleaseHook;
  readonly #freeShard: DeliveryReleaseHook;

  constructor(options?: DispatcherOptions) {
    const { engine, config, maxPendingAsync } = resolveOptions(options);
    this.engine = engine;
    this.#config = config;
    this.#maxPendingAsync = maxPendingAsync;
    this.#onDelivery = options?.onDelivery;
    this.#onBatch = options?.onBatch;
    this.#onOverload = options?.onOverload;
    this.#onRecovered = options?.onRecovered;
    this.#onError = options?.onError;
    // The engine's wake-up holds this function for the dispatcher's whole life; through a
    // WeakRef it does not keep the dispatcher itself reachable, so an abandoned dispatcher
    // is garbage-collected (and its native threads stopped by the finalizer).
    const self = new WeakRef(this);
    const wake = (): void => {
      const d = self.deref();
      if (d !== undefined) d.#poll();
    };
    this.#engine = engine === 'js' ? new JsEngine(config, wake) : loadNativeEngine(config, wake);
    registerEngine(this, this.#engine);
    // A delivery kept past its dispatcher's life still detaches on release, through the
    // engine's `detach`, which holds nothing of the engine (a native delivery is an external
    // ArrayBuffer, which only the addon can detach). Nothing here may hold the engine: the
    // wake-up above shares this scope, and the addon keeps it alive.
    const detach = this.#engine.detach;
    this.#releasePull = (buffer, shard) => {
      const d = self.deref();
      if (d === undefined) detach(buffer);
      else d.#engine.releaseDelivery(buffer, shard);
    };
    this.#freeShard = (buffer, shard) => {
      const d = self.deref();
      if (d !== undefined) d.#engine.freeShard(buffer, shard);
    };
    this.#releasePush = (buffer, shard) => {
      const d = self.deref();
      if (d === undefined) {
        detach(buffer);
        return;
      }
      d.#engine.releaseDelivery(buffer, shard);
      d.#kick();
    };
  }

  /** Opens a room on its shard. Throws `ERR_MOVE_DISPATCHER_ROOM_EXISTS` if it is open. */
  openRoom(room: number, options: RoomOptions = {}): void {
    checkId(room, 'room', 'openRoom');
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `openRoom: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, ROOM_KEYS, 'openRoom', ErrorCode.InvalidArgument);
    const auth = options.auth ?? 'sha256';
    if (auth !== 'sha256' && auth !== 'hmac-sha256') {
      throw typeError(ErrorCode.InvalidArgument, `openRoom: auth must be 'sha256' or 'hmac-sha256', got ${describe(auth)}`, { field: 'auth' });
    }
    const delivery = options.delivery ?? 'pull';
    if (delivery !== 'pull' && delivery !== 'push') {
      throw typeError(ErrorCode.InvalidArgument, `openRoom: delivery must be 'pull' or 'push', got ${describe(delivery)}`, { field: 'delivery' });
    }
    const rate = checkRateLimit(options.rateLimit);
    this.#status(this.#engine.openRoom(room, auth === 'hmac-sha256' ? AUTH_HMAC : AUTH_SHA256, delivery === 'push', rate), 'openRoom', room);
    this.#closingRooms.delete(room);
  }

  /**
   * Registers `player` in `room` (ordered with the moves around it). In `hmac-sha256` rooms
   * `key` (16–64 bytes) is required; joining again replaces the key and keeps the replay window.
   */
  join(room: number, player: number, options: JoinOptions = {}): void {
    checkId(room, 'room', 'join');
    checkId(player, 'player', 'join');
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `join: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, JOIN_KEYS, 'join', ErrorCode.InvalidArgument);
    let key: Uint8Array | null = null;
    if (options.key !== undefined) {
      // A copy made from the view's internal slots: a subclass cannot lie about its length.
      key = copyOfBytes(checkBytes(options.key, 'key', 'join'));
      if (key.length < MIN_KEY_BYTES || key.length > MAX_KEY_BYTES) {
        throw rangeError(ErrorCode.InvalidArgument, `join: key must be ${MIN_KEY_BYTES}–${MAX_KEY_BYTES} bytes, got ${key.length}`, { field: 'key' });
      }
    }
    this.#status(this.#engine.join(room, player, key), 'join', room, player);
  }

  /**
   * Removes `player` from `room`: from the call on its frames answer `Verdict.NotMember`; its
   * moves accepted before the call are still validated and delivered (its key is zeroised
   * after them). A native-ingress connection of the player stays open (its frames are
   * refused, and `maxRefusals` of them close it): call `disconnect(room, player)` too to
   * close it at once.
   */
  leave(room: number, player: number): void {
    checkId(room, 'room', 'leave');
    checkId(player, 'player', 'leave');
    this.#status(this.#engine.leave(room, player), 'leave', room, player);
  }

  /** Closes `room`: later frames answer `UnknownRoom`; moves accepted before are still delivered. */
  closeRoom(room: number): void {
    checkId(room, 'room', 'closeRoom');
    this.#status(this.#engine.closeRoom(room), 'closeRoom', room);
    this.#closingRooms.add(room);
    this.#forgetIfGone(room);
  }

  /** Drops our reference to a forgotten room's last batch (the batch itself stays valid until released). */
  #forgetIfGone(room: number): void {
    if (!this.#engine.hasRoom(room)) {
      this.#closingRooms.delete(room);
      this.#lastDrain.delete(room);
    }
  }

  /**
   * Checks `frame` synchronously and queues it for validation. Never blocks, never throws
   * for any bytes. `sender`: the player id the connection proved (`WrongSender` otherwise).
   * A player that has not joined the frame's room answers `NotMember` and spends nothing.
   */
  dispatch(frame: Uint8Array, sender?: number): Verdict {
    if (!(frame instanceof Uint8Array)) checkBytes(frame, 'frame', 'dispatch');
    const from = sender === undefined ? -1 : checkSender(sender, 'dispatch');
    let verdict: Verdict;
    try {
      verdict = this.#engine.dispatch(frame, from) as Verdict;
    } catch (error) {
      // The cheap instanceof above let a Proxy or a fake view through: say so as every
      // other check does (a real Uint8Array never throws here).
      checkBytes(frame, 'frame', 'dispatch');
      throw error;
    }
    if (verdict === Verdict.Backpressure) this.#pressured();
    return verdict;
  }

  /**
   * Dispatches back-to-back frames; a trailing partial frame is not consumed. On
   * `backpressure`, keep `chunk.subarray(consumed)` and retry after `whenWritable()`.
   */
  dispatchStream(chunk: Uint8Array, sender?: number): StreamResult {
    checkBytes(chunk, 'chunk', 'dispatchStream');
    const result = this.#engine.dispatchStream(chunk, checkSender(sender, 'dispatchStream'));
    if (result.backpressure) this.#pressured();
    return result;
  }

  /**
   * Like `dispatch`, but waits for capacity instead of answering `Backpressure`: the call is
   * retried when the engine reports freed capacity (no timers), after a `drain()` and after
   * a push batch is released. Calls resolve in call order. A room that is never drained
   * keeps its callers waiting. While a call waits it keeps the process alive, as a flush
   * does (and as a socket write waiting for its peer does).
   *
   * At most `maxPendingAsync` calls wait at once; beyond that the promise resolves
   * `Verdict.Backpressure` at once. That answer comes from the dispatcher before the engine
   * sees the frame: it is not counted in `stats()`.
   *
   * The frame is read when the call is finally dispatched: do not reuse or modify its
   * buffer until the promise settles.
   */
  dispatchAsync(frame: Uint8Array, sender?: number): Promise<Verdict> {
    checkBytes(frame, 'frame', 'dispatchAsync');
    const from = checkSender(sender, 'dispatchAsync');
    const queue = this.#asyncQueue;
    if (queue.size === 0) {
      const verdict = this.#engine.dispatch(frame, from) as Verdict;
      if (verdict !== Verdict.Backpressure) return Promise.resolve(verdict);
    } else if (queue.size >= this.#maxPendingAsync) {
      this.#pressured();
      return Promise.resolve(Verdict.Backpressure);
    }
    const waiting = new Promise<Verdict>((resolve) => {
      queue.push({ frame, sender: from, resolve });
      // The first waiter arms the engine's wake-up and tries again at once: capacity freed
      // between the first attempt and the arming would otherwise go unnoticed.
      if (queue.size === 1) this.#retryAsync();
    });
    return this.#keptAlive(waiting);
  }

  /**
   * A resume signal for producers that met `Backpressure` (a socket paused on
   * `dispatchStream`'s `backpressure`): resolves once capacity may have been freed — after
   * the engine's next capacity-freeing wake-up, a `drain()` or a push batch's release — or
   * at once when one of those already happened since this dispatcher last answered
   * `Backpressure`, or when the dispatcher is closed (a retry then answers `Closed`).
   *
   * Resolution can be spurious: capacity may be back for another room or shard only, or
   * taken again by someone else. Retry, and on `Backpressure` wait again.
   * Rejects with `ERR_MOVE_DISPATCHER_ABORTED` when `signal` aborts (or has aborted).
   */
  whenWritable(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `whenWritable: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, ['signal'], 'whenWritable', ErrorCode.InvalidArgument);
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw typeError(ErrorCode.InvalidArgument, `whenWritable: signal must be an AbortSignal, got ${describe(signal)}`, { field: 'signal' });
    }
    if (signal?.aborted) return Promise.reject(aborted('whenWritable', signal));
    if (this.#closed || this.#freedSincePressure) return Promise.resolve();
    this.#arm();
    return this.#keptAlive(waitIn(this.#writableWaiters, signal, () => aborted('whenWritable', signal!)));
  }

  /**
   * `promise`, with the process kept alive until it settles: the native engine's wake-up
   * (which settles flushes, `dispatchAsync` and `whenWritable`) holds no handle of the event
   * loop, so an awaited call would otherwise let Node exit with it pending.
   */
  #keptAlive<T>(promise: Promise<T>): Promise<T> {
    if (this.#waiting++ === 0) {
      // The dispatcher itself is held too: the engine's wake-up reaches it only through a
      // WeakRef, and a caller awaiting this promise may hold it nowhere else (its async
      // function's frame is reachable only from the promise, which only the dispatcher
      // settles): collected meanwhile, the promise would never settle.
      WAITING.add(this);
      this.#keepAlive ??= setInterval(noop, 1 << 30);
    }
    const done = (): void => {
      if (--this.#waiting === 0) {
        WAITING.delete(this);
        if (this.#keepAlive !== undefined) {
          clearInterval(this.#keepAlive);
          this.#keepAlive = undefined;
        }
      }
    };
    promise.then(done, done);
    return promise;
  }

  /**
   * Pull rooms: every move (and rejection) of `room` since its last drain, in a delivery of its
   * own. It releases (detaches) the room's previous drain batch, whether or not it finds
   * anything: a batch is valid until `release()` or the room's next `drain()`.
   */
  drain(room: number): MoveBatchType {
    checkId(room, 'room', 'drain');
    const raw = this.#engine.drain(room);
    if (typeof raw === 'number') {
      this.#closingRooms.delete(room);
      this.#lastDrain.delete(room);
      this.#status(raw as Status, 'drain', room);
      throw stateError(ErrorCode.UnknownRoom, `drain: unexpected engine status ${raw}`, { room });
    }
    const previous = this.#lastDrain.get(room);
    if (raw === null) {
      // Empty, but a batch like any other: the room's next drain releases it.
      const empty = emptyBatch(room);
      this.#lastDrain.set(room, empty);
      previous?.release();
      if (this.#closingRooms.has(room)) this.#forgetIfGone(room);
      return empty;
    }
    const batch = new DeliveryView(raw, this.#releasePull).single();
    this.#lastDrain.set(room, batch);
    previous?.release();
    if (this.#closingRooms.has(room)) this.#forgetIfGone(room);
    this.#drained();
    return batch;
  }

  /**
   * Pull rooms, all at once: every pull room's moves and rejections since its last drain, in
   * ONE delivery (one `ArrayBuffer`; iterating it allocates nothing per room or per move).
   * Releases (detaches) the previous `drainAll()` delivery, even when this one is empty; an
   * empty delivery (count 0, rooms 0) when nothing is pending. `drain(room)` batches are not
   * affected. Closed rooms' last moves come out here too; then the room is forgotten.
   */
  drainAll(): Delivery {
    const buffer = this.#engine.drainAll();
    const previous = this.#lastDrainAll;
    this.#lastDrainAll = undefined;
    previous?.release();
    for (const room of this.#closingRooms) this.#forgetIfGone(room);
    const delivery = new DeliveryView(buffer, this.#releasePull);
    this.#lastDrainAll = delivery;
    if (buffer !== null) this.#drained();
    return delivery;
  }

  /** A drain handed room budget back. */
  #drained(): void {
    this.#kick();
    // After close() the engine no longer wakes us: deliver the recoveries this drain noticed.
    if (this.#closed && this.#closing === undefined) queueMicrotask(() => this.#poll());
  }

  /** Resolves once every move accepted before the call is delivered (push) or drainable (pull). */
  flush(): Promise<void> {
    // While closing, every accepted move came before close(), whose own flush covers them:
    // wait for the close (a flush queued behind close's could be dropped by the shutdown).
    const closing = this.#closing;
    if (closing !== undefined) return closing.then(noop, noop);
    if (this.#closed) return Promise.resolve();
    return this.#requestFlush();
  }

  #requestFlush(): Promise<void> {
    const token = this.#nextToken++;
    const flushed = new Promise<void>((resolve) => {
      this.#flushes.set(token, () => {
        this.#flushes.delete(token);
        resolve();
      });
      this.#engine.requestFlush(token);
    });
    return this.#keptAlive(flushed);
  }

  /**
   * Push rooms (when no `onDelivery` / `onBatch` is given): an async iterator of batches, one
   * per room of each push delivery. Each batch is released when the loop asks for the next
   * one (or ends); a delivery's memory is detached once all its batches are released, and its
   * shard delivers again only then. Ends when `signal` aborts or the dispatcher is closed.
   */
  async *batches(options: { signal?: AbortSignal } = {}): AsyncGenerator<MoveBatchType, void, undefined> {
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `batches: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, ['signal'], 'batches', ErrorCode.InvalidArgument);
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw typeError(ErrorCode.InvalidArgument, `batches: signal must be an AbortSignal, got ${describe(signal)}`, { field: 'signal' });
    }
    let current: MoveBatchType | undefined;
    const letGo = (): void => {
      if (current === undefined) return;
      this.#held.delete(current);
      current.release();
      current = undefined;
    };
    try {
      for (;;) {
        letGo();
        if (signal?.aborted) return;
        const next = this.#pending.shift();
        if (next !== undefined) {
          current = next;
          this.#held.add(next);
          yield next;
          continue;
        }
        if (this.#closed && this.#closing === undefined) return;
        await waitIn(this.#batchWaiters, signal);
      }
    } finally {
      letGo();
    }
  }

  /**
   * A snapshot: counters, queues and arenas per shard, the fullest rooms, the runtime.
   * `{ reset: true }` starts new high-water intervals after it.
   */
  stats(options: StatsOptions = {}): DispatcherStats {
    return this.#snapshot(options, true);
  }

  #snapshot(options: StatsOptions, withLatency: boolean): DispatcherStats {
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `stats: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, STATS_KEYS, 'stats', ErrorCode.InvalidArgument);
    if (options.reset !== undefined && typeof options.reset !== 'boolean') {
      throw typeError(ErrorCode.InvalidArgument, `stats: reset must be a boolean, got ${describe(options.reset)}`, { field: 'reset' });
    }
    const top = options.topRooms ?? 10;
    if (!Number.isInteger(top) || top < 0 || top > 1_000_000) {
      throw rangeError(ErrorCode.InvalidArgument, `stats: topRooms must be an integer in 0..=1000000, got ${describe(top)}`, { field: 'topRooms' });
    }
    const c = this.#engine.counters();
    const shards = this.#engine.shardStats().map((s, shard) => ({
      shard,
      queueDepth: s.queueDepth,
      queueHighWater: s.queueHighWater,
      arena: { capacity: s.arenaCapacity, used: s.arenaUsed, highWater: s.arenaHighWater, wraps: s.arenaWraps },
    }));
    const rooms = this.#engine.roomStats(top);
    const latency = withLatency ? this.#engine.latencies(options.reset === true) : null;
    const allocator = this.#engine.allocator();
    const i = this.#listening() ? (this.#engine.ingressStats?.() ?? null) : null;
    const ingress =
      i === null
        ? null
        : {
            connections: i.open,
            accepted: i.acceptedConnections,
            refused: i.refusedConnections,
            closed: i.closedConnections,
            bytesIn: i.bytesIn,
            bytesOut: i.bytesOut,
            messagesOut: i.messagesOut,
            dropped: i.droppedOut,
          };
    if (options.reset === true) this.#engine.resetHighWater();
    const cfg = this.#config;
    const verdicts = Object.fromEntries(VERDICT_NAMES.map((name, i) => [name, c.verdicts[i] ?? 0])) as DispatcherStats['verdicts'];
    const reasons = Object.fromEntries(REASON_NAMES.map((name, i) => [name, c.reasons[i] ?? 0])) as DispatcherStats['reasons'];
    return {
      engine: this.engine,
      dispatched: c.dispatched,
      accepted: c.accepted,
      verdicts,
      reasons,
      delivered: c.delivered,
      rejected: c.rejected,
      batches: c.batches,
      backpressure: { queue: c.backpressure[0] ?? 0, arena: c.backpressure[1] ?? 0, room: c.backpressure[2] ?? 0 },
      shards,
      rooms,
      runtime: {
        workerThreads: this.engine === 'js' ? 0 : cfg.workerThreads,
        maxBlockingThreads: cfg.maxBlockingThreads,
        shards: cfg.shards,
        pinnedCores: this.engine === 'js' ? null : cfg.pinCores,
        threadName: cfg.threadName,
      },
      latency,
      allocator,
      ingress,
    };
  }

  /** The counters in the Prometheus text exposition format. */
  metrics(): string {
    // Never resets anything; the histograms come from the engine's never-reset views.
    return renderMetrics(this.#snapshot({ topRooms: 0 }, false), this.#engine.promHistograms());
  }

  /**
   * Native ingress: clients connect to the data plane itself (WebSocket, TCP, gRPC) with a ticket
   * (`issueTicket`) and their frames are validated on the data plane's threads, never on
   * this one; moves arrive through `drain`, `drainAll`, `onBatch` and `onDelivery` as if
   * `dispatch` had been called with the ticket's player as `sender`. Native engine only
   * (`ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE` on the js engine); one `listen` per dispatcher.
   */
  listen<O extends ListenOptions>(options: O & Record<Exclude<keyof O, keyof ListenOptions>, never>): Promise<IngressServer<ListenedTransports<O>>> {
    try {
      // Each transport given is bound (or the call throws): its address is never null.
      return Promise.resolve(this.#listen(options) as IngressServer<ListenedTransports<O>>);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  #listen(options: ListenOptions): Omit<IngressServer, 'address'> & { address(transport: Transport): { host: string; port: number } | null } {
    const resolved = resolveListenOptions(options);
    if (this.#closed) throw stateError(ErrorCode.Closed, 'listen: the dispatcher is closed');
    const engine = this.#engine;
    if (engine.listen === undefined) {
      throw stateError(ErrorCode.NativeUnavailable, 'listen: native ingress needs the native engine (this dispatcher runs the js engine)');
    }
    if (this.#listening()) throw stateError(ErrorCode.InvalidArgument, 'listen: this dispatcher is already listening; close that server first');
    let info;
    try {
      info = engine.listen(resolved);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw stateError(ErrorCode.ListenFailed, `listen: ${message}`);
    } finally {
      resolved.ticketKey.fill(0);
    }
    const state: IngressState = {};
    if (options.onConnection !== undefined) state.onConnection = options.onConnection;
    if (options.onDisconnect !== undefined) state.onDisconnect = options.onDisconnect;
    this.#ingress = state;
    const addresses = {
      ws: info.wsPort === undefined ? null : { host: info.wsHost ?? '127.0.0.1', port: info.wsPort },
      tcp: info.tcpPort === undefined ? null : { host: info.tcpHost ?? '127.0.0.1', port: info.tcpPort },
      grpc: info.grpcPort === undefined ? null : { host: info.grpcHost ?? '127.0.0.1', port: info.grpcPort },
    };
    return {
      address: (transport) => {
        const a = addresses[transport];
        return a === null || a === undefined ? null : { ...a };
      },
      get connections() {
        return state.stopped === undefined ? (engine.ingressStats?.()?.open ?? 0) : 0;
      },
      close: () => this.#stopListening(state),
    };
  }

  /** Whether native ingress runs: `listen()` was called and its server not stopped. */
  #listening(): boolean {
    return this.#ingress !== undefined && this.#ingress.stopped === undefined;
  }

  /**
   * Stops `state`'s ingress (once) and resolves when its connections have closed — each
   * sends its close frame or status, half-closes and lingers (well under a second) — or
   * after `INGRESS_CLOSE_WAIT_MS`, whichever comes first. Their `onDisconnect` events
   * (`shutdown`) arrive meanwhile.
   */
  #stopListening(state: IngressState): Promise<void> {
    if (state.stopped !== undefined) return state.stopped;
    const engine = this.#engine;
    engine.stopListening?.();
    const deadline = performance.now() + INGRESS_CLOSE_WAIT_MS;
    state.stopped = new Promise<void>((resolve) => {
      const check = (): void => {
        if ((engine.ingressClosing?.() ?? 0) === 0 || performance.now() >= deadline) {
          // The close events the connections published: to onDisconnect before resolving.
          this.#poll();
          resolve();
        } else {
          setTimeout(check, 5);
        }
      };
      // Never at once: the poll runs user callbacks, which must not run inside close().
      queueMicrotask(check);
    });
    return state.stopped;
  }

  /**
   * Queues `bytes` for `player`'s connection in `room` (native ingress): `'sent'`;
   * `'backpressure'` when its outbound queue would pass `maxBackpressureBytes` (nothing
   * queued); `'dropped'` when it was already over at the previous send (the connection is
   * closed, reason `backpressure`); `'closed'` when the player has no open connection.
   * WebSocket clients get one binary message; TCP clients the bytes behind their length as
   * a u32 (little-endian); gRPC clients one `MoveAcks` whose `message` holds the bytes.
   * The bytes are copied before the call returns: the caller may reuse its buffer at once.
   */
  send(room: number, player: number, bytes: Uint8Array): SendResult {
    checkId(room, 'room', 'send');
    checkId(player, 'player', 'send');
    checkBytes(bytes, 'bytes', 'send');
    if (!this.#listening()) return 'closed';
    return SEND_RESULTS[this.#engine.send?.(room, player, bytes) ?? 3] ?? 'closed';
  }

  /**
   * Queues `bytes` for every connection of `room` but those of `except` (encoded once per
   * transport); returns how many connections took it (see `send` for those that did not).
   * The bytes are copied before the call returns: the caller may reuse its buffer at once.
   */
  broadcast(room: number, bytes: Uint8Array, options: { except?: number | readonly number[] } = {}): number {
    checkId(room, 'room', 'broadcast');
    checkBytes(bytes, 'bytes', 'broadcast');
    if (typeof options !== 'object' || options === null) {
      throw typeError(ErrorCode.InvalidArgument, `broadcast: options must be an object, got ${describe(options)}`, { field: 'options' });
    }
    rejectUnknownKeys(options, ['except'], 'broadcast', ErrorCode.InvalidArgument);
    const e: unknown = options.except;
    if (e !== undefined && typeof e !== 'number' && !Array.isArray(e)) {
      throw typeError(ErrorCode.InvalidArgument, `broadcast: except must be a player id or an array of them, got ${describe(e)}`, { field: 'except' });
    }
    const except = e === undefined ? undefined : typeof e === 'number' ? [checkId(e, 'except', 'broadcast')] : (e as unknown[]).map((p) => checkId(p, 'except', 'broadcast'));
    if (!this.#listening()) return 0;
    return this.#engine.broadcast?.(room, bytes, except) ?? 0;
  }

  /**
   * Closes `player`'s connection in `room` — or, without `player` (`undefined`), every
   * connection of the room (reason `kicked`); returns how many. What was queued for a
   * connection before the call is written first. A WebSocket is closed with 1000 "kicked",
   * or with `options.code` / `options.reason` (say, 4001 "banned"); a gRPC call ends
   * `ABORTED` with the reason as its message; a TCP stream just ends.
   */
  disconnect(room: number, player?: number, options: DisconnectOptions = {}): number {
    checkId(room, 'room', 'disconnect');
    if (player !== undefined) checkId(player, 'player', 'disconnect');
    const kick = checkDisconnectOptions(options);
    if (!this.#listening()) return 0;
    return this.#engine.disconnect?.(room, player, kick?.code, kick?.reason) ?? 0;
  }

  /**
   * Refuses new frames, closes native ingress as `server.close()` does (its connections
   * closed with reason `shutdown`, waited for up to 2 s), delivers everything accepted,
   * stops the threads. Later calls answer
   * `Verdict.Closed` (dispatch) or throw `ERR_MOVE_DISPATCHER_CLOSED`; pull rooms can still
   * be drained. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#engine.closeInput();
    // Native ingress closes as `server.close()` does: its connections get their close frame
    // or status (`shutdown`) and their onDisconnect events before the runtime stops.
    const ingress = this.#ingress;
    const stopped = ingress === undefined ? undefined : this.#stopListening(ingress);
    for (const w of this.#writableWaiters.splice(0)) w.resolve();
    // Push batches nobody has consumed yet would hold their shards (one push delivery out per
    // shard), and the flush below would wait for them forever: keep copies for a later
    // batches() loop and release the deliveries.
    for (let i = 0; i < this.#pending.length; i++) this.#pending[i] = this.#detach(this.#pending[i]!);
    // A batch a batches() loop holds (close() awaited inside the loop) stays readable, but its
    // shard must deliver what came after it, or the flush below would wait for the loop.
    const free = this.#freeShard;
    for (const b of this.#held) (b as RoomBatch).freeShard(free);
    this.#closing = (async () => {
      // Frames already waiting in dispatchAsync were accepted by the caller's intent but never
      // by the engine: they answer Closed.
      for (const item of this.#asyncQueue.takeAll()) item.resolve(Verdict.Closed);
      await stopped;
      await this.#requestFlush();
      this.#engine.shutdown();
      this.#poll();
      // Nothing is delivered after the shutdown: a flush still waiting (none should) is over.
      for (const done of [...this.#flushes.values()]) done();
    })().finally(() => {
      this.#closing = undefined;
      for (const w of this.#batchWaiters.splice(0)) w.resolve();
    });
    return this.#closing;
  }

  #status(status: Status, method: string, room: number, player?: number): void {
    if (status === Status.Ok) return;
    const fields = { room, ...(player === undefined ? {} : { player }) };
    const fail = (code: ErrorCodeType, message: string, field: string): never => {
      throw rangeError(code, `${method}: ${message}`, { ...fields, field });
    };
    switch (status) {
      case Status.UnknownRoom:
        fail(ErrorCode.UnknownRoom, `room ${room} is not open`, 'room');
        break;
      case Status.RoomExists:
        fail(ErrorCode.RoomExists, `room ${room} is already open`, 'room');
        break;
      case Status.UnknownPlayer:
        fail(ErrorCode.UnknownPlayer, `player ${player} has not joined room ${room}`, 'player');
        break;
      case Status.WrongDelivery:
        if (method === 'openRoom') {
          throw typeError(
            ErrorCode.WrongDelivery,
            `openRoom: room ${room} is still delivering moves accepted before closeRoom by its previous delivery mode; reopen it with the same delivery, or after flush() and its last drain`,
            { ...fields, field: 'delivery' },
          );
        }
        if (method === 'join') {
          throw typeError(ErrorCode.InvalidArgument, `join: room ${room} does not take this key: a key is required in hmac-sha256 rooms and refused in sha256 rooms`, {
            ...fields,
            field: 'key',
          });
        }
        throw typeError(ErrorCode.WrongDelivery, `${method}: room ${room} is a push room; its moves arrive through onDelivery / onBatch / batches()`, { ...fields, field: 'room' });
      case Status.OutOfMemory:
        throw stateError(ErrorCode.OutOfMemory, `${method}: room ${room} could not be opened: its ${this.#config.roomBytes} bytes (roomBytes) could not be allocated`, {
          ...fields,
          field: 'roomBytes',
        });
      case Status.Closed: {
        if (this.#closed) throw stateError(ErrorCode.Closed, `${method}: the dispatcher is closed`, fields);
        // Not closed: the room's shard has failed (its failure may not have been polled yet).
        const shard = room % this.#config.shards;
        const why = this.#failedShards.get(shard);
        throw stateError(ErrorCode.Closed, `${method}: room ${room} is on shard ${shard}, which has failed${why === undefined ? '' : ` (${why})`}; its rooms are closed`, {
          ...fields,
          shard,
        });
      }
      default:
        throw stateError(ErrorCode.Closed, `${method}: unexpected engine status ${String(status)}`, fields);
    }
  }

  /** Takes deliveries from the engine: push deliveries go to onDelivery, onBatch or the batches() queue. */
  #poll(): void {
    if (this.#polling) return;
    this.#polling = true;
    // Any wake-up consumes an armed wantWritable (or comes for another reason: re-arming is
    // harmless).
    this.#armed = false;
    try {
      for (let deliveries = this.#engine.poll(); deliveries.length > 0; deliveries = this.#engine.poll()) {
        for (const d of deliveries) {
          if (d.type === 'delivery') this.#deliver(d.buffer);
          else if (d.type === 'flushed') this.#flushes.get(d.token)?.();
          else if (d.type === 'overload') this.#notify(d.event);
          else if (d.type === 'connection') this.#connection(d.flags, d.room, d.player, d.id, d.peer);
          else this.#shardFailed(d.shard, d.message);
        }
      }
    } finally {
      this.#polling = false;
    }
    this.#freedSincePressure = true;
    this.#writable();
  }

  /** A shard's worker failed: remember it (control calls name it) and tell onError, once per shard. */
  #shardFailed(shard: number, message: string): void {
    if (this.#failedShards.has(shard)) return;
    this.#failedShards.set(shard, message);
    const error = stateError(
      ErrorCode.ShardFailed,
      `move-dispatcher: shard ${shard} failed: ${message}. Its rooms are closed: their frames answer Closed, control calls on them throw ${ErrorCode.Closed}; its moves not yet validated are rejected ShardFailed; other shards go on.`,
      { shard },
    );
    try {
      if (this.#onError !== undefined) {
        const result: unknown = this.#onError(error);
        if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
          Promise.resolve(result).then(undefined, () => undefined);
        }
      } else {
        process.emitWarning(error.message, { code: ErrorCode.ShardFailed });
      }
    } catch {
      // The error reporter itself threw: nothing sensible is left to do with it.
    }
  }

  /** A native ingress connection opened or closed: tell `onConnection` / `onDisconnect`. */
  #connection(flags: number, room: number, player: number, id: number, peer: readonly number[]): void {
    const { opened, info } = connectionEvent(flags, room, player, id, peer);
    const ingress = this.#ingress;
    if (ingress === undefined) return;
    if (opened) {
      const fn = ingress.onConnection;
      const { reason: _, ...open } = info;
      if (fn !== undefined) this.#guard(() => fn(open), 'onConnection');
    } else {
      const fn = ingress.onDisconnect;
      if (fn !== undefined) this.#guard(() => fn(info), 'onDisconnect');
    }
  }

  #notify(event: OverloadEvent): void {
    const fn = event.recovered ? this.#onRecovered : this.#onOverload;
    if (fn !== undefined) this.#guard(() => fn(event), event.recovered ? 'onRecovered' : 'onOverload');
  }

  /**
   * Runs a user callback; a throw, or the rejection of a promise it returns (an async
   * callback), goes to `onError` (default: a process warning naming the callback) and never
   * reaches the engine.
   */
  #guard(callback: () => unknown, name: CallbackName): void {
    try {
      const result = callback();
      // An async callback rejects instead of throwing: report that too (an unhandled
      // rejection would end the process).
      if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
        Promise.resolve(result).then(undefined, (error: unknown) => this.#report(error, name));
      }
    } catch (error) {
      this.#report(error, name);
    }
  }

  /** Hands an error of a user callback to `onError` (default: a process warning naming the callback). */
  #report(error: unknown, name: CallbackName): void {
    try {
      if (this.#onError !== undefined) {
        const result: unknown = this.#onError(error);
        if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
          Promise.resolve(result).then(undefined, () => undefined);
        }
      } else {
        let text: string;
        try {
          text = error instanceof Error ? (error.stack ?? error.message) : String(error);
        } catch {
          text = 'a value that cannot be converted to a string';
        }
        process.emitWarning(`move-dispatcher: ${name} threw: ${text}`);
      }
    } catch {
      // The error reporter itself threw: nothing sensible is left to do with it.
    }
  }

  /**
   * A push delivery: to `onDelivery` (released when it returns), or split into one batch per
   * room for `onBatch` (each released when it returns) or the `batches()` queue.
   */
  #deliver(buffer: ArrayBuffer): void {
    const delivery = new DeliveryView(buffer, this.#releasePush);
    const onDelivery = this.#onDelivery;
    if (onDelivery !== undefined) {
      this.#guard(() => onDelivery(delivery), 'onDelivery');
      delivery.release();
      return;
    }
    const batches = delivery.split();
    const onBatch = this.#onBatch;
    if (onBatch !== undefined) {
      for (const batch of batches) {
        this.#guard(() => onBatch(batch), 'onBatch');
        batch.release();
      }
      return;
    }
    for (const batch of batches) {
      this.#pending.push(this.#closed ? this.#detach(batch) : batch);
      this.#batchWaiters.shift()?.resolve();
    }
  }

  /** A copy of `batch` that owns its memory; the original is released. */
  #detach(batch: MoveBatchType): MoveBatchType {
    const copy = batch.copy();
    batch.release();
    return copy;
  }

  /** Asks the engine for a wake-up once it frees capacity (once per wake-up). */
  #arm(): void {
    if (this.#armed) return;
    this.#armed = true;
    this.#engine.wantWritable();
  }

  /** This dispatcher answered `Backpressure`: `whenWritable()` now waits for the next freeing event. */
  #pressured(): void {
    this.#freedSincePressure = false;
    this.#arm();
  }

  /**
   * Something on the JavaScript side may have freed capacity (a drain, a push release):
   * retry the waiting `dispatchAsync` calls and wake `whenWritable()` callers, from a
   * microtask (never inside the caller's call).
   */
  #kick(): void {
    this.#freedSincePressure = true;
    if (this.#kickQueued || (this.#asyncQueue.size === 0 && this.#writableWaiters.length === 0)) return;
    this.#kickQueued = true;
    queueMicrotask(() => {
      this.#kickQueued = false;
      this.#writable();
    });
  }

  /** Capacity may have been freed: retry the waiting `dispatchAsync` calls, then wake `whenWritable()` callers. */
  #writable(): void {
    this.#retryAsync();
    if (this.#writableWaiters.length > 0) for (const w of this.#writableWaiters.splice(0)) w.resolve();
  }

  /** Dispatches the waiting `dispatchAsync` calls in order until one meets `Backpressure`. */
  #retryAsync(): void {
    const queue = this.#asyncQueue;
    if (queue.size === 0) return;
    // Armed before the attempt: capacity freed after it fails is always noticed.
    this.#arm();
    for (let head = queue.peek(); head !== undefined; head = queue.peek()) {
      const verdict = this.#engine.dispatch(head.frame, head.sender) as Verdict;
      if (verdict === Verdict.Backpressure) return;
      queue.shift();
      head.resolve(verdict);
    }
  }
}

/** What a dispatcher keeps of its `listen()`. */
interface IngressState {
  onConnection?: (info: ConnectionInfo) => void;
  onDisconnect?: (info: DisconnectInfo) => void;
  /** Set when stopped: resolves when its connections have closed (or the wait ran out). */
  stopped?: Promise<void>;
}

/** How long closing an ingress waits for its connections to finish closing. */
const INGRESS_CLOSE_WAIT_MS = 2_000;

/** The user callbacks whose errors go to `onError`. */
type CallbackName = 'onDelivery' | 'onBatch' | 'onOverload' | 'onRecovered' | 'onConnection' | 'onDisconnect';

export type { ErrorCodeType };
