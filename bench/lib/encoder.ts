/**
 * Worker thread of `ensureStore` (frames.ts): encodes frames `[from, to)` of the store and
 * writes them at their place in the file, in chunks.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
import { encodeRange, frameLength, permutation, playerKeys, type StoreSpec } from './frames';

const CHUNK = 16_384;

const { path, spec, from, to } = workerData as { path: string; spec: StoreSpec; from: number; to: number };
const fl = frameLength(spec);
const perm = permutation(spec.players);
const keys = spec.auth === 'hmac-sha256' ? playerKeys(spec.players) : null;
const buf = Buffer.alloc(CHUNK * fl);
const fd = openSync(path, 'r+');
try {
  for (let at = from; at < to; at += CHUNK) {
    const end = Math.min(to, at + CHUNK);
    encodeRange(spec, perm, keys, at, end, buf);
    const bytes = (end - at) * fl;
    let done = 0;
    while (done < bytes) done += writeSync(fd, buf, done, bytes - done, at * fl + done);
  }
} finally {
  closeSync(fd);
}
