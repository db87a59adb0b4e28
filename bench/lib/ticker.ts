/**
 * The load's clock (a worker thread): sleeps in `Atomics.wait` until each read is due and
 * then posts its number to the main thread, whose handler dispatches every frame due by
 * then. A libuv timer on the main thread has millisecond granularity and fires late by up
 * to a millisecond; this thread wakes within tens of microseconds of the due time, and
 * costs one `postMessage` per read (measured in the "idle" row of the results).
 *
 * workerData: `{ control: SharedArrayBuffer, startHrNs: string, sliceMs }`. The start is on
 * `process.hrtime` (the one clock every thread shares). It ticks until `control[0] = 1`.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';

const { control, startHrNs, sliceMs } = workerData as { control: SharedArrayBuffer; startHrNs: string; sliceMs: number };
const ctl = new Int32Array(control);
// This thread's performance.now() at the shared start.
const start = performance.now() + Number(BigInt(startHrNs) - process.hrtime.bigint()) / 1e6;

let k = 0;
while (Atomics.load(ctl, 0) === 0) {
  const due = start + (k + 1) * sliceMs;
  let now = performance.now();
  while (now < due && Atomics.load(ctl, 0) === 0) {
    Atomics.wait(ctl, 0, 0, due - now);
    now = performance.now();
  }
  // Late by more than a read (descheduled): one message covers every read due.
  k = Math.max(k + 1, Math.floor((now - start) / sliceMs));
  parentPort!.postMessage(k);
}
