/**
 * One frame per message, over loopback TCP (forked by bench/run.ts, one process per row):
 * `conns` client connections, in a child process of their own, write `rate` frames a second
 * in total, one `write` per frame (Nagle off), open loop on 1 ms ticks; the server — this
 * process — handles each socket's `'data'` chunks (usually one frame each) the way a Node
 * server does. Rows:
 * - `hand`: validation written by hand inline in the handler (header checks, the fastest
 *   JavaScript SHA-256 of bench/hand/sha256.ts, compare), as a Node expert would;
 * - `native`: `dispatchStream(chunk)` on the native engine (pull rooms, one `drainAll()`
 *   every 50 ms, as a 20 Hz game loop does);
 * - `floor`: the handler only counts the bytes: what the sockets alone cost.
 * Reports the JavaScript thread's and the whole process's CPU per message (Linux, from
 * /proc, 10 ms ticks), which is the figure "one frame per call" is judged by.
 */
import { fork } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { Dispatcher } from '../index';
import { verifySha256 } from './hand/sha256';
import type { PerMessageRow } from './lib/report';
import { threadTicks } from './lib/threads';

export interface PerMessageSpec {
  row: 'floor' | 'hand' | 'native';
  rate: number;
  conns: number;
  seconds: number;
  rooms: number;
}

/** What one row measured (the report's row type). */
export type PerMessageResult = PerMessageRow;

function send(msg: unknown, then?: () => void): void {
  if (process.send === undefined) then?.();
  else process.send(msg, undefined, {}, () => then?.());
}

async function run(spec: PerMessageSpec): Promise<PerMessageResult> {
  let valid = 0;
  let delivered = 0;
  let d: Dispatcher | null = null;
  let tick: ReturnType<typeof setInterval> | null = null;
  if (spec.row === 'native') {
    const dispatcher = new Dispatcher();
    d = dispatcher;
    const perRoom = Math.ceil(spec.conns / spec.rooms);
    for (let r = 0; r < spec.rooms; r++) {
      dispatcher.openRoom(r);
      for (let p = 0; p < perRoom; p++) dispatcher.join(r, p);
    }
    await dispatcher.flush();
    tick = setInterval(() => {
      for (const batch of dispatcher.drainAll()) delivered += batch.count;
    }, 50);
  }
  const handle = (pending: Buffer): number => {
    if (spec.row === 'floor') {
      valid += Math.floor(pending.length / 120);
      return pending.length - (pending.length % 120);
    }
    if (spec.row === 'native') {
      const r = d!.dispatchStream(pending);
      valid += r.accepted;
      return r.consumed;
    }
    let at = 0;
    while (pending.length - at >= 24) {
      if (pending[at] !== 0x4d || pending[at + 1] !== 0x56 || pending[at + 2] !== 1 || (pending[at + 3]! & 0xfe) !== 0) return pending.length;
      const len = pending[at + 22]! | (pending[at + 23]! << 8);
      const n = 56 + len;
      if (pending.length - at < n) break;
      if (verifySha256(pending, at, 24 + len)) {
        valid++;
        delivered++;
      }
      at += n;
    }
    return at;
  };
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.setNoDelay(true);
    let pending: Buffer = Buffer.alloc(0);
    s.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      pending = pending.subarray(handle(pending));
    });
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const child = fork(join(__dirname, 'permessage-clients.js'), [JSON.stringify({ port, rate: spec.rate, conns: spec.conns, seconds: spec.seconds, rooms: spec.rooms })], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const result = await new Promise<PerMessageResult>((resolve, reject) => {
    let ticks0 = threadTicks();
    let cpu0 = process.cpuUsage();
    let valid0 = 0;
    child.on('error', reject);
    child.on('message', (m: { type: string; sent?: number }) => {
      if (m.type === 'started') {
        ticks0 = threadTicks();
        cpu0 = process.cpuUsage();
        valid0 = valid;
      } else if (m.type === 'done') {
        const ticks1 = threadTicks();
        const cpu = process.cpuUsage(cpu0);
        const messages = m.sent ?? 0;
        const jsTicks = (ticks1.get(process.pid) ?? 0) - (ticks0.get(process.pid) ?? 0);
        resolve({
          row: spec.row,
          rate: spec.rate,
          conns: spec.conns,
          messages,
          valid: valid - valid0,
          delivered: 0,
          // 100 ticks a second (USER_HZ).
          jsThreadUsPerMessage: (jsTicks * 10_000) / Math.max(1, messages),
          processUsPerMessage: (cpu.user + cpu.system) / Math.max(1, messages),
        });
      }
    });
  });
  child.kill();
  for (const s of sockets) s.destroy();
  server.close();
  if (d !== null) {
    await d.flush();
    for (const batch of d.drainAll()) delivered += batch.count;
    await d.close();
  }
  if (tick !== null) clearInterval(tick);
  return { ...result, delivered };
}

const spec = JSON.parse(process.argv[2] ?? '{}') as PerMessageSpec;
run(spec).then(
  (result) => {
    const cpu = process.cpuUsage();
    send({ type: 'result', result, cpuMs: (cpu.user + cpu.system) / 1000 }, () => process.exit(0));
  },
  (error: unknown) => {
    send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }, () => process.exit(1));
  },
);
