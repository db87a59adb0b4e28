/**
 * Teardown and exit (issue 5, item 4), on both engines. Extends lifecycle.test.ts (native
 * only: a plain end, process.exit, an uncaught throw, 4 workers × 5 rounds, GC of abandoned
 * dispatchers) with:
 * - every way a script can end with an open dispatcher and batches in flight (paused
 *   workers, a pending close / flush / batches() loop, unconsumed push batches, held
 *   batches, process.exit inside onBatch, several dispatchers), each within 2 s, no crash;
 * - dispatchers in 4 worker threads terminated at varied moments (inside onBatch, with a
 *   close / flush / dispatchAsync pending, mid-dispatchStream) or ending themselves, while
 *   the main thread's own dispatcher keeps its exactly-once accounting;
 * - callbacks that throw any value, or reject (async onBatch), reported and survived;
 * - close(), dispatch() and other calls made inside onBatch / onOverload;
 * - memory JavaScript holds stays readable and unchanged after close(), GC and reuse.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode, Reason, Verdict } from '../index';
import type { OverloadEvent } from '../index';
import { ENGINES, type EngineName, frame, type NodeRun, runNode, skipReason, sleep, thrown, until, useDispatchers, pauseForTesting } from './helpers';

const FIXTURES = join(__dirname, 'fixtures');

type ChildResult = NodeRun;

function runChild(flags: string[], script: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildResult {
  return runNode(flags, join(FIXTURES, script), args, env, 12_000);
}

/** The last line of stdout, parsed. */
function lastJson<T>(r: ChildResult): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`the child printed no JSON result (status ${r.status}, signal ${r.signal}):\n${r.out}`);
  }
}

/**
 * Node.js itself (not this library) sometimes aborts when a worker is terminated while V8
 * compiles its code on a background thread: `NodePlatform::ForIsolate ... (data.first) !=
 * nullptr` (seen about once in 40 runs here, with the pure TypeScript engine, i.e. without
 * the addon loaded in the worker; twice in a row once, in CI on 2026-12-06, on a busy
 * machine). Only that exact signature earns a retry, at most this many.
 */
const NODE_WORKER_TEARDOWN_RETRIES = 3;
const NODE_WORKER_TEARDOWN_BUG = /NodePlatform::ForIsolate[\s\S]*Assertion failed: \(data\.first\) != nullptr|Assertion failed: \(data\.first\) != nullptr[\s\S]*ForIsolate/;

describe.each(ENGINES)('teardown and exit [%s engine]', (engine: EngineName) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  // -------------------------------------------------------------------------------------
  describe('a process with an open dispatcher and batches in flight exits within 2 s, no crash', () => {
    const modes: [mode: string, code: number, what: string][] = [
      ['natural', 0, 'the script ends (push, pull and HMAC rooms loaded)'],
      ['exit', 0, 'process.exit(0) right after dispatching'],
      ['exit-code', 7, 'process.exitCode = 7, then the script ends'],
      ['exit-in-onBatch', 0, 'process.exit(0) inside onBatch'],
      ['paused', 0, 'the workers are paused with moves queued'],
      ['close-pending', 0, 'close() called, not awaited'],
      ['exit-close-pending', 0, 'close() called, then process.exit(0)'],
      ['flush-pending', 0, 'flush() called, not awaited'],
      ['batches-loop', 0, 'a for-await batches() loop still waiting'],
      ['unconsumed-push', 0, 'push batches nobody consumes, the room at Backpressure'],
      ['held-batches', 0, 'a drained pull batch held, more moves in flight'],
      ['many', 0, 'nine dispatchers open at once'],
    ];
    it.each(modes)('%s: %s', (mode, code) => {
      const r = runChild([], 'teardown-exit.cjs', [engine, mode]);
      expect(r.signal, r.out).toBeNull();
      expect(r.status, r.out).toBe(code);
      expect(r.stdout, r.out).toContain('ready');
      if (mode === 'exit-in-onBatch') expect(r.stdout, r.out).toContain('ready onBatch');
      expect(r.ms, r.out).toBeLessThan(2_000);
    });
  });

  // -------------------------------------------------------------------------------------
  it('dispatchers in 4 worker threads at once, terminated at varied moments, 8 rounds; the main thread loses nothing', () => {
    let r = runChild([], 'teardown-workers.cjs', [engine, '8']);
    for (let retry = 1; retry <= NODE_WORKER_TEARDOWN_RETRIES && r.signal === 'SIGABRT' && NODE_WORKER_TEARDOWN_BUG.test(r.out); retry++) {
      console.warn(`[${engine}] Node.js worker-teardown abort (not this library), retry ${retry} of ${NODE_WORKER_TEARDOWN_RETRIES}:\n${r.out.slice(0, 400)}`);
      r = runChild([], 'teardown-workers.cjs', [engine, '8']);
    }
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(0);
    const got = lastJson<{ rounds: number; terminated: number; selfEnded: number; errors: number; main: { accepted: number; delivered: number; rejected: number; drained: number } }>(r);
    expect(got.rounds).toBe(8);
    // 8 behaviours cycle over 32 workers: 4 end themselves (exit-self, throw-self) each
    expect(got.terminated).toBe(24);
    expect(got.selfEnded).toBe(8);
    expect(got.errors, 'only the workers that throw report an error').toBe(4);
    expect(got.main.accepted).toBeGreaterThan(0);
    expect(got.main.accepted, 'main thread: accepted = delivered + rejected').toBe(got.main.delivered + got.main.rejected);
  }, 60_000);

  // -------------------------------------------------------------------------------------
  describe('callbacks that throw (any value) or reject are reported and the process lives on', () => {
    interface ThrowResult {
      accepted: number;
      delivered: number;
      rejected: number;
      seen: number;
      calls: number;
      asyncCalls: number;
      overloadCalls: number;
      errors: number;
      batchErrors: number;
      batchWarnings: number;
      overloadWarnings: number;
      errorCodes: string[];
      warnings: number;
    }
    it.each(['default', 'onError', 'onError-throws'])('reporting: %s', (reporting) => {
      const r = runChild([], 'teardown-throw.cjs', [engine, reporting]);
      expect(r.signal, r.out).toBeNull();
      expect(r.status, r.out).toBe(0);
      const got = lastJson<ThrowResult>(r);
      // every move went through, though every callback threw
      expect(got.accepted).toBe(2600);
      expect(got.delivered + got.rejected).toBe(got.accepted);
      expect(got.seen).toBe(1800); // the push rooms' moves and rejections, all seen by onBatch
      expect(got.calls).toBeGreaterThan(10);
      expect(got.asyncCalls).toBeGreaterThan(0);
      expect(got.overloadCalls).toBeGreaterThan(0);
      if (reporting === 'default') {
        // one process warning per throw or rejection, naming the callback
        expect(got.errors).toBe(0);
        expect(got.batchWarnings).toBe(got.calls);
        expect(got.overloadWarnings).toBe(got.overloadCalls);
      } else {
        expect(got.warnings).toBe(0);
        expect(got.batchErrors).toBe(got.calls);
        expect(got.errors).toBe(got.calls + got.overloadCalls);
        // the async callback's late read of its released batch arrives as a rejection
        expect(got.errorCodes).toContain(ErrorCode.BatchReleased);
      }
    });
  });

  // -------------------------------------------------------------------------------------
  describe('calls made inside callbacks', () => {
    const move = (room: number, seq: number) => frame({ room, player: 1, seq, payload: 4 });

    it('dispatch inside onBatch: answered at once, delivered in a later onBatch call (never re-entered), order kept', async () => {
      let depth = 0;
      let maxDepth = 0;
      const seqs: number[] = [];
      const verdicts: number[] = [];
      const d = make({
        shards: 1,
        onBatch(b) {
          depth++;
          maxDepth = Math.max(maxDepth, depth);
          for (const m of b) {
            seqs.push(m.seq);
            if (m.seq <= 20) verdicts.push(d.dispatch(move(1, m.seq + 1000)));
          }
          depth--;
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 1);
      for (let s = 1; s <= 20; s++) expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
      await d.flush();
      await d.flush();
      expect(verdicts).toEqual(new Array(20).fill(Verdict.Accepted));
      expect(maxDepth).toBe(1);
      expect(seqs).toEqual([...Array.from({ length: 20 }, (_, i) => i + 1), ...Array.from({ length: 20 }, (_, i) => i + 1001)]);
      const s = d.stats();
      expect(s.accepted).toBe(40);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('close() inside onBatch: the batch stays valid until onBatch returns, later frames answer Closed, every accepted move is still delivered once', async () => {
      const seqs: number[] = [];
      let closing: Promise<void> | undefined;
      let afterClose: number | undefined;
      let readAfterClose = 0;
      let callsAfterResolve = 0;
      let resolved = false;
      const d = make({
        shards: 1,
        maxBatchMoves: 4,
        onBatch(b) {
          if (resolved) callsAfterResolve++;
          if (closing === undefined) {
            closing = d.close();
            afterClose = d.dispatch(move(1, 999));
            // still inside onBatch: the batch is readable
            for (const m of b) readAfterClose += m.payload.length > 0 ? 1 : 0;
          }
          for (const m of b) seqs.push(m.seq);
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 1);
      for (let s = 1; s <= 60; s++) expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
      await until(() => closing !== undefined, 5_000, 'the first onBatch');
      await closing;
      resolved = true;
      expect(afterClose).toBe(Verdict.Closed);
      expect(readAfterClose).toBeGreaterThan(0);
      expect(seqs).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
      await d.close(); // idempotent
      await sleep(20);
      expect(callsAfterResolve).toBe(0);
      const s = d.stats();
      expect(s.accepted).toBe(60);
      expect(s.delivered).toBe(60);
      expect(s.verdicts.Closed).toBe(1);
    });

    it('close() inside onOverload: pull rooms can still be drained, onRecovered still follows, nothing is lost', async () => {
      const events: OverloadEvent[] = [];
      let closing: Promise<void> | undefined;
      const d = make({
        shards: 1,
        roomBytes: 8192,
        overload: { roomBytes: 1000, queueDepth: 0 },
        onOverload(e) {
          events.push(e);
          closing ??= d.close();
        },
        onRecovered: (e) => events.push(e),
      });
      d.openRoom(1);
      d.join(1, 1);
      for (let s = 1; s <= 40; s++) expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
      await until(() => closing !== undefined, 5_000, 'onOverload');
      await closing;
      expect(d.dispatch(move(1, 41))).toBe(Verdict.Closed);
      const seqs: number[] = [];
      for (const m of d.drain(1)) seqs.push(m.seq);
      expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      await until(() => events.some((e) => e.recovered), 5_000, 'onRecovered after the drain');
      expect(events.map((e) => `${e.subject}:${e.recovered}`)).toEqual(['room:false', 'room:true']);
      const s = d.stats();
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('drain, flush, closeRoom, stats inside onBatch work; drain of a push room throws WrongDelivery; release() inside makes the batch unreadable', async () => {
      const drained: number[] = [];
      const codes: string[] = [];
      let flushed = false;
      let statsRead = 0;
      let releasedRead: string | undefined;
      let n = 0;
      const d = make({
        shards: 2,
        onBatch(b) {
          n++;
          if (b.room !== 1) return;
          drained.push(d.drain(2).count);
          codes.push(thrown(() => d.drain(1)).code ?? '?');
          void d.flush().then(() => {
            flushed = true;
          });
          statsRead = d.stats().accepted;
          if (n === 1) {
            d.closeRoom(1); // the batch's own room: its pending moves are still delivered
            b.release();
            releasedRead = thrown(() => [...b]).code;
          }
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.openRoom(2);
      d.join(1, 1);
      d.join(2, 1);
      pauseForTesting(d, true);
      for (let s = 1; s <= 10; s++) {
        expect(d.dispatch(move(2, s))).toBe(Verdict.Accepted);
        expect(d.dispatch(move(1, s))).toBe(Verdict.Accepted);
      }
      pauseForTesting(d, false);
      await d.flush();
      await until(() => flushed, 5_000, 'the flush started inside onBatch');
      expect(codes[0]).toBe(ErrorCode.WrongDelivery);
      expect(releasedRead).toBe(ErrorCode.BatchReleased);
      expect(statsRead).toBe(20);
      expect(d.dispatch(move(1, 11))).toBe(Verdict.UnknownRoom);
      const rest = d.drain(2).count;
      expect(drained.reduce((a, b) => a + b, 0) + rest).toBe(10);
      const s = d.stats();
      expect(s.delivered).toBe(20);
      expect(s.accepted).toBe(s.delivered + s.rejected);
    });

    it('an async onBatch: the batch is released when it returns; a late read rejects and is reported to onError, not as an unhandled rejection', async () => {
      const errors: unknown[] = [];
      const early: number[] = [];
      const d = make({
        shards: 1,
        onBatch: async (b) => {
          for (const m of b) early.push(m.seq);
          await null;
          for (const m of b) void m; // released by now
        },
        onError: (e) => errors.push(e),
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 1);
      for (let s = 1; s <= 5; s++) d.dispatch(move(1, s));
      await d.flush();
      await until(() => errors.length > 0, 5_000, 'the rejection to reach onError');
      expect(early).toEqual([1, 2, 3, 4, 5]);
      expect((errors[0] as { code?: string }).code).toBe(ErrorCode.BatchReleased);
    });

    it('a dispatch inside onBatch into the room whose batch is being delivered waits for its release, then arrives', async () => {
      const rejections: number[] = [];
      const seqs: number[] = [];
      const d = make({
        shards: 1,
        onBatch(b) {
          for (const m of b) seqs.push(m.seq);
          for (const r of b.rejections) rejections.push(r.reason);
          if (seqs.length === 1) {
            expect(d.dispatch(move(1, 2))).toBe(Verdict.Accepted);
            expect(d.dispatch(move(1, 1))).toBe(Verdict.Accepted); // a replay, rejected later
          }
        },
      });
      d.openRoom(1, { delivery: 'push' });
      d.join(1, 1);
      d.dispatch(move(1, 1));
      await d.flush();
      await d.flush();
      expect(seqs).toEqual([1, 2]);
      expect(rejections).toEqual([Reason.Replay]);
    });
  });

  // -------------------------------------------------------------------------------------
  it.each([['closed', 'close'], ['abandoned open', 'abandon']])('a batch released after its dispatcher (%s) was garbage-collected reads as detached (child, --expose-gc)', (_what, mode) => {
    const r = runChild(['--expose-gc'], 'release-after-gc.cjs', [engine, mode]);
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(0);
    const got = lastJson<{ finalized: boolean; before: { count: number; byteLength: number }; released: boolean; bufferBytes: number; viewBytes: number }>(r);
    expect(got.finalized, 'the dispatcher was garbage-collected').toBe(true);
    expect(got.before.count).toBe(10);
    expect(got.before.byteLength).toBeGreaterThan(0);
    expect({ released: got.released, bufferBytes: got.bufferBytes, viewBytes: got.viewBytes }).toEqual({ released: true, bufferBytes: 0, viewBytes: 0 });
  });

  // -------------------------------------------------------------------------------------
  describe('memory JavaScript holds stays readable after close(), GC and reuse, or reads as detached once released (child, --expose-gc)', () => {
    interface MemoryResult {
      finalized: boolean;
      pull: { room: number; released: boolean; count: number; iterated: number; bytesOk: boolean; payloadsOk: boolean }[];
      pushCopies: number;
      pushCopiesOk: number;
      pushCopiesConcatOk: boolean;
      pushViews: number;
      pushViewsDetached: number;
      lastPushViews: number;
    }
    const variants: [string, string, NodeJS.ProcessEnv][] = [
      ['closed, then dropped', 'close', {}],
      ['never closed, dropped and garbage-collected', 'abandon', {}],
    ];
    it.each(variants)('%s', (_what, mode, env) => {
      const r = runChild(['--expose-gc'], 'teardown-memory.cjs', [engine, mode], env);
      expect(r.signal, r.out).toBeNull();
      expect(r.status, r.out).toBe(0);
      const got = lastJson<MemoryResult>(r);
      expect(got.finalized, 'the dispatcher was garbage-collected').toBe(true);
      expect(got.pull.map((p) => p.room)).toEqual([1, 2, 4]);
      for (const p of got.pull) {
        expect(p, `pull room ${p.room}`).toEqual({ room: p.room, released: false, count: p.room === 4 ? 50 : 200, iterated: p.count, bytesOk: true, payloadsOk: true });
      }
      expect(got.pushCopies).toBeGreaterThan(0);
      expect(got.pushCopiesOk).toBe(got.pushCopies);
      expect(got.pushCopiesConcatOk).toBe(true);
      // views into released push deliveries read as detached (byteLength 0), never stale or freed memory
      expect(got.pushViews).toBe(200);
      expect(got.pushViewsDetached).toBe(200);
      expect(got.lastPushViews).toBeGreaterThan(0);
    });
  });
});
