/**
 * Headless arena players: the browser client's protocol with npm `ws` and the package's
 * `encodeMove` (HMAC-SHA256 in TypeScript) instead of WebCrypto.
 *
 *   npm run example:bots -- --rooms 10 --players 4 --seconds 20
 *   npm run example:bots -- --url http://127.0.0.1:8080 --rooms 2 --players 4
 *   … --out bench/results/arena/latest      (writes latest.md and latest.json)
 *
 * Without `--url` it starts a server of its own (`dist/examples/arena/server.js` as a child
 * process, rooms of `--players`), so the server's CPU and memory are its own. Each bot logs
 * in (`POST /api/login`), connects to the data plane with its ticket, sends one signed input
 * per tick (a random walk) and reads the states. The summary adds the server's figures from
 * two scrapes of its `/metrics`, at the start and at the end of the measured window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { encodeMove } from '../../index';
import { decodeState, encodeInput, KIND_INPUT } from './game';
import type { SeatAnswer } from './server';

export interface BotsOptions {
  /** The arena's HTTP address, e.g. `http://127.0.0.1:8080`. */
  url: string;
  rooms: number;
  /** Players per room (bots log in `rooms × players` times; the server's room size decides the grouping). */
  players: number;
  /** Inputs per second per bot. Default 20. */
  hz?: number;
}

export interface BotsSummary {
  bots: number;
  loggedIn: number;
  connected: number;
  /** Distinct rooms the bots were seated in. */
  rooms: number;
  movesSent: number;
  statesReceived: number;
  reconnects: number;
  /** Input → state round trip of the bots' own inputs (ms): p50, p99, samples. */
  ping: { p50: number; p99: number; samples: number };
  errors: string[];
}

class Bot {
  seat: SeatAnswer | null = null;
  ws: WebSocket | null = null;
  key: Buffer = Buffer.alloc(0);
  seq = 0;
  tick = 0;
  dx = 0;
  dy = 0;
  sent = 0;
  states = 0;
  reconnects = 0;
  lastEcho = 0;
  stopping = false;
  readonly pings: number[] = [];

  constructor(
    readonly url: string,
    readonly name: string,
    readonly errors: string[],
  ) {}

  async login(): Promise<void> {
    this.#use(await post<SeatAnswer>(`${this.url}/api/login`, { name: this.name }));
  }

  #use(seat: SeatAnswer): void {
    this.seat = seat;
    this.key = Buffer.from(seat.key, 'base64');
    this.seq = 0; // a new key is a new replay window
    const ws = new WebSocket(seat.url);
    this.ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer) => this.#receive(data));
    ws.on('error', (e) => this.errors.length < 20 && this.errors.push(`${this.name}: ${e.message}`));
    ws.on('close', () => {
      if (this.stopping || this.ws !== ws) return;
      this.ws = null;
      this.reconnects++;
      post<SeatAnswer>(`${this.url}/api/reconnect`, { session: seat.session }).then(
        (s) => this.#use(s),
        (e: Error) => this.errors.length < 20 && this.errors.push(`${this.name} reconnect: ${e.message}`),
      );
    });
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** One input: a random walk that changes direction now and then. */
  send(): void {
    if (!this.open || this.seat === null) return;
    if (Math.random() < 0.05) {
      this.dx = Math.round(Math.random() * 254 - 127);
      this.dy = Math.round(Math.random() * 254 - 127);
    }
    const payload = encodeInput({ dx: this.dx, dy: this.dy, clientTime: now32() });
    const frame = encodeMove({ room: this.seat.room, player: this.seat.player, seq: ++this.seq, tick: this.tick, kind: KIND_INPUT, payload, key: this.key });
    this.ws!.send(frame);
    this.sent++;
  }

  #receive(data: Buffer): void {
    const state = decodeState(data);
    if (state === null) return;
    this.states++;
    this.tick = state.tick;
    const me = state.dots.find((d) => d.id === this.seat?.player);
    if (me !== undefined && me.lastSeq !== 0 && me.lastClientTime !== this.lastEcho) {
      this.lastEcho = me.lastClientTime;
      const rtt = (now32() - me.lastClientTime) >>> 0;
      if (rtt < 60_000 && this.pings.length < 100_000) this.pings.push(rtt);
    }
  }

  stop(): void {
    this.stopping = true;
    this.ws?.close();
  }
}

function now32(): number {
  return Math.floor(performance.now()) >>> 0;
}

async function post<T>(url: string, body: object): Promise<T> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const answer = (await response.json()) as T & { error?: string };
  if (!response.ok) throw new Error(`${url}: ${response.status} ${answer.error ?? ''}`);
  return answer;
}

/** Running bots: `stop()` closes them and answers the summary. */
export interface Bots {
  /** Resolves once every bot logged in and connected (or failed to). */
  readonly ready: Promise<void>;
  summary(): BotsSummary;
  stop(): Promise<BotsSummary>;
}

/** Logs `rooms × players` bots in and plays until `stop()`. */
export function startBots(options: BotsOptions): Bots {
  const errors: string[] = [];
  const bots = Array.from({ length: options.rooms * options.players }, (_, i) => new Bot(options.url, `bot-${i + 1}`, errors));
  const timer = setInterval(() => {
    for (const b of bots) b.send();
  }, 1000 / (options.hz ?? 20));
  const ready = (async () => {
    await Promise.all(bots.map((b) => b.login().catch((e: Error) => errors.length < 20 && errors.push(`${b.name} login: ${e.message}`))));
    const end = Date.now() + 10_000;
    while (Date.now() < end && bots.some((b) => b.seat !== null && !b.open)) await sleep(20);
  })();
  const summary = (): BotsSummary => {
    const pings = bots.flatMap((b) => b.pings).sort((a, b) => a - b);
    const q = (p: number): number => (pings.length === 0 ? 0 : pings[Math.min(pings.length - 1, Math.ceil(p * pings.length) - 1)]!);
    return {
      bots: bots.length,
      loggedIn: bots.filter((b) => b.seat !== null).length,
      connected: bots.filter((b) => b.open).length,
      rooms: new Set(bots.flatMap((b) => (b.seat === null ? [] : [b.seat.room]))).size,
      movesSent: bots.reduce((n, b) => n + b.sent, 0),
      statesReceived: bots.reduce((n, b) => n + b.states, 0),
      reconnects: bots.reduce((n, b) => n + b.reconnects, 0),
      ping: { p50: q(0.5), p99: q(0.99), samples: pings.length },
      errors: [...errors],
    };
  };
  return {
    ready,
    summary,
    stop: async () => {
      await ready;
      clearInterval(timer);
      const result = summary();
      for (const b of bots) b.stop();
      return result;
    },
  };
}

/** `/metrics` as name{labels} → value. */
export async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The server's figures over a measured window, from two scrapes. */
export interface ServerFigures {
  seconds: number;
  rooms: number;
  players: number;
  ticks: number;
  ticksLate: number;
  ticksSkipped: number;
  /** Late and skipped ticks since the server started (logins included). */
  ticksLateSinceStart: number;
  ticksSkippedSinceStart: number;
  /** Ticks the quantiles below cover: the server's last ≤ 1200 ticks at the end of the window. */
  quantileTicks: number;
  /** Ticks the server ran since it started (the quantiles cover all of them when ≤ 1200). */
  serverTicks: number;
  /** Quantiles of the server's last ≤ 1200 ticks at the end of the window (ms). */
  tickLatenessMs: { p50: number; p99: number; max: number };
  tickDurationMs: { p50: number; p99: number; max: number };
  movesPerTickP50: number;
  movesAccepted: number;
  /** Server CPU over the window, one core = 100 %. */
  cpuPercent: number;
  rssMiB: number;
}

export function serverFigures(before: Map<string, number>, after: Map<string, number>, seconds: number): ServerFigures {
  const v = (m: Map<string, number>, k: string): number => m.get(k) ?? 0;
  const d = (k: string): number => v(after, k) - v(before, k);
  const ms = (k: string): number => Math.round(v(after, k) * 1e6) / 1e3;
  const summary = (name: string): { p50: number; p99: number; max: number } => ({
    p50: ms(`${name}{quantile="0.5"}`),
    p99: ms(`${name}{quantile="0.99"}`),
    max: ms(`${name}{quantile="1"}`),
  });
  return {
    seconds,
    rooms: v(after, 'arena_rooms'),
    players: v(after, 'arena_players'),
    ticks: d('arena_ticks_total'),
    ticksLate: d('arena_ticks_late_total'),
    ticksSkipped: d('arena_ticks_skipped_total'),
    ticksLateSinceStart: v(after, 'arena_ticks_late_total'),
    ticksSkippedSinceStart: v(after, 'arena_ticks_skipped_total'),
    quantileTicks: Math.min(1200, v(after, 'arena_tick_lateness_seconds_count')),
    serverTicks: v(after, 'arena_tick_lateness_seconds_count'),
    tickLatenessMs: summary('arena_tick_lateness_seconds'),
    tickDurationMs: summary('arena_tick_duration_seconds'),
    movesPerTickP50: v(after, 'arena_moves_per_tick{quantile="0.5"}'),
    movesAccepted: d('move_dispatcher_verdicts_total{verdict="Accepted"}'),
    cpuPercent: Math.round((d('arena_process_cpu_seconds_total') / seconds) * 1000) / 10,
    rssMiB: Math.round(v(after, 'arena_process_resident_memory_bytes') / 2 ** 20 * 10) / 10,
  };
}

/** Starts `dist/examples/arena/server.js` on free ports; resolves with its URL. */
function spawnServer(roomSize: number, maxPlayers: number): Promise<{ child: ChildProcess; url: string }> {
  const script = join(__dirname, 'server.js');
  const child = spawn(process.execPath, [script, '--port', '0', '--room-size', String(roomSize), '--queue-timeout-ms', '2000', '--max-players', String(maxPlayers)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const url = /http:\/\/[\d.]+:\d+/.exec(out)?.[0];
      if (url !== undefined) resolve({ child, url });
    });
    child.once('exit', (code) => reject(new Error(`arena server exited (${code}) before listening: ${out}`)));
  });
}

function markdown(command: string, when: string, bots: BotsSummary, server: ServerFigures): string {
  const over = server.quantileTicks === server.serverTicks ? `the server's whole run, ${server.serverTicks} ticks, logins included` : `the server's last ${server.quantileTicks} ticks`;
  return [
    '# Arena: bots run',
    '',
    `\`${command}\` on ${when} (Node.js ${process.version}, ${process.platform}-${process.arch}; a bots process and a server process on the same machine).`,
    '',
    '| figure | value |',
    '|---|---:|',
    `| rooms (server, at the end) | ${server.rooms} |`,
    `| players seated (server) | ${server.players} |`,
    `| bots logged in / connected at the end | ${bots.loggedIn} / ${bots.connected} of ${bots.bots} |`,
    `| measured window | ${server.seconds} s, ${server.ticks} ticks |`,
    `| moves sent by the bots (whole run) / accepted by the server (window) | ${bots.movesSent} / ${server.movesAccepted} |`,
    `| states received by the bots (whole run) | ${bots.statesReceived} |`,
    `| moves per tick, p50 | ${server.movesPerTickP50} |`,
    `| tick lateness p50 / p99 / max (${over}) | ${server.tickLatenessMs.p50} / ${server.tickLatenessMs.p99} / ${server.tickLatenessMs.max} ms |`,
    `| tick duration p50 / p99 / max (same ticks) | ${server.tickDurationMs.p50} / ${server.tickDurationMs.p99} / ${server.tickDurationMs.max} ms |`,
    `| ticks late (≥ 1 period) / skipped: window; since the server started | ${server.ticksLate} / ${server.ticksSkipped}; ${server.ticksLateSinceStart} / ${server.ticksSkippedSinceStart} |`,
    `| server CPU (window; one core = 100 %) | ${server.cpuPercent} % |`,
    `| server RSS (end) | ${server.rssMiB} MiB |`,
    `| bots' ping (input → state echo) p50 / p99 | ${bots.ping.p50} / ${bots.ping.p99} ms (${bots.ping.samples} samples) |`,
    `| bot reconnects / errors | ${bots.reconnects} / ${bots.errors.length} |`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const get = (name: string, fallback: string): string => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
  };
  const int = (name: string, fallback: number, max: number): number => {
    const n = Number(get(name, String(fallback)));
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be an integer in 1..${max}`);
    return n;
  };
  const rooms = int('rooms', 10, 2000);
  const players = int('players', 4, 64);
  const seconds = int('seconds', 20, 3600);
  const out = get('out', '');
  let url = get('url', '');
  let child: ChildProcess | undefined;
  if (url === '') {
    ({ child, url } = await spawnServer(players, rooms * players + 16));
    console.log(`bots: started a server at ${url} (rooms of ${players})`);
  }
  try {
    const bots = startBots({ url, rooms, players });
    await bots.ready;
    const s0 = bots.summary();
    console.log(`bots: ${s0.loggedIn} of ${s0.bots} logged in, ${s0.connected} connected, in ${s0.rooms} rooms; playing ${seconds} s`);
    const before = await scrape(url);
    const t0 = performance.now();
    for (let i = 1; i <= seconds; i++) {
      await sleep(1000);
      if (i % 5 === 0 || i === seconds) {
        const s = bots.summary();
        console.log(`bots: ${i} s, moves sent ${s.movesSent}, states received ${s.statesReceived}`);
      }
    }
    const after = await scrape(url);
    const server = serverFigures(before, after, Math.round((performance.now() - t0) / 100) / 10);
    const summary = await bots.stop();
    console.log(JSON.stringify({ bots: summary, server }, null, 2));
    if (out !== '') {
      const command = `npm run example:bots -- ${args.join(' ')}`;
      const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      mkdirSync(dirname(out), { recursive: true });
      writeFileSync(`${out}.json`, `${JSON.stringify({ command, when, node: process.version, bots: summary, server }, null, 2)}\n`);
      writeFileSync(`${out}.md`, markdown(command, when, summary, server));
      console.log(`bots: wrote ${out}.md and ${out}.json`);
    }
  } finally {
    child?.kill('SIGTERM');
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(`bots: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
