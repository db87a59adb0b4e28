/**
 * Connection tickets for native ingress, minted by the control plane (any Node process; no
 * native addon needed). A client presents its ticket once when it connects to the data plane
 * (WebSocket `?ticket=`, TCP line `ticket <t>\n`, gRPC `authorization: Bearer <t>`); the Rust
 * data plane (`crates/dispatcher/src/ingress/ticket.rs`) verifies it before accepting the
 * connection and stamps the ticket's player on every frame of the connection.
 *
 * Format (shared with the Rust verifier, byte for byte): base64url WITHOUT padding (RFC 4648
 * §5: `A-Z a-z 0-9 - _`) of `body || tag`, where
 *
 * | bytes   | field     | encoding                              |
 * |---------|-----------|---------------------------------------|
 * | 0       | version   | u8, = `TICKET_VERSION` (1)            |
 * | 1..5    | room      | u32 little-endian                     |
 * | 5..9    | player    | u32 little-endian                     |
 * | 9..17   | expiresAt | u64 little-endian, Unix time in ms    |
 * | 17..33  | nonce     | 16 random bytes                       |
 * | 33..65  | tag       | HMAC-SHA256(key, bytes 0..33)         |
 *
 * 65 bytes, so exactly 87 characters. The key is 16..64 bytes. The verifier refuses a
 * ticket once `now >= expiresAt`, one expiring more than `MAX_TICKET_TTL_MS` + 5 s ahead of
 * its clock, and a ticket whose nonce it has already accepted (single use).
 *
 * Tickets are bearer credentials: never log them. Errors thrown here never contain the key.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { isUint8Array } from 'node:util/types';
import { MAX_KEY_BYTES, MIN_KEY_BYTES } from './constants';
import { ErrorCode, rangeError, typeError } from './errors';
import { allKeys, copyOfBytes, describe, rejectUnknownKeys } from './options';

/** The format version in a ticket's first byte. */
export const TICKET_VERSION = 1;
/** The longest ticket lifetime `issueTicket` mints, in ms (5 minutes). */
export const MAX_TICKET_TTL_MS = 300_000;
/** The lifetime `issueTicket` gives a ticket when `ttlMs` is not given, in ms. */
export const DEFAULT_TICKET_TTL_MS = 15_000;

/** Bytes of the signed body, of the nonce, of the whole decoded ticket. */
const BODY_BYTES = 33;
const NONCE_BYTES = 16;
const TAG_BYTES = 32;
const U32_MAX = 0xffff_ffff;

/** What `issueTicket` signs. */
export interface TicketClaims {
  /** The room the connection is for (u32). */
  room: number;
  /** The player every frame of the connection is stamped with (u32). */
  player: number;
  /** Lifetime in ms, an integer in 1..=300000 (`MAX_TICKET_TTL_MS`); default 15000. */
  ttlMs?: number;
}

/** The key as bytes (a string is taken as UTF-8); a copy, which the caller of this helper wipes. */
function keyBytes(key: unknown, method: string): Buffer {
  let bytes: Buffer;
  if (typeof key === 'string') {
    bytes = Buffer.from(key, 'utf8');
  } else if (isUint8Array(key)) {
    // A copy made from the view's internal slots: a subclass cannot lie about its length.
    bytes = Buffer.from(copyOfBytes(key).buffer);
  } else {
    throw typeError(ErrorCode.InvalidArgument, `${method}: key must be a Uint8Array (or Buffer) or a string, got ${describe(key)}`, { field: 'key' });
  }
  if (bytes.length < MIN_KEY_BYTES || bytes.length > MAX_KEY_BYTES) {
    const length = bytes.length;
    bytes.fill(0);
    throw rangeError(ErrorCode.InvalidArgument, `${method}: key must be ${MIN_KEY_BYTES}–${MAX_KEY_BYTES} bytes, got ${length}`, { field: 'key' });
  }
  return bytes;
}

function integer(value: unknown, field: string, method: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const fn = typeof value === 'number' ? rangeError : typeError;
    throw fn(ErrorCode.InvalidArgument, `${method}: ${field} must be an integer in ${min}..=${max}, got ${describe(value)}`, { field });
  }
  return value;
}

/** Signs and encodes a ticket from a checked key (16..64 bytes) and checked fields. */
function sign(key: Uint8Array, room: number, player: number, expiresAt: number, nonce: Uint8Array): string {
  const raw = Buffer.alloc(BODY_BYTES + TAG_BYTES);
  raw.writeUInt8(TICKET_VERSION, 0);
  raw.writeUInt32LE(room, 1);
  raw.writeUInt32LE(player, 5);
  raw.writeBigUInt64LE(BigInt(expiresAt), 9);
  raw.set(nonce, 17);
  createHmac('sha256', key).update(raw.subarray(0, BODY_BYTES)).digest().copy(raw, BODY_BYTES);
  return raw.toString('base64url');
}

const CLAIM_KEYS = allKeys<TicketClaims>()(['room', 'player', 'ttlMs']);

/**
 * Mints a connection ticket for `claims.player` in `claims.room`, valid for `claims.ttlMs`
 * (default 15 s, at most 5 min) and for one connection. `key` is the data plane's ticket key:
 * 16–64 bytes, or a string taken as UTF-8.
 *
 * ```ts
 * const ticket = issueTicket(process.env.TICKET_KEY, { room: 7, player: 42 });
 * // hand it to the client, which connects to wss://data-plane/ws?ticket=<ticket>
 * ```
 *
 * @returns 87 base64url characters (no padding).
 * @throws `TypeError` / `RangeError` with `code: 'ERR_MOVE_DISPATCHER_INVALID_ARGUMENT'` and
 * `field` (`key`, `claims`, `room`, `player`, `ttlMs`).
 */
export function issueTicket(key: Uint8Array | string, claims: TicketClaims): string {
  const method = 'issueTicket';
  if (typeof claims !== 'object' || claims === null) {
    throw typeError(ErrorCode.InvalidArgument, `${method}: claims must be an object { room, player, ttlMs? }, got ${describe(claims)}`, { field: 'claims' });
  }
  rejectUnknownKeys(claims, CLAIM_KEYS, method, ErrorCode.InvalidArgument);
  const room = integer(claims.room, 'room', method, 0, U32_MAX);
  const player = integer(claims.player, 'player', method, 0, U32_MAX);
  const ttlMs = claims.ttlMs === undefined ? DEFAULT_TICKET_TTL_MS : integer(claims.ttlMs, 'ttlMs', method, 1, MAX_TICKET_TTL_MS);
  const bytes = keyBytes(key, method);
  try {
    return sign(bytes, room, player, Date.now() + ttlMs, randomBytes(NONCE_BYTES));
  } finally {
    bytes.fill(0);
  }
}

/**
 * Encodes a ticket with every field given: for tests and cross-implementation vectors.
 * `issueTicket` is this with `expiresAt = Date.now() + ttlMs` and a random nonce.
 *
 * @internal
 */
export function encodeTicket(key: Uint8Array | string, room: number, player: number, expiresAt: number, nonce: Uint8Array): string {
  const method = 'encodeTicket';
  integer(room, 'room', method, 0, U32_MAX);
  integer(player, 'player', method, 0, U32_MAX);
  integer(expiresAt, 'expiresAt', method, 0, Number.MAX_SAFE_INTEGER);
  if (!isUint8Array(nonce)) {
    throw typeError(ErrorCode.InvalidArgument, `${method}: nonce must be a Uint8Array of ${NONCE_BYTES} bytes, got ${describe(nonce)}`, { field: 'nonce' });
  }
  if (nonce.length !== NONCE_BYTES) {
    throw rangeError(ErrorCode.InvalidArgument, `${method}: nonce must be ${NONCE_BYTES} bytes, got ${nonce.length}`, { field: 'nonce' });
  }
  const bytes = keyBytes(key, method);
  try {
    return sign(bytes, room, player, expiresAt, nonce);
  } finally {
    bytes.fill(0);
  }
}
