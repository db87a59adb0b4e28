/**
 * Shared test helpers: frame builders that use node:crypto (an oracle independent of the
 * library's own encoder), a seeded PRNG, collectors that turn batches into plain objects,
 * and the engine list with the "skip native only outside CI" rule.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { Dispatcher, ErrorCode, Verdict } from '../index';
import type { Delivery, DispatcherOptions, MoveBatch, Rejection } from '../index';
import type * as Internal from '../src/internal';

export { Dispatcher, ErrorCode, Verdict };

/**
 * The test hooks of src/internal.ts (not part of the package's API), from the same build as
 * `Dispatcher`: at run time `../index` is `index.mjs`, i.e. `dist/`, and the hooks find a
 * dispatcher's engine in a registry private to their module instance.
 */
const internal = createRequire(__filename)('../dist/src/internal.js') as typeof Internal;
export const pauseForTesting: typeof Internal.pauseForTesting = internal.pauseForTesting;
export const failShardForTesting: typeof Internal.failShardForTesting = internal.failShardForTesting;

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

export interface NodeRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
  stdout: string;
  /** The tail of stdout + stderr, for assertion messages. */
  out: string;
}

/**
 * Runs `node [...flags] script ...args` and waits (at most `timeoutMs`).
 *
 * Node.js itself can deadlock at process shutdown (nodejs/node#54918: the main thread in
 * `NodePlatform::DrainTasks` waits for a background TurboFan job that waits for a GC only
 * the main thread can run). Seen here about once in 20 exits of a script that ran a lot of
 * freshly optimised JavaScript, with or without this library loaded. A run that hits the
 * timeout is retried once with `--no-concurrent-recompilation`, which removes the
 * background compile job from that cycle: a hang of our own would hang again and fail.
 */
export function runNode(flags: readonly string[], script: string, args: readonly string[] = [], env: NodeJS.ProcessEnv = {}, timeoutMs = 10_000): NodeRun {
  const once = (extra: readonly string[]): NodeRun => {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [...extra, ...flags, script, ...args], {
      encoding: 'utf8',
      timeout: timeoutMs,
      env: { ...process.env, ...env },
      maxBuffer: 64 << 20,
    });
    return { status: r.status, signal: r.signal, ms: Date.now() - t0, stdout: r.stdout, out: `${r.stdout}\n${r.stderr}`.slice(-4000) };
  };
  const first = once([]);
  if (first.signal !== 'SIGTERM' || first.ms < timeoutMs) return first;
  console.warn(`${script} ${args.join(' ')}: no exit within ${timeoutMs} ms; retrying once without concurrent recompilation (nodejs/node#54918)`);
  return once(['--no-concurrent-recompilation']);
}

// ---------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------

export const ENGINES = ['js', 'native'] as const;
export type EngineName = (typeof ENGINES)[number];

/** True when running in CI: a missing native engine must fail there, never skip. */
export const IN_CI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== '0' && process.env.CI !== 'false';

function probeNative(): string | null {
  try {
    const d = new Dispatcher({ engine: 'native', shards: 1, workerThreads: 1 });
    d.close().catch(() => undefined);
    return null;
  } catch (error) {
    const e = error as { code?: string; message?: string };
    return `${e.code ?? 'error'}: ${e.message ?? String(error)}`;
  }
}

/** Why the native engine cannot load here (null when it loads). */
export const NATIVE_LOAD_ERROR: string | null = probeNative();

/**
 * Why the suite for `engine` must be skipped, or null to run it. The native engine is skipped
 * only when it fails to load AND we are not in CI: in CI its tests run (and fail).
 */
export function skipReason(engine: EngineName): string | null {
  if (engine === 'js' || NATIVE_LOAD_ERROR === null || IN_CI) return null;
  return `SKIPPED: native engine unavailable (${NATIVE_LOAD_ERROR}) — run 'npm run build:native'; set CI=1 to make this a failure`;
}

/** Small settings that exercise the "small deployments" promise, unless overridden. */
export const SMALL: DispatcherOptions = {
  shards: 2,
  workerThreads: 1,
  channelCapacity: 4096,
  arenaBytes: 1 << 20,
  roomBytes: 1 << 20,
  maxPayload: 1024,
};

/**
 * Returns a factory of dispatchers for `engine` that are closed after each test
 * (resumed first, in case a test paused validation and failed before resuming).
 * Call it inside a describe block.
 */
export function useDispatchers(engine: EngineName): (options?: DispatcherOptions) => Dispatcher {
  const live: Dispatcher[] = [];
  afterEach(async () => {
    for (const d of live.splice(0)) {
      try {
        pauseForTesting(d, false);
      } catch {
        // closed already
      }
      const closed = await Promise.race([d.close().then(
        () => true,
        () => true,
      ), sleep(10_000).then(() => false)]);
      if (!closed) throw new Error(`close() of a ${engine} dispatcher did not resolve within 10 s (a push batch nobody consumes?)`);
    }
  });
  return (options: DispatcherOptions = {}) => {
    const d = new Dispatcher({ ...SMALL, ...options, engine });
    live.push(d);
    return d;
  };
}

// ---------------------------------------------------------------------------------------
// Seeded PRNG (mulberry32)
// ---------------------------------------------------------------------------------------

export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Uniform in [0, 2^32). */
  u32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from empty list');
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

// ---------------------------------------------------------------------------------------
// Frames (built with node:crypto, independent of the library's encoder)
// ---------------------------------------------------------------------------------------

export const HEADER = 24;
export const TAG = 32;
export const OVERHEAD = HEADER + TAG;

export interface MoveSpec {
  room: number;
  player: number;
  seq: number;
  tick?: number;
  kind?: number;
  /** Payload bytes, or a length (filled with a pattern derived from seq). */
  payload?: Uint8Array | number;
  /** HMAC key: sets flags bit 0 and tags with HMAC-SHA256. Absent: SHA-256. */
  key?: Uint8Array;
}

function payloadOf(spec: MoveSpec): Uint8Array {
  const p = spec.payload;
  if (p === undefined) return new Uint8Array(0);
  if (typeof p === 'number') {
    const out = new Uint8Array(p);
    for (let i = 0; i < p; i++) out[i] = (spec.seq * 31 + i * 7 + spec.player) & 0xff;
    return out;
  }
  return p;
}

/** A valid v1 frame (SHA-256, or HMAC-SHA256 when `key` is given). */
export function frame(spec: MoveSpec): Uint8Array {
  const payload = payloadOf(spec);
  const buf = new Uint8Array(OVERHEAD + payload.length);
  const dv = new DataView(buf.buffer);
  buf[0] = 0x4d;
  buf[1] = 0x56;
  buf[2] = 1;
  buf[3] = spec.key ? 1 : 0;
  dv.setUint32(4, spec.room >>> 0, true);
  dv.setUint32(8, spec.player >>> 0, true);
  dv.setUint32(12, spec.seq >>> 0, true);
  dv.setUint32(16, (spec.tick ?? 0) >>> 0, true);
  dv.setUint16(20, (spec.kind ?? 0) & 0xffff, true);
  dv.setUint16(22, payload.length, true);
  buf.set(payload, HEADER);
  buf.set(tagOf(buf.subarray(0, HEADER + payload.length), spec.key), HEADER + payload.length);
  return buf;
}

/** SHA-256 (no key) or HMAC-SHA256 (key) of `body`, computed by node:crypto. */
export function tagOf(body: Uint8Array, key?: Uint8Array): Uint8Array {
  const h = key ? createHmac('sha256', key) : createHash('sha256');
  return new Uint8Array(h.update(body).digest());
}

/** The tag node:crypto expects for `f` (whose length field is trusted). */
export function expectedTag(f: Uint8Array, key?: Uint8Array): Uint8Array {
  const len = f[22]! | (f[23]! << 8);
  return tagOf(f.subarray(0, HEADER + len), key);
}

/** Whether node:crypto agrees with the frame's tag. */
export function tagValid(f: Uint8Array, key?: Uint8Array): boolean {
  const len = f[22]! | (f[23]! << 8);
  if (f.length !== OVERHEAD + len) return false;
  return Buffer.from(expectedTag(f, key)).equals(Buffer.from(f.subarray(HEADER + len)));
}

/** A copy of `f` with byte `index` XOR-ed with `mask` (default: one flipped bit). No re-tagging. */
export function corrupt(f: Uint8Array, index: number, mask = 0x01): Uint8Array {
  const out = f.slice();
  out[index] = out[index]! ^ mask;
  return out;
}

/** A copy of `f` with header fields changed, and NOT re-tagged. */
export function patch(f: Uint8Array, fields: Partial<{ magic0: number; magic1: number; version: number; flags: number; room: number; player: number; seq: number; tick: number; kind: number; len: number }>): Uint8Array {
  const out = f.slice();
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  if (fields.magic0 !== undefined) out[0] = fields.magic0;
  if (fields.magic1 !== undefined) out[1] = fields.magic1;
  if (fields.version !== undefined) out[2] = fields.version;
  if (fields.flags !== undefined) out[3] = fields.flags;
  if (fields.room !== undefined) dv.setUint32(4, fields.room, true);
  if (fields.player !== undefined) dv.setUint32(8, fields.player, true);
  if (fields.seq !== undefined) dv.setUint32(12, fields.seq, true);
  if (fields.tick !== undefined) dv.setUint32(16, fields.tick, true);
  if (fields.kind !== undefined) dv.setUint16(20, fields.kind, true);
  if (fields.len !== undefined) dv.setUint16(22, fields.len, true);
  return out;
}

/** A copy of `f` with a correct tag recomputed: SHA-256 (flag 0) or HMAC with `key` (flag 1). */
export function retag(f: Uint8Array, key?: Uint8Array): Uint8Array {
  const out = f.slice();
  out[3] = key ? 1 : 0;
  const len = out[22]! | (out[23]! << 8);
  out.set(tagOf(out.subarray(0, HEADER + len), key), HEADER + len);
  return out;
}

/** Flag downgrade: an HMAC-room move re-encoded as a (correct) SHA-256 frame. */
export function downgrade(f: Uint8Array): Uint8Array {
  return retag(f);
}

/** Flag upgrade: a SHA-256 move re-encoded as a (correct) HMAC frame under `key`. */
export function upgrade(f: Uint8Array, key: Uint8Array): Uint8Array {
  return retag(f, key);
}

/** A copy of `f` naming another room, re-tagged with `key` (or SHA-256) so only the room differs. */
export function reroute(f: Uint8Array, room: number, key?: Uint8Array): Uint8Array {
  return retag(patch(f, { room }), key);
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A deterministic key (16..64 bytes) for a player, with a variant to make "another key". */
export function keyFor(player: number, variant = 0, length = 32): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (player * 131 + variant * 17 + i * 29 + 1) & 0xff;
  return out;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export interface ParsedFrame {
  room: number;
  player: number;
  seq: number;
  tick: number;
  kind: number;
  payload: string;
  frameLength: number;
}

/** Reads a frame's fields (payload as hex). */
export function parse(f: Uint8Array): ParsedFrame {
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  const len = dv.getUint16(22, true);
  return {
    room: dv.getUint32(4, true),
    player: dv.getUint32(8, true),
    seq: dv.getUint32(12, true),
    tick: dv.getUint32(16, true),
    kind: dv.getUint16(20, true),
    payload: hex(f.subarray(HEADER, HEADER + len)),
    frameLength: OVERHEAD + len,
  };
}

// ---------------------------------------------------------------------------------------
// Collecting deliveries
// ---------------------------------------------------------------------------------------

/** The moves of a batch as plain objects (reads through the reused iteration view). */
export function movesOf(batch: MoveBatch): ParsedFrame[] {
  const out: ParsedFrame[] = [];
  for (const m of batch) {
    out.push({ room: m.room, player: m.player, seq: m.seq, tick: m.tick, kind: m.kind, payload: hex(m.payload), frameLength: m.frameLength });
  }
  return out;
}

/** A copy of the batch's frame bytes (`offset .. offset + length` of `buffer`). */
export function bytesOf(batch: MoveBatch): Uint8Array {
  return new Uint8Array(batch.buffer, batch.offset, batch.length).slice();
}

export function plainRejections(batch: MoveBatch): Rejection[] {
  return batch.rejections.map((r) => ({ room: r.room, player: r.player, seq: r.seq, reason: r.reason }));
}

/** What one room delivered, accumulated over batches. */
export interface Collected {
  moves: ParsedFrame[];
  rejections: Rejection[];
  bytes: Uint8Array[];
  batches: number;
}

export function emptyCollected(): Collected {
  return { moves: [], rejections: [], bytes: [], batches: 0 };
}

/** Appends a batch (while it is still valid) to `into`. */
export function absorb(into: Collected, batch: MoveBatch): void {
  into.moves.push(...movesOf(batch));
  into.rejections.push(...plainRejections(batch));
  if (batch.length > 0) into.bytes.push(bytesOf(batch));
  into.batches++;
}

/** `await flush()` then drain each pull room once; returns what each delivered. */
export async function flushAndDrain(d: Dispatcher, rooms: Iterable<number>): Promise<Map<number, Collected>> {
  await d.flush();
  const out = new Map<number, Collected>();
  for (const room of rooms) {
    const c = emptyCollected();
    absorb(c, d.drain(room));
    out.set(room, c);
  }
  return out;
}

/** `await flush()` then drain `room` once. */
export async function flushDrain(d: Dispatcher, room: number): Promise<Collected> {
  return (await flushAndDrain(d, [room])).get(room)!;
}

/** A push-delivery sink for `onBatch`: per room, what was delivered (copied while valid). */
export function pushSink(): { onBatch: (b: MoveBatch) => void; rooms: Map<number, Collected>; total: () => number } {
  const rooms = new Map<number, Collected>();
  return {
    rooms,
    onBatch(b: MoveBatch) {
      const room = b.room;
      let c = rooms.get(room);
      if (c === undefined) rooms.set(room, (c = emptyCollected()));
      absorb(c, b);
    },
    total() {
      let n = 0;
      for (const c of rooms.values()) n += c.moves.length + c.rejections.length;
      return n;
    },
  };
}

/** Appends every room of `delivery` (while it is valid) to `rooms`. */
export function absorbDelivery(rooms: Map<number, Collected>, delivery: Delivery): void {
  for (const b of delivery) {
    let c = rooms.get(b.room);
    if (c === undefined) rooms.set(b.room, (c = emptyCollected()));
    absorb(c, b);
  }
}

/** A push-delivery sink for `onDelivery`: per room, what was delivered (copied while valid), and each call's shape. */
export function deliverySink(): {
  onDelivery: (d: Delivery) => void;
  rooms: Map<number, Collected>;
  /** Per call: rooms and moves of the delivery, and its rooms in order. */
  calls: { rooms: number; count: number; roomIds: number[] }[];
  total: () => number;
} {
  const rooms = new Map<number, Collected>();
  const calls: { rooms: number; count: number; roomIds: number[] }[] = [];
  return {
    rooms,
    calls,
    onDelivery(d: Delivery) {
      const roomIds: number[] = [];
      for (const b of d) roomIds.push(b.room);
      calls.push({ rooms: d.rooms, count: d.count, roomIds });
      absorbDelivery(rooms, d);
    },
    total() {
      let n = 0;
      for (const c of rooms.values()) n += c.moves.length + c.rejections.length;
      return n;
    },
  };
}

// ---------------------------------------------------------------------------------------
// Errors and misc
// ---------------------------------------------------------------------------------------

export interface CodedError {
  name: string;
  code?: string;
  field?: string;
  message: string;
}

/** Runs `fn`, expects it to throw, and returns the error. */
export function thrown(fn: () => unknown): CodedError & Error {
  try {
    fn();
  } catch (error) {
    return error as CodedError & Error;
  }
  throw new Error('expected a throw, but the call returned normally');
}

/** Expects `fn` to throw a TypeError or RangeError with `code` naming `field`. */
export function expectArgError(fn: () => unknown, code: string, field?: string | RegExp): CodedError & Error {
  const e = thrown(fn);
  expect(e instanceof TypeError || e instanceof RangeError, `expected TypeError or RangeError, got ${e?.name}: ${e?.message}`).toBe(true);
  expect(e.code).toBe(code);
  if (field !== undefined) {
    if (typeof field === 'string') expect(e.field).toBe(field);
    else expect(e.field).toMatch(field);
  }
  return e;
}

/** Expects `fn` to throw an error with `code`. */
export function expectCode(fn: () => unknown, code: string): CodedError & Error {
  const e = thrown(fn);
  expect(e.code, `${e?.name}: ${e?.message}`).toBe(code);
  return e;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until true or `timeoutMs` passes. */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export function verdictName(v: number): string {
  return Object.entries(Verdict).find(([, value]) => value === v)?.[0] ?? `?${v}`;
}

/** One entry of the wire vectors (crates/dispatcher/tests/wire-v1.json): fields as `parse` gives them, hex strings. */
export type WireVector = Omit<ParsedFrame, 'frameLength'> & { note: string; key?: string; frame: string };

/** The wire vectors (crates/dispatcher/tests/wire-v1.json), also read by the Rust tests. */
export function loadWireVectors(): WireVector[] {
  const path = join(__dirname, '..', 'crates', 'dispatcher', 'tests', 'wire-v1.json');
  const vectors = (JSON.parse(readFileSync(path, 'utf8')) as { vectors: WireVector[] }).vectors;
  if (vectors.length === 0) throw new Error(`no vectors in ${path}`);
  return vectors;
}

// ---------------------------------------------------------------------------------------
// Native ingress
// ---------------------------------------------------------------------------------------

/** Drains pull room `room` until it gave `want` moves (5 s at most): each as `{ player, seq }`, in order. */
export async function drainAllOf(d: Dispatcher, room: number, want: number): Promise<{ player: number; seq: number }[]> {
  const got: { player: number; seq: number }[] = [];
  await until(
    () => {
      for (const m of d.drain(room)) got.push({ player: m.player, seq: m.seq });
      return got.length >= want;
    },
    5000,
    `${want} moves in room ${room}`,
  );
  return got;
}
