/**
 * A verification worker of the worker_threads pipeline (see pipeline.ts): takes frames from
 * its input ring, checks session, tag (SHA-256 via `crypto.hash`, or HMAC-SHA256 via
 * `createHmac` with the player's KeyObject; compared in constant time) and the 128-wide
 * replay window, and writes validated frames (copied in runs) and rejection records to its
 * output ring. It spins briefly when the input runs dry, publishes its output, then sleeps
 * in `Atomics.wait` until the main thread bumps `IN_SEQ`.
 */
import { createHmac, createSecretKey, hash, type KeyObject } from 'node:crypto';
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
  constructor(public key: KeyObject | null) {}

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
for (const j of setup.joins) rooms.get(j.room)?.players.set(j.player, new Player(j.key === null ? null : createSecretKey(j.key)));

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
  const bodyEnd = off + 24 + len;
  const body = inBytes.subarray(off, bodyEnd);
  let digest: Buffer;
  if (r.hmac) {
    if (player.key === null) {
      reject(room, playerId, seq, REASON_BAD_TAG);
      return;
    }
    digest = createHmac('sha256', player.key).update(body).digest();
  } else {
    digest = hash('sha256', body, 'buffer') as unknown as Buffer;
  }
  let diff = 0;
  for (let k = 0; k < 32; k++) diff |= digest[k]! ^ inBytes[bodyEnd + k]!;
  if (diff !== 0) {
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
    };
    parentPort!.postMessage(report);
  }, 20);
});
parentPort!.postMessage('ready');
