/**
 * Arena: a small authoritative multiplayer game on move-dispatcher (README "Example: arena").
 *
 *   npm run example                        # builds if needed, serves http://127.0.0.1:8080
 *   npm run example -- --port 9000 --host 0.0.0.0 --room-size 4
 *
 * Two planes, one process:
 * - control plane (node:http, this file and control.ts): `POST /api/login` seats a player
 *   and answers its HMAC key, a ticket and the data plane's WebSocket URL;
 *   `POST /api/reconnect` a new ticket for the same seat; `GET /metrics`; the page.
 * - data plane (the dispatcher's native ingress, `d.listen({ ws })`): browsers connect
 *   there with their ticket and send signed input frames; a 20 Hz loop (loop.ts) drains
 *   every room at once (`d.drainAll()`), steps the worlds (game.ts) and sends each room its
 *   state (`d.broadcast`). No move passes through a Node socket.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Dispatcher, REASON_NAMES, type IngressServer } from '../../index';
import { loadAssets, type Asset } from './assets';
import { Control, ControlError, type Seat } from './control';
import { ARENA_SIZE, decodeInput, KIND_INPUT, STATE_HEADER_BYTES, STATE_PLAYER_BYTES } from './game';
import { TickLoop, type TickInfo } from './loop';
import { renderSummary, renderValue, WindowSummary } from './metrics';

/** What `POST /api/login` and `POST /api/reconnect` answer: the seat, and where to connect. */
export interface SeatAnswer extends Seat {
  /** The data plane's WebSocket URL, ticket included. */
  url: string;
  hz: number;
  arenaSize: number;
}

export interface ArenaOptions {
  /** HTTP port (page, login, metrics). 0 picks a free one. Default 8080. */
  port?: number;
  /** The data plane's WebSocket port. Default `port + 1` (0 when `port` is 0). */
  wsPort?: number;
  /** Address both listen on. Default `127.0.0.1`; `0.0.0.0` for every interface. */
  host?: string;
  /** Players per room. Default 4. */
  roomSize?: number;
  /** The longest wait in the queue before a room starts with fewer players (ms). Default 5,000. */
  queueTimeoutMs?: number;
  /** How long a disconnected player keeps its seat (ms). Default 10,000. */
  graceMs?: number;
  /** Sessions at most. Default 1,000. */
  maxPlayers?: number;
  /** Ticks per second. Default 20. */
  hz?: number;
}

export interface Arena {
  /** `http://host:port` of the control plane (the page). */
  readonly url: string;
  readonly wsPort: number;
  readonly dispatcher: Dispatcher;
  readonly control: Control;
  readonly loop: TickLoop;
  readonly ingress: IngressServer;
  /** The game's and the dispatcher's metrics, Prometheus text. */
  metrics(): string;
  /** Stops the loop, the HTTP server, the ingress and the dispatcher. Idempotent. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024;
const NAME = /^[\p{L}\p{N} _.'-]{1,24}$/u;
/** The window of the per-tick summaries: a minute of ticks at 20 Hz. */
const WINDOW_TICKS = 1200;

/** Starts the arena; resolves once both planes listen. */
export async function startArena(options: ArenaOptions = {}): Promise<Arena> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 8080;
  const hz = options.hz ?? 20;
  const roomSize = options.roomSize ?? 4;
  const assets = loadAssets();

  // One shard: the game loop drains every room at once anyway, and this example shares
  // its two cores with the browser; a bigger server leaves `shards` at its default.
  const d = new Dispatcher({ shards: 1, workerThreads: 1 });
  const ticketKey = randomBytes(32);
  const control = new Control(d, ticketKey, {
    roomSize,
    queueTimeoutMs: options.queueTimeoutMs ?? 5_000,
    graceMs: options.graceMs ?? 10_000,
    maxPlayers: options.maxPlayers ?? 1_000,
    ticketTtlMs: 15_000,
    inputsPerSecond: hz,
  });
  const ingress = await d.listen({
    ws: { port: options.wsPort ?? (port === 0 ? 0 : port + 1), host },
    ticketKey,
    maxConnections: (options.maxPlayers ?? 1_000) + 64,
    idleTimeoutMs: 15_000,
    onConnection: control.onConnection,
    onDisconnect: control.onDisconnect,
  });
  const wsPort = ingress.address('ws').port;

  // The game loop's figures.
  const tickSeconds = new WindowSummary(WINDOW_TICKS);
  const latenessSeconds = new WindowSummary(WINDOW_TICKS);
  const movesPerTick = new WindowSummary(WINDOW_TICKS);
  const rejections = new Map<string, number>(REASON_NAMES.map((r) => [r, 0]));
  let inputsInvalid = 0;
  let statesSent = 0;
  const scratch = new Uint8Array(STATE_HEADER_BYTES + STATE_PLAYER_BYTES * roomSize);

  const tick = ({ tick: n, lateMs }: TickInfo): void => {
    const t0 = performance.now();
    const delivery = d.drainAll();
    for (const batch of delivery) {
      const world = control.rooms.get(batch.room)?.world;
      for (const move of batch) {
        const input = move.kind === KIND_INPUT ? decodeInput(move.payload) : null;
        if (world === undefined) continue; // a closed room's last moves
        if (input === null || !world.apply(move.player, move.seq, input)) inputsInvalid++;
      }
    }
    for (const r of delivery.rejections) {
      const name = REASON_NAMES[r.reason] ?? String(r.reason);
      rejections.set(name, (rejections.get(name) ?? 0) + 1);
    }
    const moves = delivery.count;
    delivery.release();
    for (const room of control.rooms.values()) {
      room.world.step(1 / hz);
      const bytes = room.world.encodeStateInto(n, scratch);
      statesSent += d.broadcast(room.id, scratch.subarray(0, bytes)); // copied: scratch is reused
    }
    tickSeconds.observe((performance.now() - t0) / 1000);
    latenessSeconds.observe(lateMs / 1000);
    movesPerTick.observe(moves);
  };
  const loop = new TickLoop({ hz, onTick: tick });

  const metrics = (): string => {
    const cpu = process.cpuUsage();
    const c = control.counters;
    const game = [
      renderSummary('arena_tick_duration_seconds', 'Time one tick took: drain, apply, step, broadcast (quantiles of the last 1200 ticks).', tickSeconds),
      renderSummary('arena_tick_lateness_seconds', 'How late each tick started against its planned time start + n/hz (quantiles of the last 1200 ticks).', latenessSeconds),
      renderSummary('arena_moves_per_tick', 'Moves drained per tick (quantiles of the last 1200 ticks).', movesPerTick),
      renderValue('arena_ticks_total', 'counter', 'Ticks run.', loop.ran),
      renderValue('arena_ticks_late_total', 'counter', 'Ticks that ran a whole period or more after their planned time (caught up).', loop.late),
      renderValue('arena_ticks_skipped_total', 'counter', 'Ticks skipped: the loop was more than maxCatchUp ticks behind.', loop.skipped),
      renderValue('arena_states_sent_total', 'counter', 'State messages queued to connections (broadcast).', statesSent),
      renderValue('arena_inputs_invalid_total', 'counter', 'Validated moves that were not a well-formed input of a seated player.', inputsInvalid),
      renderValue('arena_rejections_total', 'counter', 'Moves refused after validation, by reason (delivery.rejections).', rejections, 'reason'),
      renderValue('arena_logins_total', 'counter', 'Sessions created.', c.logins),
      renderValue('arena_logins_refused_total', 'counter', 'Logins refused: maxPlayers sessions.', c.loginsRefused),
      renderValue('arena_reconnects_total', 'counter', 'New tickets for a seated session.', c.reconnects),
      renderValue('arena_grace_expired_total', 'counter', 'Players who left: no connection for the grace period.', c.graceExpired),
      renderValue('arena_rooms_opened_total', 'counter', 'Rooms opened.', c.roomsOpened),
      renderValue('arena_rooms_closed_total', 'counter', 'Rooms closed (empty).', c.roomsClosed),
      renderValue('arena_rooms', 'gauge', 'Rooms open.', control.rooms.size),
      renderValue('arena_players', 'gauge', 'Players seated in rooms.', control.seated),
      renderValue('arena_queued', 'gauge', 'Players waiting for a room.', control.queued),
      renderValue('arena_sessions', 'gauge', 'Sessions (queued and seated).', control.sessions),
      renderValue('arena_process_cpu_seconds_total', 'counter', 'CPU time of the server process, user + system (process.cpuUsage).', (cpu.user + cpu.system) / 1e6),
      renderValue('arena_process_resident_memory_bytes', 'gauge', 'Resident set size of the server process.', process.memoryUsage.rss()),
    ];
    return `${game.join('\n')}\n${d.metrics()}`;
  };

  const http = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      if (res.headersSent || res.destroyed) return;
      if (error instanceof ControlError) json(res, error.status, { error: error.message });
      else if (error instanceof BadRequest) json(res, 400, { error: error.message });
      else {
        console.error('arena:', error);
        json(res, 500, { error: 'internal error' });
      }
    });
  });

  /** The data plane's URL for a seat, on the host name the page used to reach us. */
  const answer = (req: IncomingMessage, seat: Seat): SeatAnswer => {
    const wsHost = hostOf(req) ?? (host === '0.0.0.0' ? '127.0.0.1' : host);
    return { ...seat, url: `ws://${wsHost}:${wsPort}/play?ticket=${seat.ticket}`, hz, arenaSize: ARENA_SIZE };
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://arena').pathname;
    if (req.method === 'GET' && path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(metrics());
      return;
    }
    if (req.method === 'POST' && path === '/api/login') {
      const body = await readJson(req);
      const name = typeof body === 'object' && body !== null ? (body as { name?: unknown }).name : undefined;
      if (typeof name !== 'string' || !NAME.test(name.trim())) {
        json(res, 400, { error: "name: 1 to 24 letters, digits, spaces or _ . ' -" });
        return;
      }
      // The wait for a room is this request: abandon the seat if the client goes away.
      const gone = new AbortController();
      res.on('close', () => {
        if (!res.writableEnded) gone.abort();
      });
      const seat = await control.login(name.trim(), gone.signal);
      json(res, 200, answer(req, seat));
      return;
    }
    if (req.method === 'POST' && path === '/api/reconnect') {
      const body = await readJson(req);
      const session = typeof body === 'object' && body !== null ? (body as { session?: unknown }).session : undefined;
      if (typeof session !== 'string' || !/^[\w-]{22}$/.test(session)) {
        json(res, 400, { error: 'session: the id login answered' });
        return;
      }
      json(res, 200, answer(req, control.reconnect(session)));
      return;
    }
    const asset: Asset | undefined = req.method === 'GET' ? assets.get(path) : undefined;
    if (asset === undefined) {
      json(res, 404, { error: 'not found' });
      return;
    }
    res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(asset.body);
  }

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => resolve());
  });
  const httpPort = (http.address() as AddressInfo).port;
  loop.start();

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${httpPort}`,
    wsPort,
    dispatcher: d,
    control,
    loop,
    ingress,
    metrics,
    close: () => {
      closing ??= (async () => {
        loop.stop();
        control.close();
        await closeHttp(http);
        await ingress.close();
        await d.close();
      })();
      return closing;
    },
  };
}

class BadRequest extends Error {}

/** The request's JSON body, at most MAX_BODY_BYTES. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > MAX_BODY_BYTES) throw new BadRequest(`body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new BadRequest('body: not JSON');
  }
}

function json(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

/** The host name of the request's Host header, if it is a plain host name or IP address. */
function hostOf(req: IncomingMessage): string | null {
  const header = req.headers.host;
  if (header === undefined) return null;
  try {
    const { hostname } = new URL(`http://${header}`);
    return /^[\w.-]+$|^\[[\da-f:.]+\]$/i.test(hostname) ? hostname : null;
  } catch {
    return null;
  }
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** `--name value` flags of the command line. */
function flags(argv: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    const value = inline ?? argv[i + 1];
    if (value === undefined || value === '' || (inline === undefined && value.startsWith('--'))) throw new Error(`--${k} needs a value`);
    if (inline === undefined) i++;
    out.set(k, value);
  }
  return out;
}

function intFlag(f: Map<string, string>, name: string, min: number, max: number): number | undefined {
  const v = f.get(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

async function main(): Promise<void> {
  const f = flags(process.argv.slice(2));
  const known = ['port', 'ws-port', 'host', 'room-size', 'queue-timeout-ms', 'grace-ms', 'max-players'];
  for (const k of f.keys()) if (!known.includes(k)) throw new Error(`unknown flag --${k} (known: ${known.map((x) => `--${x}`).join(' ')})`);
  const options: ArenaOptions = {};
  const set = <K extends keyof ArenaOptions>(key: K, value: ArenaOptions[K] | undefined): void => {
    if (value !== undefined) options[key] = value;
  };
  set('port', intFlag(f, 'port', 0, 65_535));
  set('wsPort', intFlag(f, 'ws-port', 0, 65_535));
  set('host', f.get('host'));
  set('roomSize', intFlag(f, 'room-size', 1, 64));
  set('queueTimeoutMs', intFlag(f, 'queue-timeout-ms', 0, 600_000));
  set('graceMs', intFlag(f, 'grace-ms', 0, 600_000));
  set('maxPlayers', intFlag(f, 'max-players', 1, 15_000));
  const arena = await startArena(options);
  console.log(`arena: open ${arena.url} (data plane ws://…:${arena.wsPort}, metrics ${arena.url}/metrics); Ctrl-C stops`);
  const stop = (signal: string): void => {
    console.log(`arena: ${signal}, shutting down`);
    arena.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(`arena: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
