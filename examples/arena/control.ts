/**
 * The control plane: sessions, matchmaking, rooms and presence. It decides who plays
 * where; the data plane (the dispatcher's native ingress) carries the traffic.
 *
 * - `login(name)` creates a session — a fresh 32-byte HMAC key and a player id — and puts
 *   it in the matchmaking queue. A room opens when `roomSize` players wait, or when the
 *   first of them has waited `queueTimeoutMs` (then with fewer). The room is opened
 *   `auth: 'hmac-sha256'`, each player joined with its key, and each gets a ticket.
 * - Presence comes from the ingress's `onConnection` / `onDisconnect`. A player without a
 *   connection (never connected, or dropped) keeps its seat for `graceMs`; within it,
 *   `reconnect(session)` hands out a new ticket and a new key; after it, the player leaves
 *   the room and its session ends. A room with no player left is closed.
 * - Memory is bounded: at most `maxPlayers` sessions (queued or seated) exist; a session
 *   lives only while its player is connected or within its grace period.
 *
 * Why a new key on reconnect: the data plane remembers each player's seqs (the replay
 * window) for as long as it is joined, and a reloaded page has forgotten its last seq.
 * `leave` + `join` with a fresh key starts a new window, so the client counts from 1 again;
 * frames still in flight under the old key are refused (`BadTag`), never replayed.
 */
import { randomBytes } from 'node:crypto';
import { issueTicket, type ConnectionInfo, type DisconnectInfo, type Dispatcher } from '../../index';
import { encodeRoster, RoomWorld } from './game';

export interface ControlOptions {
  /** Players per room. */
  roomSize: number;
  /** The longest a player waits in the queue before a room starts with fewer (ms). */
  queueTimeoutMs: number;
  /** How long a disconnected player keeps its seat (ms). */
  graceMs: number;
  /** Sessions at most (queued and seated); more logins are refused. */
  maxPlayers: number;
  /** Lifetime of the tickets handed out (ms; a client connects within it). */
  ticketTtlMs: number;
  /**
   * Inputs a player may send per second (the clients send one per tick). The room's rate
   * limit: a player flooding valid inputs is answered `RateLimited` (its connection closed
   * after `maxRefusals` in a row) instead of filling the room's budget and delaying the
   * inputs of everyone else in it.
   */
  inputsPerSecond: number;
}

/** What a player needs to connect to the data plane (the HTTP answer adds the URL). */
export interface Seat {
  session: string;
  player: number;
  name: string;
  room: number;
  /** The player's HMAC key for its frames (base64). */
  key: string;
  ticket: string;
}

/** A refusal that the HTTP layer answers with `status`. */
export class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Session {
  readonly id: string;
  readonly player: number;
  readonly name: string;
  key: Buffer;
  room: ArenaRoom | null;
  /** Open data-plane connections (a replaced connection closes after its successor opens). */
  connections: number;
  /** Ends the seat when it fires: set while the player has no connection. */
  grace: NodeJS.Timeout | null;
}

interface Waiting {
  session: Session;
  resolve(seat: Seat): void;
  reject(error: Error): void;
}

/** A room: its players and its world. */
export interface ArenaRoom {
  readonly id: number;
  readonly world: RoomWorld;
  readonly players: Map<number, Session>;
}

/** Counters for `/metrics`. */
export interface ControlCounters {
  logins: number;
  loginsRefused: number;
  reconnects: number;
  graceExpired: number;
  roomsOpened: number;
  roomsClosed: number;
}

export class Control {
  readonly rooms = new Map<number, ArenaRoom>();
  readonly counters: ControlCounters = { logins: 0, loginsRefused: 0, reconnects: 0, graceExpired: 0, roomsOpened: 0, roomsClosed: 0 };
  readonly #sessions = new Map<string, Session>();
  readonly #byPlayer = new Map<number, Session>();
  readonly #queue: Waiting[] = [];
  #queueTimer: NodeJS.Timeout | null = null;
  #nextPlayer = 1;
  #nextRoom = 1;
  #closed = false;

  constructor(
    readonly d: Dispatcher,
    readonly ticketKey: Uint8Array,
    readonly options: ControlOptions,
  ) {}

  get sessions(): number {
    return this.#sessions.size;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Players with a seat in a room. */
  get seated(): number {
    let n = 0;
    for (const room of this.rooms.values()) n += room.players.size;
    return n;
  }

  /**
   * A new session for `name` (already validated), seated when matchmaking places it.
   * `signal` aborts the wait (the HTTP client went away): the session is dropped.
   */
  login(name: string, signal?: AbortSignal): Promise<Seat> {
    if (this.#closed) return Promise.reject(new ControlError(503, 'shutting down'));
    if (this.#sessions.size >= this.options.maxPlayers) {
      this.counters.loginsRefused++;
      return Promise.reject(new ControlError(503, 'the server is full'));
    }
    this.counters.logins++;
    const session: Session = { id: randomBytes(16).toString('base64url'), player: this.#nextPlayer++, name, key: randomBytes(32), room: null, connections: 0, grace: null };
    this.#sessions.set(session.id, session);
    this.#byPlayer.set(session.player, session);
    return new Promise<Seat>((resolve, reject) => {
      const waiting: Waiting = { session, resolve, reject };
      this.#queue.push(waiting);
      signal?.addEventListener('abort', () => {
        const at = this.#queue.indexOf(waiting);
        if (at < 0) return; // already seated: the grace period takes care of it
        this.#queue.splice(at, 1);
        this.#forget(session);
        reject(new ControlError(499, 'login abandoned'));
      });
      this.#match();
    });
  }

  /** A new ticket (and key) for a seated session: the player reconnects to its room. */
  reconnect(sessionId: string): Seat {
    const session = this.#sessions.get(sessionId);
    if (session === undefined || session.room === null) throw new ControlError(404, 'no such session (expired, or still in the queue)');
    const room = session.room;
    this.counters.reconnects++;
    session.key.fill(0);
    session.key = randomBytes(32);
    // A fresh replay window with the fresh key (see the module comment). Ordered with the
    // moves around it: the old connection's moves accepted before still arrive.
    this.d.leave(room.id, session.player);
    this.d.join(room.id, session.player, { key: session.key });
    const dot = room.world.dots.get(session.player);
    if (dot !== undefined) dot.lastSeq = 0;
    return this.#seat(session, room);
  }

  /** `listen({ onConnection })`: a player's connection opened. */
  onConnection = ({ room, player }: ConnectionInfo): void => {
    const session = this.#byPlayer.get(player);
    if (session === undefined || session.room?.id !== room) {
      // A ticket outlived its seat (the grace period ended in between): not a player any more.
      this.d.disconnect(room, player);
      return;
    }
    session.connections++;
    if (session.grace !== null) clearTimeout(session.grace);
    session.grace = null;
    const dot = session.room.world.dots.get(player);
    if (dot !== undefined) dot.connected = true;
    this.d.broadcast(room, encodeRoster(this.#roster(session.room)));
  };

  /** `listen({ onDisconnect })`: a player's connection closed (any reason). */
  onDisconnect = ({ room, player }: DisconnectInfo): void => {
    const session = this.#byPlayer.get(player);
    if (session === undefined || session.room?.id !== room) return;
    session.connections = Math.max(0, session.connections - 1);
    if (session.connections > 0) return; // replaced by a newer connection
    session.room.world.stop(player);
    const dot = session.room.world.dots.get(player);
    if (dot !== undefined) dot.connected = false;
    this.#startGrace(session);
  };

  /** Stops matchmaking and timers; queued logins are refused. Rooms stay open (the dispatcher closes). */
  close(): void {
    this.#closed = true;
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
    for (const w of this.#queue.splice(0)) w.reject(new ControlError(503, 'shutting down'));
    for (const s of this.#sessions.values()) if (s.grace !== null) clearTimeout(s.grace);
  }

  /** Opens rooms for the queue: full ones now, a short one when the oldest waited too long. */
  #match(): void {
    while (this.#queue.length >= this.options.roomSize) this.#openRoom(this.#queue.splice(0, this.options.roomSize));
    if (this.#queue.length === 0) {
      if (this.#queueTimer !== null) clearTimeout(this.#queueTimer);
      this.#queueTimer = null;
    } else if (this.#queueTimer === null) {
      this.#queueTimer = setTimeout(() => {
        this.#queueTimer = null;
        if (this.#queue.length > 0) this.#openRoom(this.#queue.splice(0));
      }, this.options.queueTimeoutMs);
      this.#queueTimer.unref();
    }
  }

  #openRoom(waiting: Waiting[]): void {
    const id = this.#nextRoom++;
    const room: ArenaRoom = { id, world: new RoomWorld(id), players: new Map() };
    // Twice the clients' rate, a second of it as burst: jitter and a reconnect's catch-up
    // pass, a flood does not.
    const perSecond = this.options.inputsPerSecond;
    this.d.openRoom(room.id, { auth: 'hmac-sha256', delivery: 'pull', rateLimit: { perSecond: 2 * perSecond, burst: perSecond } });
    this.rooms.set(room.id, room);
    this.counters.roomsOpened++;
    for (const { session, resolve } of waiting) {
      this.d.join(room.id, session.player, { key: session.key });
      room.players.set(session.player, session);
      room.world.add(session.player);
      session.room = room;
      // Seated but not connected yet: the grace period runs until the first connection.
      this.#startGrace(session);
      resolve(this.#seat(session, room));
    }
  }

  #seat(session: Session, room: ArenaRoom): Seat {
    return {
      session: session.id,
      player: session.player,
      name: session.name,
      room: room.id,
      key: session.key.toString('base64'),
      ticket: issueTicket(this.ticketKey, { room: room.id, player: session.player, ttlMs: this.options.ticketTtlMs }),
    };
  }

  #startGrace(session: Session): void {
    if (session.grace !== null) clearTimeout(session.grace);
    session.grace = setTimeout(() => {
      session.grace = null;
      this.counters.graceExpired++;
      this.#leaveRoom(session);
    }, this.options.graceMs);
    session.grace.unref();
  }

  /** The player leaves its room for good; the session ends; an empty room closes. */
  #leaveRoom(session: Session): void {
    const room = session.room;
    this.#forget(session);
    if (room === null) return;
    this.d.leave(room.id, session.player);
    this.d.disconnect(room.id, session.player);
    room.players.delete(session.player);
    room.world.remove(session.player);
    if (room.players.size === 0) {
      this.d.closeRoom(room.id);
      this.rooms.delete(room.id);
      this.counters.roomsClosed++;
    } else {
      this.d.broadcast(room.id, encodeRoster(this.#roster(room)));
    }
  }

  #forget(session: Session): void {
    if (session.grace !== null) clearTimeout(session.grace);
    session.grace = null;
    session.key.fill(0);
    this.#sessions.delete(session.id);
    this.#byPlayer.delete(session.player);
  }

  #roster(room: ArenaRoom): { id: number; name: string }[] {
    return [...room.players.values()].map((s) => ({ id: s.player, name: s.name }));
  }
}
