/**
 * Runtimes that refuse external ArrayBuffers (Electron, V8 sandbox) get batches copied out of
 * room memory. The same path runs on request (`MOVE_DISPATCHER_COPY_BATCHES=1`); here both
 * modes must deliver the same bytes, and only copy mode hands out buffers of the batch's size.
 */
import { describe, expect, it } from 'vitest';
import { Dispatcher, type MoveBatch, encodeMove } from '../index';

function withCopyMode<T>(on: boolean, make: () => T): T {
  const saved = process.env.MOVE_DISPATCHER_COPY_BATCHES;
  if (on) process.env.MOVE_DISPATCHER_COPY_BATCHES = '1';
  else delete process.env.MOVE_DISPATCHER_COPY_BATCHES;
  try {
    return make();
  } finally {
    if (saved === undefined) delete process.env.MOVE_DISPATCHER_COPY_BATCHES;
    else process.env.MOVE_DISPATCHER_COPY_BATCHES = saved;
  }
}

const frames = Array.from({ length: 50 }, (_, i) => encodeMove({ room: 1, player: 1, seq: i + 1, payload: new Uint8Array([i, i + 1]) }));
const expected = Buffer.concat(frames.map((f) => Buffer.from(f)));

describe.each([false, true])('native batches, copy mode %s', (copy) => {
  it('pull: drained bytes equal the dispatched frames, twice over (both halves)', async () => {
    const d = withCopyMode(copy, () => new Dispatcher({ shards: 1 }));
    d.openRoom(1);
    d.join(1, 1);
    for (let round = 0; round < 2; round++) {
      for (const f of frames) expect(d.dispatch(f)).toBe(0);
      await d.flush();
      const b = d.drain(1);
      expect(b.count).toBe(frames.length);
      expect(Buffer.from(b.buffer, b.offset, b.length).equals(expected)).toBe(true);
      expect(b.buffer.byteLength === b.length).toBe(copy);
      d.closeRoom(1);
      await d.flush();
      d.openRoom(1);
      d.join(1, 1);
    }
    await d.close();
  });

  it('push: delivered bytes equal the dispatched frames', async () => {
    const got: Buffer[] = [];
    const d = withCopyMode(copy, () => new Dispatcher({ shards: 1, onBatch: (b: MoveBatch) => got.push(Buffer.from(b.bytes())) }));
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 1);
    for (const f of frames) expect(d.dispatch(f)).toBe(0);
    await d.flush();
    expect(Buffer.concat(got).equals(expected)).toBe(true);
    await d.close();
  });
});
