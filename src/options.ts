/**
 * Option validation and defaults. Every problem throws a `TypeError` or
 * `RangeError` with `code: 'ERR_MOVE_DISPATCHER_INVALID_OPTION'` and `field`.
 */
import { availableParallelism, cpus } from 'node:os';
import { FRAME_OVERHEAD, MAX_WIRE_PAYLOAD } from './constants';
import type { EngineConfig } from './engine';
import { ErrorCode, rangeError, typeError } from './errors';
import type { DispatcherOptions } from './types';

/** Documented defaults (see README "Options"). */
export const DEFAULTS = {
  channelCapacity: 65_536,
  arenaBytes: 8 << 20,
  roomBytes: 256 << 10,
  maxPayload: 1024,
  maxBatchMoves: 4096,
  maxBlockingThreads: 4,
  threadName: 'move-disp',
} as const;

/** Bytes of a move record's header in the ingress arena. */
export const RECORD_HEADER_BYTES = 24;

function integer(options: DispatcherOptions, field: keyof DispatcherOptions, min: number, max: number, fallback: number): number {
  const value: unknown = options[field];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw typeError(ErrorCode.InvalidOption, `options.${field} must be an integer, got ${describe(value)}`, { field });
  }
  if (value < min || value > max) {
    throw rangeError(ErrorCode.InvalidOption, `options.${field} must be in ${min}..=${max}, got ${value}`, { field });
  }
  return value;
}

/** A short, safe description of a value for error messages (never prints buffer contents). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}

/** The machine's usable cores. */
export function cores(): number {
  return Math.max(1, availableParallelism());
}

/** Levenshtein distance, for suggesting the option a misspelt key meant. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * Throws a `TypeError` (`field`: the key) for the first own key of `value` that is not one of
 * `known` and holds something: a misspelt option would otherwise be dropped without a word
 * (`onDeliver` for `onDelivery`: a dispatcher that never delivers). A key set to `undefined`
 * counts as left out. The message suggests the closest known key.
 */
/**
 * A copy of a view's bytes made from its internal slots (`new Uint8Array(view)`), so a
 * subclass cannot lie about its length; a view over a detached buffer copies as empty.
 */
export function copyOfBytes(view: Uint8Array): Uint8Array {
  try {
    return new Uint8Array(view);
  } catch {
    return new Uint8Array(0);
  }
}

export function rejectUnknownKeys(value: object, known: readonly string[], where: string, code: ErrorCode, prefix = '', hidden: readonly string[] = []): void {
  for (const key of Object.keys(value)) {
    // `hidden`: accepted (internal test hooks) but never listed or suggested.
    if (known.includes(key) || hidden.includes(key) || (value as Record<string, unknown>)[key] === undefined) continue;
    let best: string | undefined;
    let bestDistance = Number.POSITIVE_INFINITY;
    for (const k of known) {
      const d = k.toLowerCase() === key.toLowerCase() ? 0 : distance(key, k);
      if (d < bestDistance) {
        best = k;
        bestDistance = d;
      }
    }
    const hint = best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean ${prefix}${best}?)` : '';
    throw typeError(code, `${where}: unknown option ${describe(prefix + key)}${hint}; known: ${known.join(', ')}`, { field: `${prefix}${key}` });
  }
}

/**
 * Every key of `T`, listed for {@link rejectUnknownKeys}: `allKeys<T>()([...])` is a type error
 * when the list misses a key of `T` or names one `T` lacks, so an option added to a type
 * cannot be refused at run time by a list left behind.
 */
export const allKeys =
  <T>() =>
  <const K extends readonly (keyof T & string)[]>(keys: K & ([Exclude<keyof T, K[number]>] extends [never] ? unknown : never)): readonly string[] =>
    keys;

/** The constructor's option keys (`DispatcherOptions`). */
const DISPATCHER_KEYS = allKeys<DispatcherOptions>()([
  'engine',
  'workerThreads',
  'shards',
  'channelCapacity',
  'maxPendingAsync',
  'arenaBytes',
  'roomBytes',
  'maxPayload',
  'maxBatchMoves',
  'pinCores',
  'maxBlockingThreads',
  'threadName',
  'onDelivery',
  'onBatch',
  'onError',
  'overload',
  'onOverload',
  'onRecovered',
]);
const OVERLOAD_KEYS = allKeys<NonNullable<DispatcherOptions['overload']>>()(['queueDepth', 'roomBytes']);

/** Validates the constructor options and fills in defaults. */
export function resolveOptions(input: unknown): { engine: 'native' | 'js'; config: EngineConfig; maxPendingAsync: number } {
  if (input === undefined) input = {};
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw typeError(ErrorCode.InvalidOption, `options must be an object, got ${describe(input)}`, { field: 'options' });
  }
  rejectUnknownKeys(input, DISPATCHER_KEYS, 'new Dispatcher', ErrorCode.InvalidOption);
  const options = input as DispatcherOptions;
  const engine = options.engine ?? 'native';
  if (engine !== 'native' && engine !== 'js') {
    throw typeError(ErrorCode.InvalidOption, `options.engine must be 'native' or 'js', got ${describe(engine)}`, { field: 'engine' });
  }
  for (const fn of ['onDelivery', 'onBatch', 'onError'] as const) {
    if (options[fn] !== undefined && typeof options[fn] !== 'function') {
      throw typeError(ErrorCode.InvalidOption, `options.${fn} must be a function, got ${describe(options[fn])}`, { field: fn });
    }
  }
  // One consumer of push deliveries: a second callback would silently receive nothing.
  if (options.onDelivery !== undefined && options.onBatch !== undefined) {
    throw typeError(ErrorCode.InvalidOption, 'options.onDelivery and options.onBatch are both given: push deliveries go to one of them; pass onDelivery (many rooms per call) or onBatch (one room per call)', {
      field: 'onDelivery',
    });
  }
  const n = cores();
  // One core stays with the JavaScript thread: on 2 cores, one shard and one worker.
  const shards = integer(options, 'shards', 1, 256, Math.max(1, Math.min(n - 1, 64)));
  const workerThreads = integer(options, 'workerThreads', 1, 64, Math.max(1, Math.min(shards, n)));
  const channelCapacity = integer(options, 'channelCapacity', 1, 1 << 24, DEFAULTS.channelCapacity);
  // dispatchAsync calls that may wait for capacity at once (default: one per queue slot).
  const maxPendingAsync = integer(options, 'maxPendingAsync', 1, 1 << 24, channelCapacity);
  const maxPayload = integer(options, 'maxPayload', 0, MAX_WIRE_PAYLOAD, DEFAULTS.maxPayload);
  const maxFrame = FRAME_OVERHEAD + maxPayload;
  // Two of the largest records (align8(header + frame)) plus slack, as the Rust core checks.
  const minArena = Math.max(64 << 10, 2 * (((RECORD_HEADER_BYTES + maxFrame + 7) & ~7) + 8));
  const arenaBytes = integer(options, 'arenaBytes', minArena, 1 << 30, Math.max(DEFAULTS.arenaBytes, minArena));
  const minRoom = Math.max(4 << 10, maxFrame);
  const roomBytes = integer(options, 'roomBytes', minRoom, 64 << 20, Math.max(DEFAULTS.roomBytes, minRoom));
  const maxBatchMoves = integer(options, 'maxBatchMoves', 1, 1 << 20, DEFAULTS.maxBatchMoves);
  const maxBlockingThreads = integer(options, 'maxBlockingThreads', 1, 512, DEFAULTS.maxBlockingThreads);
  for (const fn of ['onOverload', 'onRecovered'] as const) {
    if (options[fn] !== undefined && typeof options[fn] !== 'function') {
      throw typeError(ErrorCode.InvalidOption, `options.${fn} must be a function, got ${describe(options[fn])}`, { field: fn });
    }
  }
  const overload: unknown = options.overload ?? {};
  if (typeof overload !== 'object' || overload === null) {
    throw typeError(ErrorCode.InvalidOption, `options.overload must be an object { queueDepth, roomBytes }, got ${describe(overload)}`, { field: 'overload' });
  }
  rejectUnknownKeys(overload, OVERLOAD_KEYS, 'new Dispatcher', ErrorCode.InvalidOption, 'overload.');
  const marks = overload as Record<string, unknown>;
  const mark = (key: 'queueDepth' | 'roomBytes', max: number, fallback: number): number => {
    const value = marks[key];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
      throw rangeError(ErrorCode.InvalidOption, `options.overload.${key} must be an integer in 0..=${max}, got ${describe(value)}`, { field: `overload.${key}` });
    }
    return value;
  };
  const queueDepth = mark('queueDepth', channelCapacity, Math.ceil(0.75 * channelCapacity));
  const roomMark = mark('roomBytes', roomBytes, Math.floor(0.75 * roomBytes));
  const observed = options.onOverload !== undefined || options.onRecovered !== undefined;
  const threadName = options.threadName ?? DEFAULTS.threadName;
  if (typeof threadName !== 'string' || threadName.length === 0 || threadName.length > 64 || threadName.includes('\0')) {
    throw typeError(ErrorCode.InvalidOption, `options.threadName must be a non-empty string of at most 64 characters without NUL, got ${describe(threadName)}`, {
      field: 'threadName',
    });
  }
  return {
    engine,
    maxPendingAsync,
    config: {
      workerThreads,
      shards,
      channelCapacity,
      arenaBytes,
      roomBytes,
      maxPayload,
      maxBatchMoves,
      pinCores: resolvePinCores(options.pinCores, workerThreads, n),
      maxBlockingThreads,
      threadName,
      // Tracked only when someone listens: without `onOverload` / `onRecovered` nothing can
      // observe the marks, and a room's wait histogram costs the JavaScript thread a cache
      // miss per room of every delivery (the marks are still checked above).
      overloadQueueDepth: observed ? queueDepth : 0,
      overloadRoomBytes: observed ? roomMark : 0,
    },
  };
}

function resolvePinCores(value: unknown, workers: number, n: number): number[] | null {
  if (value === undefined || value === false) return null;
  if (value === true) {
    return Array.from({ length: workers }, (_, i) => i % n);
  }
  if (!Array.isArray(value) || value.length === 0) {
    throw typeError(ErrorCode.InvalidOption, `options.pinCores must be a boolean or a non-empty array of core ids, got ${describe(value)}`, {
      field: 'pinCores',
    });
  }
  // A core the machine does not have would be silently left unpinned by the OS: refuse it.
  const online = Math.max(1, cpus().length);
  // Array.from visits holes (as undefined, refused below), which map() would skip.
  return Array.from(value as unknown[], (core: unknown) => {
    if (typeof core !== 'number' || !Number.isInteger(core) || core < 0 || core >= online) {
      throw rangeError(ErrorCode.InvalidOption, `options.pinCores entries must be core ids in 0..${online - 1} (this machine has ${online} CPUs), got ${describe(core)}`, {
        field: 'pinCores',
      });
    }
    return core;
  });
}
