/**
 * Delivery v2: the memory format both engines hand to JavaScript, and the views over it.
 *
 * One delivery is ONE `ArrayBuffer` holding many rooms' moves and rejections. Nobody
 * writes it again once JavaScript has it; releasing it detaches it (byteLength 0: every
 * view over it reads as empty). See docs/architecture.md "Delivery".
 *
 * Layout (all integers little-endian):
 *
 * - header, 8 u32 (32 bytes): `version` (2), `shard` (the push shard, or `PULL_SHARD` for a
 *   drain), `nRooms`, `nMoves`, `nRejections`, `roomsOffset` (multiple of 4),
 *   `rejectionsOffset` (multiple of 4), `stampsOffset` (multiple of 8);
 * - frames from byte 32: each room's validated frames back to back in dispatch order, room
 *   after room in room-table order;
 * - room table at `roomsOffset`: `nRooms` entries of 6 u32 — `room, frameStart` (absolute
 *   byte offset), `frameBytes, count, rejStart` (index into the rejection table), `rejCount`;
 * - rejection table at `rejectionsOffset`: `nRejections` entries of 4 u32 — `room, player,
 *   seq, reason`;
 * - stamps at `stampsOffset`: a u64 per move, internal to the engine (JavaScript ignores them).
 *
 * Iterating a delivery allocates nothing per room or per move: one reused room view, one
 * reused move view, reused iterator results. Rejection arrays are built on first read only.
 * No Node.js imports: this module is browser-safe.
 */
import { FRAME_OVERHEAD, HEADER_BYTES, type Reason } from './constants';
import { ErrorCode, stateError } from './errors';
import type { Delivery as DeliveryType, MoveBatch as MoveBatchType, MoveView, Rejection } from './types';

/** `header[0]`. */
export const DELIVERY_VERSION = 2;
/** Bytes of the header (8 u32); the frames start here. */
export const DELIVERY_HEADER_BYTES = 32;
/** Bytes of a room-table entry (6 u32). */
export const ROOM_ENTRY_BYTES = 24;
/** Bytes of a rejection-table entry (4 u32). */
export const REJECTION_ENTRY_BYTES = 16;
/** Bytes of a move's stamp (u64). */
export const STAMP_BYTES = 8;
/** `header[1]` of a pull delivery (`drain`, `drainAll`): no shard waits for its release. */
export const PULL_SHARD = 0xffff_ffff;

/** Releases a delivery's buffer: detaches it and, for a push delivery, lets its shard deliver again. */
export type DeliveryReleaseHook = (buffer: ArrayBuffer, shard: number) => void;

/** One room's content, as `writeDelivery` copies it. */
export interface DeliverySource {
  readonly id: number;
  /** The room's frames from byte 0 to `fillLen`. */
  readonly bytes: Uint8Array;
  readonly fillLen: number;
  readonly fillCount: number;
  readonly rejections: readonly { readonly room: number; readonly player: number; readonly seq: number; readonly reason: number }[];
}

const EMPTY_BUFFER = new ArrayBuffer(0);
const EMPTY_BYTES = new Uint8Array(EMPTY_BUFFER);
const EMPTY_VIEW = new DataView(EMPTY_BUFFER);
const NO_REJECTIONS: readonly Rejection[] = Object.freeze([]);
/** The one "done" iterator result every iterator here returns (no allocation at the end of a room). */
const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true as const });

function align4(n: number): number {
  return (n + 3) & ~3;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * Detaches `buffer` (byteLength 0 from then on; every view over it reads as empty). No-op on a
 * buffer already detached. `structuredClone` with a transfer list: Node.js 20 has no
 * `ArrayBuffer.prototype.transfer`.
 */
export function detachBuffer(buffer: ArrayBuffer): void {
  // A delivery is never empty (its header alone is 32 bytes): byteLength 0 means detached.
  if (buffer.byteLength === 0) return;
  structuredClone(buffer, { transfer: [buffer] });
}

/**
 * Builds one delivery (the format above) from `rooms[0..nRooms)`: copies each room's frames
 * and rejections into a fresh `ArrayBuffer`. Stamps are left zero.
 */
export function writeDelivery(shard: number, rooms: readonly DeliverySource[], nRooms: number = rooms.length): ArrayBuffer {
  let frameBytes = 0;
  let nMoves = 0;
  let nRejections = 0;
  for (let i = 0; i < nRooms; i++) {
    const r = rooms[i]!;
    frameBytes += r.fillLen;
    nMoves += r.fillCount;
    nRejections += r.rejections.length;
  }
  const roomsOffset = align4(DELIVERY_HEADER_BYTES + frameBytes);
  const rejectionsOffset = roomsOffset + ROOM_ENTRY_BYTES * nRooms;
  const stampsOffset = align8(rejectionsOffset + REJECTION_ENTRY_BYTES * nRejections);
  const buffer = new ArrayBuffer(stampsOffset + STAMP_BYTES * nMoves);
  const u8 = new Uint8Array(buffer);
  const dv = new DataView(buffer);
  dv.setUint32(0, DELIVERY_VERSION, true);
  dv.setUint32(4, shard >>> 0, true);
  dv.setUint32(8, nRooms, true);
  dv.setUint32(12, nMoves, true);
  dv.setUint32(16, nRejections, true);
  dv.setUint32(20, roomsOffset, true);
  dv.setUint32(24, rejectionsOffset, true);
  dv.setUint32(28, stampsOffset, true);
  let at = DELIVERY_HEADER_BYTES;
  let entry = roomsOffset;
  let rej = 0;
  let rejAt = rejectionsOffset;
  for (let i = 0; i < nRooms; i++) {
    const r = rooms[i]!;
    const len = r.fillLen;
    if (len > 0) u8.set(len === r.bytes.length ? r.bytes : r.bytes.subarray(0, len), at);
    const rejections = r.rejections;
    dv.setUint32(entry, r.id >>> 0, true);
    dv.setUint32(entry + 4, at, true);
    dv.setUint32(entry + 8, len, true);
    dv.setUint32(entry + 12, r.fillCount, true);
    dv.setUint32(entry + 16, rej, true);
    dv.setUint32(entry + 20, rejections.length, true);
    for (const x of rejections) {
      dv.setUint32(rejAt, x.room >>> 0, true);
      dv.setUint32(rejAt + 4, x.player >>> 0, true);
      dv.setUint32(rejAt + 8, x.seq >>> 0, true);
      dv.setUint32(rejAt + 12, x.reason >>> 0, true);
      rejAt += REJECTION_ENTRY_BYTES;
    }
    at += len;
    entry += ROOM_ENTRY_BYTES;
    rej += rejections.length;
  }
  return buffer;
}

/**
 * `util.inspect` hook (a registered symbol: no Node.js import). Views print their fields,
 * never the memory behind them (it holds payloads of other moves and rooms).
 */
const INSPECT = Symbol.for('nodejs.util.inspect.custom');
type Inspect = (value: unknown, options?: unknown) => string;

function inspected(name: string, fields: object, depth: number, options: unknown, inspect: Inspect | undefined): string {
  if (depth < 0) return `[${name}]`;
  return `${name} ${typeof inspect === 'function' ? inspect(fields, options) : JSON.stringify(fields)}`;
}

function released(what: string, room?: number): Error {
  return stateError(
    ErrorCode.BatchReleased,
    `this ${what} was released (or replaced by the next drain); its memory is detached. Call copy() on a batch to keep moves longer`,
    room === undefined ? {} : { room },
  );
}

/** A move view's fields, as `toJSON` gives them. */
type MoveFields = Pick<MoveView, 'room' | 'player' | 'seq' | 'tick' | 'kind' | 'payloadOffset' | 'payloadLength' | 'frameOffset' | 'frameLength'>;

/** The reused view of one move (its fields move from frame to frame). */
class MoveCursor implements MoveView {
  frameOffset = 0;
  frameLength = 0;
  // Truly private: JSON.stringify / Object.keys of a view never reach the delivery memory.
  readonly #buffer: ArrayBufferLike;
  /** Where the delivery starts in `#buffer` (read once: a detached view reports 0). */
  readonly #base: number;
  readonly #dv: DataView;
  constructor(bytes: Uint8Array, dv: DataView) {
    this.#buffer = bytes.buffer;
    this.#base = bytes.byteOffset;
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
    return this.frameLength - FRAME_OVERHEAD;
  }
  get payload(): Uint8Array {
    // The constructor, not `subarray`: no species lookup, about twice as fast per view in
    // V8 (bench/micro.ts measures the read). Over a released (detached) delivery both
    // throw the same TypeError.
    return new Uint8Array(this.#buffer, this.#base + this.frameOffset + HEADER_BYTES, this.frameLength - FRAME_OVERHEAD);
  }

  /**
   * The move's fields (never its payload bytes): what `JSON.stringify` and `util.inspect`
   * show. Once the delivery is released only the position is left to show.
   */
  toJSON(): MoveFields | Pick<MoveFields, 'frameOffset' | 'frameLength'> {
    if (this.#buffer.byteLength === 0) return { frameOffset: this.frameOffset, frameLength: this.frameLength };
    return {
      room: this.room,
      player: this.player,
      seq: this.seq,
      tick: this.tick,
      kind: this.kind,
      payloadOffset: this.payloadOffset,
      payloadLength: this.payloadLength,
      frameOffset: this.frameOffset,
      frameLength: this.frameLength,
    };
  }

  [INSPECT](depth: number, options: unknown, inspect?: Inspect): string {
    return inspected('MoveView', this.toJSON(), depth, options, inspect);
  }
}

/** Iterates one room's moves; reused (with its view and result) while no other loop runs it. */
class MoveIterator implements IterableIterator<MoveView> {
  readonly #batch: RoomBatch;
  readonly #bytes: Uint8Array;
  readonly #view: MoveCursor;
  readonly #result: IteratorYieldResult<MoveView>;
  #at = 0;
  #end = 0;
  /** Between `reset` and the end of the loop (exhausted, or `return()` by a `break`). */
  active = false;

  constructor(batch: RoomBatch, bytes: Uint8Array, dv: DataView) {
    this.#batch = batch;
    this.#bytes = bytes;
    this.#view = new MoveCursor(bytes, dv);
    this.#result = { value: this.#view, done: false };
  }

  reset(start: number, end: number): this {
    this.#at = start;
    this.#end = end;
    this.active = true;
    return this;
  }

  next(): IteratorResult<MoveView> {
    if (this.#at >= this.#end) {
      this.active = false;
      return DONE;
    }
    if (this.#batch.released) throw released('batch', this.#batch.room);
    const at = this.#at;
    const length = FRAME_OVERHEAD + (this.#bytes[at + 22]! | (this.#bytes[at + 23]! << 8));
    this.#view.frameOffset = at;
    this.#view.frameLength = length;
    this.#at = at + length;
    return this.#result;
  }

  return(): IteratorResult<MoveView> {
    this.active = false;
    return DONE;
  }

  [Symbol.iterator](): this {
    return this;
  }
}

/** Set by `RoomBatch`'s static block: points a room view at entry `index` of its delivery. */
let loadEntry: (batch: RoomBatch, index: number) => void = () => undefined;

/**
 * One room of a delivery, shaped as a `MoveBatch`. Two kinds:
 * - the reused view handed out by iterating a delivery (its fields move from room to room;
 *   `release()` releases the whole delivery);
 * - a batch of its own (`drain(room)`, `onBatch`, `batches()`, `copy()`), released by itself:
 *   its delivery is released once every batch made from it is.
 */
export class RoomBatch implements MoveBatchType {
  static {
    loadEntry = (batch, index) => batch.#load(index);
  }

  room = 0;
  count = 0;
  offset = 0;
  length = 0;
  readonly #delivery: DeliveryView;
  /** The reused view of delivery iteration. */
  readonly #shared: boolean;
  #rejStart = 0;
  #rejCount = 0;
  #rejections: readonly Rejection[] | undefined;
  #released = false;
  #onRelease: (() => void) | undefined;
  #moves: MoveIterator | undefined;

  /** @param index the room-table entry, or -1 for an empty batch of `room`. */
  constructor(delivery: DeliveryView, index: number, shared: boolean, onRelease?: () => void, room = 0) {
    this.#delivery = delivery;
    this.#shared = shared;
    this.#onRelease = onRelease;
    if (index >= 0) this.#load(index);
    else {
      this.room = room;
      this.#rejections = NO_REJECTIONS;
    }
  }

  #load(index: number): void {
    const e = this.#delivery.entryOffset(index);
    const dv = this.#delivery.view;
    this.room = dv.getUint32(e, true);
    this.offset = dv.getUint32(e + 4, true);
    this.length = dv.getUint32(e + 8, true);
    this.count = dv.getUint32(e + 12, true);
    this.#rejStart = dv.getUint32(e + 16, true);
    this.#rejCount = dv.getUint32(e + 20, true);
    this.#rejections = this.#rejCount === 0 ? NO_REJECTIONS : undefined;
  }

  /** The delivery's `ArrayBuffer` (shared by every room of the delivery; detached once released). */
  get buffer(): ArrayBuffer {
    return this.#delivery.buffer;
  }

  get released(): boolean {
    return this.#released || this.#delivery.released;
  }

  /** The room's rejections, in order (built on first read; reading a released batch first throws). */
  get rejections(): readonly Rejection[] {
    const cached = this.#rejections;
    if (cached !== undefined) return cached;
    if (this.released) throw released('batch', this.room);
    const built = this.#delivery.readRejections(this.#rejStart, this.#rejCount);
    this.#rejections = built;
    return built;
  }

  /** Releases the batch (the reused view of a delivery: the whole delivery). Idempotent. */
  release(): void {
    if (this.#shared) {
      this.#delivery.release();
      return;
    }
    if (this.#released) return;
    this.#released = true;
    const hook = this.#onRelease;
    this.#onRelease = undefined;
    hook?.();
  }

  /** Lets the batch's push delivery free its shard while the batch stays readable (see `DeliveryView.freeShard`). */
  freeShard(free: DeliveryReleaseHook): void {
    this.#delivery.freeShard(free);
  }

  /** The same moves and rejections in a delivery of their own; it never needs releasing (release() detaches it). */
  copy(): MoveBatchType {
    this.#check();
    const bytes = new Uint8Array(this.#delivery.buffer, this.offset, this.length);
    const buffer = writeDelivery(PULL_SHARD, [{ id: this.room, bytes, fillLen: this.length, fillCount: this.count, rejections: this.rejections }]);
    return new DeliveryView(buffer, detachBuffer).single();
  }

  /** The frames as one `Uint8Array` view over `buffer` (no copy). */
  bytes(): Uint8Array {
    this.#check();
    return new Uint8Array(this.#delivery.buffer, this.offset, this.length);
  }

  /**
   * Iterates the moves in dispatch order. The iterator, its result and its move view are
   * reused from one loop to the next (and, for the reused view of a delivery, from room to
   * room): a loop allocates nothing. A loop nested in another over the same batch gets an
   * iterator of its own.
   */
  [Symbol.iterator](): Iterator<MoveView> {
    this.#check();
    let it = this.#moves;
    if (it === undefined || it.active) {
      it = new MoveIterator(this, this.#delivery.bytes, this.#delivery.view);
      this.#moves ??= it;
    }
    return it.reset(this.offset, this.offset + this.length);
  }

  [INSPECT](depth: number, options: unknown, inspect?: Inspect): string {
    const fields = { room: this.room, count: this.count, offset: this.offset, length: this.length, released: this.released, rejections: this.#rejCount };
    return inspected('MoveBatch', fields, depth, options, inspect);
  }

  #check(): void {
    if (this.released) throw released('batch', this.room);
  }
}

/** Iterates a delivery's rooms with one reused room view; reused while no other loop runs it. */
class RoomIterator implements IterableIterator<MoveBatchType> {
  readonly #delivery: DeliveryView;
  readonly #view: RoomBatch;
  readonly #result: IteratorYieldResult<MoveBatchType>;
  #next = 0;
  active = false;

  constructor(delivery: DeliveryView) {
    this.#delivery = delivery;
    this.#view = new RoomBatch(delivery, -1, true);
    this.#result = { value: this.#view, done: false };
  }

  reset(): this {
    this.#next = 0;
    this.active = true;
    return this;
  }

  next(): IteratorResult<MoveBatchType> {
    if (this.#next >= this.#delivery.rooms) {
      this.active = false;
      return DONE;
    }
    if (this.#delivery.released) throw released('delivery');
    loadEntry(this.#view, this.#next++);
    return this.#result;
  }

  return(): IteratorResult<MoveBatchType> {
    this.active = false;
    return DONE;
  }

  [Symbol.iterator](): this {
    return this;
  }
}

/**
 * A view over one delivery buffer (or over nothing: an empty delivery). It remembers the
 * header's shard when created: a released (detached) or transferred buffer can no longer
 * be read, and the release must still tell the engine which shard may deliver again.
 */
export class DeliveryView implements DeliveryType {
  readonly count: number;
  readonly rooms: number;
  readonly #buffer: ArrayBuffer;
  readonly #bytes: Uint8Array;
  readonly #dv: DataView;
  readonly #shard: number;
  readonly #roomsOffset: number;
  readonly #rejectionsOffset: number;
  readonly #nRejections: number;
  #released = false;
  /** Its shard was let go (`freeShard`): the release only detaches. */
  #shardFreed = false;
  #onRelease: DeliveryReleaseHook | undefined;
  #rejections: readonly Rejection[] | undefined;
  #iterator: RoomIterator | undefined;
  /** Batches of their own made by `split()` and not yet released. */
  #unreleased = 0;

  /** `buffer` null: an empty delivery. `onRelease` runs once, at the first `release()`. */
  constructor(buffer: ArrayBuffer | null, onRelease?: DeliveryReleaseHook) {
    if (buffer === null) {
      this.#buffer = EMPTY_BUFFER;
      this.#bytes = EMPTY_BYTES;
      this.#dv = EMPTY_VIEW;
      this.#shard = PULL_SHARD;
      this.count = this.rooms = this.#roomsOffset = this.#rejectionsOffset = this.#nRejections = 0;
      this.#rejections = NO_REJECTIONS;
      return;
    }
    const size = buffer.byteLength;
    const dv = new DataView(buffer);
    const version = size >= DELIVERY_HEADER_BYTES ? dv.getUint32(0, true) : -1;
    if (version !== DELIVERY_VERSION) {
      throw new Error(`move-dispatcher: not a delivery of format ${DELIVERY_VERSION} (${size} bytes, version ${version}): the addon and the JavaScript come from different builds`);
    }
    this.#buffer = buffer;
    this.#bytes = new Uint8Array(buffer);
    this.#dv = dv;
    this.#shard = dv.getUint32(4, true);
    this.rooms = dv.getUint32(8, true);
    this.count = dv.getUint32(12, true);
    this.#nRejections = dv.getUint32(16, true);
    this.#roomsOffset = dv.getUint32(20, true);
    this.#rejectionsOffset = dv.getUint32(24, true);
    if (
      this.#roomsOffset % 4 !== 0 ||
      this.#rejectionsOffset % 4 !== 0 ||
      this.#roomsOffset + ROOM_ENTRY_BYTES * this.rooms > size ||
      this.#rejectionsOffset + REJECTION_ENTRY_BYTES * this.#nRejections > size
    ) {
      throw new Error(`move-dispatcher: a delivery's tables lie outside its ${size} bytes: the addon and the JavaScript come from different builds`);
    }
    this.#onRelease = onRelease;
  }

  /** The delivery's memory (a shared empty buffer for an empty delivery); detached once released. */
  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  /** The whole delivery as bytes: `move.payloadOffset` / `frameOffset` index into it. */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Every room's rejections, room after room (built on first read; reading them first after release throws). */
  get rejections(): readonly Rejection[] {
    const cached = this.#rejections;
    if (cached !== undefined) return cached;
    if (this.#released) throw released('delivery');
    const built = this.readRejections(0, this.#nRejections);
    this.#rejections = built;
    return built;
  }

  /** Detaches the buffer and, for a push delivery, lets its shard deliver again. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const hook = this.#onRelease;
    this.#onRelease = undefined;
    hook?.(this.#buffer, this.#shardFreed ? PULL_SHARD : this.#shard);
  }

  /**
   * A push delivery still held: lets its shard deliver again now (`free`), keeping the
   * memory attached until `release()`, which then only detaches. Once; not after release.
   */
  freeShard(free: DeliveryReleaseHook): void {
    if (this.#released || this.#shardFreed || this.#shard === PULL_SHARD) return;
    this.#shardFreed = true;
    free(this.#buffer, this.#shard);
  }

  /**
   * Iterates the rooms: one reused room view (a `MoveBatch`), moved from room to room. The
   * iterator and its result are reused from one loop to the next: a loop allocates nothing.
   */
  [Symbol.iterator](): Iterator<MoveBatchType> {
    if (this.#released) throw released('delivery');
    let it = this.#iterator;
    if (it === undefined || it.active) {
      it = new RoomIterator(this);
      this.#iterator ??= it;
    }
    return it.reset();
  }

  [INSPECT](depth: number, options: unknown, inspect?: Inspect): string {
    const fields = { rooms: this.rooms, count: this.count, rejections: this.#nRejections, byteLength: this.#buffer.byteLength, released: this.#released };
    return inspected('Delivery', fields, depth, options, inspect);
  }

  // ---- for the Dispatcher and the room views (not part of the public `Delivery` type) ----

  /** The shard in the header (`PULL_SHARD` for a pull delivery). */
  get shard(): number {
    return this.#shard;
  }

  /** The delivery's `DataView` (room views read the tables through it). */
  get view(): DataView {
    return this.#dv;
  }

  /** Byte offset of room-table entry `index`. */
  entryOffset(index: number): number {
    if (this.#released) throw released('delivery');
    return this.#roomsOffset + ROOM_ENTRY_BYTES * index;
  }

  /** `count` rejections from index `start` of the rejection table, as plain objects. */
  readRejections(start: number, count: number): readonly Rejection[] {
    if (count === 0) return NO_REJECTIONS;
    const dv = this.#dv;
    const out: Rejection[] = new Array<Rejection>(count);
    for (let i = 0, at = this.#rejectionsOffset + REJECTION_ENTRY_BYTES * start; i < count; i++, at += REJECTION_ENTRY_BYTES) {
      out[i] = { room: dv.getUint32(at, true), player: dv.getUint32(at + 4, true), seq: dv.getUint32(at + 8, true), reason: dv.getUint32(at + 12, true) as Reason };
    }
    return out;
  }

  /** The first room as a batch of its own whose release releases the delivery (`drain(room)`, `copy()`). */
  single(): RoomBatch {
    return new RoomBatch(this, 0, false, () => this.release());
  }

  /**
   * One batch of its own per room (`onBatch`, `batches()`): each is released by itself, and
   * the delivery once all of them are. A delivery without rooms is released at once.
   */
  split(): RoomBatch[] {
    const n = this.rooms;
    const out = new Array<RoomBatch>(n);
    this.#unreleased = n;
    const done = (): void => {
      if (--this.#unreleased === 0) this.release();
    };
    for (let i = 0; i < n; i++) out[i] = new RoomBatch(this, i, false, done);
    if (n === 0) this.release();
    return out;
  }
}

/** An empty batch of `room` (a drain that found nothing): valid until released, holding nothing. */
export function emptyBatch(room: number): RoomBatch {
  return new RoomBatch(new DeliveryView(null), -1, false, undefined, room);
}
