/**
 * node:crypto as an outside oracle: the library's encoder must produce the digests
 * node:crypto computes, and both engines must accept exactly the frames whose tag
 * node:crypto agrees with.
 */
import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Reason, Verdict, encodeMove } from '../index';
import { ENGINES, HEADER, Rng, concat, flushAndDrain, frame, hex, keyFor, loadWireVectors, parse, skipReason, tagValid, useDispatchers } from './helpers';

const VECTORS = loadWireVectors();
const fromHex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

describe('encodeMove against node:crypto', () => {
  it.each(VECTORS.map((v) => [v.note, v] as const))('wire vector: %s', (_note, v) => {
    const key = v.key === undefined ? undefined : fromHex(v.key);
    const f = encodeMove({ room: v.room, player: v.player, seq: v.seq, tick: v.tick, kind: v.kind, payload: fromHex(v.payload), ...(key ? { key } : {}) });
    expect(f).toBeInstanceOf(Uint8Array);
    expect(hex(f)).toBe(v.frame);
    // the vector itself agrees with node:crypto
    const body = fromHex(v.frame).subarray(0, HEADER + v.payload.length / 2);
    const tag = key ? createHmac('sha256', key).update(body).digest('hex') : createHash('sha256').update(body).digest('hex');
    expect(v.frame.endsWith(tag)).toBe(true);
  });

  it('random moves: header layout and tag match node:crypto (SHA-256 and HMAC, keys 16..64 bytes)', () => {
    const rng = new Rng(0x0c0ffee);
    for (let i = 0; i < 2000; i++) {
      const payload = rng.bytes(rng.chance(0.05) ? rng.int(4097) : rng.int(300));
      const key = rng.chance(0.5) ? rng.bytes(rng.range(16, 64)) : undefined;
      const input = { room: rng.u32(), player: rng.u32(), seq: rng.range(1, 0xffffffff), tick: rng.u32(), kind: rng.int(65536), payload, ...(key ? { key } : {}) };
      const f = encodeMove(input);
      expect(f.length).toBe(56 + payload.length);
      const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
      expect([f[0], f[1], f[2], f[3]]).toEqual([0x4d, 0x56, 1, key ? 1 : 0]);
      expect([dv.getUint32(4, true), dv.getUint32(8, true), dv.getUint32(12, true), dv.getUint32(16, true), dv.getUint16(20, true), dv.getUint16(22, true)]).toEqual([
        input.room,
        input.player,
        input.seq,
        input.tick,
        input.kind,
        payload.length,
      ]);
      expect(hex(f.subarray(24, 24 + payload.length))).toBe(hex(payload));
      const body = f.subarray(0, 24 + payload.length);
      const want = key ? createHmac('sha256', key).update(body).digest('hex') : createHash('sha256').update(body).digest('hex');
      expect(hex(f.subarray(24 + payload.length)), `move ${i}`).toBe(want);
      // and the independent test encoder agrees byte for byte
      expect(hex(frame(input))).toBe(hex(f));
    }
  });

  it('tick, kind and payload default to 0 / empty', () => {
    const f = encodeMove({ room: 1, player: 2, seq: 3 });
    expect(hex(f)).toBe(hex(frame({ room: 1, player: 2, seq: 3 })));
  });
});

describe.each(ENGINES)('engines agree with node:crypto [%s engine]', (engine) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  it('the wire vectors are accepted and delivered byte-exact', async () => {
    const d = make({ shards: 2 });
    const rooms = new Set<number>();
    for (const v of VECTORS) {
      if (!rooms.has(v.room)) {
        d.openRoom(v.room, { auth: v.key ? 'hmac-sha256' : 'sha256' });
        rooms.add(v.room);
      }
      d.join(v.room, v.player, v.key ? { key: fromHex(v.key) } : {});
    }
    for (const v of VECTORS) expect(d.dispatch(fromHex(v.frame), v.player), v.note).toBe(Verdict.Accepted);
    const got = await flushAndDrain(d, rooms);
    for (const room of rooms) {
      const want = VECTORS.filter((v) => v.room === room).map((v) => fromHex(v.frame));
      expect(hex(concat(got.get(room)!.bytes)), `room ${room}`).toBe(hex(concat(want)));
      expect(got.get(room)!.rejections).toEqual([]);
    }
  });

  it('accepts exactly the frames whose tag node:crypto verifies', async () => {
    const d = make({ shards: 2, maxPayload: 2048, roomBytes: 8 << 20, arenaBytes: 8 << 20, channelCapacity: 1 << 16 });
    const rng = new Rng(0x5a17);
    const keys = new Map<number, Uint8Array>();
    d.openRoom(10); // sha256
    d.openRoom(11, { auth: 'hmac-sha256' });
    for (let p = 1; p <= 8; p++) {
      d.join(10, p);
      const key = rng.bytes(rng.range(16, 64));
      keys.set(p, key);
      d.join(11, p, { key });
    }
    const nextSeq = new Map<string, number>();
    const oracleValid = new Set<string>();
    const oracleInvalid = new Set<string>();
    for (let i = 0; i < 6000; i++) {
      const room = rng.pick([10, 11]);
      const player = rng.range(1, 8);
      const id = `${room}/${player}`;
      const seq = (nextSeq.get(id) ?? 0) + 1;
      nextSeq.set(id, seq);
      const payload = rng.bytes(rng.chance(0.05) ? rng.int(2049) : rng.int(200));
      const signKey = room === 11 ? (rng.chance(0.1) ? rng.bytes(rng.range(16, 64)) : keys.get(player)!) : undefined;
      let f = encodeMove({ room, player, seq, tick: rng.u32(), kind: rng.int(65536), payload, ...(signKey ? { key: signKey } : {}) });
      if (rng.chance(0.3)) {
        // flip bits only where framing and routing stay intact: tick, kind, payload, tag
        const positions = [16, 17, 18, 19, 20, 21];
        for (let k = 24; k < f.length; k++) positions.push(k);
        f = f.slice();
        const at = rng.pick(positions);
        f[at] = f[at]! ^ (1 << rng.int(8));
      }
      const ok = tagValid(f, room === 11 ? keys.get(player) : undefined);
      (ok ? oracleValid : oracleInvalid).add(`${id}/${seq}`);
      expect(d.dispatch(f, player)).toBe(Verdict.Accepted);
    }
    expect(oracleValid.size).toBeGreaterThan(3000);
    expect(oracleInvalid.size).toBeGreaterThan(1000);
    const got = await flushAndDrain(d, [10, 11]);
    const delivered = new Set<string>();
    const rejected = new Set<string>();
    for (const c of got.values()) {
      for (const m of c.moves) delivered.add(`${m.room}/${m.player}/${m.seq}`);
      for (const r of c.rejections) {
        expect(r.reason).toBe(Reason.BadTag);
        rejected.add(`${r.room}/${r.player}/${r.seq}`);
      }
    }
    const diff = (a: Set<string>, b: Set<string>): string[] => [...a].filter((x) => !b.has(x)).slice(0, 5);
    expect(diff(oracleValid, delivered), 'valid per node:crypto but not delivered').toEqual([]);
    expect(diff(delivered, oracleValid), 'delivered but invalid per node:crypto').toEqual([]);
    expect(diff(oracleInvalid, rejected), 'invalid per node:crypto but not rejected').toEqual([]);
    expect(delivered.size).toBe(oracleValid.size);
    expect(rejected.size).toBe(oracleInvalid.size);
    // delivered frames are exactly the bytes that were sent, and they verify
    for (const c of got.values()) for (const b of c.bytes) expect(b.length).toBeGreaterThan(0);
    for (const c of got.values()) {
      const all = concat(c.bytes);
      let at = 0;
      for (const m of c.moves) {
        const f = all.subarray(at, at + m.frameLength);
        expect(parse(f)).toEqual(m);
        expect(tagValid(f, m.room === 11 ? keys.get(m.player) : undefined)).toBe(true);
        at += m.frameLength;
      }
      expect(at).toBe(all.length);
    }
  });

  it('keys are used as given: keys sharing a prefix differ, exactly as node:crypto says', async () => {
    const d = make();
    d.openRoom(1, { auth: 'hmac-sha256' });
    const long = keyFor(1, 0, 64);
    const short = long.subarray(0, 16);
    d.join(1, 1, { key: long });
    d.join(1, 2, { key: short });
    const registered = new Map([
      [1, long],
      [2, short],
    ]);
    const cases: [player: number, key: Uint8Array][] = [
      [1, long.subarray(0, 16)],
      [1, long.subarray(0, 32)],
      [1, long.subarray(0, 63)],
      [1, long],
      [2, short],
      [2, long.subarray(0, 17)],
      // HMAC pads keys with zeros to the block size: node:crypto verifies this one too
      [2, concat([short, new Uint8Array(1)])],
    ];
    const expected: string[] = [];
    const expectedRejected: string[] = [];
    let seq = 1;
    for (const [player, key] of cases) {
      const f = encodeMove({ room: 1, player, seq, payload: new Uint8Array([seq]), key });
      (tagValid(f, registered.get(player)) ? expected : expectedRejected).push(`${player}:${seq}`);
      expect(d.dispatch(f)).toBe(Verdict.Accepted);
      seq++;
    }
    expect(expected).toEqual(['1:4', '2:5', '2:7']);
    const got = (await flushAndDrain(d, [1])).get(1)!;
    expect(got.moves.map((m) => `${m.player}:${m.seq}`)).toEqual(expected);
    expect(got.rejections.map((r) => `${r.player}:${r.seq}`)).toEqual(expectedRejected);
    expect(got.rejections.every((r) => r.reason === Reason.BadTag)).toBe(true);
  });
});
