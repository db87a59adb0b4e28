/**
 * Native ingress: `listen()` options, their resolution, and the names of transports and
 * close reasons the addon numbers.
 */
import { isUint8Array } from 'node:util/types';
import { ErrorCode, rangeError, typeError } from './errors';
import { allKeys, copyOfBytes, rejectUnknownKeys } from './options';

/** Where a transport listens. `port` 0 picks a free port (see `IngressServer.address`). */
export interface ListenAddress {
  port: number;
  /** An IP address, or `localhost` (127.0.0.1); no other host names. Default `127.0.0.1`; `0.0.0.0` for every interface. */
  host?: string;
}

export type Transport = 'ws' | 'tcp' | 'grpc';

/** Why a connection closed (`onDisconnect`). */
export type DisconnectReason =
  /** The client closed it: the WebSocket close handshake, a TCP stream ended between frames, a gRPC call ended or cancelled by the client. */
  | 'closed'
  /** The stream ended or failed mid-frame, a WebSocket ended without its close handshake (RFC 6455: abnormal), or the socket failed. */
  | 'reset'
  /** Nothing arrived for `idleTimeoutMs`. */
  | 'idle'
  /** Bytes that are not v1 frames. */
  | 'malformed'
  /** More than `maxRefusals` frames refused in a row (wrong sender, not a member, …). */
  | 'refused'
  /** The client did not read: its outbound queue stayed over `maxBackpressureBytes`. */
  | 'backpressure'
  /** A newer connection of the same room and player replaced it. */
  | 'replaced'
  /** `server.close()` or `dispatcher.close()`. */
  | 'shutdown'
  /** A WebSocket text message (moves are binary): close code 1003. */
  | 'text'
  /** A WebSocket protocol violation (close code 1002 or 1007). */
  | 'protocol'
  /** A WebSocket message over `maxMessageBytes` (close code 1009). */
  | 'too_big'
  /** `disconnect()` from the control plane. */
  | 'kicked';

/** What `disconnect()` tells the connections it closes (their `onDisconnect` reason is `kicked` either way). */
export interface DisconnectOptions {
  /**
   * The WebSocket close code: 1000, or 3000–4999 (4000–4999 are the application's own, as
   * Colyseus and uWebSockets.js clients use them). Default 1000.
   */
  code?: number;
  /**
   * The WebSocket close reason (at most 123 bytes of UTF-8), also the message of the gRPC
   * status (`ABORTED`). Default `'kicked'`. A TCP stream just ends: `send` a message first.
   */
  reason?: string;
}

/** The largest close reason a WebSocket close frame holds (125 bytes, less the code's 2). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** Reason names by the addon's numbers (crates/dispatcher/src/ingress/server.rs). */
const REASONS: readonly (DisconnectReason | undefined)[] = [
  undefined,
  'closed',
  'reset',
  'idle',
  'malformed',
  'refused',
  'backpressure',
  'replaced',
  'shutdown',
  'text',
  'protocol',
  'too_big',
  'kicked',
];
const TRANSPORTS: readonly Transport[] = ['ws', 'tcp', 'grpc'];

/** A connection opened. */
export interface ConnectionInfo {
  /**
   * The connection's id, the same on its `onConnection` and `onDisconnect`; unique in the
   * process (counted from 1, never reused, not even by a later `listen`). A player who
   * reconnects gets a new one: the `replaced` close names the old connection.
   */
  connectionId: number;
  room: number;
  player: number;
  transport: Transport;
  /**
   * The client's IP address as the socket saw it (`'203.0.113.7'`, `'2001:db8::1'`; an
   * IPv4 client of a dual-stack listener as IPv4), for per-address limits, bans and logs;
   * behind a proxy, the proxy's. `null` if the socket no longer knew it.
   */
  remoteAddress: string | null;
  /** The client's port (0 when `remoteAddress` is null). */
  remotePort: number;
}

/** A connection closed. */
export interface DisconnectInfo extends ConnectionInfo {
  reason: DisconnectReason;
}

export interface ListenOptions {
  /** WebSocket (RFC 6455): each binary message holds one or more v1 frames; the ticket in `?ticket=`. */
  ws?: ListenAddress;
  /** Raw TCP: the line `ticket <t>\n`, then back-to-back v1 frames. */
  tcp?: ListenAddress;
  /**
   * gRPC (HTTP/2, no TLS): `move_dispatcher.v1.Ingress/Moves` of the shipped
   * `proto/ingress.proto`, one bidirectional stream per connection; the ticket in the
   * metadata `authorization: Bearer <ticket>`.
   */
  grpc?: ListenAddress;
  /** The key tickets are signed with (`issueTicket`): 16–64 bytes, or a string taken as UTF-8. */
  ticketKey: Uint8Array | string;
  /** Open connections at most, every transport together, handshakes in flight included (a socket holds its slot from accept until its handshake fails, at most `handshakeTimeoutMs`); more are refused at once (WebSocket 503 `full`, TCP `error full`, gRPC `RESOURCE_EXHAUSTED`). The gRPC port also holds at most this many TCP sockets. Default 10,000. */
  maxConnections?: number;
  /** A connection with nothing to read for this long is closed (`idle`); WebSocket clients are pinged at half of it. 0 = never. Default 60,000. */
  idleTimeoutMs?: number;
  /** Outbound bytes queued per connection at most: `send` answers `backpressure` past it, then `dropped`. Default 64 KiB. */
  maxBackpressureBytes?: number;
  /** The largest WebSocket message (also bounds fragmented ones), and the largest `MoveFrames` of frames on gRPC. Default 64 KiB. */
  maxMessageBytes?: number;
  /** How long a client may take to send its upgrade request (WebSocket) or ticket line (TCP), or to have a call admitted on a new socket (gRPC). Default 5,000. */
  handshakeTimeoutMs?: number;
  /**
   * Handshakes in flight at once from one client address (an IPv6 client: from its /64),
   * every transport together; a gRPC socket counts until a call is admitted on it. More are
   * refused at once (WebSocket `503` `busy`, TCP `error busy`, gRPC: the socket is closed),
   * before they take a slot of `maxConnections`: one client opening sockets it never
   * completes cannot hold the server's slots. Admitted connections are not counted (players
   * behind one NAT address are not limited). 0 = no limit. Default 256.
   */
  maxHandshakesPerAddress?: number;
  /** Frames refused in a row after which a connection is closed (`refused`); 0 = never. Default 32. */
  maxRefusals?: number;
  /**
   * Called in batches (never per move) when connections open. A player who connects again
   * replaces its open connection: the new one's `onConnection` comes first, the old one's
   * `onDisconnect` (reason `replaced`) after it — count a player's connections, or skip
   * `replaced` closes, to track presence.
   */
  onConnection?: (info: ConnectionInfo) => void;
  /** Called in batches when connections close, with the reason (after the successor's `onConnection` for `replaced`). */
  onDisconnect?: (info: DisconnectInfo) => void;
}

/** A running native ingress (`Dispatcher.listen`). */
/**
 * The transports a `listen` options type asks for: keys present whose type excludes
 * `undefined`. `IngressServer.address` is typed non-null for them.
 */
export type ListenedTransports<O> = {
  [K in Transport]: K extends keyof O ? (undefined extends O[K] ? never : K) : never;
}[Transport];

/**
 * A running native ingress. `Listened`: the transports `listen` was given (inferred from
 * its options), whose `address` is never `null`.
 */
export interface IngressServer<Listened extends Transport = never> {
  /** The address a transport `listen` was given is bound to (the port actually chosen when 0 was asked). */
  address(transport: Listened): { host: string; port: number };
  /** The address a transport is bound to; `null` for a transport `listen` was not given. */
  address(transport: Transport): { host: string; port: number } | null;
  /** Open connections, handshakes in flight included (each holds a slot of `maxConnections`). */
  readonly connections: number;
  /** Stops accepting and closes every connection (`shutdown`); resolves once they have closed (their `onDisconnect` events delivered), waiting at most 2 s. */
  close(): Promise<void>;
}

/** What `send` answers. */
export type SendResult = 'sent' | 'backpressure' | 'dropped' | 'closed';

/** Where each transport listens, as the addon takes and answers them (not part of the API). */
export interface ListenAddresses {
  wsHost?: string;
  wsPort?: number;
  tcpHost?: string;
  tcpPort?: number;
  grpcHost?: string;
  grpcPort?: number;
}

/** Resolved options, as the addon takes them (not part of the API). */
export interface NativeListenOptions extends ListenAddresses {
  /** A Buffer (the addon takes one), typed without Node's types. */
  ticketKey: Uint8Array;
  maxConnections: number;
  idleTimeoutMs: number;
  maxBackpressureBytes: number;
  maxMessageBytes: number;
  handshakeTimeoutMs: number;
  maxHandshakesPerAddress: number;
  maxRefusals: number;
  /** Whether connection events are wanted (`onConnection` or `onDisconnect` given): none are queued otherwise. */
  connectionEvents: boolean;
  echoForTesting?: boolean;
}

/** `listen()`'s option keys. */
const LISTEN_KEYS = allKeys<ListenOptions>()([
  'ws',
  'tcp',
  'grpc',
  'ticketKey',
  'maxConnections',
  'idleTimeoutMs',
  'maxBackpressureBytes',
  'maxMessageBytes',
  'handshakeTimeoutMs',
  'maxHandshakesPerAddress',
  'maxRefusals',
  'onConnection',
  'onDisconnect',
]);
/** Internal test hooks `listen` takes without listing them. */
const LISTEN_HIDDEN_KEYS = ['echoForTesting'];
const ADDRESS_KEYS = allKeys<ListenAddress>()(['port', 'host']);

export const LISTEN_DEFAULTS = {
  maxConnections: 10_000,
  idleTimeoutMs: 60_000,
  maxBackpressureBytes: 64 * 1024,
  maxMessageBytes: 64 * 1024,
  handshakeTimeoutMs: 5_000,
  maxHandshakesPerAddress: 256,
  maxRefusals: 32,
} as const;

function int(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw rangeError(ErrorCode.InvalidOption, `listen: ${field} must be an integer from ${min} to ${max}, got ${String(value)}`, { field });
  }
  return value;
}

function address(value: unknown, field: string): { host: string; port: number } | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object') {
    throw typeError(ErrorCode.InvalidOption, `listen: ${field} must be { port, host? }`, { field });
  }
  rejectUnknownKeys(value, ADDRESS_KEYS, 'listen', ErrorCode.InvalidOption, `${field}.`);
  const { port, host } = value as { port?: unknown; host?: unknown };
  const p = int(port, `${field}.port`, 0, 65_535, -1);
  if (p < 0) throw typeError(ErrorCode.InvalidOption, `listen: ${field}.port is required`, { field: `${field}.port` });
  if (host !== undefined && typeof host !== 'string') {
    throw typeError(ErrorCode.InvalidOption, `listen: ${field}.host must be a string (an IP address)`, { field: `${field}.host` });
  }
  return { host: host ?? '127.0.0.1', port: p };
}

/** @internal Checks `listen()`'s options; throws typed errors naming the field. */
export function resolveListenOptions(options: ListenOptions): NativeListenOptions {
  if (options === null || typeof options !== 'object') {
    throw typeError(ErrorCode.InvalidOption, 'listen: options must be an object', { field: 'options' });
  }
  rejectUnknownKeys(options, LISTEN_KEYS, 'listen', ErrorCode.InvalidOption, '', LISTEN_HIDDEN_KEYS);
  const ws = address(options.ws, 'ws');
  const tcp = address(options.tcp, 'tcp');
  const grpc = address(options.grpc, 'grpc');
  if (ws === undefined && tcp === undefined && grpc === undefined) {
    throw typeError(ErrorCode.InvalidOption, 'listen: give at least one transport (ws, tcp, grpc)', { field: 'ws' });
  }
  const key = options.ticketKey;
  // A copy made from the view's internal slots (`new Uint8Array(view)`): a Proxy or a fake
  // view is refused, and a subclass cannot lie about its length.
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : isUint8Array(key) ? Buffer.from(copyOfBytes(key).buffer) : undefined;
  if (bytes === undefined || bytes.length < 16 || bytes.length > 64) {
    throw rangeError(ErrorCode.InvalidOption, 'listen: ticketKey must be 16 to 64 bytes (a Uint8Array, or a string taken as UTF-8)', { field: 'ticketKey' });
  }
  for (const cb of ['onConnection', 'onDisconnect'] as const) {
    if (options[cb] !== undefined && typeof options[cb] !== 'function') {
      throw typeError(ErrorCode.InvalidOption, `listen: ${cb} must be a function`, { field: cb });
    }
  }
  const echo = (options as { echoForTesting?: unknown }).echoForTesting === true;
  return {
    ...(ws === undefined ? {} : { wsHost: ws.host, wsPort: ws.port }),
    ...(tcp === undefined ? {} : { tcpHost: tcp.host, tcpPort: tcp.port }),
    ...(grpc === undefined ? {} : { grpcHost: grpc.host, grpcPort: grpc.port }),
    ticketKey: bytes,
    maxConnections: int(options.maxConnections, 'maxConnections', 1, 1_000_000, LISTEN_DEFAULTS.maxConnections),
    idleTimeoutMs: int(options.idleTimeoutMs, 'idleTimeoutMs', 0, 86_400_000, LISTEN_DEFAULTS.idleTimeoutMs),
    maxBackpressureBytes: int(options.maxBackpressureBytes, 'maxBackpressureBytes', 1024, 1 << 30, LISTEN_DEFAULTS.maxBackpressureBytes),
    maxMessageBytes: int(options.maxMessageBytes, 'maxMessageBytes', 128, 16 << 20, LISTEN_DEFAULTS.maxMessageBytes),
    handshakeTimeoutMs: int(options.handshakeTimeoutMs, 'handshakeTimeoutMs', 1, 600_000, LISTEN_DEFAULTS.handshakeTimeoutMs),
    maxHandshakesPerAddress: int(options.maxHandshakesPerAddress, 'maxHandshakesPerAddress', 0, 1_000_000, LISTEN_DEFAULTS.maxHandshakesPerAddress),
    maxRefusals: int(options.maxRefusals, 'maxRefusals', 0, 1_000_000, LISTEN_DEFAULTS.maxRefusals),
    connectionEvents: options.onConnection !== undefined || options.onDisconnect !== undefined,
    ...(echo ? { echoForTesting: true } : {}),
  };
}

/** @internal The connection event of an addon record (`peer`: its five address words). */
export function connectionEvent(flags: number, room: number, player: number, connectionId: number, peer: readonly number[]): { opened: boolean; info: DisconnectInfo } {
  const port = (peer[0] ?? 0) & 0xffff;
  const remoteAddress = addressOf(peer);
  return {
    opened: (flags & 1) === 1,
    info: {
      connectionId,
      room,
      player,
      transport: TRANSPORTS[(flags >> 8) & 0xff] ?? 'ws',
      remoteAddress,
      remotePort: remoteAddress === null ? 0 : port,
      reason: REASONS[(flags >> 16) & 0xff] ?? 'reset',
    },
  };
}

/**
 * The text of an address record: `port | family << 16`, then four big-endian words
 * (crates/binding `peer_words`). IPv4 dotted; IPv6 as RFC 5952 writes it (lower case, the
 * longest run of two or more zero groups as `::`).
 */
function addressOf(peer: readonly number[]): string | null {
  const family = ((peer[0] ?? 0) >>> 16) & 0xff;
  if (family === 4) {
    const a = (peer[1] ?? 0) >>> 0;
    return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
  }
  if (family !== 6) return null;
  const groups: number[] = [];
  for (let i = 1; i <= 4; i++) {
    const w = (peer[i] ?? 0) >>> 0;
    groups.push(w >>> 16, w & 0xffff);
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

export const SEND_RESULTS: readonly SendResult[] = ['sent', 'backpressure', 'dropped', 'closed'];
