/**
 * "Pure Node (hand-written)": the strongest single-thread pipeline a Node.js expert would
 * write without this package, and the benchmark's reference baseline.
 *
 * Everything happens inline, in the read handler, frame by frame through the read's chunk:
 * the wire-format checks of docs/architecture.md (magic, version, flags, length, seq ≥ 1,
 * payload ≤ `maxPayload`), the room lookup, the room's auth mode, membership, the tag
 * (SHA-256 of bytes `0 .. 24 + len`, or HMAC-SHA256 with the player's key, compared in
 * constant time), the 128-wide replay window of the (room, player), and delivery of the
 * move to the consumer on the spot. No queue, no copy, no deferral, no thread hand-off:
 * on one core nothing is cheaper, which is why this is the baseline the other rows answer to.
 *
 * State lives in preallocated typed arrays: every (room, player) membership has a slot
 * (a room maps player → slot), the replay windows are `Uint32Array` tops and `Int32Array`
 * bitmaps indexed by slot, HMAC keys are kept as precomputed midstates (JS hashing) or
 * `KeyObject`s / padded key blocks (node:crypto). Per move, nothing is allocated beyond
 * what the chosen hash needs (node:crypto takes a view and returns a digest; the JS
 * SHA-256 allocates nothing) — delivery reuses one move object, whose `payload` view is
 * made only if the consumer reads it (as the native engine's `MoveView` does).
 *
 * The hash is chosen at startup by measurement (`calibrate`): `crypto.hash`,
 * `createHash().update().digest()`, or the zero-allocation JS SHA-256 of ./sha256.ts
 * (for HMAC: `createHmac` with a KeyObject, HMAC built from two `crypto.hash` calls over a
 * reused buffer, or the JS HMAC from midstates), each timed as the pipeline calls it —
 * view, hash, constant-time compare — over real frames of the load, after a self-test
 * that they agree.
 */
import { createHash, createHmac, createSecretKey, hash, type KeyObject, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { hmacMidstates, MIDSTATE_WORDS, verifyHmac, verifySha256 } from './sha256';

/** Verdicts and reasons of this pipeline (names as in docs/architecture.md). */
export const REJECT_REASONS = ['Malformed', 'Oversize', 'UnknownRoom', 'AuthMismatch', 'NotMember', 'BadTag', 'Replay'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
const MALFORMED = 0;
const OVERSIZE = 1;
const UNKNOWN_ROOM = 2;
const AUTH_MISMATCH = 3;
const NOT_MEMBER = 4;
const BAD_TAG = 5;
const REPLAY = 6;

/** Reason codes handed to `HandConsumer.reject` (the package's `Reason` numbering). */
export const REASON_BAD_TAG = 0;
export const REASON_REPLAY = 2;

const WINDOW_BITS = 128;

/** The move handed to the consumer: one object, reused for every move; valid during the call. */
export class HandMove {
  room = 0;
  player = 0;
  seq = 0;
  tick = 0;
  kind = 0;
  /** The read's bytes; the frame starts at `frameOffset`. */
  bytes: Uint8Array = new Uint8Array(0);
  frameOffset = 0;
  payloadLength = 0;

  /** The payload as a view into the read's bytes (made on demand, like `MoveView.payload`). */
  get payload(): Uint8Array {
    return this.bytes.subarray(this.frameOffset + 24, this.frameOffset + 24 + this.payloadLength);
  }
}

export interface HandConsumer {
  move(move: HandMove): void;
  reject(room: number, player: number, seq: number, reason: number): void;
}

export interface HandOptions {
  maxPayload?: number;
  /** Membership slots to preallocate (grown as needed). */
  slots?: number;
  consumer: HandConsumer;
}

export interface HandStreamResult {
  consumed: number;
  accepted: number;
  rejected: number;
  backpressure: boolean;
  malformed: boolean;
}

export type HashName = 'crypto.hash' | 'createHash' | 'js-sha256' | 'createHmac' | 'crypto.hash-hmac' | 'js-hmac';

export interface HashCandidate {
  name: HashName;
  what: string;
  /** Median ns per verify (view + hash + constant-time compare), over `trials` trials. */
  nsPerVerify: number;
  trialsNs: number[];
}

export interface HashChoice {
  auth: 'sha256' | 'hmac-sha256';
  chosen: HashName;
  signedBytes: number;
  itersPerTrial: number;
  candidates: HashCandidate[];
}

interface Room {
  hmac: number;
  /** player → membership slot. */
  members: Map<number, number>;
}

type Verify = (src: Uint8Array, at: number, n: number, slot: number) => boolean;

const WHAT: Record<HashName, string> = {
  'crypto.hash': "crypto.hash('sha256', view, 'buffer') + constant-time compare",
  createHash: "createHash('sha256').update(view).digest() + constant-time compare",
  'js-sha256': 'zero-allocation JS SHA-256 (bench/hand/sha256.ts), compared word by word',
  createHmac: "createHmac('sha256', KeyObject).update(view).digest() + constant-time compare",
  'crypto.hash-hmac': 'HMAC from two crypto.hash calls over a reused buffer (padded key blocks precomputed) + constant-time compare',
  'js-hmac': 'zero-allocation JS HMAC-SHA256 from precomputed midstates (bench/hand/sha256.ts)',
};

/** 0 when `d[0..32]` equals `src[at..at+32]`, in constant time. */
function diff32(d: Uint8Array, src: Uint8Array, at: number): number {
  let x = 0;
  for (let k = 0; k < 32; k++) x |= d[k]! ^ src[at + k]!;
  return x;
}

export class HandPipeline {
  readonly #consumer: HandConsumer;
  readonly #maxPayload: number;
  readonly #rooms = new Map<number, Room>();
  readonly #move = new HandMove();
  #slots = 0;
  #cap: number;
  /** Replay windows by slot: highest accepted seq, and 128 bits (4 words) of seen seqs below it. */
  #top: Uint32Array;
  #bits: Int32Array;
  /** HMAC key material by slot, in the form each hash wants. */
  #mid: Int32Array;
  #keyObjects: (KeyObject | null)[] = [];
  #padded: Uint8Array;
  /** Reused buffers of the two-crypto.hash HMAC: `key ⊕ ipad ‖ message`, `key ⊕ opad ‖ inner digest`. */
  #inner = Buffer.alloc(64 + 24 + 65_535);
  #outer = Buffer.alloc(64 + 32);
  #verifySha: Verify;
  #verifyHmac: Verify;
  hashChoice: HashChoice | null = null;

  accepted = 0;
  delivered = 0;
  rejected = 0;
  syncRejected = 0;
  readonly byReason = new Float64Array(REJECT_REASONS.length);

  constructor(options: HandOptions) {
    this.#consumer = options.consumer;
    this.#maxPayload = options.maxPayload ?? 1024;
    this.#cap = Math.max(16, options.slots ?? 1024);
    this.#top = new Uint32Array(this.#cap);
    this.#bits = new Int32Array(this.#cap * 4);
    this.#mid = new Int32Array(this.#cap * MIDSTATE_WORDS);
    this.#padded = new Uint8Array(this.#cap * 128);
    this.#verifySha = this.#verifier('js-sha256');
    this.#verifyHmac = this.#verifier('js-hmac');
  }

  openRoom(room: number, hmac: boolean): void {
    this.#rooms.set(room, { hmac: hmac ? 1 : 0, members: new Map() });
  }

  /** Joins `player` to `room` (a new replay window); `key` for HMAC rooms. */
  join(room: number, player: number, key: Uint8Array | null): void {
    const r = this.#rooms.get(room);
    if (r === undefined) throw new RangeError(`room ${room} is not open`);
    let slot = r.members.get(player);
    if (slot === undefined) {
      slot = this.#slots++;
      if (slot >= this.#cap) this.#grow();
      r.members.set(player, slot);
      this.#top[slot] = 0;
      this.#bits.fill(0, slot * 4, slot * 4 + 4);
    }
    this.#keyObjects[slot] = key === null ? null : createSecretKey(key);
    if (key !== null) {
      hmacMidstates(key, this.#mid, slot * MIDSTATE_WORDS);
      const block = new Uint8Array(64);
      block.set(key.length > 64 ? createHash('sha256').update(key).digest() : key);
      for (let i = 0; i < 64; i++) {
        this.#padded[slot * 128 + i] = block[i]! ^ 0x36;
        this.#padded[slot * 128 + 64 + i] = block[i]! ^ 0x5c;
      }
      block.fill(0);
    }
  }

  #grow(): void {
    const cap = this.#cap * 2;
    const top = new Uint32Array(cap);
    top.set(this.#top);
    const bits = new Int32Array(cap * 4);
    bits.set(this.#bits);
    const mid = new Int32Array(cap * MIDSTATE_WORDS);
    mid.set(this.#mid);
    const padded = new Uint8Array(cap * 128);
    padded.set(this.#padded);
    this.#cap = cap;
    this.#top = top;
    this.#bits = bits;
    this.#mid = mid;
    this.#padded = padded;
  }

  #verifier(name: HashName): Verify {
    switch (name) {
      case 'crypto.hash':
        return (src, at, n) => diff32(hash('sha256', src.subarray(at, at + n), 'buffer') as unknown as Buffer, src, at + n) === 0;
      case 'createHash':
        return (src, at, n) => diff32(createHash('sha256').update(src.subarray(at, at + n)).digest(), src, at + n) === 0;
      case 'js-sha256':
        return (src, at, n) => verifySha256(src, at, n);
      case 'createHmac':
        return (src, at, n, slot) => {
          const key = this.#keyObjects[slot];
          return key !== null && key !== undefined && diff32(createHmac('sha256', key).update(src.subarray(at, at + n)).digest(), src, at + n) === 0;
        };
      case 'crypto.hash-hmac':
        return (src, at, n, slot) => {
          const inner = this.#inner;
          const outer = this.#outer;
          const padded = this.#padded;
          const p = slot * 128;
          for (let i = 0; i < 64; i++) inner[i] = padded[p + i]!;
          for (let i = 0; i < n; i++) inner[64 + i] = src[at + i]!;
          const d = hash('sha256', inner.subarray(0, 64 + n), 'buffer') as unknown as Buffer;
          for (let i = 0; i < 64; i++) outer[i] = padded[p + 64 + i]!;
          for (let i = 0; i < 32; i++) outer[64 + i] = d[i]!;
          return diff32(hash('sha256', outer, 'buffer') as unknown as Buffer, src, at + n) === 0;
        };
      case 'js-hmac':
        return (src, at, n, slot) => verifyHmac(this.#mid, slot * MIDSTATE_WORDS, src, at, n);
    }
  }

  /**
   * Self-tests every candidate hash against node:crypto's reference, times each as the
   * pipeline calls it over the frames in `sample` (whole frames of joined players, back to
   * back), and keeps the fastest. Call after the joins.
   */
  calibrate(sample: Uint8Array, hmac: boolean, options: { trials?: number; iters?: number } = {}): HashChoice {
    const names: HashName[] = hmac ? ['createHmac', 'crypto.hash-hmac', 'js-hmac'] : ['crypto.hash', 'createHash', 'js-sha256'];
    const verifiers = names.map((n) => this.#verifier(n));
    // Frame offsets, signed lengths and slots of the sample.
    const at: number[] = [];
    const len: number[] = [];
    const slots: number[] = [];
    for (let p = 0; sample.length - p >= 24; ) {
      const n = 24 + (sample[p + 22]! | (sample[p + 23]! << 8));
      if (sample.length - p < n + 32) break;
      const room = (sample[p + 4]! | (sample[p + 5]! << 8) | (sample[p + 6]! << 16) | (sample[p + 7]! << 24)) >>> 0;
      const player = (sample[p + 8]! | (sample[p + 9]! << 8) | (sample[p + 10]! << 16) | (sample[p + 11]! << 24)) >>> 0;
      const slot = this.#rooms.get(room)?.members.get(player);
      if (slot !== undefined) {
        at.push(p);
        len.push(n);
        slots.push(slot);
      }
      p += n + 32;
    }
    if (at.length === 0) throw new Error('calibrate: the sample holds no frame of a joined player');
    // Self-test: every candidate agrees with node:crypto on every sample frame, on a frame
    // with a flipped tag bit, and (SHA-256) on random messages of every length across the
    // block boundaries.
    const scratch = Buffer.alloc(200 + 32);
    for (let i = 0; i < at.length; i++) {
      const want = this.#reference(sample, at[i]!, len[i]!, slots[i]!, hmac);
      for (let v = 0; v < verifiers.length; v++) {
        if (verifiers[v]!(sample, at[i]!, len[i]!, slots[i]!) !== want) throw new Error(`calibrate: ${names[v]} disagrees with node:crypto on a frame of the load`);
      }
    }
    for (let n = 0; n <= 200; n++) {
      randomBytes(n).copy(scratch, 0);
      const slot = slots[n % slots.length]!;
      const tag = this.#referenceDigest(scratch.subarray(0, n), slot, hmac);
      tag.copy(scratch, n);
      for (let v = 0; v < verifiers.length; v++) {
        if (!verifiers[v]!(scratch, 0, n, slot)) throw new Error(`calibrate: ${names[v]} rejects a valid tag (message of ${n} bytes)`);
        scratch[n + (n % 32)]! ^= 1;
        if (verifiers[v]!(scratch, 0, n, slot)) throw new Error(`calibrate: ${names[v]} accepts a wrong tag (message of ${n} bytes)`);
        scratch[n + (n % 32)]! ^= 1;
      }
    }
    // Timing: round-robin trials (so a noisy moment hits every candidate alike), after one warm-up trial each.
    const trials = options.trials ?? 5;
    const iters = options.iters ?? 20_000;
    const count = at.length;
    const trialsNs: number[][] = names.map(() => []);
    let sink = 0;
    for (let t = 0; t <= trials; t++) {
      for (let v = 0; v < verifiers.length; v++) {
        const f = verifiers[v]!;
        const t0 = performance.now();
        for (let i = 0, j = 0; i < iters; i++, j = j + 1 === count ? 0 : j + 1) if (f(sample, at[j]!, len[j]!, slots[j]!)) sink++;
        const ns = ((performance.now() - t0) * 1e6) / iters;
        if (t > 0) trialsNs[v]!.push(ns);
      }
    }
    if (sink < 0) throw new Error('unreachable');
    const median = (xs: number[]): number => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
    };
    const candidates: HashCandidate[] = names.map((name, v) => ({ name, what: WHAT[name], nsPerVerify: median(trialsNs[v]!), trialsNs: trialsNs[v]! }));
    const best = candidates.reduce((a, b) => (b.nsPerVerify < a.nsPerVerify ? b : a));
    const verify = this.#verifier(best.name);
    if (hmac) this.#verifyHmac = verify;
    else this.#verifySha = verify;
    this.hashChoice = { auth: hmac ? 'hmac-sha256' : 'sha256', chosen: best.name, signedBytes: median(len), itersPerTrial: iters, candidates };
    return this.hashChoice;
  }

  #referenceDigest(msg: Uint8Array, slot: number, hmac: boolean): Buffer {
    if (!hmac) return createHash('sha256').update(msg).digest();
    const key = this.#keyObjects[slot];
    if (key === null || key === undefined) throw new Error(`calibrate: slot ${slot} has no key`);
    return createHmac('sha256', key).update(msg).digest();
  }

  #reference(src: Uint8Array, at: number, n: number, slot: number, hmac: boolean): boolean {
    return diff32(this.#referenceDigest(src.subarray(at, at + n), slot, hmac), src, at + n) === 0;
  }

  /**
   * Back-to-back frames, as `Dispatcher.dispatchStream` takes them (same stop rules: a
   * partial frame stops, a bad header stops with `malformed`). Every complete frame is
   * validated and delivered or rejected before this returns; nothing is ever refused for
   * capacity, so `backpressure` is always false.
   */
  dispatchStream(chunk: Uint8Array): HandStreamResult {
    const end = chunk.length;
    const consumer = this.#consumer;
    const move = this.#move;
    const rooms = this.#rooms;
    const top = this.#top;
    const bits = this.#bits;
    const maxPayload = this.#maxPayload;
    const verifySha = this.#verifySha;
    const verifyHmac = this.#verifyHmac;
    const byReason = this.byReason;
    move.bytes = chunk;
    let at = 0;
    let accepted = 0;
    let delivered = 0;
    let rejected = 0;
    let syncRejected = 0;
    let malformed = false;
    while (end - at >= 24) {
      const flags = chunk[at + 3]!;
      if (chunk[at] !== 0x4d || chunk[at + 1] !== 0x56 || chunk[at + 2] !== 1 || (flags & ~1) !== 0) {
        // Not consumed: counted once as a Malformed verdict, not in the returned `rejected`
        // (as Dispatcher.dispatchStream); the stream cannot be re-synchronised.
        malformed = true;
        this.syncRejected++;
        byReason[MALFORMED]!++;
        break;
      }
      const len = chunk[at + 22]! | (chunk[at + 23]! << 8);
      const frameLen = 56 + len;
      if (end - at < frameLen) break;
      const frame = at;
      at += frameLen;
      if (len > maxPayload) {
        syncRejected++;
        byReason[OVERSIZE]!++;
        continue;
      }
      const seq = (chunk[frame + 12]! | (chunk[frame + 13]! << 8) | (chunk[frame + 14]! << 16) | (chunk[frame + 15]! << 24)) >>> 0;
      if (seq === 0) {
        syncRejected++;
        byReason[MALFORMED]!++;
        continue;
      }
      const roomId = (chunk[frame + 4]! | (chunk[frame + 5]! << 8) | (chunk[frame + 6]! << 16) | (chunk[frame + 7]! << 24)) >>> 0;
      const room = rooms.get(roomId);
      if (room === undefined) {
        syncRejected++;
        byReason[UNKNOWN_ROOM]!++;
        continue;
      }
      const hmac = flags & 1;
      if (hmac !== room.hmac) {
        syncRejected++;
        byReason[AUTH_MISMATCH]!++;
        continue;
      }
      const player = (chunk[frame + 8]! | (chunk[frame + 9]! << 8) | (chunk[frame + 10]! << 16) | (chunk[frame + 11]! << 24)) >>> 0;
      const slot = room.members.get(player);
      if (slot === undefined) {
        syncRejected++;
        byReason[NOT_MEMBER]!++;
        continue;
      }
      accepted++;
      // Tag over bytes 0 .. 24 + len.
      if (!(hmac === 0 ? verifySha(chunk, frame, 24 + len, slot) : verifyHmac(chunk, frame, 24 + len, slot))) {
        rejected++;
        byReason[BAD_TAG]!++;
        consumer.reject(roomId, player, seq, REASON_BAD_TAG);
        continue;
      }
      // Replay window (architecture.md, Validation step 3).
      const t = top[slot]!;
      const w = slot * 4;
      if (seq > t) {
        const shift = seq - t;
        if (shift >= WINDOW_BITS) {
          bits[w] = 1;
          bits[w + 1] = 0;
          bits[w + 2] = 0;
          bits[w + 3] = 0;
        } else {
          let a = bits[w]!;
          let b = bits[w + 1]!;
          let c = bits[w + 2]!;
          let d = bits[w + 3]!;
          let n = shift;
          for (; n >= 32; n -= 32) {
            d = c;
            c = b;
            b = a;
            a = 0;
          }
          if (n > 0) {
            const back = 32 - n;
            d = (d << n) | (c >>> back);
            c = (c << n) | (b >>> back);
            b = (b << n) | (a >>> back);
            a <<= n;
          }
          bits[w] = a | 1;
          bits[w + 1] = b;
          bits[w + 2] = c;
          bits[w + 3] = d;
        }
        top[slot] = seq;
      } else {
        const age = t - seq;
        const word = w + (age >>> 5);
        const mask = 1 << (age & 31);
        if (age >= WINDOW_BITS || (bits[word]! & mask) !== 0) {
          rejected++;
          byReason[REPLAY]!++;
          consumer.reject(roomId, player, seq, REASON_REPLAY);
          continue;
        }
        bits[word] = bits[word]! | mask;
      }
      // Deliver, on the spot.
      move.room = roomId;
      move.player = player;
      move.seq = seq;
      move.tick = (chunk[frame + 16]! | (chunk[frame + 17]! << 8) | (chunk[frame + 18]! << 16) | (chunk[frame + 19]! << 24)) >>> 0;
      move.kind = chunk[frame + 20]! | (chunk[frame + 21]! << 8);
      move.frameOffset = frame;
      move.payloadLength = len;
      consumer.move(move);
      delivered++;
    }
    this.accepted += accepted;
    this.delivered += delivered;
    this.rejected += rejected;
    this.syncRejected += syncRejected;
    return { consumed: at, accepted, rejected: syncRejected, backpressure: false, malformed };
  }

  /** Rejections so far by reason (sync verdicts and validation reasons together). */
  rejections(): Record<RejectReason, number> {
    const out = {} as Record<RejectReason, number>;
    REJECT_REASONS.forEach((r, i) => {
      out[r] = this.byReason[i]!;
    });
    return out;
  }
}
