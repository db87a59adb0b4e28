/**
 * One open-loop load run, in a process of its own (forked by bench/run.ts with the run's
 * spec as its argument; results and progress go back over IPC).
 *
 * Load model: every `sliceMs` one "socket read" of all the frames due in that slice
 * arrives (`rate * sliceMs / 1000` frames, taken in order from the pre-encoded store);
 * read `k` is due at `start + (k + 1) * sliceMs`. A clock thread (lib/ticker.ts) posts each
 * read when it is due; the main thread hands every frame due by then to `dispatchStream`.
 * Frames refused with Backpressure stay due and are retried on the next read. A move's
 * latency runs from its read's due time to the moment JavaScript has it (`onDelivery`, the
 * worker_threads row's delivery callback, or the hand-written row's consumer, which it
 * calls inside `dispatchStream` — stamped at most `HAND_STAMP_EVERY` moves later): time spent waiting behind a busy event loop, behind
 * backpressure, or in a queue is all counted (no coordinated omission).
 *
 * Moves due in the window that were never sent by the drain limit are recorded with the
 * latency they had reached by then (`censored`).
 */
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type Delivery, Dispatcher } from '../index';
import { frameLength, inversePermutation, loadStore, permutation, playerKey, roomCount, roomOf } from './lib/frames';
import { Histogram, type Summary, TWO_31 } from './lib/hist';
import type { GcFigures, RunResult, RunSpec } from './lib/types';
import { splitTicks, threadTicks, type ThreadSplit } from './lib/threads';
import { WtPipeline } from './wt/pipeline';
import { HandPipeline } from './hand/pipeline';

interface Sut {
  dispatchStream(chunk: Uint8Array): { consumed: number; backpressure: boolean; malformed: boolean; rejected: number };
  flush(): Promise<void>;
  windowStart(): void;
  windowEnd(): void;
  counts(): { accepted: number; delivered: number; rejected: number; backpressure: number };
  close(): Promise<void>;
  alloc: Summary | null;
  hotPathAllocations: number | null;
  engineDelivered: Summary | null;
  jemallocResident: number | null;
  workerGc: GcFigures | null;
  workerHash?: string;
  hash: RunResult['hash'];
  rejectedByReason: RunResult['rejectedByReason'];
}

/** The hand-written row reads the clock once per this many moves it is handed (see its consumer). */
const HAND_STAMP_EVERY = 32;

function send(msg: unknown, then?: () => void): void {
  if (process.send === undefined) then?.();
  else process.send(msg, undefined, {}, () => then?.());
}

function summaryOf(h: { count: number; p50: number; p90: number; p99: number; p999: number; max: number; min: number; mean: number }): Summary {
  return { count: h.count, min: h.min, mean: h.mean, p50: h.p50, p90: h.p90, p99: h.p99, p999: h.p999, p9999: Number.NaN, max: h.max };
}

async function run(spec: RunSpec): Promise<RunResult> {
  const { spec: store, sliceMs } = spec;
  const P = store.players;
  const fl = frameLength(store);
  const q = Math.round((spec.rate * sliceMs) / 1000);
  if (q < 1 || Math.abs(q - (spec.rate * sliceMs) / 1000) > 1e-9) throw new RangeError(`rate ${spec.rate} is not a whole number of frames per ${sliceMs} ms read`);
  const warmReads = Math.round((spec.warmupS * 1000) / sliceMs);
  const windowReads = Math.round((spec.windowS * 1000) / sliceMs);
  const totalReads = warmReads + windowReads;
  // Priming: one period (every player's first move) is sent before the clock starts, so every
  // room has its memory and its first delivery behind it when the schedule begins.
  const prime = spec.row === 'idle' ? 0 : P;
  const totalFrames = prime + totalReads * q;
  const frames = spec.row === 'idle' ? Buffer.alloc(0) : loadStore(spec.store, totalFrames);
  const inv = inversePermutation(permutation(P));
  const rooms = roomCount(store);
  const hmac = store.auth === 'hmac-sha256';

  // ---- measurement state (allocated up front) ----
  const latency = new Histogram();
  const fromDispatch = new Histogram();
  // The warm-up's moves are recorded too, here, and thrown away: the consumer then runs one
  // path from the first move on. Recording only from the window's start made V8 deoptimise
  // the consumer there (a branch never taken before) and run the window's first deliveries
  // unoptimised: ~10 ms without a feed, the start of every window measured.
  const warmLatency = new Histogram();
  const warmFromDispatch = new Histogram();
  const feedLag = new Histogram();
  const warmFeedLag = new Histogram();
  const floor = new Histogram();
  const warmFloor = new Histogram();
  const done = new Uint32Array(Math.ceil(totalFrames / 32) + 1);
  const fedAt = new Float64Array(totalReads + 1);
  let duplicates = 0;
  let doneCount = 0;
  let deliveredInWindow = 0;
  let t0 = 0;
  let ws = Number.POSITIVE_INFINITY;
  let we = Number.POSITIVE_INFINITY;
  // When the consumer took hold of the moves it is handed now (`hold`), in a typed-array cell:
  // a double stored in a closure variable is boxed (a heap number per store), and the
  // hand-written row stores it once per move.
  const clock = new Float64Array(1);
  // Moves held at that instant, counted by read: every move of read `k` held at one instant
  // has the same latency, so a hold records one (value, count) pair per read it holds
  // (`settle`) instead of two histogram records per move — the same histograms, with less
  // of the harness's own work on the JavaScript thread it measures. A consumer that holds
  // many moves at one clock reading (a delivery, a segment, the hand-written row's batch of
  // `HAND_STAMP_EVERY` moves) pays per read.
  const heldOfRead = new Int32Array(totalReads + 1);
  let heldLo = totalReads;
  let heldHi = -1;

  const mark = (player: number, seq: number): number => {
    const idx = (seq - 1) * P + inv[player]!;
    const w = idx >>> 5;
    const bit = 1 << (idx & 31);
    if ((done[w]! & bit) !== 0) duplicates++;
    done[w] = done[w]! | bit;
    doneCount++;
    return idx;
  };
  /** Records the moves held at the last `hold` (in the histograms of the window or of the warm-up). */
  const settle = (): void => {
    const now = clock[0]!;
    for (let k = heldLo; k <= heldHi; k++) {
      const n = heldOfRead[k]!;
      if (n === 0) continue;
      heldOfRead[k] = 0;
      const inWindow = k >= warmReads;
      // Whole nanoseconds as an int32 where they fit: V8 passes a small integer unboxed, a
      // double to a call it did not inline as a new heap number (garbage that the rows' GC
      // figures would count).
      const late = Math.round((now - (t0 + (k + 1) * sliceMs)) * 1e6);
      (inWindow ? latency : warmLatency).recordN(late < TWO_31 ? late | 0 : late, n);
      const held = Math.round((now - fedAt[k]!) * 1e6);
      (inWindow ? fromDispatch : warmFromDispatch).recordN(held < TWO_31 ? held | 0 : held, n);
    }
    heldLo = totalReads;
    heldHi = -1;
  };
  /** The consumer takes hold of moves at `now`: what it held before is recorded first. */
  const hold = (now: number): void => {
    if (heldHi >= 0) settle();
    clock[0] = now;
  };
  /** A move the consumer holds (since its last `hold`). */
  const delivered = (player: number, seq: number): void => {
    const idx = mark(player, seq);
    if (idx < prime) return;
    const k = Math.floor((idx - prime) / q);
    const now = clock[0]!;
    if (k < totalReads) {
      heldOfRead[k]!++;
      if (k < heldLo) heldLo = k;
      if (k > heldHi) heldHi = k;
    }
    // Both comparisons on every move (no short-circuit): before the window `now >= ws` is
    // false, and a `now < we` first evaluated at the window's start deoptimised the consumer
    // there (no type feedback), which then ran unoptimised through the window's first ms.
    deliveredInWindow += (now >= ws ? 1 : 0) & (now < we ? 1 : 0);
  };

  // ---- the system under test ----
  const tidsBefore = new Set(threadTicks().keys());
  let sut: Sut;
  if (spec.row === 'node') {
    // Validation and delivery run inside dispatchStream, one move at a time. The consumer
    // reads the clock after every `HAND_STAMP_EVERY` moves it is handed, and when the call
    // returns, and records the moves since its last reading as held then: a move's latency
    // is at most that many moves late (tens of µs; never early), and the harness's clock
    // reads and records cost the row per batch of moves, as they cost the native row per
    // delivery (reading the clock per move cost this row ~150 ns a move of its own thread).
    let sinceStamp = 0;
    const stamp = (): void => {
      sinceStamp = 0;
      clock[0] = performance.now();
      if (heldHi >= 0) settle();
    };
    const pipeline = new HandPipeline({
      slots: P,
      consumer: {
        move: (m) => {
          delivered(m.player, m.seq);
          if (++sinceStamp === HAND_STAMP_EVERY) stamp();
        },
        reject: (_room, player, seq) => {
          mark(player, seq);
        },
      },
    });
    for (let r = 0; r < rooms; r++) pipeline.openRoom(r, hmac);
    for (let p = 0; p < P; p++) pipeline.join(roomOf(store, p), p, hmac ? new Uint8Array(playerKey(p)) : null);
    // The hash: measured here, on frames of this load, before anything else runs.
    const choice = pipeline.calibrate(frames.subarray(0, Math.min(prime, 4096) * fl), hmac);
    send({ type: 'progress', phase: `hash: ${choice.chosen} (${choice.candidates.map((c) => `${c.name} ${c.nsPerVerify.toFixed(0)} ns`).join(', ')})` });
    sut = {
      dispatchStream: (c) => {
        const r = pipeline.dispatchStream(c);
        stamp();
        return r;
      },
      flush: () => Promise.resolve(),
      windowStart: () => {},
      windowEnd: () => {},
      counts: () => ({ accepted: pipeline.accepted, delivered: pipeline.delivered, rejected: pipeline.rejected, backpressure: 0 }),
      close: () => {
        sut.rejectedByReason = pipeline.rejections();
        return Promise.resolve();
      },
      alloc: null,
      hotPathAllocations: null,
      engineDelivered: null,
      jemallocResident: null,
      workerGc: null,
      hash: choice,
      rejectedByReason: null,
    };
  } else if (spec.row === 'wt') {
    const pipeline = new WtPipeline({
      workers: spec.wtWorkers,
      signedBytes: fl - 32,
      consumer: {
        segment: () => {
          hold(performance.now());
        },
        move: (bytes, off) => {
          const player = (bytes[off + 8]! | (bytes[off + 9]! << 8) | (bytes[off + 10]! << 16) | (bytes[off + 11]! << 24)) >>> 0;
          const seq = (bytes[off + 12]! | (bytes[off + 13]! << 8) | (bytes[off + 14]! << 16) | (bytes[off + 15]! << 24)) >>> 0;
          delivered(player, seq);
        },
        reject: (_room, player, seq) => {
          mark(player, seq);
        },
      },
    });
    const roomList = Array.from({ length: rooms }, (_, room) => ({ room, hmac }));
    const joins = Array.from({ length: P }, (_, p) => ({ room: roomOf(store, p), player: p, key: hmac ? new Uint8Array(playerKey(p)) : null }));
    await pipeline.start(roomList, joins);
    let reports: GcFigures | null = null;
    sut = {
      dispatchStream: (c) => pipeline.dispatchStream(c),
      flush: () => pipeline.flush(),
      windowStart: () => pipeline.setWindow(1),
      windowEnd: () => pipeline.setWindow(2),
      counts: () => ({ accepted: pipeline.accepted, delivered: pipeline.delivered, rejected: pipeline.rejected, backpressure: pipeline.backpressure }),
      close: async () => {
        const r = await pipeline.close();
        reports = {
          count: r.reduce((a, x) => a + x.gcCount, 0),
          totalMs: r.reduce((a, x) => a + x.gcTotalMs, 0),
          maxMs: r.reduce((a, x) => Math.max(a, x.gcMaxMs), 0),
        };
        sut.workerGc = reports;
        sut.workerHash = r[0]?.hash;
        sut.alloc = pipeline.allocNs.summary();
      },
      alloc: null,
      hotPathAllocations: null,
      engineDelivered: null,
      jemallocResident: null,
      workerGc: null,
      hash: null,
      rejectedByReason: null,
    };
  } else {
    // Delivery v2: one call per delivery (many rooms), reused views, no object per move.
    const onDelivery = (delivery: Delivery): void => {
      hold(performance.now());
      for (const batch of delivery) for (const move of batch) delivered(move.player, move.seq);
      for (const r of delivery.rejections) mark(r.player, r.seq);
      settle();
    };
    const d = new Dispatcher({ engine: spec.row === 'js' ? 'js' : 'native', onDelivery });
    for (let r = 0; r < rooms; r++) d.openRoom(r, { auth: store.auth, delivery: 'push' });
    for (let p = 0; p < P; p++) d.join(roomOf(store, p), p, hmac ? { key: playerKey(p) } : {});
    await d.flush();
    let hotBefore = 0;
    sut = {
      dispatchStream: (c) => d.dispatchStream(c),
      flush: () => d.flush(),
      windowStart: () => {
        const s = d.stats({ reset: true, topRooms: 0 });
        hotBefore = s.allocator?.hotPathAllocations ?? 0;
      },
      windowEnd: () => {
        const s = d.stats({ topRooms: 0 });
        sut.alloc = s.latency === null ? null : summaryOf(s.latency.arenaAllocNs);
        sut.engineDelivered = s.latency === null ? null : summaryOf(s.latency.deliveredNs);
        const hot = s.allocator?.hotPathAllocations;
        sut.hotPathAllocations = hot === undefined || hot === null ? null : hot - hotBefore;
        sut.jemallocResident = s.allocator?.jemalloc?.resident ?? null;
      },
      counts: () => {
        const s = d.stats({ topRooms: 0 });
        return { accepted: s.accepted, delivered: s.delivered, rejected: s.rejected, backpressure: s.verdicts.Backpressure };
      },
      close: () => d.close(),
      alloc: null,
      hotPathAllocations: null,
      engineDelivered: null,
      jemallocResident: null,
      workerGc: null,
      hash: null,
      rejectedByReason: null,
    };
  }

  const engineTids = new Set([...threadTicks().keys()].filter((t) => !tidsBefore.has(t)));

  // ---- observers ----
  const gcs: { start: number; duration: number }[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ start: e.startTime, duration: e.duration });
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  const eld = monitorEventLoopDelay({ resolution: 1 });
  let rssPeak = 0;
  let rssTimer: ReturnType<typeof setInterval> | undefined;
  let cpuStart = process.cpuUsage();

  // ---- priming (not measured) ----
  let primedRejected = 0;
  for (let at = 0; at < prime; ) {
    const r = sut.dispatchStream(frames.subarray(at * fl, Math.min(prime, at + 4096) * fl));
    if (r.malformed) throw new Error('the frame store holds a malformed frame');
    primedRejected += r.rejected;
    at += r.consumed / fl;
    if (r.backpressure) await sut.flush();
    else await new Promise((resolve) => setImmediate(resolve));
  }
  await sut.flush();

  // ---- the clock ----
  const startHr = process.hrtime.bigint() + 200_000_000n;
  t0 = performance.now() + Number(startHr - process.hrtime.bigint()) / 1e6;
  const wsPlanned = t0 + warmReads * sliceMs + sliceMs;
  const wePlanned = wsPlanned + windowReads * sliceMs;
  const deadline = wePlanned + spec.drainLimitS * 1000;
  const control = new SharedArrayBuffer(4);
  const ticker = new Worker(join(__dirname, 'lib', 'ticker.js'), {
    workerData: { control, startHrNs: startHr.toString(), sliceMs },
  });

  await new Promise((r) => setTimeout(r, 20));
  const clockTids = new Set([...threadTicks().keys()].filter((t) => !tidsBefore.has(t) && !engineTids.has(t)));
  let ticksStart = new Map<number, number>();
  let threads: ThreadSplit = { main: 0, engine: 0, clock: 0, other: 0 };

  let sent = prime;
  let idleReads = 0;
  let syncRejected = primedRejected;
  let stopped = false;
  let windowOpen = false;
  let rehearsed = false;
  let windowClosed = false;
  let backlogMid = -1;
  let backlogEnd = -1;
  const dueBy = (t: number): number => Math.min(totalFrames, prime + Math.max(0, Math.floor((t - t0) / sliceMs)) * q);
  const backlog = (t: number): number => dueBy(t) - doneCount - syncRejected;

  const openWindow = (t: number): void => {
    windowOpen = true;
    ws = t;
    we = t + spec.windowS * 1000;
    sut.windowStart();
    eld.enable();
    cpuStart = process.cpuUsage();
    ticksStart = threadTicks();
    rssPeak = process.memoryUsage.rss();
    rssTimer = setInterval(() => {
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
    }, 20);
  };
  let cpuPercent = 0;
  const closeWindow = (t: number): void => {
    windowClosed = true;
    we = t;
    const cpu = process.cpuUsage(cpuStart);
    cpuPercent = ((cpu.user + cpu.system) / 1000 / (we - ws)) * 100;
    threads = splitTicks(ticksStart, threadTicks(), we - ws, { main: process.pid, engine: engineTids, clock: clockTids });
    eld.disable();
    clearInterval(rssTimer);
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
    sut.windowEnd();
    backlogEnd = backlog(t);
  };

  const feed = (): void => {
    // `tf`, not `clock[0]`: the hand-written row's consumer moves the clock inside dispatchStream.
    const tf = performance.now();
    hold(tf);
    // A rehearsal of the window's opening halfway through the warm-up: a process's first
    // `stats()` compiles its JavaScript and faults in its buffers (several ms), a cost a
    // server pays once, not at every scrape — and not inside the measured window.
    if (!rehearsed && tf >= wsPlanned - (warmReads * sliceMs) / 2) {
      rehearsed = true;
      sut.windowStart();
    }
    if (!windowOpen && tf >= wsPlanned) openWindow(tf);
    if (windowOpen && !windowClosed && backlogMid < 0 && tf >= ws + (spec.windowS * 1000) / 2) backlogMid = backlog(tf);
    if (windowOpen && !windowClosed && tf >= we) closeWindow(tf);
    if (stopped) return;
    const reads = Math.min(totalReads, Math.floor((tf - t0) / sliceMs));
    if (spec.row === 'idle') {
      // Nothing to send: the idle row records, for every read of the clock, how late the
      // event loop ran it (read k is due at (k + 1) slices) — one timer wake-up and one
      // message, no work: the floor of this harness on this machine. Every read counts from
      // its own due time, and the window is chosen by read number, as the rows' moves are.
      for (let k = idleReads; k < reads; k++) {
        const lag = Math.round((tf - (t0 + (k + 1) * sliceMs)) * 1e6);
        (k >= warmReads ? floor : warmFloor).record(lag < TWO_31 ? lag | 0 : lag);
      }
      idleReads = Math.max(idleReads, reads);
      return;
    }
    const target = prime + reads * q;
    if (sent >= target) return;
    // Stamped before the call: the hand-written row delivers inside it. Reads left unsent
    // (backpressure) are stamped again by the call that sends them.
    const lastOffered = Math.floor((target - 1 - prime) / q);
    for (let k = Math.max(0, Math.floor((sent - prime) / q)); k <= lastOffered; k++) fedAt[k] = tf;
    const r = sut.dispatchStream(frames.subarray(sent * fl, target * fl));
    if (r.malformed) throw new Error('the frame store holds a malformed frame');
    const n = r.consumed / fl;
    if (n > 0) {
      // Recorded from the first feed on, as whole nanoseconds (see `settle`): a first call
      // at the window's start with a double deoptimised `Histogram.record` for every caller.
      const lag = Math.round((tf - (t0 + reads * sliceMs)) * 1e6);
      (windowOpen && !windowClosed ? feedLag : warmFeedLag).record(lag < TWO_31 ? lag | 0 : lag);
    }
    syncRejected += r.rejected;
    sent += n;
  };

  let lastProgress = 0;
  const progress = (): void => {
    const t = performance.now();
    if (t - lastProgress < 250) return;
    lastProgress = t;
    const phase = !windowOpen ? 'warm-up' : !windowClosed ? 'window' : 'drain';
    send({ type: 'progress', phase, elapsed: (t - t0) / 1000, total: (wePlanned - t0) / 1000, sent, done: doneCount, backlog: backlog(t) });
  };

  await new Promise<void>((resolve, reject) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      resolve();
    };
    ticker.on('error', reject);
    ticker.on('message', (k: number) => {
      try {
        if (k < 0) return;
        feed();
        progress();
        const t = performance.now();
        if (!windowClosed) return;
        if (spec.row === 'idle' || (sent >= totalFrames && doneCount + syncRejected >= totalFrames)) finish();
        else if (t >= Math.max(deadline, we + spec.drainLimitS * 1000)) {
          stopped = true;
          finish();
        }
      } catch (error) {
        reject(error);
      }
    });
  });
  Atomics.store(new Int32Array(control), 0, 1);
  Atomics.notify(new Int32Array(control), 0);
  await ticker.terminate();

  // Everything accepted reaches JavaScript (late moves are recorded with their real latency).
  hold(performance.now());
  await sut.flush();
  settle(); // what the last hold left (a segment's, the last move's)
  const tStop = performance.now();
  // Window moves never sent: recorded with the latency reached at the stop (a lower bound).
  let censored = 0;
  for (let idx = prime + warmReads * q; idx < totalFrames; idx++) {
    if ((done[idx >>> 5]! & (1 << (idx & 31))) !== 0) continue;
    if (idx < sent) continue; // sent but refused synchronously (none in this load)
    censored++;
    latency.record((tStop - (t0 + (Math.floor((idx - prime) / q) + 1) * sliceMs)) * 1e6);
  }
  gcObserver.disconnect();
  const counts = sut.counts();
  await sut.close();
  const inWindow = gcs.filter((g) => g.start >= ws && g.start < we);
  const windowMoves = spec.row === 'idle' ? 0 : windowReads * q;
  const lat = spec.row === 'idle' ? null : latency.summary();
  const growing = backlogEnd > Math.max(0, backlogMid) + spec.rate * 0.005 && backlogEnd > spec.rate * 0.005;
  const achieved = deliveredInWindow / ((we - ws) / 1000);
  const result: RunResult = {
    row: spec.row,
    rate: spec.row === 'idle' ? 0 : spec.rate,
    windowS: (we - ws) / 1000,
    windowMoves,
    achieved,
    latency: lat,
    curve: spec.row === 'idle' ? [] : latency.curve(),
    fromDispatch: spec.row === 'idle' ? null : fromDispatch.summary(),
    censored,
    feedLag: feedLag.summary(),
    floor: spec.row === 'idle' ? floor.summary() : null,
    gc: {
      count: inWindow.length,
      totalMs: inWindow.reduce((a, g) => a + g.duration, 0),
      maxMs: inWindow.reduce((a, g) => Math.max(a, g.duration), 0),
    },
    workerGc: sut.workerGc,
    workerHash: sut.workerHash ?? null,
    eventLoopDelayP99Ms: eld.percentile(99) / 1e6,
    eventLoopDelayMaxMs: eld.max / 1e6,
    eventLoopDelaySamples: eld.count,
    rssPeakBytes: rssPeak - frames.byteLength,
    storeBytes: frames.byteLength,
    cpuPercent,
    threads,
    alloc: spec.row === 'idle' ? null : sut.alloc,
    hotPathAllocations: spec.row === 'idle' ? null : sut.hotPathAllocations,
    engineDelivered: sut.engineDelivered,
    jemallocResidentBytes: sut.jemallocResident,
    accepted: counts.accepted,
    delivered: counts.delivered,
    rejected: counts.rejected,
    lost: counts.accepted - counts.delivered - counts.rejected,
    duplicates,
    syncRejected,
    backpressureVerdicts: counts.backpressure,
    backlogMid,
    backlogEnd,
    growing,
    sustained: lat !== null && lat.p99 < 5e6 && !growing && censored === 0 && achieved >= 0.95 * spec.rate,
    hash: sut.hash,
    rejectedByReason: sut.rejectedByReason,
  };
  return result;
}

function cpuMsOf(u: NodeJS.CpuUsage): number {
  return (u.user + u.system) / 1000;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as RunSpec;
run(spec).then(
  (result) => {
    send({ type: 'result', result, cpuMs: cpuMsOf(process.cpuUsage()) }, () => process.exit(0));
  },
  (error: unknown) => {
    send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }, () => process.exit(1));
  },
);
