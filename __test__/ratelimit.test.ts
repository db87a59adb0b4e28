/**
 * Per-player rate limit (token bucket), on both engines: the burst passes, the next frame
 * answers RateLimited, a refusal spends nothing, tokens come back with time, each player
 * (keyed by the proven sender) has a bucket of its own, and non-members (NotMember) spend none.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, ErrorCode, Verdict, encodeMove } from '../index';

const move = (room: number, player: number, seq: number) => encodeMove({ room, player, seq });

describe.each(['js', 'native'] as const)('rate limit [%s]', (engine) => {
  it('fires at its threshold and not before, and refills', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    d.openRoom(1, { rateLimit: { perSecond: 100, burst: 4 } });
    d.join(1, 7);
    d.join(1, 8);
    const first = [1, 2, 3, 4, 5, 6].map((s) => d.dispatch(move(1, 7, s), 7));
    expect(first).toEqual([0, 0, 0, 0, Verdict.RateLimited, Verdict.RateLimited]);
    // another player's bucket is full
    expect(d.dispatch(move(1, 8, 1), 8)).toBe(Verdict.Accepted);
    // without a sender, the frame's player is the key
    expect(d.dispatch(move(1, 7, 7))).toBe(Verdict.RateLimited);
    await new Promise((r) => setTimeout(r, 30)); // 100/s: ~3 tokens back
    expect(d.dispatch(move(1, 7, 8), 7)).toBe(Verdict.Accepted);
    const s = d.stats();
    expect(s.verdicts.RateLimited).toBe(3);
    expect(s.accepted).toBe(6);
    expect(d.metrics()).toContain('move_dispatcher_verdicts_total{verdict="RateLimited"} 3');
    await d.flush();
    expect(d.drain(1).count).toBe(6);
    await d.close();
  });

  it('is off by default, and rejoining does not refill the bucket', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    d.openRoom(1);
    d.join(1, 1);
    for (let s = 1; s <= 200; s++) expect(d.dispatch(move(1, 1, s), 1)).toBe(Verdict.Accepted);
    d.openRoom(2, { rateLimit: { perSecond: 0.001, burst: 1 } });
    d.join(2, 1);
    expect(d.dispatch(move(2, 1, 1), 1)).toBe(Verdict.Accepted);
    d.join(2, 1);
    expect(d.dispatch(move(2, 1, 2), 1)).toBe(Verdict.RateLimited);
    await d.close();
  });

  it('a non-member spends no token: NotMember comes first, and its bucket starts full at join', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    d.openRoom(1, { rateLimit: { perSecond: 0.001, burst: 2 } });
    d.join(1, 7);
    for (let s = 1; s <= 100; s++) {
      expect(d.dispatch(move(1, 8, s), 8)).toBe(Verdict.NotMember);
      expect(d.dispatch(move(1, 8, s))).toBe(Verdict.NotMember);
    }
    // the member's bucket is untouched
    expect([1, 2, 3].map((s) => d.dispatch(move(1, 7, s), 7))).toEqual([Verdict.Accepted, Verdict.Accepted, Verdict.RateLimited]);
    // the non-member joins: a full bucket, none of its 200 refused frames spent a token
    d.join(1, 8);
    expect([1, 2, 3].map((s) => d.dispatch(move(1, 8, s), 8))).toEqual([Verdict.Accepted, Verdict.Accepted, Verdict.RateLimited]);
    const s = d.stats();
    expect(s.verdicts.NotMember).toBe(200);
    expect(s.verdicts.RateLimited).toBe(2);
    expect(s.accepted).toBe(4);
    await d.flush();
    expect(d.drain(1).count).toBe(4);
    await d.close();
  });

  it('validates its options', async () => {
    const d = new Dispatcher({ engine, shards: 1 });
    for (const [rateLimit, field] of [
      [{ perSecond: 0, burst: 1 }, 'rateLimit.perSecond'],
      [{ perSecond: Number.NaN, burst: 1 }, 'rateLimit.perSecond'],
      [{ perSecond: 10, burst: 0 }, 'rateLimit.burst'],
      [{ perSecond: 10, burst: 1.5 }, 'rateLimit.burst'],
      [5, 'rateLimit'],
    ] as const) {
      expect(() => d.openRoom(1, { rateLimit: rateLimit as never })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, field }));
    }
    await d.close();
  });
});
