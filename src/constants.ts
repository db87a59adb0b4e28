/**
 * Wire format v1 constants and the verdict / reason vocabularies.
 * Shared by both engines and by `encodeMove`; no Node.js imports (browser-safe).
 */

/** Bytes of the fixed header before the payload. */
export const HEADER_BYTES = 24;
/** Bytes of the SHA-256 / HMAC-SHA256 tag after the payload. */
export const TAG_BYTES = 32;
/** A frame is exactly `FRAME_OVERHEAD + len` bytes. */
export const FRAME_OVERHEAD = HEADER_BYTES + TAG_BYTES;
/** First magic byte ("M"). */
export const MAGIC_0 = 0x4d;
/** Second magic byte ("V"). */
export const MAGIC_1 = 0x56;
/** The only wire version this library speaks. */
export const WIRE_VERSION = 1;
/** Flags bit 0: the tag is HMAC-SHA256 with the player's key. */
export const FLAG_HMAC = 0x01;
/** Largest payload the wire format can carry (u16). */
export const MAX_WIRE_PAYLOAD = 0xffff;
/** Width of the anti-replay sliding window, in sequence numbers. */
export const REPLAY_WINDOW = 128;
/** Smallest and largest HMAC key, in bytes. */
export const MIN_KEY_BYTES = 16;
export const MAX_KEY_BYTES = 64;

/**
 * Synchronous answer of `dispatch()`. Exactly one per call.
 * Only `Accepted` moves go on to asynchronous validation; every other verdict
 * means the frame was refused and nothing was kept.
 */
export const Verdict = {
  /** Queued for validation; it will reach JavaScript exactly once (batch or rejection). */
  Accepted: 0,
  /** A queue, the shard arena or the room inbox is full: retry later (nothing was kept). */
  Backpressure: 1,
  /** The dispatcher is closed. */
  Closed: 2,
  /** Not a v1 frame: bad magic, version, flags, length field, or seq 0. */
  Malformed: 3,
  /** The payload is longer than `maxPayload`. */
  Oversize: 4,
  /** The frame names a room that is not open. */
  UnknownRoom: 5,
  /** The frame's tag kind (flags bit 0) disagrees with the room's auth mode. */
  AuthMismatch: 6,
  /** `sender` was given and differs from the frame's player. */
  WrongSender: 7,
  /** The sender spent its rate limit in this room (`openRoom(room, { rateLimit })`); nothing was kept. */
  RateLimited: 8,
  /**
   * The frame's player (the sender, when one is given) has not joined the room, or has left
   * it. Decided synchronously: nothing was kept, no budget, queue slot or rate-limit token spent.
   */
  NotMember: 9,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Names of verdicts, indexed by value. */
export const VERDICT_NAMES = [
  'Accepted',
  'Backpressure',
  'Closed',
  'Malformed',
  'Oversize',
  'UnknownRoom',
  'AuthMismatch',
  'WrongSender',
  'RateLimited',
  'NotMember',
] as const satisfies readonly (keyof typeof Verdict)[];

/** Why an accepted move was rejected by validation (reported in `MoveBatch.rejections`). */
export const Reason = {
  /** The SHA-256 / HMAC-SHA256 tag does not match the frame. */
  BadTag: 0,
  /**
   * The player had not joined the room (or had left it). No longer occurs: membership is a
   * synchronous check (`Verdict.NotMember`); kept so that existing code still compiles.
   */
  UnknownPlayer: 1,
  /** The seq was already accepted, or is older than the replay window. */
  Replay: 2,
  /**
   * The move was accepted, but its shard failed before validating it (reported once per
   * shard to `onError` as `ERR_MOVE_DISPATCHER_SHARD_FAILED`).
   */
  ShardFailed: 3,
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** Names of reasons, indexed by value. */
export const REASON_NAMES = ['BadTag', 'UnknownPlayer', 'Replay', 'ShardFailed'] as const satisfies readonly (keyof typeof Reason)[];

/** Auth modes as passed to the engines. */
export const AUTH_SHA256 = 0;
export const AUTH_HMAC = 1;
