/**
 * stats(): each counter moves when, and only when, its event happens — on both engines.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, Verdict, encodeMove } from '../index';
import { pauseForTesting } from './helpers';

const move = (room: number, seq: number, payload = 4) => encodeMove({ room, player: 1, seq, payload: new Uint8Array(payload) });
/** Bytes a frame of `payload` bytes takes in the arena: align8(24 + 56 + payload). */
const record = (payload: number) => (24 + 56 + payload + 7) & ~7;

describe.each(['js', 'native'] as const)('stats [%s]', (engine) => {
  it('backpressure by cause, queue depth and arena use, high-water marks and reset', async () => {
    const d = new Dispatcher({ engine, shards: 1, channelCapacity: 8, arenaBytes: 64 << 10, roomBytes: 8192, maxPayload: 4096 });
    d.openRoom(1);
    d.openRoom(2);
    d.join(1, 1);
    d.join(2, 1);
    pauseForTesting(d, true);
    let s = d.stats();
    expect(s.backpressure).toEqual({ queue: 0, arena: 0, room: 0 });
    expect(s.shards).toEqual([{ shard: 0, queueDepth: 0, queueHighWater: 0, arena: { capacity: 64 << 10, used: 0, highWater: 0, wraps: 0 } }]);
    for (let i = 1; i <= 3; i++) expect(d.dispatch(move(1, i))).toBe(Verdict.Accepted);
    s = d.stats();
    expect(s.shards[0]!.queueDepth).toBe(3);
    expect(s.shards[0]!.queueHighWater).toBe(3);
    expect(s.shards[0]!.arena.used).toBe(3 * record(4));
    expect(s.rooms).toEqual([{ room: 1, bytes: 3 * 60 }]);
    // room budget: an 8,100-byte frame does not fit room 1's remaining 8192 - 180 bytes
    expect(d.dispatch(move(1, 4, 4096))).toBe(Verdict.Accepted);
    expect(d.dispatch(move(1, 5, 4096))).toBe(Verdict.Backpressure);
    expect(d.stats().backpressure).toEqual({ queue: 0, arena: 0, room: 1 });
    // queue: 8 moves in flight
    for (let i = 5; i <= 8; i++) expect(d.dispatch(move(2, i))).toBe(Verdict.Accepted);
    expect(d.dispatch(move(2, 9))).toBe(Verdict.Backpressure);
    s = d.stats();
    expect(s.backpressure).toEqual({ queue: 1, arena: 0, room: 1 });
    expect(s.verdicts.Backpressure).toBe(2);
    expect(s.rooms).toEqual([
      { room: 1, bytes: 3 * 60 + 56 + 4096 },
      { room: 2, bytes: 4 * 60 },
    ]);
    expect(d.stats({ topRooms: 1 }).rooms).toEqual([{ room: 1, bytes: 3 * 60 + 56 + 4096 }]);
    pauseForTesting(d, false);
    await d.flush();
    for (const bad of ['yes', 1, null]) {
      expect(() => d.stats({ reset: bad as never })).toThrow(expect.objectContaining({ code: 'ERR_MOVE_DISPATCHER_INVALID_ARGUMENT', field: 'reset' }));
    }
    s = d.stats({ reset: true });
    expect(s.shards[0]!.queueDepth).toBe(0);
    expect(s.shards[0]!.arena.used).toBe(0);
    expect(s.shards[0]!.queueHighWater).toBeGreaterThanOrEqual(8);
    s = d.stats();
    expect(s.shards[0]!.queueHighWater).toBe(0);
    expect(s.shards[0]!.arena.highWater).toBe(0);
    d.drain(1);
    d.drain(2);
    expect(d.stats().rooms).toEqual([]);
    await d.close();
  });

  it('arena refusals and wraps', async () => {
    // 64 KiB arena, 4 KiB frames (4160-byte records): 15 fit, the 16th is refused.
    const d = new Dispatcher({ engine, shards: 1, channelCapacity: 1000, arenaBytes: 64 << 10, roomBytes: 1 << 20, maxPayload: 4096 });
    d.openRoom(1);
    d.join(1, 1);
    pauseForTesting(d, true);
    let accepted = 0;
    for (let i = 1; i <= 16; i++) if (d.dispatch(move(1, i, 4096)) === Verdict.Accepted) accepted++;
    expect(accepted).toBe(Math.floor((64 << 10) / record(4096)));
    expect(d.stats().backpressure).toEqual({ queue: 0, arena: 1, room: 0 });
    expect(d.stats().shards[0]!.arena.wraps).toBe(0);
    pauseForTesting(d, false);
    await d.flush();
    expect(d.dispatch(move(1, 100, 4096))).toBe(Verdict.Accepted);
    expect(d.stats().shards[0]!.arena.wraps).toBe(1);
    await d.close();
    // The arena's memory is freed at close, its figures stay: a counter never goes back.
    expect(d.stats().shards[0]!.arena).toMatchObject({ capacity: 64 << 10, wraps: 1 });
    expect(d.metrics()).toMatch(/move_dispatcher_arena_wraps_total\{shard="0"\} 1\n/);
    expect(d.metrics()).toMatch(/move_dispatcher_arena_capacity_bytes\{shard="0"\} 65536\n/);
  });

  it('runtime describes the engine', async () => {
    const d = new Dispatcher({ engine, shards: 2, workerThreads: 1, threadName: 'stats-t' });
    const r = d.stats().runtime;
    expect(r).toEqual({
      workerThreads: engine === 'js' ? 0 : 1,
      maxBlockingThreads: 4,
      shards: 2,
      pinnedCores: null,
      threadName: 'stats-t',
    });
    expect(d.stats().shards.map((s) => s.shard)).toEqual([0, 1]);
    await d.close();
  });
});

describe.each(['js', 'native'] as const)('stats latency and allocator [%s]', (engine) => {
  it('histograms count every move once, their buckets rebuild them, and reset starts a new interval', async () => {
    const d = new Dispatcher({ engine, shards: 2 });
    for (const r of [1, 2]) {
      d.openRoom(r);
      d.join(r, 1);
    }
    const n = 500;
    for (let s = 1; s <= n; s++) for (const r of [1, 2]) expect(d.dispatch(move(r, s))).toBe(Verdict.Accepted);
    d.dispatch(move(1, 1)); // a replay: validated, then rejected
    await d.flush();
    const b1 = d.drain(1);
    const b2 = d.drain(2);
    expect(b1.count + b2.count).toBe(2 * n);
    const s = d.stats({ reset: true });
    const l = s.latency!;
    expect(l.validatedNs.count).toBe(2 * n + 1);
    expect(l.deliveredNs.count).toBe(2 * n);
    expect(l.batchSize.count).toBe(2);
    expect(l.batchSize.max).toBe(n);
    expect(l.arenaAllocNs.count).toBeGreaterThanOrEqual(Math.floor((2 * n) / 64));
    for (const h of [l.validatedNs, l.deliveredNs, l.batchSize, l.arenaAllocNs]) {
      expect(h.buckets.reduce((a, [, c]) => a + c, 0)).toBe(h.count);
      expect(h.min).toBeLessThanOrEqual(h.p50);
      expect(h.p50).toBeLessThanOrEqual(h.p90);
      expect(h.p90).toBeLessThanOrEqual(h.p99);
      expect(h.p99).toBeLessThanOrEqual(h.p999);
      expect(h.p999).toBeLessThanOrEqual(h.max);
    }
    // delivered ≥ validated for the same moves: every delivery comes after its validation
    expect(l.deliveredNs.min).toBeGreaterThanOrEqual(l.validatedNs.min);
    const after = d.stats().latency!;
    expect(after.validatedNs.count).toBe(0);
    expect(after.deliveredNs.count).toBe(0);
    // metrics() histograms are never reset
    const text = d.metrics();
    const perShard = [...text.matchAll(/^move_dispatcher_validated_latency_seconds_count\{shard="\d+"\} (\d+)$/gm)].map((m) => Number(m[1]));
    expect(perShard).toHaveLength(s.shards.length);
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(2 * n + 1);
    if (engine === 'native') {
      const a = s.allocator!;
      if (process.env.MOVE_DISPATCHER_ALLOCATOR === 'system') {
        // sanitizer build (feature system-alloc, docs/sanitizers.md): no jemalloc to report
        expect(a.jemalloc).toBeNull();
      } else {
        expect(a.jemalloc!.allocated).toBeGreaterThan(0);
        expect(a.jemalloc!.resident).toBeGreaterThanOrEqual(a.jemalloc!.active);
      }
      expect(typeof a.hotPathAllocations).toBe('number');
    } else {
      expect(s.allocator).toBeNull(); // no jemalloc, no counting allocator in pure JavaScript
    }
    await d.close();
  });
});
