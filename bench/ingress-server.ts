/**
 * The Node.js servers of bench/ingress.ts (one process per run; the Go server is
 * bench/wsload/cmd/wsgo). Every row takes the same load — WebSocket connections, each with
 * a ticket of this package's format in `?ticket=` (room = player / roomSize), binary
 * messages of one or more 120-byte v1 frames whose payload carries the planned send time
 * (CLOCK_MONOTONIC ns, bytes 0..8) and a "measured" flag (byte 8) — and records, for every
 * measured move, planned send time → the moment JavaScript holds the validated move.
 *
 * Rows:
 * - `native`: this package's native ingress (`listen({ ws })`), push rooms, `onDelivery`:
 *   JavaScript holds a move when its delivery is handed over (clock read once a delivery).
 * - `native-pull`: the same with pull rooms and one `drainAll()` every 50 ms (a 20 Hz game
 *   loop): the latency includes the wait for the next tick, by design.
 * - `ws-hand`: npm `ws`, validation by hand inline in the message handler (bench/hand: header
 *   checks, the fastest measured SHA-256 — calibrated at start —, the 128-wide replay window),
 *   the move handed to the consumer on the spot (clock read per move).
 * - `ws-dispatch`: npm `ws`, `dispatchStream(message, sender)` per message (sender from the
 *   ticket), pull rooms, `drainAll()` every 50 ms (the latency includes the tick wait).
 *
 * The ws rows verify each ticket's HMAC and expiry at the upgrade (no single-use cache) and
 * answer 503 beyond `cap` open connections, as the native ingress does beyond `maxConnections`.
 * Protocol: one JSON line on stdout when ready (`{ type: 'ready', port, pid }`); then commands
 * on stdin, one a line (`stats`, `reset`), each answered by one JSON line.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { WebSocketServer, type WebSocket } from 'ws';
import { Dispatcher, encodeMove } from '../index';
import type { Delivery } from '../index';
import { HandPipeline, type HandMove } from './hand/pipeline';
import { Histogram } from './lib/hist';

export type IngressRow = 'native' | 'native-pull' | 'ws-hand' | 'ws-dispatch';

export interface IngressServerSpec {
  row: IngressRow;
  rooms: number;
  roomSize: number;
  /** Open connections at most; more are answered 503 at once. */
  cap: number;
  ticketKeyHex: string;
}

const STAMP = 24;
const MEASURED = 32;

/** CLOCK_MONOTONIC ns, as the Go generator stamps it: performance.now() shifted onto process.hrtime's origin. */
function clockOffsetNs(): number {
  let best = Number.POSITIVE_INFINITY;
  let offset = 0;
  for (let i = 0; i < 200; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint());
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = h - ((a + b) / 2) * 1e6;
    }
  }
  return offset;
}
const OFFSET = clockOffsetNs();
const nowNs = (): number => OFFSET + performance.now() * 1e6;

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

const hist = new Histogram();
let received = 0;
let measured = 0;
/** Non-empty deliveries the consumer held (push: `onDelivery` calls; pull: drains with moves). */
let deliveries = 0;

/** Records the moves of one delivery (one clock read). */
function holdDelivery(delivery: Delivery): void {
  if (delivery.count === 0) return;
  deliveries++;
  const now = nowNs();
  const bytes = delivery.bytes;
  for (const batch of delivery) {
    for (const move of batch) {
      const p = move.payloadOffset;
      if (bytes[p + 8] === 1) {
        hist.record(now - (u32(bytes, p) + u32(bytes, p + 4) * 4294967296));
        measured++;
      }
    }
    received += batch.count;
  }
}

/** A ticket of src/ticket.ts's format: tag, version, expiry (what a ws server can check without the addon). */
function checkTicket(key: Buffer, t: string | null): { room: number; player: number } | null {
  if (t === null || t.length !== 87) return null;
  const b = Buffer.from(t, 'base64url');
  if (b.length !== 65 || b[0] !== 1) return null;
  const tag = createHmac('sha256', key).update(b.subarray(0, 33)).digest();
  if (!timingSafeEqual(tag, b.subarray(33))) return null;
  if (Number(b.readBigUInt64LE(9)) <= Date.now()) return null;
  return { room: b.readUInt32LE(1), player: b.readUInt32LE(5) };
}

async function main(spec: IngressServerSpec): Promise<{ port: number; extra: () => object }> {
  const key = Buffer.from(spec.ticketKeyHex, 'hex');
  const players = spec.rooms * spec.roomSize;
  if (spec.row === 'native' || spec.row === 'native-pull') {
    const push = spec.row === 'native';
    const d = new Dispatcher(push ? { onDelivery: holdDelivery } : {});
    for (let r = 0; r < spec.rooms; r++) {
      d.openRoom(r, { delivery: push ? 'push' : 'pull' });
      for (let j = 0; j < spec.roomSize; j++) d.join(r, r * spec.roomSize + j);
    }
    await d.flush();
    if (!push) setInterval(() => holdDelivery(d.drainAll()), 50);
    const server = await d.listen({ ws: { port: 0, host: '127.0.0.1' }, ticketKey: key, maxConnections: spec.cap, idleTimeoutMs: 0 });
    return {
      port: server.address('ws').port,
      extra: () => {
        const s = d.stats({ topRooms: 0 });
        return {
          connections: server.connections,
          ingress: s.ingress,
          verdicts: s.verdicts,
          reasons: s.reasons,
          accepted: s.accepted,
          delivered: s.delivered,
          rejected: s.rejected,
          jemalloc: s.allocator?.jemalloc ?? undefined,
          memory: process.memoryUsage(),
        };
      },
    };
  }

  // npm ws rows.
  let open = 0;
  let refused = 0;
  let acceptedConns = 0;
  const rejected: Record<string, number> = {};
  const reject = (why: string, n = 1): void => {
    rejected[why] = (rejected[why] ?? 0) + n;
  };
  let onSocket: (ws: WebSocket, room: number, player: number) => void;
  let extra: () => object = () => ({});
  if (spec.row === 'ws-hand') {
    const pipeline = new HandPipeline({
      slots: players,
      consumer: {
        move(m: HandMove): void {
          received++;
          const b = m.bytes;
          const f = m.frameOffset;
          if (b[f + MEASURED] === 1) {
            hist.record(nowNs() - (u32(b, f + STAMP) + u32(b, f + STAMP + 4) * 4294967296));
            measured++;
          }
        },
        reject(_room: number, _player: number, _seq: number, reason: number): void {
          reject(reason === 0 ? 'BadTag' : 'Replay');
        },
      },
    });
    for (let r = 0; r < spec.rooms; r++) {
      pipeline.openRoom(r, false);
      for (let j = 0; j < spec.roomSize; j++) pipeline.join(r, r * spec.roomSize + j, null);
    }
    // The hash is chosen by measurement over frames like the load's (64-byte payloads).
    const sample = new Uint8Array(120 * 64);
    for (let i = 0; i < 64; i++) sample.set(encodeMove({ room: i % spec.rooms, player: (i % spec.rooms) * spec.roomSize, seq: 1, payload: new Uint8Array(64).fill(i) }), i * 120);
    // (calibrate only hashes: it leaves no replay state behind)
    const choice = pipeline.calibrate(sample, false);
    onSocket = (ws, room, player) => {
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) return ws.close(1003);
        // The connection speaks for its ticket's room and player only.
        for (let at = 0; at + 24 <= data.length; at += 56 + (data[at + 22]! | (data[at + 23]! << 8))) {
          if (u32(data, at + 8) !== player) return reject('WrongSender');
          if (u32(data, at + 4) !== room) return reject('NotMember');
        }
        const r = pipeline.dispatchStream(data);
        if (r.malformed || r.consumed !== data.length) ws.close(1007);
        return undefined;
      });
    };
    extra = () => ({ hash: { chosen: choice.chosen, candidates: choice.candidates.map((c) => ({ name: c.name, nsPerVerify: c.nsPerVerify })) }, byReason: pipeline.rejections() });
  } else {
    const d = new Dispatcher();
    for (let r = 0; r < spec.rooms; r++) {
      d.openRoom(r, { delivery: 'pull' });
      for (let j = 0; j < spec.roomSize; j++) d.join(r, r * spec.roomSize + j);
    }
    await d.flush();
    setInterval(() => holdDelivery(d.drainAll()), 50);
    let backpressured = 0;
    onSocket = (ws, _room, player) => {
      let held: Buffer | null = null;
      const offer = (data: Buffer): boolean => {
        const r = d.dispatchStream(data, player);
        if (r.malformed) {
          ws.close(1007);
          return true;
        }
        if (r.backpressure) {
          // Hold the rest, stop reading this socket until the engine has room again.
          backpressured++;
          held = data.subarray(r.consumed);
          ws.pause();
          const retry = (): void => {
            const rest = held!;
            held = null;
            if (offer(rest)) ws.resume();
          };
          void d.whenWritable().then(retry);
          return false;
        }
        return true;
      };
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) return ws.close(1003);
        if (held !== null) held = Buffer.concat([held, data]);
        else offer(data);
        return undefined;
      });
    };
    extra = () => {
      const s = d.stats({ topRooms: 0 });
      return { verdicts: s.verdicts, reasons: s.reasons, accepted: s.accepted, delivered: s.delivered, backpressured };
    };
  }

  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false, clientTracking: false });
  const http = createServer((_req, res) => {
    res.writeHead(426).end();
  });
  const refuse = (socket: Duplex, status: string): void => {
    refused++;
    socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  };
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => undefined);
    if (open >= spec.cap) return refuse(socket, '503 Service Unavailable');
    const q = req.url?.indexOf('?ticket=') ?? -1;
    const who = checkTicket(key, q < 0 ? null : req.url!.slice(q + 8));
    if (who === null || who.room >= spec.rooms) return refuse(socket, '401 Unauthorized');
    open++;
    wss.handleUpgrade(req, socket, head, (ws) => {
      acceptedConns++;
      ws.on('error', () => undefined);
      ws.on('close', () => open--);
      onSocket(ws, who.room, who.player);
    });
    return undefined;
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const port = (http.address() as { port: number }).port;
  const base = extra;
  return { port, extra: () => ({ connections: open, acceptedConnections: acceptedConns, refusedConnections: refused, rejected, ...base() }) };
}

const spec = JSON.parse(process.argv[2] ?? '{}') as IngressServerSpec;
main(spec).then(
  ({ port, extra }) => {
    const say = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
    say({ type: 'ready', port, pid: process.pid });
    createInterface({ input: process.stdin }).on('line', (line) => {
      const cmd = line.trim();
      if (cmd === 'stats') {
        const s = hist.summary();
        say({ type: 'stats', received, measured, deliveries, latencyNs: { count: s.count, p50: s.p50, p99: s.p99, p999: s.p999, max: s.max }, ...extra() });
      } else if (cmd === 'reset') {
        hist.counts.fill(0);
        hist.count = 0;
        hist.sum = 0;
        hist.min = Number.POSITIVE_INFINITY;
        hist.max = 0;
        received = 0;
        measured = 0;
        deliveries = 0;
        say({ type: 'reset' });
      }
    }).on('close', () => process.exit(0));
  },
  (error: unknown) => {
    process.stderr.write(`ingress-server: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
