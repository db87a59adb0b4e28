/**
 * examples/arena end to end: the server in-process on free ports, two real Chromium pages
 * (Debian's chromium driven by playwright-core, as in browser-ingress.test.ts) that log in,
 * are matched into one room, steer (keyboard and pointer) and see each other move; a page
 * reloads mid-game and resumes its seat; a tampered frame is refused and counted; bots
 * (npm `ws`) fill other rooms meanwhile. The canvas is saved to .vitest/arena/arena.png.
 *
 * Every wait polls for a condition with a deadline; nothing asserts a duration.
 * Needs the native engine and Chromium (/usr/bin/chromium, or CHROMIUM_PATH): outside CI a
 * missing one skips with the reason; in CI (CI=true) both must be there.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import NodeWebSocket from 'ws';
import { encodeMove } from '../index';
import { startBots, type Bots } from '../examples/arena/bots';
import { decodeState, encodeInput, KIND_INPUT, type DotState, type State } from '../examples/arena/game';
import { startArena, type Arena, type SeatAnswer } from '../examples/arena/server';
import { IN_CI, skipReason } from './helpers';

const OUT = join(__dirname, '..', '.vitest', 'arena');

function findChromium(): string | null {
  for (const c of [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (c !== undefined && c !== '' && existsSync(c)) return c;
  return null;
}
const CHROMIUM = findChromium();
const noNative = skipReason('native');
const noBrowser = noNative ?? (CHROMIUM === null && !IN_CI ? "SKIPPED: no Chromium (/usr/bin/chromium; or set CHROMIUM_PATH) — 'apt-get install chromium'; set CI=1 to make this a failure" : null);
if (noBrowser !== null) console.warn(`arena: ${noBrowser}`);

/** `window.arena.snapshot()` of examples/arena/public/client.js. */
interface Snapshot {
  status: string;
  connected: boolean;
  room: number | null;
  player: number | null;
  tick: number;
  ping: number | null;
  movesSent: number;
  statesReceived: number;
  reconnects: number;
  names: Record<string, string>;
  dots: { id: number; x: number; y: number; connected: boolean }[];
}

/** Polls `read` until `done` holds; throws with the last value after `ms`. */
async function until<T>(what: string, read: () => Promise<T> | T, done: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T;
  for (;;) {
    last = await read();
    if (done(last)) return last;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await sleep(25);
  }
}

const snapshot = (page: Page): Promise<Snapshot> => page.evaluate(() => (globalThis as unknown as { arena: { snapshot(): Snapshot } }).arena.snapshot());
const dotOf = (s: Snapshot, id: number | null): { x: number; y: number; connected: boolean } | undefined => s.dots.find((d) => d.id === id);
const metric = (arena: Arena, line: string): number => Number(arena.metrics().split('\n').find((l) => l.startsWith(`${line} `))?.split(' ')[1] ?? NaN);

describe.skipIf(noBrowser !== null)('arena example in a real browser (Chromium)', () => {
  let arena: Arena;
  let browser: Browser;
  let bots: Bots | undefined;
  const pages: Page[] = [];

  beforeAll(async () => {
    if (CHROMIUM === null) throw new Error("CI=true and no Chromium at /usr/bin/chromium (or CHROMIUM_PATH): install the Debian package 'chromium'");
    // Rooms of 2, and a long queue timeout: the two pages (logged in together) get a room of their own.
    arena = await startArena({ port: 0, roomSize: 2, queueTimeoutMs: 20_000, graceMs: 10_000 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 20_000 });
  });

  afterAll(async () => {
    await bots?.stop();
    for (const p of pages) await p.close().catch(() => undefined);
    await browser?.close();
    await arena?.close();
  });

  /** A page of its own (its own context: its own sessionStorage) that logs in as `name`. */
  async function player(name: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 680, height: 760 } });
    pages.push(page);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(arena.url);
    await page.waitForFunction("typeof window.arena?.snapshot === 'function'", undefined, { timeout: 10_000 }).catch((e: Error) => {
      throw new Error(`the page did not start: ${errors.join('; ') || e.message}`);
    });
    await page.fill('#name', name);
    await page.click('#play');
    return page;
  }

  it('two pages are matched into one room, steer, see each other move, survive a reload and a tampered frame; bots play alongside', async () => {
    const [a, b] = await Promise.all([player('alice'), player('bob')]);
    const ready = (s: Snapshot): boolean => s.connected && s.dots.length === 2 && s.statesReceived > 0 && Object.keys(s.names).length === 2;
    const [sa, sb] = await Promise.all([until('page A in play', () => snapshot(a!), ready), until('page B in play', () => snapshot(b!), ready)]);
    expect(sa.room).toBe(sb.room);
    expect(sa.player).not.toBe(sb.player);
    expect(Object.values(sa.names).sort()).toEqual(['alice', 'bob']);
    const room = sa.room!;

    // Bots fill two more rooms of two meanwhile.
    bots = startBots({ url: arena.url, rooms: 2, players: 2 });
    await bots.ready;
    expect(bots.summary()).toMatchObject({ loggedIn: 4, connected: 4, rooms: 2 });
    expect(arena.control.rooms.size).toBe(3);

    // A steers with the keyboard, B with the pointer (held at the bottom-left corner).
    const bStart = dotOf(await snapshot(a!), sb.player)!;
    const aStart = dotOf(await snapshot(b!), sa.player)!;
    await a!.keyboard.down('ArrowRight');
    const box = (await b!.locator('#arena').boundingBox())!;
    await b!.mouse.move(box.x + 5, box.y + box.height - 5);
    await b!.mouse.down();
    await until('B to see A move right', () => snapshot(b!), (s) => dotOf(s, sa.player)!.x > aStart.x + 40);
    await until('A to see B move', () => snapshot(a!), (s) => {
      const d = dotOf(s, sb.player)!;
      return Math.hypot(d.x - bStart.x, d.y - bStart.y) > 40;
    });
    await a!.keyboard.up('ArrowRight');
    await b!.mouse.up();
    // A stops (its next input holds nothing): B sees its dot at rest.
    const twoLooks = async (): Promise<[{ x: number; y: number }, { x: number; y: number }]> => {
      const first = dotOf(await snapshot(b!), sa.player)!;
      await sleep(150);
      return [first, dotOf(await snapshot(b!), sa.player)!];
    };
    await until('A at rest', twoLooks, ([p, q]) => p.x === q.x && p.y === q.y);
    expect((await snapshot(a!)).ping).not.toBeNull();

    // A tampered frame: the page's next frame gets one payload byte flipped after signing.
    const badTag = arena.dispatcher.stats().reasons.BadTag;
    const sentBefore = (await snapshot(a!)).movesSent;
    await a!.evaluate(() => {
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (this: WebSocket, data: Uint8Array) {
        WebSocket.prototype.send = send; // once
        const tampered = new Uint8Array(data);
        tampered[24] = tampered[24]! ^ 0x01;
        send.call(this, tampered);
      } as typeof send;
    });
    await until('BadTag counted', () => arena.dispatcher.stats().reasons.BadTag, (n) => n >= badTag + 1);
    await until('the game counts the rejection', () => metric(arena, 'arena_rejections_total{reason="BadTag"}'), (n) => n >= 1);
    // The connection stays open (BadTag is a validation verdict; only refusals in a row close it) and the page goes on.
    const after = await until('page A goes on', () => snapshot(a!), (s) => s.movesSent > sentBefore + 5);
    expect(after.connected).toBe(true);
    expect(after.reconnects).toBe(0);

    // A reloads mid-game: the page rejoins its seat with its session (a new ticket and key).
    const reconnects = arena.control.counters.reconnects;
    const aBefore = dotOf(await snapshot(b!), sa.player)!;
    await a!.reload();
    await a!.waitForFunction("typeof window.arena?.snapshot === 'function'", undefined, { timeout: 10_000 });
    const back = await until('page A back in play', () => snapshot(a!), ready);
    expect(back.player).toBe(sa.player);
    expect(back.room).toBe(room);
    expect(back.reconnects).toBe(1);
    expect(arena.control.counters.reconnects).toBe(reconnects + 1);
    const mine = dotOf(back, sa.player)!;
    expect(Math.hypot(mine.x - aBefore.x, mine.y - aBefore.y)).toBeLessThan(1); // the dot stayed where it was
    const seenByB = await until('B sees A connected again', () => snapshot(b!), (s) => dotOf(s, sa.player)?.connected === true);
    expect(seenByB.dots).toHaveLength(2);
    // … and steers again with its new key (seqs from 1 again).
    await a!.keyboard.down('ArrowUp');
    await until('B to see A move up after the reload', () => snapshot(b!), (s) => dotOf(s, sa.player)!.y < mine.y - 40);
    await a!.keyboard.up('ArrowUp');

    mkdirSync(OUT, { recursive: true });
    await b!.locator('body').screenshot({ path: join(OUT, 'arena.png') });
    expect(existsSync(join(OUT, 'arena.png'))).toBe(true);

    const botsSummary = await bots.stop();
    bots = undefined;
    expect(botsSummary.errors).toEqual([]);
    expect(botsSummary.movesSent).toBeGreaterThan(0);
    expect(botsSummary.statesReceived).toBeGreaterThan(0);
    const stats = arena.dispatcher.stats();
    expect(stats.reasons.Replay).toBe(0);
    expect(metric(arena, 'arena_ticks_total')).toBeGreaterThan(0);
  }, 60_000);

  it('a second tab of the same session takes the seat once: the replaced tab stops and says so, no reconnect loop', async () => {
    const [c] = await Promise.all([player('carol'), player('dave')]);
    const ready = (s: Snapshot): boolean => s.connected && s.statesReceived > 0;
    const sc = await until('page C in play', () => snapshot(c!), ready);
    // window.open of the same origin copies sessionStorage (the session id) into the new tab.
    const [twin] = await Promise.all([c!.waitForEvent('popup'), c!.evaluate(() => void (globalThis as unknown as { open(url: string): unknown }).open('/'))]);
    pages.push(twin);
    await twin.waitForFunction("typeof window.arena?.snapshot === 'function'", undefined, { timeout: 10_000 });
    const took = await until('the new tab in play on the same seat', () => snapshot(twin), ready);
    expect(took.player).toBe(sc.player);
    const old = await until('the old tab stopped', () => snapshot(c!), (s) => !s.connected && s.status.includes('another tab'));
    expect(old.reconnects).toBe(0);
    // Two seconds later: still one connection for the seat, and no reconnect since.
    const reconnects = arena.control.counters.reconnects;
    await sleep(2_000);
    expect(arena.control.counters.reconnects).toBe(reconnects);
    expect((await snapshot(c!)).connected).toBe(false);
    expect((await snapshot(twin)).connected).toBe(true);
  }, 30_000);
});

describe.skipIf(noNative !== null)('arena control plane (no browser)', () => {
  let arena: Arena;

  beforeAll(async () => {
    arena = await startArena({ port: 0, roomSize: 3, queueTimeoutMs: 200, graceMs: 300, maxPlayers: 4 });
  });
  afterAll(() => arena?.close());

  const post = async (path: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> => {
    const r = await fetch(`${arena.url}${path}`, { method: 'POST', body });
    return { status: r.status, json: (await r.json()) as Record<string, unknown> };
  };

  it('validates what it is sent: names, JSON, body size, session ids; refuses logins past maxPlayers', async () => {
    expect((await post('/api/login', '{"name":""}')).status).toBe(400);
    expect((await post('/api/login', JSON.stringify({ name: 'x'.repeat(25) }))).status).toBe(400);
    expect((await post('/api/login', JSON.stringify({ name: '<script>' }))).status).toBe(400);
    expect((await post('/api/login', '{"name":')).status).toBe(400);
    expect((await post('/api/login', JSON.stringify({ name: 'a'.repeat(2000) }))).status).toBe(400);
    expect((await post('/api/reconnect', '{"session":"nope"}')).status).toBe(400);
    expect((await post('/api/reconnect', JSON.stringify({ session: 'A'.repeat(22) }))).status).toBe(404);
    expect((await fetch(`${arena.url}/nothing`)).status).toBe(404);
    // Four sessions at most: a fifth login is refused while they wait or play.
    const logins = ['p1', 'p2', 'p3', 'p4'].map((name) => post('/api/login', JSON.stringify({ name })));
    await until('four sessions', () => arena.control.sessions, (n) => n === 4);
    expect(await post('/api/login', '{"name":"p5"}')).toEqual({ status: 503, json: { error: 'the server is full' } });
    const seats = await Promise.all(logins);
    // Three make a full room at once; the fourth gets a room of one after the queue timeout.
    expect(seats.map((s) => s.status)).toEqual([200, 200, 200, 200]);
    expect(new Set(seats.map((s) => s.json.room)).size).toBe(2);
    expect(String(seats[0]!.json.url)).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/play\?ticket=[\w-]{87}$/);
    expect(Buffer.from(String(seats[0]!.json.key), 'base64')).toHaveLength(32);
  });

  it('players who never connect leave after the grace period; empty rooms close; sessions end', async () => {
    await until('every seat expired', () => arena.control.sessions, (n) => n === 0);
    await until('rooms closed', () => arena.control.rooms.size, (n) => n === 0);
    expect(arena.control.counters.roomsClosed).toBe(arena.control.counters.roomsOpened);
    expect(metric(arena, 'arena_grace_expired_total')).toBe(4);
  });

  it('/metrics is one valid exposition: the game series, then the dispatcher series (promtool, when installed; required in CI)', async () => {
    const text = await (await fetch(`${arena.url}/metrics`)).text();
    for (const name of ['arena_tick_duration_seconds', 'arena_tick_lateness_seconds', 'arena_moves_per_tick', 'arena_ticks_skipped_total', 'move_dispatcher_verdicts_total']) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    if (spawnSync('promtool', ['--version']).status === 0 || IN_CI) {
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.status).toBe(0);
    }
  });
});

describe.skipIf(noNative !== null)('arena reconnect with npm ws (no browser)', () => {
  let arena: Arena;
  beforeAll(async () => {
    arena = await startArena({ port: 0, roomSize: 2, queueTimeoutMs: 100, graceMs: 5_000 });
  });
  afterAll(() => arena?.close());

  const post = async (path: string, body: object): Promise<SeatAnswer> => (await (await fetch(`${arena.url}${path}`, { method: 'POST', body: JSON.stringify(body) })).json()) as SeatAnswer;

  /** A ws connection that keeps the last state and its close. */
  async function connect(url: string): Promise<{ ws: NodeWebSocket; last: () => State | null; closed: () => number | null }> {
    const ws = new NodeWebSocket(url);
    let last: State | null = null;
    let code: number | null = null;
    ws.on('message', (data: Buffer) => (last = decodeState(data) ?? last));
    ws.on('close', (c) => (code = c));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return { ws, last: () => last, closed: () => code };
  }
  const input = (seat: SeatAnswer, seq: number, dx: number): Uint8Array =>
    encodeMove({ room: seat.room, player: seat.player, seq, kind: KIND_INPUT, payload: encodeInput({ dx, dy: 0, clientTime: seq }), key: Buffer.from(seat.key, 'base64') });

  it('reconnecting while connected: a new key and ticket, the old connection is replaced, seqs start again at 1 without a Replay', async () => {
    const seat = await post('/api/login', { name: 'solo' });
    const first = await connect(seat.url);
    for (const seq of [1, 2, 3]) first.ws.send(input(seat, seq, 127));
    const mine = (c: { last: () => State | null }): DotState | undefined => c.last()?.dots.find((d) => d.id === seat.player);
    await until('seq 3 applied', () => mine(first)?.lastSeq, (s) => s === 3);

    const again = await post('/api/reconnect', { session: seat.session });
    expect(again).toMatchObject({ player: seat.player, room: seat.room, session: seat.session });
    expect(again.key).not.toBe(seat.key);
    const second = await connect(again.url);
    await until('the first connection replaced', () => first.closed(), (c) => c !== null);
    expect(first.closed()).toBe(1008);
    second.ws.send(input(again, 1, -127));
    await until('seq 1 under the new key applied', () => mine(second), (d) => d !== undefined && d.lastSeq === 1 && d.lastClientTime === 1 && d.connected);
    // A frame signed with the old key is refused (BadTag), never applied.
    const badTag = arena.dispatcher.stats().reasons.BadTag;
    second.ws.send(input(seat, 4, 127)); // old key: the connection's ticket still names this player
    await until('old-key frame refused', () => arena.dispatcher.stats().reasons.BadTag, (n) => n === badTag + 1);
    expect(arena.dispatcher.stats().reasons.Replay).toBe(0);
    expect(mine(second)!.lastSeq).toBe(1);
    second.ws.close();
  });

  it("a player flooding valid inputs is rate-limited and then cut off; its roommate's inputs still apply each tick", async () => {
    const [flooder, mate] = await Promise.all([post('/api/login', { name: 'flood' }), post('/api/login', { name: 'mate' })]);
    expect(mate.room).toBe(flooder.room);
    const f = await connect(flooder.url);
    const m = await connect(mate.url);
    const limited = arena.dispatcher.stats().verdicts.RateLimited;
    // 500 signed, valid inputs in one message (under maxMessageBytes): the room takes its rate
    // (2 × 20/s, a burst of 20), and 32 refusals in a row close the connection.
    const frames = Array.from({ length: 500 }, (_, i) => input(flooder, i + 1, 127));
    f.ws.send(Buffer.concat(frames));
    await until('the flooder cut off (1008, too many frames refused)', () => f.closed(), (c) => c === 1008);
    expect(arena.dispatcher.stats().verdicts.RateLimited - limited).toBeGreaterThan(0);
    m.ws.send(input(mate, 1, -127));
    const mateDot = (): DotState | undefined => m.last()?.dots.find((d) => d.id === mate.player);
    await until("the mate's input applied", () => mateDot()?.lastSeq, (s) => s === 1);
    m.ws.close();
  });
});
