/**
 * Native ingress under hostile network input, with raw `node:net` sockets and a WebSocket
 * frame builder written here (so the client can misbehave in ways no WebSocket library
 * allows). Every case runs next to a good client of the same room that keeps sending
 * moves: each case checks that the misbehaving connection gets a clear answer (HTTP status,
 * close code, `onDisconnect` reason), that the good client's moves all arrive (nothing
 * accepted is lost), and that the server goes on. Bounded in time and count; every socket
 * is closed after each case.
 */
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { issueTicket } from '../index';
import type { ConnectionInfo, DisconnectInfo, Dispatcher, IngressServer, ListenOptions } from '../index';
import { concat, frame, skipReason, until, useDispatchers } from './helpers';

const KEY = 'a ticket key of thirty-two bytes';
const skip = skipReason('native');
const ROOM = 1;
const GOOD = 1;
const BAD = 2;

// ---------------------------------------------------------------------------------------
// Client side of RFC 6455, by hand
// ---------------------------------------------------------------------------------------

const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

interface FrameOptions {
  fin?: boolean;
  /** Announce this length instead of the payload's (a lie). */
  announce?: bigint;
  mask?: boolean;
}

/** A client frame: FIN, opcode, masked payload (key derived from the payload length). */
function wsFrame(opcode: number, payload: Uint8Array = new Uint8Array(0), options: FrameOptions = {}): Buffer {
  const { fin = true, mask = true } = options;
  const len = options.announce ?? BigInt(payload.length);
  const head: number[] = [(fin ? 0x80 : 0) | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126n) head.push(m | Number(len));
  else if (len <= 0xffffn) head.push(m | 126, Number(len >> 8n) & 0xff, Number(len) & 0xff);
  else {
    head.push(m | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((len >> shift) & 0xffn));
  }
  const key = [0x37, 0xfa, 0x21, (payload.length * 13) & 0xff];
  const body = Buffer.from(payload);
  if (mask) {
    head.push(...key);
    for (let i = 0; i < body.length; i++) body[i] = body[i]! ^ key[i % 4]!;
  }
  return Buffer.concat([Buffer.from(head), body]);
}

interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** A raw connection: everything it received, parsed as the HTTP response then frames. */
class RawClient {
  readonly socket: Socket;
  private buf = Buffer.alloc(0);
  /** The HTTP response head, once complete. */
  response: string | null = null;
  readonly frames: ServerFrame[] = [];
  ended = false;
  error: Error | null = null;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (b: Buffer) => this.take(b));
    socket.on('close', () => (this.ended = true));
    socket.on('error', (e) => (this.error = e));
  }

  get status(): number {
    return this.response === null ? 0 : Number(this.response.split(' ')[1]);
  }

  /** Everything received as text (for refusals and TCP answers). */
  text = '';

  private take(b: Buffer): void {
    this.text += b.toString('latin1');
    this.buf = Buffer.concat([this.buf, b]);
    if (this.response === null) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.response = this.buf.subarray(0, end).toString('latin1');
      const contentLength = /content-length: (\d+)/i.exec(this.response);
      this.buf = this.buf.subarray(end + 4 + (contentLength ? Number(contentLength[1]) : 0));
    }
    if (this.status !== 101) return;
    for (;;) {
      if (this.buf.length < 2) return;
      const b1 = this.buf[1]! & 0x7f;
      let at = 2;
      let len = b1;
      if (b1 === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (b1 === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + len) return;
      this.frames.push({ opcode: this.buf[0]! & 0x0f, payload: Buffer.from(this.buf.subarray(at, at + len)) });
      this.buf = this.buf.subarray(at + len);
    }
  }

  /** The code of the server's close frame, once one arrived. */
  get closeCode(): number | null {
    const c = this.frames.find((f) => f.opcode === OP.close);
    return c === undefined ? null : c.payload.length >= 2 ? c.payload.readUInt16BE(0) : 1005;
  }

  write(b: Uint8Array | string): boolean {
    return this.socket.write(b);
  }
}

const servers: IngressServer[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close();
});

function dial(port: number, localAddress?: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', ...(localAddress === undefined ? {} : { localAddress }) }, () => resolve(new RawClient(s)));
    sockets.push(s);
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

function upgradeRequest(target: string): string {
  return (
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

/**
 * `n` clients that each start an upgrade request and never end it: the server has unread
 * input when it refuses them (a reset there could destroy the 503 before it is read).
 */
function unfinishedRequests(port: number, n: number): Promise<RawClient[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const c = await dial(port);
      c.write('GET /moves HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      return c;
    }),
  );
}

/** A raw WebSocket client past its upgrade (or refused: see `status`). */
async function openWs(port: number, ticket: string, localAddress?: string): Promise<RawClient> {
  const c = await dial(port, localAddress);
  c.write(upgradeRequest(`/moves?ticket=${ticket}`));
  await until(() => c.response !== null || c.ended, 3000, 'the upgrade response');
  return c;
}

// ---------------------------------------------------------------------------------------
// The room, the good client, the server
// ---------------------------------------------------------------------------------------

interface Setup {
  d: Dispatcher;
  server: IngressServer;
  wsPort: number;
  tcpPort: number;
  opened: ConnectionInfo[];
  closed: DisconnectInfo[];
  /** Seqs drained from the room, by player. */
  seqs: Map<number, number[]>;
  /** Drains the room into `seqs`. */
  collect(): void;
  /** Drains the room into `seqs` until `player` has `n` moves there (or `ms` pass). */
  collected(player: number, n: number, ms: number, what: string): Promise<void>;
  ticket(player: number, room?: number, ttlMs?: number): string;
}

async function setup(make: () => Dispatcher, extra: Partial<ListenOptions> = {}): Promise<Setup> {
  const d = make();
  d.openRoom(ROOM);
  d.join(ROOM, GOOD);
  d.join(ROOM, BAD);
  d.openRoom(2);
  d.join(2, BAD);
  const opened: ConnectionInfo[] = [];
  const closed: DisconnectInfo[] = [];
  const server = await d.listen({
    ws: { port: 0 },
    tcp: { port: 0 },
    ticketKey: KEY,
    onConnection: (c) => opened.push(c),
    onDisconnect: (c) => closed.push(c),
    ...extra,
  });
  servers.push(server);
  const seqs = new Map<number, number[]>();
  const collect = (): void => {
    for (const room of [ROOM, 2]) {
      for (const m of d.drain(room)) {
        const list = seqs.get(m.player) ?? [];
        list.push(m.seq);
        seqs.set(m.player, list);
      }
    }
  };
  return {
    d,
    server,
    wsPort: server.address('ws')!.port,
    tcpPort: server.address('tcp')!.port,
    opened,
    closed,
    seqs,
    collect,
    async collected(player, n, ms, what) {
      await until(
        () => {
          collect();
          return (seqs.get(player)?.length ?? 0) >= n;
        },
        ms,
        what,
      );
    },
    ticket: (player, room = ROOM, ttlMs) => issueTicket(KEY, { room, player, ...(ttlMs === undefined ? {} : { ttlMs }) }),
  };
}

/** The good client: sends moves 1..n of player GOOD, one binary message each, while `during` runs. */
async function goodClientAround(s: Setup, during: () => Promise<void>, n = 40): Promise<RawClient> {
  const good = await openWs(s.wsPort, s.ticket(GOOD));
  expect(good.status).toBe(101);
  let seq = 0;
  let running = true;
  const sender = (async () => {
    while (running || seq < n) {
      if (seq < n) good.write(wsFrame(OP.binary, frame({ room: ROOM, player: GOOD, seq: ++seq, payload: 16 })));
      await sleep(running ? 5 : 0);
      if (!running && seq >= n) break;
    }
  })();
  try {
    await during();
  } finally {
    running = false;
    await sender;
  }
  await s.collected(GOOD, n, 5000, `the good client's ${n} moves`);
  expect(s.seqs.get(GOOD)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect(good.ended).toBe(false);
  expect(good.closeCode).toBeNull();
  return good;
}

async function disconnectOf(s: Setup, player: number): Promise<DisconnectInfo> {
  await until(() => s.closed.some((e) => e.player === player), 3000, `onDisconnect of player ${player}`);
  return s.closed.find((e) => e.player === player)!;
}

describe.skipIf(skip !== null)('native ingress under hostile input', () => {
  const make = useDispatchers('native');

  it('tickets: none, garbage, expired, reused, forged are refused with 401; one for another room answers NotMember', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const forged = issueTicket('another key of thirty-two bytes!', { room: ROOM, player: BAD });
      const expired = s.ticket(BAD, ROOM, 1);
      await sleep(20);
      const reused = s.ticket(BAD);
      const first = await openWs(s.wsPort, reused);
      expect(first.status).toBe(101);
      const refusals: Record<string, string> = { none: '', garbage: 'not.a.ticket', expired, reused, forged };
      for (const [what, t] of Object.entries(refusals)) {
        const c = await openWs(s.wsPort, t);
        expect(c.status, what).toBe(401);
        await until(() => c.ended, 2000, `${what}: the refused socket closed`);
      }
      // A ticket for room 2: its frames for room 1 are not its room's.
      const other = await openWs(s.wsPort, s.ticket(BAD, 2));
      expect(other.status).toBe(101);
      const before = s.d.stats().verdicts.NotMember;
      for (let seq = 1; seq <= 3; seq++) other.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq })));
      await until(() => s.d.stats().verdicts.NotMember === before + 3, 2000, 'three NotMember');
      expect(other.ended).toBe(false);
    });
    s.collect();
    expect(s.seqs.get(BAD)).toBeUndefined();
  });

  it('garbage instead of an HTTP request gets 400; garbage after the upgrade gets close 1002', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const g = await dial(s.wsPort);
      g.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, ...randomBytes(64)]));
      await until(() => g.ended, 2000, 'garbage request closed');
      expect(g.status).toBe(400);
      const text = await dial(s.wsPort);
      text.write('hello there\r\n\r\n');
      await until(() => text.ended, 2000, 'text request closed');
      expect(text.status).toBe(400);

      const bad = await openWs(s.wsPort, s.ticket(BAD));
      expect(bad.status).toBe(101);
      bad.write(Buffer.from('GARBAGE GARBAGE GARBAGE GARBAGE'));
      await until(() => bad.closeCode !== null, 2000, 'close frame');
      expect(bad.closeCode).toBe(1002);
      expect((await disconnectOf(s, BAD)).reason).toBe('protocol');
      await until(() => bad.ended, 2000, 'socket closed');
    });
  });

  it('WebSocket frames written 1 byte at a time all arrive', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      const bytes = concat([
        wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1, payload: 3 })),
        // A fragmented message of two moves, a ping between the fragments.
        wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 2, payload: 200 }), { fin: false }),
        wsFrame(OP.ping, Buffer.from('split')),
        wsFrame(OP.continuation, frame({ room: ROOM, player: BAD, seq: 3, payload: 0 })),
        wsFrame(OP.binary, concat([4, 5].map((seq) => frame({ room: ROOM, player: BAD, seq, payload: 40 })))),
      ]);
      for (let i = 0; i < bytes.length; i++) {
        c.write(bytes.subarray(i, i + 1));
        if (i % 16 === 0) await sleep(1);
      }
      await s.collected(BAD, 5, 5000, 'five moves');
      expect(s.seqs.get(BAD)).toEqual([1, 2, 3, 4, 5]);
      await until(() => c.frames.some((f) => f.opcode === OP.pong), 2000, 'the pong');
      expect(c.frames.find((f) => f.opcode === OP.pong)!.payload.toString()).toBe('split');
    });
  });

  it('slowloris: a request trickled slower than handshakeTimeoutMs is dropped with 408', async () => {
    const s = await setup(make, { handshakeTimeoutMs: 300 });
    await goodClientAround(s, async () => {
      const slow = await dial(s.wsPort);
      const request = upgradeRequest(`/moves?ticket=${s.ticket(BAD)}`);
      const t0 = Date.now();
      for (let i = 0; i < request.length && !slow.ended; i++) {
        slow.write(request[i]!);
        await sleep(25);
      }
      expect(slow.ended).toBe(true);
      expect(slow.status).toBe(408);
      expect(slow.text.endsWith('\r\n\r\ntimeout\n')).toBe(true);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(s.opened.some((e) => e.player === BAD)).toBe(false);
    });
  });

  it('a handshake in flight when the server closes is refused at once (503 / error shutdown), never let in, and does not hold close() up', async () => {
    for (const how of ['server', 'dispatcher'] as const) {
      const s = await setup(make, { handshakeTimeoutMs: 5000 });
      const ws = await dial(s.wsPort);
      const request = upgradeRequest(`/moves?ticket=${s.ticket(BAD)}`);
      ws.write(request.slice(0, 40));
      const tcp = await dial(s.tcpPort);
      const line = `ticket ${s.ticket(BAD, 2)}\n`;
      tcp.write(line.slice(0, 20));
      await sleep(50);
      const t0 = Date.now();
      const closing = how === 'server' ? s.server.close() : s.d.close();
      // The rest of each handshake, and a frame after it, while the close runs: too late.
      // The refusal is still read whole (the close waits for it to be written and
      // lingered; the runtime stopping under it would reset the socket).
      await sleep(5);
      ws.write(request.slice(40));
      ws.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1 })));
      tcp.write(Buffer.concat([Buffer.from(line.slice(20)), frame({ room: 2, player: BAD, seq: 1 })]));
      await closing;
      // It used to wait out its 2 s cap for the half-done handshakes, then let them in.
      expect(Date.now() - t0).toBeLessThan(1000);
      await until(() => ws.ended && tcp.ended, 3000, 'both refused and closed');
      expect(ws.status).toBe(503);
      expect(ws.text.endsWith('\r\n\r\nshutdown\n')).toBe(true);
      expect(tcp.text).toBe('error shutdown\n');
      await sleep(50);
      expect(s.opened).toEqual([]);
      expect(s.closed).toEqual([]);
      if (how === 'server') {
        s.collect();
        expect(s.seqs.size).toBe(0);
        expect(s.d.stats().accepted).toBe(0);
      }
    }
  });

  it.each([
    ['a message held back whole, then a frame cut across the next two', 30],
    ['the message that runs out of budget ending with a cut frame', 26],
  ])('a message holds whole frames while its room is out of budget too (%s): malformed', async (_, before) => {
    const s = await setup(() => make({ roomBytes: 4096 }));
    const c = await openWs(s.wsPort, s.ticket(BAD));
    expect(c.status).toBe(101);
    // One write: messages of one 156-byte frame (26 fit the room's budget, the rest are
    // held back: nothing is drained yet), then a frame cut across two messages — its first
    // part alone, or at the end of the message that runs out of budget, followed by a whole
    // frame (held back unchecked, the two would have been joined on the retry).
    const cut = frame({ room: ROOM, player: BAD, seq: 31, payload: 100 });
    const whole = (seq: number): Uint8Array => frame({ room: ROOM, player: BAD, seq, payload: 100 });
    const messages =
      before === 30
        ? [...Array.from({ length: 30 }, (_, i) => whole(i + 1)), cut.subarray(0, 70), Buffer.concat([cut.subarray(70), whole(32)])]
        : [...Array.from({ length: 26 }, (_, i) => whole(i + 1)), Buffer.concat([whole(27), cut.subarray(0, 70)]), whole(28)];
    c.write(Buffer.concat(messages.map((m) => wsFrame(OP.binary, m))));
    // Held-back messages used to be joined up when offered again: the cut frame was accepted.
    await until(() => c.closeCode !== null, 3000, 'the close frame');
    expect(c.closeCode).toBe(1007);
    await until(() => s.closed.some((e) => e.player === BAD), 2000, 'onDisconnect');
    expect(s.closed.find((e) => e.player === BAD)?.reason).toBe('malformed');
    // What was accepted before the stall is delivered; nothing after it was taken in.
    await s.collected(BAD, 26, 3000, '26 moves');
    await sleep(100);
    s.collect();
    expect(s.seqs.get(BAD)).toEqual(Array.from({ length: 26 }, (_, i) => i + 1));
    const st = s.d.stats();
    expect(st.accepted).toBe(26);
    // The stall's Backpressure verdicts, by cause: the room's budget (ingress has no other).
    expect(st.verdicts.Backpressure).toBeGreaterThan(0);
    expect(st.backpressure).toEqual({ queue: 0, arena: 0, room: st.verdicts.Backpressure });
  });

  it('a frame header announcing 2^40 bytes is closed with 1009 at once, without memory growth', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const rss = process.memoryUsage().rss;
      const c = await openWs(s.wsPort, s.ticket(BAD));
      c.write(wsFrame(OP.binary, randomBytes(100), { announce: 1n << 40n }));
      await until(() => c.closeCode !== null, 1000, 'close frame');
      expect(c.closeCode).toBe(1009);
      expect((await disconnectOf(s, BAD)).reason).toBe('too_big');
      expect(process.memoryUsage().rss - rss).toBeLessThan(32 << 20);
    });
  });

  it('a fragmented message over maxMessageBytes is closed with 1009', async () => {
    const s = await setup(make, { maxMessageBytes: 4096 });
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      c.write(wsFrame(OP.binary, randomBytes(1500), { fin: false }));
      c.write(wsFrame(OP.continuation, randomBytes(1500), { fin: false }));
      await sleep(50);
      expect(c.closeCode).toBeNull();
      c.write(wsFrame(OP.continuation, randomBytes(1500), { fin: false }));
      await until(() => c.closeCode !== null, 1000, 'close frame');
      expect(c.closeCode).toBe(1009);
      expect((await disconnectOf(s, BAD)).reason).toBe('too_big');
    });
  });

  it('a fragmented binary message with a ping and a pong between fragments is delivered, and the ping answered', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      const message = concat([1, 2, 3].map((seq) => frame({ room: ROOM, player: BAD, seq, payload: 30 })));
      c.write(wsFrame(OP.binary, message.subarray(0, 50), { fin: false }));
      c.write(wsFrame(OP.ping, Buffer.from('are you there')));
      c.write(wsFrame(OP.continuation, message.subarray(50, 120), { fin: false }));
      c.write(wsFrame(OP.pong, Buffer.from('unsolicited')));
      c.write(wsFrame(OP.continuation, message.subarray(120)));
      await s.collected(BAD, 3, 3000, 'three moves');
      expect(s.seqs.get(BAD)).toEqual([1, 2, 3]);
      await until(() => c.frames.some((f) => f.opcode === OP.pong), 2000, 'the pong');
      expect(c.frames.map((f) => [f.opcode, f.payload.toString()])).toEqual([[OP.pong, 'are you there']]);
    });
  });

  it('a ping flood is answered (the latest ping last) and the server stays healthy', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      const pings = 5000;
      const batch: Buffer[] = [];
      for (let i = 1; i <= pings; i++) batch.push(wsFrame(OP.ping, Buffer.from(`p${i}`)));
      c.write(Buffer.concat(batch));
      await until(() => c.frames.at(-1)?.payload.toString() === `p${pings}`, 5000, 'the last pong');
      expect(c.frames.every((f) => f.opcode === OP.pong)).toBe(true);
      expect(c.frames.length).toBeLessThanOrEqual(pings);
      expect(c.ended).toBe(false);
      c.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1 })));
      await until(
        () => {
          s.collect();
          return s.seqs.get(BAD)?.length === 1;
        },
        2000,
        'its move after the flood',
      );
    });
  });

  it('a client that floods pings and never reads does not grow the server memory', async () => {
    const s = await setup(make, { maxBackpressureBytes: 64 * 1024 });
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      c.socket.pause();
      // 1 MiB of 125-byte pings (8,000 of them), written 40 times: 320,000 pings, 40 MiB
      // of pongs were each kept.
      const ping = wsFrame(OP.ping, Buffer.alloc(125, 0x5a));
      const chunk = Buffer.concat(Array.from({ length: 8000 }, () => ping));
      const rss = process.memoryUsage().rss;
      for (let i = 0; i < 40; i++) {
        if (!c.write(chunk)) await new Promise((r) => c.socket.once('drain', r));
      }
      // Everything written has been read by the server once it reads a move after it.
      c.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1 })));
      await until(
        () => {
          s.collect();
          return s.seqs.get(BAD)?.length === 1;
        },
        10_000,
        'its move after the flood',
      );
      const grown = process.memoryUsage().rss - rss;
      // Under AddressSanitizer (scripts/sanitize.sh) freed memory sits in ASan's quarantine
      // (256 MiB by default), so RSS says nothing there; ASan still checks every access.
      if (process.env.ASAN_OPTIONS === undefined) expect(grown, `RSS grew by ${grown} bytes`).toBeLessThan(16 << 20);
      expect(s.closed.some((e) => e.player === BAD)).toBe(false);
    });
  });

  it('a client that never reads while the server broadcasts gets backpressure, then is dropped', async () => {
    const s = await setup(make, { maxBackpressureBytes: 64 * 1024 });
    const good = await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      c.socket.pause();
      await until(() => s.opened.length === 2, 2000, 'two connections');
      const big = Buffer.alloc(16 * 1024, 7);
      const answers: string[] = [];
      for (let i = 0; i < 4000 && !answers.includes('dropped'); i++) {
        answers.push(s.d.send(ROOM, BAD, big));
        s.d.broadcast(ROOM, Buffer.from(`tick ${i}`), { except: BAD });
        if (i % 16 === 0) await sleep(1);
      }
      expect(answers).toContain('backpressure');
      expect(answers.at(-1)).toBe('dropped');
      expect((await disconnectOf(s, BAD)).reason).toBe('backpressure');
    });
    // The good client read every broadcast, in order.
    const ticks = good.frames.filter((f) => f.opcode === OP.binary).map((f) => f.payload.toString());
    expect(ticks.length).toBeGreaterThan(0);
    expect(ticks).toEqual(ticks.map((_, i) => `tick ${i}`));
  });

  it('an abrupt reset mid-frame is `reset`, and the moves accepted before it are delivered', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const c = await openWs(s.wsPort, s.ticket(BAD));
      for (let seq = 1; seq <= 3; seq++) c.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq, payload: 8 })));
      const half = wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 4, payload: 100 }));
      c.write(half.subarray(0, 60));
      await until(
        () => {
          s.collect();
          return s.seqs.get(BAD)?.length === 3;
        },
        2000,
        'three moves',
      );
      c.socket.resetAndDestroy();
      expect((await disconnectOf(s, BAD)).reason).toBe('reset');
      s.collect();
      expect(s.seqs.get(BAD)).toEqual([1, 2, 3]);
    });
  });

  it('a connection flood beyond maxConnections is refused at once with 503; good clients get in after it', async () => {
    const s = await setup(make, { maxConnections: 50, handshakeTimeoutMs: 10_000 });
    await goodClientAround(s, async () => {
      const t0 = Date.now();
      const flood = await unfinishedRequests(s.wsPort, 200);
      // 49 places were left: the others are answered at once.
      await until(() => flood.filter((c) => c.ended).length >= 151, 3000, '151 refused');
      expect(Date.now() - t0).toBeLessThan(3000);
      const refused = flood.filter((c) => c.ended);
      expect(refused.length).toBe(151);
      expect(refused.every((c) => c.status === 503)).toBe(true);
      // The body says why, as the TCP transport's `error full` does.
      expect(refused.every((c) => c.text.endsWith('\r\n\r\nfull\n'))).toBe(true);
      expect(s.server.connections).toBe(50);
      // A ticketed client now is refused too; once the flood goes away, it gets in.
      const late = await openWs(s.wsPort, s.ticket(BAD));
      expect(late.status).toBe(503);
      for (const c of flood) c.socket.destroy();
      await until(() => s.server.connections === 1, 3000, 'the flood gone');
      const after = await openWs(s.wsPort, s.ticket(BAD));
      expect(after.status).toBe(101);
      after.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1 })));
      await until(
        () => {
          s.collect();
          return s.seqs.get(BAD)?.length === 1;
        },
        2000,
        'its move',
      );
    });
  });

  it('sockets one address never completes are bounded by maxHandshakesPerAddress (503 busy, error busy) before they take slots; other addresses and admitted clients are not', async () => {
    const s = await setup(make, { maxConnections: 100, maxHandshakesPerAddress: 20, handshakeTimeoutMs: 10_000 });
    await goodClientAround(s, async () => {
      // 60 requests from 127.0.0.1 that never end (the good client there is admitted: not counted).
      const flood = await unfinishedRequests(s.wsPort, 60);
      await until(() => flood.filter((c) => c.ended).length >= 40, 3000, '40 refused');
      const refused = flood.filter((c) => c.ended);
      expect(refused.length).toBe(40);
      expect(refused.every((c) => c.status === 503 && c.text.endsWith('\r\n\r\nbusy\n'))).toBe(true);
      // The refused took no slot: the good client and the 20 in flight.
      expect(s.server.connections).toBe(21);
      // The same address is busy on every transport, a ticket or not.
      const same = await openWs(s.wsPort, s.ticket(BAD));
      expect(same.status).toBe(503);
      const tcp = await dial(s.tcpPort);
      await until(() => tcp.ended, 2000, 'the TCP refusal');
      expect(tcp.text).toBe('error busy\n');
      // Another address gets in meanwhile.
      const other = await openWs(s.wsPort, s.ticket(BAD, 2), '127.0.0.2');
      expect(other.status).toBe(101);
      // The flood gone, its address gets in again.
      for (const c of flood) c.socket.destroy();
      await until(() => s.server.connections === 2, 3000, 'the flood gone');
      const after = await openWs(s.wsPort, s.ticket(BAD));
      expect(after.status).toBe(101);
      after.write(wsFrame(OP.binary, frame({ room: ROOM, player: BAD, seq: 1 })));
      await s.collected(BAD, 1, 2000, 'its move');
    });
  });

  it('TCP: a bad ticket line, a ticket line over 256 bytes, and frames 1 byte at a time', async () => {
    const s = await setup(make);
    await goodClientAround(s, async () => {
      const bad = await dial(s.tcpPort);
      bad.write('ticket definitely-not-a-ticket\n');
      await until(() => bad.ended, 2000, 'bad ticket closed');
      expect(bad.text).toBe('error ticket_malformed\n');
      const long = await dial(s.tcpPort);
      long.write(`ticket ${'x'.repeat(300)}`);
      await until(() => long.ended, 2000, 'long line closed');
      expect(long.text).toBe('error ticket_malformed\n');

      const c = await dial(s.tcpPort);
      const bytes = Buffer.concat([
        Buffer.from(`ticket ${s.ticket(BAD)}\n`),
        ...[1, 2, 3].map((seq) => frame({ room: ROOM, player: BAD, seq, payload: 20 })),
      ]);
      for (let i = 0; i < bytes.length; i++) {
        c.write(bytes.subarray(i, i + 1));
        if (i % 16 === 0) await sleep(1);
      }
      await s.collected(BAD, 3, 5000, 'three moves');
      expect(s.seqs.get(BAD)).toEqual([1, 2, 3]);
      expect(s.opened.find((e) => e.player === BAD)?.transport).toBe('tcp');
    });
  });
});
