/**
 * Hostile input from JavaScript (issue 5, item 5), on both engines: tables of bad calls
 * across every public method — wrong types, NaN, negatives, floats, huge numbers, empty and
 * 1 GiB buffers, detached / out-of-bounds / resizable / SharedArrayBuffer-backed / odd-offset
 * views, calls after close(), re-entrant calls from inside onBatch and onOverload. Each row
 * states the documented verdict or the typed error (class, stable `code`, `field`); none may
 * crash, and none may lose a move accepted before it: a valid move goes in before every row,
 * and each table ends with a flush / drain checking that every accepted move came out once
 * (accepted = delivered + rejected, and the bytes of every tracked move).
 *
 * The conformance suite already covers the plain argument errors one by one; these tables put
 * them next to the stranger inputs and check the engine still works after each.
 */
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { Dispatcher, ErrorCode, Verdict, encodeMove } from '../index';
import type { DispatcherOptions, MoveBatch, StreamResult } from '../index';
import { ENGINES, type EngineName, concat, frame, hex, keyFor, patch, skipReason, sleep, until, useDispatchers, pauseForTesting } from './helpers';

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/** One 1 GiB buffer for the whole file (allocated on first use). */
let gibBuffer: Buffer | undefined;
function gib(): Buffer {
  gibBuffer ??= Buffer.allocUnsafe(2 ** 30);
  return gibBuffer;
}
afterAll(() => {
  gibBuffer = undefined;
});

// Resizable / growable buffers (ES2024) are not in this project's TypeScript lib yet.
type ResizableArrayBuffer = ArrayBuffer & { resize(byteLength: number): void };
const ResizableArrayBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;
const GrowableSharedArrayBuffer = SharedArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => SharedArrayBuffer;

/** A view whose ArrayBuffer has been detached (transferred away). */
function detached(bytes: Uint8Array, offset = 0): Uint8Array {
  const ab = new ArrayBuffer(bytes.length + offset);
  const view = new Uint8Array(ab, offset, bytes.length);
  view.set(bytes);
  structuredClone(ab, { transfer: [ab] });
  return view;
}

/** A view detached by posting its buffer through a MessageChannel (another way to detach). */
function detachedByPost(bytes: Uint8Array, offset: number): Uint8Array {
  const ab = new ArrayBuffer(bytes.length + offset);
  const view = new Uint8Array(ab, offset, bytes.length);
  view.set(bytes);
  const { port1, port2 } = new MessageChannel();
  port1.postMessage(null, [ab]);
  port1.close();
  port2.close();
  return view;
}

/** A fixed-length view of a resizable ArrayBuffer that was then shrunk below it (out of bounds). */
function outOfBounds(bytes: Uint8Array): Uint8Array {
  const ab = new ResizableArrayBuffer(bytes.length + 8, { maxByteLength: 4096 });
  const view = new Uint8Array(ab, 8, bytes.length);
  view.set(bytes);
  ab.resize(4);
  return view;
}

/** A length-tracking view of a resizable ArrayBuffer holding `bytes`. */
function resizable(bytes: Uint8Array): Uint8Array {
  const ab = new ResizableArrayBuffer(bytes.length, { maxByteLength: 1 << 16 });
  const view = new Uint8Array(ab);
  view.set(bytes);
  return view;
}

/** `bytes` in a (growable, when asked) SharedArrayBuffer, at `offset`. */
function shared(bytes: Uint8Array, offset = 0, growable = false): Uint8Array {
  const sab = growable ? new GrowableSharedArrayBuffer(bytes.length + offset, { maxByteLength: 1 << 16 }) : new SharedArrayBuffer(bytes.length + offset);
  const view = new Uint8Array(sab, offset, bytes.length);
  view.set(bytes);
  return view;
}

/** `bytes` at an odd offset inside a larger buffer. */
function oddOffset(bytes: Uint8Array, offset = 1001): Uint8Array {
  const big = new Uint8Array(offset + bytes.length + 13).fill(0xa5);
  big.set(bytes, offset);
  return big.subarray(offset, offset + bytes.length);
}

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

type Ctor = typeof TypeError | typeof RangeError | typeof Error;

/** What a row must do. `error`: thrown synchronously or as a rejection, of exactly that class. */
type Want =
  | { verdict: Verdict }
  | { error: Ctor; code: string; field?: string }
  | { userError: string }
  | { check: (value: unknown) => void };

interface Ctx {
  d: Dispatcher;
  /** The next seq of player 7 in room 1. */
  seq: () => number;
  /** Records a copy of a frame that must come out of `room` (in this order), before it is dispatched. */
  track: (room: number, f: Uint8Array) => Uint8Array;
}

interface Row {
  name: string;
  call: (ctx: Ctx) => unknown;
  want: Want;
}

const err = (error: Ctor, code: string, field?: string): Want => (field === undefined ? { error, code } : { error, code, field });
const bad = (field: string): Want => err(TypeError, ErrorCode.InvalidArgument, field);
const range = (field: string): Want => err(RangeError, ErrorCode.InvalidArgument, field);
const option = (error: Ctor, field: string): Want => err(error, ErrorCode.InvalidOption, field);
const verdict = (v: Verdict): Want => ({ verdict: v });
const stream = (want: Partial<StreamResult>): Want => ({ check: (v) => expect(v).toMatchObject(want) });
const works: Want = { check: () => undefined };

async function outcome(call: () => unknown): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown; async: boolean }> {
  let value: unknown;
  try {
    value = call();
  } catch (error) {
    return { ok: false, error, async: false };
  }
  if (value instanceof Promise) {
    try {
      return { ok: true, value: await value };
    } catch (error) {
      return { ok: false, error, async: true };
    }
  }
  return { ok: true, value };
}

async function check(row: Row, ctx: Ctx): Promise<void> {
  const got = await outcome(() => row.call(ctx));
  const label = `row "${row.name}"`;
  const want = row.want;
  if ('verdict' in want || 'check' in want) {
    if (!got.ok) {
      const e = got.error as { name?: string; code?: string; message?: string };
      throw new Error(`${label}: expected a result, got ${e?.name} ${e?.code}: ${e?.message}`);
    }
    if ('verdict' in want) expect(got.value, label).toBe(want.verdict);
    else want.check(got.value);
    return;
  }
  expect(got.ok, `${label}: expected an error, got ${got.ok ? String(got.value) : ''}`).toBe(false);
  if (got.ok) return;
  const e = got.error as Error & { code?: string; field?: string };
  if ('userError' in want) {
    expect(e.message, label).toBe(want.userError);
    expect(e.code, label).toBeUndefined();
    return;
  }
  expect(Object.getPrototypeOf(e), `${label}: ${e?.name}: ${e?.message}`).toBe(want.error.prototype);
  expect(e.code, `${label}: ${e.message}`).toBe(want.code);
  if (want.field !== undefined) expect(e.field, `${label}: ${e.message}`).toBe(want.field);
}

const KEY2 = keyFor(7); // player 7's key in HMAC room 2
const KEY8 = keyFor(8);
const KEY9 = keyFor(9);

/** The rows run against an open dispatcher (rooms: 1 pull, 2 pull HMAC, 3 push, 4 pull flood target). */
function openTable(engine: EngineName): Row[] {
  const f1 = (ctx: Ctx, payload: Uint8Array | number = 8) => frame({ room: 1, player: 7, seq: ctx.seq(), payload });
  let seq8 = 0;
  let seq9 = 0;
  const key9Source = KEY9.slice();
  const throwingOptions = {
    get auth(): string {
      throw new Error('a getter of the caller (expected by the test)');
    },
  };
  return [
    // --- dispatch: not bytes -----------------------------------------------------------
    { name: 'dispatch(undefined)', call: ({ d }) => d.dispatch(undefined as never), want: bad('frame') },
    { name: 'dispatch(null)', call: ({ d }) => d.dispatch(null as never), want: bad('frame') },
    { name: 'dispatch(a frame as a binary string)', call: (c) => c.d.dispatch(Buffer.from(f1(c)).toString('latin1') as never), want: bad('frame') },
    { name: 'dispatch(56)', call: ({ d }) => d.dispatch(56 as never), want: bad('frame') },
    { name: 'dispatch(ArrayBuffer of a valid frame)', call: (c) => c.d.dispatch(f1(c).buffer as never), want: bad('frame') },
    { name: 'dispatch(DataView)', call: (c) => c.d.dispatch(new DataView(f1(c).buffer) as never), want: bad('frame') },
    { name: 'dispatch(Int8Array over a valid frame)', call: (c) => c.d.dispatch(new Int8Array(f1(c).buffer) as never), want: bad('frame') },
    { name: 'dispatch(Uint8ClampedArray)', call: (c) => c.d.dispatch(new Uint8ClampedArray(f1(c)) as never), want: bad('frame') },
    { name: 'dispatch(Float64Array)', call: ({ d }) => d.dispatch(new Float64Array(8) as never), want: bad('frame') },
    { name: 'dispatch(plain array of a frame’s bytes)', call: (c) => c.d.dispatch([...f1(c)] as never), want: bad('frame') },
    { name: 'dispatch(array-like object)', call: ({ d }) => d.dispatch({ length: 56, 0: 0x4d, 1: 0x56 } as never), want: bad('frame') },
    // --- dispatch: odd bytes -----------------------------------------------------------
    { name: 'dispatch(empty view at the end of a buffer)', call: ({ d }) => d.dispatch(new Uint8Array(new ArrayBuffer(16), 16)), want: verdict(Verdict.Malformed) },
    {
      name: 'dispatch(1 GiB of zeros in the header)',
      call: ({ d }) => {
        gib().fill(0, 0, 64);
        return d.dispatch(gib());
      },
      want: verdict(Verdict.Malformed),
    },
    {
      name: 'dispatch(1 GiB with a valid header claiming 65535 payload bytes)',
      call: ({ d }) => {
        gib().set(patch(frame({ room: 1, player: 7, seq: 1 }), { len: 65535 }).subarray(0, 24), 0);
        return d.dispatch(gib());
      },
      want: verdict(Verdict.Oversize),
    },
    {
      name: 'dispatch(1 GiB with a valid header claiming 16 payload bytes)',
      call: ({ d }) => {
        gib().set(frame({ room: 1, player: 7, seq: 1, payload: 16 }).subarray(0, 24), 0);
        return d.dispatch(gib());
      },
      want: verdict(Verdict.Malformed),
    },
    { name: 'dispatch(detached view of a valid frame)', call: (c) => c.d.dispatch(detached(f1(c))), want: verdict(Verdict.Malformed) },
    { name: 'dispatch(view at offset 3 detached by postMessage, with sender)', call: (c) => c.d.dispatch(detachedByPost(f1(c), 3), 7), want: verdict(Verdict.Malformed) },
    { name: 'dispatch(out-of-bounds view of a shrunk resizable buffer)', call: (c) => c.d.dispatch(outOfBounds(f1(c))), want: verdict(Verdict.Malformed) },
    { name: 'dispatch(length-tracking view of a resizable buffer)', call: (c) => c.d.dispatch(resizable(c.track(1, f1(c)))), want: verdict(Verdict.Accepted) },
    { name: 'dispatch(SharedArrayBuffer view at offset 3)', call: (c) => c.d.dispatch(shared(c.track(1, f1(c)), 3)), want: verdict(Verdict.Accepted) },
    { name: 'dispatch(growable SharedArrayBuffer view)', call: (c) => c.d.dispatch(shared(c.track(1, f1(c)), 0, true), 7), want: verdict(Verdict.Accepted) },
    { name: 'dispatch(subarray at odd offset 1001)', call: (c) => c.d.dispatch(oddOffset(c.track(1, f1(c)))), want: verdict(Verdict.Accepted) },
    {
      name: 'dispatch, then the caller detaches the frame’s buffer',
      call: (c) => {
        const f = f1(c, 40);
        c.track(1, f);
        const v = c.d.dispatch(f);
        structuredClone(f.buffer, { transfer: [f.buffer as ArrayBuffer] });
        return v;
      },
      want: verdict(Verdict.Accepted),
    },
    {
      name: 'dispatch, then the caller overwrites the frame',
      call: (c) => {
        const f = f1(c, 40);
        c.track(1, f);
        const v = c.d.dispatch(f);
        f.fill(0xff);
        return v;
      },
      want: verdict(Verdict.Accepted),
    },
    // --- dispatch: bad senders ---------------------------------------------------------
    { name: 'dispatch(frame, NaN)', call: (c) => c.d.dispatch(f1(c), Number.NaN), want: range('sender') },
    { name: 'dispatch(frame, -1)', call: (c) => c.d.dispatch(f1(c), -1), want: range('sender') },
    { name: 'dispatch(frame, 7.5)', call: (c) => c.d.dispatch(f1(c), 7.5), want: range('sender') },
    { name: 'dispatch(frame, 2**32)', call: (c) => c.d.dispatch(f1(c), 2 ** 32), want: range('sender') },
    { name: 'dispatch(frame, 2**53)', call: (c) => c.d.dispatch(f1(c), 2 ** 53), want: range('sender') },
    { name: 'dispatch(frame, Infinity)', call: (c) => c.d.dispatch(f1(c), Number.POSITIVE_INFINITY), want: range('sender') },
    { name: "dispatch(frame, '7')", call: (c) => c.d.dispatch(f1(c), '7' as never), want: bad('sender') },
    { name: 'dispatch(frame, 7n)', call: (c) => c.d.dispatch(f1(c), 7n as never), want: bad('sender') },
    { name: 'dispatch(frame, null)', call: (c) => c.d.dispatch(f1(c), null as never), want: bad('sender') },
    { name: 'dispatch(frame, { valueOf: () => 7 })', call: (c) => c.d.dispatch(f1(c), { valueOf: () => 7 } as never), want: bad('sender') },
    { name: 'dispatch(frame, -0) is sender 0', call: (c) => c.d.dispatch(f1(c), -0), want: verdict(Verdict.WrongSender) },
    // --- dispatchStream ----------------------------------------------------------------
    { name: 'dispatchStream(undefined)', call: ({ d }) => d.dispatchStream(undefined as never), want: bad('chunk') },
    { name: 'dispatchStream(ArrayBuffer)', call: ({ d }) => d.dispatchStream(new ArrayBuffer(112) as never), want: bad('chunk') },
    { name: 'dispatchStream(empty)', call: ({ d }) => d.dispatchStream(new Uint8Array(0)), want: stream({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false }) },
    { name: 'dispatchStream(detached)', call: (c) => c.d.dispatchStream(detached(concat([f1(c), f1(c)]))), want: stream({ consumed: 0, accepted: 0, rejected: 0, backpressure: false, malformed: false }) },
    { name: 'dispatchStream(out-of-bounds view)', call: (c) => c.d.dispatchStream(outOfBounds(f1(c))), want: stream({ consumed: 0, accepted: 0, malformed: false }) },
    {
      name: 'dispatchStream(odd-offset view: 3 frames and a partial one)',
      call: (c) => {
        const fs = [f1(c), f1(c), f1(c)].map((f) => c.track(1, f));
        return c.d.dispatchStream(oddOffset(concat([...fs, f1(c).subarray(0, 30)]), 777));
      },
      want: stream({ consumed: 3 * 64, accepted: 3, rejected: 0, backpressure: false, malformed: false }),
    },
    {
      name: 'dispatchStream(SharedArrayBuffer chunk of 2 frames, with sender)',
      call: (c) => c.d.dispatchStream(shared(concat([c.track(1, f1(c)), c.track(1, f1(c))]), 5), 7),
      want: stream({ consumed: 128, accepted: 2, rejected: 0 }),
    },
    { name: 'dispatchStream(chunk, NaN)', call: (c) => c.d.dispatchStream(f1(c), Number.NaN), want: range('sender') },
    {
      name: 'dispatchStream(1 GiB of zeros)',
      call: ({ d }) => {
        gib().fill(0, 0, 64);
        return d.dispatchStream(gib());
      },
      want: stream({ consumed: 0, accepted: 0, malformed: true }),
    },
    {
      name: 'dispatchStream(1 GiB of back-to-back frames): stops at Backpressure',
      call: async ({ d }) => {
        const f = frame({ room: 4, player: 7, seq: 1, payload: 200 });
        gib().fill(f); // repeats the frame over the whole GiB
        const r = d.dispatchStream(gib());
        await d.flush(); // let the flood through before the next rows
        return r;
      },
      want: {
        check: (v) => {
          const r = v as StreamResult;
          expect(r.backpressure).toBe(true);
          expect(r.malformed).toBe(false);
          expect(r.accepted).toBeGreaterThan(100);
          expect(r.consumed).toBe(r.accepted * 256);
        },
      },
    },
    // --- dispatchAsync -----------------------------------------------------------------
    { name: 'dispatchAsync(undefined)', call: ({ d }) => d.dispatchAsync(undefined as never), want: bad('frame') },
    { name: 'dispatchAsync(frame, 2**32)', call: (c) => c.d.dispatchAsync(f1(c), 2 ** 32), want: range('sender') },
    { name: 'dispatchAsync(detached)', call: (c) => c.d.dispatchAsync(detached(f1(c))), want: verdict(Verdict.Malformed) },
    {
      name: 'dispatchAsync(1 GiB)',
      call: ({ d }) => {
        gib().fill(0, 0, 64);
        return d.dispatchAsync(gib());
      },
      want: verdict(Verdict.Malformed),
    },
    { name: 'dispatchAsync(SharedArrayBuffer frame)', call: (c) => c.d.dispatchAsync(shared(c.track(1, f1(c)), 1)), want: verdict(Verdict.Accepted) },
    // --- openRoom ----------------------------------------------------------------------
    { name: 'openRoom(NaN)', call: ({ d }) => d.openRoom(Number.NaN), want: range('room') },
    { name: 'openRoom(2**32)', call: ({ d }) => d.openRoom(2 ** 32), want: range('room') },
    { name: 'openRoom(-1)', call: ({ d }) => d.openRoom(-1), want: range('room') },
    { name: "openRoom('5')", call: ({ d }) => d.openRoom('5' as never), want: bad('room') },
    { name: 'openRoom(5, null)', call: ({ d }) => d.openRoom(5, null as never), want: bad('options') },
    { name: "openRoom(5, { auth: 'HMAC' })", call: ({ d }) => d.openRoom(5, { auth: 'HMAC' as never }), want: bad('auth') },
    { name: 'openRoom(5, rateLimit.perSecond NaN)', call: ({ d }) => d.openRoom(5, { rateLimit: { perSecond: Number.NaN, burst: 1 } }), want: range('rateLimit.perSecond') },
    { name: 'openRoom(5, rateLimit.perSecond Infinity)', call: ({ d }) => d.openRoom(5, { rateLimit: { perSecond: Number.POSITIVE_INFINITY, burst: 1 } }), want: range('rateLimit.perSecond') },
    { name: 'openRoom(5, rateLimit.burst 2**53)', call: ({ d }) => d.openRoom(5, { rateLimit: { perSecond: 1, burst: 2 ** 53 } }), want: range('rateLimit.burst') },
    { name: 'openRoom(5, rateLimit null)', call: ({ d }) => d.openRoom(5, { rateLimit: null as never }), want: bad('rateLimit') },
    { name: 'openRoom(1) again', call: ({ d }) => d.openRoom(1), want: err(RangeError, ErrorCode.RoomExists, 'room') },
    { name: 'openRoom(5, options whose getter throws)', call: ({ d }) => d.openRoom(5, throwingOptions as never), want: { userError: 'a getter of the caller (expected by the test)' } },
    // --- join / leave / closeRoom / drain ------------------------------------------------
    { name: 'join(1, NaN)', call: ({ d }) => d.join(1, Number.NaN), want: range('player') },
    { name: 'join(1, 8, { key: a hex string })', call: ({ d }) => d.join(1, 8, { key: hex(KEY8) as never }), want: bad('key') },
    { name: 'join(2, 8, { key: 1 GiB })', call: ({ d }) => d.join(2, 8, { key: gib() }), want: range('key') },
    { name: 'join(2, 8, { key: detached })', call: ({ d }) => d.join(2, 8, { key: detached(KEY8) }), want: range('key') },
    { name: 'join(2, 8, { key: out-of-bounds view })', call: ({ d }) => d.join(2, 8, { key: outOfBounds(KEY8) }), want: range('key') },
    { name: 'join(2, 8, { key: SharedArrayBuffer view })', call: ({ d }) => d.join(2, 8, { key: shared(KEY8, 7) }), want: works },
    {
      name: 'a move of player 8 signed with the SharedArrayBuffer key',
      call: (c) => c.d.dispatch(c.track(2, frame({ room: 2, player: 8, seq: ++seq8, payload: 5, key: KEY8 }))),
      want: verdict(Verdict.Accepted),
    },
    {
      name: 'join(2, 9, { key: odd-offset view }), then the caller overwrites its key',
      call: ({ d }) => {
        const view = oddOffset(key9Source, 333);
        d.join(2, 9, { key: view });
        view.fill(0); // the dispatcher kept a copy
      },
      want: works,
    },
    {
      name: 'a move of player 9 signed with the key as it was at join',
      call: (c) => c.d.dispatch(c.track(2, frame({ room: 2, player: 9, seq: ++seq9, payload: 5, key: KEY9 }))),
      want: verdict(Verdict.Accepted),
    },
    { name: 'join(9999, 7)', call: ({ d }) => d.join(9999, 7), want: err(RangeError, ErrorCode.UnknownRoom, 'room') },
    { name: 'join(1, 7, null)', call: ({ d }) => d.join(1, 7, null as never), want: bad('options') },
    { name: 'join(1, 7, { key: Int8Array })', call: ({ d }) => d.join(1, 7, { key: new Int8Array(32) as never }), want: bad('key') },
    { name: 'leave(1, 2**53)', call: ({ d }) => d.leave(1, 2 ** 53), want: range('player') },
    { name: 'leave(1, 12345)', call: ({ d }) => d.leave(1, 12345), want: err(RangeError, ErrorCode.UnknownPlayer, 'player') },
    { name: 'closeRoom(1.5)', call: ({ d }) => d.closeRoom(1.5), want: range('room') },
    { name: 'closeRoom(424242)', call: ({ d }) => d.closeRoom(424242), want: err(RangeError, ErrorCode.UnknownRoom, 'room') },
    { name: 'drain(Infinity)', call: ({ d }) => d.drain(Number.POSITIVE_INFINITY), want: range('room') },
    { name: 'drain(undefined)', call: ({ d }) => d.drain(undefined as never), want: bad('room') },
    { name: 'drain(3), a push room', call: ({ d }) => d.drain(3), want: err(TypeError, ErrorCode.WrongDelivery, 'room') },
    // --- stats / metrics / flush / batches ---------------------------------------------
    { name: 'stats(null)', call: ({ d }) => d.stats(null as never), want: bad('options') },
    { name: "stats('x')", call: ({ d }) => d.stats('x' as never), want: bad('options') },
    { name: 'stats({ topRooms: -1 })', call: ({ d }) => d.stats({ topRooms: -1 }), want: range('topRooms') },
    { name: 'stats({ topRooms: NaN })', call: ({ d }) => d.stats({ topRooms: Number.NaN }), want: range('topRooms') },
    { name: 'stats({ topRooms: 2**53 })', call: ({ d }) => d.stats({ topRooms: 2 ** 53 }), want: range('topRooms') },
    { name: "metrics('garbage') ignores its argument", call: ({ d }) => (d.metrics as (x: unknown) => string)('garbage'), want: { check: (v) => expect(typeof v).toBe('string') } },
    { name: 'flush(123) ignores its argument', call: ({ d }) => (d.flush as (x: unknown) => Promise<void>)(123), want: works },
    { name: 'batches(null)', call: ({ d }) => d.batches(null as never).next(), want: bad('options') },
    { name: "batches({ signal: 'x' })", call: ({ d }) => d.batches({ signal: 'x' as never }).next(), want: bad('signal') },
    // --- encodeMove --------------------------------------------------------------------
    { name: 'encodeMove(null)', call: () => encodeMove(null as never), want: bad('input') },
    { name: 'encodeMove(room NaN)', call: () => encodeMove({ room: Number.NaN, player: 1, seq: 1 }), want: bad('room') },
    { name: 'encodeMove(seq 0)', call: () => encodeMove({ room: 1, player: 1, seq: 0 }), want: range('seq') },
    { name: 'encodeMove(seq 2**32)', call: () => encodeMove({ room: 1, player: 1, seq: 2 ** 32 }), want: range('seq') },
    { name: 'encodeMove(player 2**53)', call: () => encodeMove({ room: 1, player: 2 ** 53, seq: 1 }), want: range('player') },
    { name: 'encodeMove(tick Infinity)', call: () => encodeMove({ room: 1, player: 1, seq: 1, tick: Number.POSITIVE_INFINITY }), want: bad('tick') },
    { name: 'encodeMove(payload 1 GiB)', call: () => encodeMove({ room: 1, player: 1, seq: 1, payload: gib() }), want: range('payload') },
    { name: 'encodeMove(key 15 bytes)', call: () => encodeMove({ room: 1, player: 1, seq: 1, key: new Uint8Array(15) }), want: range('key') },
    {
      name: 'encodeMove(detached payload) encodes an empty payload, which is a valid move',
      call: (c) => c.d.dispatch(c.track(1, encodeMove({ room: 1, player: 7, seq: c.seq(), payload: detached(new Uint8Array(9)) }))),
      want: verdict(Verdict.Accepted),
    },
    {
      name: 'encodeMove(SharedArrayBuffer payload, odd offset)',
      call: (c) => c.d.dispatch(c.track(1, encodeMove({ room: 1, player: 7, seq: c.seq(), payload: shared(new Uint8Array([1, 2, 3, 4, 5]), 3) }))),
      want: verdict(Verdict.Accepted),
    },
    // --- constructor options -----------------------------------------------------------
    { name: 'new Dispatcher({ channelCapacity: 2**32 })', call: () => new Dispatcher({ engine, channelCapacity: 2 ** 32 }), want: option(RangeError, 'channelCapacity') },
    { name: 'new Dispatcher({ arenaBytes: 2**30 + 8 })', call: () => new Dispatcher({ engine, arenaBytes: 2 ** 30 + 8 }), want: option(RangeError, 'arenaBytes') },
    { name: 'new Dispatcher({ shards: NaN })', call: () => new Dispatcher({ engine, shards: Number.NaN }), want: option(TypeError, 'shards') },
    { name: 'new Dispatcher({ maxPayload: 2**16 })', call: () => new Dispatcher({ engine, maxPayload: 2 ** 16 }), want: option(RangeError, 'maxPayload') },
    { name: "new Dispatcher({ threadName: 'a\\0b' })", call: () => new Dispatcher({ engine, threadName: 'a\0b' }), want: option(TypeError, 'threadName') },
    { name: 'new Dispatcher({ threadName: 65 characters })', call: () => new Dispatcher({ engine, threadName: 'x'.repeat(65) }), want: option(TypeError, 'threadName') },
    { name: 'new Dispatcher({ overload: { queueDepth: -1 } })', call: () => new Dispatcher({ engine, overload: { queueDepth: -1 } }), want: option(RangeError, 'overload.queueDepth') },
    { name: 'new Dispatcher({ pinCores: [2**53] })', call: () => new Dispatcher({ engine, pinCores: [2 ** 53] }), want: option(RangeError, 'pinCores') },
    { name: 'new Dispatcher({ onBatch: a string })', call: () => new Dispatcher({ engine, onBatch: 'f' as never }), want: option(TypeError, 'onBatch') },
    {
      name: 'new Dispatcher(options whose getter throws)',
      call: () =>
        new Dispatcher({
          engine,
          get shards(): number {
            throw new Error('an options getter of the caller (expected by the test)');
          },
        } as DispatcherOptions),
      want: { userError: 'an options getter of the caller (expected by the test)' },
    },
  ];
}

/** Flushes, drains every pull room, and checks what came out against what was tracked. */
async function settle(d: Dispatcher, tracked: Map<number, Uint8Array[]>, pushed: Map<number, Uint8Array[]>, pullRooms: number[]): Promise<void> {
  await d.flush();
  const out = new Map<number, Uint8Array[]>(pushed);
  for (const room of pullRooms) {
    const b = d.drain(room);
    if (b.length > 0) out.set(room, [...(out.get(room) ?? []), b.bytes().slice()]);
  }
  for (const [room, frames] of tracked) {
    const delivered = hex(concat(out.get(room) ?? []));
    expect(delivered, `room ${room}: every tracked move, once, in order, byte-exact`).toBe(hex(concat(frames)));
  }
  const s = d.stats();
  expect(s.accepted, 'accepted = delivered + rejected').toBe(s.delivered + s.rejected);
}

describe.each(ENGINES)('hostile input [%s engine]', (engine: EngineName) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  it('table: bad calls on an open dispatcher, a valid move before each, nothing lost', { timeout: 30_000 }, async () => {
    const pushed = new Map<number, Uint8Array[]>();
    const d = make({
      onBatch(b) {
        if (b.length > 0) pushed.set(b.room!, [...(pushed.get(b.room!) ?? []), b.bytes().slice()]);
      },
    });
    d.openRoom(1);
    d.openRoom(2, { auth: 'hmac-sha256' });
    d.openRoom(3, { delivery: 'push' });
    d.openRoom(4);
    d.join(1, 7);
    d.join(2, 7, { key: KEY2 });
    d.join(3, 7);
    d.join(4, 7);
    let seq = 0;
    const tracked = new Map<number, Uint8Array[]>();
    const ctx: Ctx = {
      d,
      seq: () => ++seq,
      track(room, f) {
        tracked.set(room, [...(tracked.get(room) ?? []), f.slice()]);
        return f;
      },
    };
    const rows = openTable(engine);
    expect(rows.length).toBeGreaterThanOrEqual(40);
    let hmacSeq = 0;
    for (const row of rows) {
      // a valid move before each row, in the pull room, the HMAC room and the push room
      expect(d.dispatch(ctx.track(1, frame({ room: 1, player: 7, seq: ctx.seq(), payload: 12 }))), `valid move before "${row.name}"`).toBe(Verdict.Accepted);
      hmacSeq++;
      expect(d.dispatch(ctx.track(2, frame({ room: 2, player: 7, seq: hmacSeq, payload: 3, key: KEY2 })), 7)).toBe(Verdict.Accepted);
      expect(d.dispatch(ctx.track(3, frame({ room: 3, player: 7, seq: hmacSeq, payload: 3 })))).toBe(Verdict.Accepted);
      await check(row, ctx);
    }
    // what the flood put into room 4 is checked by the accounting only
    await settle(d, tracked, pushed, [1, 2, 4]);
    const s = d.stats();
    expect(s.reasons.BadTag).toBe(0); // every key row kept the right key
  });

  it('table: re-entrant calls from inside onBatch and onOverload', async () => {
    interface Inside {
      name: string;
      call: (d: Dispatcher, b: MoveBatch) => unknown;
      want: Want;
    }
    let seq = 100;
    const next = (room: number) => frame({ room, player: 7, seq: ++seq, payload: 6 });
    const tracked = new Map<number, Uint8Array[]>();
    const track = (room: number, f: Uint8Array) => {
      tracked.set(room, [...(tracked.get(room) ?? []), f.slice()]);
      return f;
    };
    let kept: MoveBatch | undefined;
    const rows: Inside[] = [
      { name: 'dispatch(valid) into the push room', call: (d) => d.dispatch(track(3, next(3))), want: verdict(Verdict.Accepted) },
      { name: 'dispatch(valid) into the pull room', call: (d) => d.dispatch(track(1, next(1))), want: verdict(Verdict.Accepted) },
      { name: 'dispatch(garbage)', call: (d) => d.dispatch(new Uint8Array(30)), want: verdict(Verdict.Malformed) },
      { name: 'dispatch(undefined)', call: (d) => d.dispatch(undefined as never), want: bad('frame') },
      { name: 'dispatchStream(2 frames)', call: (d) => d.dispatchStream(concat([track(3, next(3)), track(3, next(3))])), want: stream({ accepted: 2, consumed: 2 * 62 }) },
      { name: 'dispatchAsync(valid)', call: (d) => d.dispatchAsync(track(3, next(3))), want: verdict(Verdict.Accepted) },
      { name: 'drain(the push room)', call: (d) => d.drain(3), want: err(TypeError, ErrorCode.WrongDelivery, 'room') },
      { name: 'drain(a pull room)', call: (d) => d.drain(5).count, want: { check: (v) => expect(v).toBe(0) } },
      { name: 'openRoom + join', call: (d) => (d.openRoom(6), d.join(6, 7)), want: works },
      { name: 'leave + closeRoom of another room', call: (d) => (d.leave(6, 7), d.closeRoom(6)), want: works },
      { name: 'stats() and metrics()', call: (d) => [d.stats().accepted, d.metrics().length], want: works },
      { name: 'flush() (resolves later)', call: (d) => d.flush(), want: works },
      { name: 'batch.copy() (read after onBatch returns)', call: (_d, b) => (kept = b.copy()), want: works },
      { name: 'batch.release(), then read the batch', call: (_d, b) => (b.release(), [...b]), want: err(Error, ErrorCode.BatchReleased) },
      { name: 'batch.release() twice', call: (_d, b) => (b.release(), b.release()), want: works },
      { name: 'close(), then dispatch', call: (d) => (void d.close(), d.dispatch(next(3))), want: verdict(Verdict.Closed) },
    ];
    let pending: Inside[] = [];
    const results: Promise<void>[] = [];
    const overloadRows: { verdict: number; drained: number }[] = [];
    const pushed = new Map<number, Uint8Array[]>();
    const d: Dispatcher = make({
      shards: 1,
      roomBytes: 8192,
      overload: { roomBytes: 4000, queueDepth: 0 },
      onBatch(b) {
        if (b.length > 0) pushed.set(b.room!, [...(pushed.get(b.room!) ?? []), b.bytes().slice()]);
        const row = pending.shift();
        if (row === undefined) return;
        // run the row now, inside onBatch; check it (and await its promise) outside
        let sync: { ok: true; value: unknown } | { ok: false; error: unknown };
        try {
          sync = { ok: true, value: row.call(d, b) };
        } catch (error) {
          sync = { ok: false, error };
        }
        results.push(
          check(
            {
              name: `inside onBatch: ${row.name}`,
              call: () => {
                if (!sync.ok) throw sync.error;
                return sync.value;
              },
              want: row.want,
            },
            { d, seq: () => 0, track },
          ),
        );
      },
      onOverload(e) {
        if (e.subject !== 'room') return;
        // inside onOverload: dispatch into the room and drain it
        const v = d.dispatch(track(5, next(5)));
        overloadRows.push({ verdict: v, drained: 0 });
      },
    });
    d.openRoom(1);
    d.openRoom(3, { delivery: 'push' });
    d.openRoom(5);
    d.join(1, 7);
    d.join(3, 7);
    d.join(5, 7);
    for (const row of rows) {
      pending = [row];
      const f = track(3, next(3));
      expect(d.dispatch(f), `the move that carries "${row.name}"`).toBe(Verdict.Accepted);
      await until(() => pending.length === 0, 5_000, `onBatch for "${row.name}"`);
      if (row.name.startsWith('close()')) break;
      // fill pull room 5 past its overload mark once: onOverload dispatches into it
      if (row.name.startsWith('stats')) for (let i = 0; i < 70; i++) expect(d.dispatch(track(5, next(5)))).toBe(Verdict.Accepted);
    }
    await Promise.all(results);
    await d.close();
    expect(overloadRows.map((r) => r.verdict)).toEqual([Verdict.Accepted]);
    expect(kept !== undefined && kept.count > 0 && !kept.released).toBe(true);
    // after close: the pull rooms still drain, the accounting holds, nothing tracked is lost
    await settle(d, tracked, pushed, [1, 5]);
    expect(rows.length).toBe(16);
  });

  it('table: every public method after close()', async () => {
    const d = make({ onBatch: () => undefined });
    d.openRoom(1);
    d.openRoom(3, { delivery: 'push' });
    d.join(1, 7);
    d.join(3, 7);
    const tracked = new Map<number, Uint8Array[]>();
    const track = (room: number, f: Uint8Array) => {
      tracked.set(room, [...(tracked.get(room) ?? []), f.slice()]);
      return f;
    };
    for (let s = 1; s <= 20; s++) expect(d.dispatch(track(1, frame({ room: 1, player: 7, seq: s, payload: 4 })))).toBe(Verdict.Accepted);
    await d.close();
    const f = frame({ room: 1, player: 7, seq: 99 });
    const closed = err(Error, ErrorCode.Closed);
    const rows: Row[] = [
      { name: 'dispatch(valid)', call: () => d.dispatch(f), want: verdict(Verdict.Closed) },
      { name: 'dispatch(valid, sender)', call: () => d.dispatch(f, 7), want: verdict(Verdict.Closed) },
      { name: 'dispatch(garbage)', call: () => d.dispatch(new Uint8Array(3)), want: verdict(Verdict.Closed) },
      { name: 'dispatch(undefined): arguments are still checked', call: () => d.dispatch(undefined as never), want: bad('frame') },
      { name: 'dispatch(valid, NaN)', call: () => d.dispatch(f, Number.NaN), want: range('sender') },
      { name: 'dispatch(detached)', call: () => d.dispatch(detached(f)), want: verdict(Verdict.Closed) },
      { name: 'dispatchStream(a frame): consumed, refused', call: () => d.dispatchStream(f), want: stream({ consumed: 56, accepted: 0, rejected: 1, backpressure: false, malformed: false }) },
      { name: 'dispatchStream(not a header)', call: () => d.dispatchStream(new Uint8Array(30)), want: stream({ consumed: 0, malformed: true }) },
      { name: 'dispatchStream(empty)', call: () => d.dispatchStream(new Uint8Array(0)), want: stream({ consumed: 0, accepted: 0, rejected: 0, malformed: false }) },
      { name: 'dispatchAsync(valid)', call: () => d.dispatchAsync(f), want: verdict(Verdict.Closed) },
      { name: 'dispatchAsync(valid, 2**32)', call: () => d.dispatchAsync(f, 2 ** 32), want: range('sender') },
      { name: 'openRoom(2)', call: () => d.openRoom(2), want: closed },
      { name: 'openRoom(NaN): arguments first', call: () => d.openRoom(Number.NaN), want: range('room') },
      { name: 'join(1, 8)', call: () => d.join(1, 8), want: closed },
      { name: 'join(1, 8, { key: a string }): arguments first', call: () => d.join(1, 8, { key: 'k' as never }), want: bad('key') },
      { name: 'leave(1, 7)', call: () => d.leave(1, 7), want: closed },
      { name: 'closeRoom(1)', call: () => d.closeRoom(1), want: closed },
      { name: 'drain(1): pull rooms still drain', call: () => d.drain(1).count, want: { check: (v) => expect(v).toBe(0) } },
      { name: 'drain(3), a push room', call: () => d.drain(3), want: err(TypeError, ErrorCode.WrongDelivery, 'room') },
      { name: 'drain(77), never opened', call: () => d.drain(77), want: err(RangeError, ErrorCode.UnknownRoom, 'room') },
      { name: 'flush()', call: () => d.flush(), want: works },
      { name: 'whenWritable(): resolves at once', call: () => d.whenWritable(), want: works },
      { name: 'stats()', call: () => d.stats().verdicts.Closed, want: { check: (v) => expect(v).toBeGreaterThan(0) } },
      { name: 'metrics()', call: () => d.metrics(), want: { check: (v) => expect(v).toContain('move_dispatcher') } },
      { name: 'close() again', call: () => d.close(), want: works },
      { name: 'batches(): ends at once', call: async () => (await d.batches().next()).done, want: { check: (v) => expect(v).toBe(true) } },
      { name: 'pauseForTesting(d, true) (test hook)', call: () => pauseForTesting(d, true), want: works },
    ];
    const ctx: Ctx = { d, seq: () => 0, track };
    // the moves accepted before close() sit in pull room 1; drain them first (the row
    // "drain(1)" then finds nothing new)
    const before = d.drain(1).bytes().slice();
    for (const row of rows) await check(row, ctx);
    expect(hex(before)).toBe(hex(concat(tracked.get(1)!)));
    const s = d.stats();
    expect(s.accepted).toBe(20);
    expect(s.accepted).toBe(s.delivered + s.rejected);
  });

  it('a frame in a SharedArrayBuffer rewritten by another thread during dispatch: any verdict, but every accepted move comes out', { timeout: 30_000 }, async () => {
    // The worker flips the first magic byte (0x4d / 0) and the room field (1, open / 231,
    // never opened) as fast as it can while this thread dispatches the same view. Whatever
    // the engine read, a move it accepted must be delivered or rejected (here: BadTag or
    // Replay), never dropped, and its room bytes must come back.
    const d = make({ shards: 1, roomBytes: 64 << 20, channelCapacity: 1 << 20, arenaBytes: 64 << 20 });
    d.openRoom(1);
    d.join(1, 7);
    const f = frame({ room: 1, player: 7, seq: 1, payload: 8 });
    const sab = new SharedArrayBuffer(f.length);
    const view = new Uint8Array(sab);
    view.set(f);
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       const v = new Uint8Array(workerData);
       parentPort.postMessage('go');
       for (;;) { Atomics.store(v, 0, 0x4d); Atomics.store(v, 4, 1); Atomics.store(v, 0, 0); Atomics.store(v, 4, 231); }`,
      { eval: true, workerData: sab },
    );
    try {
      await new Promise((resolve) => worker.once('message', resolve));
      const verdicts = new Map<number, number>();
      let delivered = 0;
      // Up to 2.5 s of rounds; stop early once a round shows a lost move.
      const end = Date.now() + 2_500;
      while (Date.now() < end && delivered === (verdicts.get(Verdict.Accepted) ?? 0)) {
        for (let i = 0; i < 50_000; i++) {
          const v = d.dispatch(view);
          verdicts.set(v, (verdicts.get(v) ?? 0) + 1);
        }
        await d.flush();
        const b = d.drain(1);
        delivered += b.count + b.rejections.length;
      }
      await d.flush();
      const b = d.drain(1);
      delivered += b.count + b.rejections.length;
      const s = d.stats();
      const accepted = verdicts.get(Verdict.Accepted) ?? 0;
      expect(accepted, 'the race was exercised').toBeGreaterThan(0);
      expect((verdicts.get(Verdict.UnknownRoom) ?? 0) + (verdicts.get(Verdict.Malformed) ?? 0), 'the race was exercised').toBeGreaterThan(0);
      expect(s.accepted).toBe(accepted);
      expect(delivered, `accepted ${accepted}, came out ${delivered} (delivered ${s.delivered}, rejected ${s.rejected})`).toBe(accepted);
      expect(s.accepted, 'accepted = delivered + rejected').toBe(s.delivered + s.rejected);
      expect(d.stats().rooms, 'no room keeps bytes reserved after the last drain').toEqual([]);
    } finally {
      await worker.terminate();
    }
  });

  it('the dispatcher still works after every table: a fresh move round-trips', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    expect(d.dispatch(frame({ room: 1, player: 7, seq: 1 }))).toBe(Verdict.Accepted);
    await d.flush();
    expect(d.drain(1).count).toBe(1);
    await sleep(0);
  });
});
