/**
 * Direct unit tests of `JsEngine` (below the Dispatcher): the sync check order, the replay
 * window against a reference model, the three Backpressure budgets, and deliveries (one
 * buffer of its own each; one push delivery out per shard).
 * The shared contract is covered for both engines by the conformance suite.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AUTH_HMAC, AUTH_SHA256, Reason, REPLAY_WINDOW, Verdict } from '../src/constants';
import { encodeMove } from '../src/encode';
import { DeliveryView, PULL_SHARD } from '../src/delivery';
import { type Delivery, type EngineConfig, Status } from '../src/engine';
import { JsEngine } from '../src/js-engine';
import { RECORD_HEADER_BYTES } from '../src/options';
import type { EncodeMoveInput, Rejection } from '../src/types';

function config(overrides: Partial<EngineConfig> = {}): EngineConfig {
  return {
    workerThreads: 1,
    shards: 1,
    channelCapacity: 1024,
    arenaBytes: 1 << 16,
    roomBytes: 1 << 16,
    maxPayload: 1024,
    overloadQueueDepth: 0,
    overloadRoomBytes: 0,
    maxBatchMoves: 4096,
    pinCores: null,
    maxBlockingThreads: 1,
    threadName: 'test',
    ...overrides,
  };
}

/** Resolves after the engine's pending processing round (scheduled earlier with setImmediate). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function engine(overrides: Partial<EngineConfig> = {}): { e: JsEngine; wakes: () => number } {
  let wakes = 0;
  const e = new JsEngine(config(overrides), () => {
    wakes++;
  });
  return { e, wakes: () => wakes };
}

/** A frame; payload of `size` bytes (default 64: a 120-byte frame). */
function frame(input: Partial<EncodeMoveInput> & { size?: number } = {}): Uint8Array {
  const { size = 64, ...rest } = input;
  return encodeMove({ room: 1, player: 1, seq: 1, payload: new Uint8Array(size).fill(7), ...rest });
}

/** What a drain (or a delivery) held, read through the delivery views. */
interface Drained {
  buffer: ArrayBuffer | null;
  shard: number;
  rooms: number[];
  count: number;
  rejections: readonly Rejection[];
  /** (player, seq) of each move, room after room. */
  moves: [number, number][];
}

/** Reads a delivery buffer (null: nothing pending). */
function read(buffer: ArrayBuffer | null): Drained {
  if (buffer === null) return { buffer, shard: PULL_SHARD, rooms: [], count: 0, rejections: [], moves: [] };
  const d = new DeliveryView(buffer);
  const rooms: number[] = [];
  const moves: [number, number][] = [];
  for (const b of d) {
    rooms.push(b.room);
    for (const m of b) moves.push([m.player, m.seq]);
  }
  return { buffer, shard: d.shard, rooms, count: d.count, rejections: d.rejections, moves };
}

function batchOf(result: ArrayBuffer | null | Status): Drained {
  if (typeof result === 'number') throw new Error(`expected a delivery, got status ${result}`);
  return read(result);
}

/** The (player, seq) pairs of a drain, read from its frames. */
function movesOf(batch: Drained): [number, number][] {
  return batch.moves;
}

/** The push deliveries of a poll, read. */
function pushed(out: Delivery[]): Drained[] {
  return out.filter((d): d is Extract<Delivery, { type: 'delivery' }> => d.type === 'delivery').map((d) => read(d.buffer));
}

describe('JsEngine sync checks', () => {
  it('answers in the documented order (first failure wins)', () => {
    const { e } = engine({ maxPayload: 100 });
    expect(e.openRoom(1, AUTH_SHA256, false)).toBe(Status.Ok);
    const good = frame();
    const bad = (mutate: (f: Uint8Array) => void, base = good): Uint8Array => {
      const f = base.slice();
      mutate(f);
      return f;
    };
    expect(e.dispatch(new Uint8Array(0), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(good.subarray(0, 23), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(bad((f) => (f[0] = 0)), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(bad((f) => (f[2] = 2)), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(bad((f) => (f[3] = 2)), -1)).toBe(Verdict.Malformed);
    // len > maxPayload wins over the length mismatch it implies.
    expect(e.dispatch(bad((f) => (f[22] = 101)), -1)).toBe(Verdict.Oversize);
    expect(e.dispatch(good.subarray(0, 24), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(good.subarray(0, good.length - 1), -1)).toBe(Verdict.Malformed);
    // seq 0 is checked before the room.
    expect(e.dispatch(bad((f) => f.fill(0, 12, 16), frame({ room: 9 })), -1)).toBe(Verdict.Malformed);
    expect(e.dispatch(frame({ room: 9 }), -1)).toBe(Verdict.UnknownRoom);
    expect(e.dispatch(frame({ key: new Uint8Array(16) }), 2)).toBe(Verdict.AuthMismatch);
    expect(e.dispatch(good, 2)).toBe(Verdict.WrongSender);
    // Player 1 has not joined: NotMember, with or without a sender.
    expect(e.dispatch(good, 1)).toBe(Verdict.NotMember);
    expect(e.dispatch(good, -1)).toBe(Verdict.NotMember);
    expect(e.join(1, 1, null)).toBe(Status.Ok);
    expect(e.dispatch(good, 1)).toBe(Verdict.Accepted);
    expect(e.dispatch(good, -1)).toBe(Verdict.Accepted);
    e.shutdown();
    expect(e.dispatch(new Uint8Array(0), -1)).toBe(Verdict.Closed);
    const c = e.counters();
    expect(c.dispatched).toBe(17);
    expect(c.accepted).toBe(2);
    expect(c.verdicts).toEqual([2, 0, 1, 8, 1, 1, 1, 1, 0, 2]);
  });

  it('never throws for random bytes', () => {
    const { e } = engine();
    e.openRoom(1, AUTH_SHA256, false);
    for (let i = 0; i < 2000; i++) {
      const v = e.dispatch(randomBytes(i % 200), -1);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(7);
    }
    e.shutdown();
  });
});

describe('JsEngine replay window', () => {
  /** The rule of architecture.md "Validation" step 3, written as plainly as possible. */
  class Model {
    top = 0;
    readonly seen = new Set<number>();
    accept(seq: number): boolean {
      if (seq > this.top) {
        this.top = seq;
        this.seen.add(seq);
        return true;
      }
      if (this.top - seq < REPLAY_WINDOW && !this.seen.has(seq)) {
        this.seen.add(seq);
        return true;
      }
      return false;
    }
  }

  async function verdicts(seqs: number[]): Promise<boolean[]> {
    const { e } = engine({ channelCapacity: 1 << 16, arenaBytes: 1 << 24, roomBytes: 1 << 24 });
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    for (const seq of seqs) expect(e.dispatch(frame({ seq, size: 0 }), 1)).toBe(Verdict.Accepted);
    await settle();
    const batch = batchOf(e.drain(1));
    e.shutdown();
    const replays = new Set(batch.rejections.map((r) => r.seq));
    expect(batch.rejections.every((r) => r.reason === Reason.Replay)).toBe(true);
    // Duplicated seqs make the set ambiguous: rebuild per position from accepted frames instead.
    const accepted = movesOf(batch).map(([, seq]) => seq);
    const out: boolean[] = [];
    let next = 0;
    for (const seq of seqs) {
      const ok = accepted[next] === seq;
      if (ok) next++;
      else expect(replays.has(seq)).toBe(true);
      out.push(ok);
    }
    return out;
  }

  it('accepts each seq once, within 128 of the top', async () => {
    const seqs = [200, 200, 73, 72, 201, 73, 1000, 873, 872, 999, 1000, 1001, 874];
    const model = new Model();
    expect(await verdicts(seqs)).toEqual(seqs.map((s) => model.accept(s)));
  });

  it('agrees with the reference model on random walks across every word boundary', async () => {
    let state = 12345;
    const rand = (n: number): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    for (const spread of [31, 33, 64, 130, 300]) {
      const seqs: number[] = [];
      let top = 1;
      for (let i = 0; i < 3000; i++) {
        top += rand(spread) < spread / 3 ? rand(70) : 0;
        seqs.push(Math.max(1, top - rand(spread)));
      }
      const model = new Model();
      expect(await verdicts(seqs), `spread ${spread}`).toEqual(seqs.map((s) => model.accept(s)));
    }
  });

  it('handles seqs near 2^32', async () => {
    const max = 0xffff_ffff;
    const seqs = [max - 200, max, max - 127, max - 128, max, max - 1];
    const model = new Model();
    expect(await verdicts(seqs)).toEqual(seqs.map((s) => model.accept(s)));
  });
});

describe('JsEngine sessions', () => {
  it('orders join, leave and moves per shard; rejoin keeps the window, leave drops it', async () => {
    const { e } = engine();
    e.openRoom(1, AUTH_SHA256, false);
    e.pause(true);
    expect(e.dispatch(frame({ seq: 1 }), -1)).toBe(Verdict.NotMember); // before join
    expect(e.join(1, 1, null)).toBe(Status.Ok);
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.Accepted);
    expect(e.join(1, 1, null)).toBe(Status.Ok); // join again: the window stays
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.Accepted); // Replay
    expect(e.leave(1, 1)).toBe(Status.Ok);
    expect(e.leave(1, 1)).toBe(Status.UnknownPlayer);
    expect(e.dispatch(frame({ seq: 3 }), -1)).toBe(Verdict.NotMember); // after leave
    expect(e.join(1, 1, null)).toBe(Status.Ok); // a new window
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.Accepted);
    await settle();
    expect(batchOf(e.drain(1)).count).toBe(0);
    e.pause(false);
    await settle();
    const batch = batchOf(e.drain(1));
    expect(movesOf(batch)).toEqual([
      [1, 2],
      [1, 2],
    ]);
    expect(batch.rejections).toEqual([{ room: 1, player: 1, seq: 2, reason: Reason.Replay }]);
    const c = e.counters();
    expect(c.reasons).toEqual([0, 0, 1, 0]);
    expect(c.verdicts[Verdict.NotMember]).toBe(2);
    expect(c.rejected).toBe(1);
    expect(c.delivered).toBe(2);
    expect(c.accepted).toBe(c.delivered + c.rejected);
    e.shutdown();
  });

  it('checks HMAC tags with the player key and requires a key exactly in hmac rooms', async () => {
    const { e } = engine();
    const key = randomBytes(32);
    e.openRoom(1, AUTH_HMAC, false);
    e.openRoom(2, AUTH_SHA256, false);
    expect(e.join(1, 1, null)).toBe(Status.WrongDelivery);
    expect(e.join(2, 1, key)).toBe(Status.WrongDelivery);
    expect(e.join(1, 1, key)).toBe(Status.Ok);
    key.fill(0); // the engine kept its own copy
    expect(e.dispatch(frame({ seq: 1, key: new Uint8Array(32) }), -1)).toBe(Verdict.Accepted); // the zeroed bytes are not the key
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.AuthMismatch);
    const tampered = frame({ seq: 3, key: randomBytes(32) });
    expect(e.dispatch(tampered, -1)).toBe(Verdict.Accepted);
    await settle();
    const batch = batchOf(e.drain(1));
    expect(batch.count).toBe(0);
    expect(batch.rejections.map((r) => r.reason)).toEqual([Reason.BadTag, Reason.BadTag]);
    e.shutdown();
  });

  it('accepts HMAC frames made with the joined key', async () => {
    const { e } = engine();
    const key = randomBytes(64);
    e.openRoom(1, AUTH_HMAC, false);
    e.join(1, 5, key);
    for (let seq = 1; seq <= 10; seq++) expect(e.dispatch(frame({ player: 5, seq, key }), 5)).toBe(Verdict.Accepted);
    await settle();
    const batch = batchOf(e.drain(1));
    expect(batch.count).toBe(10);
    expect(batch.rejections).toEqual([]);
    e.shutdown();
  });
});

describe('JsEngine backpressure', () => {
  it('counts moves in flight per shard against channelCapacity', async () => {
    const { e } = engine({ channelCapacity: 4, shards: 2 });
    e.openRoom(0, AUTH_SHA256, false);
    e.openRoom(2, AUTH_SHA256, false); // same shard as room 0
    e.openRoom(1, AUTH_SHA256, false); // the other shard
    for (const room of [0, 1, 2]) e.join(room, 1, null);
    e.pause(true);
    for (let i = 1; i <= 2; i++) {
      expect(e.dispatch(frame({ room: 0, seq: i }), -1)).toBe(Verdict.Accepted);
      expect(e.dispatch(frame({ room: 2, seq: i }), -1)).toBe(Verdict.Accepted);
    }
    expect(e.dispatch(frame({ room: 0, seq: 9 }), -1)).toBe(Verdict.Backpressure);
    expect(e.dispatch(frame({ room: 1, seq: 9 }), -1)).toBe(Verdict.Accepted);
    // Control calls never answer Backpressure.
    expect(e.join(0, 1, null)).toBe(Status.Ok);
    e.pause(false);
    await settle();
    expect(e.dispatch(frame({ room: 0, seq: 9 }), -1)).toBe(Verdict.Accepted);
    e.shutdown();
  });

  it('accounts the ingress ring exactly: align8(24 + length) records, the tail skipped at the wrap', async () => {
    // A reference model of architecture.md "Ingress arena", fed random frame sizes.
    const arenaBytes = 2000;
    const { e } = engine({ arenaBytes, channelCapacity: 1 << 20, roomBytes: 1 << 24, maxPayload: 300 });
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    let pos = 0;
    let used = 0;
    let seq = 0;
    let state = 7;
    const rand = (n: number): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    let refusals = 0;
    let skips = 0;
    for (let round = 0; round < 60; round++) {
      e.pause(true);
      for (let i = 0; i < 20; i++) {
        const f = frame({ seq: ++seq, size: rand(301) });
        const record = (RECORD_HEADER_BYTES + f.length + 7) & ~7;
        const skip = pos + record > arenaBytes ? arenaBytes - pos : 0;
        const expected = used + skip + record > arenaBytes ? Verdict.Backpressure : Verdict.Accepted;
        expect(e.dispatch(f, -1), `round ${round} frame ${i}`).toBe(expected);
        if (expected === Verdict.Accepted) {
          if (skip > 0) skips++;
          used += skip + record;
          pos = (skip > 0 ? 0 : pos) + record;
          if (pos === arenaBytes) pos = 0;
        } else {
          refusals++;
        }
      }
      e.pause(false);
      await settle();
      used = 0;
      e.drain(1);
    }
    expect(refusals).toBeGreaterThan(20);
    expect(skips).toBeGreaterThan(10);
    e.shutdown();
  });

  it('reserves frame bytes per room until they are delivered, rejected frames included', async () => {
    const { e } = engine({ roomBytes: 4096 });
    e.openRoom(1, AUTH_SHA256, false);
    e.openRoom(2, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.join(2, 1, null);
    // 34 × 120 = 4080 ≤ 4096 < 35 × 120. Even seqs have a bad tag: they are rejected.
    const tagged = (seq: number): Uint8Array => {
      const f = frame({ seq });
      if (seq % 2 === 0) f[f.length - 1]! ^= 1;
      return f;
    };
    for (let seq = 1; seq <= 34; seq++) expect(e.dispatch(tagged(seq), -1)).toBe(Verdict.Accepted);
    expect(e.dispatch(frame({ seq: 35 }), -1)).toBe(Verdict.Backpressure);
    expect(e.dispatch(frame({ room: 2, seq: 35 }), -1)).toBe(Verdict.Accepted); // another room's budget
    // Even the smallest frame (56 bytes) does not fit in the 16 bytes left.
    expect(e.dispatch(frame({ seq: 36, size: 0 }), -1)).toBe(Verdict.Backpressure);
    await settle();
    expect(e.dispatch(frame({ seq: 37 }), -1)).toBe(Verdict.Backpressure); // validated, undrained
    const batch = batchOf(e.drain(1));
    expect(batch.count).toBe(17);
    expect(batch.rejections).toHaveLength(17);
    // Delivery returned every reserved byte, the rejected frames' too: the whole budget is free.
    for (let seq = 38; seq < 38 + 34; seq++) expect(e.dispatch(frame({ seq }), -1)).toBe(Verdict.Accepted);
    expect(e.dispatch(frame({ seq: 99 }), -1)).toBe(Verdict.Backpressure);
    e.shutdown();
  });
});

describe('JsEngine delivery', () => {
  it('drain copies the room into a delivery of its own (null when nothing is pending); its memory is reused at once, never the delivery', async () => {
    const { e } = engine({ roomBytes: 4096 });
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    expect(e.drain(1)).toBeNull();
    e.dispatch(frame({ seq: 1 }), -1);
    e.dispatch(frame({ seq: 2 }), -1);
    await settle();
    const a = batchOf(e.drain(1));
    expect([a.shard, a.rooms, a.count, a.moves]).toEqual([
      PULL_SHARD,
      [1],
      2,
      [
        [1, 1],
        [1, 2],
      ],
    ]);
    const kept = new Uint8Array(a.buffer!).slice();
    expect(e.drain(1)).toBeNull();
    // the whole budget is back: 34 × 120 bytes fit again, and the first delivery is untouched
    for (let seq = 3; seq <= 36; seq++) expect(e.dispatch(frame({ seq }), -1)).toBe(Verdict.Accepted);
    await settle();
    const b = batchOf(e.drain(1));
    expect(b.count).toBe(34);
    expect(b.buffer).not.toBe(a.buffer);
    expect(new Uint8Array(a.buffer!)).toEqual(kept);
    e.releaseDelivery(a.buffer!, PULL_SHARD);
    e.releaseDelivery(a.buffer!, PULL_SHARD);
    expect(a.buffer!.byteLength).toBe(0);
    expect(b.buffer!.byteLength).toBeGreaterThan(0);
    expect(e.counters().batches).toBe(2);
    e.shutdown();
  });

  it('drainAll: every pull room with content in one delivery, in the order they got content; null when none; push rooms left out', async () => {
    const { e } = engine({ shards: 2 });
    for (const room of [4, 1, 3]) {
      e.openRoom(room, AUTH_SHA256, false);
      e.join(room, 1, null);
    }
    e.openRoom(2, AUTH_SHA256, true);
    e.join(2, 1, null);
    expect(e.drainAll()).toBeNull();
    e.dispatch(frame({ room: 3, seq: 1 }), -1);
    e.dispatch(frame({ room: 1, seq: 1 }), -1);
    e.dispatch(frame({ room: 2, seq: 1 }), -1);
    const bad = frame({ room: 3, seq: 2 });
    bad[bad.length - 1]! ^= 1;
    e.dispatch(bad, -1);
    e.dispatch(frame({ room: 1, seq: 2 }), -1);
    await settle();
    // drain(1) takes room 1 first: drainAll skips it
    expect(batchOf(e.drain(1)).count).toBe(2);
    e.dispatch(frame({ room: 4, seq: 1 }), -1);
    await settle();
    const all = batchOf(e.drainAll());
    expect([all.shard, all.rooms, all.count]).toEqual([PULL_SHARD, [3, 4], 2]);
    expect(all.rejections).toEqual([{ room: 3, player: 1, seq: 2, reason: Reason.BadTag }]);
    expect(e.drainAll()).toBeNull();
    // drain(1), drainAll's 2 rooms, room 2's push delivery
    expect(e.counters().batches).toBe(4);
    expect(pushed(e.poll()).map((d) => d.rooms)).toEqual([[2]]);
    e.shutdown();
  });

  it('one push delivery out per shard: its rooms coalesce; maxBatchMoves delivers before the queue runs dry; the rest waits for releaseDelivery', async () => {
    const { e, wakes } = engine({ maxBatchMoves: 3 });
    for (const room of [1, 2]) {
      e.openRoom(room, AUTH_SHA256, true);
      e.join(room, 1, null);
    }
    expect(e.drain(1)).toBe(Status.WrongDelivery);
    e.dispatch(frame({ room: 2, seq: 1 }), -1);
    for (let seq = 1; seq <= 7; seq++) e.dispatch(frame({ room: 1, seq }), -1);
    await settle();
    expect(wakes()).toBe(1);
    const first = pushed(e.poll());
    // room 1 reached 3 moves: the shard delivered both rooms then, and holds the rest
    expect(first.map((d) => [d.shard, d.rooms, d.count])).toEqual([[0, [2, 1], 4]]);
    expect(e.poll()).toEqual([]);
    // a stale or foreign release does not free the shard
    e.releaseDelivery(new ArrayBuffer(64), 0);
    await settle();
    expect(e.poll()).toEqual([]);
    e.releaseDelivery(first[0]!.buffer!, 0);
    expect(first[0]!.buffer!.byteLength).toBe(0);
    await settle();
    const second = pushed(e.poll());
    expect(second.map((d) => [d.rooms, d.moves.map(([, s]) => s)])).toEqual([[[1], [4, 5, 6, 7]]]);
    // released twice: the second release is a no-op
    e.releaseDelivery(first[0]!.buffer!, 0);
    e.releaseDelivery(second[0]!.buffer!, 0);
    e.shutdown();
  });

  it('answers a flush token once, after every shard passed it and push deliveries went out', async () => {
    const { e, wakes } = engine({ shards: 3 });
    for (const room of [0, 1, 2]) {
      e.openRoom(room, AUTH_SHA256, true);
      e.join(room, 1, null);
    }
    e.dispatch(frame({ room: 0, seq: 1 }), -1);
    e.dispatch(frame({ room: 2, seq: 1 }), -1);
    e.requestFlush(7);
    e.requestFlush(8);
    await settle();
    const out = e.poll();
    expect(out.map((d) => d.type)).toEqual(['delivery', 'delivery', 'flushed', 'flushed']);
    expect(out.slice(2)).toEqual([
      { type: 'flushed', token: 7 },
      { type: 'flushed', token: 8 },
    ]);
    const held = pushed(out);
    expect(held.map((d) => d.shard)).toEqual([0, 2]);
    expect(wakes()).toBe(1);
    // A flush waits for a shard whose delivery was not released.
    e.dispatch(frame({ room: 0, seq: 2 }), -1);
    e.requestFlush(9);
    await settle();
    expect(e.poll()).toEqual([]);
    e.releaseDelivery(held[0]!.buffer!, 0);
    await settle();
    expect(e.poll().map((d) => (d.type === 'flushed' ? d.token : d.type === 'delivery' ? read(d.buffer).count : -1))).toEqual([1, 9]);
    e.shutdown();
  });

  it('closeRoom: pending moves stay drainable, then the room is forgotten; reopening keeps them ahead', async () => {
    const { e } = engine();
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.dispatch(frame({ seq: 1 }), -1);
    expect(e.closeRoom(1)).toBe(Status.Ok);
    expect(e.closeRoom(1)).toBe(Status.UnknownRoom);
    expect(e.join(1, 1, null)).toBe(Status.UnknownRoom);
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.UnknownRoom);
    await settle();
    expect(batchOf(e.drain(1)).count).toBe(1);
    expect(e.drain(1)).toBe(Status.UnknownRoom);

    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.dispatch(frame({ seq: 1 }), -1);
    e.closeRoom(1);
    expect(e.openRoom(1, AUTH_SHA256, false)).toBe(Status.Ok);
    expect(e.openRoom(1, AUTH_SHA256, false)).toBe(Status.RoomExists);
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.NotMember); // players were forgotten
    e.join(1, 1, null);
    expect(e.dispatch(frame({ seq: 3 }), -1)).toBe(Verdict.Accepted);
    await settle();
    const batch = batchOf(e.drain(1));
    expect(movesOf(batch)).toEqual([
      [1, 1],
      [1, 3],
    ]);
    expect(batch.rejections).toEqual([]);
    e.shutdown();
  });

  it('dispatchStream consumes whole frames and stops at backpressure, a partial tail or a bad header', () => {
    const { e } = engine({ channelCapacity: 3 });
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.pause(true);
    const [f1, f2, f3, f4] = [frame({ seq: 1 }), frame({ seq: 2, room: 5 }), frame({ seq: 3 }), frame({ seq: 4 })];
    const stream = (...parts: Uint8Array[]) => e.dispatchStream(Buffer.concat(parts), -1);
    expect(stream(f1, f2, f3, f4.subarray(0, 30))).toEqual({ consumed: 360, accepted: 2, rejected: 1, backpressure: false, malformed: false });
    expect(stream(f4, f1)).toEqual({ consumed: 120, accepted: 1, rejected: 0, backpressure: true, malformed: false });
    expect(stream(f2, new Uint8Array(30))).toEqual({ consumed: 120, accepted: 0, rejected: 1, backpressure: false, malformed: true });
    expect(stream(new Uint8Array(23))).toEqual({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false });
    // Every frame got one verdict (the desynchronised header counts as Malformed).
    expect(e.counters().verdicts).toEqual([3, 1, 0, 1, 0, 2, 0, 0, 0, 0]);
    e.shutdown();
  });

  it('after shutdown: Closed everywhere except drain, and shutdown is idempotent', async () => {
    const { e } = engine();
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.dispatch(frame({ seq: 1 }), -1);
    await settle();
    e.shutdown();
    e.shutdown();
    expect(e.dispatch(frame({ seq: 2 }), -1)).toBe(Verdict.Closed);
    expect(e.openRoom(2, AUTH_SHA256, false)).toBe(Status.Closed);
    expect(e.join(1, 2, null)).toBe(Status.Closed);
    expect(e.leave(1, 1)).toBe(Status.Closed);
    expect(e.closeRoom(1)).toBe(Status.Closed);
    expect(batchOf(e.drain(1)).count).toBe(1);
  });
});

describe('JsEngine wantWritable', () => {
  it('wakes once after capacity is next freed (a validated move, a drain handing budget back), never inside a call', async () => {
    const { e, wakes } = engine();
    e.openRoom(1, AUTH_SHA256, false);
    e.join(1, 1, null);
    e.dispatch(frame({ seq: 1 }), -1);
    await settle();
    expect(wakes()).toBe(0); // a pull room, nothing armed: validation wakes nobody
    e.wantWritable();
    e.wantWritable(); // arming twice is arming once
    e.dispatch(frame({ seq: 2 }), -1);
    await settle();
    expect(wakes()).toBe(1);
    e.dispatch(frame({ seq: 3 }), -1);
    await settle();
    expect(wakes()).toBe(1); // one-shot
    e.wantWritable();
    expect(batchOf(e.drain(1)).count).toBe(3);
    expect(wakes()).toBe(1); // not from inside drain()
    await Promise.resolve();
    expect(wakes()).toBe(2);
    // an empty drain frees nothing
    e.wantWritable();
    expect(batchOf(e.drain(1)).count).toBe(0);
    await settle();
    expect(wakes()).toBe(2);
    e.shutdown();
  });
});
