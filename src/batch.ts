/**
 * `MoveBatch`: a window of room memory holding validated frames back to back.
 * JavaScript reads the frames in place; iteration reuses one view object and
 * allocates nothing per move (the payload view is created only when read).
 */
import { HEADER_BYTES, TAG_BYTES } from './constants';
import type { RawBatch, RawRejection } from './engine';
import { ErrorCode, stateError } from './errors';
import type { MoveBatch as MoveBatchType, MoveView, Rejection } from './types';

/**
 * `util.inspect` hook (a registered symbol: no Node.js import, so this module stays
 * browser-safe). Batches and views print their fields, never the memory behind them: that
 * holds payloads (and, around the batch's window, other moves of the room).
 */
const INSPECT = Symbol.for('nodejs.util.inspect.custom');
type Inspect = (value: unknown, options?: unknown) => string;

function inspected(name: string, fields: object, depth: number, options: unknown, inspect: Inspect | undefined): string {
  if (depth < 0) return `[${name}]`;
  // `fields` stands for the object itself (same level): the remaining depth carries over.
  return `${name} ${typeof inspect === 'function' ? inspect(fields, options) : JSON.stringify(fields)}`;
}

/** The view handed out by iteration; its fields move from frame to frame. */
class FrameView implements MoveView {
  frameOffset = 0;
  frameLength = 0;
  // Truly private: JSON.stringify / Object.keys of a view never reach the batch memory.
  readonly #bytes: Uint8Array;
  readonly #dv: DataView;
  constructor(bytes: Uint8Array, dv: DataView) {
    this.#bytes = bytes;
    this.#dv = dv;
  }

  get room(): number {
    return this.#dv.getUint32(this.frameOffset + 4, true);
  }
  get player(): number {
    return this.#dv.getUint32(this.frameOffset + 8, true);
  }
  get seq(): number {
    return this.#dv.getUint32(this.frameOffset + 12, true);
  }
  get tick(): number {
    return this.#dv.getUint32(this.frameOffset + 16, true);
  }
  get kind(): number {
    return this.#dv.getUint16(this.frameOffset + 20, true);
  }
  get payloadOffset(): number {
    return this.frameOffset + HEADER_BYTES;
  }
  get payloadLength(): number {
    return this.frameLength - HEADER_BYTES - TAG_BYTES;
  }
  get payload(): Uint8Array {
    const start = this.frameOffset + HEADER_BYTES;
    return this.#bytes.subarray(start, this.frameOffset + this.frameLength - TAG_BYTES);
  }

  [INSPECT](depth: number, options: unknown, inspect?: Inspect): string {
    const fields = { room: this.room, player: this.player, seq: this.seq, tick: this.tick, kind: this.kind, payloadLength: this.frameLength - HEADER_BYTES - TAG_BYTES, frameOffset: this.frameOffset, frameLength: this.frameLength };
    return inspected('MoveView', fields, depth, options, inspect);
  }
}

/** Called when a batch is released (push rooms hand the half back to the worker). */
export type ReleaseHook = () => void;

/** Set by `MoveBatch`'s static block (it alone reaches the private fields). */
let markStale: (batch: MoveBatch) => void = () => undefined;

export class MoveBatch implements MoveBatchType {
  static {
    markStale = (batch) => {
      batch.#released = true;
      batch.#onRelease = undefined;
    };
  }

  readonly room: number;
  readonly count: number;
  readonly buffer: ArrayBuffer;
  readonly offset: number;
  readonly length: number;
  readonly rejections: readonly Rejection[];
  #released = false;
  #onRelease: ReleaseHook | undefined;

  constructor(raw: RawBatch, onRelease?: ReleaseHook) {
    this.room = raw.room;
    this.count = raw.count;
    this.buffer = raw.buffer;
    this.offset = raw.offset;
    this.length = raw.length;
    this.rejections = raw.rejections as readonly RawRejection[] as readonly Rejection[];
    this.#onRelease = onRelease;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Frees the batch's memory for reuse. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const hook = this.#onRelease;
    this.#onRelease = undefined;
    hook?.();
  }

  /** A batch with the same moves and rejections in memory of its own; it never needs releasing. */
  copy(): MoveBatch {
    this.#check();
    const buffer = this.buffer.slice(this.offset, this.offset + this.length);
    return new MoveBatch({
      room: this.room,
      buffer,
      offset: 0,
      length: this.length,
      count: this.count,
      rejections: this.rejections.map((r) => ({ ...r })),
    });
  }

  /** The frames as one `Uint8Array` view (no copy). */
  bytes(): Uint8Array {
    this.#check();
    return new Uint8Array(this.buffer, this.offset, this.length);
  }

  /**
   * Iterates the moves in dispatch order. One view object and one iterator result are
   * reused for every step, so iteration allocates nothing per move.
   */
  [Symbol.iterator](): Iterator<MoveView> {
    this.#check();
    return new FrameIterator(this, () => this.#released);
  }

  [INSPECT](depth: number, options: unknown, inspect?: Inspect): string {
    const fields = { room: this.room, count: this.count, offset: this.offset, length: this.length, released: this.#released, rejections: this.rejections };
    return inspected('MoveBatch', fields, depth, options, inspect);
  }

  #check(): void {
    if (this.#released) {
      throw stateError(ErrorCode.BatchReleased, 'this batch was released (or the room was drained again); call copy() to keep moves longer', { room: this.room });
    }
  }
}

/** Iterator that reuses its result object (no allocation per `next()`). */
class FrameIterator implements Iterator<MoveView> {
  readonly #bytes: Uint8Array;
  readonly #view: FrameView;
  readonly #result: IteratorYieldResult<MoveView>;
  readonly #end: number;
  readonly #isReleased: () => boolean;
  readonly #batch: MoveBatch;
  #at: number;

  constructor(batch: MoveBatch, isReleased: () => boolean) {
    this.#batch = batch;
    this.#bytes = new Uint8Array(batch.buffer);
    this.#view = new FrameView(this.#bytes, new DataView(batch.buffer));
    this.#result = { value: this.#view, done: false };
    this.#at = batch.offset;
    this.#end = batch.offset + batch.length;
    this.#isReleased = isReleased;
  }

  next(): IteratorResult<MoveView> {
    if (this.#at >= this.#end) return { value: undefined, done: true };
    if (this.#isReleased()) {
      throw stateError(ErrorCode.BatchReleased, 'this batch was released during iteration', { room: this.#batch.room });
    }
    const at = this.#at;
    const len = this.#bytes[at + 22]! | (this.#bytes[at + 23]! << 8);
    this.#view.frameOffset = at;
    this.#view.frameLength = HEADER_BYTES + len + TAG_BYTES;
    this.#at = at + this.#view.frameLength;
    return this.#result;
  }

  [Symbol.iterator](): Iterator<MoveView> {
    return this;
  }
}

/**
 * @internal The room's next drain reused the batch's memory: the batch reads as released,
 * without running its release hook. Not part of the public surface.
 */
export function invalidate(batch: MoveBatch): void {
  markStale(batch);
}
