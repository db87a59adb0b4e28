/**
 * The Delivery v2 memory format (src/delivery.ts, docs/architecture.md "Delivery") and its
 * views, below the engines: buffers built by `writeDelivery` (what the js engine hands out)
 * and by hand from the layout, read back through the views; the reused room / move views;
 * lazy rejections; detach on release.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors';
import { DELIVERY_HEADER_BYTES, DeliveryView, PULL_SHARD, detachBuffer, emptyBatch, writeDelivery } from '../src/delivery';
import type { DeliverySource } from '../src/delivery';
import type { MoveBatch, MoveView } from '../src/types';
import { OVERHEAD, concat, expectCode, frame, hex, parse } from './helpers';

/** A room's content as the js engine keeps it: frames from byte 0, with rejections. */
function source(room: number, seqs: number[], rejections: [number, number, number][] = [], payload = (seq: number) => seq % 13): DeliverySource & { frames: Uint8Array[] } {
  const frames = seqs.map((seq) => frame({ room, player: 7 + (seq % 3), seq, tick: seq * 10, kind: seq & 0xff, payload: payload(seq) }));
  const bytes = concat(frames);
  // Room memory is longer than what it holds: only `fillLen` bytes are copied.
  const memory = new Uint8Array(bytes.length + 100).fill(0xee);
  memory.set(bytes);
  return {
    id: room,
    bytes: memory,
    fillLen: bytes.length,
    fillCount: frames.length,
    rejections: rejections.map(([player, seq, reason]) => ({ room, player, seq, reason })),
    frames,
  };
}

function u32(buffer: ArrayBuffer, at: number): number {
  return new DataView(buffer).getUint32(at, true);
}

describe('writeDelivery: the documented layout', () => {
  it('header, frames from byte 32 room after room, room table, rejection table, stamps', () => {
    const a = source(5, [1, 2, 3], [[8, 9, 0]]);
    const b = source(0xffff_fffe, [], [
      [1, 2, 2],
      [3, 4, 3],
    ]);
    const c = source(9, [7], []);
    const buffer = writeDelivery(3, [a, b, c]);
    const frames = a.fillLen + c.fillLen;
    const roomsOffset = (DELIVERY_HEADER_BYTES + frames + 3) & ~3;
    const rejectionsOffset = roomsOffset + 3 * 24;
    const stampsOffset = (rejectionsOffset + 3 * 16 + 7) & ~7;
    expect(Array.from({ length: 8 }, (_, i) => u32(buffer, 4 * i))).toEqual([2, 3, 3, 4, 3, roomsOffset, rejectionsOffset, stampsOffset]);
    expect(buffer.byteLength).toBe(stampsOffset + 4 * 8);
    expect(hex(new Uint8Array(buffer, 32, frames))).toBe(hex(concat([...a.frames, ...c.frames])));
    const entry = (i: number) => Array.from({ length: 6 }, (_, k) => u32(buffer, roomsOffset + 24 * i + 4 * k));
    expect(entry(0)).toEqual([5, 32, a.fillLen, 3, 0, 1]);
    expect(entry(1)).toEqual([0xffff_fffe, 32 + a.fillLen, 0, 0, 1, 2]);
    expect(entry(2)).toEqual([9, 32 + a.fillLen, c.fillLen, 1, 3, 0]);
    const rejection = (i: number) => Array.from({ length: 4 }, (_, k) => u32(buffer, rejectionsOffset + 16 * i + 4 * k));
    expect([rejection(0), rejection(1), rejection(2)]).toEqual([
      [5, 8, 9, 0],
      [0xffff_fffe, 1, 2, 2],
      [0xffff_fffe, 3, 4, 3],
    ]);
    expect(new Uint8Array(buffer, stampsOffset)).toEqual(new Uint8Array(32));
  });

  it('offsets are aligned whatever the frame bytes (room table 4, stamps 8)', () => {
    for (let payload = 0; payload < 9; payload++) {
      for (let rejections = 0; rejections < 3; rejections++) {
        const s = source(1, [1], Array.from({ length: rejections }, (_, i) => [1, i + 2, 0] as [number, number, number]), () => payload);
        const buffer = writeDelivery(PULL_SHARD, [s]);
        expect(u32(buffer, 4)).toBe(PULL_SHARD);
        expect(u32(buffer, 20) % 4).toBe(0);
        expect(u32(buffer, 20)).toBeGreaterThanOrEqual(32 + OVERHEAD + payload);
        expect(u32(buffer, 24) % 4).toBe(0);
        expect(u32(buffer, 28) % 8).toBe(0);
        expect(buffer.byteLength).toBe(u32(buffer, 28) + 8);
      }
    }
  });
});

describe('DeliveryView', () => {
  const rooms = [source(1, [1, 2, 3, 4], [[7, 9, 2]]), source(2, [], [[8, 1, 0]]), source(3, [10, 11]), source(4, [5])];
  const fresh = (onRelease?: (buffer: ArrayBuffer, shard: number) => void): DeliveryView => new DeliveryView(writeDelivery(2, rooms), onRelease);

  it('counts, rooms, and one room view per room with the room-table fields', () => {
    const d = fresh();
    expect(d.count).toBe(7);
    expect(d.rooms).toBe(4);
    expect(d.shard).toBe(2);
    expect(d.bytes.buffer).toBe(d.buffer);
    const seen: { room: number; count: number; offset: number; length: number; moves: ReturnType<typeof parse>[]; rejections: unknown[] }[] = [];
    for (const b of d) {
      const moves = [];
      for (const m of b) {
        moves.push({ room: m.room, player: m.player, seq: m.seq, tick: m.tick, kind: m.kind, payload: hex(m.payload), frameLength: m.frameLength });
        expect(hex(d.bytes.subarray(m.frameOffset, m.frameOffset + m.frameLength))).toBe(hex(rooms[b.room - 1]!.frames[moves.length - 1]!));
        expect(hex(d.bytes.subarray(m.payloadOffset, m.payloadOffset + m.payloadLength))).toBe(hex(m.payload));
        expect(m.payloadOffset).toBe(m.frameOffset + 24);
        expect(m.payloadLength).toBe(m.frameLength - OVERHEAD);
      }
      expect(b.buffer).toBe(d.buffer);
      expect(hex(b.bytes())).toBe(hex(concat(rooms[b.room - 1]!.frames)));
      seen.push({ room: b.room, count: b.count, offset: b.offset, length: b.length, moves, rejections: [...b.rejections] });
    }
    expect(seen.map((r) => r.room)).toEqual([1, 2, 3, 4]);
    expect(seen.map((r) => r.count)).toEqual([4, 0, 2, 1]);
    for (const r of seen) expect(r.moves).toEqual(rooms[r.room - 1]!.frames.map(parse));
    expect(seen[0]!.offset).toBe(32);
    expect(seen[2]!.offset).toBe(32 + rooms[0]!.fillLen);
    expect(seen.map((r) => r.rejections)).toEqual([[{ room: 1, player: 7, seq: 9, reason: 2 }], [{ room: 2, player: 8, seq: 1, reason: 0 }], [], []]);
    expect(d.rejections).toEqual([
      { room: 1, player: 7, seq: 9, reason: 2 },
      { room: 2, player: 8, seq: 1, reason: 0 },
    ]);
  });

  it('iteration yields the same room view, the same move view and the same iterator results every step (no object per room or per move)', () => {
    const d = fresh();
    const roomViews = new Set<MoveBatch>();
    const moveViews = new Set<MoveView>();
    const roomResults = new Set<unknown>();
    const moveResults = new Set<unknown>();
    const moveIterators = new Set<unknown>();
    const roomIterators = new Set<unknown>();
    for (let round = 0; round < 3; round++) {
      const rooms = d[Symbol.iterator]();
      roomIterators.add(rooms);
      for (let r = rooms.next(); !r.done; r = rooms.next()) {
        roomResults.add(r);
        roomViews.add(r.value);
        const moves = r.value[Symbol.iterator]();
        moveIterators.add(moves);
        for (let m = moves.next(); !m.done; m = moves.next()) {
          moveResults.add(m);
          moveViews.add(m.value);
          void m.value.seq;
        }
      }
    }
    expect([roomIterators.size, roomResults.size, roomViews.size, moveIterators.size, moveResults.size, moveViews.size]).toEqual([1, 1, 1, 1, 1, 1]);
    // a for-of that breaks hands its iterator back (return()): the next loop reuses it
    for (const b of d) {
      for (const m of b) {
        moveViews.add(m);
        break;
      }
      roomViews.add(b);
      break;
    }
    for (const b of d) for (const m of b) moveViews.add(m);
    expect([roomViews.size, moveViews.size]).toEqual([1, 1]);
  });

  it('nested loops over the same delivery or batch get iterators of their own', () => {
    const d = fresh();
    const pairs: string[] = [];
    for (const a of d) {
      const outer = a.room;
      for (const b of d) pairs.push(`${outer}/${b.room}`);
    }
    expect(pairs).toHaveLength(16);
    expect(pairs.slice(0, 4)).toEqual(['1/1', '1/2', '1/3', '1/4']);
    const batch = new DeliveryView(writeDelivery(PULL_SHARD, [rooms[0]!])).single();
    const seqs: string[] = [];
    for (const m of batch) {
      const s = m.seq;
      for (const n of batch) seqs.push(`${s}:${n.seq}`);
    }
    expect(seqs).toHaveLength(16);
  });

  it('rejection arrays are created on first read, once', () => {
    const d = fresh();
    expect(d.rejections).toBe(d.rejections);
    const it = d[Symbol.iterator]();
    const first = it.next().value as MoveBatch;
    expect(first.rejections).toBe(first.rejections);
    const kept = first.rejections;
    it.next(); // the view moved on: room 2's own array
    expect(first.room).toBe(2);
    expect(first.rejections).not.toBe(kept);
    expect(first.rejections).toEqual([{ room: 2, player: 8, seq: 1, reason: 0 }]);
    expect(kept).toEqual([{ room: 1, player: 7, seq: 9, reason: 2 }]);
  });

  it('release() detaches: every view handed out reads as empty; iteration throws BATCH_RELEASED; the hook runs once with the shard', () => {
    const calls: [number, number][] = [];
    const d = fresh((buffer, shard) => {
      calls.push([buffer.byteLength, shard]);
      detachBuffer(buffer);
    });
    const size = d.buffer.byteLength;
    const whole = d.bytes;
    const it = d[Symbol.iterator]();
    const view = it.next().value as MoveBatch;
    const bytes = view.bytes();
    const overBuffer = new Uint8Array(view.buffer);
    let payload: Uint8Array | undefined;
    let move: MoveView | undefined;
    for (const m of view) {
      payload = m.payload;
      move = m;
      break;
    }
    const rejections = d.rejections;
    expect([whole.byteLength, bytes.byteLength > 0, overBuffer.byteLength, payload!.byteLength]).toEqual([size, true, size, 1]);
    d.release();
    d.release();
    expect(calls).toEqual([[size, 2]]);
    expect(d.released).toBe(true);
    expect(view.released).toBe(true);
    expect([d.buffer.byteLength, whole.byteLength, bytes.byteLength, overBuffer.byteLength, payload!.byteLength, view.buffer.byteLength]).toEqual([0, 0, 0, 0, 0, 0]);
    // A kept move view still serialises, to its position only (its fields read released memory).
    expect(JSON.parse(JSON.stringify(move))).toEqual({ frameOffset: move!.frameOffset, frameLength: move!.frameLength });
    expectCode(() => it.next(), ErrorCode.BatchReleased);
    expectCode(() => [...d], ErrorCode.BatchReleased);
    expectCode(() => [...view], ErrorCode.BatchReleased);
    expectCode(() => view.bytes(), ErrorCode.BatchReleased);
    expectCode(() => view.copy(), ErrorCode.BatchReleased);
    // rejections read before release stay (plain objects); never read before: they throw
    expect(rejections).toHaveLength(2);
    expect(d.rejections).toBe(rejections);
    const other = fresh(detachBuffer);
    other.release();
    expectCode(() => other.rejections, ErrorCode.BatchReleased);
    // a kept move view reads no memory that is gone: the DataView refuses (a TypeError, no crash)
    expect(() => move!.seq).toThrow(TypeError);
    // a room view's release() releases its delivery
    const third = fresh(detachBuffer);
    for (const b of third) {
      b.release();
      break;
    }
    expect(third.released).toBe(true);
    expect(third.buffer.byteLength).toBe(0);
  });

  it('split(): one batch of its own per room; the delivery is released once all are', () => {
    const released: number[] = [];
    const d = fresh((buffer, shard) => {
      released.push(shard);
      detachBuffer(buffer);
    });
    const batches = d.split();
    expect(batches.map((b) => b.room)).toEqual([1, 2, 3, 4]);
    expect(new Set(batches).size).toBe(4);
    expect(batches.map((b) => [...b].length)).toEqual([4, 0, 2, 1]);
    batches[2]!.release();
    batches[2]!.release();
    expect(batches[2]!.released).toBe(true);
    expectCode(() => [...batches[2]!], ErrorCode.BatchReleased);
    expect(batches[0]!.released).toBe(false);
    batches[0]!.release();
    batches[1]!.release();
    expect(released).toEqual([]);
    expect(d.buffer.byteLength).toBeGreaterThan(0);
    batches[3]!.release();
    expect(released).toEqual([2]);
    expect(d.buffer.byteLength).toBe(0);
  });

  it('copy(): the same room in a delivery of its own, valid after the original is released; its release detaches it', () => {
    const d = fresh(detachBuffer);
    const copies: MoveBatch[] = [];
    for (const b of d) copies.push(b.copy());
    d.release();
    expect(copies.map((c) => c.room)).toEqual([1, 2, 3, 4]);
    for (const c of copies) {
      expect(c.released).toBe(false);
      expect(hex(c.bytes())).toBe(hex(concat(rooms[c.room - 1]!.frames)));
      const seqs: number[] = [];
      for (const m of c) seqs.push(m.seq);
      expect(seqs).toEqual(rooms[c.room - 1]!.frames.map((f) => parse(f).seq));
      expect(c.rejections).toEqual(rooms[c.room - 1]!.rejections);
      expect(c.offset).toBe(32);
      expect(c.buffer.byteLength).toBeGreaterThan(c.length);
    }
    const view = copies[0]!.bytes();
    copies[0]!.release();
    expect(view.byteLength).toBe(0);
  });

  it('an empty delivery: count 0, rooms 0, iterates nothing, no buffer of its own; release is a no-op', () => {
    const d = new DeliveryView(null);
    expect([d.count, d.rooms, d.buffer.byteLength, d.bytes.byteLength]).toEqual([0, 0, 0, 0]);
    expect([...d]).toEqual([]);
    expect(d.rejections).toEqual([]);
    d.release();
    expect(d.released).toBe(true);
    const b = emptyBatch(42);
    expect([b.room, b.count, b.length, b.rejections.length, [...b].length, b.bytes().byteLength]).toEqual([42, 0, 0, 0, 0, 0]);
    expect(b.copy().room).toBe(42);
  });

  it('refuses buffers of another format or with tables outside the buffer (a build mismatch), never reads out of bounds', () => {
    expect(() => new DeliveryView(new ArrayBuffer(8))).toThrow(/format 2/);
    const v1 = new ArrayBuffer(64);
    new DataView(v1).setUint32(0, 1, true);
    expect(() => new DeliveryView(v1)).toThrow(/format 2/);
    const bad = writeDelivery(0, [rooms[0]!]);
    new DataView(bad).setUint32(8, 1000, true);
    expect(() => new DeliveryView(bad)).toThrow(/outside/);
  });

  it('detachBuffer is idempotent', () => {
    const b = new ArrayBuffer(64);
    const view = new Uint8Array(b);
    detachBuffer(b);
    detachBuffer(b);
    expect([b.byteLength, view.byteLength]).toEqual([0, 0]);
  });
});
