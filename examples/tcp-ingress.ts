/**
 * A TCP ingress: each connection's bytes go to `dispatchStream` as they arrive, with
 * backpressure carried back to the socket.
 *
 *   npm run build && node dist/examples/tcp-ingress.js [port]
 *
 * The wire: a connection opens with its player id (4 bytes, little-endian), then carries
 * move frames back to back, cut anywhere by TCP. The player id stands in for real
 * authentication (a TLS client certificate, a session token checked at login): whatever
 * proves who is on the other end, pass it to `dispatchStream` as the sender, so a
 * connection can only speak for its own player (`WrongSender` otherwise).
 *
 * Per connection:
 * - keep the bytes `dispatchStream` did not consume (`pending.subarray(consumed)`: a
 *   partial frame, or the frames from one refused with `Backpressure` on) and put the next
 *   chunk after them;
 * - `malformed`: the stream is out of sync and cannot be re-synchronised: drop the
 *   connection;
 * - `backpressure`: pause the socket (TCP flow control then slows the client down),
 *   `await whenWritable()`, retry with the kept bytes until they pass, resume the socket.
 *   `whenWritable()` may resolve spuriously; the loop simply waits again.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Dispatcher, encodeMove, type MoveBatch } from '../index';

export interface TcpIngressOptions {
  /** Port to listen on; 0 (the default) picks a free one. */
  port?: number;
  /** Address to listen on. Default `'127.0.0.1'`. */
  host?: string;
  /** Whether `player` may connect (say, it has joined a room). Default: everyone. */
  admit?: (player: number) => boolean;
}

export interface TcpIngressStats {
  /** Connections accepted since the server started (open or since closed). */
  connections: number;
  /** Connections dropped for a malformed stream. */
  malformed: number;
  /** Times a socket was paused on `Backpressure`. */
  pauses: number;
  /** Bytes consumed by `dispatchStream`. */
  consumed: number;
}

export interface TcpIngress {
  readonly server: Server;
  readonly port: number;
  readonly stats: TcpIngressStats;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

const EMPTY = Buffer.alloc(0);
/** Bytes of the opening player id. */
const HELLO_BYTES = 4;

/** Starts the ingress; resolves once it listens. */
export function startTcpIngress(d: Dispatcher, options: TcpIngressOptions = {}): Promise<TcpIngress> {
  const stats: TcpIngressStats = { connections: 0, malformed: 0, pauses: 0, consumed: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    stats.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serve(d, socket, stats, options.admit);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        stats,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const s of sockets) s.destroy();
          }),
      });
    });
  });
}

/** One connection: the player id, then frames into `dispatchStream`. */
function serve(d: Dispatcher, socket: Socket, stats: TcpIngressStats, admit: ((player: number) => boolean) | undefined): void {
  let player: number | undefined;
  /** Bytes received and not consumed yet. */
  let pending: Buffer = EMPTY;
  /** Paused on Backpressure: new bytes wait in `pending` until the retry loop is done. */
  let waiting = false;

  /** Feeds `pending`; true when everything that could go in went in (no backpressure). */
  const feed = (): boolean => {
    const r = d.dispatchStream(pending, player);
    stats.consumed += r.consumed;
    pending = pending.subarray(r.consumed);
    if (r.malformed) {
      stats.malformed++;
      socket.destroy();
      return true;
    }
    return !r.backpressure;
  };

  const waitAndRetry = async (): Promise<void> => {
    waiting = true;
    stats.pauses++;
    socket.pause();
    try {
      // Bytes already received are dispatched even if the client has gone meanwhile (it
      // may well have sent its last frames and closed): only `malformed` drops them.
      do await d.whenWritable();
      while (!feed());
    } finally {
      waiting = false;
    }
    if (!socket.destroyed) socket.resume();
  };

  socket.on('data', (chunk: Buffer) => {
    // The kept bytes come first; a copy is made only when there are any.
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    if (player === undefined) {
      if (pending.length < HELLO_BYTES) return;
      player = pending.readUInt32LE(0);
      pending = pending.subarray(HELLO_BYTES);
      if (admit !== undefined && !admit(player)) {
        socket.destroy();
        return;
      }
    }
    if (waiting) return;
    if (!feed()) void waitAndRetry();
  });
  // A reset connection: 'close' follows; nothing else to do.
  socket.on('error', () => undefined);
}

/** `node dist/examples/tcp-ingress.js [port]`: room 1, players 1..100, moves counted as they arrive. */
async function main(): Promise<void> {
  let moves = 0;
  const d = new Dispatcher({
    onBatch: (batch: MoveBatch) => {
      moves += batch.count;
    },
  });
  d.openRoom(1, { delivery: 'push' });
  for (let p = 1; p <= 100; p++) d.join(1, p);
  const ingress = await startTcpIngress(d, { port: Number(process.argv[2] ?? 7070), admit: (p) => p >= 1 && p <= 100 });
  console.log(`listening on 127.0.0.1:${ingress.port}: send a 4-byte little-endian player id (1..100), then frames for room 1`);
  console.log(`for example, one move: ${Buffer.from(encodeMove({ room: 1, player: 1, seq: 1, payload: new Uint8Array([1, 2, 3]) })).toString('hex')}`);
  const timer = setInterval(() => console.log(`${ingress.stats.connections} connections served, ${moves} moves, ${ingress.stats.pauses} pauses`), 5000);
  process.once('SIGINT', () => {
    clearInterval(timer);
    void ingress.close().then(() => d.close());
  });
}

if (require.main === module) void main();
