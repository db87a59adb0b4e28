/**
 * Regressions found in review, on both engines where the behaviour is shared.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, ErrorCode, Reason, Verdict, encodeMove, issueTicket } from '../index';
import type { MoveBatch } from '../index';
import { pauseForTesting } from './helpers';

const move = (room: number, seq: number) => encodeMove({ room, player: 1, seq, payload: new Uint8Array([seq & 0xff]) });

describe.each(['js', 'native'] as const)('regressions [%s]', (engine) => {
  it('a push batch with thousands of rejections arrives whole, in order, beside its moves and a flush (the native delivery records grow to fit)', async () => {
    const seen: { moves: number[]; rejections: { room: number; player: number; seq: number; reason: number }[]; batches: number } = { moves: [], rejections: [], batches: 0 };
    const d = new Dispatcher({
      engine,
      shards: 1,
      channelCapacity: 16_384,
      roomBytes: 8 << 20,
      onBatch: (b: MoveBatch) => {
        seen.batches++;
        for (const m of b) seen.moves.push(m.seq);
        for (const r of b.rejections) seen.rejections.push({ room: r.room, player: r.player, seq: r.seq, reason: r.reason });
      },
    });
    d.openRoom(7, { delivery: 'push' });
    d.join(7, 1);
    pauseForTesting(d, true);
    const N = 6_100;
    const good: number[] = [];
    for (let seq = 1; seq <= N; seq++) {
      const f = encodeMove({ room: 7, player: 1, seq, payload: new Uint8Array([seq & 0xff]) });
      if (seq % 61 === 0) good.push(seq);
      else f[f.length - 1]! ^= 0x01;
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
    }
    pauseForTesting(d, false);
    await d.flush();
    expect(seen.moves).toEqual(good);
    expect(seen.rejections.length).toBe(N - good.length);
    expect(seen.rejections.every((r, i) => r.room === 7 && r.player === 1 && r.reason === Reason.BadTag && (i === 0 || r.seq > seen.rejections[i - 1]!.seq))).toBe(true);
    const s = d.stats();
    expect(s.accepted).toBe(N);
    expect(s.delivered + s.rejected).toBe(N);
    await d.close();
  });

  it('a closing room cannot be reopened with another delivery mode; the same mode works', async () => {
    const d = new Dispatcher({ engine, shards: 1, onBatch: () => {} });
    d.openRoom(1, { delivery: 'pull' });
    d.join(1, 1);
    pauseForTesting(d, true);
    expect(d.dispatch(move(1, 1))).toBe(Verdict.Accepted);
    d.closeRoom(1);
    let error: unknown;
    try {
      d.openRoom(1, { delivery: 'push' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TypeError);
    expect((error as { code: string; field: string }).code).toBe(ErrorCode.WrongDelivery);
    expect((error as { field: string }).field).toBe('delivery');
    d.openRoom(1, { delivery: 'pull' });
    d.join(1, 1);
    expect(d.dispatch(move(1, 2))).toBe(Verdict.Accepted);
    pauseForTesting(d, false);
    await d.flush();
    expect([...d.drain(1)].length).toBe(2);
    await d.close();
  });

  it('close() resolves with a push room that has no consumer; a later batches() loop still gets the moves', async () => {
    const d = new Dispatcher({ engine, shards: 1, maxBatchMoves: 2 });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 1);
    for (let s = 1; s <= 10; s++) expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
    await Promise.race([d.close(), new Promise((_, reject) => setTimeout(() => reject(new Error('close() hung')), 5_000))]);
    const seqs: number[] = [];
    for await (const b of d.batches()) for (const m of b) seqs.push(m.seq);
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const s = d.stats();
    expect(s.accepted).toBe(s.delivered + s.rejected);
  });

  it('flush() called while close() runs resolves with it (a flush queued behind close’s own could be dropped by the shutdown and hang)', async () => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const d = new Dispatcher({ engine, shards: 16 });
      d.openRoom(1);
      const closing = d.close();
      const flushing = (async () => {
        for (let i = 0; i < 3; i++) await d.flush();
      })();
      await within(Promise.all([closing, flushing]), 5_000, `attempt ${attempt}: close() and three flushes`);
    }
  });

  it('await close() inside a batches() loop resolves while the loop holds a batch with more moves queued behind it; the held batch stays readable', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 1);
    expect(d.dispatch(move(1, 1))).toBe(Verdict.Accepted);
    const seqs: number[] = [];
    let closed = false;
    for await (const b of d.batches()) {
      for (const m of b) seqs.push(m.seq);
      if (closed) continue;
      expect(d.dispatch(move(1, 2))).toBe(Verdict.Accepted);
      await within(d.close(), 5_000, 'close() inside the loop');
      closed = true;
      expect(b.released).toBe(false);
      expect([...b].map((m) => m.seq)).toEqual([1]);
      expect(b.buffer.byteLength).toBeGreaterThan(0);
    }
    expect(seqs).toEqual([1, 2]);
    const s = d.stats();
    expect(s.accepted).toBe(s.delivered + s.rejected);
  });

  it('send, broadcast and disconnect refuse ids that are not u32 integers instead of coercing them to another room or player', () => {
    const d = new Dispatcher({ engine });
    const bytes = new Uint8Array(4);
    for (const bad of [Number.NaN, -1, 1.5, 2 ** 32, undefined, 'zero', null]) {
      const id = bad as number;
      expectCode(() => d.send(id, 1, bytes), ErrorCode.InvalidArgument);
      expectCode(() => d.send(1, id, bytes), ErrorCode.InvalidArgument);
      expectCode(() => d.broadcast(id, bytes), ErrorCode.InvalidArgument);
      if (bad !== undefined) expectCode(() => d.broadcast(1, bytes, { except: id }), ErrorCode.InvalidArgument);
      expectCode(() => d.broadcast(1, bytes, { except: [1, id] }), ErrorCode.InvalidArgument);
      expectCode(() => d.disconnect(id), ErrorCode.InvalidArgument);
      if (bad !== undefined) expectCode(() => d.disconnect(1, id), ErrorCode.InvalidArgument);
    }
    // Valid ids, nothing listening: the documented answers.
    expect(d.send(0, 0, bytes)).toBe('closed');
    expect(d.broadcast(0, bytes, { except: [0] })).toBe(0);
    expect(d.disconnect(0)).toBe(0);
  });

  it('a Proxy, an object with Uint8Array.prototype, or a subclass lying about its length is refused or read by its real bytes, with a coded error', async () => {
    const d = new Dispatcher({ engine });
    d.openRoom(1);
    d.openRoom(2, { auth: 'hmac-sha256' });
    d.join(1, 1);
    const real = move(1, 1);
    const fakes: unknown[] = [new Proxy(real, {}), Object.setPrototypeOf({ length: real.length }, Uint8Array.prototype)];
    for (const fake of fakes) {
      const f = fake as Uint8Array;
      // dispatch() keeps a cheap instanceof on its hot path: the engine may read such an object
      // (a verdict) or refuse it, but any error is the coded one.
      try {
        expect(typeof d.dispatch(f)).toBe('number');
      } catch (e) {
        expect((e as { code?: string }).code).toBe(ErrorCode.InvalidArgument);
      }
      expectCode(() => d.dispatchStream(f), ErrorCode.InvalidArgument);
      expectCode(() => d.join(2, 7, { key: f }), ErrorCode.InvalidArgument);
      expectCode(() => d.send(1, 1, f), ErrorCode.InvalidArgument);
      expectCode(() => issueTicket(f, { room: 1, player: 1 }), ErrorCode.InvalidArgument);
    }
    class Liar extends Uint8Array {
      override get length(): number {
        return 32;
      }
    }
    // A 4-byte key that claims 32 bytes: too short, by its real length.
    expectCode(() => d.join(2, 7, { key: new Liar(4) }), ErrorCode.InvalidArgument);
    expect(d.dispatch(real)).toBe(Verdict.Accepted);
    await d.close();
  });

  it('an empty drain(room) batch is released by the room\'s next drain, like any batch', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    d.openRoom(1);
    d.join(1, 1);
    const empty = d.drain(1);
    expect(empty.count).toBe(0);
    expect(d.dispatch(move(1, 1))).toBe(Verdict.Accepted);
    await d.flush();
    const full = d.drain(1);
    expect(empty.released).toBe(true);
    expect(full.released).toBe(false);
    expect(full.count).toBe(1);
    d.drain(1);
    expect(full.released).toBe(true);
    await d.close();
  });

  it('a push delivery of a batch filled to maxBatchMoves records its moves\' dispatch → delivered times with it (js: one delivery late)', async () => {
    const d = new Dispatcher({ engine, shards: 1, maxBatchMoves: 1, onDelivery: () => {} });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 1);
    for (let seq = 1; seq <= 3; seq++) {
      expect(d.dispatch(move(1, seq))).toBe(Verdict.Accepted);
      await d.flush();
      const s = d.stats();
      expect(s.delivered).toBe(seq);
      expect(s.latency?.deliveredNs.count).toBe(seq);
    }
    await d.close();
  });

  it('drain() never runs the dispatcher\'s poll inside itself: a push delivery and a waiting dispatchAsync come after it returns', async () => {
    let inDrain = false;
    const calls: string[] = [];
    const d = new Dispatcher({ engine, shards: 1, roomBytes: 4096, onDelivery: () => calls.push(inDrain ? 'inside' : 'after') });
    d.openRoom(1);
    d.openRoom(2, { delivery: 'push' });
    d.join(1, 1);
    d.join(2, 1);
    pauseForTesting(d, true);
    expect(d.dispatch(move(2, 1))).toBe(Verdict.Accepted);
    // Fill room 1's budget; one more waits in dispatchAsync.
    let seq = 1;
    while (d.dispatch(move(1, seq)) === Verdict.Accepted) seq++;
    const waiting = d.dispatchAsync(move(1, seq));
    const pressured = d.stats().verdicts.Backpressure;
    pauseForTesting(d, false);
    inDrain = true;
    d.drain(1);
    inDrain = false;
    const counted = d.stats().verdicts.Backpressure - pressured;
    expect(await waiting).toBe(Verdict.Accepted);
    await d.flush();
    expect(calls).not.toContain('inside');
    expect(calls.length).toBeGreaterThan(0);
    // The drain made no retry of its own before it had freed the budget.
    expect(counted).toBe(0);
    await d.close();
  });

  it('pinCores with a hole is refused with a coded error (map() skipped the hole, which reached the addon)', () => {
    // eslint-disable-next-line no-sparse-arrays
    expectCode(() => new Dispatcher({ engine, pinCores: [, 0] as number[] }), ErrorCode.InvalidOption);
  });

  it('an unknown listen option lists the public options only (not the internal test hooks)', async () => {
    const d = new Dispatcher({ engine });
    const options = { ws: { port: 0 }, ticketKey: 'k'.repeat(32), maxConection: 1 } as unknown as Parameters<Dispatcher['listen']>[0];
    const error = (await d.listen(options).then(
      () => new Error('listen() accepted an unknown option'),
      (e: unknown) => e,
    )) as Error & { code?: string };
    expect(error.code).toBe(ErrorCode.InvalidOption);
    expect(error.message).toMatch(/unknown option "maxConection" \(did you mean maxConnections\?\)/);
    expect(error.message).not.toMatch(/ForTesting/);
    await d.close();
  });
});

/** Throws if `promise` has not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function expectCode(fn: () => unknown, code: string): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${code}`).toBeInstanceOf(Error);
  expect((error as { code?: string }).code).toBe(code);
}

describe('native deliveries', () => {
  it('the last drain of a closed room is memory of its own: it outlives the room; the drain it replaced is detached', async () => {
    const d = new Dispatcher({ shards: 1 });
    d.openRoom(1);
    d.join(1, 1);
    d.dispatch(move(1, 1));
    await d.flush();
    const first = d.drain(1);
    const firstBytes = first.bytes();
    expect(firstBytes.byteLength).toBe(57);
    d.dispatch(move(1, 2));
    d.closeRoom(1);
    await d.flush();
    const last = d.drain(1);
    expect(last.count).toBe(1);
    expect(last.buffer).not.toBe(first.buffer);
    expect(first.released).toBe(true);
    expect(firstBytes.byteLength).toBe(0);
    expect(() => d.drain(1)).toThrow(expect.objectContaining({ code: ErrorCode.UnknownRoom }));
    await d.close();
    const seqs: number[] = [];
    for (const m of last) seqs.push(m.seq);
    expect(seqs).toEqual([2]);
  });
});
