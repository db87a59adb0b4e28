/**
 * The arena's simulation and its wire messages: pure, no I/O, no clock, no dispatcher —
 * unit-tested in __test__/arena-game.test.ts.
 *
 * Players steer dots in a square arena. A client never sends positions, only its input
 * (the direction it holds); the server applies every input in the order the data plane
 * delivered it, then advances the world by one fixed step per tick and sends each room its
 * state. Everything is little-endian.
 *
 * Input (the payload of a v1 frame of kind {@link KIND_INPUT}, {@link INPUT_BYTES} bytes):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 1 | dx, int8 (−127..127; 0 = still) |
 * | 1 | 1 | dy, int8 (screen axis: positive is down) |
 * | 2 | 4 | the client's send time, u32 ms of its own clock, echoed back for ping |
 *
 * The frame's `seq` is the input's sequence number, echoed back too; its `tick` is the
 * last server tick the client had seen (informational).
 *
 * State (server → every client of the room, one WebSocket message per tick):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 1 | type = {@link MSG_STATE} |
 * | 1 | 1 | 0 |
 * | 2 | 2 | n, players in the room |
 * | 4 | 4 | tick, u32 |
 * | 8 | 24 × n | per player: id u32, x f32, y f32, last input seq u32, its send time u32, flags u8 (bit 0: connected), 3 × 0 |
 *
 * Roster (server → clients when the room's players change, and to a client that connects):
 * type = {@link MSG_ROSTER} (1 byte), then UTF-8 JSON `[{ "id": 7, "name": "ada" }, …]`.
 */

/** Frame kind of an input move. */
export const KIND_INPUT = 1;
/** Payload bytes of an input. */
export const INPUT_BYTES = 6;
/** First byte of a state message. */
export const MSG_STATE = 1;
/** First byte of a roster message. */
export const MSG_ROSTER = 2;
/** Bytes of a state message's header, and per player. */
export const STATE_HEADER_BYTES = 8;
export const STATE_PLAYER_BYTES = 24;
/** Player flags in a state message. */
export const FLAG_CONNECTED = 1;

/** The arena's side, in world units (positions are in 0..ARENA_SIZE). */
export const ARENA_SIZE = 1000;
/** Speed of a dot holding a full direction, in world units per second. */
export const SPEED = 240;

/** One decoded input. */
export interface Input {
  dx: number;
  dy: number;
  clientTime: number;
}

/** Encodes an input payload (what a client puts in its frame). `dx`, `dy` are clamped to −127..127. */
export function encodeInput(input: Input): Uint8Array {
  const out = new Uint8Array(INPUT_BYTES);
  const view = new DataView(out.buffer);
  view.setInt8(0, clampInt8(input.dx));
  view.setInt8(1, clampInt8(input.dy));
  view.setUint32(2, input.clientTime >>> 0, true);
  return out;
}

/** Decodes an input payload; null unless it is exactly {@link INPUT_BYTES} bytes. */
export function decodeInput(payload: Uint8Array): Input | null {
  if (payload.length !== INPUT_BYTES) return null;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { dx: view.getInt8(0), dy: view.getInt8(1), clientTime: view.getUint32(2, true) };
}

function clampInt8(v: number): number {
  return Math.max(-127, Math.min(127, Math.trunc(v)));
}

/** A player's dot and what the server last heard from it. */
export interface Dot {
  readonly id: number;
  x: number;
  y: number;
  /** The direction held, each −127..127. */
  dx: number;
  dy: number;
  /** The last input's seq and client send time (echoed in the state). */
  lastSeq: number;
  lastClientTime: number;
  connected: boolean;
}

/** One room's world. */
export class RoomWorld {
  readonly dots = new Map<number, Dot>();

  constructor(readonly room: number) {}

  /** Adds a dot at a spawn point spread around the centre by its index. */
  add(player: number): Dot {
    const existing = this.dots.get(player);
    if (existing !== undefined) return existing;
    const i = this.dots.size;
    const angle = i * 2.399963; // the golden angle: spawn points never coincide
    const r = ARENA_SIZE * 0.3;
    const dot: Dot = {
      id: player,
      x: ARENA_SIZE / 2 + r * Math.cos(angle),
      y: ARENA_SIZE / 2 + r * Math.sin(angle),
      dx: 0,
      dy: 0,
      lastSeq: 0,
      lastClientTime: 0,
      connected: false,
    };
    this.dots.set(player, dot);
    return dot;
  }

  remove(player: number): boolean {
    return this.dots.delete(player);
  }

  /** Applies one input of `player` (in delivery order); false when the player has no dot. */
  apply(player: number, seq: number, input: Input): boolean {
    const dot = this.dots.get(player);
    if (dot === undefined) return false;
    dot.dx = clampInt8(input.dx);
    dot.dy = clampInt8(input.dy);
    dot.lastSeq = seq;
    dot.lastClientTime = input.clientTime >>> 0;
    return true;
  }

  /** The player stops (used when its connection drops: the dot stays, still). */
  stop(player: number): void {
    const dot = this.dots.get(player);
    if (dot !== undefined) {
      dot.dx = 0;
      dot.dy = 0;
    }
  }

  /** Advances every dot by `dtSeconds`: the held direction, normalised, at {@link SPEED}; walls clamp. */
  step(dtSeconds: number): void {
    for (const dot of this.dots.values()) {
      const length = Math.hypot(dot.dx, dot.dy);
      if (length === 0) continue;
      // A direction shorter than full (an analogue stick, a pointer near the dot) moves slower.
      const scale = (SPEED * dtSeconds * Math.min(1, length / 127)) / length;
      dot.x = clamp(dot.x + dot.dx * scale, 0, ARENA_SIZE);
      dot.y = clamp(dot.y + dot.dy * scale, 0, ARENA_SIZE);
    }
  }

  /** Bytes of this room's state message. */
  stateBytes(): number {
    return STATE_HEADER_BYTES + STATE_PLAYER_BYTES * this.dots.size;
  }

  /**
   * Writes the state message for `tick` into `out` (at least {@link stateBytes} long) and
   * returns its length: the server reuses one buffer for every room (broadcast copies).
   */
  encodeStateInto(tick: number, out: Uint8Array): number {
    const bytes = this.stateBytes();
    if (out.length < bytes) throw new RangeError(`encodeStateInto: need ${bytes} bytes, got ${out.length}`);
    const view = new DataView(out.buffer, out.byteOffset, bytes);
    view.setUint8(0, MSG_STATE);
    view.setUint8(1, 0);
    view.setUint16(2, this.dots.size, true);
    view.setUint32(4, tick >>> 0, true);
    let at = STATE_HEADER_BYTES;
    for (const dot of this.dots.values()) {
      view.setUint32(at, dot.id, true);
      view.setFloat32(at + 4, dot.x, true);
      view.setFloat32(at + 8, dot.y, true);
      view.setUint32(at + 12, dot.lastSeq >>> 0, true);
      view.setUint32(at + 16, dot.lastClientTime >>> 0, true);
      view.setUint32(at + 20, dot.connected ? FLAG_CONNECTED : 0, true);
      at += STATE_PLAYER_BYTES;
    }
    return bytes;
  }

  /** The state message for `tick`, in a new array. */
  encodeState(tick: number): Uint8Array {
    const out = new Uint8Array(this.stateBytes());
    this.encodeStateInto(tick, out);
    return out;
  }
}

/** A player as a state message tells it. */
export interface DotState {
  id: number;
  x: number;
  y: number;
  lastSeq: number;
  lastClientTime: number;
  connected: boolean;
}

/** A decoded state message. */
export interface State {
  tick: number;
  dots: DotState[];
}

/** Decodes a state message (bots and tests; the browser client has its own copy); null if malformed. */
export function decodeState(message: Uint8Array): State | null {
  if (message.length < STATE_HEADER_BYTES || message[0] !== MSG_STATE) return null;
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const n = view.getUint16(2, true);
  if (message.length !== STATE_HEADER_BYTES + n * STATE_PLAYER_BYTES) return null;
  const dots: DotState[] = [];
  for (let i = 0, at = STATE_HEADER_BYTES; i < n; i++, at += STATE_PLAYER_BYTES) {
    dots.push({
      id: view.getUint32(at, true),
      x: view.getFloat32(at + 4, true),
      y: view.getFloat32(at + 8, true),
      lastSeq: view.getUint32(at + 12, true),
      lastClientTime: view.getUint32(at + 16, true),
      connected: (view.getUint8(at + 20) & FLAG_CONNECTED) !== 0,
    });
  }
  return { tick: view.getUint32(4, true), dots };
}

/** A roster message: who is in the room, by id and name. */
export function encodeRoster(players: readonly { id: number; name: string }[]): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(players.map(({ id, name }) => ({ id, name }))));
  const out = new Uint8Array(1 + json.length);
  out[0] = MSG_ROSTER;
  out.set(json, 1);
  return out;
}

function clamp(v: number, min: number, max: number): number {
  return v < min ? min : v > max ? max : v;
}
