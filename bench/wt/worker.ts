/**
 * A verification worker of the worker_threads pipeline (see pipeline.ts): takes frames from
 * its input ring, checks session, tag and the 128-wide replay window, and writes validated
 * frames (copied in runs) and rejection records to its output ring. It spins briefly when
 * the input runs dry, publishes its output, then sleeps in `Atomics.wait` until the main
 * thread bumps `IN_SEQ`.
 *
 * The tag check is the fastest of node:crypto (`crypto.hash`, or `createHmac` with the
 * player's KeyObject; the digest compared in constant time) and the zero-allocation JS
 * SHA-256 / HMAC of ../hand/sha256.ts (the hand-written row's), chosen at startup by timing
 * both in this worker after a self-test that they agree, as the hand-written row chooses
 * its own: the baseline uses the best hash it has, never a handicapped one.
 */
import { createHmac, createSecretKey, hash, randomBytes, type KeyObject } from 'node:crypto';
import { hmacMidstates, MIDSTATE_WORDS, verifyHmac, verifySha256 } from '../hand/sha256';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import {
  FRAME_MAGIC,
  IN_HEAD,
  IN_SEQ,
  IN_SLEEP,
  IN_TAIL,
  OUT_ARMED,
  OUT_HEAD,
  OUT_SEQ,
  OUT_TAIL,
  REASON_BAD_TAG,
  REASON_REPLAY,
  REASON_UNKNOWN_PLAYER,
  REJECT_BYTES,
  REJECT_MAGIC,
  STOP,
  WINDOW,
  type WorkerReport,
  type WorkerSetup,
} from './layout';

/** Moves per turn before the output is published and the input tail advanced. */
const TURN = 256;
/** Empty polls before sleeping (a few microseconds, like the native worker's spin). */
const SPINS = 2000;
const WINDOW_BITS = 128;

class Player {
  top = 0;
  w0 = 0;
  w1 = 0;
  w2 = 0;
  w3 = 0;
  /** HMAC midstates of the key for the JS HMAC (`MIDSTATE_WORDS` words), when it has one. */
  readonly mid: Int32Array | null;
  constructor(
    public key: KeyObject | null,
    raw: Uint8Array | null,
  ) {
    this.mid = raw === null ? null : new Int32Array(MIDSTATE_WORDS);
    if (raw !== null) hmacMidstates(raw, this.mid!, 0);
  }

  accept(seq: number): boolean {
    if (seq > this.top) {
      this.shift(seq - this.top);
      this.w0 |= 1;
      this.top = seq;
      return true;
    }
    const age = this.top - seq;
    if (age >= WINDOW_BITS) return false;
    const mask = 1 << (age & 31);
    switch (age >>> 5) {
      case 0:
        if ((this.w0 & mask) !== 0) return false;
        this.w0 |= mask;
        return true;
      case 1:
        if ((this.w1 & mask) !== 0) return false;
        this.w1 |= mask;
        return true;
      case 2:
        if ((this.w2 & mask) !== 0) return false;
        this.w2 |= mask;
        return true;
      default:
        if ((this.w3 & mask) !== 0) return false;
        this.w3 |= mask;
        return true;
    }
  }

  private shift(n: number): void {
    if (n >= WINDOW_BITS) {
      this.w0 = this.w1 = this.w2 = this.w3 = 0;
      return;
    }
    let a = this.w0;
    let b = this.w1;
    let c = this.w2;
    let d = this.w3;
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
    this.w0 = a;
    this.w1 = b;
    this.w2 = c;
    this.w3 = d;
  }
}

interface Room {
  hmac: boolean;
  players: Map<number, Player>;
}

const setup = workerData as WorkerSetup;
const ctl = new Int32Array(setup.control);
const inBytes = new Uint8Array(setup.input);
const outBytes = new Uint8Array(setup.output);
const outView = new DataView(setup.output);
const inCap = inBytes.length;
const inMask = inCap - 1;
const outCap = outBytes.length;
const outMask = outCap - 1;

const rooms = new Map<number, Room>();
for (const r of setup.rooms) rooms.set(r.room, { hmac: r.hmac, players: new Map() });
for (const j of setup.joins) rooms.get(j.room)?.players.set(j.player, new Player(j.key === null ? null : createSecretKey(j.key), j.key === null ? null : new Uint8Array(j.key)));

/** Whether the tag of the `n` signed bytes at `at` in `src` (the tag follows them) is right. */
function verifyNode(src: Uint8Array, at: number, n: number, player: Player, hmac: boolean): boolean {
  const body = src.subarray(at, at + n);
  const digest = hmac ? createHmac('sha256', player.key!).update(body).digest() : (hash('sha256', body, 'buffer') as unknown as Buffer);
  let diff = 0;
  for (let k = 0; k < 32; k++) diff |= digest[k]! ^ src[at + n + k]!;
  return diff === 0;
}

function verifyJs(src: Uint8Array, at: number, n: number, player: Player, hmac: boolean): boolean {
  return hmac ? verifyHmac(player.mid!, 0, src, at, n) : verifySha256(src, at, n);
}

/**
 * The faster of the two on this machine, for the load's frames: `signed` bytes (header and
 * payload), timed as processFrame calls them, median of 5 rounds; after a self-test.
 */
function calibrate(signed: number, hmac: boolean): typeof verifyJs {
  const key = randomBytes(32);
  const player = new Player(createSecretKey(key), key);
  const frames = 64;
  const buf = new Uint8Array(frames * (signed + 32));
  for (let f = 0; f < frames; f++) {
    const at = f * (signed + 32);
    buf.set(randomBytes(signed), at);
    const body = buf.subarray(at, at + signed);
    buf.set(hmac ? createHmac('sha256', key).update(body).digest() : hash('sha256', body, 'buffer'), at + signed);
  }
  for (const v of [verifyNode, verifyJs]) {
    for (let f = 0; f < frames; f++) if (!v(buf, f * (signed + 32), signed, player, hmac)) throw new Error('wt worker: a hash rejects a valid tag');
    buf[signed]! ^= 1;
    if (v(buf, 0, signed, player, hmac)) throw new Error('wt worker: a hash accepts a wrong tag');
    buf[signed]! ^= 1;
  }
  const time = (v: typeof verifyJs): number => {
    const rounds: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 4000; i++) v(buf, (i % frames) * (signed + 32), signed, player, hmac);
      rounds.push(performance.now() - t0);
    }
    return rounds.sort((a, b) => a - b)[2]!;
  };
  time(verifyNode);
  time(verifyJs);
  return time(verifyJs) <= time(verifyNode) ? verifyJs : verifyNode;
}
const anyHmac = setup.rooms.some((r) => r.hmac);
const verifyTag = calibrate(setup.signedBytes, anyHmac);
const hashName = verifyTag === verifyJs ? (anyHmac ? 'js-hmac' : 'js-sha256') : anyHmac ? 'createHmac' : 'crypto.hash';

// GC of this isolate, kept for the measured window (timestamps on this thread's clock).
let windowStart = Number.POSITIVE_INFINITY;
let windowEnd = Number.POSITIVE_INFINITY;
const gcs: { start: number; duration: number }[] = [];
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ start: e.startTime, duration: e.duration });
});
observer.observe({ entryTypes: ['gc'] });

let tail = 0;
let outHead = 0;
let outPublished = 0;
let outTailCache = 0;
/** A run of validated frames, contiguous in both rings, not yet copied. */
let runSrc = 0;
let runDst = 0;
let runLen = 0;
let moves = 0;
let phase = 0;

function u32(at: number): number {
  return (inBytes[at]! | (inBytes[at + 1]! << 8) | (inBytes[at + 2]! << 16) | (inBytes[at + 3]! << 24)) >>> 0;
}

function flushRun(): void {
  if (runLen === 0) return;
  outBytes.set(inBytes.subarray(runSrc, runSrc + runLen), runDst);
  runLen = 0;
}

function publish(): void {
  flushRun();
  if (outHead === outPublished) return;
  outPublished = outHead;
  Atomics.store(ctl, OUT_HEAD, outHead);
  if (Atomics.load(ctl, OUT_ARMED) === 1) {
    Atomics.store(ctl, OUT_ARMED, 0);
    Atomics.add(ctl, OUT_SEQ, 1);
    Atomics.notify(ctl, OUT_SEQ, 1);
  }
}

/** Reserves `bytes` in the output ring (waiting for the main thread if it is full); the offset. */
function reserveOut(bytes: number): number {
  for (;;) {
    const off = outHead & outMask;
    const skip = off + bytes > outCap ? outCap - off : 0;
    if (((outHead - outTailCache) | 0) + skip + bytes <= outCap) {
      if (skip > 0) {
        flushRun();
        outBytes[off] = 0;
        outHead = (outHead + skip) | 0;
      }
      const at = outHead & outMask;
      outHead = (outHead + bytes) | 0;
      return at;
    }
    outTailCache = Atomics.load(ctl, OUT_TAIL);
    if (((outHead - outTailCache) | 0) + skip + bytes <= outCap) continue;
    // Full: let the main thread see what we have, and wait for it to consume.
    publish();
    Atomics.wait(ctl, OUT_TAIL, outTailCache, 1);
    outTailCache = Atomics.load(ctl, OUT_TAIL);
  }
}

function reject(room: number, player: number, seq: number, reason: number): void {
  flushRun();
  const at = reserveOut(REJECT_BYTES);
  outBytes[at] = REJECT_MAGIC;
  outBytes[at + 1] = reason;
  outView.setUint32(at + 4, room, true);
  outView.setUint32(at + 8, player, true);
  outView.setUint32(at + 12, seq, true);
}

function processFrame(off: number, frameLen: number, len: number): void {
  const room = u32(off + 4);
  const playerId = u32(off + 8);
  const seq = u32(off + 12);
  const r = rooms.get(room);
  const player = r?.players.get(playerId);
  if (r === undefined || player === undefined) {
    reject(room, playerId, seq, REASON_UNKNOWN_PLAYER);
    return;
  }
  if ((r.hmac && player.key === null) || !verifyTag(inBytes, off, 24 + len, player, r.hmac)) {
    reject(room, playerId, seq, REASON_BAD_TAG);
    return;
  }
  if (!player.accept(seq)) {
    reject(room, playerId, seq, REASON_REPLAY);
    return;
  }
  const dst = reserveOut(frameLen);
  if (runLen > 0 && runSrc + runLen === off && runDst + runLen === dst) {
    runLen += frameLen;
  } else {
    flushRun();
    runSrc = off;
    runDst = dst;
    runLen = frameLen;
  }
}

function checkWindow(): void {
  const w = Atomics.load(ctl, WINDOW);
  if (w === phase) return;
  phase = w;
  if (w === 1) windowStart = performance.now();
  else if (w === 2) windowEnd = performance.now();
}

function loop(): void {
  for (;;) {
    checkWindow();
    const head = Atomics.load(ctl, IN_HEAD);
    if (head === tail) {
      publish();
      let spins = 0;
      while (spins < SPINS && Atomics.load(ctl, IN_HEAD) === tail) spins++;
      if (Atomics.load(ctl, IN_HEAD) !== tail) continue;
      if (Atomics.load(ctl, STOP) !== 0) return;
      const seq = Atomics.load(ctl, IN_SEQ);
      Atomics.store(ctl, IN_SLEEP, 1);
      if (Atomics.load(ctl, IN_HEAD) !== tail || Atomics.load(ctl, STOP) !== 0) {
        Atomics.store(ctl, IN_SLEEP, 0);
        continue;
      }
      Atomics.wait(ctl, IN_SEQ, seq);
      continue;
    }
    let n = 0;
    while (tail !== head && n < TURN) {
      const off = tail & inMask;
      if (inBytes[off] !== FRAME_MAGIC) {
        // Skip marker: the next record starts at offset 0.
        flushRun();
        tail = (tail + (inCap - off)) | 0;
        continue;
      }
      const len = inBytes[off + 22]! | (inBytes[off + 23]! << 8);
      const frameLen = 56 + len;
      processFrame(off, frameLen, len);
      tail = (tail + frameLen) | 0;
      n++;
    }
    moves += n;
    // The run's source bytes must be copied before the main thread may overwrite them.
    flushRun();
    Atomics.store(ctl, IN_TAIL, tail);
    if (n === TURN) publish();
  }
}

parentPort!.once('message', () => {
  loop();
  publish();
  // Let the GC observer deliver its entries, then report.
  setTimeout(() => {
    observer.disconnect();
    const inWindow = gcs.filter((g) => g.start >= windowStart && g.start < windowEnd);
    const report: WorkerReport = {
      gcCount: inWindow.length,
      gcTotalMs: inWindow.reduce((a, g) => a + g.duration, 0),
      gcMaxMs: inWindow.reduce((a, g) => Math.max(a, g.duration), 0),
      moves,
      hash: hashName,
    };
    parentPort!.postMessage(report);
  }, 20);
});
parentPort!.postMessage('ready');
