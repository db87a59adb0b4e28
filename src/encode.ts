/**
 * Wire format v1 encoder (README "Wire format v1") and a minimal header reader.
 *
 * Browser-safe: imports nothing from Node.js, so a game client can build frames with the
 * same code the server's tests use. Every frame is `56 + payload.length` bytes,
 * little-endian, tagged with SHA-256 (no key) or HMAC-SHA256 (with the player's key).
 */
import { FLAG_HMAC, FRAME_OVERHEAD, HEADER_BYTES, MAGIC_0, MAGIC_1, MAX_KEY_BYTES, MAX_WIRE_PAYLOAD, MIN_KEY_BYTES, TAG_BYTES, WIRE_VERSION } from './constants.js';
import { ErrorCode, rangeError, typeError } from './errors.js';
import { hmacSha256, sha256 } from './sha256.js';
import type { AuthMode, EncodeMoveInput } from './types.js';

const U32_MAX = 0xffff_ffff;
const U16_MAX = 0xffff;

/** The fixed-size fields of a frame header, as read by {@link parseHeader}. */
export interface FrameHeader {
  room: number;
  player: number;
  seq: number;
  tick: number;
  kind: number;
  /** Payload length field. */
  len: number;
  /** Flags byte (bit 0: HMAC-SHA256 tag). */
  flags: number;
}

/** An `EncodeMoveInput` whose every field was checked, with defaults filled in. */
interface CheckedMove {
  room: number;
  player: number;
  seq: number;
  tick: number;
  kind: number;
  payload: Uint8Array;
  key: Uint8Array | undefined;
}

const EMPTY = new Uint8Array(0);

/**
 * Byte length of a frame carrying `payloadLength` bytes of payload (`56 + payloadLength`).
 * @throws RangeError (`ERR_MOVE_DISPATCHER_INVALID_ARGUMENT`, field `payloadLength`) unless it is an integer in 0..=65535.
 */
export function frameLength(payloadLength: number): number {
  if (!Number.isInteger(payloadLength) || payloadLength < 0 || payloadLength > MAX_WIRE_PAYLOAD) {
    throw rangeError(ErrorCode.InvalidArgument, `frameLength: payloadLength must be an integer in 0..=${MAX_WIRE_PAYLOAD}`, { field: 'payloadLength' });
  }
  return FRAME_OVERHEAD + payloadLength;
}

/**
 * Builds one v1 frame: header, payload, and the SHA-256 tag (or HMAC-SHA256 when `key` is given).
 * @throws TypeError / RangeError (`ERR_MOVE_DISPATCHER_INVALID_ARGUMENT`, with `field`) for a field
 * of the wrong type or out of range: room, player, tick u32; seq 1..=u32; kind u16;
 * payload ≤ 65535 bytes; key 16–64 bytes.
 * @example encodeMove({ room: 1, player: 7, seq: 1, payload: new Uint8Array([1, 2]) })
 */
export function encodeMove(input: EncodeMoveInput): Uint8Array {
  const move = check(input, 'encodeMove');
  const out = new Uint8Array(FRAME_OVERHEAD + move.payload.length);
  write(move, out, 0, true);
  return out;
}

/**
 * Builds one v1 frame whose 32 tag bytes are left zero, for a tag computed elsewhere — with
 * WebCrypto in a browser, say (`crypto.subtle.sign('HMAC', key, frameBody(frame))`, then
 * {@link setTag}). `key` is not used to sign: it only selects the flag, like `auth`.
 * @param auth the tag the frame will carry (flags bit 0): `'hmac-sha256'` or `'sha256'`;
 * by default `'hmac-sha256'` when `input.key` is given, else `'sha256'`.
 * @throws like {@link encodeMove}, and TypeError (field `auth`) for another `auth`.
 * @example
 * const frame = encodeMoveUnsigned({ room: 1, player: 7, seq: 1, payload }, 'hmac-sha256');
 * setTag(frame, await crypto.subtle.sign('HMAC', cryptoKey, frameBody(frame)));
 */
export function encodeMoveUnsigned(input: EncodeMoveInput, auth?: AuthMode): Uint8Array {
  const move = check(input, 'encodeMoveUnsigned');
  if (auth !== undefined && auth !== 'sha256' && auth !== 'hmac-sha256') {
    throw typeError(ErrorCode.InvalidArgument, "encodeMoveUnsigned: auth must be 'sha256' or 'hmac-sha256'", { field: 'auth' });
  }
  const out = new Uint8Array(FRAME_OVERHEAD + move.payload.length);
  write(move, out, 0, false);
  out[3] = auth === 'hmac-sha256' || (auth === undefined && move.key !== undefined) ? FLAG_HMAC : 0;
  return out;
}

/**
 * The bytes a frame's tag covers — header and payload — of the frame at `frame[offset..]`,
 * as a view (no copy): what to hash (`sha256`) or sign (`hmac-sha256`) for {@link setTag}.
 * @throws TypeError / RangeError (`ERR_MOVE_DISPATCHER_INVALID_ARGUMENT`, field `frame` /
 * `offset`) unless a whole v1 frame is there: magic and version, then header, the payload
 * its length field says, and the tag's 32 bytes.
 */
export function frameBody(frame: Uint8Array, offset = 0): Uint8Array {
  const len = wholeFrame(frame, offset, 'frameBody');
  return frame.subarray(offset, offset + HEADER_BYTES + len);
}

/**
 * Writes `tag` (32 bytes: a SHA-256 digest or HMAC-SHA256 of {@link frameBody}) into the
 * tag field of the frame at `frame[offset..]`. Accepts the `ArrayBuffer` that
 * `crypto.subtle.sign` / `digest` resolve to as is.
 * @throws like {@link frameBody}, and TypeError / RangeError (field `tag`) unless `tag` is
 * a `Uint8Array` or `ArrayBuffer` of exactly 32 bytes.
 */
export function setTag(frame: Uint8Array, tag: Uint8Array | ArrayBuffer, offset = 0): void {
  const len = wholeFrame(frame, offset, 'setTag');
  const bytes = tag instanceof Uint8Array ? tag : tag instanceof ArrayBuffer ? new Uint8Array(tag) : null;
  if (bytes === null) throw typeError(ErrorCode.InvalidArgument, 'setTag: tag must be a Uint8Array or an ArrayBuffer', { field: 'tag' });
  if (bytes.length !== TAG_BYTES) {
    throw rangeError(ErrorCode.InvalidArgument, `setTag: tag must be ${TAG_BYTES} bytes, got ${bytes.length}`, { field: 'tag' });
  }
  frame.set(bytes, offset + HEADER_BYTES + len);
}

/** Checks that a whole v1 frame (magic, version, length) is at `frame[offset..]`; returns its payload length. */
function wholeFrame(frame: Uint8Array, offset: number, fn: string): number {
  if (!(frame instanceof Uint8Array)) {
    throw typeError(ErrorCode.InvalidArgument, `${fn}: frame must be a Uint8Array`, { field: 'frame' });
  }
  if (!Number.isInteger(offset) || offset < 0 || offset > frame.length) {
    throw rangeError(ErrorCode.InvalidArgument, `${fn}: offset must be an integer in 0..=${frame.length}`, { field: 'offset' });
  }
  const header = parseHeader(frame, offset);
  if (header === null || frame[offset] !== MAGIC_0 || frame[offset + 1] !== MAGIC_1 || frame[offset + 2] !== WIRE_VERSION) {
    throw rangeError(ErrorCode.InvalidArgument, `${fn}: no v1 frame header at offset ${offset}`, { field: 'frame' });
  }
  if (frame.length - offset < FRAME_OVERHEAD + header.len) {
    throw rangeError(ErrorCode.InvalidArgument, `${fn}: the frame at offset ${offset} needs ${FRAME_OVERHEAD + header.len} bytes, ${frame.length - offset} are there`, { field: 'frame' });
  }
  return header.len;
}

/**
 * Writes the frame for `input` into `out` at `offset` (for pre-encoding many frames into one buffer).
 * @returns the number of bytes written (`56 + payload.length`).
 * @throws like {@link encodeMove}, and RangeError (field `out` / `offset`) when the frame does not fit.
 */
export function encodeMoveInto(input: EncodeMoveInput, out: Uint8Array, offset: number): number {
  const move = check(input, 'encodeMoveInto');
  if (!(out instanceof Uint8Array)) {
    throw typeError(ErrorCode.InvalidArgument, 'encodeMoveInto: out must be a Uint8Array', { field: 'out' });
  }
  if (!Number.isInteger(offset) || offset < 0 || offset > out.length) {
    throw rangeError(ErrorCode.InvalidArgument, `encodeMoveInto: offset must be an integer in 0..=${out.length}`, { field: 'offset' });
  }
  const bytes = FRAME_OVERHEAD + move.payload.length;
  if (out.length - offset < bytes) {
    throw rangeError(ErrorCode.InvalidArgument, `encodeMoveInto: out has ${out.length - offset} bytes after offset, the frame needs ${bytes}`, { field: 'out' });
  }
  write(move, out, offset, true);
  return bytes;
}

/**
 * Reads the header of the frame at `frame[offset..]` without validating it.
 * @returns null when fewer than 24 bytes are available.
 */
export function parseHeader(frame: Uint8Array, offset = 0): FrameHeader | null {
  if (frame.length - offset < HEADER_BYTES) return null;
  return {
    room: readU32LE(frame, offset + 4),
    player: readU32LE(frame, offset + 8),
    seq: readU32LE(frame, offset + 12),
    tick: readU32LE(frame, offset + 16),
    kind: frame[offset + 20]! | (frame[offset + 21]! << 8),
    len: frame[offset + 22]! | (frame[offset + 23]! << 8),
    flags: frame[offset + 3]!,
  };
}

/** @internal Reads the little-endian u32 at `bytes[at..at + 4]` (shared with the JS engine). */
export function readU32LE(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function putU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value;
  out[at + 1] = value >>> 8;
  out[at + 2] = value >>> 16;
  out[at + 3] = value >>> 24;
}

/** Writes header, payload and (when `tag`) the tag; `out` has room for the whole frame at `at`. */
function write(move: CheckedMove, out: Uint8Array, at: number, tag: boolean): void {
  const len = move.payload.length;
  out[at] = MAGIC_0;
  out[at + 1] = MAGIC_1;
  out[at + 2] = WIRE_VERSION;
  out[at + 3] = move.key === undefined ? 0 : FLAG_HMAC;
  putU32(out, at + 4, move.room);
  putU32(out, at + 8, move.player);
  putU32(out, at + 12, move.seq);
  putU32(out, at + 16, move.tick);
  out[at + 20] = move.kind;
  out[at + 21] = move.kind >>> 8;
  out[at + 22] = len;
  out[at + 23] = len >>> 8;
  // Nothing to copy for an empty payload. (A view whose buffer was detached reads as empty,
  // but `set` from it throws: it encodes as an empty payload, like any zero-length view.)
  if (len > 0) out.set(move.payload, at + HEADER_BYTES);
  if (!tag) return;
  const body = out.subarray(at, at + HEADER_BYTES + len);
  out.set(move.key === undefined ? sha256(body) : hmacSha256(move.key, body), at + HEADER_BYTES + len);
}

/** Validates every field of `input`; `fn` names the caller in error messages. */
function check(input: EncodeMoveInput, fn: string): CheckedMove {
  if (typeof input !== 'object' || input === null) {
    throw typeError(ErrorCode.InvalidArgument, `${fn}: input must be an object`, { field: 'input' });
  }
  return {
    room: integer(input.room, 'room', 0, U32_MAX, fn),
    player: integer(input.player, 'player', 0, U32_MAX, fn),
    seq: integer(input.seq, 'seq', 1, U32_MAX, fn),
    tick: integer(input.tick ?? 0, 'tick', 0, U32_MAX, fn),
    kind: integer(input.kind ?? 0, 'kind', 0, U16_MAX, fn),
    payload: bytes(input.payload ?? EMPTY, 'payload', 0, MAX_WIRE_PAYLOAD, fn),
    key: input.key === undefined ? undefined : bytes(input.key, 'key', MIN_KEY_BYTES, MAX_KEY_BYTES, fn),
  };
}

function integer(value: unknown, field: string, min: number, max: number, fn: string): number {
  const message = `${fn}: ${field} must be an integer in ${min}..=${max}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw typeError(ErrorCode.InvalidArgument, message, { field });
  }
  if (value < min || value > max) throw rangeError(ErrorCode.InvalidArgument, message, { field });
  return value;
}

function bytes(value: unknown, field: string, min: number, max: number, fn: string): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw typeError(ErrorCode.InvalidArgument, `${fn}: ${field} must be a Uint8Array`, { field });
  }
  if (value.length < min || value.length > max) {
    throw rangeError(ErrorCode.InvalidArgument, `${fn}: ${field} must be ${min}..=${max} bytes, got ${value.length}`, { field });
  }
  return value;
}
