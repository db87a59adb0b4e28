/**
 * The browser-safe SHA-256 / HMAC-SHA256 and the frame encoder, checked against node:crypto
 * and the wire vectors (crates/dispatcher/tests/wire-v1.json: the byte-exact examples of the wire format that the Rust tests read too).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors';
import { encodeMove, encodeMoveInto, frameLength, parseHeader } from '../src/encode';
import { HMAC_MIDSTATE_WORDS, hmacMidstates, hmacSha256, sha256, verifyHmac, verifySha256 } from '../src/sha256';
import type { EncodeMoveInput } from '../src/types';
import { type WireVector, loadWireVectors } from './helpers';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const unhex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));

/** Every length 0..300 (all block and padding edges: 55, 56, 63, 64, 65, 119, 120, 127, 128...). */
const LENGTHS = Array.from({ length: 301 }, (_, i) => i);

describe('sha256', () => {
  it('matches node:crypto on random inputs of every length 0..300', () => {
    for (const n of LENGTHS) {
      const data = randomBytes(n);
      expect(hex(sha256(data)), `length ${n}`).toBe(createHash('sha256').update(data).digest('hex'));
    }
  });

  it('matches the FIPS 180-2 examples', () => {
    const abc = new TextEncoder().encode('abc');
    expect(hex(sha256(abc))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hex(sha256(new Uint8Array(0)))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('hashes a view without reading outside it', () => {
    const backing = randomBytes(200);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 13, 120);
    expect(hex(sha256(view))).toBe(createHash('sha256').update(view).digest('hex'));
  });

  it('handles a large input (many blocks)', () => {
    const data = randomBytes(1 << 20);
    expect(hex(sha256(data))).toBe(createHash('sha256').update(data).digest('hex'));
  });
});

describe('hmacSha256', () => {
  it('matches node:crypto for keys of 16..64 bytes and many message lengths', () => {
    for (let keyLength = 16; keyLength <= 64; keyLength++) {
      const key = randomBytes(keyLength);
      for (const n of [0, 1, 55, 56, 63, 64, 65, 120, 127, 128, 129, 300]) {
        const data = randomBytes(n);
        expect(hex(hmacSha256(key, data)), `key ${keyLength}, length ${n}`).toBe(createHmac('sha256', key).update(data).digest('hex'));
      }
    }
  });

  it('matches node:crypto for keys shorter than 16 and longer than 64 bytes', () => {
    for (const keyLength of [0, 1, 15, 65, 100, 128, 200]) {
      const key = randomBytes(keyLength);
      const data = randomBytes(77);
      expect(hex(hmacSha256(key, data)), `key ${keyLength}`).toBe(createHmac('sha256', key).update(data).digest('hex'));
    }
  });

  it('matches RFC 4231 test case 2', () => {
    const mac = hmacSha256(new TextEncoder().encode('Jefe'), new TextEncoder().encode('what do ya want for nothing?'));
    expect(hex(mac)).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });

  it('is unaffected by interleaved sha256 calls (shared scratch state)', () => {
    const key = randomBytes(32);
    const data = randomBytes(90);
    const first = hex(hmacSha256(key, data));
    sha256(randomBytes(70));
    expect(hex(hmacSha256(key, data))).toBe(first);
  });
});

describe('verifySha256 / verifyHmac (the JS engine\'s in-place tag checks)', () => {
  /** `data` at offset `at` of a larger buffer, followed by `tag`, then junk. */
  function framed(data: Uint8Array, tag: Uint8Array, at: number): Uint8Array {
    const buf = randomBytes(at + data.length + 32 + 7);
    buf.set(data, at);
    buf.set(tag, at + data.length);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }

  it('accept the tag node:crypto computes, at any offset, for every length 0..300', () => {
    for (const n of LENGTHS) {
      const data = randomBytes(n);
      const at = n % 13;
      expect(verifySha256(framed(data, createHash('sha256').update(data).digest(), at), at, n), `length ${n}`).toBe(true);
      const key = randomBytes(16 + (n % 49));
      expect(verifyHmac(hmacMidstates(key), framed(data, createHmac('sha256', key).update(data).digest(), at), at, n), `hmac length ${n}`).toBe(true);
    }
  });

  it('refuse a tag with any one bit flipped, and a flipped message bit', () => {
    const data = randomBytes(88);
    const key = randomBytes(32);
    const mid = hmacMidstates(key);
    const sha = framed(data, createHash('sha256').update(data).digest(), 5);
    const mac = framed(data, createHmac('sha256', key).update(data).digest(), 5);
    for (let bit = 0; bit < (88 + 32) * 8; bit++) {
      const at = 5 + (bit >>> 3);
      sha[at]! ^= 1 << (bit & 7);
      mac[at]! ^= 1 << (bit & 7);
      expect(verifySha256(sha, 5, 88), `sha bit ${bit}`).toBe(false);
      expect(verifyHmac(mid, mac, 5, 88), `hmac bit ${bit}`).toBe(false);
      sha[at]! ^= 1 << (bit & 7);
      mac[at]! ^= 1 << (bit & 7);
    }
    expect([verifySha256(sha, 5, 88), verifyHmac(mid, mac, 5, 88)]).toEqual([true, true]);
  });

  it('midstates match node:crypto for keys shorter than 16 and longer than 64 bytes; another key fails', () => {
    const data = randomBytes(120);
    for (const keyLength of [0, 1, 15, 64, 65, 100, 200]) {
      const key = randomBytes(keyLength);
      const buf = framed(data, createHmac('sha256', key).update(data).digest(), 0);
      expect(verifyHmac(hmacMidstates(key), buf, 0, 120), `key ${keyLength}`).toBe(true);
      expect(verifyHmac(hmacMidstates(randomBytes(32)), buf, 0, 120), `other key ${keyLength}`).toBe(false);
    }
  });

  it('answer false, never throw, when the tag does not fit or the midstates are not a key\'s', () => {
    const data = randomBytes(40);
    const buf = framed(data, createHash('sha256').update(data).digest(), 0);
    expect(verifySha256(buf, 0, 40)).toBe(true);
    // The tag may end exactly at the end of the bytes.
    expect([verifySha256(buf.subarray(0, 72), 0, 40), verifySha256(buf.subarray(0, 71), 0, 40)]).toEqual([true, false]);
    expect([verifySha256(buf, 0, buf.length - 31), verifySha256(buf, -1, 40), verifySha256(buf, 0, -1), verifySha256(new Uint8Array(0), 0, 0)]).toEqual([false, false, false, false]);
    expect(verifyHmac(new Int32Array(HMAC_MIDSTATE_WORDS - 1), buf, 0, 40)).toBe(false);
  });

  it('are unaffected by interleaved sha256 / hmacSha256 calls (shared scratch state)', () => {
    const data = randomBytes(88);
    const key = randomBytes(24);
    const mid = hmacMidstates(key);
    sha256(randomBytes(70));
    const mac = framed(data, hmacSha256(key, data), 3);
    hmacSha256(randomBytes(20), randomBytes(130));
    expect(verifyHmac(mid, mac, 3, 88)).toBe(true);
  });
});

const VECTORS = loadWireVectors();

function inputOf(v: WireVector): EncodeMoveInput {
  return {
    room: v.room,
    player: v.player,
    seq: v.seq,
    tick: v.tick,
    kind: v.kind,
    payload: unhex(v.payload),
    ...(v.key === undefined ? {} : { key: unhex(v.key) }),
  };
}

describe('encodeMove', () => {
  it('has wire vectors to check', () => {
    expect(VECTORS.length).toBeGreaterThanOrEqual(7);
  });

  for (const v of VECTORS) {
    it(`matches the wire vector: ${v.note}`, () => {
      expect(hex(encodeMove(inputOf(v)))).toBe(v.frame);
    });
  }

  it('encodeMoveInto writes the same bytes at an offset and returns the length', () => {
    const out = new Uint8Array(4096).fill(0xee);
    let at = 3;
    for (const v of VECTORS) {
      const written = encodeMoveInto(inputOf(v), out, at);
      expect(written).toBe(v.frame.length / 2);
      expect(hex(out.subarray(at, at + written))).toBe(v.frame);
      at += written;
    }
    expect(out[2]).toBe(0xee);
    expect(out[at]).toBe(0xee);
  });

  it('defaults tick, kind and payload to 0 / empty', () => {
    const frame = encodeMove({ room: 1, player: 1, seq: 1 });
    expect(hex(frame)).toBe(VECTORS[0]!.frame);
  });

  it('parseHeader reads the fields back, and null below 24 bytes', () => {
    for (const v of VECTORS) {
      const frame = unhex(v.frame);
      expect(parseHeader(frame)).toEqual({
        room: v.room,
        player: v.player,
        seq: v.seq,
        tick: v.tick,
        kind: v.kind,
        len: v.payload.length / 2,
        flags: v.key === undefined ? 0 : 1,
      });
    }
    const two = new Uint8Array(100);
    two.set(unhex(VECTORS[1]!.frame), 30);
    expect(parseHeader(two, 30)?.room).toBe(42);
    expect(parseHeader(new Uint8Array(23))).toBeNull();
    expect(parseHeader(new Uint8Array(30), 7)).toBeNull();
  });

  it('frameLength is 56 + payload length, checked', () => {
    expect(frameLength(0)).toBe(56);
    expect(frameLength(65535)).toBe(65591);
    expect(() => frameLength(65536)).toThrow(RangeError);
    expect(() => frameLength(-1)).toThrow(RangeError);
    expect(() => frameLength(1.5)).toThrow(RangeError);
  });

  const base: EncodeMoveInput = { room: 1, player: 2, seq: 3 };
  const cases: [string, Record<string, unknown>, typeof TypeError | typeof RangeError][] = [
    ['room', { room: -1 }, RangeError],
    ['room', { room: 2 ** 32 }, RangeError],
    ['room', { room: 1.5 }, TypeError],
    ['room', { room: '1' }, TypeError],
    ['player', { player: 2 ** 32 }, RangeError],
    ['player', { player: undefined }, TypeError],
    ['seq', { seq: 0 }, RangeError],
    ['seq', { seq: 2 ** 32 }, RangeError],
    ['tick', { tick: -1 }, RangeError],
    ['tick', { tick: Number.NaN }, TypeError],
    ['kind', { kind: 65536 }, RangeError],
    ['kind', { kind: 1n }, TypeError],
    ['payload', { payload: new Uint8Array(65536) }, RangeError],
    ['payload', { payload: [1, 2, 3] }, TypeError],
    ['key', { key: new Uint8Array(15) }, RangeError],
    ['key', { key: new Uint8Array(65) }, RangeError],
    ['key', { key: 'secret-key-000000' }, TypeError],
  ];
  for (const [field, patch, kind] of cases) {
    it(`refuses ${field} = ${String(Object.values(patch)[0]).slice(0, 20)} with ${kind.name}`, () => {
      const input = { ...base, ...patch } as unknown as EncodeMoveInput;
      let caught: unknown;
      try {
        encodeMove(input);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(kind);
      expect(caught).toMatchObject({ code: ErrorCode.InvalidArgument, field });
      expect((caught as Error).message).toContain(`encodeMove: ${field}`);
    });
  }

  it('names the range in integer messages', () => {
    expect(() => encodeMove({ ...base, room: -1 })).toThrow('encodeMove: room must be an integer in 0..=4294967295');
    expect(() => encodeMove({ ...base, seq: 0 })).toThrow('encodeMove: seq must be an integer in 1..=4294967295');
  });

  it('refuses a non-object input and a short output buffer', () => {
    expect(() => encodeMove(null as unknown as EncodeMoveInput)).toThrow(TypeError);
    expect(() => encodeMoveInto(base, new Uint8Array(55), 0)).toThrow(expect.objectContaining({ field: 'out', code: ErrorCode.InvalidArgument }));
    expect(() => encodeMoveInto(base, new Uint8Array(100), 45)).toThrow(RangeError);
    expect(() => encodeMoveInto(base, new Uint8Array(100), -1)).toThrow(expect.objectContaining({ field: 'offset' }));
    expect(encodeMoveInto(base, new Uint8Array(100), 44)).toBe(56);
  });
});
