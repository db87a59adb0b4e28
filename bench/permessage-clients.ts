/**
 * The client side of bench/permessage.ts, in a process of its own: `conns` loopback
 * connections writing `rate` frames a second in total (one `write` per frame, Nagle off),
 * open loop on 1 ms ticks, round-robin over the connections; player `c` of connection `c`
 * in room `c % rooms`. Frames are encoded before the clock starts.
 */
import { connect, type Socket } from 'node:net';
import { encodeMove } from '../index';

interface ClientSpec {
  port: number;
  rate: number;
  conns: number;
  seconds: number;
  rooms: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as ClientSpec;
const perConn = Math.ceil((spec.rate * spec.seconds) / spec.conns);
const payload = new Uint8Array(64).fill(3);
const clients: { socket: Socket; frames: Buffer[]; next: number }[] = [];
let open = 0;
for (let c = 0; c < spec.conns; c++) {
  const socket = connect(spec.port, '127.0.0.1', () => {
    socket.setNoDelay(true);
    if (++open === spec.conns) start();
  });
  socket.on('error', () => undefined);
  const room = c % spec.rooms;
  const player = Math.floor(c / spec.rooms);
  const frames = Array.from({ length: perConn }, (_, i) => Buffer.from(encodeMove({ room, player, seq: i + 1, payload })));
  clients.push({ socket, frames, next: 0 });
}

function start(): void {
  process.send?.({ type: 'started' });
  const total = perConn * spec.conns;
  const t0 = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * spec.rate));
    while (sent < due) {
      const k = clients[sent % spec.conns]!;
      k.socket.write(k.frames[k.next++]!);
      sent++;
    }
    if (sent >= total) {
      clearInterval(timer);
      // Let the last writes arrive before the server reads its clocks.
      setTimeout(() => process.send?.({ type: 'done', sent }), 100);
    }
  }, 1);
}
