/**
 * Per-thread CPU time of this process from /proc/self/task (Linux; empty elsewhere), to
 * split a run's CPU between the JavaScript thread, the engine's threads (native workers or
 * verification workers), the load's clock thread and the rest (V8 and libuv helpers).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks (USER_HZ, 100 on Linux) of user + system time, by thread id. */
export function threadTicks(): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), Number(f[11]) + Number(f[12]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

export interface ThreadSplit {
  /** % of one core over the window. */
  main: number;
  engine: number;
  clock: number;
  other: number;
}

export function splitTicks(before: Map<number, number>, after: Map<number, number>, wallMs: number, groups: { main: number; engine: Set<number>; clock: Set<number> }): ThreadSplit {
  const split: ThreadSplit = { main: 0, engine: 0, clock: 0, other: 0 };
  for (const [tid, ticks] of after) {
    const ms = (ticks - (before.get(tid) ?? 0)) * 10;
    const key = tid === groups.main ? 'main' : groups.engine.has(tid) ? 'engine' : groups.clock.has(tid) ? 'clock' : 'other';
    split[key] += (ms / wallMs) * 100;
  }
  return split;
}
