/**
 * A log-linear histogram for the js engine, with HdrHistogram's layout at 3 significant
 * digits: values below 2048 are exact, above that each power of two is split into 1024
 * equal sub-buckets (relative error < 0.1%). Counts live in one Float64Array; recording is
 * one index computation and one increment. `snapshot(reset)` reports since the last reset;
 * `cumulative(le)` reports since creation (for Prometheus, whose histograms never reset).
 */
import type { PromHistogram } from './engine';
import type { HistogramStats } from './types';

const SUB = 1024;
/** Exact range: 0..2047. */
const LINEAR = 2 * SUB;

export class LogHistogram {
  readonly #counts: Float64Array;
  /** Counts at the last reset (the `stats()` interval starts there). */
  readonly #base: Float64Array;
  #sum = 0;
  #baseSum = 0;
  readonly #max: number;

  /** Values are clamped to `0..=max`. */
  constructor(max: number) {
    this.#max = max;
    const size = LogHistogram.index(max) + 1;
    this.#counts = new Float64Array(size);
    this.#base = new Float64Array(size);
  }

  static index(value: number): number {
    if (value < LINEAR) return value;
    const e = Math.floor(Math.log2(value));
    const shift = e - 10;
    const sub = Math.floor(value / 2 ** shift) - SUB;
    return LINEAR + (shift - 1) * SUB + sub;
  }

  /** The highest value of bucket `i`. */
  static highest(i: number): number {
    if (i < LINEAR) return i;
    const shift = Math.floor((i - LINEAR) / SUB) + 1;
    const sub = ((i - LINEAR) % SUB) + SUB;
    return (sub + 1) * 2 ** shift - 1;
  }

  record(value: number): void {
    const v = value <= 0 ? 0 : value >= this.#max ? this.#max : Math.round(value);
    this.#counts[LogHistogram.index(v)]! += 1;
    this.#sum += v;
  }

  /** The interval since the last reset; `reset` starts a new one after it. */
  snapshot(reset: boolean): HistogramStats {
    return LogHistogram.merged([this], reset);
  }

  /** The intervals of several histograms of the same range (one per shard), merged. */
  static merged(hists: readonly LogHistogram[], reset: boolean): HistogramStats {
    const buckets: [number, number][] = [];
    let count = 0;
    const size = Math.max(0, ...hists.map((h) => h.#counts.length));
    for (let i = 0; i < size; i++) {
      let c = 0;
      for (const h of hists) c += (h.#counts[i] ?? 0) - (h.#base[i] ?? 0);
      if (c > 0) {
        buckets.push([LogHistogram.highest(i), c]);
        count += c;
      }
    }
    let sum = 0;
    for (const h of hists) sum += h.#sum - h.#baseSum;
    const at = (q: number): number => {
      if (count === 0) return 0;
      const rank = Math.max(1, Math.ceil(q * count));
      let seen = 0;
      for (const [v, c] of buckets) {
        seen += c;
        if (seen >= rank) return v;
      }
      return buckets[buckets.length - 1]![0];
    };
    const min = count === 0 ? 0 : buckets[0]![0];
    const stats: HistogramStats = {
      count,
      min,
      p50: at(0.5),
      p90: at(0.9),
      p99: at(0.99),
      p999: at(0.999),
      max: count === 0 ? 0 : buckets[buckets.length - 1]![0],
      mean: count === 0 ? 0 : sum / count,
      sum,
      buckets,
    };
    if (reset) {
      for (const h of hists) {
        h.#base.set(h.#counts);
        h.#baseSum = h.#sum;
      }
    }
    return stats;
  }

  /** Counts at the bounds `le` since creation. */
  cumulative(le: readonly number[]): PromHistogram {
    const cumulative = le.map(() => 0);
    let count = 0;
    let k = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      const c = this.#counts[i]!;
      if (c === 0) continue;
      const v = LogHistogram.highest(i);
      while (k < le.length && v > le[k]!) cumulative[k++] = count;
      count += c;
    }
    while (k < le.length) cumulative[k++] = count;
    return { le: [...le], cumulative, count, sum: this.#sum };
  }
}

/**
 * A small, coarse histogram for one subject among thousands (a room's or a shard's recent
 * waits, for overload events): 4 buckets per power of two, so a quantile is at most 25%
 * above the sample of its rank. The twin of the native engine's `latency::Coarse`.
 */
export class CoarseHistogram {
  readonly #counts = new Float64Array(256);
  #total = 0;

  static index(value: number): number {
    const v = value <= 0 ? 0 : Math.floor(value);
    if (v < 4) return v;
    let e = Math.floor(Math.log2(v));
    // log2 rounds near powers of two: correct it exactly.
    if (2 ** e > v) e--;
    else if (2 ** (e + 1) <= v) e++;
    e = Math.min(63, e);
    const sub = Math.floor(v / 2 ** (e - 2)) & 3;
    return Math.min(255, 4 * (e - 1) + sub);
  }

  /** The highest value of bucket `i`. */
  static highest(i: number): number {
    if (i < 4) return i;
    const e = Math.floor(i / 4) + 1;
    return (4 + (i % 4) + 1) * 2 ** (e - 2) - 1;
  }

  record(value: number): void {
    this.#counts[CoarseHistogram.index(value)]! += 1;
    this.#total++;
  }

  get count(): number {
    return this.#total;
  }

  /** The highest value of the bucket holding the sample of rank `ceil(q * count)`; 0 when empty. */
  quantile(q: number): number {
    if (this.#total === 0) return 0;
    const rank = Math.min(this.#total, Math.max(1, Math.ceil(q * this.#total)));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) return CoarseHistogram.highest(i);
    }
    return CoarseHistogram.highest(this.#counts.length - 1);
  }

  clear(): void {
    this.#counts.fill(0);
    this.#total = 0;
  }
}

/** Prometheus bounds, in nanoseconds: 25 ns to 10 s. */
export const LATENCY_LE_NS = [25, 50, 100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10] as const;
/** Prometheus bounds for batch sizes: powers of two to 2^20. */
export const SIZE_LE = Array.from({ length: 21 }, (_, i) => 2 ** i);
