/**
 * The addon's binding, called directly the way no released TypeScript path does, must fail
 * with an error rather than crash the process or read memory a worker is writing:
 * - room memory is exposed to V8 at most once at a time (two live external buffers over one
 *   address are a fatal V8 check that ends the process);
 * - `copyBatch` copies only a delivered batch's range, never the half the worker is filling
 *   or anything out of bounds, whatever offsets JavaScript passes;
 * - the bench exports are not in the published addon.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeMove } from '../index';
import { resolveOptions } from '../src/options';
import { skipReason } from './helpers';

interface Drained {
  status: number;
  memId: number;
  offset: number;
  length: number;
  count: number;
}

interface RawNative {
  readonly id: number;
  openRoom(room: number, auth: number, push: boolean, perSecond: number, burst: number): number;
  join(room: number, player: number, key: Uint8Array | null): number;
  drain(room: number): Drained;
  roomBuffer(room: number, memId: number): ArrayBuffer;
  copyBatch(room: number, memId: number, offset: number, length: number): ArrayBuffer;
  shutdown(): void;
}

interface RawBinding {
  NativeDispatcher: new (config: object, wake: () => void) => RawNative;
  dispatch(id: number, frame: Uint8Array): number;
  [name: string]: unknown;
}

const skip = skipReason('native');

describe.skipIf(skip !== null)('native binding soundness', () => {
  const binding = (): RawBinding => require(join(__dirname, '..', 'binding.js')) as RawBinding;

  /** A one-shard core with room 1 (pull, sha256, player 7), `n` moves validated and drained. */
  async function drained(n: number, roomBytes = 4096): Promise<{ n: RawNative; d: Drained }> {
    const b = binding();
    const { config } = resolveOptions({ shards: 1, roomBytes });
    const { pinCores: _pin, ...rest } = config;
    const core = new b.NativeDispatcher(rest, () => {});
    expect(core.openRoom(1, 0, false, 0, 0)).toBe(0);
    expect(core.join(1, 7, null)).toBe(0);
    for (let seq = 1; seq <= n; seq++) expect(b.dispatch(core.id, encodeMove({ room: 1, player: 7, seq, payload: new Uint8Array([seq]) }))).toBe(0);
    let got: Drained | undefined;
    let count = 0;
    for (let i = 0; i < 2000 && count < n; i++) {
      const d = core.drain(1);
      if (d.count > 0) {
        count += d.count;
        got = d;
      } else await new Promise((r) => setTimeout(r, 1));
    }
    expect(count).toBe(n);
    return { n: core, d: got! };
  }

  it('room memory is exposed once at a time: a second roomBuffer fails instead of aborting V8', async () => {
    const { n, d } = await drained(3);
    const first = n.roomBuffer(1, d.memId);
    expect(first.byteLength).toBe(2 * 4096);
    expect(() => n.roomBuffer(1, d.memId)).toThrow(/ALREADY_EXPOSED/);
    // The first buffer still reads the batch.
    expect(new Uint8Array(first, d.offset, 2)).toEqual(new Uint8Array([0x4d, 0x56]));
    n.shutdown();
  });

  it('copyBatch copies a delivered batch and refuses the fill half and out-of-bounds ranges', async () => {
    const { n, d } = await drained(2);
    const copy = new Uint8Array(n.copyBatch(1, d.memId, d.offset, d.length));
    expect(copy.length).toBe(d.length);
    expect(copy[0]).toBe(0x4d);
    // The other half is where the worker writes the next moves.
    const fill = d.offset === 0 ? 4096 : 0;
    expect(() => n.copyBatch(1, d.memId, fill, 16)).toThrow(/not a delivered batch/);
    expect(() => n.copyBatch(1, d.memId, 4000, 200)).toThrow(/not a delivered batch/);
    expect(() => n.copyBatch(1, d.memId, 0, 0xffff_ffff)).toThrow(/not a delivered batch/);
    expect(() => n.copyBatch(1, d.memId + 1000, d.offset, d.length)).toThrow(/is gone/);
    n.shutdown();
  });

  it('the published addon carries no bench exports', () => {
    const names = Object.keys(binding());
    expect(names.filter((k) => k.startsWith('bench') || k === 'emptyCall')).toEqual([]);
  });
});
