/**
 * The public contract (docs/architecture.md, README "API" and "Guarantees"), run against
 * both engines with one parametrised suite.
 */
import { cpus } from 'node:os';
import { describe, expect, it, vi } from 'vitest';
import { Dispatcher, ErrorCode, Reason, Verdict, encodeMove } from '../index';
import type { MoveBatch, MoveView } from '../index';
import {
  ENGINES,
  OVERHEAD,
  Rng,
  absorb,
  bytesOf,
  concat,
  corrupt,
  downgrade,
  emptyCollected,
  expectArgError,
  expectCode,
  flushAndDrain,
  flushDrain,
  frame,
  hex,
  keyFor,
  movesOf,
  parse,
  patch,
  pushSink,
  reroute,
  retag,
  skipReason,
  sleep,
  thrown,
  upgrade,
  useDispatchers,
  verdictName,
  pauseForTesting,
  failShardForTesting,
  until,
} from './helpers';

const ALL_VERDICTS = new Set<number>(Object.values(Verdict));

/** Resolves after `n` turns of the event loop (setImmediate: works while timers are faked). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * `promise`, or a rejection naming `what` once `ms` of real time passed. Polls with
 * setImmediate and performance.now(), so it works while setTimeout / setInterval are faked.
 */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let done = false;
  const settled = promise.finally(() => {
    done = true;
  });
  const end = performance.now() + ms;
  while (!done) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return settled;
}

/** Fakes the timers (setTimeout / setInterval never fire) around `fn`; setImmediate stays real: the js engine's rounds run on it. */
async function withoutTimers(fn: () => Promise<void>): Promise<void> {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
  try {
    await fn();
  } finally {
    vi.useRealTimers();
  }
}

/** Tracks whether a promise settled (without awaiting it). */
function track<T>(p: Promise<T>): { settled: () => boolean; value: () => T | undefined; promise: Promise<T> } {
  let done = false;
  let v: T | undefined;
  const promise = p.then((x) => {
    done = true;
    v = x;
    return x;
  });
  return { settled: () => done, value: () => v, promise };
}

describe.each(ENGINES)('conformance [%s engine]', (engine) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  /** A dispatcher with pull room 1 (sha256) and player 7 joined. */
  function basic(options: Parameters<typeof make>[0] = {}): Dispatcher {
    const d = make(options);
    d.openRoom(1);
    d.join(1, 7);
    return d;
  }

  // -------------------------------------------------------------------------------------
  describe('synchronous verdicts', () => {
    it('Accepted: a valid frame is queued, validated and delivered once', async () => {
      const d = basic();
      const f = frame({ room: 1, player: 7, seq: 1, tick: 1200, kind: 5, payload: 10 });
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves).toEqual([parse(f)]);
      expect(c.rejections).toEqual([]);
      expect(hex(concat(c.bytes))).toBe(hex(f));
      const s = d.stats();
      expect(s.engine).toBe(engine);
      expect(s.dispatched).toBe(1);
      expect(s.accepted).toBe(1);
      expect(s.delivered).toBe(1);
      expect(s.verdicts.Accepted).toBe(1);
    });

    it('Accepted: frames that are views into larger memory (Buffer pool, odd byteOffset, SharedArrayBuffer)', async () => {
      const d = basic();
      const f1 = frame({ room: 1, player: 7, seq: 1, payload: 3 });
      const f2 = frame({ room: 1, player: 7, seq: 2, payload: 8 });
      const f3 = frame({ room: 1, player: 7, seq: 3, payload: 0 });
      const big = new Uint8Array(1000);
      big.set(f1, 333);
      expect(d.dispatch(big.subarray(333, 333 + f1.length))).toBe(Verdict.Accepted);
      expect(d.dispatch(Buffer.from(f2))).toBe(Verdict.Accepted);
      const shared = new Uint8Array(new SharedArrayBuffer(f3.length + 8), 8);
      shared.set(f3);
      expect(d.dispatch(shared)).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 2, 3]);
      expect(hex(concat(c.bytes))).toBe(hex(concat([f1, f2, f3])));
    });

    it('Malformed: shorter than a header (0..23 bytes)', () => {
      const d = basic();
      const f = frame({ room: 1, player: 7, seq: 1 });
      expect(d.dispatch(new Uint8Array(0))).toBe(Verdict.Malformed);
      expect(d.dispatch(Buffer.alloc(0))).toBe(Verdict.Malformed);
      for (let n = 1; n < 24; n++) expect(d.dispatch(f.subarray(0, n)), `length ${n}`).toBe(Verdict.Malformed);
      expect(d.stats().accepted).toBe(0);
    });

    it('Malformed: bad magic, bad version, reserved flag bits', () => {
      const d = basic();
      d.openRoom(2, { auth: 'hmac-sha256' });
      d.join(2, 7, { key: keyFor(7) });
      const f = frame({ room: 1, player: 7, seq: 1, payload: 4 });
      const h = frame({ room: 2, player: 7, seq: 1, payload: 4, key: keyFor(7) });
      for (const base of [f, h]) {
        expect(d.dispatch(patch(base, { magic0: 0x4e }))).toBe(Verdict.Malformed);
        expect(d.dispatch(patch(base, { magic1: 0x57 }))).toBe(Verdict.Malformed);
        expect(d.dispatch(patch(base, { magic0: 0x56, magic1: 0x4d }))).toBe(Verdict.Malformed);
        expect(d.dispatch(patch(base, { version: 0 }))).toBe(Verdict.Malformed);
        expect(d.dispatch(patch(base, { version: 2 }))).toBe(Verdict.Malformed);
        expect(d.dispatch(patch(base, { version: 255 }))).toBe(Verdict.Malformed);
        for (const flags of [0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xfe, 0xff]) {
          expect(d.dispatch(patch(base, { flags: flags | (base[3]! & 1) })), `flags ${flags}`).toBe(Verdict.Malformed);
          expect(d.dispatch(patch(base, { flags })), `flags ${flags}`).toBe(Verdict.Malformed);
        }
      }
      expect(d.stats().accepted).toBe(0);
    });

    it('Malformed: the length field disagrees with the frame length', () => {
      const d = basic();
      const f = frame({ room: 1, player: 7, seq: 1, payload: 20 });
      expect(d.dispatch(concat([f, new Uint8Array(1)]))).toBe(Verdict.Malformed);
      expect(d.dispatch(f.subarray(0, f.length - 1))).toBe(Verdict.Malformed);
      expect(d.dispatch(f.subarray(0, 24))).toBe(Verdict.Malformed);
      expect(d.dispatch(f.subarray(0, 55))).toBe(Verdict.Malformed);
      expect(d.dispatch(patch(f, { len: 21 }))).toBe(Verdict.Malformed);
      expect(d.dispatch(patch(f, { len: 19 }))).toBe(Verdict.Malformed);
      expect(d.dispatch(patch(f, { len: 0 }))).toBe(Verdict.Malformed);
      // two frames back to back are not one frame
      expect(d.dispatch(concat([f, frame({ room: 1, player: 7, seq: 2 })]))).toBe(Verdict.Malformed);
      expect(d.stats().accepted).toBe(0);
    });

    it('Malformed: seq 0 (even with a correct tag, in an open room, from a member)', () => {
      const d = basic();
      expect(d.dispatch(retag(patch(frame({ room: 1, player: 7, seq: 1 }), { seq: 0 })))).toBe(Verdict.Malformed);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 0, payload: 5 }))).toBe(Verdict.Malformed);
      expect(d.stats().verdicts.Malformed).toBe(2);
    });

    it('Oversize: payload longer than maxPayload; maxPayload itself is accepted', async () => {
      const d = basic({ maxPayload: 16 });
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1, payload: 16 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2, payload: 17 }))).toBe(Verdict.Oversize);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 3, payload: 1000 }))).toBe(Verdict.Oversize);
      // Oversize is decided from the length field, before the frame length is compared (rule 4 before 5)
      expect(d.dispatch(patch(frame({ room: 1, player: 7, seq: 4 }), { len: 65535 }).subarray(0, 24))).toBe(Verdict.Oversize);
      expect(d.dispatch(patch(frame({ room: 1, player: 7, seq: 5 }), { len: 17 }))).toBe(Verdict.Oversize);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1]);
      expect(d.stats().verdicts.Oversize).toBe(4);
    });

    it('Oversize with maxPayload 0: only empty payloads pass', () => {
      const d = basic({ maxPayload: 0 });
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2, payload: 1 }))).toBe(Verdict.Oversize);
    });

    it('UnknownRoom: never opened, or closed', () => {
      const d = basic();
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.UnknownRoom);
      expect(d.dispatch(frame({ room: 0xffffffff, player: 7, seq: 1 }))).toBe(Verdict.UnknownRoom);
      d.openRoom(3);
      d.join(3, 7);
      expect(d.dispatch(frame({ room: 3, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      d.closeRoom(3);
      expect(d.dispatch(frame({ room: 3, player: 7, seq: 2 }))).toBe(Verdict.UnknownRoom);
      expect(d.stats().verdicts.UnknownRoom).toBe(3);
    });

    it('AuthMismatch: in both directions (no downgrade, no upgrade)', async () => {
      const d = basic();
      d.openRoom(2, { auth: 'hmac-sha256' });
      const key = keyFor(7);
      d.join(2, 7, { key });
      const h = frame({ room: 2, player: 7, seq: 1, key });
      const s = frame({ room: 1, player: 7, seq: 1 });
      // an HMAC-room move re-encoded as a correct SHA-256 frame
      expect(d.dispatch(downgrade(h))).toBe(Verdict.AuthMismatch);
      // a SHA-256 frame into an HMAC room
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 2 }))).toBe(Verdict.AuthMismatch);
      // an HMAC frame into a SHA-256 room (even one correctly keyed)
      expect(d.dispatch(upgrade(s, key))).toBe(Verdict.AuthMismatch);
      // a bare flag flip
      expect(d.dispatch(patch(h, { flags: 0 }))).toBe(Verdict.AuthMismatch);
      expect(d.dispatch(patch(s, { flags: 1 }))).toBe(Verdict.AuthMismatch);
      expect(d.dispatch(h)).toBe(Verdict.Accepted);
      expect(d.dispatch(s)).toBe(Verdict.Accepted);
      const got = await flushAndDrain(d, [1, 2]);
      expect(got.get(1)!.moves.length).toBe(1);
      expect(got.get(2)!.moves.length).toBe(1);
      expect(d.stats().verdicts.AuthMismatch).toBe(5);
    });

    it('WrongSender: sender given and different from the player; equal or omitted passes', async () => {
      const d = basic();
      d.join(1, 0);
      d.join(1, 0xffffffff);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 8)).toBe(Verdict.WrongSender);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 0)).toBe(Verdict.WrongSender);
      expect(d.dispatch(frame({ room: 1, player: 0, seq: 1 }), 7)).toBe(Verdict.WrongSender);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 7)).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 0, seq: 1 }), 0)).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 0xffffffff, seq: 1 }), 0xffffffff)).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 0xffffffff, seq: 2 }), 0xfffffffe)).toBe(Verdict.WrongSender);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['7:1', '7:2', '0:1', '4294967295:1']);
      expect(d.stats().verdicts.WrongSender).toBe(4);
    });

    it('checks run in the documented order (first failure wins)', () => {
      const d = basic({ maxPayload: 16, roomBytes: 4096 });
      d.openRoom(2, { auth: 'hmac-sha256' });
      d.join(2, 7, { key: keyFor(7) });
      const ok = frame({ room: 1, player: 7, seq: 1, payload: 4 });
      // 3 before 4: bad magic with an oversize length field
      expect(d.dispatch(patch(ok, { magic0: 0, len: 1000 }))).toBe(Verdict.Malformed);
      expect(d.dispatch(patch(ok, { flags: 2, len: 1000 }))).toBe(Verdict.Malformed);
      // 4 before 5: oversize length field and a wrong frame length
      expect(d.dispatch(patch(ok, { len: 17 }))).toBe(Verdict.Oversize);
      // 4 before 6, 7: oversize with seq 0 in an unknown room
      expect(d.dispatch(patch(ok, { len: 1000, seq: 0, room: 99 }))).toBe(Verdict.Oversize);
      // 5 before 6
      expect(d.dispatch(patch(ok, { seq: 0, len: 3 }))).toBe(Verdict.Malformed);
      // 6 before 7: seq 0 in an unknown room
      expect(d.dispatch(frame({ room: 99, player: 7, seq: 0 }))).toBe(Verdict.Malformed);
      // 7 before 8: unknown room with either flag
      expect(d.dispatch(frame({ room: 99, player: 7, seq: 1, key: keyFor(7) }))).toBe(Verdict.UnknownRoom);
      // 7 before 9: unknown room and wrong sender
      expect(d.dispatch(frame({ room: 99, player: 7, seq: 1 }), 8)).toBe(Verdict.UnknownRoom);
      // 8 before 9: auth mismatch and wrong sender
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }), 8)).toBe(Verdict.AuthMismatch);
      // 8 before 10: auth mismatch from a non-member
      expect(d.dispatch(frame({ room: 2, player: 99, seq: 1 }))).toBe(Verdict.AuthMismatch);
      // 9 before 10: a wrong sender naming a non-member, and a non-member sender
      expect(d.dispatch(frame({ room: 1, player: 99, seq: 1 }), 7)).toBe(Verdict.WrongSender);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 99)).toBe(Verdict.WrongSender);
      // 10: membership is a sync check (with or without a sender)
      expect(d.dispatch(frame({ room: 1, player: 99, seq: 1 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 1, player: 99, seq: 1 }), 99)).toBe(Verdict.NotMember);
      // tag and window are not sync checks
      expect(d.dispatch(corrupt(ok, ok.length - 1))).toBe(Verdict.Accepted);
      expect(d.dispatch(ok)).toBe(Verdict.Accepted);
      expect(d.dispatch(ok)).toBe(Verdict.Accepted);
      // 9 before 10: fill room 1's budget, then a wrong sender still answers WrongSender
      let seq = 10;
      while (d.dispatch(frame({ room: 1, player: 7, seq: seq++ })) === Verdict.Accepted) {
        if (seq > 1000) throw new Error('room budget never filled');
      }
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ }))).toBe(Verdict.Backpressure);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ }), 8)).toBe(Verdict.WrongSender);
      // 10 before 12: a non-member into the full room answers NotMember, not Backpressure
      expect(d.dispatch(frame({ room: 1, player: 99, seq: seq++ }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 0 }))).toBe(Verdict.Malformed);
    });

    it('NotMember: never joined, and after leave; moves accepted before leave are delivered; rejoin is accepted', async () => {
      const d = basic();
      expect(d.dispatch(frame({ room: 1, player: 8, seq: 1 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      d.leave(1, 7);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2 }), 7)).toBe(Verdict.NotMember);
      d.join(1, 8);
      expect(d.dispatch(frame({ room: 1, player: 8, seq: 2 }))).toBe(Verdict.Accepted);
      d.join(1, 7); // a new window: seq 1 is fresh again
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 7)).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['7:1', '8:2', '7:1']);
      expect(c.rejections).toEqual([]);
      const s = d.stats();
      expect(s.verdicts.NotMember).toBe(3);
      expect(s.reasons.UnknownPlayer).toBe(0);
      expect(s.accepted).toBe(3);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('NotMember spends nothing: 200 frames of a non-member leave the room budget, queue and arena untouched', async () => {
      const d = make({ shards: 1, roomBytes: 4096 });
      d.openRoom(1);
      d.join(1, 1);
      // 200 × 56 bytes would be far over the 4096-byte budget if any of them were kept
      for (let seq = 1; seq <= 100; seq++) expect(d.dispatch(frame({ room: 1, player: 999, seq }), 999), `sender 999, seq ${seq}`).toBe(Verdict.NotMember);
      for (let seq = 101; seq <= 200; seq++) expect(d.dispatch(frame({ room: 1, player: 999, seq })), `no sender, seq ${seq}`).toBe(Verdict.NotMember);
      const s = d.stats();
      expect(s.verdicts.NotMember).toBe(200);
      expect(s.dispatched).toBe(200);
      expect(s.accepted).toBe(0);
      expect(s.verdicts.Backpressure).toBe(0);
      expect(s.rooms).toEqual([]);
      expect(s.shards.map((x) => [x.queueDepth, x.queueHighWater, x.arena.used, x.arena.highWater])).toEqual([[0, 0, 0, 0]]);
      // the member's move still passes and is delivered
      const f = frame({ room: 1, player: 1, seq: 1, payload: 5 });
      expect(d.dispatch(f, 1)).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves).toEqual([parse(f)]);
      expect(c.rejections).toEqual([]);
      // and the whole budget is there for it: 73 × 56 = 4088 ≤ 4096
      for (let seq = 2; seq <= 74; seq++) expect(d.dispatch(frame({ room: 1, player: 1, seq }), 1), `seq ${seq}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 1, seq: 75 }), 1)).toBe(Verdict.Backpressure);
      // leave: NotMember; join again: accepted (once there is room)
      d.leave(1, 1);
      expect(d.dispatch(frame({ room: 1, player: 1, seq: 76 }), 1)).toBe(Verdict.NotMember);
      await d.flush();
      expect(d.drain(1).count).toBe(73);
      d.join(1, 1);
      expect(d.dispatch(frame({ room: 1, player: 1, seq: 1 }), 1)).toBe(Verdict.Accepted);
      expect((await flushDrain(d, 1)).moves.map((m) => m.seq)).toEqual([1]);
      const end = d.stats();
      expect(end.verdicts.NotMember).toBe(201);
      expect(end.reasons.UnknownPlayer).toBe(0);
      expect(end.accepted).toBe(end.delivered + end.rejected);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('asynchronous reasons', () => {
    it('moves accepted before leave are validated with the player still in the room (control calls are ordered)', async () => {
      const d = basic();
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 5; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      d.leave(1, 7);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 6 }))).toBe(Verdict.NotMember);
      pauseForTesting(d, false);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(c.rejections).toEqual([]);
      expect(d.stats().reasons.UnknownPlayer).toBe(0);
    });

    it('NotMember is decided before the tag: a non-member with a bad tag is refused synchronously', async () => {
      const d = basic();
      const f = frame({ room: 1, player: 9, seq: 1, payload: 3 });
      expect(d.dispatch(corrupt(f, f.length - 1))).toBe(Verdict.NotMember);
      const c = await flushDrain(d, 1);
      expect(c.rejections).toEqual([]);
      expect(d.stats().accepted).toBe(0);
    });

    it('BadTag: one flipped bit in tick, kind, payload or tag', async () => {
      const d = basic();
      const len = 12;
      const indices = [16, 19, 20, 21, 24, 24 + len - 1, 24 + len, 24 + len + 31];
      let seq = 1;
      const expected = [];
      for (const i of indices) {
        const f = frame({ room: 1, player: 7, seq, payload: len });
        expect(d.dispatch(corrupt(f, i, 0x80))).toBe(Verdict.Accepted);
        expected.push({ room: 1, player: 7, seq, reason: Reason.BadTag });
        seq++;
      }
      expect(d.dispatch(frame({ room: 1, player: 7, seq, payload: len }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.rejections).toEqual(expected);
      expect(c.moves.map((m) => m.seq)).toEqual([seq]);
      expect(d.stats().reasons.BadTag).toBe(indices.length);
    });

    it('Replay: a duplicate seq is delivered once, the copy is rejected', async () => {
      const d = basic();
      const f = frame({ room: 1, player: 7, seq: 5, payload: 2 });
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      expect(d.dispatch(f.slice())).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([5]);
      expect(c.rejections).toEqual([
        { room: 1, player: 7, seq: 5, reason: Reason.Replay },
        { room: 1, player: 7, seq: 5, reason: Reason.Replay },
      ]);
      expect(d.stats().reasons).toEqual({ BadTag: 0, UnknownPlayer: 0, Replay: 2, ShardFailed: 0 });
    });

    it('only moves that pass membership and tag touch the replay window', async () => {
      const d = basic();
      // a bad-tag seq 1000 must not move the window's top
      const bad = frame({ room: 1, player: 7, seq: 1000 });
      expect(d.dispatch(corrupt(bad, bad.length - 1))).toBe(Verdict.Accepted);
      // a bad-tag seq 5 must not mark 5 as seen
      const five = frame({ room: 1, player: 7, seq: 5 });
      expect(d.dispatch(corrupt(five, 30))).toBe(Verdict.Accepted);
      expect(d.dispatch(five)).toBe(Verdict.Accepted);
      // a non-member's seq does not touch anyone's window (it is not even accepted)
      expect(d.dispatch(frame({ room: 1, player: 8, seq: 2000 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 800 }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([5, 800]);
      expect(c.rejections.map((r) => [r.player, r.seq, r.reason])).toEqual([
        [7, 1000, Reason.BadTag],
        [7, 5, Reason.BadTag],
      ]);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('any bytes get a verdict, never an exception', () => {
    it('empty, random garbage, mutated frames, huge, detached', async () => {
      // push room 2 needs a consumer: flush() waits until push moves reach JavaScript
      const d = basic({ maxPayload: 256, onBatch: () => undefined });
      d.openRoom(2, { auth: 'hmac-sha256', delivery: 'push' });
      d.join(2, 7, { key: keyFor(7) });
      const rng = new Rng(0xdecaf);
      const verdicts: number[] = [];
      const check = (bytes: Uint8Array, sender?: number): void => {
        let v: number;
        try {
          v = d.dispatch(bytes, sender);
        } catch (error) {
          throw new Error(`dispatch threw on ${bytes.length} bytes ${hex(bytes.subarray(0, 64))}: ${String(error)}`);
        }
        expect(ALL_VERDICTS.has(v), `verdict ${v}`).toBe(true);
        verdicts.push(v);
      };
      check(new Uint8Array(0));
      check(new Uint8Array(new ArrayBuffer(0)));
      check(Buffer.alloc(0), 3);
      check(new Uint8Array(70_000));
      check(new Uint8Array(1 << 20).fill(0xff));
      const detachedBuffer = new ArrayBuffer(64);
      const detached = new Uint8Array(detachedBuffer);
      structuredClone(detachedBuffer, { transfer: [detachedBuffer] });
      check(detached);
      for (let i = 0; i < 1500; i++) check(rng.bytes(rng.int(200)), rng.chance(0.5) ? rng.u32() : undefined);
      for (let i = 0; i < 1500; i++) {
        const b = rng.bytes(rng.int(120));
        b.set([0x4d, 0x56, 1, rng.int(4)].slice(0, b.length));
        check(b, rng.chance(0.3) ? 7 : undefined);
      }
      for (let i = 0; i < 3000; i++) {
        const room = rng.pick([1, 2, 3]);
        let f = frame({ room, player: rng.pick([7, 8]), seq: rng.range(0, 300), payload: rng.int(260), key: room === 2 ? keyFor(7) : undefined });
        const mode = rng.int(4);
        if (mode === 0) for (let k = rng.range(1, 3); k > 0; k--) f = corrupt(f, rng.int(f.length), 1 + rng.int(255));
        else if (mode === 1) f = f.subarray(0, rng.int(f.length));
        else if (mode === 2) f = concat([f, rng.bytes(rng.range(1, 8))]);
        check(f, rng.chance(0.2) ? rng.pick([7, 8, 0]) : undefined);
      }
      expect(d.stats().dispatched).toBe(verdicts.length);
      expect(new Set(verdicts).size).toBeGreaterThanOrEqual(5);
      // and the process is still healthy: accounting holds
      await d.flush();
      d.drain(1);
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('exactly-once accounting', () => {
    it('accepted = delivered + rejected, in stats() and in what JavaScript received', async () => {
      const sink = pushSink();
      const d = make({ shards: 3, workerThreads: 2, onBatch: sink.onBatch });
      const rng = new Rng(42);
      const rooms = [1, 2, 3, 4, 5, 6];
      const push = new Set([4, 5, 6]);
      const hmac = new Set([2, 5]);
      for (const r of rooms) {
        d.openRoom(r, { auth: hmac.has(r) ? 'hmac-sha256' : 'sha256', delivery: push.has(r) ? 'push' : 'pull' });
        for (const p of [1, 2, 3]) d.join(r, p, hmac.has(r) ? { key: keyFor(p) } : {});
      }
      const accepted: string[] = [];
      const seqs = new Map<string, number>();
      let total = 0;
      const pulled = new Map(rooms.filter((r) => !push.has(r)).map((r) => [r, emptyCollected()]));
      for (let i = 0; i < 3000; i++) {
        const room = rng.pick([...rooms, 77]);
        const player = rng.pick([1, 2, 3, 4]);
        const id = `${room}/${player}`;
        let seq = (seqs.get(id) ?? 0) + 1;
        if (rng.chance(0.1)) seq = Math.max(1, seq - rng.int(3));
        else seqs.set(id, seq);
        let f = frame({ room, player, seq, payload: rng.int(40), key: hmac.has(room) ? keyFor(player) : undefined });
        if (rng.chance(0.05)) f = corrupt(f, rng.range(16, f.length - 1));
        if (rng.chance(0.02)) f = rng.bytes(rng.int(80));
        const v = d.dispatch(f);
        total++;
        if (v === Verdict.Accepted) accepted.push(`${room}/${player}/${seq}`);
        if (i % 700 === 0) for (const [r, c] of pulled) absorb(c, d.drain(r));
      }
      await d.flush();
      for (const [r, c] of pulled) absorb(c, d.drain(r));
      const s = d.stats();
      expect(s.engine).toBe(engine);
      expect(s.dispatched).toBe(total);
      expect(s.accepted).toBe(accepted.length);
      expect(Object.values(s.verdicts).reduce((a, b) => a + b, 0)).toBe(total);
      expect(s.verdicts.Accepted).toBe(s.accepted);
      expect(Object.values(s.reasons).reduce((a, b) => a + b, 0)).toBe(s.rejected);
      expect(s.accepted).toBe(s.delivered + s.rejected);
      expect(s.rejected).toBeGreaterThan(0);
      // what JavaScript actually received
      const got: string[] = [];
      let moves = 0;
      let rejections = 0;
      for (const c of [...pulled.values(), ...sink.rooms.values()]) {
        for (const m of c.moves) got.push(`${m.room}/${m.player}/${m.seq}`);
        for (const r of c.rejections) got.push(`${r.room}/${r.player}/${r.seq}`);
        moves += c.moves.length;
        rejections += c.rejections.length;
      }
      expect(moves).toBe(s.delivered);
      expect(rejections).toBe(s.rejected);
      expect(got.sort()).toEqual(accepted.sort());
    });
  });

  // -------------------------------------------------------------------------------------
  describe('ordering', () => {
    it('each room delivers in dispatch order, across rooms and shards, pull and push', async () => {
      const sink = pushSink();
      const d = make({ shards: 4, workerThreads: 2, onBatch: sink.onBatch, maxBatchMoves: 7 });
      const rng = new Rng(7);
      const rooms = Array.from({ length: 12 }, (_, i) => i + 1);
      const isPush = (r: number): boolean => r > 8;
      for (const r of rooms) {
        d.openRoom(r, { delivery: isPush(r) ? 'push' : 'pull' });
        for (const p of [1, 2, 3]) d.join(r, p);
      }
      const expected = new Map<number, Uint8Array[]>(rooms.map((r) => [r, []]));
      const pulled = new Map(rooms.filter((r) => !isPush(r)).map((r) => [r, emptyCollected()]));
      const seqs = new Map<string, number>();
      for (let i = 0; i < 5000; i++) {
        const room = rng.pick(rooms);
        const player = rng.pick([1, 2, 3]);
        const seq = (seqs.get(`${room}/${player}`) ?? 0) + rng.range(1, 3);
        seqs.set(`${room}/${player}`, seq);
        const f = frame({ room, player, seq, tick: i, kind: i & 0xffff, payload: rng.int(64) });
        expect(d.dispatch(f, player)).toBe(Verdict.Accepted);
        expected.get(room)!.push(f);
        if (i % 333 === 0) {
          // partial drains (no flush) must not disturb the order
          for (const [r, c] of pulled) absorb(c, d.drain(r));
        }
      }
      await d.flush();
      for (const [r, c] of pulled) absorb(c, d.drain(r));
      for (const r of rooms) {
        const c = isPush(r) ? sink.rooms.get(r)! : pulled.get(r)!;
        expect(c.rejections, `room ${r}`).toEqual([]);
        expect(hex(concat(c.bytes)), `room ${r}`).toBe(hex(concat(expected.get(r)!)));
        expect(c.moves.map((m) => m.tick)).toEqual(expected.get(r)!.map((f) => parse(f).tick));
      }
    });
  });

  // -------------------------------------------------------------------------------------
  describe('replay window (128)', () => {
    it('reordered seqs within the window are accepted once; duplicates rejected', async () => {
      const d = basic();
      const rng = new Rng(128);
      const order = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, ...rng.shuffle(Array.from({ length: 128 }, (_, i) => i + 11))];
      for (const seq of order) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      const c1 = await flushDrain(d, 1);
      expect(c1.moves.map((m) => m.seq)).toEqual(order);
      expect(c1.rejections).toEqual([]);
      // every one of them again: all duplicates (138 - 11 < 128 keeps 11..138 in the window;
      // 1..10 are older than the window)
      for (const seq of order) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      const c2 = await flushDrain(d, 1);
      expect(c2.moves).toEqual([]);
      expect(c2.rejections.map((r) => r.seq)).toEqual(order);
      expect(c2.rejections.every((r) => r.reason === Reason.Replay)).toBe(true);
    });

    it('edges: top-127 accepted, top-128 rejected', async () => {
      const d = basic();
      const send = (seq: number): void => {
        expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      };
      send(200);
      send(72); // 200 - 128: too old
      send(73); // 200 - 127: accepted
      send(73); // duplicate
      send(199);
      send(201); // top := 201
      send(73); // now 201 - 73 = 128: too old
      send(74); // 201 - 74 = 127, not seen: accepted
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([200, 73, 199, 201, 74]);
      expect(c.rejections.map((r) => [r.seq, r.reason])).toEqual([
        [72, Reason.Replay],
        [73, Reason.Replay],
        [73, Reason.Replay],
      ]);
    });

    it('a big jump slides the window; u32 max is a valid seq', async () => {
      const d = basic();
      const seqs = [1, 2, 1_000_000, 3, 999_873, 999_872, 0xffffffff, 0xffffffff - 127, 0xffffffff - 128, 0xffffffff];
      for (const seq of seqs) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 2, 1_000_000, 999_873, 0xffffffff, 0xffffffff - 127]);
      expect(c.rejections.map((r) => r.seq)).toEqual([3, 999_872, 0xffffffff - 128, 0xffffffff]);
    });

    it('windows are per (room, player)', async () => {
      const d = basic();
      d.join(1, 8);
      d.openRoom(2);
      d.join(2, 7);
      for (const [room, player] of [
        [1, 7],
        [1, 8],
        [2, 7],
      ] as const) {
        expect(d.dispatch(frame({ room, player, seq: 1 }))).toBe(Verdict.Accepted);
      }
      const got = await flushAndDrain(d, [1, 2]);
      expect(got.get(1)!.moves.length).toBe(2);
      expect(got.get(2)!.moves.length).toBe(1);
      expect(d.stats().rejected).toBe(0);
    });

    it('join again keeps the window (key rotation); leave then join starts a new one', async () => {
      const d = basic();
      const send = (seq: number): void => {
        expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      };
      send(1);
      d.join(1, 7); // rejoin: window kept
      send(1);
      d.leave(1, 7);
      d.join(1, 7); // new window
      send(1);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 1]);
      expect(c.rejections).toEqual([{ room: 1, player: 7, seq: 1, reason: Reason.Replay }]);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('hmac-sha256 rooms', () => {
    function hmacRoom(options: Parameters<typeof make>[0] = {}): Dispatcher {
      const d = make(options);
      d.openRoom(5, { auth: 'hmac-sha256' });
      d.join(5, 1, { key: keyFor(1) });
      d.join(5, 2, { key: keyFor(2) });
      return d;
    }

    it('the right key is accepted (16-, 32- and 64-byte keys)', async () => {
      const d = hmacRoom();
      d.join(5, 3, { key: keyFor(3, 0, 16) });
      d.join(5, 4, { key: keyFor(4, 0, 64) });
      for (const [player, key] of [
        [1, keyFor(1)],
        [2, keyFor(2)],
        [3, keyFor(3, 0, 16)],
        [4, keyFor(4, 0, 64)],
      ] as const) {
        expect(d.dispatch(frame({ room: 5, player, seq: 1, payload: 9, key }), player)).toBe(Verdict.Accepted);
      }
      const c = await flushDrain(d, 5);
      expect(c.moves.map((m) => m.player)).toEqual([1, 2, 3, 4]);
      expect(c.rejections).toEqual([]);
    });

    it('a wrong key, or another player’s key, is BadTag', async () => {
      const d = hmacRoom();
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: keyFor(1, 1) }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 2, key: keyFor(2) }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 3, key: keyFor(1).subarray(0, 16) }))).toBe(Verdict.Accepted);
      // the plain SHA-256 digest under an HMAC flag
      const sha = frame({ room: 5, player: 1, seq: 4 });
      expect(d.dispatch(patch(sha, { flags: 1 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 5, key: keyFor(1) }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 5);
      expect(c.moves.map((m) => m.seq)).toEqual([5]);
      expect(c.rejections).toEqual([1, 2, 3, 4].map((seq) => ({ room: 5, player: 1, seq, reason: Reason.BadTag })));
    });

    it('the same move replayed into another room', async () => {
      const d = hmacRoom();
      d.openRoom(6, { auth: 'hmac-sha256' });
      d.join(6, 1, { key: keyFor(1) }); // same player, same key
      d.openRoom(7, { auth: 'hmac-sha256' }); // player 1 not a member
      const f = frame({ room: 5, player: 1, seq: 1, payload: 6, key: keyFor(1) });
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      // the room field is under the tag: rewriting it breaks the tag
      expect(d.dispatch(patch(f, { room: 6 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(patch(f, { room: 7 }))).toBe(Verdict.NotMember);
      expect(d.dispatch(patch(f, { room: 8 }))).toBe(Verdict.UnknownRoom);
      // sent unchanged again: a replay in its own room
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      const got = await flushAndDrain(d, [5, 6, 7]);
      expect(got.get(5)!.moves.map((m) => m.seq)).toEqual([1]);
      expect(got.get(5)!.rejections).toEqual([{ room: 5, player: 1, seq: 1, reason: Reason.Replay }]);
      expect(got.get(6)!.rejections).toEqual([{ room: 6, player: 1, seq: 1, reason: Reason.BadTag }]);
      expect(got.get(7)!.rejections).toEqual([]);
      // properly re-signed for room 6 it is a fresh move there
      expect(d.dispatch(reroute(f, 6, keyFor(1)))).toBe(Verdict.Accepted);
      expect((await flushDrain(d, 6)).moves.map((m) => m.room)).toEqual([6]);
    });

    it('flag downgrade (HMAC move re-encoded as SHA-256) is AuthMismatch', () => {
      const d = hmacRoom();
      const f = frame({ room: 5, player: 1, seq: 1, key: keyFor(1) });
      expect(d.dispatch(downgrade(f))).toBe(Verdict.AuthMismatch);
      expect(d.dispatch(downgrade(f), 1)).toBe(Verdict.AuthMismatch);
      expect(d.stats().accepted).toBe(0);
    });

    it('key rotation: join again replaces the key and keeps the window', async () => {
      const d = hmacRoom();
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: keyFor(1) }))).toBe(Verdict.Accepted);
      d.join(5, 1, { key: keyFor(1, 9) });
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 2, key: keyFor(1) }))).toBe(Verdict.Accepted); // old key
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: keyFor(1, 9) }))).toBe(Verdict.Accepted); // replay
      expect(d.dispatch(frame({ room: 5, player: 1, seq: 3, key: keyFor(1, 9) }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 5);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 3]);
      expect(c.rejections.map((r) => [r.seq, r.reason])).toEqual([
        [2, Reason.BadTag],
        [1, Reason.Replay],
      ]);
    });

    it('leave forgets the key: later moves are NotMember; a new join needs the new key', async () => {
      const d = hmacRoom();
      d.leave(5, 2);
      expect(d.dispatch(frame({ room: 5, player: 2, seq: 1, key: keyFor(2) }))).toBe(Verdict.NotMember);
      d.join(5, 2, { key: keyFor(2, 1) });
      expect(d.dispatch(frame({ room: 5, player: 2, seq: 1, key: keyFor(2) }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 5, player: 2, seq: 2, key: keyFor(2, 1) }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 5);
      expect(c.moves.map((m) => m.seq)).toEqual([2]);
      expect(c.rejections).toEqual([{ room: 5, player: 2, seq: 1, reason: Reason.BadTag }]);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('backpressure and recovery', () => {
    it('a full queue (channelCapacity 64, validation paused); control calls still pass', async () => {
      const d = basic({ shards: 1, channelCapacity: 64 });
      d.openRoom(2);
      d.join(2, 7);
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 64; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq })), `seq ${seq}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 65 }))).toBe(Verdict.Backpressure);
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.Backpressure);
      // sync refusals other than capacity still answer as usual
      expect(d.dispatch(frame({ room: 99, player: 7, seq: 1 }))).toBe(Verdict.UnknownRoom);
      // control calls never answer Backpressure
      d.join(1, 8);
      d.openRoom(3);
      d.leave(1, 8);
      d.closeRoom(3);
      expect(d.stats().verdicts.Backpressure).toBe(2);
      pauseForTesting(d, false);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 65 }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      const got = await flushAndDrain(d, [1, 2]);
      expect(got.get(1)!.moves.map((m) => m.seq)).toEqual([65]);
      expect(got.get(2)!.moves.map((m) => m.seq)).toEqual([1]);
      const s = d.stats();
      expect(s.accepted).toBe(66);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('the queue limit is per shard', async () => {
      const d = make({ shards: 2, channelCapacity: 64 });
      d.openRoom(2); // shard 0
      d.openRoom(3); // shard 1
      d.join(2, 1);
      d.join(3, 1);
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 64; seq++) expect(d.dispatch(frame({ room: 2, player: 1, seq }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 2, player: 1, seq: 65 }))).toBe(Verdict.Backpressure);
      expect(d.dispatch(frame({ room: 3, player: 1, seq: 1 }))).toBe(Verdict.Accepted);
      pauseForTesting(d, false);
      await d.flush();
    });

    it('a full arena (arenaBytes 64 KiB, 4000-byte payloads), with the documented ring accounting', async () => {
      const d = basic({ shards: 1, arenaBytes: 64 << 10, maxPayload: 4000, roomBytes: 1 << 20, channelCapacity: 1000 });
      // big frame: 4056 bytes -> record align8(24 + 4056) = 4080; 16 records = 65280 of 65536
      // small frame: 56 bytes -> record 80; 3 more fit (65520), the 4th would need a skip
      pauseForTesting(d, true);
      let seq = 1;
      for (let i = 0; i < 16; i++) expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++, payload: 4000 })), `big ${i}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++, payload: 4000 }))).toBe(Verdict.Backpressure);
      for (let i = 0; i < 3; i++) expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ })), `small ${i}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ }))).toBe(Verdict.Backpressure);
      pauseForTesting(d, false);
      const c = await flushDrain(d, 1);
      expect(c.moves.length).toBe(19);
      expect(c.rejections).toEqual([]);
      // recovered: the ring wraps and takes 16 big records again
      pauseForTesting(d, true);
      for (let i = 0; i < 16; i++) expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++, payload: 4000 })), `again ${i}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++, payload: 4000 }))).toBe(Verdict.Backpressure);
      pauseForTesting(d, false);
      const c2 = await flushDrain(d, 1);
      expect(c2.moves.length).toBe(16);
      const s = d.stats();
      expect(s.verdicts.Backpressure).toBe(3);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('an undrained pull room (roomBytes 4096) answers Backpressure deterministically, without pausing', async () => {
      const d = basic({ shards: 1, roomBytes: 4096 });
      d.openRoom(2);
      d.join(2, 7);
      // 56-byte frames: 73 * 56 = 4088 <= 4096 < 74 * 56
      let seq = 1;
      for (let i = 0; i < 73; i++) expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ })), `move ${i}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Backpressure);
      // another room on the same shard is not affected
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      await d.flush();
      // validated but not drained: still full
      expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Backpressure);
      const b = d.drain(1);
      expect(b.count).toBe(73);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ }))).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([74]);
    });

    it('rejected moves hold the room budget until their rejections are delivered', async () => {
      const d = make({ shards: 1, roomBytes: 4096 });
      d.openRoom(3);
      d.join(3, 1);
      // every move has a bad tag: each one is rejected BadTag
      const bad = (seq: number): Uint8Array => corrupt(frame({ room: 3, player: 1, seq }), OVERHEAD - 1);
      let seq = 1;
      for (let i = 0; i < 73; i++) expect(d.dispatch(bad(seq++))).toBe(Verdict.Accepted);
      expect(d.dispatch(bad(seq))).toBe(Verdict.Backpressure);
      await d.flush();
      expect(d.dispatch(bad(seq))).toBe(Verdict.Backpressure);
      const b = d.drain(3);
      expect(b.count).toBe(0);
      expect(b.rejections.length).toBe(73);
      expect(b.rejections.every((r) => r.reason === Reason.BadTag)).toBe(true);
      expect(d.dispatch(bad(seq))).toBe(Verdict.Accepted);
      await d.flush();
      expect(d.drain(3).rejections.length).toBe(1);
      const s = d.stats();
      expect(s.accepted).toBe(74);
      expect(s.rejected).toBe(74);
    });

    it('a push room whose batch is held: moves wait and count against roomBytes', async () => {
      const d = make({ shards: 1, roomBytes: 4096 });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      const it = d.batches()[Symbol.asyncIterator]();
      let seq = 1;
      expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ }))).toBe(Verdict.Accepted);
      const first = await it.next();
      expect(first.done).toBe(false);
      const held = first.value as MoveBatch;
      expect(held.count).toBe(1);
      // the held batch is out of the budget; 73 more fit, then Backpressure
      for (let i = 0; i < 73; i++) expect(d.dispatch(frame({ room: 1, player: 7, seq: seq++ })), `move ${i}`).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Backpressure);
      await sleep(50);
      expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Backpressure);
      // asking for the next batch releases the held one; the waiting moves arrive
      const rest = emptyCollected();
      while (rest.moves.length < 73) {
        const r = await it.next();
        expect(r.done).toBe(false);
        absorb(rest, r.value as MoveBatch);
      }
      expect(held.released).toBe(true);
      expect(rest.moves.map((m) => m.seq)).toEqual(Array.from({ length: 73 }, (_, i) => i + 2));
      // the last batch is still held by the iterator: release it, then there is room again
      const flushing = d.flush();
      await it.return?.();
      await flushing;
      expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('dispatchAsync', () => {
    it('resolves at once with any verdict other than Backpressure', async () => {
      const d = basic();
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      expect(await d.dispatchAsync(new Uint8Array(3))).toBe(Verdict.Malformed);
      expect(await d.dispatchAsync(frame({ room: 9, player: 7, seq: 1 }))).toBe(Verdict.UnknownRoom);
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 2 }), 8)).toBe(Verdict.WrongSender);
    });

    it('waits through room Backpressure and resolves Accepted after a drain, in call order', async () => {
      const d = basic({ shards: 1, roomBytes: 4096 });
      for (let seq = 1; seq <= 73; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 74 }))).toBe(Verdict.Backpressure);
      const p1 = track(d.dispatchAsync(frame({ room: 1, player: 7, seq: 74 }), 7));
      const p2 = track(d.dispatchAsync(frame({ room: 1, player: 7, seq: 75 })));
      await d.flush();
      await sleep(50);
      expect(p1.settled()).toBe(false);
      expect(p2.settled()).toBe(false);
      expect(d.drain(1).count).toBe(73);
      expect(await p1.promise).toBe(Verdict.Accepted);
      expect(await p2.promise).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([74, 75]);
      // each frame counts once per verdict it finally got; Backpressure retries are not moves
      expect(d.stats().accepted).toBe(75);
    });

    it('timers never fire: a full queue (validation paused) still resolves after unpause, woken by the engine', async () => {
      await withoutTimers(async () => {
        const d = basic({ shards: 1, channelCapacity: 64, overload: { queueDepth: 0, roomBytes: 0 } });
        pauseForTesting(d, true);
        for (let seq = 1; seq <= 64; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
        const p1 = track(d.dispatchAsync(frame({ room: 1, player: 7, seq: 65 })));
        const p2 = track(d.dispatchAsync(frame({ room: 1, player: 7, seq: 66 }), 7));
        await turns(20);
        expect(p1.settled()).toBe(false);
        expect(p2.settled()).toBe(false);
        pauseForTesting(d, false);
        expect(await within(p1.promise, 5000, 'dispatchAsync after unpause (no timers)')).toBe(Verdict.Accepted);
        expect(await within(p2.promise, 5000, 'the second dispatchAsync')).toBe(Verdict.Accepted);
        const c = await within(flushDrain(d, 1), 5000, 'flush');
        expect(c.moves.map((m) => m.seq)).toEqual(Array.from({ length: 66 }, (_, i) => i + 1));
      });
    });

    it('timers never fire: room Backpressure resolves after a drain, in call order', async () => {
      await withoutTimers(async () => {
        const d = basic({ shards: 1, roomBytes: 4096, overload: { queueDepth: 0, roomBytes: 0 } });
        for (let seq = 1; seq <= 73; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
        const waiting = [74, 75, 76].map((seq) => track(d.dispatchAsync(frame({ room: 1, player: 7, seq }))));
        await within(d.flush(), 5000, 'flush');
        await turns(10);
        expect(waiting.some((p) => p.settled())).toBe(false);
        expect(d.drain(1).count).toBe(73);
        const order: number[] = [];
        waiting.forEach((p, i) => void p.promise.then(() => order.push(i)));
        expect(await within(Promise.all(waiting.map((p) => p.promise)), 5000, 'dispatchAsync after drain (no timers)')).toEqual([0, 0, 0]);
        expect(order).toEqual([0, 1, 2]);
        expect((await within(flushDrain(d, 1), 5000, 'flush')).moves.map((m) => m.seq)).toEqual([74, 75, 76]);
      });
    });

    it('maxPendingAsync bounds the waiting calls: beyond it Backpressure at once; the default is channelCapacity', async () => {
      const d = basic({ shards: 1, roomBytes: 4096, maxPendingAsync: 3 });
      for (let seq = 1; seq <= 73; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      const waiting = [74, 75, 76].map((seq) => track(d.dispatchAsync(frame({ room: 1, player: 7, seq }))));
      // the fourth and fifth are refused at once: the dispatcher holds 3 callers' frames, no more
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 77 }))).toBe(Verdict.Backpressure);
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 78 }), 7)).toBe(Verdict.Backpressure);
      await d.flush();
      expect(waiting.some((p) => p.settled())).toBe(false);
      expect(d.drain(1).count).toBe(73);
      expect(await Promise.all(waiting.map((p) => p.promise))).toEqual([0, 0, 0]);
      // nobody waits any more: a new call is dispatched at once
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 77 }))).toBe(Verdict.Accepted);
      expect((await flushDrain(d, 1)).moves.map((m) => m.seq)).toEqual([74, 75, 76, 77]);

      // default: channelCapacity (2 here)
      const e = basic({ shards: 1, channelCapacity: 2 });
      pauseForTesting(e, true);
      expect(e.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      expect(e.dispatch(frame({ room: 1, player: 7, seq: 2 }))).toBe(Verdict.Accepted);
      const held = [3, 4].map((seq) => track(e.dispatchAsync(frame({ room: 1, player: 7, seq }))));
      expect(await e.dispatchAsync(frame({ room: 1, player: 7, seq: 5 }))).toBe(Verdict.Backpressure);
      await sleep(20);
      expect(held.some((p) => p.settled())).toBe(false);
      pauseForTesting(e, false);
      // (also woken by the flush's own deliveries on an addon without capacity wake-ups)
      const flushed = e.flush();
      expect(await Promise.all(held.map((p) => p.promise))).toEqual([0, 0]);
      await flushed;
      expect((await flushDrain(e, 1)).moves.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    });

    it('waits through a full queue until validation resumes', async () => {
      const d = basic({ shards: 1, channelCapacity: 64 });
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 64; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      const p = track(d.dispatchAsync(frame({ room: 1, player: 7, seq: 65 })));
      await sleep(50);
      expect(p.settled()).toBe(false);
      pauseForTesting(d, false);
      expect(await within(p.promise, 5000, 'dispatchAsync after unpause')).toBe(Verdict.Accepted);
      const c = await flushDrain(d, 1);
      expect(c.moves.length).toBe(65);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('whenWritable', () => {
    /**
     * A socket-like producer: feeds `chunk` to dispatchStream, keeps the unconsumed rest, and
     * on backpressure waits for whenWritable() before retrying. Resolves when all is consumed.
     */
    function producer(d: Dispatcher, chunk: Uint8Array, sender: number): { pauses: () => number; done: ReturnType<typeof track<void>> } {
      let pauses = 0;
      const run = async (): Promise<void> => {
        let pending = chunk;
        for (;;) {
          const r = d.dispatchStream(pending, sender);
          expect(r.malformed).toBe(false);
          pending = pending.subarray(r.consumed);
          if (!r.backpressure) {
            expect(pending.length).toBe(0);
            return;
          }
          pauses++;
          await d.whenWritable();
        }
      };
      return { pauses: () => pauses, done: track(run()) };
    }

    it('a producer paused on room Backpressure resumes after a drain (timers never fire)', async () => {
      await withoutTimers(async () => {
        const d = basic({ shards: 1, roomBytes: 4096, overload: { queueDepth: 0, roomBytes: 0 } });
        const frames = Array.from({ length: 100 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1 }));
        const p = producer(d, concat(frames), 7);
        await within(d.flush(), 5000, 'flush');
        await turns(20);
        // woken spuriously at most by the validation and the flush, then waiting (no busy loop)
        const pauses = p.pauses();
        expect(pauses).toBeGreaterThanOrEqual(1);
        expect(pauses).toBeLessThanOrEqual(3);
        await turns(50);
        expect(p.pauses()).toBe(pauses);
        expect(p.done.settled()).toBe(false);
        expect(d.drain(1).count).toBe(73);
        await within(p.done.promise, 5000, 'the producer after a drain');
        expect(p.pauses()).toBe(pauses);
        const c = await within(flushDrain(d, 1), 5000, 'flush');
        expect(c.moves.map((m) => m.seq)).toEqual(Array.from({ length: 27 }, (_, i) => i + 74));
      });
    });

    it('a producer paused on a full queue resumes as the worker catches up (timers never fire)', async () => {
      await withoutTimers(async () => {
        const d = basic({ shards: 1, channelCapacity: 16, overload: { queueDepth: 0, roomBytes: 0 } });
        pauseForTesting(d, true);
        const frames = Array.from({ length: 200 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1, payload: i % 7 }));
        const p = producer(d, concat(frames), 7);
        await turns(20);
        expect(p.done.settled()).toBe(false);
        expect(p.pauses()).toBe(1);
        expect(d.stats().accepted).toBe(16);
        pauseForTesting(d, false);
        await within(p.done.promise, 5000, 'the producer after unpause (woken by the engine)');
        expect(p.pauses()).toBeGreaterThanOrEqual(1);
        const c = await within(flushDrain(d, 1), 5000, 'flush');
        expect(hex(concat(c.bytes))).toBe(hex(concat(frames)));
      });
    });

    it('resolves at once when nothing was refused since the last freeing event, or when closed; aborts with ERR_MOVE_DISPATCHER_ABORTED', async () => {
      const d = basic({ shards: 1, roomBytes: 4096 });
      // no Backpressure answered yet: writable now
      await d.whenWritable();
      for (let seq = 1; seq <= 73; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 74 }))).toBe(Verdict.Backpressure);
      // the worker validates and goes idle (its wake-ups may resolve waiters: spurious is allowed)
      await d.flush();
      await sleep(20);
      // refused again with nothing in flight: now nothing can free capacity but a drain
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 74 }))).toBe(Verdict.Backpressure);
      const first = track(d.whenWritable());
      await sleep(30);
      expect(first.settled()).toBe(false);
      // abort while waiting
      const ac = new AbortController();
      const aborted = d.whenWritable({ signal: ac.signal });
      ac.abort(new Error('gave up'));
      const e = (await aborted.then(
        () => undefined,
        (error: unknown) => error,
      )) as { code?: string; cause?: unknown };
      expect(e?.code).toBe(ErrorCode.Aborted);
      expect(String(e.cause)).toContain('gave up');
      // an already aborted signal rejects at once
      await expect(d.whenWritable({ signal: AbortSignal.abort() })).rejects.toMatchObject({ code: ErrorCode.Aborted });
      expect(() => d.whenWritable({ signal: 'x' as never })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, field: 'signal' }));
      expect(() => d.whenWritable({ signl: ac.signal } as never)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, field: 'signl', message: expect.stringMatching(/did you mean signal\?/) }));
      // a drain is a freeing event: the waiter resolves, and a later call resolves at once
      expect(d.drain(1).count).toBe(73);
      await first.promise;
      await d.whenWritable();
      // refused again, then closed: a waiter resolves at close(), a later call at once
      for (let seq = 74; seq <= 146; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      await d.flush();
      await sleep(20);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 147 }))).toBe(Verdict.Backpressure);
      const waiting = track(d.whenWritable());
      await sleep(10);
      expect(waiting.settled()).toBe(false);
      const closing = d.close();
      await waiting.promise;
      await d.whenWritable();
      await closing;
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 147 }))).toBe(Verdict.Closed);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('shard failure', () => {
    it('a failed shard: onError once; its rooms closed; validated moves delivered, the rest rejected ShardFailed; other shards go on; flush and close resolve', async () => {
      const errors: unknown[] = [];
      const sink = pushSink();
      const d = make({ shards: 2, workerThreads: 2, onBatch: sink.onBatch, onError: (e) => errors.push(e) });
      // shard 0: rooms 2 (pull) and 4 (push); shard 1: rooms 1 (pull) and 3 (push)
      const rooms = [1, 2, 3, 4];
      const isPush = (r: number): boolean => r >= 3;
      for (const r of rooms) {
        d.openRoom(r, { delivery: isPush(r) ? 'push' : 'pull' });
        d.join(r, 7);
      }
      const seqs = new Map(rooms.map((r) => [r, 0]));
      const send = (room: number): number => {
        const seq = seqs.get(room)! + 1;
        seqs.set(room, seq);
        return d.dispatch(frame({ room, player: 7, seq, payload: seq % 9 }), 7);
      };
      const pulled = new Map([1, 2].map((r) => [r, emptyCollected()]));
      // 10 moves per room validated (and pushed / drainable) before the failure
      for (let i = 0; i < 10; i++) for (const r of rooms) expect(send(r)).toBe(Verdict.Accepted);
      await d.flush();
      // 20 more per room accepted while the workers are paused: in flight when shard 0 fails
      pauseForTesting(d, true);
      for (let i = 0; i < 20; i++) for (const r of rooms) expect(send(r)).toBe(Verdict.Accepted);
      failShardForTesting(d, 0);
      // 5 more per room after the failure point (not reported yet: still Accepted); shard 0
      // rejects them on both engines (the native engine orders the failure with the moves
      // queued before it, which it may still validate)
      for (let i = 0; i < 5; i++) for (const r of rooms) expect(send(r)).toBe(Verdict.Accepted);
      pauseForTesting(d, false);
      await until(() => errors.length > 0, 5000, 'onError with the shard failure');
      expect(errors).toHaveLength(1);
      const e = errors[0] as Error & { code?: string; shard?: number };
      expect(e).toBeInstanceOf(Error);
      expect(e.code).toBe(ErrorCode.ShardFailed);
      expect(e.shard).toBe(0);
      expect(e.message).toMatch(/shard 0/);

      // shard 0's rooms are closed: frames answer Closed (a room never opened there too)
      for (const room of [2, 4, 6]) expect(d.dispatch(frame({ room, player: 7, seq: 1000 }), 7), `room ${room}`).toBe(Verdict.Closed);
      const next1 = seqs.get(1)! + 1;
      seqs.set(1, next1);
      expect(d.dispatchStream(concat([frame({ room: 2, player: 7, seq: 1001 }), frame({ room: 1, player: 7, seq: next1, payload: next1 % 9 })]), 7)).toMatchObject({
        accepted: 1,
        rejected: 1,
        malformed: false,
      });
      expect(await d.dispatchAsync(frame({ room: 4, player: 7, seq: 1002 }))).toBe(Verdict.Closed);
      // control calls on its rooms throw CLOSED naming the shard
      for (const [name, call] of [
        ['openRoom(6)', () => d.openRoom(6)],
        ['join(2, 8)', () => d.join(2, 8)],
        ['leave(2, 7)', () => d.leave(2, 7)],
        ['closeRoom(4)', () => d.closeRoom(4)],
      ] as const) {
        const err = expectCode(call, ErrorCode.Closed);
        expect(err.message, name).toMatch(/shard 0/);
      }
      // shard 1 goes on: control calls and moves
      d.openRoom(5);
      d.join(5, 7);
      expect(d.dispatch(frame({ room: 5, player: 7, seq: 1 }), 7)).toBe(Verdict.Accepted);
      for (let i = 0; i < 5; i++) for (const r of [1, 3]) expect(send(r)).toBe(Verdict.Accepted);
      // the hook again, or another flush: still one report
      failShardForTesting(d, 0);
      await d.flush();
      for (const [r, c] of pulled) absorb(c, d.drain(r));
      const five = d.drain(5);
      expect(five.count).toBe(1);

      const got = (r: number) => (isPush(r) ? (sink.rooms.get(r) ?? emptyCollected()) : pulled.get(r)!);
      const all = (r: number): number[] => Array.from({ length: seqs.get(r)! }, (_, i) => i + 1);
      // shard 1: everything delivered, nothing rejected
      for (const r of [1, 3]) {
        expect(got(r).moves.map((m) => m.seq), `room ${r}`).toEqual(all(r));
        expect(got(r).rejections, `room ${r}`).toEqual([]);
      }
      // shard 0: the 10 validated before the failure delivered; each of the 25 in flight
      // delivered or rejected ShardFailed, delivered ones first, nothing lost or doubled
      for (const r of [2, 4]) {
        const c = got(r);
        const delivered = c.moves.map((m) => m.seq);
        expect(delivered.slice(0, 10), `room ${r}`).toEqual(all(r).slice(0, 10));
        expect(c.rejections.every((x) => x.reason === Reason.ShardFailed && x.room === r && x.player === 7), `room ${r}`).toBe(true);
        expect([...delivered, ...c.rejections.map((x) => x.seq)], `room ${r}`).toEqual(all(r));
      }
      const s = d.stats();
      expect(errors).toHaveLength(1);
      expect(s.reasons.ShardFailed).toBe(got(2).rejections.length + got(4).rejections.length);
      expect(s.reasons.ShardFailed).toBeGreaterThan(0);
      expect(s.rejected).toBe(s.reasons.ShardFailed);
      expect(s.accepted).toBe(s.delivered + s.rejected);
      await d.close();
      const end = d.stats();
      expect(end.accepted).toBe(end.delivered + end.rejected);
    });

    it('without onError the failure is a process warning naming the shard', async () => {
      const warnings: string[] = [];
      const onWarning = (w: Error): void => void warnings.push(`${(w as { code?: string }).code}: ${w.message}`);
      process.on('warning', onWarning);
      try {
        const d = make({ shards: 2 });
        d.openRoom(1);
        d.join(1, 7);
        failShardForTesting(d, 1);
        expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }), 7)).toBe(Verdict.Accepted);
        await until(() => warnings.length > 0, 5000, 'the warning');
        expect(warnings[0]).toMatch(new RegExp(`^${ErrorCode.ShardFailed}: .*shard 1`));
        await d.flush();
        expect(d.drain(1).rejections.map((r) => r.reason)).toEqual([Reason.ShardFailed]);
        await d.close();
      } finally {
        process.off('warning', onWarning);
      }
    });
  });

  // -------------------------------------------------------------------------------------
  describe('push delivery', () => {
    it('onBatch receives push rooms in order; the batch is released when onBatch returns; copy() survives', async () => {
      const saved: MoveBatch[] = [];
      const copies: MoveBatch[] = [];
      const seen = emptyCollected();
      const d = make({
        onBatch(b) {
          expect(b.released).toBe(false);
          saved.push(b);
          copies.push(b.copy());
          absorb(seen, b);
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      const frames = Array.from({ length: 20 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1, payload: i }));
      for (const f of frames) expect(d.dispatch(f)).toBe(Verdict.Accepted);
      expect(d.dispatch(corrupt(frame({ room: 1, player: 7, seq: 21 }), OVERHEAD - 1))).toBe(Verdict.Accepted);
      await d.flush();
      expect(hex(concat(seen.bytes))).toBe(hex(concat(frames)));
      expect(seen.rejections).toEqual([{ room: 1, player: 7, seq: 21, reason: Reason.BadTag }]);
      expect(saved.length).toBeGreaterThan(0);
      for (const b of saved) {
        expect(b.room).toBe(1);
        expect(b.released).toBe(true);
      }
      const withMoves = saved.find((b) => b.count > 0)!;
      expectCode(() => [...withMoves], ErrorCode.BatchReleased);
      expectCode(() => withMoves.copy(), ErrorCode.BatchReleased);
      const s = d.stats();
      expect(s.delivered).toBe(20);
      expect(s.rejected).toBe(1);
      expect(s.batches).toBeGreaterThanOrEqual(1);
      await d.close();
      // copies made inside onBatch stay readable, even after close
      const fromCopies = emptyCollected();
      for (const c of copies) absorb(fromCopies, c);
      expect(hex(concat(fromCopies.bytes))).toBe(hex(concat(frames)));
      expect(fromCopies.rejections).toEqual(seen.rejections);
      expect(copies.every((c) => !c.released)).toBe(true);
    });

    it('an onBatch that throws is reported to onError and delivery continues', async () => {
      const errors: unknown[] = [];
      let calls = 0;
      const got = emptyCollected();
      const d = make({
        onBatch(b) {
          calls++;
          absorb(got, b);
          throw new Error(`boom ${calls}`);
        },
        onError: (e) => errors.push(e),
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      await d.flush();
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2 }))).toBe(Verdict.Accepted);
      await d.flush();
      expect(got.moves.map((m) => m.seq)).toEqual([1, 2]);
      expect(errors.length).toBe(calls);
      expect(String(errors[0])).toContain('boom 1');
    });

    it('batches(): an async iterator of push batches; the previous batch is released on next(); AbortSignal ends the loop', async () => {
      const d = make({ shards: 2 });
      d.openRoom(1, { delivery: 'push' });
      d.openRoom(2, { delivery: 'push' });
      d.join(1, 7);
      d.join(2, 7);
      const ac = new AbortController();
      const got = new Map([
        [1, emptyCollected()],
        [2, emptyCollected()],
      ]);
      let previous: MoveBatch | undefined;
      let previousReleasedOnNext = true;
      const N = 200;
      const consumer = (async () => {
        let total = 0;
        for await (const b of d.batches({ signal: ac.signal })) {
          if (previous !== undefined && !previous.released) previousReleasedOnNext = false;
          expect(b.released).toBe(false);
          absorb(got.get(b.room!)!, b);
          total += b.count + b.rejections.length;
          previous = b;
          if (total >= 2 * N) ac.abort();
        }
        return 'ended';
      })();
      const frames = new Map<number, Uint8Array[]>([
        [1, []],
        [2, []],
      ]);
      for (let seq = 1; seq <= N; seq++) {
        for (const room of [1, 2]) {
          const f = frame({ room, player: 7, seq, payload: seq % 17 });
          frames.get(room)!.push(f);
          expect(d.dispatch(f)).toBe(Verdict.Accepted);
        }
        if (seq % 50 === 0) await sleep(1);
      }
      await expect(Promise.race([consumer, sleep(15_000).then(() => 'timeout')])).resolves.toBe('ended');
      expect(previousReleasedOnNext).toBe(true);
      expect(previous!.released).toBe(true); // the loop's end released the last one
      for (const room of [1, 2]) expect(hex(concat(got.get(room)!.bytes))).toBe(hex(concat(frames.get(room)!)));
    });

    it('batches(): aborting while waiting ends the loop; break releases the current batch', async () => {
      const d = make();
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      const ac = new AbortController();
      const idle = (async () => {
        for await (const _ of d.batches({ signal: ac.signal })) void _;
        return 'ended';
      })();
      await sleep(20);
      ac.abort();
      await expect(Promise.race([idle, sleep(5000).then(() => 'timeout')])).resolves.toBe('ended');

      // a new loop after the aborted one must still be woken by the next batch
      let kept: MoveBatch | undefined;
      const second = (async () => {
        for await (const b of d.batches()) {
          kept = b;
          break;
        }
        return 'ended';
      })();
      await sleep(20);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      await expect(Promise.race([second, sleep(5000).then(() => 'timeout: a batches() loop started after an aborted one was never woken')])).resolves.toBe('ended');
      expect(kept!.count).toBe(1);
      expect(kept!.released).toBe(true);
      // the room takes moves again after the release
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 2 }))).toBe(Verdict.Accepted);
      const after: MoveBatch[] = [];
      const ac2 = new AbortController();
      const loop = (async () => {
        for await (const b of d.batches({ signal: ac2.signal })) {
          after.push(b.copy());
          ac2.abort();
        }
        return 'ended';
      })();
      await expect(Promise.race([loop, sleep(5000).then(() => 'timeout')])).resolves.toBe('ended');
      expect(after.flatMap((b) => movesOf(b).map((m) => m.seq))).toEqual([2]);
    });

    it('batches() ends when the dispatcher closes', async () => {
      const d = make();
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 7);
      const got = emptyCollected();
      const loop = (async () => {
        for await (const b of d.batches()) absorb(got, b);
        return 'ended';
      })();
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      await d.close();
      await expect(Promise.race([loop, sleep(5000).then(() => 'timeout')])).resolves.toBe('ended');
      expect(got.moves.map((m) => m.seq)).toEqual([1]);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('MoveBatch', () => {
    it('bytes are the dispatched frames back to back; views point at each frame', async () => {
      const d = basic();
      const rng = new Rng(3);
      const frames = Array.from({ length: 40 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1, tick: rng.u32(), kind: rng.int(65536), payload: rng.int(300) }));
      for (const f of frames) expect(d.dispatch(f)).toBe(Verdict.Accepted);
      await d.flush();
      const b = d.drain(1);
      expect(b.room).toBe(1);
      expect(b.count).toBe(frames.length);
      expect(b.length).toBe(frames.reduce((n, f) => n + f.length, 0));
      expect(b.buffer).toBeInstanceOf(ArrayBuffer);
      expect(b.offset + b.length).toBeLessThanOrEqual(b.buffer.byteLength);
      expect(hex(bytesOf(b))).toBe(hex(concat(frames)));
      let at = b.offset;
      let i = 0;
      for (const v of b) {
        const f = frames[i]!;
        expect(v.frameOffset).toBe(at);
        expect(v.frameLength).toBe(f.length);
        expect(hex(new Uint8Array(b.buffer, v.frameOffset, v.frameLength))).toBe(hex(f));
        const p = parse(f);
        expect([v.room, v.player, v.seq, v.tick, v.kind, hex(v.payload)]).toEqual([p.room, p.player, p.seq, p.tick, p.kind, p.payload]);
        at += v.frameLength;
        i++;
      }
      expect(i).toBe(frames.length);
    });

    it('iteration reuses one view object', async () => {
      const d = basic();
      for (let seq = 1; seq <= 10; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      await d.flush();
      const b = d.drain(1);
      const views: MoveView[] = [];
      const seqs: number[] = [];
      for (const v of b) {
        views.push(v);
        seqs.push(v.seq);
      }
      expect(views.length).toBe(10);
      expect(views.every((v) => v === views[0])).toBe(true);
      expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      // iterating twice works while the batch is valid
      expect(movesOf(b).length).toBe(10);
    });

    it('drain invalidates the previous batch, an empty drain too; release() invalidates', async () => {
      const d = basic();
      for (let seq = 1; seq <= 3; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      await d.flush();
      const b1 = d.drain(1);
      expect(b1.count).toBe(3);
      expect(b1.released).toBe(false);
      expect(movesOf(b1).map((m) => m.seq)).toEqual([1, 2, 3]);
      const kept = b1.copy();
      const empty = d.drain(1);
      expect(empty.count).toBe(0);
      expect(empty.rejections).toEqual([]);
      expect(b1.released).toBe(true);
      expectCode(() => [...b1], ErrorCode.BatchReleased);
      expectCode(() => b1.copy(), ErrorCode.BatchReleased);
      for (let seq = 4; seq <= 5; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      await d.flush();
      const b2 = d.drain(1);
      expect(b2.count).toBe(2);
      expect(movesOf(kept).map((m) => m.seq)).toEqual([1, 2, 3]);
      expect(movesOf(b2).map((m) => m.seq)).toEqual([4, 5]);
      b2.release();
      expect(b2.released).toBe(true);
      expectCode(() => [...b2], ErrorCode.BatchReleased);
      b2.release(); // idempotent
      // a copy is a batch of its own
      expect(kept.count).toBe(3);
      expect(kept.length).toBe(3 * OVERHEAD);
      expect(hex(bytesOf(kept))).toBe(hex(concat([1, 2, 3].map((seq) => frame({ room: 1, player: 7, seq })))));
    });

    it('a released batch throws even mid-iteration', async () => {
      const d = basic();
      for (let seq = 1; seq <= 3; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      await d.flush();
      const b = d.drain(1);
      const it = b[Symbol.iterator]();
      expect(it.next().done).toBe(false);
      b.release();
      expectCode(() => it.next(), ErrorCode.BatchReleased);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('closeRoom', () => {
    it('pending moves are still delivered; later frames UnknownRoom; a drained closed room is forgotten', async () => {
      const d = basic();
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 10; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      d.closeRoom(1);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 11 }))).toBe(Verdict.UnknownRoom);
      expectCode(() => d.join(1, 8), ErrorCode.UnknownRoom);
      expectCode(() => d.closeRoom(1), ErrorCode.UnknownRoom);
      pauseForTesting(d, false);
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expectArgError(() => d.drain(1), ErrorCode.UnknownRoom, 'room');
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('a closed room with nothing pending is forgotten at once', async () => {
      const d = basic();
      d.closeRoom(1);
      expectCode(() => d.drain(1), ErrorCode.UnknownRoom);
      expectCode(() => d.leave(1, 7), ErrorCode.UnknownRoom);
      // also when its earlier moves were all drained before closeRoom (no flush in between)
      d.openRoom(2);
      d.join(2, 7);
      expect(d.dispatch(frame({ room: 2, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
      await d.flush();
      expect(d.drain(2).count).toBe(1);
      d.closeRoom(2);
      expectCode(() => d.drain(2), ErrorCode.UnknownRoom);
    });

    it('push room: pending moves still reach onBatch', async () => {
      const sink = pushSink();
      const d = make({ onBatch: sink.onBatch });
      d.openRoom(4, { delivery: 'push' });
      d.join(4, 7);
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 5; seq++) expect(d.dispatch(frame({ room: 4, player: 7, seq }))).toBe(Verdict.Accepted);
      expect(d.dispatch(corrupt(frame({ room: 4, player: 7, seq: 6 }), OVERHEAD - 1))).toBe(Verdict.Accepted);
      d.closeRoom(4);
      pauseForTesting(d, false);
      await d.flush();
      const c = sink.rooms.get(4)!;
      expect(c.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(c.rejections).toEqual([{ room: 4, player: 7, seq: 6, reason: Reason.BadTag }]);
    });

    it('reopening a closing room: pending moves stay ahead of the new ones; reopen after forgetting works', async () => {
      const d = basic();
      pauseForTesting(d, true);
      for (let seq = 1; seq <= 5; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      d.closeRoom(1);
      d.openRoom(1);
      d.join(1, 7);
      for (let seq = 6; seq <= 8; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
      pauseForTesting(d, false);
      await d.flush();
      const got = emptyCollected();
      // the closing incarnation and the new one may come out in one drain or two
      for (let i = 0; i < 3 && got.moves.length < 8; i++) absorb(got, d.drain(1));
      expect(got.moves.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(got.rejections).toEqual([]);
      // close, drain out, forget, open again as an hmac push room
      d.closeRoom(1);
      await d.flush();
      try {
        d.drain(1);
      } catch {
        // already forgotten
      }
      expectCode(() => d.drain(1), ErrorCode.UnknownRoom);
      d.openRoom(1, { auth: 'hmac-sha256' });
      d.join(1, 7, { key: keyFor(7) });
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 9 }))).toBe(Verdict.AuthMismatch);
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 9, key: keyFor(7) }))).toBe(Verdict.Accepted);
      expect((await flushDrain(d, 1)).moves.map((m) => m.seq)).toEqual([9]);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('close()', () => {
    it('delivers pending moves before it resolves; later dispatch answers Closed; control calls throw CLOSED', async () => {
      const sink = pushSink();
      const d = make({ onBatch: sink.onBatch, shards: 2 });
      d.openRoom(1);
      d.openRoom(2, { delivery: 'push' });
      d.join(1, 7);
      d.join(2, 7);
      for (let seq = 1; seq <= 50; seq++) {
        expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
        expect(d.dispatch(frame({ room: 2, player: 7, seq }))).toBe(Verdict.Accepted);
      }
      await d.close();
      expect(sink.rooms.get(2)!.moves.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      // anything answers Closed, even bytes that are not a frame (check 1 comes first)
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 52 }))).toBe(Verdict.Closed);
      expect(d.dispatch(new Uint8Array(0))).toBe(Verdict.Closed);
      expect(d.dispatch(frame({ room: 99, player: 7, seq: 1 }), 8)).toBe(Verdict.Closed);
      expect(await d.dispatchAsync(frame({ room: 1, player: 7, seq: 53 }))).toBe(Verdict.Closed);
      expectCode(() => d.openRoom(3), ErrorCode.Closed);
      expectCode(() => d.join(1, 8), ErrorCode.Closed);
      expectCode(() => d.leave(1, 7), ErrorCode.Closed);
      expectCode(() => d.closeRoom(1), ErrorCode.Closed);
      // pull rooms can still be drained
      const b = d.drain(1);
      expect(movesOf(b).map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      const s = d.stats();
      expect(s.accepted).toBe(100);
      expect(s.accepted).toBe(s.delivered + s.rejected);
      expect(s.verdicts.Closed).toBeGreaterThanOrEqual(4);
      // idempotent
      await d.close();
    });

    it('frames are refused from the moment close() is called, before it resolves', async () => {
      const d = basic();
      const closing = d.close();
      expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Closed);
      expect(d.dispatchStream(frame({ room: 1, player: 7, seq: 2 })).accepted).toBe(0);
      expectCode(() => d.openRoom(5), ErrorCode.Closed);
      await closing;
      expect(d.stats().accepted).toBe(0);
    });

    it('moves still in the queue when close() is called are validated and delivered', async () => {
      const sink = pushSink();
      const d = make({ onBatch: sink.onBatch, shards: 1 });
      d.openRoom(2, { delivery: 'push' });
      d.join(2, 7);
      for (let seq = 1; seq <= 500; seq++) expect(d.dispatch(frame({ room: 2, player: 7, seq, payload: 100 }))).toBe(Verdict.Accepted);
      await d.close();
      expect(sink.rooms.get(2)!.moves.length).toBe(500);
      const s = d.stats();
      expect(s.delivered).toBe(500);
    });

    it('a dispatchAsync still waiting when close() is called resolves Closed', async () => {
      const d = basic({ shards: 1, roomBytes: 4096 });
      for (let seq = 1; seq <= 73; seq++) d.dispatch(frame({ room: 1, player: 7, seq }));
      const p = d.dispatchAsync(frame({ room: 1, player: 7, seq: 74 }));
      await d.close();
      expect(await p).toBe(Verdict.Closed);
    });
  });

  // -------------------------------------------------------------------------------------
  describe('dispatchStream', () => {
    function streamDispatcher(options: Parameters<typeof make>[0] = {}): Dispatcher {
      const d = make({ shards: 1, channelCapacity: 65536, arenaBytes: 8 << 20, roomBytes: 16 << 20, ...options });
      d.openRoom(1);
      d.openRoom(2, { auth: 'hmac-sha256' });
      for (const p of [7, 8]) {
        d.join(1, p);
        d.join(2, p, { key: keyFor(p) });
      }
      return d;
    }

    it('takes back-to-back frames', async () => {
      const d = streamDispatcher();
      const frames = Array.from({ length: 10 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1, payload: i * 3 }));
      const chunk = concat(frames);
      expect(d.dispatchStream(chunk)).toEqual({ consumed: chunk.length, accepted: 10, rejected: 0, backpressure: false, malformed: false });
      expect(d.dispatchStream(new Uint8Array(0))).toEqual({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false });
      const c = await flushDrain(d, 1);
      expect(hex(concat(c.bytes))).toBe(hex(chunk));
      const s = d.stats();
      expect(s.dispatched).toBe(10);
      expect(s.accepted).toBe(10);
    });

    it('frames refused with a verdict are consumed and counted as rejected', async () => {
      const d = streamDispatcher();
      const parts = [
        frame({ room: 1, player: 7, seq: 1 }),
        frame({ room: 9, player: 7, seq: 1 }), // UnknownRoom
        frame({ room: 2, player: 7, seq: 1 }), // AuthMismatch
        frame({ room: 1, player: 8, seq: 1 }), // WrongSender (sender 7)
        frame({ room: 2, player: 7, seq: 1, key: keyFor(7), payload: 5 }),
        frame({ room: 1, player: 7, seq: 0 }), // Malformed, but it has a frame's shape
        frame({ room: 1, player: 7, seq: 3, payload: 1100 }), // Oversize (maxPayload 1024): its length is known
        frame({ room: 1, player: 7, seq: 2 }),
      ];
      const chunk = concat(parts);
      expect(d.dispatchStream(chunk, 7)).toEqual({ consumed: chunk.length, accepted: 3, rejected: 5, backpressure: false, malformed: false });
      // a non-member's frame (no sender) is consumed and counted as rejected too
      const other = concat([frame({ room: 1, player: 9, seq: 1 }), frame({ room: 1, player: 8, seq: 1 })]);
      expect(d.dispatchStream(other)).toEqual({ consumed: other.length, accepted: 1, rejected: 1, backpressure: false, malformed: false });
      const s = d.stats();
      expect(s.dispatched).toBe(10);
      expect(s.verdicts).toMatchObject({ Accepted: 4, UnknownRoom: 1, AuthMismatch: 1, WrongSender: 1, Malformed: 1, Oversize: 1, NotMember: 1 });
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['7:1', '7:2', '8:1']);
    });

    it('a trailing partial frame is not consumed', () => {
      const d = streamDispatcher();
      const frames = [1, 2, 3].map((seq) => frame({ room: 1, player: 7, seq, payload: 10 }));
      const next = frame({ room: 1, player: 7, seq: 4, payload: 10 });
      const whole = concat(frames);
      let accepted = 0;
      for (const cut of [1, 2, 3, 23, 24, 25, 40, next.length - 1]) {
        const r = d.dispatchStream(concat([whole, next.subarray(0, cut)]));
        expect(r, `cut ${cut}`).toEqual({ consumed: whole.length, accepted: 3, rejected: 0, backpressure: false, malformed: false });
        accepted += 3;
      }
      expect(d.dispatchStream(next.subarray(0, 30))).toEqual({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false });
      expect(d.stats().accepted).toBe(accepted);
    });

    it('split at every offset gives the same totals as one chunk', async () => {
      const d = streamDispatcher();
      const parts = [
        frame({ room: 1, player: 7, seq: 1, payload: 3 }),
        frame({ room: 9, player: 7, seq: 1, payload: 1 }),
        frame({ room: 2, player: 8, seq: 1, payload: 7, key: keyFor(8) }),
        frame({ room: 2, player: 8, seq: 2, payload: 0 }),
        frame({ room: 1, player: 7, seq: 2, payload: 11 }),
        frame({ room: 1, player: 8, seq: 3, payload: 2 }),
      ];
      const chunk = concat(parts);
      const whole = d.dispatchStream(chunk);
      expect(whole).toEqual({ consumed: chunk.length, accepted: 4, rejected: 2, backpressure: false, malformed: false });
      for (let split = 0; split <= chunk.length; split++) {
        const r1 = d.dispatchStream(chunk.subarray(0, split));
        expect(r1.malformed || r1.backpressure).toBe(false);
        const rest = concat([chunk.subarray(r1.consumed, split), chunk.subarray(split)]);
        const r2 = d.dispatchStream(rest);
        const totals = { consumed: r1.consumed + r2.consumed, accepted: r1.accepted + r2.accepted, rejected: r1.rejected + r2.rejected, backpressure: r2.backpressure, malformed: r2.malformed };
        expect(totals, `split at ${split}`).toEqual(whole);
      }
      await d.flush();
      const s = d.stats();
      expect(s.dispatched).toBe(6 * (chunk.length + 2));
      expect(s.accepted).toBe(4 * (chunk.length + 2));
    });

    it('a malformed header stops the stream; nothing after it is consumed', () => {
      const d = streamDispatcher();
      const a = frame({ room: 1, player: 7, seq: 1 });
      const b = frame({ room: 1, player: 7, seq: 2 });
      for (const bad of [patch(b, { magic0: 0 }), patch(b, { magic1: 0 }), patch(b, { version: 2 }), patch(b, { flags: 0x80 })]) {
        const r = d.dispatchStream(concat([a, bad, b]));
        expect(r).toEqual({ consumed: a.length, accepted: 1, rejected: 0, backpressure: false, malformed: true });
      }
      expect(d.dispatchStream(concat([patch(b, { magic0: 1 }), a]))).toMatchObject({ consumed: 0, accepted: 0, malformed: true });
    });

    it('Backpressure stops the stream at the refused frame, which is not consumed', async () => {
      const d = streamDispatcher({ roomBytes: 4096 });
      const frames = Array.from({ length: 80 }, (_, i) => frame({ room: 1, player: 7, seq: i + 1 }));
      const chunk = concat(frames);
      const r = d.dispatchStream(chunk);
      expect(r).toEqual({ consumed: 73 * OVERHEAD, accepted: 73, rejected: 0, backpressure: true, malformed: false });
      await d.flush();
      d.drain(1);
      const r2 = d.dispatchStream(chunk.subarray(r.consumed));
      expect(r2).toEqual({ consumed: 7 * OVERHEAD, accepted: 7, rejected: 0, backpressure: false, malformed: false });
      const c = await flushDrain(d, 1);
      expect(c.moves.map((m) => m.seq)).toEqual([74, 75, 76, 77, 78, 79, 80]);
    });

    it('any chunk gets a result, never an exception', () => {
      const d = streamDispatcher();
      const rng = new Rng(99);
      for (let i = 0; i < 500; i++) {
        const parts: Uint8Array[] = [];
        for (let k = rng.int(5); k > 0; k--) {
          const f = frame({ room: rng.pick([1, 2, 3]), player: 7, seq: rng.range(1, 50), payload: rng.int(30) });
          parts.push(rng.chance(0.3) ? corrupt(f, rng.int(f.length), 1 + rng.int(255)) : f);
        }
        if (rng.chance(0.3)) parts.push(rng.bytes(rng.int(64)));
        const chunk = concat(parts);
        const r = d.dispatchStream(chunk, rng.chance(0.2) ? 7 : undefined);
        expect(r.consumed).toBeGreaterThanOrEqual(0);
        expect(r.consumed).toBeLessThanOrEqual(chunk.length);
      }
    });
  });

  // -------------------------------------------------------------------------------------
  describe('argument errors are typed and name the field', () => {
    const notBytes: unknown[] = [undefined, null, 'MV', 42, [0x4d, 0x56], new ArrayBuffer(56), { length: 56 }, new DataView(new ArrayBuffer(56))];
    const badIds: unknown[] = [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 32, 2 ** 53, '1', null, 1n];

    it('dispatch / dispatchStream / dispatchAsync: a frame that is not a Uint8Array', async () => {
      const d = basic();
      for (const v of notBytes) {
        expectArgError(() => d.dispatch(v as Uint8Array), ErrorCode.InvalidArgument, 'frame');
        expectArgError(() => d.dispatchStream(v as Uint8Array), ErrorCode.InvalidArgument, /^(chunk|frame)$/);
        let err: { code?: string; field?: string } | undefined;
        try {
          await d.dispatchAsync(v as Uint8Array);
        } catch (e) {
          err = e as typeof err;
        }
        expect(err?.code).toBe(ErrorCode.InvalidArgument);
        expect(err?.field).toBe('frame');
      }
      expect(d.stats().dispatched).toBe(0);
    });

    it('a bad sender (negative, float, NaN, > u32, not a number)', async () => {
      const d = basic();
      const f = frame({ room: 1, player: 7, seq: 1 });
      for (const sender of badIds) {
        if (sender === undefined) continue;
        expectArgError(() => d.dispatch(f, sender as number), ErrorCode.InvalidArgument, 'sender');
        expectArgError(() => d.dispatchStream(f, sender as number), ErrorCode.InvalidArgument, 'sender');
        let err: { code?: string; field?: string } | undefined;
        try {
          await d.dispatchAsync(f, sender as number);
        } catch (e) {
          err = e as typeof err;
        }
        expect(err?.code).toBe(ErrorCode.InvalidArgument);
        expect(err?.field).toBe('sender');
      }
      expect(d.stats().dispatched).toBe(0);
      expect(d.dispatch(f, 7)).toBe(Verdict.Accepted);
    });

    it('bad room and player ids in control calls', () => {
      const d = basic();
      for (const id of badIds) {
        expectArgError(() => d.openRoom(id as number), ErrorCode.InvalidArgument, 'room');
        expectArgError(() => d.join(id as number, 1), ErrorCode.InvalidArgument, 'room');
        expectArgError(() => d.join(1, id as number), ErrorCode.InvalidArgument, 'player');
        expectArgError(() => d.leave(id as number, 7), ErrorCode.InvalidArgument, 'room');
        expectArgError(() => d.leave(1, id as number), ErrorCode.InvalidArgument, 'player');
        expectArgError(() => d.closeRoom(id as number), ErrorCode.InvalidArgument, 'room');
        expectArgError(() => d.drain(id as number), ErrorCode.InvalidArgument, 'room');
      }
      // the extremes are fine
      d.openRoom(0);
      d.openRoom(0xffffffff);
      d.join(0xffffffff, 0);
      d.join(0xffffffff, 0xffffffff);
    });

    it('unknown rooms, duplicate rooms, unknown players, wrong delivery', () => {
      const d = basic();
      d.openRoom(2, { delivery: 'push' });
      expectArgError(() => d.join(9, 1), ErrorCode.UnknownRoom, 'room');
      expectArgError(() => d.leave(9, 1), ErrorCode.UnknownRoom, 'room');
      expectArgError(() => d.drain(9), ErrorCode.UnknownRoom, 'room');
      expectArgError(() => d.closeRoom(9), ErrorCode.UnknownRoom, 'room');
      expectCode(() => d.openRoom(1), ErrorCode.RoomExists);
      expectCode(() => d.openRoom(2, { delivery: 'pull' }), ErrorCode.RoomExists);
      expectCode(() => d.leave(1, 8), ErrorCode.UnknownPlayer);
      expectCode(() => d.drain(2), ErrorCode.WrongDelivery);
      const e = thrown(() => d.leave(1, 8));
      expect(e.field).toBe('player');
    });

    it('bad auth / delivery strings and room options', () => {
      const d = make();
      for (const auth of ['sha-256', 'hmac', 'SHA256', '', 1, {}]) {
        expectArgError(() => d.openRoom(1, { auth: auth as 'sha256' }), ErrorCode.InvalidArgument, 'auth');
      }
      for (const delivery of ['pulled', 'Push', '', 0, {}]) {
        expectArgError(() => d.openRoom(1, { delivery: delivery as 'pull' }), ErrorCode.InvalidArgument, 'delivery');
      }
      // nothing was opened by the failed calls
      d.openRoom(1);
    });

    it('join keys: required in hmac rooms, 16–64 bytes, bytes only, refused in sha256 rooms', () => {
      const d = make();
      d.openRoom(1, { auth: 'hmac-sha256' });
      d.openRoom(2);
      expectArgError(() => d.join(1, 7), ErrorCode.InvalidArgument, 'key');
      expectArgError(() => d.join(1, 7, {}), ErrorCode.InvalidArgument, 'key');
      for (const n of [0, 1, 15, 65, 128]) expectArgError(() => d.join(1, 7, { key: new Uint8Array(n) }), ErrorCode.InvalidArgument, 'key');
      for (const key of ['0123456789abcdef', 16, [1, 2, 3], new ArrayBuffer(32)]) {
        expectArgError(() => d.join(1, 7, { key: key as unknown as Uint8Array }), ErrorCode.InvalidArgument, 'key');
      }
      expectArgError(() => d.join(2, 7, { key: keyFor(7) }), ErrorCode.InvalidArgument, 'key');
      // none of these joined anyone
      expectCode(() => d.leave(1, 7), ErrorCode.UnknownPlayer);
      expectCode(() => d.leave(2, 7), ErrorCode.UnknownPlayer);
      d.join(1, 7, { key: new Uint8Array(16) });
      d.join(1, 8, { key: Buffer.alloc(64, 1) });
      d.join(2, 7);
    });

    describe('constructor options', () => {
      const numeric = ['shards', 'workerThreads', 'channelCapacity', 'arenaBytes', 'roomBytes', 'maxPayload', 'maxBatchMoves', 'maxBlockingThreads', 'maxPendingAsync'] as const;
      const bad: unknown[] = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, -Number.POSITIVE_INFINITY, 2 ** 31, 2 ** 53, 1e12, '8', null, true, {}];

      it.each(numeric)('%s: 0 / negative / float / NaN / huge / not a number', (field) => {
        for (const value of bad) {
          if (field === 'maxPayload' && value === 0) continue; // 0 is a valid maxPayload
          const e = expectArgError(() => new Dispatcher({ engine, [field]: value }), ErrorCode.InvalidOption, field);
          expect(e.message).toContain(field);
        }
      });

      it('boundaries that must be refused', () => {
        expectArgError(() => new Dispatcher({ engine, arenaBytes: (64 << 10) - 1 }), ErrorCode.InvalidOption, 'arenaBytes');
        expectArgError(() => new Dispatcher({ engine, roomBytes: 4095 }), ErrorCode.InvalidOption, 'roomBytes');
        expectArgError(() => new Dispatcher({ engine, maxPayload: 65536 }), ErrorCode.InvalidOption, 'maxPayload');
        expectArgError(() => new Dispatcher({ engine, maxPayload: 65535, arenaBytes: 64 << 10 }), ErrorCode.InvalidOption, /^(arenaBytes|maxPayload)$/);
        expectArgError(() => new Dispatcher({ engine, maxPayload: 8000, roomBytes: 4096 }), ErrorCode.InvalidOption, /^(roomBytes|maxPayload)$/);
      });

      it('small settings and extremes that must work', async () => {
        const ok = [
          { shards: 1, channelCapacity: 64, arenaBytes: 1 << 20 },
          { shards: 1, channelCapacity: 1, arenaBytes: 64 << 10, roomBytes: 4096, maxPayload: 0, maxBatchMoves: 1 },
          { maxPayload: 65535 },
          { shards: 3, workerThreads: 1, maxBlockingThreads: 1, pinCores: false },
          { shards: 2, workerThreads: 2, pinCores: true },
          { shards: 1, workerThreads: 1, pinCores: [0] },
        ];
        for (const options of ok) {
          const d = make(options);
          d.openRoom(1);
          d.join(1, 7);
          expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
          expect((await flushDrain(d, 1)).moves.length).toBe(1);
        }
      });

      it('engine, onBatch, onError, pinCores, options object', () => {
        for (const e of ['x', 'Native', '', 1, {}]) {
          expectArgError(() => new Dispatcher({ engine: e as 'js' }), ErrorCode.InvalidOption, 'engine');
        }
        for (const f of ['fn', 1, {}, null, []]) {
          expectArgError(() => new Dispatcher({ engine, onBatch: f as () => void }), ErrorCode.InvalidOption, 'onBatch');
          expectArgError(() => new Dispatcher({ engine, onError: f as () => void }), ErrorCode.InvalidOption, 'onError');
        }
        // a core the machine does not have (it would silently stay unpinned)
        const online = cpus().length;
        for (const p of ['yes', 1, 0, [-1], [1.5], ['0'], [Number.NaN], [0, -3], [online], [1023], {}, null]) {
          expectArgError(() => new Dispatcher({ engine, pinCores: p as boolean }), ErrorCode.InvalidOption, 'pinCores');
        }
        for (const o of ['x', 5, true]) {
          expectArgError(() => new Dispatcher(o as never), ErrorCode.InvalidOption);
        }
      });

      it('a misspelt or unknown option key is refused, naming it and the closest known one', async () => {
        // `onDeliver` would otherwise give a dispatcher that never delivers, without a word.
        const e = expectArgError(() => new Dispatcher({ engine, onDeliver: () => {} } as never), ErrorCode.InvalidOption, 'onDeliver');
        expect(e.message).toMatch(/unknown option "onDeliver" \(did you mean onDelivery\?\)/);
        expect(expectArgError(() => new Dispatcher({ engine, Shards: 1 } as never), ErrorCode.InvalidOption, 'Shards').message).toMatch(/did you mean shards\?/);
        expect(expectArgError(() => new Dispatcher({ engine, zzz: 1 } as never), ErrorCode.InvalidOption, 'zzz').message).not.toMatch(/did you mean/);
        expectArgError(() => new Dispatcher({ engine, overload: { queueDeph: 5 } } as never), ErrorCode.InvalidOption, 'overload.queueDeph');
        // a key set to undefined is a key left out
        await new Dispatcher({ engine, onDeliver: undefined } as never).close();
        const d = basic();
        expectArgError(() => d.openRoom(9, { delivery: 'push', rateLimt: { perSecond: 1, burst: 1 } } as never), ErrorCode.InvalidArgument, 'rateLimt');
        expectArgError(() => d.openRoom(9, { rateLimit: { perSecond: 1, burst: 1, bursts: 2 } } as never), ErrorCode.InvalidArgument, 'rateLimit.bursts');
        expectArgError(() => d.join(1, 9, { kye: keyFor(9) } as never), ErrorCode.InvalidArgument, 'kye');
        expectArgError(() => d.stats({ rest: true } as never), ErrorCode.InvalidArgument, 'rest');
        expectArgError(() => d.broadcast(1, new Uint8Array(1), { excpt: 3 } as never), ErrorCode.InvalidArgument, 'excpt');
        expectArgError(() => d.broadcast(1, new Uint8Array(1), { except: 'x' } as never), ErrorCode.InvalidArgument, 'except');
        expectArgError(() => d.broadcast(1, new Uint8Array(1), null as never), ErrorCode.InvalidArgument, 'options');
        expect(d.broadcast(1, new Uint8Array(1), { except: [1, 2] })).toBe(0);
        await expect(d.batches({ sginal: undefined, singal: 1 } as never).next()).rejects.toMatchObject({ code: ErrorCode.InvalidArgument, field: 'singal' });
        expect(d.stats({ reset: false }).shards.length).toBeGreaterThan(0);
      });
    });
  });

  // -------------------------------------------------------------------------------------
  describe('encodeMove round trip through the engine', () => {
    it('frames from encodeMove are accepted and delivered byte-exact', async () => {
      const d = basic();
      d.openRoom(2, { auth: 'hmac-sha256' });
      d.join(2, 7, { key: keyFor(7) });
      const a = encodeMove({ room: 1, player: 7, seq: 1, tick: 9, kind: 4, payload: new Uint8Array([1, 2, 3]) });
      const b = encodeMove({ room: 2, player: 7, seq: 1, payload: new Uint8Array(0), key: keyFor(7) });
      expect(d.dispatch(a)).toBe(Verdict.Accepted);
      expect(d.dispatch(b)).toBe(Verdict.Accepted);
      const got = await flushAndDrain(d, [1, 2]);
      expect(hex(concat(got.get(1)!.bytes))).toBe(hex(a));
      expect(hex(concat(got.get(2)!.bytes))).toBe(hex(b));
    });
  });

  it('stats() names every verdict and reason; metrics() is Prometheus text', () => {
    const d = make();
    const s = d.stats();
    const text = d.metrics();
    expect(typeof text).toBe('string');
    expect(text).toMatch(/^# (HELP|TYPE) /m);
    expect(text).toMatch(/^move_dispatcher_\w+(\{[^}]*\})? \d+(\.\d+)?$/m);
    expect(Object.keys(s.verdicts).sort()).toEqual(Object.keys(Verdict).sort());
    expect(Object.keys(s.reasons).sort()).toEqual(Object.keys(Reason).sort());
    expect(verdictName(Verdict.WrongSender)).toBe('WrongSender');
  });
});

