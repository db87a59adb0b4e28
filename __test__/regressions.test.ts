/**
 * Regressions found in review, on both engines where the behaviour is shared.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, ErrorCode, Reason, Verdict, encodeMove } from '../index';
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
});

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
