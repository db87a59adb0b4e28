/**
 * The js engine's log-linear histogram against an independent computation: percentiles of
 * the sorted samples, within the 3-significant-digit precision.
 */
import { describe, expect, it } from 'vitest';
import { CoarseHistogram, LATENCY_LE_NS, LogHistogram } from '../src/histogram';

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

describe('LogHistogram', () => {
  it('buckets are exact below 2048 and within 0.1% above', () => {
    for (const v of [0, 1, 2047, 2048, 2049, 4095, 4096, 123_456, 1e9, 59e9]) {
      const h = LogHistogram.highest(LogHistogram.index(v));
      expect(h).toBeGreaterThanOrEqual(v);
      expect(h - v).toBeLessThanOrEqual(Math.max(0, v / 1000));
    }
  });

  it('percentiles agree with the sorted samples', () => {
    const next = rng(42);
    const h = new LogHistogram(60e9);
    const samples: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const v = Math.round(Math.exp(next() * 20)); // 1 ns .. ~0.5 s, log-uniform
      samples.push(v);
      h.record(v);
    }
    samples.sort((a, b) => a - b);
    const s = h.snapshot(false);
    expect(s.count).toBe(samples.length);
    for (const [q, got] of [
      [0.5, s.p50],
      [0.9, s.p90],
      [0.99, s.p99],
      [0.999, s.p999],
    ] as const) {
      const exact = samples[Math.ceil(q * samples.length) - 1]!;
      expect(got).toBeGreaterThanOrEqual(exact);
      expect(got - exact).toBeLessThanOrEqual(Math.max(1, exact / 1000));
    }
    expect(s.min).toBe(samples[0]);
    expect(s.max - samples[samples.length - 1]!).toBeLessThanOrEqual(samples[samples.length - 1]! / 1000);
    expect(s.buckets.reduce((a, [, c]) => a + c, 0)).toBe(samples.length);
  });

  it('reset starts a new interval; cumulative counts never reset', () => {
    const h = new LogHistogram(60e9);
    for (let i = 0; i < 10; i++) h.record(100);
    expect(h.snapshot(true).count).toBe(10);
    h.record(1e6);
    const after = h.snapshot(false);
    expect(after).toMatchObject({ count: 1, sum: 1e6 });
    expect(after.min - 1e6).toBeLessThanOrEqual(1e6 / 1000);
    const c = h.cumulative(LATENCY_LE_NS);
    expect(c.count).toBe(11);
    expect(c.cumulative[LATENCY_LE_NS.indexOf(100)]).toBe(10);
    expect(c.cumulative[c.cumulative.length - 1]).toBe(11);
  });
});

describe('CoarseHistogram (per-subject overload waits)', () => {
  it('quantiles are the sample of that rank, at most 25% above it', () => {
    for (const [seed, n] of [
      [1, 1],
      [2, 9],
      [3, 1000],
      [4, 50_000],
    ] as const) {
      const next = rng(seed);
      const values = Array.from({ length: n }, () => Math.floor(next() ** 4 * 5e9));
      const h = new CoarseHistogram();
      for (const v of values) h.record(v);
      values.sort((a, b) => a - b);
      expect(h.count).toBe(n);
      for (const q of [0, 0.5, 0.9, 0.99, 1]) {
        const exact = values[Math.min(n, Math.max(1, Math.ceil(q * n))) - 1]!;
        const got = h.quantile(q);
        expect(got).toBeGreaterThanOrEqual(exact);
        expect(got - exact).toBeLessThanOrEqual(exact / 4);
      }
    }
  });

  it('bucket bounds map back to their buckets; clear empties it', () => {
    for (let i = 0; i < 200; i++) {
      const hi = CoarseHistogram.highest(i);
      expect(CoarseHistogram.index(hi)).toBe(i);
      expect(CoarseHistogram.index(hi + 1)).toBe(i + 1);
    }
    const h = new CoarseHistogram();
    expect(h.quantile(0.99)).toBe(0);
    h.record(5);
    h.clear();
    expect(h.count).toBe(0);
  });
});
