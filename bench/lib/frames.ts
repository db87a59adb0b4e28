/**
 * The frame store: every frame a load run sends, encoded before any run starts, so no run
 * pays for encoding (or for SHA-256 / HMAC of its own clients) inside its measured window.
 *
 * Frame `i` of the store is sent by player `perm[i % players]` with seq
 * `floor(i / players) + 1`: in every period each player sends once, always at the same
 * phase of the period (a fixed pseudo-random order), as independent connections would.
 * The stream does not depend on the rate: a run at `rate` moves/s sends frame `i` in the
 * read due at `floor(i / perRead) + 1` reads after its start, so every rate reads a prefix
 * of the same file. Room of player `p`: `floor(p / roomSize)`.
 *
 * One frame in `CORRUPT_EVERY` carries a wrong tag, so the runs also exercise the
 * rejection path (and `lost` counts something real).
 *
 * The store lives in a file under the OS temp directory, written by worker threads (one per
 * core) and read back by each run into one Buffer; `bench/run.ts` deletes it at the end.
 */
import { createHash, createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

export const CORRUPT_EVERY = 100_000;
export const FRAME_OVERHEAD = 56;

export type Auth = 'sha256' | 'hmac-sha256';

export interface StoreSpec {
  players: number;
  roomSize: number;
  payload: number;
  auth: Auth;
}

export function frameLength(spec: StoreSpec): number {
  return FRAME_OVERHEAD + spec.payload;
}

export function roomOf(spec: StoreSpec, player: number): number {
  return Math.floor(player / spec.roomSize);
}

export function roomCount(spec: StoreSpec): number {
  return Math.ceil(spec.players / spec.roomSize);
}

/** The order in which players send within a period (Fisher–Yates, fixed seed). */
export function permutation(players: number): Int32Array {
  const perm = new Int32Array(players);
  for (let i = 0; i < players; i++) perm[i] = i;
  let x = (0x9e3779b9 ^ players) >>> 0 || 1;
  for (let i = players - 1; i > 0; i--) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const j = x % (i + 1);
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}

/** `inverse[player]` = the player's position within a period. */
export function inversePermutation(perm: Int32Array): Int32Array {
  const inv = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) inv[perm[i]!] = i;
  return inv;
}

/** Player `p`'s 32-byte HMAC key (derived, so every process agrees on it). */
export function playerKey(p: number): Buffer {
  return createHash('sha256').update(`move-dispatcher-bench-key-${p}`).digest();
}

/** Encodes frames `[from, to)` into `out` (which holds `(to - from) * frameLength` bytes). */
export function encodeRange(spec: StoreSpec, perm: Int32Array, keys: KeyObject[] | null, from: number, to: number, out: Buffer): void {
  const fl = frameLength(spec);
  const body = 24 + spec.payload;
  const hmac = spec.auth === 'hmac-sha256';
  for (let i = from; i < to; i++) {
    const at = (i - from) * fl;
    const player = perm[i % spec.players]!;
    const seq = Math.floor(i / spec.players) + 1;
    out[at] = 0x4d;
    out[at + 1] = 0x56;
    out[at + 2] = 1;
    out[at + 3] = hmac ? 1 : 0;
    out.writeUInt32LE(roomOf(spec, player), at + 4);
    out.writeUInt32LE(player, at + 8);
    out.writeUInt32LE(seq, at + 12);
    out.writeUInt32LE(seq, at + 16); // tick: the client's period
    out.writeUInt16LE(1, at + 20);
    out.writeUInt16LE(spec.payload, at + 22);
    for (let j = 0; j < spec.payload; j++) out[at + 24 + j] = (i * 31 + j * 7) & 0xff;
    const signed = out.subarray(at, at + body);
    const tag = hmac ? createHmac('sha256', keys![player]!).update(signed).digest() : createHash('sha256').update(signed).digest();
    tag.copy(out, at + body);
    if (i % CORRUPT_EVERY === CORRUPT_EVERY - 1) out[at + body] = out[at + body]! ^ 0xff;
  }
}

export function playerKeys(players: number): KeyObject[] {
  const keys: KeyObject[] = [];
  for (let p = 0; p < players; p++) keys.push(createSecretKey(playerKey(p)));
  return keys;
}

export interface Store {
  path: string;
  spec: StoreSpec;
  frames: number;
}

function specId(spec: StoreSpec): string {
  return `p${spec.players}-r${spec.roomSize}-b${spec.payload}-${spec.auth}-v1`;
}

/**
 * Makes sure the store for `spec` holds at least `frames` frames (encoding what is
 * missing in worker threads); returns it.
 */
export async function ensureStore(spec: StoreSpec, frames: number, dir = join(tmpdir(), 'move-dispatcher-bench')): Promise<Store> {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${specId(spec)}.frames`);
  const meta = `${path}.json`;
  const fl = frameLength(spec);
  let have = 0;
  if (existsSync(path) && existsSync(meta)) {
    try {
      const m = JSON.parse(readFileSync(meta, 'utf8')) as { spec: StoreSpec; frames: number };
      if (specId(m.spec) === specId(spec) && statSync(path).size >= m.frames * fl) have = m.frames;
    } catch {
      have = 0;
    }
  }
  if (have >= frames) return { path, spec, frames: have };
  if (have === 0) closeSync(openSync(path, 'w'));
  const workers = Math.max(1, availableParallelism());
  const per = Math.ceil((frames - have) / workers);
  const jobs: Promise<void>[] = [];
  for (let w = 0; w < workers; w++) {
    const from = have + w * per;
    const to = Math.min(frames, from + per);
    if (from >= to) continue;
    jobs.push(
      new Promise<void>((resolve, reject) => {
        const worker = new Worker(join(__dirname, 'encoder.js'), { workerData: { path, spec, from, to } });
        worker.once('error', reject);
        worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`encoder exited with ${code}`))));
      }),
    );
  }
  await Promise.all(jobs);
  writeFileSync(meta, JSON.stringify({ spec, frames }));
  return { path, spec, frames };
}

/** Reads the first `frames` frames of the store into one Buffer (resident: every page is written). */
export function loadStore(store: Store, frames: number): Buffer {
  if (frames > store.frames) throw new RangeError(`the store holds ${store.frames} frames, ${frames} asked`);
  const bytes = frames * frameLength(store.spec);
  const buf = Buffer.allocUnsafeSlow(bytes);
  const fd = openSync(store.path, 'r');
  try {
    let at = 0;
    while (at < bytes) {
      const n = readSync(fd, buf, at, Math.min(1 << 30, bytes - at), at);
      if (n <= 0) throw new Error(`short read of ${store.path} at ${at}`);
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}
