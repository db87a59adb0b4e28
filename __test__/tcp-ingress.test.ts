/**
 * examples/tcp-ingress.ts on both engines: real node:net clients write frames split at odd
 * boundaries and merged into big writes; with a small room budget the server meets
 * Backpressure, pauses sockets and resumes them through whenWritable(). Every move must
 * arrive exactly once, in order; a malformed stream drops its connection only.
 */
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startTcpIngress } from '../examples/tcp-ingress';
import type { MoveBatch } from '../index';
import { ENGINES, Rng, concat, frame, skipReason, until, useDispatchers } from './helpers';

function hello(player: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(player, 0);
  return b;
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** Writes `bytes` in pieces of random sizes (1 byte up to 20 KiB), now and then yielding so the server reads them apart. */
async function writeInPieces(s: Socket, bytes: Uint8Array, rng: Rng): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const size = rng.chance(0.15) ? rng.range(5000, 20_000) : rng.chance(0.5) ? rng.range(1, 30) : rng.range(31, 700);
    const piece = bytes.subarray(at, Math.min(bytes.length, at + size));
    at += piece.length;
    if (!s.write(piece)) await new Promise<void>((resolve) => s.once('drain', resolve));
    if (rng.chance(0.3)) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

describe.each(ENGINES)('examples/tcp-ingress.ts [%s engine]', (engine) => {
  const skip = skipReason(engine);
  if (skip !== null) {
    it.skip(skip, () => undefined);
    return;
  }
  const make = useDispatchers(engine);

  it('frames split at odd boundaries and merged arrive exactly once, in order, through Backpressure pauses', async () => {
    const got = new Map<string, number[]>();
    let total = 0;
    const d = make({
      shards: 2,
      roomBytes: 4096,
      onBatch: (b: MoveBatch) => {
        for (const m of b) {
          const key = `${m.room}/${m.player}`;
          let list = got.get(key);
          if (list === undefined) got.set(key, (list = []));
          list.push(m.seq);
          total++;
        }
        expect(b.rejections).toEqual([]);
      },
    });
    const players = [1, 2, 3, 4];
    const rooms = [1, 2]; // one per shard
    for (const r of rooms) {
      d.openRoom(r, { delivery: 'push' });
      for (const p of players) d.join(r, p);
    }
    const ingress = await startTcpIngress(d, { admit: (p) => players.includes(p) });
    const PER_PLAYER = 600;
    try {
      await Promise.all(
        players.map(async (player) => {
          const rng = new Rng(1000 + player);
          const seqs = new Map(rooms.map((r) => [r, 0]));
          const frames: Uint8Array[] = [hello(player)];
          for (let i = 0; i < PER_PLAYER; i++) {
            const room = rooms[i % 2]!;
            const seq = seqs.get(room)! + 1;
            seqs.set(room, seq);
            frames.push(frame({ room, player, seq, payload: rng.int(61) }));
          }
          const s = await open(ingress.port);
          await writeInPieces(s, concat(frames), rng);
          s.end();
        }),
      );
      await until(() => total >= players.length * PER_PLAYER, 20_000, `${players.length * PER_PLAYER} moves (got ${total})`);
      await d.flush();
      for (const r of rooms) {
        for (const p of players) expect(got.get(`${r}/${p}`), `room ${r} player ${p}`).toEqual(Array.from({ length: PER_PLAYER / 2 }, (_, i) => i + 1));
      }
      expect(total).toBe(players.length * PER_PLAYER);
      const s = d.stats();
      expect(s.accepted).toBe(total);
      expect(s.delivered).toBe(total);
      expect(s.rejected).toBe(0);
      // the 4096-byte budget was met: sockets were paused and resumed through whenWritable()
      expect(ingress.stats.pauses).toBeGreaterThan(0);
      expect(s.verdicts.Backpressure).toBeGreaterThan(0);
      expect(ingress.stats.malformed).toBe(0);
      expect(ingress.stats.connections).toBe(players.length);
    } finally {
      await ingress.close();
    }
  });

  it('a malformed stream drops its connection; the frames before it and other connections are unaffected', async () => {
    const seqs: number[] = [];
    const d = make({
      onBatch: (b: MoveBatch) => {
        for (const m of b) seqs.push(m.player * 1000 + m.seq);
      },
    });
    d.openRoom(1, { delivery: 'push' });
    d.join(1, 1);
    d.join(1, 2);
    const ingress = await startTcpIngress(d);
    try {
      const bad = await open(ingress.port);
      const closed = new Promise<void>((resolve) => bad.once('close', () => resolve()));
      bad.on('error', () => undefined);
      bad.write(concat([hello(1), frame({ room: 1, player: 1, seq: 1 }), frame({ room: 1, player: 1, seq: 2 }).subarray(0, 30)]));
      await new Promise<void>((resolve) => setImmediate(resolve));
      // the rest of frame 2, then bytes that are not a header
      bad.write(concat([frame({ room: 1, player: 1, seq: 2 }).subarray(30), new Uint8Array(40).fill(0xee)]));
      await closed;
      const good = await open(ingress.port);
      good.end(concat([hello(2), frame({ room: 1, player: 2, seq: 1 }), frame({ room: 1, player: 1, seq: 9 }) /* not its player: WrongSender */]));
      await until(() => seqs.length >= 3, 10_000, 'three moves');
      await d.flush();
      expect(seqs).toEqual([1001, 1002, 2001]);
      expect(ingress.stats.malformed).toBe(1);
      expect(d.stats().verdicts.WrongSender).toBe(1);
    } finally {
      await ingress.close();
    }
  });
});
