/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) in plain TypeScript.
 *
 * No imports at all, so `encodeMove` runs in browsers. The compression function works on
 * 32-bit integers with one preallocated message schedule, and a message is hashed without
 * copying it (only its last one or two padded blocks go through a scratch buffer).
 *
 * The JS engine verifies tags with `verifySha256` / `verifyHmac`: in place in its ring,
 * with no allocation at all (`crypto.hash` allocates a Buffer per call and, with
 * `timingSafeEqual`, cost about twice as much per 120-byte frame here), HMAC from each key's
 * two midstates (the state after `key ⊕ ipad` and after `key ⊕ opad`, computed once at
 * join, as OpenSSL's `HMAC_CTX` and Rust's `hmac` crate keep them). Their time depends only
 * on the data's length: 32-bit integer arithmetic, no table lookups or branches on the data
 * or the key, and the tag is compared word by word with the differences OR-ed together (no
 * early exit). Checked against `node:crypto` in __test__/crypto.test.ts.
 */

/** Round constants: the first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** Initial hash value: the first 32 bits of the fractional parts of the square roots of the first 8 primes. */
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);

/** Bytes per block. */
const BLOCK = 64;
/** HMAC inner and outer pad bytes. */
const IPAD = 0x36;
const OPAD = 0x5c;

/** Message schedule, reused by every block (JavaScript is single-threaded per realm). */
const W = new Int32Array(64);
/** Chaining state of the hash in progress. */
const STATE = new Int32Array(8);
/** The final one or two blocks (tail of the message + padding + bit length). */
const TAIL = new Uint8Array(2 * BLOCK);
/** HMAC key block (key, or its digest, zero-padded) xor a pad. */
const PAD = new Uint8Array(BLOCK);
/** The digest of an HMAC key longer than a block (it stands for the key). */
const INNER = new Uint8Array(32);

/** Mixes the 64-byte block at `bytes[at..at + 64]` into `STATE`. */
function compress(bytes: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++, at += 4) {
    W[i] = (bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!;
    const y = W[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = STATE[0]!;
  let b = STATE[1]!;
  let c = STATE[2]!;
  let d = STATE[3]!;
  let e = STATE[4]!;
  let f = STATE[5]!;
  let g = STATE[6]!;
  let h = STATE[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  STATE[0] = (STATE[0]! + a) | 0;
  STATE[1] = (STATE[1]! + b) | 0;
  STATE[2] = (STATE[2]! + c) | 0;
  STATE[3] = (STATE[3]! + d) | 0;
  STATE[4] = (STATE[4]! + e) | 0;
  STATE[5] = (STATE[5]! + f) | 0;
  STATE[6] = (STATE[6]! + g) | 0;
  STATE[7] = (STATE[7]! + h) | 0;
}

/**
 * Hashes `src[at..at + n]` into `STATE`, which holds the state to continue from;
 * `prefixBytes` bytes were hashed before (for the bit length in the padding). Whole blocks
 * are read in place; the last one or two, padded, go through `TAIL`. No allocation.
 */
function update(src: Uint8Array, at: number, n: number, prefixBytes: number): void {
  const end = at + n;
  let p = at;
  for (; end - p >= BLOCK; p += BLOCK) compress(src, p);
  const rest = end - p;
  TAIL.fill(0);
  for (let i = 0; i < rest; i++) TAIL[i] = src[p + i]!;
  TAIL[rest] = 0x80;
  const tailBytes = rest + 9 <= BLOCK ? BLOCK : 2 * BLOCK;
  const bits = (n + prefixBytes) * 8;
  writeU32BE(TAIL, tailBytes - 8, Math.floor(bits / 0x1_0000_0000));
  writeU32BE(TAIL, tailBytes - 4, bits >>> 0);
  for (let q = 0; q < tailBytes; q += BLOCK) compress(TAIL, q);
}

/** Writes SHA-256(`data`) into `out[0..32]`. */
function digestInto(data: Uint8Array, out: Uint8Array): void {
  STATE.set(IV);
  update(data, 0, data.length, 0);
  for (let i = 0; i < 8; i++) writeU32BE(out, i * 4, STATE[i]!);
}

/** Whether `STATE` differs from the 32 bytes at `tag[at..]`: every word compared, no early exit. */
function differs(tag: Uint8Array, at: number): boolean {
  let diff = 0;
  for (let i = 0; i < 8; i++, at += 4) {
    diff |= STATE[i]! ^ ((tag[at]! << 24) | (tag[at + 1]! << 16) | (tag[at + 2]! << 8) | tag[at + 3]!);
  }
  return diff !== 0;
}

function writeU32BE(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 24;
  out[at + 1] = value >>> 16;
  out[at + 2] = value >>> 8;
  out[at + 3] = value;
}

/**
 * SHA-256 digest of `data`.
 * @returns a new 32-byte array.
 * @example sha256(new TextEncoder().encode('abc')) // ba7816bf…f20015ad
 */
export function sha256(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  digestInto(data, out);
  return out;
}

/**
 * HMAC-SHA256 of `data` under `key` (RFC 2104; a key longer than 64 bytes is hashed first).
 * @returns a new 32-byte array.
 */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  const mid = hmacMidstates(key);
  hmacInto(mid, data, 0, data.length);
  mid.fill(0);
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) writeU32BE(out, i * 4, STATE[i]!);
  return out;
}

/**
 * Whether SHA-256(`src[at..at + n]`) equals the 32 bytes that follow it (a v1 frame's tag
 * after its header and payload). Reads `src` in place and allocates nothing; false when
 * the tag does not fit in `src`.
 */
export function verifySha256(src: Uint8Array, at: number, n: number): boolean {
  if (at < 0 || n < 0 || at + n + 32 > src.length) return false;
  STATE.set(IV);
  update(src, at, n, 0);
  return !differs(src, at + n);
}

/** Words of one key's HMAC midstates ([`hmacMidstates`]): inner (8), then outer (8). */
export const HMAC_MIDSTATE_WORDS = 16;

/**
 * The HMAC-SHA256 midstates of `key` (RFC 2104; a key longer than 64 bytes is hashed
 * first): the SHA-256 state after `key ⊕ ipad`, then after `key ⊕ opad`. They are as secret
 * as the key (they sign like it). `key` is not kept.
 */
export function hmacMidstates(key: Uint8Array): Int32Array {
  const mid = new Int32Array(HMAC_MIDSTATE_WORDS);
  // The key block: the key (or its digest, if longer than a block), zero-padded.
  PAD.fill(0);
  if (key.length > BLOCK) {
    digestInto(key, INNER);
    PAD.set(INNER);
  } else {
    PAD.set(key);
  }
  for (let pass = 0; pass < 2; pass++) {
    const pad = pass === 0 ? IPAD : OPAD;
    for (let i = 0; i < BLOCK; i++) PAD[i] = PAD[i]! ^ pad;
    STATE.set(IV);
    compress(PAD, 0);
    mid.set(STATE, 8 * pass);
    for (let i = 0; i < BLOCK; i++) PAD[i] = PAD[i]! ^ pad;
  }
  PAD.fill(0);
  INNER.fill(0);
  STATE.fill(0);
  W.fill(0);
  TAIL.fill(0);
  return mid;
}

/** Puts HMAC-SHA256(key, `src[at..at + n]`) in `STATE`, the key given by its midstates. */
function hmacInto(mid: Int32Array, src: Uint8Array, at: number, n: number): void {
  for (let i = 0; i < 8; i++) STATE[i] = mid[i]!;
  update(src, at, n, BLOCK);
  // The outer hash: the outer midstate, then one block of the inner digest and its padding.
  for (let i = 0; i < 8; i++) writeU32BE(TAIL, 4 * i, STATE[i]!);
  TAIL.fill(0, 32, BLOCK);
  TAIL[32] = 0x80;
  writeU32BE(TAIL, BLOCK - 4, (BLOCK + 32) * 8);
  for (let i = 0; i < 8; i++) STATE[i] = mid[8 + i]!;
  compress(TAIL, 0);
}

/**
 * Whether HMAC-SHA256(key, `src[at..at + n]`) equals the 32 bytes that follow it, the key
 * given by its midstates ([`hmacMidstates`]). Reads `src` in place and allocates nothing;
 * false when the tag does not fit in `src` or `mid` is not a key's midstates.
 */
export function verifyHmac(mid: Int32Array, src: Uint8Array, at: number, n: number): boolean {
  if (mid.length !== HMAC_MIDSTATE_WORDS || at < 0 || n < 0 || at + n + 32 > src.length) return false;
  hmacInto(mid, src, at, n);
  return !differs(src, at + n);
}
