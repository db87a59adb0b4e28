/**
 * Native ingress from a real browser: Debian's Chromium, driven by playwright-core, loads a
 * page served here over node:http. The page imports the package's browser entry as an ES
 * module, tags frames with WebCrypto (`crypto.subtle`: HMAC-SHA256 with the player's key)
 * and talks to the data plane with the browser's own `WebSocket` — no `ws`, no node:crypto
 * on the client side.
 *
 * What the page imports: `move-dispatcher/encode` resolves to dist/src/browser.js, a
 * CommonJS build (tsc `module: commonjs`), which a browser cannot `import` as is. /encode.mjs
 * is those built files byte for byte (browser.js and what it requires, nothing else), each
 * wrapped in a function of a small module table, with the entry's names re-exported: the
 * same module table __test__/browser.test.ts uses in a vm context, no bundler.
 *
 * Needs the native engine and Chromium (/usr/bin/chromium, or CHROMIUM_PATH). Outside CI
 * a missing one skips with the reason; in CI (CI=true) both must be there.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { issueTicket } from '../index';
import type { DisconnectInfo, ConnectionInfo, Dispatcher, IngressServer } from '../index';
import { hex, IN_CI, keyFor, skipReason, until, useDispatchers } from './helpers';

const TICKET_KEY = 'a ticket key of thirty-two bytes';
const ROOM = 3;
const PLAYERS = [7, 8] as const;
const ROOT = join(__dirname, '..');
const OUT = join(ROOT, '.vitest');

/** The Chromium binary to drive, or null when there is none. */
function findChromium(): string | null {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  for (const c of candidates) if (c !== undefined && c !== '' && existsSync(c)) return c;
  return null;
}

const CHROMIUM = findChromium();
const skip =
  skipReason('native') ??
  (CHROMIUM === null && !IN_CI ? "SKIPPED: no Chromium (/usr/bin/chromium; or set CHROMIUM_PATH) — 'apt-get install chromium'; set CI=1 to make this a failure" : null);
if (skip !== null) console.warn(`browser-ingress: ${skip}`);

/** What `move-dispatcher/encode` resolves to, by the package's own `exports`. */
function encodeEntry(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, { default: string | { default: string } }> };
  const entry = pkg.exports['./encode']!.default;
  return join(ROOT, typeof entry === 'string' ? entry : entry.default);
}

/**
 * The built CommonJS browser entry as one ES module: each file of its `require` graph
 * (relative requires only: anything else fails here) in a module table, the entry's
 * export names (as Node.js sees them) re-exported.
 */
function esModuleOf(entryFile: string): string {
  const dir = dirname(entryFile);
  const files = new Map<string, string>();
  const visit = (name: string): void => {
    if (files.has(name)) return;
    const code = readFileSync(join(dir, `${name}.js`), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/gm, '');
    files.set(name, code);
    for (const m of code.matchAll(/require\(("[^"]*"|'[^']*')\)/g)) {
      const spec = JSON.parse(m[1]!.replace(/^'|'$/g, '"')) as string;
      if (!/^\.\/[\w.-]+$/.test(spec)) throw new Error(`${name}.js requires ${spec}: not a browser-safe local module`);
      visit(spec.slice(2).replace(/\.js$/, ''));
    }
  };
  const entry = entryFile.slice(dir.length + 1).replace(/\.js$/, '');
  visit(entry);
  const names = Object.keys(createRequire(__filename)(entryFile) as Record<string, unknown>).filter((n) => n !== '__esModule');
  expect(names).toContain('signMove');
  const table = [...files].map(([name, code]) => `${JSON.stringify(name)}: function (exports, require) {\n${code}\n}`).join(',\n');
  return [
    `// ${[...files.keys()].map((f) => `dist/src/${f}.js`).join(', ')}: CommonJS, unchanged, in a module table.`,
    `const files = {\n${table}\n};`,
    'const cache = {};',
    'function load(name) {',
    '  if (cache[name] !== undefined) return cache[name];',
    '  const exports = (cache[name] = {});',
    "  files[name](exports, (spec) => load(spec.slice(2).replace(/\\.js$/, '')));",
    '  return exports;',
    '}',
    `const entry = load(${JSON.stringify(entry)});`,
    `export const { ${names.join(', ')} } = entry;`,
    '',
  ].join('\n');
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>move-dispatcher</title>
<style>body { font: 14px monospace; margin: 16px; } li { margin: 2px 0; }</style></head>
<body><h1>move-dispatcher: browser ingress</h1><ol id="log"></ol>
<script type="module" src="/client.mjs"></script></body></html>
`;

/** Serves the page, its script and the encoder module on 127.0.0.1. */
function serve(): Promise<{ server: Server; origin: string }> {
  const routes = new Map<string, [string, string]>([
    ['/', ['text/html; charset=utf-8', PAGE]],
    ['/client.mjs', ['text/javascript; charset=utf-8', readFileSync(join(__dirname, 'fixtures', 'browser-client.mjs'), 'utf8')]],
    ['/encode.mjs', ['text/javascript; charset=utf-8', esModuleOf(encodeEntry())]],
  ]);
  const server = createServer((req, res) => {
    const route = routes.get(new URL(req.url ?? '/', 'http://x').pathname);
    if (route === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': route[0], 'cache-control': 'no-store' }).end(route[1]);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
  });
}

/** `window.client` of the page (see fixtures/browser-client.mjs). */
interface PageClient {
  connect(url: string): Promise<boolean>;
  sendEach(seqs: number[]): Promise<number>;
  sendTogether(seqs: number[]): Promise<number>;
  sendTampered(seq: number): Promise<number>;
  flushed(): Promise<boolean>;
  inbox(): string[];
  closes(): { code: number; reason: string }[];
  state(): string;
}
type Call = { [K in keyof PageClient]: PageClient[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never };

/** Typed calls into a page's `window.client`. */
function clientOf(page: Page): Call {
  const call =
    (method: keyof PageClient) =>
    (...args: unknown[]) =>
      page.evaluate(([m, a]) => {
        const c = (globalThis as unknown as { client: Record<string, (...x: unknown[]) => unknown> }).client;
        return c[m as string]!(...(a as unknown[]));
      }, [method, args] as const);
  return new Proxy({} as Call, { get: (_t, method) => call(method as keyof PageClient) });
}

/** Reads `read()` until `done` holds or `ms` pass; returns the last value (assert on it). */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > end) return value;
    await sleep(5);
  }
}

interface Got {
  player: number;
  seq: number;
  tick: number;
  kind: number;
  payload: string;
}

describe.skipIf(skip !== null)('native ingress from a real browser (Chromium, WebCrypto, WebSocket)', () => {
  const make = useDispatchers('native');
  let browser: Browser;
  let http: { server: Server; origin: string };
  const pages: Page[] = [];
  const ingress: IngressServer[] = [];

  beforeAll(async () => {
    if (CHROMIUM === null) throw new Error("CI=true and no Chromium at /usr/bin/chromium (or CHROMIUM_PATH): install the Debian package 'chromium'");
    http = await serve();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 20_000 });
  });

  afterEach(async () => {
    for (const p of pages.splice(0)) await p.close();
    for (const s of ingress.splice(0)) await s.close();
  });

  afterAll(async () => {
    await browser?.close();
    if (http !== undefined) await new Promise<void>((resolve) => http.server.close(() => resolve()));
  });

  /** A push room with HMAC auth, both players joined with their keys, and a WebSocket listener. */
  async function start(): Promise<{ d: Dispatcher; got: Got[]; opened: ConnectionInfo[]; closed: DisconnectInfo[]; wsUrl: (player: number) => string }> {
    const got: Got[] = [];
    const d = make({
      onDelivery: (delivery) => {
        for (const batch of delivery) {
          for (const m of batch) got.push({ player: m.player, seq: m.seq, tick: m.tick, kind: m.kind, payload: Buffer.from(m.payload).toString() });
        }
      },
    });
    d.openRoom(ROOM, { delivery: 'push', auth: 'hmac-sha256' });
    for (const p of PLAYERS) d.join(ROOM, p, { key: keyFor(p) });
    const opened: ConnectionInfo[] = [];
    const closed: DisconnectInfo[] = [];
    const server = await d.listen({ ws: { port: 0 }, ticketKey: TICKET_KEY, onConnection: (c) => opened.push(c), onDisconnect: (c) => closed.push(c) });
    ingress.push(server);
    const port = server.address('ws')!.port;
    const wsUrl = (player: number): string => `ws://127.0.0.1:${port}/play?ticket=${issueTicket(TICKET_KEY, { room: ROOM, player, ttlMs: 10_000 })}`;
    return { d, got, opened, closed, wsUrl };
  }

  /** Opens a page for `player` and waits for its client script. */
  async function openPage(player: number): Promise<{ page: Page; client: Call }> {
    const page = await browser.newPage({ viewport: { width: 720, height: 420 } });
    pages.push(page);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${http.origin}/?room=${ROOM}&player=${player}&key=${hex(keyFor(player))}`);
    await page.waitForFunction('window.client !== undefined', undefined, { timeout: 10_000 }).catch((e: Error) => {
      throw new Error(`page of player ${player} did not start: ${errors.join('; ') || e.message}`);
    });
    return { page, client: clientOf(page) };
  }

  const seqsOf = (got: Got[], player: number): number[] => got.filter((g) => g.player === player).map((g) => g.seq);

  it('two pages send WebCrypto-signed moves (one per message and several per message), in order per player; both receive the broadcast', async () => {
    const { d, got, opened, wsUrl } = await start();
    const [a, b] = await Promise.all(PLAYERS.map((p) => openPage(p)));
    await Promise.all([a!.client.connect(wsUrl(7)), b!.client.connect(wsUrl(8))]);
    await until(() => opened.length === 2, 5000, 'two connections');
    expect(opened.map((o) => o.player).sort()).toEqual([7, 8]);
    expect(opened.every((o) => o.room === ROOM && o.transport === 'ws')).toBe(true);

    // Interleaved between the two pages: one frame per message, then messages of several.
    await Promise.all([a!.client.sendEach([1, 2, 3]), b!.client.sendEach([1, 2])]);
    await Promise.all([a!.client.sendTogether([4, 5, 6, 7]), b!.client.sendTogether([3, 4, 5])]);
    await Promise.all([a!.client.sendEach([8]), b!.client.sendTogether([6, 7])]);
    await until(() => got.length === 15, 10_000, '15 moves');
    await d.flush();

    expect(seqsOf(got, 7)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(seqsOf(got, 8)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    for (const g of got) {
      expect(g.payload, 'payload names its sender and seq').toBe(`p${g.player}-m${g.seq}`);
      expect(g.tick).toBe(g.seq * 10);
    }
    expect(got.filter((g) => g.player === 7).map((g) => g.kind)).toEqual([1, 1, 1, 2, 2, 2, 2, 1]);
    const s = d.stats();
    expect(s.verdicts.Accepted).toBe(15);
    expect(s.reasons.BadTag ?? 0).toBe(0);

    expect(d.broadcast(ROOM, Buffer.from('state: tick 80'))).toBe(2);
    expect(d.send(ROOM, 8, Buffer.from('to 8 only'))).toBe('sent');
    expect(await eventually(() => a!.client.inbox(), (i) => i.length >= 1)).toEqual(['state: tick 80']);
    expect(await eventually(() => b!.client.inbox(), (i) => i.length >= 2)).toEqual(['state: tick 80', 'to 8 only']);

    mkdirSync(OUT, { recursive: true });
    await b!.page.screenshot({ path: join(OUT, 'browser-ingress.png') });
    expect(existsSync(join(OUT, 'browser-ingress.png'))).toBe(true);
  });

  it('a frame whose payload the page flipped after signing is refused by validation (BadTag), and the page goes on', async () => {
    const { d, got, wsUrl } = await start();
    const { client } = await openPage(7);
    await client.connect(wsUrl(7));
    await client.sendEach([1, 2]);
    await client.sendTampered(3);
    await client.sendEach([4]);
    await client.flushed();
    await until(() => got.length === 3 && d.stats().reasons.BadTag === 1, 10_000, 'three moves and one BadTag');
    await d.flush();
    expect(seqsOf(got, 7)).toEqual([1, 2, 4]);
    const s = d.stats();
    expect(s.reasons.BadTag).toBe(1);
    expect(s.verdicts.Accepted).toBe(4);
    expect(await client.state()).toBe('open');
  });

  it('a page that reloads, and one that reconnects in place, resume with new tickets; the old connections are closed or replaced', async () => {
    const { d, got, opened, closed, wsUrl } = await start();
    const a = await openPage(7);
    const b = await openPage(8);
    await a.client.connect(wsUrl(7));
    await b.client.connect(wsUrl(8));
    await a.client.sendEach([1, 2]);
    await b.client.sendEach([1, 2]);
    await until(() => got.length === 4, 10_000, 'four moves');

    // Page A reloads: the browser drops its socket; the fresh page connects with a new ticket.
    await a.page.reload();
    await a.page.waitForFunction('window.client !== undefined', undefined, { timeout: 10_000 });
    await until(() => closed.some((c) => c.player === 7), 5000, 'the reloaded page disconnected');
    expect(['closed', 'reset']).toContain(closed.find((c) => c.player === 7)!.reason);
    await a.client.connect(wsUrl(7));
    // The replay window is per player, not per connection: the reloaded page goes on at 3.
    await a.client.sendEach([3]);
    await a.client.sendTogether([4, 5]);

    // Page B opens a second WebSocket with a new ticket while the first is open: it replaces it.
    await b.client.connect(wsUrl(8));
    await until(() => closed.some((c) => c.player === 8), 5000, 'the replaced connection');
    expect(closed.find((c) => c.player === 8)!.reason).toBe('replaced');
    expect(await eventually(() => b.client.closes(), (c) => c.length > 0)).toEqual([{ code: 1008, reason: 'replaced by a new connection' }]);
    await b.client.sendTogether([3, 4]);

    await until(() => got.length === 9, 10_000, 'nine moves');
    await d.flush();
    expect(seqsOf(got, 7)).toEqual([1, 2, 3, 4, 5]);
    expect(seqsOf(got, 8)).toEqual([1, 2, 3, 4]);
    expect(opened.filter((o) => o.player === 7)).toHaveLength(2);
    expect(opened.filter((o) => o.player === 8)).toHaveLength(2);
    expect(d.broadcast(ROOM, Buffer.from('after reconnect'))).toBe(2);
    const inboxes = await eventually(() => Promise.all([a.client.inbox(), b.client.inbox()]), (i) => i.every((m) => m.length > 0));
    expect(inboxes).toEqual([['after reconnect'], ['after reconnect']]);
  });
});
