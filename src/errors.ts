/**
 * Typed errors. Every error this library throws carries a stable `code`
 * from the closed set below, and where it concerns an argument, the `field`.
 */

/** The closed set of error codes. */
export const ErrorCode = {
  /** An argument has the wrong type (not bytes, not a function, not an integer...). */
  InvalidArgument: 'ERR_MOVE_DISPATCHER_INVALID_ARGUMENT',
  /** A constructor option has the wrong type or is out of range. */
  InvalidOption: 'ERR_MOVE_DISPATCHER_INVALID_OPTION',
  /** The room is not open (or was closed and fully drained). */
  UnknownRoom: 'ERR_MOVE_DISPATCHER_UNKNOWN_ROOM',
  /** `openRoom` on a room that is already open. */
  RoomExists: 'ERR_MOVE_DISPATCHER_ROOM_EXISTS',
  /** `leave` of a player that has not joined the room. */
  UnknownPlayer: 'ERR_MOVE_DISPATCHER_UNKNOWN_PLAYER',
  /** `drain` on a push room, or the room's delivery mode forbids the call. */
  WrongDelivery: 'ERR_MOVE_DISPATCHER_WRONG_DELIVERY',
  /** The dispatcher is closed. */
  Closed: 'ERR_MOVE_DISPATCHER_CLOSED',
  /** The batch was released (or invalidated by the room's next drain). */
  BatchReleased: 'ERR_MOVE_DISPATCHER_BATCH_RELEASED',
  /** The native addon could not be loaded. */
  NativeUnavailable: 'ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE',
  /** `listen` could not bind a listener (address in use, permission, bad host). */
  ListenFailed: 'ERR_MOVE_DISPATCHER_LISTEN_FAILED',
  /** The operation was aborted through its `AbortSignal`. */
  Aborted: 'ERR_MOVE_DISPATCHER_ABORTED',
  /**
   * A shard's worker failed (a panic in the native engine, an exception in the js engine):
   * reported once per shard to `onError`, with the `shard`. Its rooms are closed from then on.
   */
  ShardFailed: 'ERR_MOVE_DISPATCHER_SHARD_FAILED',
  /**
   * Memory the options ask for could not be allocated: `new Dispatcher` (each shard's
   * `arenaBytes`, twice) or `openRoom` (a pull room holds `roomBytes`). Nothing was created.
   */
  OutOfMemory: 'ERR_MOVE_DISPATCHER_OUT_OF_MEMORY',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Extra structured fields attached to errors. */
export interface ErrorFields {
  /** The argument or option at fault. */
  field?: string;
  room?: number;
  player?: number;
  /** The shard concerned (a failed shard). */
  shard?: number;
}

function decorate<E extends Error>(err: E, code: ErrorCode, fields: ErrorFields): E & { code: ErrorCode } & ErrorFields {
  const out = Object.assign(err, { code }, fields);
  return out;
}

/** `TypeError` with a `code` (and `field`). */
export function typeError(code: ErrorCode, message: string, fields: ErrorFields = {}): TypeError & { code: ErrorCode } & ErrorFields {
  return decorate(new TypeError(message), code, fields);
}

/** `RangeError` with a `code` (and `field`). */
export function rangeError(code: ErrorCode, message: string, fields: ErrorFields = {}): RangeError & { code: ErrorCode } & ErrorFields {
  return decorate(new RangeError(message), code, fields);
}

/** Plain `Error` with a `code`, for state errors (closed, released). */
export function stateError(code: ErrorCode, message: string, fields: ErrorFields = {}): Error & { code: ErrorCode } & ErrorFields {
  return decorate(new Error(message), code, fields);
}
