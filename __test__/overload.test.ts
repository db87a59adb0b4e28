/**
 * Overload signals for the control plane, on both engines: a shard queue or a room crossing
 * its mark is reported once (not before), and recovery follows at half the mark.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, type OverloadEvent, Verdict, encodeMove } from '../index';
import { resolveOptions } from '../src/options';
import { pauseForTesting } from './helpers';

const move = (room: number, seq: number) => encodeMove({ room, player: 1, seq, payload: new Uint8Array(4) });
const tick = () => new Promise((r) => setTimeout(r, 20));

describe.each(['js', 'native'] as const)('overload [%s]', (engine) => {
  it('a shard queue: reported at the mark, not before; recovered at half of it', async () => {
    const events: OverloadEvent[] = [];
    const d = new Dispatcher({
      engine,
      shards: 1,
      channelCapacity: 16,
      overload: { queueDepth: 4, roomBytes: 0 },
      onOverload: (e) => events.push(e),
      onRecovered: (e) => events.push(e),
    });
    d.openRoom(1);
    d.join(1, 1);
    pauseForTesting(d, true);
    for (let s = 1; s <= 3; s++) expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
    await tick();
    expect(events).toEqual([]);
    expect(d.dispatch(move(1, 4))).toBe(Verdict.Accepted);
    expect(events).toEqual([]); // never inside dispatch
    await tick();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ subject: 'shard', id: 0, recovered: false, depth: 4, threshold: 4 });
    expect(d.dispatch(move(1, 5))).toBe(Verdict.Accepted);
    await tick();
    expect(events).toHaveLength(1); // once, until it recovers
    pauseForTesting(d, false);
    await d.flush();
    await tick();
    expect(events).toHaveLength(2);
    expect(events[1]).toMatchObject({ subject: 'shard', id: 0, recovered: true, threshold: 4 });
    expect(events[1]!.depth).toBeLessThanOrEqual(2);
    // The shard's own dispatch → validated waits since the overload event (all 5 moves).
    expect(events[1]!.p99WaitNs).toBeGreaterThan(0);
    await d.close();
  });

  it('a room: reported when its undelivered bytes reach the mark; recovered after drain', async () => {
    const events: OverloadEvent[] = [];
    const d = new Dispatcher({
      engine,
      shards: 1,
      roomBytes: 4096,
      overload: { roomBytes: 600, queueDepth: 0 },
      onOverload: (e) => events.push(e),
      onRecovered: (e) => events.push(e),
    });
    d.openRoom(7);
    d.join(7, 1);
    // 60-byte frames: 9 = 540 bytes stay under the mark, the 10th reaches 600
    for (let s = 1; s <= 9; s++) expect(d.dispatch(move(7, s))).toBe(Verdict.Accepted);
    await d.flush();
    await tick();
    expect(events).toEqual([]);
    expect(d.dispatch(move(7, 10))).toBe(Verdict.Accepted);
    await tick();
    expect(events).toEqual([expect.objectContaining({ subject: 'room', id: 7, recovered: false, depth: 600, threshold: 600 })]);
    await d.flush();
    expect(d.drain(7).count).toBe(10);
    await tick();
    expect(events[1]).toMatchObject({ subject: 'room', id: 7, recovered: true, depth: 0 });
    // The room's own dispatch → delivered waits (its 10 moves, held for > 20 ms before the drain).
    expect(events[1]!.p99WaitNs).toBeGreaterThan(10e6);
    await d.close();
  });

  it("a room's p99 wait is its own: a busy neighbour does not lend it its waits", async () => {
    const events: OverloadEvent[] = [];
    const d = new Dispatcher({
      engine,
      shards: 1,
      roomBytes: 4096,
      overload: { roomBytes: 600, queueDepth: 0 },
      onOverload: (e) => events.push(e),
      onRecovered: (e) => events.push(e),
    });
    d.openRoom(1);
    d.join(1, 1);
    d.openRoom(2);
    d.join(2, 1);
    // Room 2's moves wait ~60 ms before their drain; room 1's are drained at once.
    for (let s = 1; s <= 5; s++) d.dispatch(move(2, s));
    await new Promise((r) => setTimeout(r, 60));
    await d.flush();
    d.drain(2);
    for (let s = 1; s <= 10; s++) d.dispatch(move(1, s));
    await d.flush();
    d.drain(1);
    await tick();
    const recovered = events.find((e) => e.subject === 'room' && e.id === 1 && e.recovered);
    expect(recovered).toBeDefined();
    expect(recovered!.p99WaitNs).toBeGreaterThan(0);
    expect(recovered!.p99WaitNs).toBeLessThan(50e6);
    await d.close();
  });

  it('a recovery noticed by a drain after close() is still reported', async () => {
    const events: OverloadEvent[] = [];
    const d = new Dispatcher({
      engine,
      shards: 1,
      roomBytes: 4096,
      overload: { roomBytes: 600, queueDepth: 0 },
      onOverload: (e) => events.push(e),
      onRecovered: (e) => events.push(e),
    });
    d.openRoom(7);
    d.join(7, 1);
    for (let s = 1; s <= 10; s++) d.dispatch(move(7, s));
    await d.close();
    expect(events.map((e) => e.recovered)).toEqual([false]);
    expect(d.drain(7).count).toBe(10);
    await tick();
    expect(events.map((e) => e.recovered)).toEqual([false, true]);
  });

  it('a throwing callback is reported by name (default: a process warning) and delivery goes on', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const d = new Dispatcher({
        engine,
        shards: 1,
        roomBytes: 4096,
        overload: { roomBytes: 600, queueDepth: 0 },
        onOverload: () => {
          throw new Error('boom');
        },
      });
      d.openRoom(7);
      d.join(7, 1);
      for (let s = 1; s <= 10; s++) d.dispatch(move(7, s));
      await d.flush();
      await tick();
      expect(d.drain(7).count).toBe(10);
      await d.close();
      await tick();
      expect(warnings.some((m) => m.includes('onOverload threw') && m.includes('boom'))).toBe(true);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('validates the marks and the callbacks', () => {
    expect(() => new Dispatcher({ engine, overload: { queueDepth: -1 } })).toThrow(expect.objectContaining({ field: 'overload.queueDepth' }));
    expect(() => new Dispatcher({ engine, channelCapacity: 8, overload: { queueDepth: 9 } })).toThrow(expect.objectContaining({ field: 'overload.queueDepth' }));
    expect(() => new Dispatcher({ engine, onOverload: 3 as never })).toThrow(expect.objectContaining({ field: 'onOverload' }));
  });
});

describe('overload marks are tracked only when someone listens', () => {
  it('without onOverload / onRecovered both marks are off; with either, the defaults or the given marks hold', () => {
    const off = resolveOptions({ channelCapacity: 1000, roomBytes: 8192, overload: { queueDepth: 10, roomBytes: 100 } }).config;
    expect([off.overloadQueueDepth, off.overloadRoomBytes]).toEqual([0, 0]);
    const byDefault = resolveOptions({ channelCapacity: 1000, roomBytes: 8192, onRecovered: () => {} }).config;
    expect([byDefault.overloadQueueDepth, byDefault.overloadRoomBytes]).toEqual([750, 6144]);
    const given = resolveOptions({ channelCapacity: 1000, roomBytes: 8192, overload: { queueDepth: 10, roomBytes: 100 }, onOverload: () => {} }).config;
    expect([given.overloadQueueDepth, given.overloadRoomBytes]).toEqual([10, 100]);
  });

  it('a bad mark is refused even with nobody listening', () => {
    expect(() => resolveOptions({ overload: { queueDepth: -1 } })).toThrow(RangeError);
  });
});
