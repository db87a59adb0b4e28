// LeakSanitizer pass over the native engine in a plain Node process
// (`scripts/sanitize.sh asan`, docs/sanitizers.md). vitest's forks are killed at the end of
// a run, so LeakSanitizer never gets to check them; this script exits normally instead.
//
// It cycles dispatchers through everything that allocates on the Rust side: pull and push
// rooms (SHA-256 and HMAC), rejections, closeRoom with moves pending, a push batch still
// held at close(), pull batches kept after close(), a dispatcher never closed. Every
// per-dispatcher or per-room leak then shows up CYCLES times in the report.
'use strict';
const { join } = require('node:path');
const { Dispatcher, encodeMove } = require(join(__dirname, '..', '..', 'dist', 'index.js'));

const CYCLES = Number(process.env.LEAK_CHECK_CYCLES ?? 20);
const key = Buffer.alloc(32, 7);

async function cycle(i, kept) {
  let held = 0;
  const d = new Dispatcher({
    engine: 'native',
    shards: 2,
    onBatch(b) {
      held += b.count;
    },
  });
  d.openRoom(1, { delivery: 'pull' });
  d.openRoom(2, { delivery: 'push' });
  d.openRoom(3, { auth: 'hmac-sha256', delivery: 'pull' });
  d.openRoom(4, { delivery: 'pull' });
  for (const r of [1, 2, 4]) d.join(r, 7);
  d.join(3, 7, { key });
  for (let s = 1; s <= 200; s++) {
    d.dispatch(encodeMove({ room: 1, player: 7, seq: s, payload: new Uint8Array(s % 50) }), 7);
    d.dispatch(encodeMove({ room: 2, player: 7, seq: s }), 7);
    d.dispatch(encodeMove({ room: 3, player: 7, seq: s, key: s % 10 === 0 ? Buffer.alloc(32, 1) : key }), 7);
    d.dispatch(encodeMove({ room: 4, player: 7, seq: s }), 7);
  }
  d.dispatch(encodeMove({ room: 1, player: 7, seq: 5 }), 7); // replay → rejection
  await d.flush();
  const b = d.drain(1);
  if (b.count !== 200 || b.rejections.length !== 1) throw new Error(`cycle ${i}: room 1 ${b.count}/${b.rejections.length}`);
  if (d.drain(3).rejections.length !== 20) throw new Error(`cycle ${i}: room 3 rejections`);
  d.closeRoom(4); // 200 moves pending: delivered, then forgotten after the drain below
  if (d.drain(4).count !== 200) throw new Error(`cycle ${i}: room 4`);
  d.leave(3, 7);
  if (i % 2 === 0) kept.push(d.drain(1)); // an (empty) pull batch outliving close()
  if (i === CYCLES - 1) return d; // never closed: the environment's cleanup stops it
  await d.close();
  if (held !== 200) throw new Error(`cycle ${i}: push room delivered ${held}`);
  return null;
}

(async () => {
  const kept = [];
  for (let i = 0; i < CYCLES; i++) await cycle(i, kept);
  if (typeof globalThis.gc === 'function') globalThis.gc();
  console.log(`leak-check: ${CYCLES} dispatcher cycles done (${kept.length} batches kept)`);
})().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
