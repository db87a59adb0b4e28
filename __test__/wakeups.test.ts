/**
 * One-frame calls and the workers' wake-ups. The native engine pays a worker's wake-up once
 * per event-loop turn, and only when a call fed a worker that had announced sleep (a busy
 * worker of pull rooms naps instead, and is not woken at all): these tests would hang or
 * time out on a lost wake-up. No `flush()` here — a flush wakes workers by itself.
 */
import { describe, expect, it } from 'vitest';
import { encodeMove } from '../index';
import type { Dispatcher, MoveBatch } from '../index';
import { skipReason, useDispatchers } from './helpers';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const move = (room: number, player: number, seq: number) => encodeMove({ room, player, seq, payload: new Uint8Array([seq & 0xff]) });

/** Opens pull `rooms` with player 7 in each, and waits until they are in force. */
async function pullRooms(d: Dispatcher, rooms: number[]): Promise<void> {
  for (const room of rooms) {
    d.openRoom(room);
    d.join(room, 7);
  }
  await d.flush();
}

/** Drains pull rooms until `want` moves came, or fails after 5 s. */
async function drainUntil(drainAll: () => Iterable<MoveBatch>, want: number): Promise<number[]> {
  const seqs: number[] = [];
  const until = Date.now() + 5_000;
  while (seqs.length < want) {
    if (Date.now() > until) throw new Error(`only ${seqs.length} of ${want} moves arrived in 5 s without a flush: a lost wake-up`);
    for (const b of drainAll()) for (const m of b) seqs.push(m.seq);
    await sleep(2);
  }
  return seqs;
}

describe.each(['js', 'native'] as const)('wake-ups of one-frame calls [%s]', (engine) => {
  const skip = skipReason(engine);
  const make = useDispatchers(engine);

  it.skipIf(skip !== null)('a move sent after the workers fell asleep arrives, by dispatch, dispatch with a sender and dispatchStream', async () => {
    const d = make({ shards: 2 });
    await pullRooms(d, [1, 2]);
    let seq = 0;
    for (const call of ['dispatch', 'dispatchFrom', 'dispatchStream'] as const) {
      // Long enough for every worker to end its nap and sleep.
      await sleep(30);
      for (const room of [1, 2]) {
        seq++;
        const f = move(room, 7, seq);
        if (call === 'dispatch') expect(d.dispatch(f)).toBe(0);
        else if (call === 'dispatchFrom') expect(d.dispatch(f, 7)).toBe(0);
        else expect(d.dispatchStream(f, 7).accepted).toBe(1);
      }
      const got = await drainUntil(() => d.drainAll(), 2);
      expect(got.sort((a, b) => a - b)).toEqual([seq - 1, seq]);
    }
  });

  it.skipIf(skip !== null)('a steady trickle of one-frame calls to pull rooms (workers napping between) loses nothing and ends idle', async () => {
    const d = make({ shards: 2 });
    await pullRooms(d, [1, 2, 3]);
    const seqs = new Map<number, number>([[1, 0], [2, 0], [3, 0]]);
    let sent = 0;
    // ~2 s of calls in small bursts, one burst per event-loop turn, with gaps of 0–3 ms
    // (around the 1 ms nap), then nothing.
    const end = Date.now() + 2_000;
    let got = 0;
    while (Date.now() < end) {
      for (let i = 0; i < 1 + (sent % 3); i++) {
        const room = 1 + (sent % 3);
        const seq = seqs.get(room)! + 1;
        seqs.set(room, seq);
        expect(d.dispatch(move(room, 7, seq), 7)).toBe(0);
        sent++;
      }
      for (const b of d.drainAll()) got += b.count;
      await sleep(sent % 4);
    }
    const rest = await drainUntil(() => d.drainAll(), sent - got);
    expect(got + rest.length).toBe(sent);
    expect(d.stats().accepted).toBe(sent);
  });

  it.skipIf(skip !== null)('drainAll() and drain(room) hold every move dispatched before them (workers busy, napping or asleep)', async () => {
    const d = make({ shards: 2 });
    await pullRooms(d, [1, 2, 3]);
    let seq = 0;
    for (let round = 0; round < 200; round++) {
      const n = 1 + (round % 4);
      for (let i = 0; i < n; i++) {
        seq++;
        expect(d.dispatch(move(1 + (seq % 3), 7, seq), 7)).toBe(0);
      }
      let got = 0;
      if (round % 2 === 0) {
        for (const b of d.drainAll()) got += b.count;
      } else {
        for (const room of [1, 2, 3]) got += d.drain(room)?.count ?? 0;
      }
      expect(got, `round ${round}`).toBe(n);
      if (round % 40 === 0) await sleep(5);
      else if (round % 7 === 0) await new Promise<void>((r) => setImmediate(r));
    }
  });

  it.skipIf(skip !== null)('push rooms: a move sent to a sleeping worker reaches onDelivery without a flush', async () => {
    const seen: number[] = [];
    const d = make({
      shards: 1,
      onDelivery: (delivery) => {
        for (const b of delivery) for (const m of b) seen.push(m.seq);
      },
    });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 7);
    await d.flush();
    for (let seq = 1; seq <= 3; seq++) {
      await sleep(30);
      expect(d.dispatch(move(1, 7, seq), 7)).toBe(0);
      const until = Date.now() + 5_000;
      while (!seen.includes(seq)) {
        if (Date.now() > until) throw new Error(`move ${seq} never delivered without a flush: a lost wake-up`);
        await sleep(2);
      }
    }
    expect(seen).toEqual([1, 2, 3]);
  });
});
