/**
 * Native ingress end to end, with clients nobody here wrote: npm `ws` (WebSocket) and
 * Node's `net` (TCP). Tickets from `issueTicket`; moves read and validated on the data
 * plane's threads arrive through drain / onDelivery like dispatched ones; send and
 * broadcast go back through the data plane; hostile clients are refused or dropped with a
 * reason while the others go on.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ErrorCode, issueTicket, Verdict } from '../index';
import type { DisconnectInfo, ConnectionInfo, Dispatcher, IngressServer, ListenOptions } from '../index';
import { concat, drainAllOf, frame, keyFor, skipReason, until, useDispatchers } from './helpers';

const KEY = 'a ticket key of thirty-two bytes';
const skip = skipReason('native');

interface Events {
  opened: ConnectionInfo[];
  closed: DisconnectInfo[];
}

async function start(d: Dispatcher, extra: Partial<ListenOptions> = {}): Promise<{ server: IngressServer; events: Events; wsUrl: (ticket: string) => string; tcpPort: number }> {
  const events: Events = { opened: [], closed: [] };
  const server = await d.listen({
    ws: { port: 0 },
    tcp: { port: 0 },
    ticketKey: KEY,
    onConnection: (c) => events.opened.push(c),
    onDisconnect: (c) => events.closed.push(c),
    ...extra,
  });
  servers.push(server);
  const ws = server.address('ws')!;
  return { server, events, wsUrl: (t) => `ws://127.0.0.1:${ws.port}/moves?ticket=${t}`, tcpPort: server.address('tcp')!.port };
}

const servers: IngressServer[] = [];
const sockets: (WebSocket | Socket)[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) {
    if (s instanceof WebSocket) s.terminate();
    else s.destroy();
  }
  for (const s of servers.splice(0)) await s.close();
});

function openWs(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    sockets.push(ws);
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode ?? 0}`)));
  });
}

/** The HTTP status a refused upgrade answered. */
function refusedWith(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    sockets.push(ws);
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.once('error', () => undefined);
  });
}

function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

function openTcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    sockets.push(s);
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

describe.skipIf(skip !== null)('native ingress', () => {
  const make = useDispatchers('native');

  it('takes WebSocket messages of one or many frames from a ticketed client, in order, with its player as sender', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { events, wsUrl } = await start(d);
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    await until(() => events.opened.length === 1, 2000, 'onConnection');
    const { connectionId } = events.opened[0]!;
    expect(events.opened[0]).toEqual({ connectionId, room: 1, player: 7, transport: 'ws', remoteAddress: '127.0.0.1', remotePort: expect.any(Number) });
    expect(Number.isSafeInteger(connectionId) && connectionId >= 1).toBe(true);
    for (let seq = 1; seq <= 3; seq++) ws.send(frame({ room: 1, player: 7, seq, payload: 64 }));
    ws.send(concat([4, 5, 6, 7, 8].map((seq) => frame({ room: 1, player: 7, seq, payload: 64 }))));
    const got = await drainAllOf(d, 1, 8);
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((seq) => ({ player: 7, seq })));
    const s = d.stats();
    expect(s.verdicts.Accepted).toBe(8);
    expect(s.ingress).toMatchObject({ connections: 1, accepted: 1, refused: 0, closed: 0 });
    expect(s.ingress!.bytesIn).toBeGreaterThan(8 * 120);
    expect(d.metrics()).toContain('move_dispatcher_ingress_connections 1\n');
    ws.close(1000);
    await until(() => events.closed.length === 1, 2000, 'onDisconnect');
    expect(events.closed[0]).toEqual({ connectionId, room: 1, player: 7, transport: 'ws', remoteAddress: '127.0.0.1', remotePort: expect.any(Number), reason: 'closed' });
    expect(d.stats().ingress).toMatchObject({ connections: 0, accepted: 1, closed: 1 });
  });

  it('address(): never null for a transport listen was given (typed so), null for the others', async () => {
    const d = make();
    const server = await d.listen({ ws: { port: 0 }, ticketKey: KEY });
    servers.push(server);
    // Compiles without a null check: `ws` was given (tsc -p tsconfig.test.json, in npm run lint).
    const port: number = server.address('ws').port;
    expect(port).toBeGreaterThan(0);
    expect(server.address('ws')).toEqual({ host: '127.0.0.1', port });
    // @ts-expect-error -- `tcp` was not given: its address may be null.
    expect(() => server.address('tcp').port).toThrow(TypeError);
    expect(server.address('grpc')).toBeNull();
    // A misspelt option is a type error (checked by tsc; this function is never called).
    const misspelt = (): unknown =>
      // @ts-expect-error -- `idleTimeoutMS` is not an option (`idleTimeoutMs` is).
      d.listen({ ws: { port: 0 }, ticketKey: KEY, idleTimeoutMS: 5 });
    void misspelt;
  });

  it('a player connecting again replaces its connection: the new one opens first, then the old one closes (replaced, 1008)', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const order: string[] = [];
    const ids: number[] = [];
    const { wsUrl, tcpPort } = await start(d, {
      onConnection: (c) => {
        order.push(`open ${c.transport}`);
        ids.push(c.connectionId);
      },
      onDisconnect: (c) => {
        order.push(`close ${c.transport} ${c.reason}`);
        ids.push(c.connectionId);
      },
    });
    const first = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    const firstClosed = closeOf(first);
    await until(() => order.length === 1, 2000, 'the first onConnection');
    for (const transport of ['ws', 'tcp'] as const) {
      const before = order.length;
      if (transport === 'ws') await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
      else {
        const s = await openTcp(tcpPort);
        s.write(`ticket ${issueTicket(KEY, { room: 1, player: 7 })}\n`);
      }
      await until(() => order.length === before + 2, 2000, `${transport}: the new open and the old close`);
    }
    expect(order).toEqual(['open ws', 'open ws', 'close ws replaced', 'open tcp', 'close ws replaced']);
    // The ids say which connection each event is about: every close names the one replaced.
    const [a, b, aClosed, c, bClosed] = ids;
    expect(new Set([a, b, c]).size).toBe(3);
    expect([aClosed, bClosed]).toEqual([a, b]);
    expect(b! > a! && c! > b!).toBe(true);
    expect(await firstClosed).toEqual({ code: 1008, reason: 'replaced by a new connection' });
    expect(d.stats().ingress).toMatchObject({ connections: 1 });
  });

  it('connection events carry the client address and port, IPv4 and IPv6, on open and close', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [7, 8, 9]) d.join(1, p);
    const { server, events, wsUrl, tcpPort } = await start(d);
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    const tcp = await openTcp(tcpPort);
    tcp.write(`ticket ${issueTicket(KEY, { room: 1, player: 8 })}\n`);
    await until(() => events.opened.length === 2, 2000, 'two opens');
    const wsLocal = (ws as unknown as { _socket: Socket })._socket.localPort;
    const byPlayer = new Map(events.opened.map((e) => [e.player, e]));
    expect(byPlayer.get(7)).toMatchObject({ transport: 'ws', remoteAddress: '127.0.0.1', remotePort: wsLocal });
    expect(byPlayer.get(8)).toMatchObject({ transport: 'tcp', remoteAddress: '127.0.0.1', remotePort: tcp.localPort });
    expect(byPlayer.get(7)).not.toHaveProperty('reason');
    ws.close();
    await until(() => events.closed.length === 1, 2000, 'the ws close');
    expect(events.closed[0]).toMatchObject({ player: 7, remoteAddress: '127.0.0.1', remotePort: wsLocal, reason: 'closed' });
    // IPv6: a listener on ::1 (this machine and CI have IPv6 loopback).
    await server.close();
    const v6 = await d.listen({ ws: { port: 0, host: '::1' }, ticketKey: KEY, onConnection: (c) => events.opened.push(c) });
    servers.push(v6);
    const six = await openWs(`ws://[::1]:${v6.address('ws').port}/moves?ticket=${issueTicket(KEY, { room: 1, player: 9 })}`);
    await until(() => events.opened.length === 3, 2000, 'the IPv6 open');
    expect(events.opened[2]).toMatchObject({ player: 9, remoteAddress: '::1', remotePort: (six as unknown as { _socket: Socket })._socket.localPort });
  });

  it('disconnect() closes a WebSocket with 1000 "kicked" (a client can tell it from its own close), after the messages sent before it', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { wsUrl } = await start(d);
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    const got: string[] = [];
    ws.on('message', (m: Buffer) => got.push(m.toString()));
    const closed = closeOf(ws);
    expect(d.send(1, 7, Buffer.from('you are out'))).toBe('sent');
    expect(d.disconnect(1, 7)).toBe(1);
    expect(await closed).toEqual({ code: 1000, reason: 'kicked' });
    expect(got).toEqual(['you are out']);
  });

  it('disconnect() with a code and a reason: the WebSocket close frame carries them (one player, or a whole room); bad ones are typed errors', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [7, 8, 9]) d.join(1, p);
    const { wsUrl, events } = await start(d);
    const closedEvents = events.closed;
    const [a, b, c] = await Promise.all([7, 8, 9].map((player) => openWs(wsUrl(issueTicket(KEY, { room: 1, player })))));
    const closes = [a, b, c].map((ws) => closeOf(ws!));
    expect(d.disconnect(1, 7, { code: 4001, reason: 'banned: cheating ✋' })).toBe(1);
    expect(await closes[0]).toEqual({ code: 4001, reason: 'banned: cheating ✋' });
    // A code alone keeps the default reason; the rest of the room at once.
    expect(d.disconnect(1, undefined, { code: 4000 })).toBe(2);
    expect(await closes[1]).toEqual({ code: 4000, reason: 'kicked' });
    expect(await closes[2]).toEqual({ code: 4000, reason: 'kicked' });
    await until(() => closedEvents.length === 3, 2000, 'three close events');
    expect(closedEvents.every((e) => e.reason === 'kicked')).toBe(true);
    // Checked before anything is closed, listening or not.
    for (const [options, field] of [
      [{ code: 1001 }, 'code'],
      [{ code: 2999 }, 'code'],
      [{ code: 5000 }, 'code'],
      [{ code: 4000.5 }, 'code'],
      [{ reason: 'x'.repeat(124) }, 'reason'],
      [{ reason: '✋'.repeat(42) }, 'reason'],
      [{ reason: 7 }, 'reason'],
      [{ reason: 'half a pair: \ud83d' }, 'reason'],
      [{ code: '4000' }, 'code'],
      [{ cause: 'x' }, 'cause'],
    ] as const) {
      expect(() => d.disconnect(1, 7, options as never), JSON.stringify(options)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, field }));
    }
    expect(() => d.disconnect(1, 7, { code: '4000' } as never)).toThrow(TypeError);
    expect(() => d.disconnect(1, 7, { code: 1001 })).toThrow(RangeError);
    for (const bad of [null, [], 'banned']) {
      expect(() => d.disconnect(1, 7, bad as never)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument, field: 'options' }));
    }
    expect(d.disconnect(1, 7, { reason: 'x'.repeat(123) })).toBe(0);
  });

  it('delivers ingress moves through onDelivery (push rooms) and HMAC rooms check the player key', async () => {
    const got: number[] = [];
    const d = make({
      onDelivery: (delivery) => {
        for (const batch of delivery) for (const m of batch) got.push(m.seq);
      },
    });
    const key = keyFor(9);
    d.openRoom(2, { delivery: 'push', auth: 'hmac-sha256' });
    d.join(2, 9, { key });
    const { wsUrl } = await start(d);
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 2, player: 9 })));
    for (let seq = 1; seq <= 20; seq++) ws.send(frame({ room: 2, player: 9, seq, payload: 16, key }));
    // A forged tag is accepted then rejected by validation (BadTag), like dispatch.
    ws.send(frame({ room: 2, player: 9, seq: 21, payload: 16, key: keyFor(9, 1) }));
    await until(() => got.length === 20, 5000, '20 moves');
    await d.flush();
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(d.stats().reasons.BadTag).toBe(1);
  });

  it('push rooms fed by many connections and by dispatch() at once: every move once, in order per player', async () => {
    // Reads are delivered when the reading runtime thread parks, and a release builds the
    // next delivery on the JavaScript thread, or leaves it to whichever runtime thread holds
    // the worker's lock (an ingress read, a park, the worker's own task, busy here with the
    // dispatched moves): a lost hand-off leaves moves undelivered and this times out.
    const ROOMS = 4;
    const PER_ROOM = 5;
    const FRAMES = 200;
    const seen = new Map<number, number[]>();
    let deliveries = 0;
    const d = make({
      shards: 2,
      onDelivery: (delivery) => {
        deliveries++;
        for (const batch of delivery) {
          for (const m of batch) {
            let list = seen.get(m.player);
            if (list === undefined) seen.set(m.player, (list = []));
            list.push(m.seq);
          }
        }
        // Hold every third delivery a little, so reads pile up behind it.
        if (deliveries % 3 === 0) {
          const until = performance.now() + 0.3;
          while (performance.now() < until);
        }
      },
    });
    const dispatched = (room: number): number => 1000 + room;
    for (let room = 0; room < ROOMS; room++) {
      d.openRoom(room, { delivery: 'push' });
      for (let p = 0; p < PER_ROOM; p++) d.join(room, room * PER_ROOM + p);
      d.join(room, dispatched(room));
    }
    const { wsUrl } = await start(d);
    const clients = await Promise.all(
      Array.from({ length: ROOMS * PER_ROOM }, (_, player) => openWs(wsUrl(issueTicket(KEY, { room: Math.floor(player / PER_ROOM), player })))),
    );
    clients.forEach((ws, player) => {
      const room = Math.floor(player / PER_ROOM);
      for (let seq = 1; seq <= FRAMES; ) {
        const n = Math.min(1 + (seq % 3), FRAMES - seq + 1);
        ws.send(concat(Array.from({ length: n }, (_, i) => frame({ room, player, seq: seq + i, payload: 16 }))));
        seq += n;
      }
    });
    // Meanwhile JavaScript dispatches into the same rooms, a few frames per turn.
    const next = Array.from({ length: ROOMS }, () => 1);
    while (next.some((seq) => seq <= FRAMES)) {
      for (let room = 0; room < ROOMS; room++) {
        for (let i = 0; i < 4 && next[room]! <= FRAMES; i++) {
          const v = d.dispatch(frame({ room, player: dispatched(room), seq: next[room]!, payload: 16 }));
          if (v === Verdict.Backpressure) break;
          expect(v).toBe(Verdict.Accepted);
          next[room]!++;
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    const total = (): number => [...seen.values()].reduce((n, list) => n + list.length, 0);
    await until(() => total() === ROOMS * (PER_ROOM + 1) * FRAMES, 15_000, 'every move delivered');
    await d.flush();
    const inOrder = Array.from({ length: FRAMES }, (_, i) => i + 1);
    for (let player = 0; player < ROOMS * PER_ROOM; player++) expect(seen.get(player), `player ${player}`).toEqual(inOrder);
    for (let room = 0; room < ROOMS; room++) expect(seen.get(dispatched(room)), `room ${room}'s dispatched player`).toEqual(inOrder);
    expect(total()).toBe(ROOMS * (PER_ROOM + 1) * FRAMES);
  });

  it('refuses missing, forged, reused, expired and malformed tickets before the upgrade', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { wsUrl, server } = await start(d);
    expect(await refusedWith(wsUrl(''))).toBe(401);
    expect(await refusedWith(wsUrl('not-a-ticket'))).toBe(401);
    expect(await refusedWith(wsUrl(issueTicket('another key of thirty-two bytes!', { room: 1, player: 7 })))).toBe(401);
    const t = issueTicket(KEY, { room: 1, player: 7 });
    const ws = await openWs(wsUrl(t));
    expect(await refusedWith(wsUrl(t))).toBe(401);
    const short = issueTicket(KEY, { room: 1, player: 7, ttlMs: 1 });
    await sleep(20);
    expect(await refusedWith(wsUrl(short))).toBe(401);
    expect(ws.readyState).toBe(WebSocket.OPEN);
    expect(server.connections).toBe(1);
  });

  it('counts frames for another player or room and closes a connection after maxRefusals', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    d.join(1, 8);
    d.openRoom(2);
    d.join(2, 7);
    const { events, wsUrl } = await start(d, { maxRefusals: 4 });
    const good = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 8 })));
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    ws.send(frame({ room: 1, player: 8, seq: 1 }));
    ws.send(frame({ room: 2, player: 7, seq: 1 }));
    await until(() => d.stats().verdicts.WrongSender === 1 && d.stats().verdicts.NotMember === 1, 2000, 'refusals counted');
    const closed = closeOf(ws);
    for (let seq = 2; seq <= 6; seq++) ws.send(frame({ room: 1, player: 8, seq }));
    expect((await closed).code).toBe(1008);
    await until(() => events.closed.some((e) => e.player === 7), 2000, 'onDisconnect');
    expect(events.closed.find((e) => e.player === 7)?.reason).toBe('refused');
    good.send(frame({ room: 1, player: 8, seq: 1 }));
    expect(await drainAllOf(d, 1, 1)).toEqual([{ player: 8, seq: 1 }]);
  });

  it("applies the room's rate limit to each connection from its player's bucket: a reconnect does not refill it (RateLimited, nothing kept)", async () => {
    const d = make();
    d.openRoom(1, { rateLimit: { perSecond: 0.01, burst: 3 } });
    d.join(1, 7);
    const { wsUrl, events } = await start(d);
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    ws.send(concat([1, 2, 3, 4, 5, 6].map((seq) => frame({ room: 1, player: 7, seq }))));
    await until(() => d.stats().verdicts.RateLimited === 3, 2000, 'three frames over the burst refused');
    expect(await drainAllOf(d, 1, 3)).toEqual([1, 2, 3].map((seq) => ({ player: 7, seq })));
    expect(d.stats().verdicts.Accepted).toBe(3);
    // A new ticket, a new connection (the old one is replaced): the same empty bucket.
    const again = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    await until(() => events.closed.some((e) => e.reason === 'replaced'), 2000, 'the first connection replaced');
    again.send(concat([7, 8].map((seq) => frame({ room: 1, player: 7, seq }))));
    await until(() => d.stats().verdicts.RateLimited === 5, 2000, 'both refused: the bucket was not refilled');
    expect(d.stats().verdicts.Accepted).toBe(3);
    // A second join keeps the bucket; leave and join again starts a full one.
    d.join(1, 7);
    again.send(frame({ room: 1, player: 7, seq: 9 }));
    await until(() => d.stats().verdicts.RateLimited === 6, 2000, 'refused after a second join');
    d.leave(1, 7);
    d.join(1, 7);
    const third = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    third.send(frame({ room: 1, player: 7, seq: 10 }));
    await until(() => d.stats().verdicts.Accepted === 4, 2000, 'accepted from a full bucket after leave and join');
  });

  it('a ticket spent on one listen is spent on the next: close() and a new listen() do not make it good again', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const first = await start(d);
    const ticket = issueTicket(KEY, { room: 1, player: 7 });
    const ws = await openWs(first.wsUrl(ticket));
    ws.terminate();
    await first.server.close();
    const second = await start(d);
    expect(await refusedWith(second.wsUrl(ticket))).toBe(401);
    // A fresh ticket still gets in.
    const again = await openWs(second.wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    expect(again.readyState).toBe(WebSocket.OPEN);
  });

  it('closes a WebSocket that sends text with 1003, and one that sends a partial frame as malformed', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    d.join(1, 8);
    const { events, wsUrl } = await start(d);
    const a = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    const closedA = closeOf(a);
    a.send('hello');
    expect((await closedA).code).toBe(1003);
    const b = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 8 })));
    const closedB = closeOf(b);
    b.send(frame({ room: 1, player: 8, seq: 1 }).subarray(0, 40));
    expect((await closedB).code).toBe(1007);
    await until(() => events.closed.length === 2, 2000, 'two disconnects');
    expect(events.closed.map((e) => e.reason).sort()).toEqual(['malformed', 'text']);
  });

  it('send and broadcast reach WebSocket clients; broadcast skips `except`', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2, 3]) d.join(1, p);
    const { wsUrl, events } = await start(d);
    const clients = await Promise.all([1, 2, 3].map((p) => openWs(wsUrl(issueTicket(KEY, { room: 1, player: p })))));
    await until(() => events.opened.length === 3, 2000, 'three connections');
    const inbox: string[][] = [[], [], []];
    clients.forEach((c, i) => c.on('message', (m: Buffer) => inbox[i]!.push(m.toString())));
    expect(d.send(1, 2, Buffer.from('to two'))).toBe('sent');
    expect(d.broadcast(1, Buffer.from('to all but one'), { except: 1 })).toBe(2);
    expect(d.send(1, 99, Buffer.from('nobody'))).toBe('closed');
    await until(() => inbox[1]!.length === 2 && inbox[2]!.length === 1, 2000, 'messages');
    expect(inbox).toEqual([[], ['to two', 'to all but one'], ['to all but one']]);
  });

  it('a client that never reads is answered backpressure, then dropped', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 7);
    const { wsUrl, events } = await start(d, { maxBackpressureBytes: 64 * 1024 });
    const ws = await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 7 })));
    (ws as unknown as { _socket: Socket })._socket.pause();
    const big = Buffer.alloc(32 * 1024, 1);
    const answers: string[] = [];
    for (let i = 0; i < 2000 && !answers.includes('dropped'); i++) {
      answers.push(d.send(1, 7, big));
      if (i % 20 === 0) await sleep(1);
    }
    expect(answers).toContain('backpressure');
    expect(answers.at(-1)).toBe('dropped');
    await until(() => events.closed.length === 1, 3000, 'dropped connection');
    expect(events.closed[0]!.reason).toBe('backpressure');
  });

  it('TCP: a ticket line, then frames split at every byte; outbound length-prefixed', async () => {
    const d = make();
    d.openRoom(3);
    d.join(3, 5);
    const { tcpPort, events } = await start(d);
    const s = await openTcp(tcpPort);
    const received: Buffer[] = [];
    s.on('data', (b: Buffer) => received.push(b));
    const frames = concat([1, 2, 3].map((seq) => frame({ room: 3, player: 5, seq, payload: 10 })));
    s.write(`ticket ${issueTicket(KEY, { room: 3, player: 5 })}\n`);
    for (let i = 0; i < frames.length; i++) {
      s.write(frames.subarray(i, i + 1));
      if (i % 7 === 0) await sleep(1);
    }
    expect(await drainAllOf(d, 3, 3)).toEqual([1, 2, 3].map((seq) => ({ player: 5, seq })));
    expect(events.opened[0]).toEqual({ connectionId: expect.any(Number), room: 3, player: 5, transport: 'tcp', remoteAddress: '127.0.0.1', remotePort: expect.any(Number) });
    expect(d.send(3, 5, Buffer.from('state'))).toBe('sent');
    await until(() => Buffer.concat(received).length === 9, 2000, 'outbound bytes');
    const got = Buffer.concat(received);
    expect(got.readUInt32LE(0)).toBe(5);
    expect(got.subarray(4).toString()).toBe('state');
  });

  it('TCP: a bad ticket line is answered and closed; garbage after frames drops that connection only', async () => {
    const d = make();
    d.openRoom(3);
    d.join(3, 5);
    d.join(3, 6);
    const { tcpPort, events } = await start(d);
    const bad = await openTcp(tcpPort);
    const answer = new Promise<string>((resolve) => {
      let text = '';
      bad.on('data', (b: Buffer) => (text += b.toString()));
      bad.on('close', () => resolve(text));
    });
    bad.write('ticket nope\n');
    expect(await answer).toBe('error ticket_malformed\n');
    const good = await openTcp(tcpPort);
    good.write(`ticket ${issueTicket(KEY, { room: 3, player: 6 })}\n`);
    const evil = await openTcp(tcpPort);
    evil.write(`ticket ${issueTicket(KEY, { room: 3, player: 5 })}\n`);
    evil.write(concat([frame({ room: 3, player: 5, seq: 1 }), new Uint8Array(64).fill(0x41)]));
    await until(() => events.closed.some((e) => e.player === 5), 2000, 'evil dropped');
    expect(events.closed.find((e) => e.player === 5)!.reason).toBe('malformed');
    good.write(frame({ room: 3, player: 6, seq: 1 }));
    const got = await drainAllOf(d, 3, 2);
    expect(got).toEqual([
      { player: 5, seq: 1 },
      { player: 6, seq: 1 },
    ]);
  });

  it('refuses connections beyond maxConnections at once, and closes idle ones', async () => {
    const d = make();
    d.openRoom(1);
    for (const p of [1, 2, 3]) d.join(1, p);
    const { wsUrl, events, server } = await start(d, { maxConnections: 2, idleTimeoutMs: 400 });
    await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 1 })));
    await openWs(wsUrl(issueTicket(KEY, { room: 1, player: 2 })));
    expect(await refusedWith(wsUrl(issueTicket(KEY, { room: 1, player: 3 })))).toBe(503);
    expect(server.connections).toBe(2);
    // `ws` answers the server's ping at half the timeout, so WebSocket clients stay; a silent TCP client does not.
    await sleep(900);
    expect(server.connections).toBe(2);
    expect(events.closed).toEqual([]);
  });

  it('closes a silent TCP connection after idleTimeoutMs (idle)', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 4);
    const { tcpPort, events } = await start(d, { idleTimeoutMs: 300 });
    const s = await openTcp(tcpPort);
    const ended = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.write(`ticket ${issueTicket(KEY, { room: 1, player: 4 })}\n`);
    await until(() => events.opened.length === 1, 2000, 'onConnection');
    await ended;
    await until(() => events.closed.length === 1, 2000, 'onDisconnect');
    expect(events.closed[0]).toEqual({ connectionId: expect.any(Number), room: 1, player: 4, transport: 'tcp', remoteAddress: '127.0.0.1', remotePort: expect.any(Number), reason: 'idle' });
  });

  it('server.close() and dispatcher.close() close every connection with a reason', async () => {
    const d = make();
    d.openRoom(1);
    d.join(1, 1);
    d.join(1, 2);
    const first = await start(d);
    const ws = await openWs(first.wsUrl(issueTicket(KEY, { room: 1, player: 1 })));
    const closed = closeOf(ws);
    await first.server.close();
    // Resolved once the connection closed, its event delivered.
    expect(first.events.closed.map((e) => e.reason)).toEqual(['shutdown']);
    expect((await closed).code).toBe(1001);
    const second = await start(d);
    const ws2 = await openWs(second.wsUrl(issueTicket(KEY, { room: 1, player: 2 })));
    const tcp = await openTcp(second.tcpPort);
    const tcpEnded = new Promise<void>((resolve) => tcp.once('close', () => resolve()));
    tcp.write(`ticket ${issueTicket(KEY, { room: 1, player: 1 })}\n`);
    await until(() => second.events.opened.length === 2, 2000, 'both connections');
    const closed2 = closeOf(ws2);
    // dispatcher.close() without server.close(): the same close, before the runtime stops.
    await d.close();
    expect(second.events.closed.map((e) => [e.transport, e.reason]).sort()).toEqual([
      ['tcp', 'shutdown'],
      ['ws', 'shutdown'],
    ]);
    expect((await closed2).code).toBe(1001);
    await tcpEnded;
  });

  it('close() never runs user callbacks synchronously, with ingress listening', async () => {
    let inClose = false;
    const seen: boolean[] = [];
    const d = make({ onDelivery: () => void seen.push(inClose) });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 7);
    await start(d);
    for (let seq = 1; seq <= 200; seq++) expect(d.dispatch(frame({ room: 1, player: 7, seq }))).toBe(Verdict.Accepted);
    // Hold the JavaScript thread while the worker validates and publishes the delivery: it is
    // pending (not polled) when close() is called.
    const until = performance.now() + 50;
    while (performance.now() < until) {
      // spin
    }
    inClose = true;
    const closed = d.close();
    inClose = false;
    await closed;
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((sync) => !sync)).toBe(true);
  });

  it('rejects bad options with typed errors', async () => {
    const d = make();
    expect(d.stats().ingress).toBeNull();
    await expect(d.listen({ ticketKey: KEY })).rejects.toMatchObject({ code: ErrorCode.InvalidOption });
    await expect(d.listen({ ws: { port: 0 }, ticketKey: 'short' })).rejects.toMatchObject({ code: ErrorCode.InvalidOption, field: 'ticketKey' });
    await expect(d.listen({ ws: { port: 70_000 }, ticketKey: KEY })).rejects.toMatchObject({ code: ErrorCode.InvalidOption });
    await expect(d.listen({ ws: { port: 0, host: 'nowhere' }, ticketKey: KEY })).rejects.toMatchObject({ code: ErrorCode.ListenFailed });
    // Misspelt keys (a type error in TypeScript; JavaScript callers get it at run time).
    await expect(d.listen({ ws: { port: 0 }, ticketKey: KEY, idleTimeoutMS: 5 } as never)).rejects.toMatchObject({
      code: ErrorCode.InvalidOption,
      field: 'idleTimeoutMS',
      message: expect.stringMatching(/did you mean idleTimeoutMs\?/),
    });
    await expect(d.listen({ ws: { prot: 0 }, ticketKey: KEY } as never)).rejects.toMatchObject({ code: ErrorCode.InvalidOption, field: 'ws.prot' });
    for (const bad of [-1, 1.5, 2_000_000, '8']) {
      await expect(d.listen({ ws: { port: 0 }, ticketKey: KEY, maxHandshakesPerAddress: bad as number })).rejects.toMatchObject({
        code: ErrorCode.InvalidOption,
        field: 'maxHandshakesPerAddress',
      });
    }
    expect(d.stats().ingress).toBeNull();
    expect(() => d.send(1, 1, 'text' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument }));
    expect(d.send(1, 1, Buffer.from('x'))).toBe('closed');
    expect(Verdict.Accepted).toBe(0);
  });
});

describe('native ingress on the js engine', () => {
  const make = useDispatchers('js');
  it('listen() rejects with NATIVE_UNAVAILABLE', async () => {
    const d = make();
    await expect(d.listen({ ws: { port: 0 }, ticketKey: KEY })).rejects.toMatchObject({ code: ErrorCode.NativeUnavailable });
  });
});
