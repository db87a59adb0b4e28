/**
 * Connection tickets (src/ticket.ts): the format the Rust verifier
 * (crates/dispatcher/src/ingress/ticket.rs) reads, checked here by decoding and re-signing
 * with node:crypto, and against a fixed vector that the Rust tests verify too.
 */
import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_TICKET_TTL_MS, ErrorCode, MAX_TICKET_TTL_MS, TICKET_VERSION, issueTicket } from '../index';
import { encodeTicket } from '../src/ticket';

/**
 * The shared fixed vector, computed independently (Python `hmac` / `hashlib` / `base64`):
 * key = bytes 0x00..0x1f, room 7, player 42, expiresAt 1_700_000_000_000, nonce = bytes
 * 0xa0..0xaf. The same string is hard-coded in the Rust tests.
 */
const VECTOR = 'AQcAAAAqAAAAAGjlz4sBAACgoaKjpKWmp6ipqqusra6vzCvtv8WEFqg1pk0CMpyXJa7k6VzCbUVWOv45H8YQW4U';
const VECTOR_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const VECTOR_NONCE = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);

const KEY = new Uint8Array(32).fill(0x42);

interface Decoded {
  version: number;
  room: number;
  player: number;
  expiresAt: bigint;
  nonce: string;
  tagOk: (key: Uint8Array | string) => boolean;
}

function decode(ticket: string): Decoded {
  const raw = Buffer.from(ticket, 'base64url');
  expect(raw.length).toBe(65);
  expect(raw.toString('base64url')).toBe(ticket);
  const body = raw.subarray(0, 33);
  const tag = raw.subarray(33);
  return {
    version: raw.readUInt8(0),
    room: raw.readUInt32LE(1),
    player: raw.readUInt32LE(5),
    expiresAt: raw.readBigUInt64LE(9),
    nonce: raw.subarray(17, 33).toString('hex'),
    tagOk: (key) => createHmac('sha256', key).update(body).digest().equals(tag),
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('issueTicket', () => {
  it('matches the fixed vector shared with the Rust verifier', () => {
    expect(encodeTicket(VECTOR_KEY, 7, 42, 1_700_000_000_000, VECTOR_NONCE)).toBe(VECTOR);
    const d = decode(VECTOR);
    expect(d).toMatchObject({ version: 1, room: 7, player: 42, expiresAt: 1_700_000_000_000n, nonce: Buffer.from(VECTOR_NONCE).toString('hex') });
    expect(d.tagOk(VECTOR_KEY)).toBe(true);
  });

  it('is 87 base64url characters, no padding', () => {
    for (let i = 0; i < 200; i++) {
      const t = issueTicket(KEY, { room: i * 7919, player: 0xffff_ffff - i });
      expect(t).toHaveLength(87);
      expect(t).toMatch(/^[A-Za-z0-9_-]{87}$/);
    }
  });

  it('signs claims that decode back, expiring after ttlMs', () => {
    vi.useFakeTimers({ now: 1_800_000_000_123 });
    const t = issueTicket(KEY, { room: 0xffff_ffff, player: 0, ttlMs: 60_000 });
    const d = decode(t);
    expect(d).toMatchObject({ version: TICKET_VERSION, room: 0xffff_ffff, player: 0, expiresAt: 1_800_000_060_123n });
    expect(d.tagOk(KEY)).toBe(true);
    expect(d.tagOk(new Uint8Array(32).fill(0x43))).toBe(false);
    expect(decode(issueTicket(KEY, { room: 1, player: 2 })).expiresAt).toBe(BigInt(1_800_000_000_123 + DEFAULT_TICKET_TTL_MS));
    expect(DEFAULT_TICKET_TTL_MS).toBe(15_000);
    expect(MAX_TICKET_TTL_MS).toBe(300_000);
  });

  it('takes a string key as UTF-8', () => {
    const key = 'correct horse battery staple é';
    const d = decode(issueTicket(key, { room: 1, player: 2 }));
    expect(d.tagOk(Buffer.from(key, 'utf8'))).toBe(true);
    expect(encodeTicket(key, 7, 42, 1_700_000_000_000, VECTOR_NONCE)).toBe(encodeTicket(Buffer.from(key, 'utf8'), 7, 42, 1_700_000_000_000, VECTOR_NONCE));
  });

  it('gives two tickets with the same claims different nonces', () => {
    vi.useFakeTimers({ now: 1_800_000_000_000 });
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const t = issueTicket(KEY, { room: 1, player: 2 });
      seen.add(decode(t).nonce);
    }
    expect(seen.size).toBe(1000);
  });

  it('accepts ttlMs in 1..=300000 and refuses anything else', () => {
    vi.useFakeTimers({ now: 1_000 });
    expect(decode(issueTicket(KEY, { room: 1, player: 1, ttlMs: 1 })).expiresAt).toBe(1_001n);
    expect(decode(issueTicket(KEY, { room: 1, player: 1, ttlMs: MAX_TICKET_TTL_MS })).expiresAt).toBe(301_000n);
    for (const ttlMs of [0, -1, MAX_TICKET_TTL_MS + 1, 1.5, Number.NaN, Infinity]) {
      expect(() => issueTicket(KEY, { room: 1, player: 1, ttlMs }), String(ttlMs)).toThrow(expect.objectContaining({ name: 'RangeError', code: ErrorCode.InvalidArgument, field: 'ttlMs' }));
    }
    expect(() => issueTicket(KEY, { room: 1, player: 1, ttlMs: '100' as unknown as number })).toThrow(expect.objectContaining({ name: 'TypeError', code: ErrorCode.InvalidArgument, field: 'ttlMs' }));
    // A misspelt claim would otherwise give a ticket with the default lifetime.
    expect(() => issueTicket(KEY, { room: 1, player: 1, ttl: 100 } as never)).toThrow(expect.objectContaining({ name: 'TypeError', code: ErrorCode.InvalidArgument, field: 'ttl' }));
  });

  it('accepts keys of 16..=64 bytes and refuses others', () => {
    for (const n of [16, 33, 64]) {
      expect(decode(issueTicket(new Uint8Array(n).fill(1), { room: 1, player: 1 })).tagOk(new Uint8Array(n).fill(1))).toBe(true);
      expect(issueTicket('k'.repeat(n), { room: 1, player: 1 })).toHaveLength(87);
    }
    for (const n of [0, 1, 15, 65, 128]) {
      expect(() => issueTicket(new Uint8Array(n), { room: 1, player: 1 }), `${n} bytes`).toThrow(expect.objectContaining({ name: 'RangeError', code: ErrorCode.InvalidArgument, field: 'key' }));
      expect(() => issueTicket('k'.repeat(n), { room: 1, player: 1 }), `${n} chars`).toThrow(expect.objectContaining({ name: 'RangeError', code: ErrorCode.InvalidArgument, field: 'key' }));
    }
    // 15 characters but 16 bytes of UTF-8: the length is counted in bytes.
    expect(issueTicket(`${'k'.repeat(14)}é`, { room: 1, player: 1 })).toHaveLength(87);
    // 64 characters but 65 bytes.
    expect(() => issueTicket(`${'k'.repeat(63)}é`, { room: 1, player: 1 })).toThrow(RangeError);
  });

  it('never puts the key in an error message', () => {
    const secret = 'SECRET-k3y!'; // 11 bytes: too short
    let caught: unknown;
    try {
      issueTicket(secret, { room: 1, player: 1 });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(RangeError);
    expect(String((caught as Error).message)).not.toContain(secret);
    expect(String((caught as Error).message)).toContain('got 11');
  });

  it('refuses bad arguments with typed errors', () => {
    const bad: [unknown, unknown, string, string][] = [
      [42, { room: 1, player: 1 }, 'key', 'TypeError'],
      [null, { room: 1, player: 1 }, 'key', 'TypeError'],
      [[1, 2, 3], { room: 1, player: 1 }, 'key', 'TypeError'],
      [KEY, null, 'claims', 'TypeError'],
      [KEY, 'room 1', 'claims', 'TypeError'],
      [KEY, { player: 1 }, 'room', 'TypeError'],
      [KEY, { room: '1', player: 1 }, 'room', 'TypeError'],
      [KEY, { room: -1, player: 1 }, 'room', 'RangeError'],
      [KEY, { room: 2 ** 32, player: 1 }, 'room', 'RangeError'],
      [KEY, { room: 1.5, player: 1 }, 'room', 'RangeError'],
      [KEY, { room: 1 }, 'player', 'TypeError'],
      [KEY, { room: 1, player: 1n }, 'player', 'TypeError'],
      [KEY, { room: 1, player: 2 ** 32 }, 'player', 'RangeError'],
      [KEY, { room: 1, player: Number.NaN }, 'player', 'RangeError'],
    ];
    for (const [key, claims, field, name] of bad) {
      expect(() => issueTicket(key as Uint8Array, claims as { room: number; player: number }), `${field} ${String(claims)}`).toThrow(
        expect.objectContaining({ name, code: ErrorCode.InvalidArgument, field }),
      );
    }
  });

  it('encodeTicket checks its fields too', () => {
    expect(() => encodeTicket(VECTOR_KEY, 7, 42, -1, VECTOR_NONCE)).toThrow(expect.objectContaining({ field: 'expiresAt', code: ErrorCode.InvalidArgument }));
    expect(() => encodeTicket(VECTOR_KEY, 7, 42, 2 ** 53, VECTOR_NONCE)).toThrow(expect.objectContaining({ field: 'expiresAt' }));
    expect(() => encodeTicket(VECTOR_KEY, 7, 42, 1, new Uint8Array(15))).toThrow(expect.objectContaining({ name: 'RangeError', field: 'nonce' }));
    expect(() => encodeTicket(VECTOR_KEY, 7, 42, 1, 'nonce' as unknown as Uint8Array)).toThrow(expect.objectContaining({ name: 'TypeError', field: 'nonce' }));
  });

  it('leaves the caller key untouched', () => {
    const key = new Uint8Array(32).fill(9);
    issueTicket(key, { room: 1, player: 1 });
    expect(key.every((b) => b === 9)).toBe(true);
  });
});
