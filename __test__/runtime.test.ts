/**
 * Runtime configuration of the native engine, verified in /proc: thread names and core
 * pinning of the worker threads.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { Dispatcher } from '../index';

/** Threads of this process whose name starts with `prefix`, with their allowed CPUs. */
function threads(prefix: string): { comm: string; cpus: string }[] {
  const out: { comm: string; cpus: string }[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const comm = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      if (!comm.startsWith(prefix)) continue;
      const cpus = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1] ?? '';
      out.push({ comm, cpus });
    } catch {
      // the thread ended while we looked
    }
  }
  return out;
}

/** `threads(prefix)` once it lists `n` threads (a new thread names itself shortly after it starts). */
async function settle(prefix: string, n: number): Promise<{ comm: string; cpus: string }[]> {
  for (let i = 0; i < 100 && threads(prefix).length !== n; i++) await new Promise((r) => setTimeout(r, 10));
  return threads(prefix);
}

const linux = process.platform === 'linux';

describe.runIf(linux)('native runtime in /proc', () => {
  it('threadName names the worker threads; workerThreads sets their number', async () => {
    const d = new Dispatcher({ threadName: 'rt-names', workerThreads: 2, shards: 2 });
    expect((await settle('rt-names', 2)).length).toBe(2);
    await d.close();
    expect(threads('rt-names').length).toBe(0);
  });

  it('pinCores: an explicit list pins each worker to its core', async () => {
    const last = availableParallelism() - 1;
    const d = new Dispatcher({ threadName: 'rt-pinned', workerThreads: 1, pinCores: [last] });
    expect(await settle('rt-pinned', 1)).toEqual([{ comm: 'rt-pinned', cpus: String(last) }]);
    expect(d.stats().runtime.pinnedCores).toEqual([last]);
    await d.close();
  });

  it('pinCores: true gives worker i core i', async () => {
    const n = Math.min(2, availableParallelism());
    const d = new Dispatcher({ threadName: 'rt-auto', workerThreads: n, shards: n, pinCores: true });
    const cpus = (await settle('rt-auto', n))
      .map((t) => t.cpus)
      .sort();
    expect(cpus).toEqual(Array.from({ length: n }, (_, i) => String(i)));
    await d.close();
  });

  it('without pinCores the workers keep the process affinity', async () => {
    const d = new Dispatcher({ threadName: 'rt-free', workerThreads: 1 });
    await settle('rt-free', 1);
    const own = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    expect(threads('rt-free')).toEqual([{ comm: 'rt-free', cpus: own }]);
    await d.close();
  });
});
