/**
 * The gRPC transport of native ingress end to end, with a client nobody here wrote:
 * `@grpc/grpc-js`, the service and messages loaded by `@grpc/proto-loader` from the SHIPPED
 * `proto/ingress.proto` (which keeps the hand-derived Rust messages honest). Tickets in the
 * `authorization` metadata; moves arrive through drain like dispatched ones; every
 * MoveFrames is acked with its counts; send and broadcast come back as MoveAcks messages;
 * the call ends with a status named after the close reason.
 */
import * as http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ErrorCode, issueTicket } from '../index';
import type { ConnectionInfo, DisconnectInfo, Dispatcher, IngressServer, ListenOptions } from '../index';
import { concat, drainAllOf, frame, skipReason, until, useDispatchers } from './helpers';

const KEY = 'a ticket key of thirty-two bytes';
const skip = skipReason('native');

/** `move_dispatcher.v1.MoveFrames`, as proto-loader takes it. */
interface MoveFrames {
  frames: Uint8Array;
}
/** `move_dispatcher.v1.MoveAcks`, as proto-loader gives it (`defaults: false`: zeros are absent). */
interface MoveAcks {
  accepted?: number;
  refused?: number;
  message?: Buffer;
}
type MovesCall = grpc.ClientDuplexStream<MoveFrames, MoveAcks>;
interface IngressClient extends grpc.Client {
  Moves(metadata: grpc.Metadata): MovesCall;
}

const definition = protoLoader.loadSync(join(__dirname, '..', 'proto', 'ingress.proto'), { keepCase: true, longs: Number, defaults: false, oneofs: true });
const loaded = grpc.loadPackageDefinition(definition) as unknown as { move_dispatcher: { v1: { Ingress: grpc.ServiceClientConstructor } } };
const Ingress = loaded.move_dispatcher.v1.Ingress;

interface Call {
  stream: MovesCall;
  acks: { accepted: number; refused: number }[];
  messages: string[];
  /** The status the call ended with. */
  ended: Promise<{ code: grpc.status; details: string }>;
}

const clients: grpc.Client[] = [];
const rawSockets: Socket[] = [];
const servers: IngressServer[] = [];
const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of rawSockets.splice(0)) s.destroy();
  for (const s of sockets.splice(0)) s.terminate();
  for (const s of servers.splice(0)) await s.close();
});

function client(port: number): IngressClient {
  const c = new Ingress(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as IngressClient;
  clients.push(c);
  return c;
}

function call(c: IngressClient, ticket?: string): Call {
  const md = new grpc.Metadata();
  if (ticket !== undefined) md.set('authorization', `Bearer ${ticket}`);
  const stream = c.Moves(md);
  const acks: Call['acks'] = [];
  const messages: string[] = [];
  stream.on('data', (m: MoveAcks) => {
    if (m.message !== undefined && m.message !== null) messages.push(m.message.toString());
    else acks.push({ accepted: m.accepted ?? 0, refused: m.refused ?? 0 });
  });
  // A non-OK status is also an 'error'; the status event carries it for every outcome.
  stream.on('error', () => undefined);
  const ended = new Promise<{ code: grpc.status; details: string }>((resolve) => stream.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details })));
  return { stream, acks, messages, ended };
}

function send(c: Call, frames: Uint8Array): void {
  c.stream.write({ frames });
}

interface Events {
  opened: ConnectionInfo[];
  closed: DisconnectInfo[];
}

async function start(d: Dispatcher, extra: Partial<ListenOptions> = {}): Promise<{ server: IngressServer; events: Events; port: number }> {
  const events: Events = { opened: [], closed: [] };
  const server = await d.listen({
    grpc: { port: 0 },
    ticketKey: KEY,
    onConnection: (c) => events.opened.push(c),
    onDisconnect: (c) => events.closed.push(c),
    ...extra,
  });
  servers.push(server);
  return { server, events, port: server.address('grpc')!.port };
}

describe.skipIf(skip !== null)('native ingress over gRPC', () => {
  const make = useDispatchers('native');

  it('binds alongside or instead of ws/tcp; address("grpc") is known when listen resolves', async () => {
    const d = make();
    const { server, port } = await start(d);
    expect(server.address('grpc')).toEqual({ host: '127.0.0.1', port });
    expect(port).toBeGreaterThan(0);
    expect(server.address('ws')).toBeNull();
    expect(server.address('tcp')).toBeNull();
    await server.close();
    const both = await d.listen({ ws: { port: 0 }, grpc: { port: 0, host: '127.0.0.1' }, ticketKey: KEY });
    servers.push(both);
    expect(both.address('ws')).not.toBeNull();
    expect(both.address('grpc')!.port).toBeGreaterThan(0);
    await expect(d.listen({ grpc: { port: 70_000 }, ticketKey: KEY })).rejects.toMatchObject({ code: ErrorCode.InvalidOption, field: 'grpc.port' });
  });

  it('takes MoveFrames of one or many frames from a ticketed call, in order, with its player as sender; acks each', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { port, events } = await start(d);
    const c = call(client(port), issueTicket(KEY, { room: 1, player: 7 }));
    for (let seq = 1; seq <= 3; seq++) send(c, frame({ room: 1, player: 7, seq, payload: 64 }));
    send(c, concat([4, 5, 6, 7, 8].map((seq) => frame({ room: 1, player: 7, seq, payload: 64 }))));
    const got = await drainAllOf(d, 1, 8);
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((seq) => ({ player: 7, seq })));
    expect(d.stats().verdicts.Accepted).toBe(8);
    await until(() => c.acks.length === 4, 2000, 'four acks');
    expect(c.acks).toEqual([
      { accepted: 1, refused: 0 },
      { accepted: 1, refused: 0 },
      { accepted: 1, refused: 0 },
      { accepted: 5, refused: 0 },
    ]);
    expect(events.opened).toEqual([{ connectionId: expect.any(Number), room: 1, player: 7, transport: 'grpc', remoteAddress: '127.0.0.1', remotePort: expect.any(Number) }]);
    c.stream.end();
    expect((await c.ended).code).toBe(grpc.status.OK);
    await until(() => events.closed.length === 1, 2000, 'onDisconnect');
    expect(events.closed[0]).toEqual({ connectionId: events.opened[0]!.connectionId, room: 1, player: 7, transport: 'grpc', remoteAddress: '127.0.0.1', remotePort: expect.any(Number), reason: 'closed' });
  });

  it('send and broadcast reach the call as MoveAcks messages; broadcast skips `except`', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2, 3]) d.join(1, p);
    const { port, events } = await start(d);
    const c = client(port);
    const calls = [1, 2, 3].map((p) => call(c, issueTicket(KEY, { room: 1, player: p })));
    await until(() => events.opened.length === 3, 2000, 'three calls');
    expect(d.send(1, 2, Buffer.from('to two'))).toBe('sent');
    expect(d.broadcast(1, Buffer.from('to all but one'), { except: 1 })).toBe(2);
    expect(d.send(1, 2, new Uint8Array(0))).toBe('sent');
    await until(() => calls[1]!.messages.length === 3 && calls[2]!.messages.length === 1, 2000, 'messages');
    expect(calls.map((x) => x.messages)).toEqual([[], ['to two', 'to all but one', ''], ['to all but one']]);
    expect(calls.map((x) => x.acks)).toEqual([[], [], []]);
  });

  it('refuses missing, forged, reused and expired tickets with UNAUTHENTICATED, and calls past maxConnections with RESOURCE_EXHAUSTED', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    d.join(1, 8);
    const { port, server, events } = await start(d, { maxConnections: 1 });
    const c = client(port);
    const refused = async (ticket?: string) => {
      const x = call(c, ticket);
      send(x, frame({ room: 1, player: 7, seq: 1 }));
      return x.ended;
    };
    expect(await refused()).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'ticket_malformed' });
    expect(await refused('not-a-ticket')).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'ticket_malformed' });
    expect(await refused(issueTicket('another key of thirty-two bytes!', { room: 1, player: 7 }))).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'ticket_forged' });
    const short = issueTicket(KEY, { room: 1, player: 7, ttlMs: 1 });
    await sleep(20);
    expect(await refused(short)).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'ticket_expired' });
    const t = issueTicket(KEY, { room: 1, player: 7 });
    const good = call(c, t);
    await until(() => events.opened.length === 1, 2000, 'the good call');
    // Full: refused before its ticket is looked at (the ticket stays unused).
    const other = issueTicket(KEY, { room: 1, player: 8 });
    expect(await refused(other)).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'full' });
    good.stream.end();
    await good.ended;
    await until(() => server.connections === 0, 2000, 'the good call closed');
    expect(await refused(t)).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'ticket_reused' });
    const later = call(c, other);
    send(later, frame({ room: 1, player: 8, seq: 1 }));
    expect(await drainAllOf(d, 1, 1)).toEqual([{ player: 8, seq: 1 }]);
    // The frames of the refused calls were never read.
    expect(d.stats().verdicts.Accepted).toBe(1);
  });

  it('refuses frames for another player (WrongSender) in the acks, and ends the call after maxRefusals', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    d.join(1, 8);
    const { port, events } = await start(d, { maxRefusals: 4 });
    const c = call(client(port), issueTicket(KEY, { room: 1, player: 7 }));
    send(c, concat([frame({ room: 1, player: 7, seq: 1 }), frame({ room: 1, player: 8, seq: 1 })]));
    for (let seq = 2; seq <= 5; seq++) send(c, frame({ room: 1, player: 8, seq }));
    expect(await c.ended).toEqual({ code: grpc.status.PERMISSION_DENIED, details: 'refused' });
    // Refusals in a row: 1, 2, 3, 4 acked; the 5th ends the call (answered by the status only).
    expect(c.acks).toEqual([
      { accepted: 1, refused: 1 },
      { accepted: 0, refused: 1 },
      { accepted: 0, refused: 1 },
      { accepted: 0, refused: 1 },
    ]);
    expect(d.stats().verdicts.WrongSender).toBe(5);
    await until(() => events.closed.length === 1, 2000, 'onDisconnect');
    expect(events.closed[0]).toEqual({ connectionId: expect.any(Number), room: 1, player: 7, transport: 'grpc', remoteAddress: '127.0.0.1', remotePort: expect.any(Number), reason: 'refused' });
    expect(await drainAllOf(d, 1, 1)).toEqual([{ player: 7, seq: 1 }]);
  });

  it('ends a call whose MoveFrames holds a partial frame with INVALID_ARGUMENT', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { port, events } = await start(d);
    const c = call(client(port), issueTicket(KEY, { room: 1, player: 7 }));
    send(c, frame({ room: 1, player: 7, seq: 1 }).subarray(0, 40));
    expect(await c.ended).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: 'malformed' });
    await until(() => events.closed.length === 1, 2000, 'onDisconnect');
    expect(events.closed[0]!.reason).toBe('malformed');
  });

  it('a gRPC message prefix that is not one (compressed flag without grpc-encoding, flag 0x80), or a message cut short by the end of the call, is malformed', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2, 3]) d.join(1, p);
    const { port, events } = await start(d);
    const one = frame({ room: 1, player: 1, seq: 1 });
    // The gRPC length prefix: flag, then the length (big-endian) of the protobuf that follows.
    const prefix = (flag: number, length: number): Buffer => {
      const b = Buffer.alloc(5);
      b[0] = flag;
      b.writeUInt32BE(length, 1);
      return b;
    };
    const bodies = [
      prefix(1, 0),
      prefix(0x80, 0),
      Buffer.concat([prefix(0, 200), Buffer.from(one.subarray(0, 20))]),
    ];
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      for (const [i, body] of bodies.entries()) {
        const req = session.request({
          ':method': 'POST',
          ':path': '/move_dispatcher.v1.Ingress/Moves',
          'content-type': 'application/grpc',
          te: 'trailers',
          authorization: `Bearer ${issueTicket(KEY, { room: 1, player: i + 1 })}`,
        });
        req.on('data', () => undefined);
        const done = new Promise<void>((resolve) => req.on('close', () => resolve()));
        req.end(body);
        await done;
        await until(() => events.closed.length === i + 1, 2000, `onDisconnect ${i + 1}`);
        expect(events.closed[i]).toMatchObject({ player: i + 1, transport: 'grpc', reason: 'malformed' });
      }
    } finally {
      session.close();
    }
  });

  it('disconnect(), server.close() and dispatcher.close() end calls with a status', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2, 3]) d.join(1, p);
    const first = await start(d);
    const c = client(first.port);
    const kicked = call(c, issueTicket(KEY, { room: 1, player: 1 }));
    const shut = call(c, issueTicket(KEY, { room: 1, player: 2 }));
    await until(() => first.events.opened.length === 2, 2000, 'two calls');
    expect(d.disconnect(1, 1)).toBe(1);
    expect(await kicked.ended).toEqual({ code: grpc.status.ABORTED, details: 'kicked' });
    // With a reason: the status message says it.
    const banned = call(c, issueTicket(KEY, { room: 1, player: 1 }));
    await until(() => first.events.opened.length === 3, 2000, 'the third call');
    expect(d.disconnect(1, 1, { code: 4001, reason: 'banned' })).toBe(1);
    expect(await banned.ended).toEqual({ code: grpc.status.ABORTED, details: 'banned' });
    await first.server.close();
    expect(await shut.ended).toEqual({ code: grpc.status.UNAVAILABLE, details: 'shutdown' });
    await until(() => first.events.closed.length === 3, 2000, 'close events');
    expect(first.events.closed.map((e) => e.reason)).toEqual(['kicked', 'kicked', 'shutdown']);
    const second = await start(d);
    const last = call(client(second.port), issueTicket(KEY, { room: 1, player: 3 }));
    await until(() => second.events.opened.length === 1, 2000, 'the call');
    await d.close();
    expect([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]).toContain((await last.ended).code);
  });

  it('ends a call that sends nothing for idleTimeoutMs with DEADLINE_EXCEEDED idle (no pings on gRPC); one that sends stays', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2]) d.join(1, p);
    const { port, events } = await start(d, { idleTimeoutMs: 300 });
    const c = client(port);
    const t0 = performance.now();
    const silent = call(c, issueTicket(KEY, { room: 1, player: 1 }));
    const busy = call(c, issueTicket(KEY, { room: 1, player: 2 }));
    await until(() => events.opened.length === 2, 2000, 'two calls');
    let seq = 0;
    const sending = setInterval(() => send(busy, frame({ room: 1, player: 2, seq: ++seq })), 50);
    try {
      expect(await silent.ended).toEqual({ code: grpc.status.DEADLINE_EXCEEDED, details: 'idle' });
      expect(performance.now() - t0).toBeGreaterThanOrEqual(280);
      await sleep(400);
      expect(events.closed).toEqual([{ connectionId: expect.any(Number), room: 1, player: 1, transport: 'grpc', remoteAddress: '127.0.0.1', remotePort: expect.any(Number), reason: 'idle' }]);
    } finally {
      clearInterval(sending);
    }
  });

  it('a room with a WebSocket client and a gRPC client: one broadcast reaches each once', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 1);
    d.join(1, 2);
    const { server, events } = await start(d, { ws: { port: 0 } });
    const wsPort = server.address('ws')!.port;
    const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/moves?ticket=${issueTicket(KEY, { room: 1, player: 1 })}`);
    sockets.push(ws);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const wsInbox: string[] = [];
    ws.on('message', (m: Buffer) => wsInbox.push(m.toString()));
    const g = call(client(server.address('grpc')!.port), issueTicket(KEY, { room: 1, player: 2 }));
    await until(() => events.opened.length === 2, 2000, 'both connections');
    expect(events.opened.map((e) => e.transport).sort()).toEqual(['grpc', 'ws']);
    expect(d.broadcast(1, Buffer.from('hello room'))).toBe(2);
    await until(() => wsInbox.length === 1 && g.messages.length === 1, 2000, 'the broadcast');
    await sleep(50);
    expect(wsInbox).toEqual(['hello room']);
    expect(g.messages).toEqual(['hello room']);
    // Moves from both transports meet in one room.
    ws.send(frame({ room: 1, player: 1, seq: 1 }));
    await until(() => d.stats().verdicts.Accepted === 1, 2000, 'the WebSocket move');
    send(g, frame({ room: 1, player: 2, seq: 1 }));
    expect(await drainAllOf(d, 1, 2)).toEqual([
      { player: 1, seq: 1 },
      { player: 2, seq: 1 },
    ]);
  });
  /**
   * A raw TCP socket to the gRPC port, reading (and discarding) what the server writes;
   * `closed` resolves, with the ms since connecting, when the server ends it.
   */
  function rawSocket(port: number, localAddress?: string): Promise<{ socket: Socket; closed: Promise<number> }> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host: '127.0.0.1', ...(localAddress === undefined ? {} : { localAddress }) });
      socket.resume();
      rawSockets.push(socket);
      const t0 = Date.now();
      const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - t0)));
      socket.on('error', () => undefined);
      socket.once('connect', () => resolve({ socket, closed }));
      socket.once('error', reject);
    });
  }

  it('the gRPC port closes a socket that has no call admitted within handshakeTimeoutMs (silent, or a bare HTTP/2 preface)', async () => {
    const d = make();
    const { port } = await start(d, { handshakeTimeoutMs: 300 });
    const silent = await rawSocket(port);
    const preface = await rawSocket(port);
    // The client connection preface and an empty SETTINGS frame, then nothing.
    preface.socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    const [a, b] = await Promise.all([silent.closed, preface.closed]);
    expect(a).toBeGreaterThanOrEqual(250);
    expect(a).toBeLessThan(5_000);
    expect(b).toBeLessThan(5_000);
    // Counted as slow handshakes are on the other transports.
    expect(d.stats().ingress?.refused).toBe(2);
    // A socket with an admitted call outlives the deadline.
    d.openRoom(1);
    d.join(1, 1);
    const c = call(client(port), issueTicket(KEY, { room: 1, player: 1 }));
    send(c, frame({ room: 1, player: 1, seq: 1 }));
    await until(() => c.acks.length === 1, 2000, 'the ack');
    await sleep(600);
    send(c, frame({ room: 1, player: 1, seq: 2 }));
    await until(() => c.acks.length === 2, 2000, 'the second ack, past the deadline');
  });

  it('the gRPC port holds at most maxConnections sockets: more are closed at once and counted refused', async () => {
    const d = make();
    const { port } = await start(d, { maxConnections: 3, handshakeTimeoutMs: 60_000 });
    const held = await Promise.all([0, 1, 2].map(() => rawSocket(port)));
    // Accepted in order: let the accept loop take the three before the fourth.
    await sleep(100);
    const over = await rawSocket(port);
    expect(await over.closed).toBeLessThan(2_000);
    expect(d.stats().ingress?.refused).toBeGreaterThanOrEqual(1);
    // The three are still open; one gone frees a place.
    await sleep(100);
    expect(held.every((h) => !h.socket.destroyed)).toBe(true);
    held[0]!.socket.destroy();
    await sleep(100);
    const next = await rawSocket(port);
    const race = await Promise.race([next.closed.then(() => 'closed'), sleep(500).then(() => 'open')]);
    expect(race).toBe('open');
  });

  it('the gRPC port holds at most maxHandshakesPerAddress sockets of one address with no call admitted; a socket with a call admitted is not counted', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 1);
    const { port } = await start(d, { maxHandshakesPerAddress: 2, handshakeTimeoutMs: 60_000 });
    // grpc-js's socket (from 127.0.0.1) has a call admitted: no longer a handshake.
    const c = call(client(port), issueTicket(KEY, { room: 1, player: 1 }));
    send(c, frame({ room: 1, player: 1, seq: 1 }));
    await until(() => c.acks.length === 1, 2000, 'the ack');
    const held = await Promise.all([0, 1].map(() => rawSocket(port)));
    await sleep(100);
    const refusedBefore = d.stats().ingress?.refused ?? 0;
    const over = await rawSocket(port);
    expect(await over.closed).toBeLessThan(2_000);
    expect(d.stats().ingress?.refused).toBe(refusedBefore + 1);
    // Another address is not affected; the two silent ones and the call are still open.
    const other = await rawSocket(port, '127.0.0.2');
    const race = await Promise.race([other.closed.then(() => 'closed'), sleep(500).then(() => 'open')]);
    expect(race).toBe('open');
    expect(held.every((h) => !h.socket.destroyed)).toBe(true);
    send(c, frame({ room: 1, player: 1, seq: 2 }));
    await until(() => c.acks.length === 2, 2000, 'the call goes on');
  });

  it('server.close() ends every socket of the gRPC port within the grace, even one whose client never reads', async () => {
    const d = make();
    const { server, port } = await start(d, { handshakeTimeoutMs: 60_000 });
    const stuck = await rawSocket(port);
    // Never read: the server's writes (SETTINGS, later GOAWAY) stay unread, so the graceful
    // shutdown alone would wait for this client forever.
    stuck.socket.pause();
    stuck.socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    await sleep(100);
    const t0 = Date.now();
    await server.close();
    // An unread socket reports the server's close only when it writes (a reset answers):
    // probe with PING frames until it does.
    const ping = Buffer.from([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    const probe = setInterval(() => stuck.socket.write(ping, () => undefined), 100);
    try {
      await Promise.race([stuck.closed, sleep(8_000).then(() => Promise.reject(new Error('the socket outlived server.close() by 8 s')))]);
    } finally {
      clearInterval(probe);
    }
    expect(Date.now() - t0).toBeLessThan(8_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
  });
});
