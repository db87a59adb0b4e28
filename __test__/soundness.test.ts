/**
 * The addon's binding, called directly the way no released TypeScript path does, must fail
 * with an error (or do nothing) rather than crash the process or hand JavaScript memory that
 * is written again:
 * - every delivery (`drain`, `drainAll`, push) is an `ArrayBuffer` of its own, in the
 *   Delivery v2 format; no later delivery reuses its memory while JavaScript can see it;
 * - `releaseDelivery` detaches the buffer and is idempotent, whatever JavaScript passes
 *   (twice, a buffer already detached or transferred, a foreign buffer, a bad shard);
 * - the v1 room-memory calls (`roomBuffer`, `copyBatch`, `release`) are gone;
 * - the bench exports are not in the published addon.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeMove } from '../index';
import { resolveOptions } from '../src/options';
import { skipReason } from './helpers';

interface RawNative {
  readonly id: number;
  openRoom(room: number, auth: number, push: boolean, perSecond: number, burst: number): number;
  join(room: number, player: number, key: Uint8Array | null): number;
  drain(room: number): ArrayBuffer | number;
  drainAll(): ArrayBuffer | null | undefined;
  releaseDelivery(buffer: ArrayBuffer, shard: number): void;
  requestFlush(token: number): void;
  shutdown(): void;
}

interface RawBinding {
  NativeDispatcher: new (config: object, wake: () => void) => RawNative;
  dispatch(id: number, frame: Uint8Array): number;
  pollPacked(id: number, out: Uint32Array): number;
  takeDelivery(id: number): ArrayBuffer;
  [name: string]: unknown;
}

const skip = skipReason('native');
const PULL = 0xffff_ffff;

/** The header words of a delivery. */
function header(buffer: ArrayBuffer): number[] {
  const dv = new DataView(buffer);
  return Array.from({ length: 8 }, (_, i) => dv.getUint32(4 * i, true));
}

describe.skipIf(skip !== null)('native binding soundness', () => {
  const binding = (): RawBinding => require(join(__dirname, '..', 'binding.js')) as RawBinding;

  /** A one-shard core with pull rooms 1 and 2 (sha256, player 7). */
  function core(roomBytes = 4096): { b: RawBinding; n: RawNative } {
    const b = binding();
    const { config } = resolveOptions({ shards: 1, roomBytes });
    const { pinCores: _pin, ...rest } = config;
    const n = new b.NativeDispatcher(rest, () => {});
    for (const room of [1, 2]) {
      expect(n.openRoom(room, 0, false, 0, 0)).toBe(0);
      expect(n.join(room, 7, null)).toBe(0);
    }
    return { b, n };
  }

  /** Dispatches seqs `from..to` into `room`, then drains until they are all out (one delivery or more). */
  async function drained(b: RawBinding, n: RawNative, room: number, from: number, to: number): Promise<ArrayBuffer[]> {
    for (let seq = from; seq <= to; seq++) expect(b.dispatch(n.id, encodeMove({ room, player: 7, seq, payload: new Uint8Array([seq]) }))).toBe(0);
    const out: ArrayBuffer[] = [];
    let moves = 0;
    for (let i = 0; i < 2000 && moves < to - from + 1; i++) {
      const r = n.drain(room);
      if (typeof r === 'number') {
        expect(r).toBe(0);
        await new Promise((resolve) => setTimeout(resolve, 1));
      } else {
        out.push(r);
        moves += header(r)[3]!;
      }
    }
    expect(moves).toBe(to - from + 1);
    return out;
  }

  it('drain hands out deliveries of format 2 in memory of their own; later deliveries never reuse it', async () => {
    const { b, n } = core();
    const first = await drained(b, n, 1, 1, 3);
    const [version, shard, nRooms] = header(first[0]!);
    expect([version, shard, nRooms]).toEqual([2, PULL, 1]);
    const kept = first.map((buf) => new Uint8Array(buf).slice());
    // many more drains of the same room: the first deliveries' bytes never change
    for (let round = 0; round < 20; round++) {
      const more = await drained(b, n, 1, 10 + round * 5, 14 + round * 5);
      for (const buf of more) {
        expect(first.includes(buf)).toBe(false);
        n.releaseDelivery(buf, PULL);
      }
    }
    first.forEach((buf, i) => expect(new Uint8Array(buf)).toEqual(kept[i]));
    expect(n.drain(1)).toBe(0);
    expect(n.drain(99)).toBe(1); // Status.UnknownRoom
    n.shutdown();
  });

  it('drainAll: one delivery of every pull room with something; undefined when none has', async () => {
    const { b, n } = core();
    expect(n.drainAll() ?? undefined).toBeUndefined();
    for (const room of [1, 2]) for (let seq = 1; seq <= 4; seq++) expect(b.dispatch(n.id, encodeMove({ room, player: 7, seq }))).toBe(0);
    let total = 0;
    for (let i = 0; i < 2000 && total < 8; i++) {
      const all = n.drainAll();
      if (all === undefined || all === null) await new Promise((resolve) => setTimeout(resolve, 1));
      else {
        expect(header(all).slice(0, 2)).toEqual([2, PULL]);
        total += header(all)[3]!;
        n.releaseDelivery(all, PULL);
      }
    }
    expect(total).toBe(8);
    expect(n.drainAll() ?? undefined).toBeUndefined();
    n.shutdown();
  });

  it('releaseDelivery detaches; twice, after a transfer, a foreign buffer or a bad shard: no crash', async () => {
    const { b, n } = core();
    const [buf] = await drained(b, n, 1, 1, 2);
    const view = new Uint8Array(buf!);
    n.releaseDelivery(buf!, PULL);
    expect([buf!.byteLength, view.byteLength]).toEqual([0, 0]);
    n.releaseDelivery(buf!, PULL);
    const [other] = await drained(b, n, 2, 1, 1);
    structuredClone(other!, { transfer: [other!] });
    n.releaseDelivery(other!, PULL);
    const calls: [string, () => unknown][] = [
      ['a foreign buffer', () => n.releaseDelivery(new ArrayBuffer(64), PULL)],
      ['a shard out of range', () => n.releaseDelivery(new ArrayBuffer(64), 1000)],
      ['shard 0 with nothing out', () => n.releaseDelivery(new ArrayBuffer(64), 0)],
    ];
    for (const [, call] of calls) {
      try {
        call();
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
      }
    }
    // the core still works
    const [again] = await drained(b, n, 1, 3, 3);
    expect(header(again!)[3]).toBe(1);
    n.shutdown();
  });

  it('the v1 room-memory calls are gone', () => {
    const proto = binding().NativeDispatcher.prototype as unknown as Record<string, unknown>;
    for (const name of ['roomBuffer', 'copyBatch', 'release']) expect(typeof proto[name], name).toBe('undefined');
    for (const name of ['drain', 'drainAll', 'releaseDelivery']) expect(typeof proto[name], name).toBe('function');
    expect(typeof binding().takeDelivery).toBe('function');
  });

  it('the published addon carries no bench exports', () => {
    const names = Object.keys(binding());
    expect(names.filter((k) => k.startsWith('bench') || k === 'emptyCall')).toEqual([]);
  });
});
