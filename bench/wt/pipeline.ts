/**
 * "Node + worker_threads": the pipeline a Node.js expert would build instead of a native
 * addon, and the benchmark's middle row. The main thread keeps the O(1) synchronous checks
 * (header, size, room, auth mode) and copies accepted frames into a per-worker input ring
 * (a SharedArrayBuffer; runs of consecutive frames for one worker in one `set`), wakes the
 * worker with `Atomics.notify` only when it sleeps, and answers backpressure when the ring
 * is full. Workers verify (node:crypto), keep the replay windows of their rooms
 * (`room % workers`) and return validated frames through an output ring; the main thread
 * waits for them with `Atomics.waitAsync` (no message per batch) and hands each frame to
 * the consumer in order. Per room, moves arrive in dispatch order; every accepted move is
 * delivered or rejected exactly once.
 *
 * The consumer gets mixed-room runs of frames rather than one batch per room: cheaper for
 * JavaScript than the native engine's per-room `MoveBatch` objects when rooms are many and
 * small — an advantage this row keeps.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { Histogram } from '../lib/hist';
import {
  CONTROL_INTS,
  FRAME_MAGIC,
  IN_HEAD,
  IN_SEQ,
  IN_SLEEP,
  IN_TAIL,
  OUT_ARMED,
  OUT_HEAD,
  OUT_SEQ,
  OUT_TAIL,
  REJECT_BYTES,
  REJECT_MAGIC,
  STOP,
  WINDOW,
  type WorkerReport,
  type WorkerSetup,
} from './layout';

export interface WtConsumer {
  /** Called once before each run of deliveries (read the clock here). */
  segment(): void;
  /** A validated frame at `offset` of `bytes` (valid during the call). */
  move(bytes: Uint8Array, offset: number): void;
  reject(room: number, player: number, seq: number, reason: number): void;
}

export interface WtOptions {
  workers?: number;
  /** Bytes of each input ring (power of two); 8 MiB like the native arena. */
  ringBytes?: number;
  outRingBytes?: number;
  maxPayload?: number;
  /** Signed bytes (header and payload) of the load's frames: the workers time their hash candidates on this size. Default 88 (a 64-byte payload). */
  signedBytes?: number;
  consumer: WtConsumer;
}

export interface WtStreamResult {
  consumed: number;
  accepted: number;
  rejected: number;
  backpressure: boolean;
  malformed: boolean;
}

class Lane {
  readonly control = new SharedArrayBuffer(CONTROL_INTS * 4);
  readonly ctl = new Int32Array(this.control);
  readonly input: SharedArrayBuffer;
  readonly inBytes: Uint8Array;
  readonly output: SharedArrayBuffer;
  readonly outBytes: Uint8Array;
  readonly outView: DataView;
  head = 0;
  published = 0;
  tailCache = 0;
  outTail = 0;
  worker!: Worker;
  report: Promise<WorkerReport> | undefined;

  constructor(ringBytes: number, outBytes: number) {
    this.input = new SharedArrayBuffer(ringBytes);
    this.inBytes = new Uint8Array(this.input);
    this.output = new SharedArrayBuffer(outBytes);
    this.outBytes = new Uint8Array(this.output);
    this.outView = new DataView(this.output);
  }

  /** Reserves `bytes` in the input ring; the offset, or -1 when full. */
  reserve(bytes: number): number {
    const cap = this.inBytes.length;
    const off = this.head & (cap - 1);
    const skip = off + bytes > cap ? cap - off : 0;
    if (((this.head - this.tailCache) | 0) + skip + bytes > cap) {
      this.tailCache = Atomics.load(this.ctl, IN_TAIL);
      if (((this.head - this.tailCache) | 0) + skip + bytes > cap) return -1;
    }
    if (skip > 0) {
      this.inBytes[off] = 0;
      this.head = (this.head + skip) | 0;
    }
    const at = this.head & (cap - 1);
    this.head = (this.head + bytes) | 0;
    return at;
  }

  /** Publishes the head; wakes the worker if it sleeps. */
  publish(): void {
    if (this.head === this.published) return;
    this.published = this.head;
    Atomics.store(this.ctl, IN_HEAD, this.head);
    if (Atomics.load(this.ctl, IN_SLEEP) !== 0) {
      Atomics.store(this.ctl, IN_SLEEP, 0);
      Atomics.add(this.ctl, IN_SEQ, 1);
      Atomics.notify(this.ctl, IN_SEQ, 1);
    }
  }
}

interface RoomInfo {
  hmac: number;
  lane: Lane;
}

/** `Atomics.waitAsync` (ES2024; in Node.js since 16), typed here for the ES2022 lib. */
type WaitAsync = (typedArray: Int32Array, index: number, value: number) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** One in how many accepted frames times its ring reservation and copy. */
const ALLOC_SAMPLE = 64;

export class WtPipeline {
  readonly workers: number;
  readonly #lanes: Lane[];
  readonly #rooms = new Map<number, RoomInfo>();
  readonly #consumer: WtConsumer;
  readonly #maxPayload: number;
  readonly allocNs = new Histogram();
  dispatched = 0;
  accepted = 0;
  delivered = 0;
  rejected = 0;
  syncRejected = 0;
  backpressure = 0;
  #flushWaiters: (() => void)[] = [];
  #closed = false;
  readonly #signedBytes: number;

  constructor(options: WtOptions) {
    this.workers = options.workers ?? Math.max(1, availableParallelism() - 1);
    const ring = options.ringBytes ?? 8 << 20;
    const out = options.outRingBytes ?? 8 << 20;
    this.#lanes = Array.from({ length: this.workers }, () => new Lane(ring, out));
    this.#consumer = options.consumer;
    this.#maxPayload = options.maxPayload ?? 1024;
    this.#signedBytes = options.signedBytes ?? 88;
  }

  /** Starts the workers with their rooms and players (keys for HMAC rooms). */
  async start(rooms: { room: number; hmac: boolean }[], joins: { room: number; player: number; key: Uint8Array | null }[]): Promise<void> {
    for (const r of rooms) this.#rooms.set(r.room, { hmac: r.hmac ? 1 : 0, lane: this.#lanes[r.room % this.workers]! });
    await Promise.all(
      this.#lanes.map(
        (lane, i) =>
          new Promise<void>((resolve, reject) => {
            const setup: WorkerSetup = {
              control: lane.control,
              input: lane.input,
              output: lane.output,
              rooms: rooms.filter((r) => r.room % this.workers === i),
              joins: joins.filter((j) => j.room % this.workers === i),
              signedBytes: this.#signedBytes,
            };
            lane.worker = new Worker(join(__dirname, 'worker.js'), { workerData: setup });
            lane.worker.once('error', reject);
            lane.worker.once('message', () => {
              lane.report = new Promise<WorkerReport>((done) => lane.worker.once('message', (m: WorkerReport) => done(m)));
              lane.worker.postMessage('start');
              resolve();
            });
          }),
      ),
    );
    for (const lane of this.#lanes) this.#arm(lane);
  }

  /** Back-to-back frames, as `Dispatcher.dispatchStream` takes them. */
  dispatchStream(chunk: Uint8Array): WtStreamResult {
    const end = chunk.length;
    let at = 0;
    let accepted = 0;
    let rejected = 0;
    let backpressure = false;
    let malformed = false;
    // The pending run: frames contiguous in `chunk` and in one lane's ring.
    let runLane: Lane | null = null;
    let runSrc = 0;
    let runDst = 0;
    let runLen = 0;
    const touched = new Set<Lane>();
    while (end - at >= 24) {
      if (chunk[at] !== 0x4d || chunk[at + 1] !== 0x56 || chunk[at + 2] !== 1 || (chunk[at + 3]! & ~1) !== 0) {
        malformed = true;
        this.dispatched++;
        this.syncRejected++;
        break;
      }
      const len = chunk[at + 22]! | (chunk[at + 23]! << 8);
      const frameLen = 56 + len;
      if (end - at < frameLen) break;
      this.dispatched++;
      const seqZero = (chunk[at + 12]! | chunk[at + 13]! | chunk[at + 14]! | chunk[at + 15]!) === 0;
      const room = (chunk[at + 4]! | (chunk[at + 5]! << 8) | (chunk[at + 6]! << 16) | (chunk[at + 7]! << 24)) >>> 0;
      const info = this.#rooms.get(room);
      if (len > this.#maxPayload || seqZero || info === undefined || (chunk[at + 3]! & 1) !== info.hmac) {
        rejected++;
        this.syncRejected++;
        at += frameLen;
        continue;
      }
      const lane = info.lane;
      const sample = (this.accepted + accepted) % ALLOC_SAMPLE === 0;
      if (sample && runLen > 0) {
        // The sampled frame is copied on its own, so the sample covers its reservation and copy.
        runLane!.inBytes.set(chunk.subarray(runSrc, runSrc + runLen), runDst);
        runLen = 0;
      }
      const t0 = sample ? performance.now() : 0;
      const dst = lane.reserve(frameLen);
      if (dst < 0) {
        this.backpressure++;
        backpressure = true;
        break;
      }
      if (sample) {
        lane.inBytes.set(chunk.subarray(at, at + frameLen), dst);
        this.allocNs.record((performance.now() - t0) * 1e6);
      } else if (runLen > 0 && runLane === lane && runSrc + runLen === at && runDst + runLen === dst) {
        runLen += frameLen;
      } else {
        if (runLen > 0) runLane!.inBytes.set(chunk.subarray(runSrc, runSrc + runLen), runDst);
        runLane = lane;
        runSrc = at;
        runDst = dst;
        runLen = frameLen;
      }
      touched.add(lane);
      accepted++;
      at += frameLen;
    }
    if (runLen > 0) runLane!.inBytes.set(chunk.subarray(runSrc, runSrc + runLen), runDst);
    for (const lane of touched) lane.publish();
    this.accepted += accepted;
    return { consumed: at, accepted, rejected, backpressure, malformed };
  }

  /** Resolves once every accepted move is delivered or rejected. */
  flush(): Promise<void> {
    if (this.delivered + this.rejected >= this.accepted) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  /** Marks the start (1) and end (2) of the measured window for the workers' GC figures. */
  setWindow(phase: 1 | 2): void {
    for (const lane of this.#lanes) Atomics.store(lane.ctl, WINDOW, phase);
  }

  /** Stops the workers; their GC figures for the window. */
  async close(): Promise<WorkerReport[]> {
    this.#closed = true;
    for (const lane of this.#lanes) {
      Atomics.store(lane.ctl, STOP, 1);
      Atomics.add(lane.ctl, IN_SEQ, 1);
      Atomics.notify(lane.ctl, IN_SEQ);
    }
    const reports = await Promise.all(this.#lanes.map((l) => l.report!));
    await Promise.all(this.#lanes.map((l) => l.worker.terminate()));
    return reports;
  }

  /** Consumes the lane's output, then waits (asynchronously) for the next. */
  #arm(lane: Lane): void {
    for (;;) {
      this.#consume(lane);
      if (this.#closed) return;
      const seen = Atomics.load(lane.ctl, OUT_SEQ);
      Atomics.store(lane.ctl, OUT_ARMED, 1);
      if (Atomics.load(lane.ctl, OUT_HEAD) !== lane.outTail) {
        Atomics.store(lane.ctl, OUT_ARMED, 0);
        continue;
      }
      const w = waitAsync(lane.ctl, OUT_SEQ, seen);
      if (w.async) {
        void w.value.then(() => this.#arm(lane));
        return;
      }
    }
  }

  #consume(lane: Lane): void {
    const head = Atomics.load(lane.ctl, OUT_HEAD);
    let tail = lane.outTail;
    if (tail === head) return;
    const out = lane.outBytes;
    const cap = out.length;
    const consumer = this.#consumer;
    consumer.segment();
    while (tail !== head) {
      const off = tail & (cap - 1);
      const b = out[off];
      if (b === FRAME_MAGIC) {
        const frameLen = 56 + (out[off + 22]! | (out[off + 23]! << 8));
        consumer.move(out, off);
        this.delivered++;
        tail = (tail + frameLen) | 0;
      } else if (b === REJECT_MAGIC) {
        const v = lane.outView;
        consumer.reject(v.getUint32(off + 4, true), v.getUint32(off + 8, true), v.getUint32(off + 12, true), out[off + 1]!);
        this.rejected++;
        tail = (tail + REJECT_BYTES) | 0;
      } else {
        tail = (tail + (cap - off)) | 0;
      }
    }
    lane.outTail = tail;
    Atomics.store(lane.ctl, OUT_TAIL, tail);
    Atomics.notify(lane.ctl, OUT_TAIL);
    if (this.#flushWaiters.length > 0 && this.delivered + this.rejected >= this.accepted) {
      for (const w of this.#flushWaiters.splice(0)) w();
    }
  }
}
