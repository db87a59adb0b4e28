/**
 * examples/arena/game.ts: the input payload and the state message round-trip byte for byte
 * (the layout the browser client decodes), and the simulation steps as documented.
 */
import { describe, expect, it } from 'vitest';
import {
  ARENA_SIZE,
  decodeInput,
  decodeState,
  encodeInput,
  encodeRoster,
  INPUT_BYTES,
  MSG_ROSTER,
  MSG_STATE,
  RoomWorld,
  SPEED,
  STATE_HEADER_BYTES,
  STATE_PLAYER_BYTES,
} from '../examples/arena/game';

describe('arena game', () => {
  it('an input is 6 bytes: dx, dy int8 and the client time u32, little-endian; values clamp', () => {
    const bytes = encodeInput({ dx: -127, dy: 300, clientTime: 0x01020304 });
    expect([...bytes]).toEqual([0x81, 0x7f, 0x04, 0x03, 0x02, 0x01]);
    expect(decodeInput(bytes)).toEqual({ dx: -127, dy: 127, clientTime: 0x01020304 });
    expect(decodeInput(new Uint8Array(INPUT_BYTES - 1))).toBeNull();
    expect(decodeInput(new Uint8Array(INPUT_BYTES + 1))).toBeNull();
    // a view into a bigger buffer decodes from its own offset
    const big = new Uint8Array(16);
    big.set(bytes, 5);
    expect(decodeInput(big.subarray(5, 11))).toEqual({ dx: -127, dy: 127, clientTime: 0x01020304 });
  });

  it('the state message: header, then 24 bytes per player, exactly as documented', () => {
    const world = new RoomWorld(3);
    world.add(7);
    world.add(9);
    world.dots.get(7)!.x = 1.5;
    world.dots.get(7)!.y = 999.25;
    world.dots.get(7)!.connected = true;
    world.apply(9, 42, { dx: 1, dy: 0, clientTime: 0xfffffffe });
    const msg = world.encodeState(0x01020304);
    expect(msg.length).toBe(STATE_HEADER_BYTES + 2 * STATE_PLAYER_BYTES);
    expect([...msg.subarray(0, 8)]).toEqual([MSG_STATE, 0, 2, 0, 4, 3, 2, 1]);
    const v = new DataView(msg.buffer);
    expect(v.getUint32(8, true)).toBe(7);
    expect(v.getFloat32(12, true)).toBe(1.5);
    expect(v.getFloat32(16, true)).toBe(999.25);
    expect(v.getUint32(20, true)).toBe(0);
    expect(msg[28]).toBe(1); // connected
    expect([...msg.subarray(29, 32)]).toEqual([0, 0, 0]);
    expect(v.getUint32(32, true)).toBe(9);
    expect(v.getUint32(44, true)).toBe(42);
    expect(v.getUint32(48, true)).toBe(0xfffffffe);
    expect(msg[52]).toBe(0);
    const state = decodeState(msg)!;
    expect(state.tick).toBe(0x01020304);
    expect(state.dots.map((d) => [d.id, d.lastSeq, d.connected])).toEqual([
      [7, 0, true],
      [9, 42, false],
    ]);
    // into a reused buffer: same bytes, length answered
    const scratch = new Uint8Array(200).fill(0xee);
    expect(world.encodeStateInto(0x01020304, scratch)).toBe(msg.length);
    expect(scratch.subarray(0, msg.length)).toEqual(msg);
    expect(() => world.encodeStateInto(1, new Uint8Array(10))).toThrow(RangeError);
  });

  it('decodeState refuses what is not a whole state message', () => {
    const msg = new RoomWorld(1).encodeState(5);
    expect(decodeState(msg)).toEqual({ tick: 5, dots: [] });
    expect(decodeState(msg.subarray(0, 7))).toBeNull();
    const one = (() => {
      const w = new RoomWorld(1);
      w.add(1);
      return w.encodeState(1);
    })();
    expect(decodeState(one.subarray(0, one.length - 1))).toBeNull();
    expect(decodeState(encodeRoster([{ id: 1, name: 'a' }]))).toBeNull();
  });

  it('a roster is its type byte and UTF-8 JSON of ids and names', () => {
    const msg = encodeRoster([{ id: 7, name: 'Ada Ł' }]);
    expect(msg[0]).toBe(MSG_ROSTER);
    expect(JSON.parse(new TextDecoder().decode(msg.subarray(1)))).toEqual([{ id: 7, name: 'Ada Ł' }]);
  });

  it('inputs apply in order (the last one holds), steps move at SPEED, walls clamp, stop() stops', () => {
    const world = new RoomWorld(1);
    const dot = world.add(1);
    dot.x = 500;
    dot.y = 500;
    world.apply(1, 1, { dx: 0, dy: 127, clientTime: 1 });
    world.apply(1, 2, { dx: 127, dy: 0, clientTime: 2 });
    world.step(0.05);
    expect(dot.x).toBeCloseTo(500 + SPEED * 0.05, 5);
    expect(dot.y).toBe(500);
    expect(dot.lastSeq).toBe(2);
    world.apply(1, 3, { dx: 127, dy: 127, clientTime: 3 }); // diagonal: normalised, same speed
    const [x0, y0] = [dot.x, dot.y];
    world.step(0.05);
    expect(Math.hypot(dot.x - x0, dot.y - y0)).toBeCloseTo(SPEED * 0.05, 5);
    for (let i = 0; i < 200; i++) world.step(0.05);
    expect([dot.x, dot.y]).toEqual([ARENA_SIZE, ARENA_SIZE]);
    world.stop(1);
    world.step(0.05);
    expect([dot.x, dot.y]).toEqual([ARENA_SIZE, ARENA_SIZE]);
    expect(world.apply(99, 1, { dx: 1, dy: 1, clientTime: 0 })).toBe(false);
  });

  it('spawn points differ and lie inside the arena', () => {
    const world = new RoomWorld(1);
    const dots = Array.from({ length: 16 }, (_, i) => world.add(i + 1));
    const keys = new Set(dots.map((d) => `${Math.round(d.x)},${Math.round(d.y)}`));
    expect(keys.size).toBe(16);
    for (const d of dots) {
      expect(d.x).toBeGreaterThanOrEqual(0);
      expect(d.x).toBeLessThanOrEqual(ARENA_SIZE);
    }
  });
});
