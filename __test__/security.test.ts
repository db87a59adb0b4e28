/**
 * Security (issue 5, item 6), on both engines: forged HMAC tags, another player's key,
 * cross-room replay, flag downgrade / upgrade, spoofed senders (and rate-limit buckets),
 * seq 0 and the top of the seq space, replay-window edges and a set-based model of the
 * window, replay after leave + join, and that no error message, `util.inspect` /
 * `JSON.stringify` output, stats(), metrics() or anything the process prints contains key or
 * payload bytes.
 *
 * Not tested here (Rust side): that tags are compared in constant time (`ct_eq` in
 * crates/dispatcher/src/auth.rs: every byte combined, no early exit, `black_box` on the
 * accumulator) and that keys are zeroised on leave / close (`impl Drop for PlayerKey`).
 */
import { createHash, createHmac } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Dispatcher, Reason, Verdict, encodeMove } from '../index';
import type { MoveBatch, Rejection } from '../index';
import { ENGINES, type EngineName, Rng, concat, flushAndDrain, flushDrain, frame, keyFor, patch, retag, skipReason, tagOf, thrown, useDispatchers } from './helpers';

const K1 = keyFor(1);
const K2 = keyFor(2);

/** `f` with its tag replaced by `tag` (32 bytes). */
function withTag(f: Uint8Array, tag: Uint8Array): Uint8Array {
  const out = f.slice();
  out.set(tag, out.length - 32);
  return out;
}

/** The signed part of `f` (header and payload). */
const body = (f: Uint8Array) => f.subarray(0, f.length - 32);

const seqsOf = (b: { moves: { seq: number }[] }) => b.moves.map((m) => m.seq);
const why = (rs: Rejection[]) => rs.map((r) => `${r.player}:${r.seq}:${Object.entries(Reason).find(([, v]) => v === r.reason)?.[0]}`);

describe.each(ENGINES)('security [%s engine]', (engine: EngineName) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  /** HMAC pull room 5 with players 1 (K1) and 2 (K2). */
  function hmacRoom(): Dispatcher {
    const d = make();
    d.openRoom(5, { auth: 'hmac-sha256' });
    d.join(5, 1, { key: K1 });
    d.join(5, 2, { key: K2 });
    return d;
  }

  // -------------------------------------------------------------------------------------
  it('forged HMAC tags are BadTag and never touch the window: the genuine moves still pass', async () => {
    const d = hmacRoom();
    const forgeries: [string, (seq: number) => Uint8Array][] = [];
    const genuine = (seq: number) => frame({ room: 5, player: 1, seq, payload: 20, key: K1 });
    const add = (name: string, make: (seq: number) => Uint8Array) => forgeries.push([name, make]);
    add('all-zero tag', (s) => withTag(genuine(s), new Uint8Array(32)));
    add('all-0xff tag', (s) => withTag(genuine(s), new Uint8Array(32).fill(0xff)));
    add('random tag', (s) => withTag(genuine(s), new Rng(s).bytes(32)));
    add('the tag of the previous seq', (s) => withTag(genuine(s), genuine(s - 1).subarray(-32)));
    add('SHA-256 of the body under the HMAC flag', (s) => withTag(genuine(s), tagOf(body(genuine(s)))));
    add('SHA-256(key ‖ body)', (s) => withTag(genuine(s), new Uint8Array(createHash('sha256').update(K1).update(body(genuine(s))).digest())));
    add('SHA-256(body ‖ key)', (s) => withTag(genuine(s), new Uint8Array(createHash('sha256').update(body(genuine(s))).update(K1).digest())));
    add('HMAC under the first 16 key bytes', (s) => frame({ room: 5, player: 1, seq: s, payload: 20, key: K1.subarray(0, 16) }));
    add('HMAC under the key with a byte appended', (s) => frame({ room: 5, player: 1, seq: s, payload: 20, key: concat([K1, new Uint8Array([1])]) }));
    add('HMAC under the empty key', (s) => withTag(genuine(s), new Uint8Array(createHmac('sha256', Buffer.alloc(0)).update(body(genuine(s))).digest())));
    add('HMAC under a key differing in its last bit', (s) => {
      const k = K1.slice();
      k[31]! ^= 1;
      return frame({ room: 5, player: 1, seq: s, payload: 20, key: k });
    });
    add('payload extended, length field updated, old tag kept', (s) => {
      const g = genuine(s);
      const longer = patch(concat([body(g), new Uint8Array(4), g.subarray(-32)]), { len: 24 });
      return longer;
    });
    for (let byte = 0; byte < 32; byte++) {
      for (const bit of [0, 7]) add(`tag byte ${byte} bit ${bit} flipped`, (s) => {
        const g = genuine(s);
        g[g.length - 32 + byte]! ^= 1 << bit;
        return g;
      });
    }
    let seq = 10;
    const forgedSeqs: number[] = [];
    for (const [name, forge] of forgeries) {
      seq++;
      const f = forge(seq);
      expect(d.dispatch(f, 1), name).toBe(Verdict.Accepted); // the tag is checked asynchronously
      forgedSeqs.push(seq);
    }
    // a forged frame at the top of the seq space must not move the window either
    expect(d.dispatch(withTag(genuine(0xffffffff), new Uint8Array(32)), 1)).toBe(Verdict.Accepted);
    // now the genuine frames with the same seqs: all accepted
    for (const s of forgedSeqs) expect(d.dispatch(genuine(s), 1)).toBe(Verdict.Accepted);
    const c = await flushDrain(d, 5);
    expect(c.rejections.every((r) => r.reason === Reason.BadTag)).toBe(true);
    expect(c.rejections.map((r) => r.seq)).toEqual([...forgedSeqs, 0xffffffff]);
    expect(seqsOf(c)).toEqual(forgedSeqs);
    expect(forgeries.length).toBeGreaterThanOrEqual(70);
  });

  // -------------------------------------------------------------------------------------
  it("another player's key: BadTag; another player's frames from this connection: WrongSender", async () => {
    const d = hmacRoom();
    // player 2 signs a move claiming to be player 1
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: K2 }))).toBe(Verdict.Accepted);
    // player 1 signs with its own key but claims player 2
    expect(d.dispatch(frame({ room: 5, player: 2, seq: 1, key: K1 }))).toBe(Verdict.Accepted);
    // player 1's key from another room (same player, other session)
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 2, key: keyFor(1, 3) }))).toBe(Verdict.Accepted);
    // the connection proved player 2: any frame naming player 1 is refused at once
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 3, key: K2 }), 2)).toBe(Verdict.WrongSender);
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 3, key: K1 }), 2)).toBe(Verdict.WrongSender); // stolen, valid
    const c = await flushDrain(d, 5);
    expect(why(c.rejections)).toEqual(['1:1:BadTag', '2:1:BadTag', '1:2:BadTag']);
    expect(c.moves).toEqual([]);
    // nothing above touched a window: the genuine seqs pass
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: K1 }), 1)).toBe(Verdict.Accepted);
    expect(d.dispatch(frame({ room: 5, player: 2, seq: 1, key: K2 }), 2)).toBe(Verdict.Accepted);
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 3, key: K1 }), 1)).toBe(Verdict.Accepted);
    const c2 = await flushDrain(d, 5);
    expect(c2.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['1:1', '2:1', '1:3']);
    expect(c2.rejections).toEqual([]);
  });

  // -------------------------------------------------------------------------------------
  it('spoofed senders, in every dispatch form; a spoofer cannot spend its victim’s rate-limit tokens', async () => {
    const d = make();
    d.openRoom(5, { auth: 'hmac-sha256', rateLimit: { perSecond: 0.001, burst: 3 } });
    d.join(5, 1, { key: K1 });
    d.join(5, 2, { key: K2 });
    const victim = (seq: number) => frame({ room: 5, player: 1, seq, key: K1 });
    // the attacker's connection (sender 2) replays or forges the victim's frames
    for (let s = 1; s <= 10; s++) expect(d.dispatch(victim(s), 2)).toBe(Verdict.WrongSender);
    expect(await d.dispatchAsync(victim(11), 2)).toBe(Verdict.WrongSender);
    const r = d.dispatchStream(concat([victim(12), victim(13)]), 2);
    expect(r).toMatchObject({ consumed: 2 * 56, accepted: 0, rejected: 2, backpressure: false, malformed: false });
    // the victim's bucket is full: 3 pass, the 4th is limited
    expect([1, 2, 3, 4].map((s) => d.dispatch(victim(s), 1))).toEqual([Verdict.Accepted, Verdict.Accepted, Verdict.Accepted, Verdict.RateLimited]);
    // and so is the attacker's own (WrongSender spends nothing)
    expect([1, 2, 3].map((s) => d.dispatch(frame({ room: 5, player: 2, seq: s, key: K2 }), 2))).toEqual([Verdict.Accepted, Verdict.Accepted, Verdict.Accepted]);
    const c = await flushDrain(d, 5);
    expect(c.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(['1:1', '1:2', '1:3', '2:1', '2:2', '2:3']);
    expect(d.stats().verdicts.WrongSender).toBe(13);
  });

  // -------------------------------------------------------------------------------------
  it('cross-room replay: a frame valid in room A does not pass in room B (HMAC); SHA-256 rooms are integrity only', async () => {
    const d = make();
    d.openRoom(10, { auth: 'hmac-sha256' });
    d.openRoom(11, { auth: 'hmac-sha256' });
    d.openRoom(12, { auth: 'hmac-sha256' });
    d.openRoom(20);
    d.openRoom(21);
    d.join(10, 1, { key: K1 });
    d.join(11, 1, { key: K1 }); // the same key in both rooms: the worst case
    d.join(12, 1, { key: keyFor(1, 12) }); // a key of its own
    d.join(20, 1);
    d.join(21, 1);
    const a = frame({ room: 10, player: 1, seq: 1, payload: 7, key: K1 });
    expect(d.dispatch(a, 1)).toBe(Verdict.Accepted);
    // replayed as is: the header names room 10, where it is a replay
    expect(d.dispatch(a, 1)).toBe(Verdict.Accepted);
    // the room field rewritten to B: the tag covers it
    expect(d.dispatch(patch(a, { room: 11 }), 1)).toBe(Verdict.Accepted);
    expect(d.dispatch(patch(a, { room: 12 }), 1)).toBe(Verdict.Accepted);
    // re-signed for room 12 with room 10's key: still BadTag in 12
    expect(d.dispatch(retag(patch(a, { room: 12 }), K1), 1)).toBe(Verdict.Accepted);
    // into the SHA-256 room (its HMAC flag kept): refused before any check of the tag
    expect(d.dispatch(patch(a, { room: 20 }), 1)).toBe(Verdict.AuthMismatch);
    // SHA-256 rooms: the same move with its room rewritten and its digest recomputed is a
    // fresh move there (anyone can compute SHA-256: use hmac-sha256 rooms to authenticate)
    const s = frame({ room: 20, player: 1, seq: 1, payload: 7 });
    expect(d.dispatch(s, 1)).toBe(Verdict.Accepted);
    expect(d.dispatch(patch(s, { room: 21 }), 1)).toBe(Verdict.Accepted); // digest not recomputed: BadTag
    expect(d.dispatch(retag(patch(s, { room: 21 })), 1)).toBe(Verdict.Accepted); // recomputed: a move in 21
    const got = await flushAndDrain(d, [10, 11, 12, 20, 21]);
    expect(seqsOf(got.get(10)!)).toEqual([1]);
    expect(why(got.get(10)!.rejections)).toEqual(['1:1:Replay']);
    expect(why(got.get(11)!.rejections)).toEqual(['1:1:BadTag']);
    expect(why(got.get(12)!.rejections)).toEqual(['1:1:BadTag', '1:1:BadTag']);
    expect(got.get(11)!.moves).toEqual([]);
    expect(got.get(12)!.moves).toEqual([]);
    expect(seqsOf(got.get(20)!)).toEqual([1]);
    expect(why(got.get(21)!.rejections)).toEqual(['1:1:BadTag']);
    expect(seqsOf(got.get(21)!)).toEqual([1]);
  });

  // -------------------------------------------------------------------------------------
  it('flag downgrade and upgrade are AuthMismatch in dispatch, dispatchStream and dispatchAsync, and touch no window', async () => {
    const d = hmacRoom();
    d.openRoom(6);
    d.join(6, 1);
    const h = frame({ room: 5, player: 1, seq: 1, payload: 3, key: K1 });
    const down = retag(h); // a correct SHA-256 frame of the same move
    const s = frame({ room: 6, player: 1, seq: 1, payload: 3 });
    const up = retag(s, K1); // a correct HMAC frame of the same move
    for (const [f, name] of [
      [down, 'downgrade'],
      [up, 'upgrade'],
      [patch(h, { flags: 0 }), 'bare flag clear'],
      [patch(s, { flags: 1 }), 'bare flag set'],
    ] as const) {
      expect(d.dispatch(f), name).toBe(Verdict.AuthMismatch);
      expect(d.dispatch(f, 1), name).toBe(Verdict.AuthMismatch);
      expect(await d.dispatchAsync(f, 1), name).toBe(Verdict.AuthMismatch);
      expect(d.dispatchStream(f, 1), name).toMatchObject({ consumed: f.length, accepted: 0, rejected: 1 });
    }
    // the other flag bits are not a mode: Malformed
    expect(d.dispatch(patch(h, { flags: 3 }))).toBe(Verdict.Malformed);
    expect(d.dispatch(patch(s, { flags: 2 }))).toBe(Verdict.Malformed);
    expect(d.stats().accepted).toBe(0);
    // the genuine seq 1 still passes in both rooms
    expect(d.dispatch(h, 1)).toBe(Verdict.Accepted);
    expect(d.dispatch(s, 1)).toBe(Verdict.Accepted);
    const got = await flushAndDrain(d, [5, 6]);
    expect(seqsOf(got.get(5)!)).toEqual([1]);
    expect(seqsOf(got.get(6)!)).toEqual([1]);
    expect(d.stats().verdicts.AuthMismatch).toBe(16);
  });

  // -------------------------------------------------------------------------------------
  it('seq 0 is Malformed even when correctly signed; u32 max is the last seq: there is no wrap, only a new window after leave + join', async () => {
    const d = hmacRoom();
    const m = (seq: number) => frame({ room: 5, player: 1, seq, key: K1 });
    const zero = retag(patch(m(1), { seq: 0 }), K1);
    expect(d.dispatch(zero, 1)).toBe(Verdict.Malformed);
    expect(d.dispatchStream(concat([zero, m(1)]), 1)).toMatchObject({ consumed: 112, accepted: 1, rejected: 1 });
    expect(d.dispatch(m(0xffffffff), 1)).toBe(Verdict.Accepted);
    expect(d.dispatch(m(0xffffffff), 1)).toBe(Verdict.Accepted); // duplicate
    expect(d.dispatch(m(2), 1)).toBe(Verdict.Accepted); // 2 would be the "wrapped" next seq: too old
    expect(d.dispatch(m(0xffffffff - 127), 1)).toBe(Verdict.Accepted); // 127 back: fine
    expect(d.dispatch(m(0xffffffff - 128), 1)).toBe(Verdict.Accepted); // 128 back: too old
    let c = await flushDrain(d, 5);
    expect(seqsOf(c)).toEqual([1, 0xffffffff, 0xffffffff - 127]);
    expect(why(c.rejections)).toEqual([`1:${0xffffffff}:Replay`, '1:2:Replay', `1:${0xffffffff - 128}:Replay`]);
    // the player is at the end of its seq space until it leaves and joins again
    d.leave(5, 1);
    d.join(5, 1, { key: keyFor(1, 1) });
    expect(d.dispatch(frame({ room: 5, player: 1, seq: 1, key: keyFor(1, 1) }), 1)).toBe(Verdict.Accepted);
    c = await flushDrain(d, 5);
    expect(seqsOf(c)).toEqual([1]);
    expect(d.stats().verdicts.Malformed).toBe(2); // seq 0 by dispatch and in the stream
  });

  // -------------------------------------------------------------------------------------
  it('window edges: exactly 128 back is too old, 127 back passes once; also at the start and across jumps of 63..129', async () => {
    const d = hmacRoom();
    const m = (seq: number) => frame({ room: 5, player: 1, seq, key: K1 });
    const want: { seq: number; ok: boolean }[] = [];
    const send = (seq: number, ok: boolean) => {
      expect(d.dispatch(m(seq), 1)).toBe(Verdict.Accepted);
      want.push({ seq, ok });
    };
    send(128, true); // top 128
    send(1, true); // 127 back, unseen
    send(1, false); // duplicate
    send(129, true); // top 129
    send(2, true); // 127 back
    send(130, true); // top 130: seq 2 is 128 back now
    send(2, false);
    send(3, true); // 127 back
    send(2 + 130, true); // top 132
    send(4, false); // 128 back
    send(5, true); // 127 back
    // jumps across the window's word boundaries: after each, the seq just inside the window
    // passes unless already seen, the one exactly at its edge does not, and a seen one stays
    // seen
    const accepted = new Set(want.filter((w) => w.ok).map((w) => w.seq));
    let top = 132;
    for (const jump of [63, 64, 65, 127, 128, 129]) {
      const before = top;
      top += jump;
      send(top, true);
      accepted.add(top);
      const inside = top - 127;
      send(inside, !accepted.has(inside));
      accepted.add(inside);
      send(top - 128, false);
      if (jump < 128) send(before, false);
    }
    const c = await flushDrain(d, 5);
    expect(seqsOf(c)).toEqual(want.filter((w) => w.ok).map((w) => w.seq));
    expect(c.rejections.map((r) => r.seq)).toEqual(want.filter((w) => !w.ok).map((w) => w.seq));
    expect(c.rejections.every((r) => r.reason === Reason.Replay)).toBe(true);
  });

  // -------------------------------------------------------------------------------------
  it('the replay window agrees with a set-based model, with forged frames (any seq) mixed in', async () => {
    for (const start of [0, 0xffffffff - 40_000]) {
      const d = hmacRoom();
      const rng = new Rng(start + 17);
      let top = start;
      const seen = new Set<number>();
      let modelTop = 0;
      const accept = (s: number): boolean => {
        if (s > modelTop) {
          modelTop = s;
          seen.add(s);
          return true;
        }
        if (modelTop - s < 128 && !seen.has(s)) {
          seen.add(s);
          return true;
        }
        return false;
      };
      const wantMoves: number[] = [];
      const wantRejections: string[] = [];
      for (let i = 0; i < 1500; i++) {
        const roll = rng.next();
        let seq: number;
        if (roll < 0.35) seq = Math.min(0xffffffff, top + rng.range(1, 140));
        else if (roll < 0.8) seq = Math.max(1, top - rng.range(0, 140));
        else if (roll < 0.9) seq = rng.pick([...seen].slice(-200).concat([top || 1]));
        else {
          // forged: any seq, bad tag; must change nothing
          const f = rng.chance(0.5) ? 0xffffffff : rng.range(1, 0xffffffff);
          expect(d.dispatch(withTag(frame({ room: 5, player: 1, seq: f, key: K1 }), rng.bytes(32)), 1)).toBe(Verdict.Accepted);
          wantRejections.push(`1:${f}:BadTag`);
          continue;
        }
        top = Math.max(top, seq);
        expect(d.dispatch(frame({ room: 5, player: 1, seq, key: K1 }), 1)).toBe(Verdict.Accepted);
        if (accept(seq)) wantMoves.push(seq);
        else wantRejections.push(`1:${seq}:Replay`);
      }
      const c = await flushDrain(d, 5);
      expect(seqsOf(c)).toEqual(wantMoves);
      expect(why(c.rejections)).toEqual(wantRejections);
      expect(wantMoves.length).toBeGreaterThan(150);
      expect(wantRejections.filter((w) => w.endsWith('Replay')).length).toBeGreaterThan(150);
      await d.close();
    }
  });

  // -------------------------------------------------------------------------------------
  it('leave + join with the same key restarts the window (old frames replay); a new key, or a rejoin without leave, does not', async () => {
    const d = hmacRoom();
    const old = [1, 2, 3].map((seq) => frame({ room: 5, player: 1, seq, key: K1 }));
    for (const f of old) expect(d.dispatch(f, 1)).toBe(Verdict.Accepted);
    expect(seqsOf(await flushDrain(d, 5))).toEqual([1, 2, 3]);
    // rejoin without leaving (key rotation): the window is kept
    d.join(5, 1, { key: K1 });
    for (const f of old) d.dispatch(f, 1);
    let c = await flushDrain(d, 5);
    expect(why(c.rejections)).toEqual(['1:1:Replay', '1:2:Replay', '1:3:Replay']);
    // leave + join with a new key: the old frames no longer verify
    d.leave(5, 1);
    d.join(5, 1, { key: keyFor(1, 7) });
    for (const f of old) d.dispatch(f, 1);
    c = await flushDrain(d, 5);
    expect(why(c.rejections)).toEqual(['1:1:BadTag', '1:2:BadTag', '1:3:BadTag']);
    // leave + join with the SAME key: a new window, so a recorded session replays in full.
    // (Documented: "a later join starts a new window" — give every session a fresh key.)
    d.leave(5, 1);
    d.join(5, 1, { key: K1 });
    for (const f of old) d.dispatch(f, 1);
    c = await flushDrain(d, 5);
    expect(seqsOf(c)).toEqual([1, 2, 3]);
  });

  // -------------------------------------------------------------------------------------
  describe('no key or payload bytes in messages, inspect output, stats, metrics or printed output', () => {
    const KEY = new Uint8Array(createHash('sha256').update('move-dispatcher security test key').digest());
    const PAYLOAD = new TextEncoder().encode('Zq7#Wm!pX2vR@kL9^tY5&nB3');

    /** Ways bytes get printed: hex (both cases, spaced or not), decimal lists, latin1, base64 at every alignment. */
    function needles(bytes: Uint8Array, window = 6): string[] {
      const b = Buffer.from(bytes);
      const out = new Set<string>();
      for (let i = 0; i + window <= b.length; i++) {
        const w = b.subarray(i, i + window);
        const h = w.toString('hex');
        out.add(h);
        out.add(h.toUpperCase());
        out.add([...w].map((x) => x.toString(16).padStart(2, '0')).join(' '));
        out.add([...w].map((x) => `0x${x.toString(16).padStart(2, '0')}`).join(', '));
        out.add([...w].join(', '));
        out.add([...w].join(','));
        out.add(w.toString('latin1'));
      }
      for (let shift = 0; shift < 3; shift++) {
        for (const enc of ['base64', 'base64url'] as const) {
          const s = Buffer.concat([Buffer.alloc(shift), b]).toString(enc);
          const inner = s.slice(4, s.length - 4); // groups touched by the prefix or the end left out
          for (let i = 0; i + 8 <= inner.length; i += 4) out.add(inner.slice(i, i + 8));
        }
      }
      // inspect() pads array columns with spaces: also match with all whitespace removed
      for (const n of [...out]) out.add(n.replace(/\s+/g, ''));
      return [...out].filter((n) => n.length >= 6);
    }
    const NEEDLES = [...needles(KEY).map((n) => ['key', n] as const), ...needles(PAYLOAD).map((n) => ['payload', n] as const)];

    /** The needles found in `raw` (as printed, and with its whitespace removed). */
    function leaksIn(where: string, raw: string): string[] {
      const text = `${raw}\n${raw.replace(/\s+/g, '')}`;
      const leaks: string[] = [];
      for (const [what, n] of NEEDLES) {
        const at = text.indexOf(n);
        if (at >= 0) leaks.push(`${what} bytes (${JSON.stringify(n)}) in ${where}: …${text.slice(Math.max(0, at - 60), at + n.length + 20)}…`);
      }
      return leaks;
    }

    /** No needle in any text; a failure lists the first leak of each place. */
    function expectClean(texts: [where: string, text: string][]): void {
      const firstPerPlace = new Map<string, string>();
      for (const [where, text] of texts) {
        const leak = leaksIn(where, text)[0];
        if (leak !== undefined && !firstPerPlace.has(where)) firstPerPlace.set(where, leak);
      }
      expect([...firstPerPlace.values()]).toEqual([]);
    }

    function errorTexts(where: string, error: unknown): [string, string][] {
      const e = error as Error;
      let json = '';
      try {
        json = JSON.stringify(e);
      } catch {
        json = '';
      }
      return [
        [`${where}: message`, String(e?.message)],
        [`${where}: String()`, String(e)],
        [`${where}: stack`, String(e?.stack)],
        [`${where}: inspect`, inspect(e, { showHidden: true, depth: Number.POSITIVE_INFINITY })],
        [`${where}: JSON`, json],
      ];
    }

    it('thrown errors, the Dispatcher, stats(), metrics(), batches and move views', async () => {
      const texts: [string, string][] = [];
      const seen: MoveBatch[] = [];
      const d = make({
        onBatch(b) {
          seen.push(b);
          texts.push(['push batch inspect', inspect(b, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
          texts.push(['push batch JSON', JSON.stringify(b)]);
          for (const m of b) {
            texts.push(['push move view inspect', inspect(m, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
            texts.push(['push move view JSON', JSON.stringify(m)]);
          }
        },
      });
      d.openRoom(1, { auth: 'hmac-sha256' });
      d.openRoom(2, { auth: 'hmac-sha256', delivery: 'push' });
      d.openRoom(3);
      d.join(1, 7, { key: KEY });
      d.join(2, 7, { key: KEY });
      d.join(3, 7);
      const good = (room: number, seq: number) => encodeMove({ room, player: 7, seq, payload: PAYLOAD, key: room === 3 ? undefined : KEY });
      for (let s = 1; s <= 5; s++) {
        expect(d.dispatch(good(1, s), 7)).toBe(Verdict.Accepted);
        expect(d.dispatch(good(2, s), 7)).toBe(Verdict.Accepted);
        expect(d.dispatch(good(3, s), 7)).toBe(Verdict.Accepted);
        d.dispatch(good(1, s), 7); // replays: rejections
        d.dispatch(encodeMove({ room: 1, player: 7, seq: 100 + s, payload: PAYLOAD, key: keyFor(9) }), 7); // forged
      }
      const f = good(1, 50);
      const calls: [string, () => unknown][] = [
        ['join(key: hex string)', () => d.join(1, 8, { key: Buffer.from(KEY).toString('hex') as never })],
        ['join(key: base64 string)', () => d.join(1, 8, { key: Buffer.from(KEY).toString('base64') as never })],
        ['join(key: latin1 string)', () => d.join(1, 8, { key: Buffer.from(KEY).toString('latin1') as never })],
        ['join(key: array)', () => d.join(1, 8, { key: [...KEY] as never })],
        ['join(key: ArrayBuffer)', () => d.join(1, 8, { key: KEY.slice().buffer as never })],
        ['join(key: DataView)', () => d.join(1, 8, { key: new DataView(KEY.slice().buffer) as never })],
        ['join(key: 15 bytes)', () => d.join(1, 8, { key: KEY.subarray(0, 15) })],
        ['join(key: 65 bytes)', () => d.join(1, 8, { key: concat([KEY, KEY, KEY.subarray(0, 1)]) })],
        ['join(key) in a sha256 room', () => d.join(3, 8, { key: KEY })],
        ['join(key) in an unknown room', () => d.join(99, 8, { key: KEY })],
        ['openRoom(key as the room)', () => d.openRoom(KEY as never)],
        ['openRoom(rateLimit: key)', () => d.openRoom(9, { rateLimit: KEY as never })],
        ['dispatch(frame as latin1 string)', () => d.dispatch(Buffer.from(f).toString('latin1') as never)],
        ['dispatch(frame as hex string)', () => d.dispatch(Buffer.from(f).toString('hex') as never)],
        ['dispatch(frame as array)', () => d.dispatch([...f] as never)],
        ['dispatch(frame as ArrayBuffer)', () => d.dispatch(f.slice().buffer as never)],
        ['dispatch(frame, sender: key)', () => d.dispatch(f, KEY as never)],
        ['dispatchStream(payload as string)', () => d.dispatchStream(Buffer.from(PAYLOAD).toString('latin1') as never)],
        ['stats(topRooms: key)', () => d.stats({ topRooms: KEY as never })],
        ['drain(push room)', () => d.drain(2)],
        ['encodeMove(key as hex string)', () => encodeMove({ room: 1, player: 7, seq: 1, payload: PAYLOAD, key: Buffer.from(KEY).toString('hex') as never })],
        ['encodeMove(payload as string)', () => encodeMove({ room: 1, player: 7, seq: 1, payload: Buffer.from(PAYLOAD).toString('latin1') as never, key: KEY })],
        ['encodeMove(key 15 bytes)', () => encodeMove({ room: 1, player: 7, seq: 1, payload: PAYLOAD, key: KEY.subarray(0, 15) })],
        ['encodeMove(payload 65536 bytes)', () => encodeMove({ room: 1, player: 7, seq: 1, payload: Buffer.alloc(65536, Buffer.from(PAYLOAD)), key: KEY })],
        ['new Dispatcher(pinCores: key)', () => new Dispatcher({ engine, pinCores: [...KEY].map((x) => x + 0.5) })],
      ];
      for (const [where, call] of calls) texts.push(...errorTexts(where, thrown(call)));
      try {
        await d.dispatchAsync([...f] as never);
      } catch (error) {
        texts.push(...errorTexts('dispatchAsync(frame as array)', error));
      }
      await d.flush();
      const pull = d.drain(1);
      texts.push(['pull batch inspect', inspect(pull, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
      texts.push(['pull batch JSON', JSON.stringify(pull)]);
      texts.push(['pull batch in an array (console.log)', inspect([pull, { nested: pull }])]);
      const viewKeys = new Set<string>();
      for (const m of pull) {
        texts.push(['pull move view inspect', inspect(m)]);
        texts.push(['pull move view JSON', JSON.stringify(m)]);
        for (const k of Object.keys(JSON.parse(JSON.stringify(m)) as object)) viewKeys.add(k);
      }
      texts.push(['rejections', inspect(pull.rejections, { depth: 5 })]);
      const sha = d.drain(3);
      texts.push(['sha256 pull batch inspect', inspect(sha, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
      pull.release();
      texts.push(...errorTexts('read of a released batch', thrown(() => [...pull])));
      texts.push(['dispatcher inspect', inspect(d, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
      texts.push(['dispatcher JSON', JSON.stringify(d)]);
      texts.push(['stats inspect', inspect(d.stats({ topRooms: 100 }), { depth: Number.POSITIVE_INFINITY })]);
      texts.push(['stats JSON', JSON.stringify(d.stats())]);
      texts.push(['metrics', d.metrics()]);
      d.leave(1, 7);
      await d.close();
      texts.push(...errorTexts('join after close', thrown(() => d.join(1, 7, { key: KEY }))));
      texts.push(['dispatcher inspect after close', inspect(d, { showHidden: true, depth: Number.POSITIVE_INFINITY })]);
      expect(seen.length).toBeGreaterThan(0);
      expect(pull.count).toBe(5);
      // the needles do find the bytes where they are printed on purpose
      for (const [what, printed] of [
        ['inspect(Buffer key)', inspect(Buffer.from(KEY))],
        ['inspect(Uint8Array payload)', inspect(PAYLOAD)],
        ['inspect(Uint8Array key)', inspect(KEY)],
        ['key in base64', Buffer.from(KEY).toString('base64')],
        ['payload in base64 at offset 1', Buffer.from(concat([new Uint8Array(1), PAYLOAD])).toString('base64')],
        ['payload as text', `moved: ${new TextDecoder().decode(PAYLOAD)}`],
        // (a batch printed raw no longer shows its memory: `buffer` is a getter of the
        // delivery's; the memory itself, printed on purpose, does)
        ["a batch's memory printed on purpose", inspect(new Uint8Array(sha.buffer), { maxArrayLength: Number.POSITIVE_INFINITY })],
      ] as const) {
        expect(leaksIn(what, printed).length, what).toBeGreaterThan(0);
      }
      expectClean(texts);
      // a view serialises its fields (toJSON), never the memory behind it (the leak check above)
      expect([...viewKeys].sort()).toEqual(['frameLength', 'frameOffset', 'kind', 'payloadLength', 'payloadOffset', 'player', 'room', 'seq', 'tick']);
    });

    it('a whole session in a child process prints no key or payload bytes (warnings included)', () => {
      const r = spawnSync(process.execPath, [join(__dirname, 'fixtures', 'security-output.cjs'), engine, Buffer.from(KEY).toString('hex'), Buffer.from(PAYLOAD).toString('hex')], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, RUST_BACKTRACE: '1', NODE_DEBUG: '' },
      });
      const out = `${r.stdout}\n${r.stderr}`;
      expect(r.signal, out.slice(-2000)).toBeNull();
      expect(r.status, out.slice(-2000)).toBe(0);
      expect(r.stdout).toContain('done');
      expect(r.stderr, 'the throwing callbacks were reported').toContain('move-dispatcher: onBatch threw');
      // argv is not printed; strip nothing else
      expectClean([['child stdout', r.stdout], ['child stderr', r.stderr]]);
    });
  });
});
