/**
 * The js engine's `LogHistogram` snapshots visit only the buckets counted in since the last
 * reset. Regression: a snapshot used to walk all 27,648 buckets of each histogram; run cold
 * (a `stats()` call is rare) the engine's four histograms took 20–50 ms, a stall of the
 * event loop that put every move in flight behind it (the js row's p99.9 of tens of
 * milliseconds at 1,000 moves/s in `npm run bench`, whose window starts with
 * `stats({ reset: true })`).
 *
 * Checked here: snapshots, merges and Prometheus counts against a brute-force model over
 * random intervals, and that a snapshot's cost follows what was recorded, not the range.
 */
import { describe, expect, it } from 'vitest';
import { LATENCY_LE_NS, LogHistogram } from '../src/histogram';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** The histogram of `samples` as a snapshot reports it: sorted `[highest, count]` pairs. */
function model(samples: number[], max: number): [number, number][] {
  const counts = new Map<number, number>();
  for (const raw of samples) {
    const v = raw <= 0 ? 0 : raw >= max ? max : Math.round(raw);
    const i = LogHistogram.index(v);
    counts.set(i, (counts.get(i) ?? 0) + 1);
  }
  return [...counts.entries()].sort((a, b) => a[0] - b[0]).map(([i, c]) => [LogHistogram.highest(i), c]);
}

function quantile(buckets: [number, number][], q: number): number {
  const count = buckets.reduce((a, [, c]) => a + c, 0);
  if (count === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * count));
  let seen = 0;
  for (const [v, c] of buckets) {
    seen += c;
    if (seen >= rank) return v;
  }
  return buckets[buckets.length - 1]![0];
}

describe('LogHistogram snapshots', () => {
  it('index() and highest() agree with the layout across the whole range', () => {
    // Every bucket boundary of every power of two up to the engine's 60 s range.
    for (let e = 11; e <= 35; e++) {
      for (const sub of [0, 1, 511, 1022, 1023]) {
        const lo = (1024 + sub) * 2 ** (e - 10);
        const i = LogHistogram.index(lo);
        expect(LogHistogram.highest(i)).toBe(lo + 2 ** (e - 10) - 1);
        expect(LogHistogram.index(lo + 2 ** (e - 10) - 1)).toBe(i);
        expect(LogHistogram.index(lo - 1)).toBe(i - 1);
      }
    }
    expect(LogHistogram.index(2 ** 32 - 1)).toBe(LogHistogram.index(2 ** 32) - 1);
  });

  it('intervals, merges and cumulative counts match a brute-force model', () => {
    const next = rng(7);
    const max = 60e9;
    const hists = [new LogHistogram(max), new LogHistogram(max), new LogHistogram(max)];
    const all: number[][] = [[], [], []];
    for (let interval = 0; interval < 40; interval++) {
      const since: number[][] = [[], [], []];
      const n = Math.floor(next() * 400);
      for (let k = 0; k < n; k++) {
        const h = Math.floor(next() * 3);
        // Mostly a narrow band (repeats hit the same buckets across intervals), some wide
        // values, some out of range.
        const r = next();
        const v = r < 0.6 ? 5000 + Math.floor(next() * 300) : r < 0.97 ? Math.exp(next() * 24) : r < 0.985 ? -1 : 1e12;
        hists[h]!.record(v);
        since[h]!.push(v);
        all[h]!.push(v);
      }
      const reset = next() < 0.7;
      const merged = LogHistogram.merged(hists, reset);
      const expected = model(since.flat(), max);
      expect(merged.buckets).toEqual(expected);
      expect(merged.count).toBe(since.flat().length);
      for (const [q, got] of [
        [0.5, merged.p50],
        [0.9, merged.p90],
        [0.99, merged.p99],
        [0.999, merged.p999],
      ] as const) {
        expect(got).toBe(quantile(expected, q));
      }
      expect(merged.min).toBe(expected[0]?.[0] ?? 0);
      expect(merged.max).toBe(expected[expected.length - 1]?.[0] ?? 0);
      if (!reset) {
        // Not reset: the interval goes on (the model's samples carry over to the next one).
        const again = LogHistogram.merged(hists, true);
        expect(again.buckets).toEqual(expected);
      }
      for (let h = 0; h < 3; h++) {
        expect(hists[h]!.snapshot(false).count).toBe(0);
        const c = hists[h]!.cumulative(LATENCY_LE_NS);
        const m = model(all[h]!, max);
        expect(c.count).toBe(all[h]!.length);
        expect(c.cumulative).toEqual(LATENCY_LE_NS.map((le) => m.filter(([v]) => v <= le).reduce((a, [, k]) => a + k, 0)));
      }
    }
  });

  it('a snapshot costs what was recorded since the last one, not the range of the histogram', () => {
    const h = new LogHistogram(60e9);
    const warm = (): void => {
      for (let i = 0; i < 200; i++) {
        h.record(1000 + (i % 7) * 1e5);
        h.snapshot(true);
      }
    };
    warm();
    let seen = 0;
    const t = performance.now();
    for (let i = 0; i < 20_000; i++) {
      h.record(1000 + (i % 7) * 1e5);
      seen += h.snapshot(true).count;
    }
    // Walking the 27,648 buckets each time took ~2.8 s here; visiting the one counted in,
    // ~40 ms. The bound leaves room for a slow, shared machine.
    const ms = performance.now() - t;
    expect(seen).toBe(20_000);
    expect(ms).toBeLessThan(700);
  });
});
