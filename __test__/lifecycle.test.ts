/**
 * Process and thread lifecycle of the native engine (child-process tests): an open
 * dispatcher with moves in flight never hangs or crashes the process on exit, and
 * dispatchers in several worker threads can be terminated mid-traffic.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../index';
import { type NodeRun, runNode } from './helpers';

const FIXTURES = join(__dirname, 'fixtures');

function run(script: string, ...args: string[]): { status: number | null; signal: NodeJS.Signals | null; ms: number; out: string } {
  return runWith([], script, ...args);
}

function runWith(flags: string[], script: string, ...args: string[]): NodeRun {
  return runNode(flags, join(FIXTURES, script), args, {}, 12_000);
}

describe('native engine lifecycle', () => {
  it('a script that ends with an open dispatcher and moves in flight exits promptly', () => {
    const r = run('exit.cjs', 'natural');
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(0);
    expect(r.ms).toBeLessThan(5_000);
  });

  it('process.exit() with an open dispatcher exits with its code, no crash', () => {
    const r = run('exit.cjs', 'exit');
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(0);
  });

  it('an uncaught exception with an open dispatcher exits with code 1, no crash', () => {
    const r = run('exit.cjs', 'throw');
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(1);
    expect(r.out).toContain('boom (expected by the test)');
  });

  it('dispatchers in 4 worker threads at once, terminated mid-traffic, 5 rounds', () => {
    const r = run('workers.cjs');
    expect(r.signal, r.out).toBeNull();
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('ok');
  });

  // An address-space limit breaks the AddressSanitizer runtime's shadow memory: not under it.
  it.skipIf(process.env.ASAN_OPTIONS !== undefined)('memory the options ask for that the machine will not give is a coded error, not an abort (child under ulimit -v)', () => {
    const fixture = join(FIXTURES, 'oom.cjs');
    const r = spawnSync('bash', ['-c', `ulimit -v 6000000 && exec "${process.execPath}" "${fixture}"`], { encoding: 'utf8', timeout: 30_000 });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.signal, out).toBeNull();
    expect(r.status, out).toBe(0);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(got).toMatchObject({ ctor: ErrorCode.OutOfMemory, ctorField: 'arenaBytes', rooms: ErrorCode.OutOfMemory, roomsField: 'roomBytes', closed: true });
    expect(got.opened).toBeGreaterThan(0);
    expect(got.opened).toBeLessThan(1000);
  });

  it.each(['dispatchAsync', 'whenWritable'])('an awaited %s() on a full queue keeps the process alive until the engine settles it (it exited with the promise pending)', (call) => {
    for (let i = 0; i < 3; i++) {
      const r = run('await-wake.cjs', 'native', call);
      expect(r.status, r.out).toBe(0);
      const got = JSON.parse(r.out.trim().split('\n').pop()!) as { code: number; result: string };
      expect(got.result, r.out).toBe(call === 'dispatchAsync' ? 'Accepted, closed' : 'resolved, closed');
    }
  });

  it.each(['flush', 'dispatchAsync', 'whenWritable'])('a dispatcher held only by a function awaiting its %s() is not collected while it waits (child, --expose-gc)', (call) => {
    for (const engine of ['js', 'native']) {
      const r = runWith(['--expose-gc'], 'gc-await.cjs', engine, call);
      expect(r.status, r.out).toBe(0);
      const got = JSON.parse(r.out.trim().split('\n').pop()!) as { result: string; finalized: string[] };
      expect(got.result, `${engine}: ${r.out}`).toBe(call === 'flush' ? 'flushed' : call === 'dispatchAsync' ? 'Accepted' : 'writable');
    }
  });

  it('abandoned dispatchers (closed or not) are garbage-collected and their threads stop', () => {
    const r = runWith(['--expose-gc'], 'gc.cjs');
    expect(r.status, r.out).toBe(0);
    const got = JSON.parse(r.out.trim().split('\n').pop()!) as { finalized: number; of: number; threadsBefore: number; threadsAfter: number };
    expect(got.finalized, r.out).toBe(got.of);
    expect(got.threadsAfter, r.out).toBe(0);
  });
});
