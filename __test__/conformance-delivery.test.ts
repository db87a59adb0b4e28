/**
 * Delivery v2 (docs/architecture.md "Delivery"), run against both engines: `drainAll()` over
 * many rooms, `onDelivery` coalescing, one push delivery out per shard, detach on release
 * for every way memory reaches JavaScript, allocation-free iteration (object identity), and
 * bytes handed out passed back into `dispatch`.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, ErrorCode, Reason, Verdict } from '../index';
import type { Delivery, MoveBatch, MoveView, Rejection } from '../index';
import {
  ENGINES,
  OVERHEAD,
  Rng,
  absorb,
  absorbDelivery,
  concat,
  corrupt,
  deliverySink,
  emptyCollected,
  expectArgError,
  expectCode,
  frame,
  hex,
  parse,
  pauseForTesting,
  pushSink,
  skipReason,
  sleep,
  until,
  useDispatchers,
} from './helpers';
import type { Collected } from './helpers';

/** Tracks whether a promise settled (without awaiting it). */
function track<T>(p: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let done = false;
  const promise = p.then((x) => {
    done = true;
    return x;
  });
  return { settled: () => done, promise };
}

/** What a room was sent: its accepted frames in order, and the rejections they will turn into. */
interface Expected {
  frames: Uint8Array[];
  rejections: Rejection[];
}

/** Views into delivery memory kept past the release, to check that they read as detached. */
function keepViews(batch: MoveBatch): Uint8Array[] {
  const views = [batch.bytes(), new Uint8Array(batch.buffer)];
  for (const m of batch) {
    views.push(m.payload);
    break;
  }
  return views;
}

describe.each(ENGINES)('delivery v2 [%s engine]', (engine) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  // -------------------------------------------------------------------------------------
  describe('drainAll()', () => {
    it('500 pull rooms with moves and rejections: one delivery, every room once, per-room order, rejections with their room', async () => {
      const d = make({ shards: 3, workerThreads: 2, roomBytes: 16 << 10 });
      const rng = new Rng(500);
      const rooms = Array.from({ length: 500 }, (_, i) => 1000 + i * 7);
      for (const r of rooms) {
        d.openRoom(r);
        d.join(r, 1);
        d.join(r, 2);
      }
      const expected = new Map<number, Expected>(rooms.map((r) => [r, { frames: [], rejections: [] }]));
      const seqs = new Map<string, number>();
      for (let i = 0; i < 4000; i++) {
        const room = rng.pick(rooms);
        const player = rng.pick([1, 2]);
        const key = `${room}/${player}`;
        const seq = (seqs.get(key) ?? 0) + 1;
        seqs.set(key, seq);
        const f = frame({ room, player, seq, tick: i, payload: rng.int(40) });
        const e = expected.get(room)!;
        if (rng.chance(0.05)) {
          expect(d.dispatch(corrupt(f, f.length - 1))).toBe(Verdict.Accepted);
          e.rejections.push({ room, player, seq, reason: Reason.BadTag });
        } else {
          expect(d.dispatch(f)).toBe(Verdict.Accepted);
          e.frames.push(f);
          if (rng.chance(0.03)) {
            expect(d.dispatch(f)).toBe(Verdict.Accepted);
            e.rejections.push({ room, player, seq, reason: Reason.Replay });
          }
        }
      }
      await d.flush();
      const before = d.stats();
      const delivery = d.drainAll();
      const withContent = rooms.filter((r) => expected.get(r)!.frames.length + expected.get(r)!.rejections.length > 0);
      const moves = rooms.reduce((n, r) => n + expected.get(r)!.frames.length, 0);
      expect(delivery.rooms).toBe(withContent.length);
      expect(delivery.count).toBe(moves);
      expect(delivery.released).toBe(false);
      const got = new Map<number, Collected>();
      const order: number[] = [];
      for (const b of delivery) {
        order.push(b.room);
        expect(b.buffer).toBe(delivery.buffer);
        expect(b.released).toBe(false);
      }
      absorbDelivery(got, delivery);
      expect(new Set(order).size).toBe(order.length);
      expect([...order].sort((a, b) => a - b)).toEqual(withContent);
      for (const r of rooms) {
        const c = got.get(r) ?? emptyCollected();
        const e = expected.get(r)!;
        expect(hex(concat(c.bytes)), `room ${r}`).toBe(hex(concat(e.frames)));
        expect(c.moves.map((m) => m.tick), `room ${r}`).toEqual(e.frames.map((f) => parse(f).tick));
        expect(c.rejections, `room ${r}`).toEqual(e.rejections);
      }
      // delivery.rejections: every room's, room after room in the delivery's order
      expect(delivery.rejections).toEqual(order.flatMap((r) => expected.get(r)!.rejections));
      const s = d.stats();
      expect(s.delivered - before.delivered).toBe(moves);
      expect(s.batches - before.batches).toBe(withContent.length);
      expect(s.accepted).toBe(s.delivered + s.rejected);
      expect(s.rooms).toEqual([]);
      // nothing left: the next drainAll is empty, and it released the previous one
      const views = [delivery.bytes, new Uint8Array(delivery.buffer)];
      const empty = d.drainAll();
      expect([empty.count, empty.rooms, [...empty].length, empty.rejections.length]).toEqual([0, 0, 0, 0]);
      expect(delivery.released).toBe(true);
      expect(views.map((v) => v.byteLength)).toEqual([0, 0]);
      expectCode(() => [...delivery], ErrorCode.BatchReleased);
      // an empty delivery is released by the next drainAll too (nothing to detach)
      d.drainAll();
      expect(empty.released).toBe(true);
    });

    it('without flush, repeated drainAll calls take every move exactly once, in order per room', async () => {
      const d = make({ shards: 2 });
      const rooms = [1, 2, 3, 4, 5, 6];
      for (const r of rooms) {
        d.openRoom(r);
        d.join(r, 7);
      }
      const got = new Map<number, Collected>();
      const sent = new Map<number, Uint8Array[]>(rooms.map((r) => [r, []]));
      for (let seq = 1; seq <= 300; seq++) {
        for (const r of rooms) {
          const f = frame({ room: r, player: 7, seq, payload: seq % 11 });
          sent.get(r)!.push(f);
          expect(d.dispatch(f)).toBe(Verdict.Accepted);
        }
        if (seq % 40 === 0) {
          absorbDelivery(got, d.drainAll());
          await sleep(0);
        }
      }
      await d.flush();
      absorbDelivery(got, d.drainAll());
      for (const r of rooms) expect(hex(concat(got.get(r)!.bytes)), `room ${r}`).toBe(hex(concat(sent.get(r)!)));
      const s = d.stats();
      expect(s.delivered).toBe(1800);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('interleaved with join / leave / closeRoom: a closed room\'s pending moves still come out, then the room is forgotten', async () => {
      const d = make({ shards: 2 });
      for (const r of [1, 2, 3]) {
        d.openRoom(r);
        d.join(r, 7);
        d.join(r, 8);
      }
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 5; seq++) for (const r of [1, 2, 3]) expect(d.dispatch(frame({ room: r, player: 7, seq }))).toBe(Verdict.Accepted);
      d.leave(2, 7);
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 6 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 2, player: 8, seq: 1 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(corrupt(frame({ room: 3, player: 8, seq: 1 }), OVERHEAD - 1))).toBe(Verdict.Accepted);
      d.closeRoom(3);
      expect(d.dispatch(frame({ room: 3, player: 7, seq: 6 }))).toBe(Verdict.UnknownRoom);
      d.join(1, 9);
      expect(d.dispatch(frame({ room: 1, player: 9, seq: 1 }))).toBe(Verdict.Accepted);
      pauseForTesting(d, false);
      await d.flush();
      const got = new Map<number, Collected>();
      const delivery = d.drainAll();
      absorbDelivery(got, delivery);
      expect(delivery.rooms).toBe(3);
      expect(got.get(1)!.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['7:1', '7:2', '7:3', '7:4', '7:5', '9:1']);
      expect(got.get(2)!.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['7:1', '7:2', '7:3', '7:4', '7:5', '8:1']);
      expect(got.get(3)!.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(got.get(3)!.rejections).toEqual([{ room: 3, player: 8, seq: 1, reason: Reason.BadTag }]);
      // room 3 is forgotten now: drain throws, and it opens afresh
      expectArgError(() => d.drain(3), ErrorCode.UnknownRoom, 'room');
      d.openRoom(3, { delivery: 'push' });
      // the delivery is still readable: forgetting a room does not touch memory JavaScript holds
      expect(delivery.released).toBe(false);
      expect(got.get(3)!.moves.length).toBe(5);
      const again = new Map<number, Collected>();
      absorbDelivery(again, delivery);
      expect(again.get(3)!.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('drain(room) and drainAll() together: every move once; neither releases the other\'s memory', async () => {
      const d = make({ shards: 2 });
      for (const r of [1, 2, 3]) {
        d.openRoom(r);
        d.join(r, 7);
      }
      for (let seq = 1; seq <= 3; seq++) for (const r of [1, 2, 3]) d.dispatch(frame({ room: r, player: 7, seq }));
      await d.flush();
      const one = d.drain(1);
      expect(one.count).toBe(3);
      const all = d.drainAll();
      expect(all.rooms).toBe(2);
      expect(all.count).toBe(6);
      const rooms: number[] = [];
      for (const b of all) rooms.push(b.room);
      expect(rooms.sort()).toEqual([2, 3]);
      // drainAll did not release the drain(1) batch, nor the reverse
      expect(one.released).toBe(false);
      for (let seq = 4; seq <= 5; seq++) for (const r of [1, 2]) d.dispatch(frame({ room: r, player: 7, seq }));
      await d.flush();
      const two = d.drain(2);
      expect(two.count).toBe(2);
      expect(all.released).toBe(false);
      expect([...movesSeq(one)]).toEqual([1, 2, 3]);
      // a room drained by drainAll has nothing for drain(room): empty — and, as the room's
      // next drain, it releases the previous drain(1) batch (drainAll did not)
      const rest = d.drainAll();
      expect(rest.rooms).toBe(1);
      expect(all.released).toBe(true);
      expect(one.released).toBe(false);
      const emptyOne = d.drain(1);
      expect(emptyOne.count).toBe(0);
      expect(one.released).toBe(true);
      const s = d.stats();
      expect(s.delivered).toBe(13);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('push rooms are left out; after close() pull rooms still drain through drainAll', async () => {
      const sink = pushSink();
      const d = make({ onBatch: sink.onBatch });
      d.openRoom(1);
      d.openRoom(2, { delivery: 'push' });
      d.join(1, 7);
      d.join(2, 7);
      for (let seq = 1; seq <= 10; seq++) {
        d.dispatch(frame({ room: 1, player: 7, seq }));
        d.dispatch(frame({ room: 2, player: 7, seq }));
      }
      await d.close();
      expect(sink.rooms.get(2)!.moves.length).toBe(10);
      const all = d.drainAll();
      expect(all.rooms).toBe(1);
      const got = new Map<number, Collected>();
      absorbDelivery(got, all);
      expect(got.get(1)!.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(d.drainAll().count).toBe(0);
      const s = d.stats();
      expect(s.accepted).toBe(20);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('stats() after flush + drainAll: accepted = delivered + rejected; batches counts room entries', async () => {
      const d = make({ shards: 2 });
      for (const r of [1, 2, 3, 4]) {
        d.openRoom(r);
        d.join(r, 7);
      }
      d.dispatch(frame({ room: 1, player: 7, seq: 1 }));
      d.dispatch(frame({ room: 1, player: 7, seq: 2 }));
      d.dispatch(frame({ room: 2, player: 7, seq: 1 }));
      d.dispatch(corrupt(frame({ room: 3, player: 7, seq: 1 }), OVERHEAD - 1)); // a rejection only
      await d.flush();
      const all = d.drainAll();
      expect([all.rooms, all.count, all.rejections.length]).toEqual([3, 3, 1]);
      const s = d.stats();
      expect(s.accepted).toBe(4);
      expect(s.delivered).toBe(3);
      expect(s.rejected).toBe(1);
      expect(s.batches).toBe(3);
      expect(s.accepted).toBe(s.delivered + s.rejected);
      expect(s.latency!.batchSize.count).toBe(2); // rooms with moves
      expect(s.latency!.deliveredNs.count).toBe(3);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('onDelivery', () => {
    it('coalesces: many push rooms of a shard in one call; every move once, in order per room', async () => {
      const sink = deliverySink();
      const d = make({ shards: 1, onDelivery: sink.onDelivery });
      const rooms = Array.from({ length: 200 }, (_, i) => i + 1);
      for (const r of rooms) {
        d.openRoom(r, { delivery: 'push' });
        d.join(r, 7);
      }
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 3; seq++) for (const r of rooms) expect(d.dispatch(frame({ room: r, player: 7, seq, payload: r % 5 }))).toBe(Verdict.Accepted);
      pauseForTesting(d, false);
      await d.flush();
      const calls = sink.calls;
      expect(calls.reduce((n, c) => n + c.count, 0)).toBe(600);
      expect(Math.max(...calls.map((c) => c.rooms))).toBeGreaterThan(1);
      expect(calls.length).toBeLessThan(rooms.length);
      for (const r of rooms) expect(sink.rooms.get(r)!.moves.map((m) => m.seq), `room ${r}`).toEqual([1, 2, 3]);
      // a room appears at most once per delivery
      for (const c of calls) expect(new Set(c.roomIds).size).toBe(c.roomIds.length);
      const s = d.stats();
      expect(s.delivered).toBe(600);
      expect(s.batches).toBe(calls.reduce((n, c) => n + c.rooms, 0));
    });

    it('the delivery is released (detached) when onDelivery returns; rejections travel with their room', async () => {
      const kept: { delivery: Delivery; views: Uint8Array[]; rejections: readonly Rejection[] }[] = [];
      const d = make({
        onDelivery(delivery) {
          expect(delivery.released).toBe(false);
          const views = [delivery.bytes, new Uint8Array(delivery.buffer)];
          for (const b of delivery) views.push(...keepViews(b));
          kept.push({ delivery, views, rejections: delivery.rejections });
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      d.dispatch(frame({ room: 1, player: 7, seq: 1, payload: 9 }));
      d.dispatch(corrupt(frame({ room: 1, player: 7, seq: 2 }), OVERHEAD - 1));
      await d.flush();
      expect(kept.length).toBeGreaterThan(0);
      for (const k of kept) {
        expect(k.delivery.released).toBe(true);
        expect(k.views.every((v) => v.byteLength === 0)).toBe(true);
        expect(k.delivery.buffer.byteLength).toBe(0);
        expectCode(() => [...k.delivery], ErrorCode.BatchReleased);
      }
      expect(kept.flatMap((k) => k.rejections)).toEqual([{ room: 1, player: 7, seq: 2, reason: Reason.BadTag }]);
    });

    it('errors thrown by onDelivery (or an async one rejecting) go to onError; delivery continues', async () => {
      const errors: unknown[] = [];
      let calls = 0;
      const got = new Map<number, Collected>();
      const d = make({
        async onDelivery(delivery) {
          calls++;
          absorbDelivery(got, delivery);
          if (calls === 1) throw new Error('sync-ish boom');
          await Promise.resolve();
          // released at the first await: iterating now throws, and that rejection is reported
          for (const b of delivery) void b;
        },
        onError: (e) => errors.push(e),
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      d.dispatch(frame({ room: 1, player: 7, seq: 1 }));
      await d.flush();
      d.dispatch(frame({ room: 1, player: 7, seq: 2 }));
      await d.flush();
      await until(() => errors.length >= 2, 5000, 'both errors');
      expect(got.get(1)!.moves.map((m) => m.seq)).toEqual([1, 2]);
      expect(String(errors[0])).toContain('sync-ish boom');
      expect((errors[1] as { code?: string }).code).toBe(ErrorCode.BatchReleased);
    });

    it('onDelivery and onBatch together are refused; onDelivery must be a function', () => {
      expectArgError(() => new Dispatcher({ engine, onDelivery: () => undefined, onBatch: () => undefined }), ErrorCode.InvalidOption, 'onDelivery');
      for (const f of ['fn', 1, {}, null, []]) {
        expectArgError(() => new Dispatcher({ engine, onDelivery: f as () => void }), ErrorCode.InvalidOption, 'onDelivery');
      }
    });

    it('with onDelivery, batches() receives nothing; close() still resolves', async () => {
      const sink = deliverySink();
      const d = make({ onDelivery: sink.onDelivery });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      const seen: number[] = [];
      const loop = (async () => {
        for await (const b of d.batches()) seen.push(b.room);
      })();
      d.dispatch(frame({ room: 1, player: 7, seq: 1 }));
      await d.flush();
      await d.close();
      await loop;
      expect(seen).toEqual([]);
      expect(sink.total()).toBe(1);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('one push delivery out per shard', () => {
    it('a delivery held (not released) makes the shard\'s next one wait; its rooms count against roomBytes; release lets it go; other shards go on', async () => {
      const d = make({ shards: 2, roomBytes: 4096 });
      // shard 0: rooms 2 and 4; shard 1: room 1
      for (const r of [1, 2, 4]) {
        d.openRoom(r, { delivery: 'push' });
        d.join(r, 7);
      }
      const it = d.batches()[Symbol.asyncIterator]();
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      const first = await it.next();
      expect((first.value as MoveBatch).room).toBe(2);
      // shard 0's delivery is held: room 4 (same shard) waits, room 1 (shard 1) does not
      for (let seq = 1; seq <= 73; seq++) expect(d.dispatch(frame({ room: 4, player: 7, seq })), `seq ${seq}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 4, player: 7, seq: 74 }))).toBe(Verdict.Backpressure);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      const flushing = track(d.flush());
      await sleep(50);
      expect(flushing.settled()).toBe(false);
      expect(d.dispatch(frame({ room: 4, player: 7, seq: 74 }))).toBe(Verdict.Backpressure);
      expect(d.stats().rooms).toEqual([{ room: 4, bytes: 73 * OVERHEAD }]);
      // the next batch waiting is room 1's (shard 1), delivered while shard 0 is held
      const second = await it.next();
      expect((second.value as MoveBatch).room).toBe(1);
      expect((first.value as MoveBatch).released).toBe(true);
      // that released room 2's batch: shard 0 delivers room 4
      const third = await it.next();
      const b = third.value as MoveBatch;
      expect(b.room).toBe(4);
      expect(b.count).toBe(73);
      await it.return?.();
      await flushing.promise;
      expect(d.dispatch(frame({ room: 4, player: 7, seq: 74 }))).toBe(Verdict.Accepted);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('detach on release', () => {
    it('drain(room): views kept past the next drain read as detached, an empty one included', async () => {
      const d = make();
      d.openRoom(1);
      d.join(1, 7);
      for (let seq = 1; seq <= 3; seq++) d.dispatch(frame({ room: 1, player: 7, seq, payload: 4 }));
      await d.flush();
      const b1 = d.drain(1);
      const views = keepViews(b1);
      expect(views.every((v) => v.byteLength > 0)).toBe(true);
      // An empty drain supersedes the batch before it too (DESIGN: valid until the next drain).
      expect(d.drain(1).count).toBe(0);
      expect(b1.released).toBe(true);
      expect(views.map((v) => v.byteLength)).toEqual([0, 0, 0]);
      expect(b1.buffer.byteLength).toBe(0);
      expectCode(() => [...b1], ErrorCode.BatchReleased);
      expectCode(() => b1.bytes(), ErrorCode.BatchReleased);
      d.dispatch(frame({ room: 1, player: 7, seq: 4 }));
      await d.flush();
      const b2 = d.drain(1);
      expect(b2.count).toBe(1);
      const kept = keepViews(b2);
      d.dispatch(frame({ room: 1, player: 7, seq: 5 }));
      await d.flush();
      const b3 = d.drain(1);
      expect(b3.count).toBe(1);
      expect(b2.released).toBe(true);
      expect(kept.map((v) => v.byteLength)).toEqual([0, 0, 0]);
      // release() detaches too; idempotent
      const v3 = keepViews(b3);
      b3.release();
      b3.release();
      expect(v3.map((v) => v.byteLength)).toEqual([0, 0, 0]);
    });

    it('drainAll(): replaced by the next drainAll', async () => {
      const d = make();
      d.openRoom(1);
      d.join(1, 7);
      d.dispatch(frame({ room: 1, player: 7, seq: 1, payload: 4 }));
      await d.flush();
      const all = d.drainAll();
      const views: Uint8Array[] = [all.bytes];
      for (const b of all) views.push(...keepViews(b));
      d.drainAll();
      expect(all.released).toBe(true);
      expect(views.every((v) => v.byteLength === 0)).toBe(true);
      expectCode(() => [...all], ErrorCode.BatchReleased);
    });

    it('onBatch: each batch released when onBatch returns; the delivery detached once all its batches are', async () => {
      const kept: { batch: MoveBatch; views: Uint8Array[] }[] = [];
      const d = make({ shards: 1, onBatch: (b) => void kept.push({ batch: b, views: keepViews(b) }) });
      for (const r of [1, 2, 3]) {
        d.openRoom(r, { delivery: 'push' });
        d.join(r, 7);
      }
      pauseForTesting(d, true);
      for (const r of [1, 2, 3]) d.dispatch(frame({ room: r, player: 7, seq: 1, payload: 2 }));
      pauseForTesting(d, false);
      await d.flush();
      expect(kept.map((k) => k.batch.room).sort()).toEqual([1, 2, 3]);
      for (const k of kept) {
        expect(k.batch.released).toBe(true);
        expect(k.views.map((v) => v.byteLength)).toEqual([0, 0, 0]);
        expectCode(() => [...k.batch], ErrorCode.BatchReleased);
      }
    });

    it('batches(): the delivery is detached once the loop has moved past all its batches', async () => {
      const d = make({ shards: 1 });
      for (const r of [1, 2]) {
        d.openRoom(r, { delivery: 'push' });
        d.join(r, 7);
      }
      pauseForTesting(d, true);
      for (const r of [1, 2]) d.dispatch(frame({ room: r, player: 7, seq: 1, payload: 2 }));
      pauseForTesting(d, false);
      const kept: { batch: MoveBatch; views: Uint8Array[] }[] = [];
      for await (const b of d.batches()) {
        kept.push({ batch: b, views: keepViews(b) });
        if (kept.length === 2) break;
      }
      expect(kept.map((k) => k.batch.room)).toEqual([1, 2]);
      for (const k of kept) {
        expect(k.batch.released).toBe(true);
        expect(k.views.map((v) => v.byteLength)).toEqual([0, 0, 0]);
      }
    });

    it('close(): push batches no consumer took are copied and released; a later batches() loop reads the copies', async () => {
      const d = make({ shards: 1 });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      for (let seq = 1; seq <= 5; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      await sleep(20);
      await d.close();
      const got = emptyCollected();
      for await (const b of d.batches()) absorb(got, b);
      expect(got.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
    });

    it('bytes handed out go back into dispatch / dispatchStream while valid; once released they answer Malformed (never a crash)', async () => {
      const d = make();
      d.openRoom(1);
      d.openRoom(2);
      d.join(1, 7);
      d.join(2, 7);
      const frames = [1, 2, 3].map((seq) => frame({ room: 1, player: 7, seq, payload: seq }));
      for (const f of frames) d.dispatch(f);
      await d.flush();
      const b = d.drain(1);
      const all = b.bytes();
      const views: Uint8Array[] = [];
      for (const m of b) views.push(new Uint8Array(b.buffer, m.frameOffset, m.frameLength));
      // valid: each frame is a replay of its room now; the whole batch is a stream of them
      for (const v of views) expect(d.dispatch(v)).toBe(Verdict.Accepted);
      expect(d.dispatchStream(all)).toEqual({ consumed: all.length, accepted: 3, rejected: 0, backpressure: false, malformed: false });
      await d.flush();
      const replays = d.drain(1);
      expect(replays.count).toBe(0);
      expect(replays.rejections.map((r) => r.reason)).toEqual(Array(6).fill(Reason.Replay));
      expect(b.released).toBe(true); // the drain above replaced it
      for (const v of views) expect(d.dispatch(v)).toBe(Verdict.Malformed);
      expect(d.dispatch(all)).toBe(Verdict.Malformed);
      expect(d.dispatchStream(all)).toEqual({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false });
      expect(await d.dispatchAsync(views[0]!)).toBe(Verdict.Malformed);
      // a drainAll delivery's bytes, likewise
      d.dispatch(frame({ room: 2, player: 7, seq: 1 }));
      await d.flush();
      const delivery = d.drainAll();
      const whole = delivery.bytes;
      let frameView: Uint8Array | undefined;
      for (const batch of delivery) for (const m of batch) frameView = whole.subarray(m.frameOffset, m.frameOffset + m.frameLength);
      expect(d.dispatch(frameView!)).toBe(Verdict.Accepted);
      delivery.release();
      expect(d.dispatch(frameView!)).toBe(Verdict.Malformed);
      expect(d.dispatchStream(whole).consumed).toBe(0);
      await d.flush();
      expect(d.drainAll().rejections).toEqual([{ room: 2, player: 7, seq: 1, reason: Reason.Replay }]);
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('iteration allocates nothing per room or per move', () => {
    it('a 5,000-room delivery yields the same room view, move view and iterator results every step', async () => {
      const d = make({ shards: 2, roomBytes: 4096, channelCapacity: 1 << 16, arenaBytes: 4 << 20 });
      const N = 5000;
      for (let r = 1; r <= N; r++) {
        d.openRoom(r);
        d.join(r, 7);
      }
      for (let r = 1; r <= N; r++) {
        expect(d.dispatch(frame({ room: r, player: 7, seq: 1, payload: r % 7 }))).toBe(Verdict.Accepted);
        if (r % 3 === 0) expect(d.dispatch(frame({ room: r, player: 7, seq: 2 }))).toBe(Verdict.Accepted);
      }
      await d.flush();
      const delivery = d.drainAll();
      expect(delivery.rooms).toBe(N);
      const roomViews = new Set<MoveBatch>();
      const moveViews = new Set<MoveView>();
      const results = new Set<unknown>();
      const moveIterators = new Set<unknown>();
      let moves = 0;
      let sum = 0;
      const rooms = delivery[Symbol.iterator]();
      for (let r = rooms.next(); !r.done; r = rooms.next()) {
        results.add(r);
        const batch = r.value;
        roomViews.add(batch);
        const it = batch[Symbol.iterator]();
        moveIterators.add(it);
        for (let m = it.next(); !m.done; m = it.next()) {
          results.add(m);
          const v = m.value;
          moveViews.add(v);
          // every field but payload (zero-allocation payload reads go through payloadOffset)
          sum += v.room + v.player + v.seq + v.tick + v.kind + v.frameOffset + v.frameLength + v.payloadOffset + v.payloadLength;
          sum += delivery.bytes[v.payloadOffset] ?? 0;
          moves++;
        }
      }
      expect(moves).toBe(N + Math.floor(N / 3));
      expect(sum).toBeGreaterThan(0);
      expect(roomViews.size).toBe(1);
      expect(moveViews.size).toBe(1);
      expect(moveIterators.size).toBe(1);
      // one result object for the rooms, one for the moves
      expect(results.size).toBe(2);
      // and for-of loops do the same
      for (const batch of delivery) {
        roomViews.add(batch);
        for (const m of batch) moveViews.add(m);
      }
      expect([roomViews.size, moveViews.size]).toEqual([1, 1]);
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });
  });
});

function* movesSeq(b: MoveBatch): Generator<number> {
  for (const m of b) yield m.seq;
}
