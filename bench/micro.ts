/**
 * Micro floors, in a process of their own (forked by bench/run.ts). Each figure is the
 * median of several trials, reported with the floor it is compared to, measured in the same
 * process and run.
 */
import { createHash, createHmac, createSecretKey, hash } from 'node:crypto';
import { Dispatcher, encodeMove } from '../index';
import { hmacMidstates, MIDSTATE_WORDS, verifyHmac, verifySha256 } from './hand/sha256';
import { loadBenchBinding } from './lib/binding';
import { frameLength, loadStore, playerKey, roomCount, roomOf, type Store } from './lib/frames';
import { type MicroResult, microTrials } from './lib/types';

interface MicroSpec {
  store: Store;
  quick: boolean;
}

function send(msg: unknown, then?: () => void): void {
  if (process.send === undefined) then?.();
  else process.send(msg, undefined, {}, () => then?.());
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Each shard's arena in the dispatch trials: a whole trial's records (frame + 24-byte record
 * header) fit even in one shard — about twice a shard's share — and the warm-up trials wrap it.
 */
function microArena(perTrial: number, frameLen: number): number {
  return 2 ** Math.ceil(Math.log2(perTrial * (frameLen + 24)));
}

/** How a dispatch trial's description names its refusals (none, when sized right). */
function accepted(refused: number): string {
  return refused === 0 ? 'all accepted' : `${refused.toLocaleString('en-US')} refused, Backpressure`;
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** ns per iteration of `body`, median of `trials` trials of `iters` iterations (after one warm-up trial). */
function perOp(trials: number, iters: number, body: (n: number) => number): { median: number; min: number; max: number } {
  let sink = 0;
  sink += body(Math.min(iters, 100_000));
  const xs: number[] = [];
  for (let t = 0; t < trials; t++) {
    const t0 = nowNs();
    sink += body(iters);
    xs.push((nowNs() - t0) / iters);
  }
  if (sink === -1) console.log(sink);
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

function progress(step: string): void {
  send({ type: 'progress', phase: step });
}

async function run(spec: MicroSpec): Promise<MicroResult[]> {
  const b = loadBenchBinding();
  const { perTrial, trials, warm: warmTrials } = microTrials(spec.quick);
  const scale = spec.quick ? 0.25 : 1;
  const out: MicroResult[] = [];
  const st = spec.store.spec;
  const fl = frameLength(st);
  // The warm-up trials (run before the measured ones) wrap each shard's arena (`microArena`) once.
  const storeFrames = perTrial * (trials + warmTrials);
  const frames = loadStore(spec.store, storeFrames);
  const views: Uint8Array[] = [];
  for (let i = 0; i < storeFrames; i++) views.push(frames.subarray(i * fl, (i + 1) * fl));
  const one = views[0]!;

  // ---- floors on the JavaScript thread ----
  progress('floors: empty N-API call, plain JS call');
  const callIters = Math.round(5_000_000 * scale);
  const empty = perOp(trials, callIters, (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += b.emptyCall(one);
    return s;
  });
  const plainFn = (buf: Uint8Array): number => buf.length + buf[0]!;
  const plain = perOp(trials, callIters, (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += plainFn(views[i & 1023]!);
    return s;
  });

  // ---- dispatch(): the public API, native engine ----
  const rooms = roomCount(st);
  const hmac = st.auth === 'hmac-sha256';
  const dispatchTrial = async (engine: 'native' | 'js', mode: 'frame' | 'stream' | 'one'): Promise<{ median: number; min: number; max: number; refused: number }> => {
    // Room in each shard's arena and queue for a whole trial (the workers may fall behind the
    // calls: nothing answers Backpressure, which would time a cheap refusal instead of a
    // move); the warm-up trials wrap the arena once, so no trial pays its first page faults.
    const d = new Dispatcher({ engine, arenaBytes: microArena(perTrial, fl), channelCapacity: 1 << 18 });
    for (let r = 0; r < rooms; r++) d.openRoom(r, { auth: st.auth, delivery: 'pull' });
    for (let p = 0; p < st.players; p++) d.join(roomOf(st, p), p, hmac ? { key: playerKey(p) } : {});
    await d.flush();
    const xs: number[] = [];
    let refused = 0;
    for (let t = 0; t < warmTrials + trials; t++) {
      const from = t * perTrial;
      const t0 = nowNs();
      if (mode === 'frame') {
        for (let i = from; i < from + perTrial; i++) if (d.dispatch(views[i]!) !== 0) refused++;
      } else if (mode === 'one') {
        for (let i = from; i < from + perTrial; i++) if (d.dispatchStream(views[i]!).accepted !== 1) refused++;
      } else {
        const chunk = 1000;
        for (let i = from; i < from + perTrial; i += chunk) {
          const r = d.dispatchStream(frames.subarray(i * fl, Math.min(from + perTrial, i + chunk) * fl));
          refused += Math.min(from + perTrial, i + chunk) - i - r.accepted;
        }
      }
      const per = (nowNs() - t0) / perTrial;
      if (t >= warmTrials) xs.push(per);
      else refused = 0;
      await d.flush();
      for (let r = 0; r < rooms; r++) d.drain(r);
    }
    await d.close();
    return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), refused };
  };
  progress('dispatch() native');
  const nd = await dispatchTrial('native', 'frame');
  progress('dispatchStream() native');
  const ns = await dispatchTrial('native', 'stream');
  progress('dispatchStream() native, one frame per call');
  const oneFrame = await dispatchTrial('native', 'one');
  progress('dispatch() js engine');
  const jd = await dispatchTrial('js', 'frame');
  progress('Core::dispatch in Rust');
  const core: number[] = [];
  for (let t = 0; t < trials; t++) core.push(b.benchCoreDispatch(fl, Math.round(200_000 * scale)).nsPerOp);

  out.push(
    {
      name: 'dispatch() native',
      what: `Dispatcher.dispatch(frame) on the JavaScript thread, ${perTrial.toLocaleString('en-US')} distinct ${fl}-byte frames per trial over ${rooms.toLocaleString('en-US')} rooms (${accepted(nd.refused)}; validated by the worker meanwhile)`,
      value: nd.median,
      unit: 'ns/call',
      floorName: 'emptyCall(buf): empty N-API call taking a Buffer',
      floor: empty.median,
      ratio: nd.median / empty.median,
      extra: { min: nd.min, max: nd.max, refused: nd.refused, vsPlainJsCall: nd.median / plain.median, plainJsCallNs: plain.median },
    },
    {
      name: 'emptyCall(buf)',
      what: 'the calibration export: an N-API call that borrows a Buffer and returns its length',
      value: empty.median,
      unit: 'ns/call',
      floorName: 'plain JS function call (buf.length + buf[0])',
      floor: plain.median,
      ratio: empty.median / plain.median,
      extra: { min: empty.min, max: empty.max },
    },
    {
      name: 'dispatchStream() native',
      what: `Dispatcher.dispatchStream(chunk) of 1,000 back-to-back frames, per move (${accepted(ns.refused)})`,
      value: ns.median,
      unit: 'ns/move',
      floorName: 'emptyCall(buf)',
      floor: empty.median,
      ratio: ns.median / empty.median,
      extra: { min: ns.min, max: ns.max, refused: ns.refused },
    },
    {
      name: 'Core::dispatch (Rust, no N-API)',
      what: 'the same checks, arena copy and wake-up called from Rust (benchCoreDispatch): the part of dispatch() that is not the N-API crossing',
      value: median(core),
      unit: 'ns/call',
      floorName: 'emptyCall(buf)',
      floor: empty.median,
      ratio: median(core) / empty.median,
    },
    {
      name: 'dispatch() js engine',
      what: `Dispatcher.dispatch(frame) with engine: 'js' (the sync checks and the copy into its ring; validation runs later on the same thread; ${accepted(jd.refused)})`,
      value: jd.median,
      unit: 'ns/call',
      floorName: 'plain JS function call',
      floor: plain.median,
      ratio: jd.median / plain.median,
      extra: { min: jd.min, max: jd.max, refused: jd.refused },
    },
  );

  // ---- delivery: JavaScript reading the moves of one drainAll() over 5,000 rooms ----
  progress('delivered-move read (drainAll, 5,000 rooms)');
  const readRooms = 5_000;
  const readMoves = Math.round(50_000 * scale);
  const dr = new Dispatcher({ shards: 1, channelCapacity: 1 << 20, arenaBytes: 256 << 20, roomBytes: 1 << 20 });
  for (let r = 0; r < readRooms; r++) {
    dr.openRoom(r);
    dr.join(r, 1);
  }
  const readPayload = new Uint8Array(st.payload).fill(9);
  const readFrames = Buffer.concat(
    Array.from({ length: readMoves }, (_, i) => encodeMove({ room: i % readRooms, player: 1, seq: Math.floor(i / readRooms) + 1, kind: i & 0xffff, payload: readPayload })),
  );
  for (let at = 0; at < readFrames.length; ) at += dr.dispatchStream(readFrames.subarray(at, at + 120 * 1000)).consumed;
  await dr.flush();
  const delivery = dr.drainAll();
  if (delivery.count !== readMoves) throw new Error(`drainAll delivered ${delivery.count} of ${readMoves} moves`);
  const readDelivery = perOp(trials, readMoves * 20, (n) => {
    let s = 0;
    for (let done = 0; done < n; ) {
      for (const batch of delivery) {
        for (const m of batch) s += m.room + m.player + m.seq + m.kind + m.payload.length;
        done += batch.count;
      }
    }
    return s;
  });
  // The same fields from a plain Uint8Array (a copy of the delivery's bytes), frame after frame.
  const plainBytes = delivery.bytes.slice();
  const frameEnd = 32 + readFrames.length;
  const le32 = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
  // The payload view as the fastest plain code makes it (the constructor: `subarray` costs
  // about twice as much in V8), as `MoveView.payload` does.
  const plainBuffer = plainBytes.buffer;
  const readPlain = perOp(trials, readMoves * 20, (n) => {
    let s = 0;
    for (let done = 0; done < n; ) {
      for (let at = 32; at < frameEnd; done++) {
        const len = plainBytes[at + 22]! | (plainBytes[at + 23]! << 8);
        s += le32(plainBytes, at + 4) + le32(plainBytes, at + 8) + le32(plainBytes, at + 12) + (plainBytes[at + 20]! | (plainBytes[at + 21]! << 8));
        s += new Uint8Array(plainBuffer, at + 24, len).length;
        at += 56 + len;
      }
    }
    return s;
  });
  delivery.release();
  await dr.close();
  out.push({
    name: 'delivered-move read',
    what: `reading room, player, seq, kind and the payload view of every move of one drainAll() delivery over ${readRooms.toLocaleString('en-US')} rooms (${readMoves.toLocaleString('en-US')} moves; reused room and move views)`,
    value: readDelivery.median,
    unit: 'ns/move',
    floorName: 'the same reads from a plain Uint8Array in a loop',
    floor: readPlain.median,
    ratio: readDelivery.median / readPlain.median,
    extra: { min: readDelivery.min, max: readDelivery.max, plainMin: readPlain.min },
  });

  // ---- tags: Rust vs node:crypto, per 120-byte frame (hash of its first 88 bytes) ----
  progress('SHA-256 / HMAC-SHA256');
  const tagFrame = 120;
  const body = new Uint8Array(tagFrame - 32).fill(7);
  const key = createSecretKey(playerKey(1));
  const hashIters = Math.round(1_000_000 * scale);
  const rustSha = median(Array.from({ length: trials }, () => b.benchSha256(tagFrame, hashIters).nsPerOp));
  const rustHmac = median(Array.from({ length: trials }, () => b.benchHmac(tagFrame, Math.round(hashIters / 2)).nsPerOp));
  const jsHash = perOp(trials, Math.round(hashIters / 2), (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += hash('sha256', body, 'buffer')[0]!;
    return s;
  });
  const jsCreateHash = perOp(trials, Math.round(hashIters / 2), (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += createHash('sha256').update(body).digest()[0]!;
    return s;
  });
  const jsHmac = perOp(trials, Math.round(hashIters / 4), (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += createHmac('sha256', key).update(body).digest()[0]!;
    return s;
  });
  // The hand-written row's JS hashing (bench/hand/sha256.ts): the 88 bytes and their tag in one frame, verified in place.
  const shaFrame = new Uint8Array(tagFrame).fill(7);
  shaFrame.set(createHash('sha256').update(body).digest(), body.length);
  const hmacFrame = new Uint8Array(tagFrame).fill(7);
  hmacFrame.set(createHmac('sha256', key).update(body).digest(), body.length);
  const mid = new Int32Array(MIDSTATE_WORDS);
  hmacMidstates(playerKey(1), mid, 0);
  if (!verifySha256(shaFrame, 0, body.length) || !verifyHmac(mid, 0, hmacFrame, 0, body.length)) throw new Error('the hand-written JS SHA-256 / HMAC disagrees with node:crypto');
  const handSha = perOp(trials, Math.round(hashIters / 2), (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) if (verifySha256(shaFrame, 0, body.length)) s++;
    return s;
  });
  out.push({
    name: 'dispatchStream() one frame per call',
    what: `Dispatcher.dispatchStream(frame) with a single frame per call, as a socket handler makes them (native; the wake-up of a worker is scheduled at most once per event-loop iteration, and only for a worker that announced sleep; ${accepted(oneFrame.refused)})`,
    value: oneFrame.median,
    unit: 'ns/call',
    floorName: 'SHA-256 verify, hand-written JS (validating the frame by hand)',
    floor: handSha.median,
    ratio: oneFrame.median / handSha.median,
    extra: { min: oneFrame.min, max: oneFrame.max, refused: oneFrame.refused },
  });
  const handHmac = perOp(trials, Math.round(hashIters / 4), (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) if (verifyHmac(mid, 0, hmacFrame, 0, body.length)) s++;
    return s;
  });
  out.push(
    {
      name: 'SHA-256 verify (Rust)',
      what: 'auth::verify of a 120-byte SHA-256 frame: SHA-256 of its 88 signed bytes and a constant-time compare (benchSha256)',
      value: rustSha,
      unit: 'ns/frame',
      floorName: null,
      floor: null,
      ratio: null,
    },
    {
      name: 'crypto.hash (Node)',
      what: "crypto.hash('sha256', 88 bytes, 'buffer'), no compare",
      value: jsHash.median,
      unit: 'ns/frame',
      floorName: 'SHA-256 verify (Rust)',
      floor: rustSha,
      ratio: jsHash.median / rustSha,
    },
    {
      name: 'createHash (Node)',
      what: "createHash('sha256').update(88 bytes).digest(), no compare",
      value: jsCreateHash.median,
      unit: 'ns/frame',
      floorName: 'SHA-256 verify (Rust)',
      floor: rustSha,
      ratio: jsCreateHash.median / rustSha,
    },
    {
      name: 'SHA-256 verify, hand-written JS',
      what: 'the hand-written row\'s zero-allocation JS SHA-256 (bench/hand/sha256.ts) of the 88 signed bytes, compared in place with the tag',
      value: handSha.median,
      unit: 'ns/frame',
      floorName: 'SHA-256 verify (Rust)',
      floor: rustSha,
      ratio: handSha.median / rustSha,
    },
    {
      name: 'HMAC-SHA256 verify (Rust)',
      what: 'auth::verify of a 120-byte HMAC frame with a 32-byte key, keyed state precomputed (benchHmac)',
      value: rustHmac,
      unit: 'ns/frame',
      floorName: null,
      floor: null,
      ratio: null,
    },
    {
      name: 'createHmac (Node)',
      what: "createHmac('sha256', KeyObject).update(88 bytes).digest(), no compare",
      value: jsHmac.median,
      unit: 'ns/frame',
      floorName: 'HMAC-SHA256 verify (Rust)',
      floor: rustHmac,
      ratio: jsHmac.median / rustHmac,
    },
    {
      name: 'HMAC-SHA256 verify, hand-written JS',
      what: 'the hand-written row\'s zero-allocation JS HMAC-SHA256 from precomputed key midstates (bench/hand/sha256.ts), compared in place with the tag',
      value: handHmac.median,
      unit: 'ns/frame',
      floorName: 'HMAC-SHA256 verify (Rust)',
      floor: rustHmac,
      ratio: handHmac.median / rustHmac,
    },
  );

  // ---- arena allocation vs jemalloc ----
  progress('arena allocation vs malloc');
  const allocIters = Math.round(2_000_000 * scale);
  const pick = <T extends { p999: number }>(xs: T[]): T => [...xs].sort((a, b2) => a.p999 - b2.p999)[xs.length >> 1]!;
  const arena = pick(Array.from({ length: trials }, () => b.benchArenaAlloc([fl], allocIters)));
  const arenaSmall = pick(Array.from({ length: trials }, () => b.benchArenaAlloc([fl], allocIters, 1 << 20)));
  const malloc = pick(Array.from({ length: trials }, () => b.benchMalloc([fl], allocIters)));
  const dist = (d: typeof arena): Record<string, number> => ({
    p50: d.p50,
    p90: d.p90,
    p99: d.p99,
    p999: d.p999,
    max: d.max,
    mean: d.mean,
    clockFloorNs: d.clockFloorNs,
    clockFloorP999Ns: d.clockFloorP999Ns,
  });
  out.push(
    {
      name: 'arena allocation (8 MiB ring, default)',
      what: `Producer::try_push of a ${fl}-byte frame (bump-pointer reservation + copy), each timed on its own; p99.9 shown (trial with the median p99.9)`,
      value: arena.p999,
      unit: 'ns p99.9',
      floorName: 'jemalloc malloc + copy of the same size',
      floor: malloc.p999,
      ratio: arena.p999 / malloc.p999,
      extra: dist(arena),
    },
    {
      name: 'arena allocation (1 MiB ring)',
      what: 'the same with a 1 MiB ring (the ring no longer streams through the cache)',
      value: arenaSmall.p999,
      unit: 'ns p99.9',
      floorName: 'jemalloc malloc + copy of the same size',
      floor: malloc.p999,
      ratio: arenaSmall.p999 / malloc.p999,
      extra: dist(arenaSmall),
    },
    {
      name: 'jemalloc malloc + copy',
      what: `Box<[u8]>::from(frame) through the addon's global allocator, ${fl} bytes, 1,024 kept alive`,
      value: malloc.p999,
      unit: 'ns p99.9',
      floorName: null,
      floor: null,
      ratio: null,
      extra: dist(malloc),
    },
  );

  // ---- queue hand-off ----
  progress('queue hand-off');
  const handoff = median(Array.from({ length: trials }, () => b.benchQueueHandoff(fl, Math.round(4_000_000 * scale)).nsPerOp));
  out.push({
    name: 'queue hand-off',
    what: `${fl}-byte records through the SPSC ingress ring from the JavaScript thread to a second thread (both spinning), per move`,
    value: handoff,
    unit: 'ns/move',
    floorName: 'emptyCall(buf)',
    floor: empty.median,
    ratio: handoff / empty.median,
  });
  return out;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as MicroSpec;
run(spec).then(
  (results) => send({ type: 'result', result: results, cpuMs: (process.cpuUsage().user + process.cpuUsage().system) / 1000 }, () => process.exit(0)),
  (error: unknown) => send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }, () => process.exit(1)),
);
