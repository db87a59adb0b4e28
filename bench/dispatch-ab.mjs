// A/B of builds of the addon on the JavaScript thread's dispatch cost: each build runs in a
// fresh process, the builds take turns, and each figure is the median of the runs' medians.
//
//   npm run build   # dist/ (the TypeScript API and the bench's frame order these runs load)
//   node bench/dispatch-ab.mjs frame 6 ./old.node ./new.node
//
// Modes: `frame` — dispatch(frame), ns per call; `one` — dispatchStream(frame) with one
// frame per call; `stream` — dispatchStream of 1,000 back-to-back frames, ns per move.
// ROOMS=n (default 5,000; 10 players each). Players send in the fixed random order of
// `npm run bench`'s frame store (a regular order lets the hardware prefetcher hide the
// misses). Each run
// also times an empty N-API call taking a Buffer (the bench addon's `emptyCall`) when the
// build has it. Figures are for comparing builds measured together, never absolute.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = fileURLToPath(import.meta.url);
const PER = 100_000;
const WARM = 3;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function child(mode, trials) {
  const { Dispatcher, encodeMove } = require('../dist/index.js');
  // The order the bench's frame store sends in (bench/lib/frames.ts).
  const { permutation } = require('../dist/bench/lib/frames.js');
  const rooms = Number(process.env.ROOMS ?? 5000);
  const players = rooms * 10;
  const perm = permutation(players);
  const n = PER * (trials + WARM);
  const seqs = new Uint32Array(players);
  const frames = [];
  for (let i = 0; i < n; i++) {
    const p = perm[i % players];
    frames.push(encodeMove({ room: Math.floor(p / 10), player: p, seq: ++seqs[p], payload: new Uint8Array(64) }));
  }
  const big = Buffer.concat(frames);
  const fl = frames[0].length;
  const now = () => Number(process.hrtime.bigint());
  const d = new Dispatcher({ arenaBytes: 1 << 25, channelCapacity: 1 << 18 });
  for (let r = 0; r < rooms; r++) d.openRoom(r, { auth: 'sha256', delivery: 'pull' });
  for (let p = 0; p < players; p++) d.join(Math.floor(p / 10), p);
  await d.flush();
  const xs = [];
  let refused = 0;
  for (let t = 0; t < WARM + trials; t++) {
    const from = t * PER;
    const t0 = now();
    if (mode === 'frame') {
      for (let i = from; i < from + PER; i++) if (d.dispatch(frames[i]) !== 0) refused++;
    } else if (mode === 'one') {
      for (let i = from; i < from + PER; i++) if (d.dispatchStream(frames[i]).accepted !== 1) refused++;
    } else {
      for (let i = from; i < from + PER; i += 1000) refused += 1000 - d.dispatchStream(big.subarray(i * fl, (i + 1000) * fl)).accepted;
    }
    if (t >= WARM) xs.push((now() - t0) / PER);
    await d.flush();
    d.drainAll();
  }
  await d.close();
  let empty = null;
  const addon = process.env.MOVE_DISPATCHER_NATIVE_PATH;
  const bench = addon === undefined ? undefined : require(addon);
  if (typeof bench?.emptyCall === 'function') {
    const t0 = now();
    let s = 0;
    for (let i = 0; i < 5e6; i++) s += bench.emptyCall(frames[0]);
    empty = (now() - t0) / 5e6 + (s === -1 ? 1 : 0);
  }
  process.stdout.write(JSON.stringify({ median: median(xs), refused, empty }));
}

async function main() {
  const [mode, roundsArg, ...addons] = process.argv.slice(2);
  if (process.env.DISPATCH_AB_CHILD === '1') return child(mode, Number(roundsArg));
  if (!['frame', 'one', 'stream'].includes(mode) || addons.length === 0) {
    throw new TypeError('usage: node bench/dispatch-ab.mjs frame|one|stream ROUNDS ADDON.node [ADDON.node …]');
  }
  const rounds = Number(roundsArg);
  const runs = new Map(addons.map((a) => [a, []]));
  for (let r = 0; r < rounds; r++) {
    for (const a of addons) {
      const out = execFileSync(process.execPath, [here, mode, '5'], {
        env: { ...process.env, DISPATCH_AB_CHILD: '1', MOVE_DISPATCHER_NATIVE_PATH: resolve(a) },
        encoding: 'utf8',
      });
      const res = JSON.parse(out);
      if (res.refused !== 0) throw new Error(`${a}: ${res.refused} moves refused (the trial must be all accepted)`);
      runs.get(a).push(res);
      console.log(`round ${r + 1} ${a}: ${res.median.toFixed(1)} ns${res.empty === null ? '' : ` (empty call ${res.empty.toFixed(1)} ns)`}`);
    }
  }
  for (const [a, xs] of runs) {
    const m = median(xs.map((x) => x.median));
    const e = xs.every((x) => x.empty !== null) ? median(xs.map((x) => x.empty)) : null;
    console.log(`${mode} ${a}: median ${m.toFixed(1)} ns over ${xs.length} runs [${xs.map((x) => x.median.toFixed(0)).join(', ')}]${e === null ? '' : `; empty call ${e.toFixed(1)} ns: ${(m / e).toFixed(2)}×`}`);
  }
}

await main();
