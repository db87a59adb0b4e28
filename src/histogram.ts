/**
 * A log-linear histogram for the js engine, with HdrHistogram's layout at 3 significant
 * digits: values below 2048 are exact, above that each power of two is split into 1024
 * equal sub-buckets (relative error < 0.1%). Counts live in one Float64Array; recording is
 * one index computation, one comparison and one increment. `snapshot(reset)` reports since
 * the last reset; `cumulative(le)` reports since creation (for Prometheus, whose histograms
 * never reset).
 *
 * # Cost of a snapshot
 * The layout has 27,648 buckets for a nanosecond range up to 60 s, but a run fills a few
 * hundred to a few thousand of them. A snapshot must not walk the whole array: it runs on
 * the JavaScript thread, between moves, and rarely (a `stats()` call), so it usually runs
 * cold, in V8's interpreter, where a walk of every bucket of the engine's four histograms
 * took 20–50 ms — a stall of the event loop that every move in flight waited behind. So
 * each histogram keeps the indices of the buckets it counted in since its last reset
 * (`#fresh`) and since its creation (`#used`), each index once: recording appends an index
 * only at a bucket's first sample of the interval, and a snapshot, a reset and
 * `cumulative()` visit only those buckets (sorted by a typed-array sort).
 */
import type { PromHistogram } from './engine';
import type { HistogramStats } from './types';

const SUB = 1024;
/** Exact range: 0..2047. */
const LINEAR = 2 * SUB;
const TWO_31 = 2 ** 31;
const TWO_32 = 2 ** 32;
/** `POW2[s]` = 2^s (exact in a double). */
const POW2 = Float64Array.from({ length: 64 }, (_, s) => 2 ** s);

/** A growable list of bucket indices (each appended at most once per interval). */
class IndexList {
  items = new Int32Array(64);
  length = 0;

  push(i: number): void {
    if (this.length === this.items.length) {
      const grown = new Int32Array(this.items.length * 2);
      grown.set(this.items);
      this.items = grown;
    }
    this.items[this.length++] = i;
  }
}

/** The indices of `lists`, sorted ascending, without duplicates. */
function sortedUnion(lists: readonly IndexList[]): Int32Array {
  let n = 0;
  for (const l of lists) n += l.length;
  const all = new Int32Array(n);
  let at = 0;
  for (const l of lists) {
    all.set(l.items.subarray(0, l.length), at);
    at += l.length;
  }
  all.sort();
  if (lists.length === 1) return all;
  let kept = 0;
  for (let k = 0; k < n; k++) if (kept === 0 || all[k] !== all[kept - 1]) all[kept++] = all[k]!;
  return all.subarray(0, kept);
}

export class LogHistogram {
  readonly #counts: Float64Array;
  /** Counts at the last reset (the `stats()` interval starts there); equal to `#counts` outside `#fresh`. */
  readonly #base: Float64Array;
  /** Buckets counted in since the last reset, and since creation: the only ones a snapshot visits. */
  readonly #fresh = new IndexList();
  readonly #used = new IndexList();
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
    // The exponent: exact from the bit length below 2^32 (nanoseconds up to 4.3 s).
    const e = value < TWO_32 ? 31 - Math.clz32(value) : Math.floor(Math.log2(value));
    const shift = e - 10;
    // POW2, not `2 ** shift`: V8 computes a variable power with a call to pow (~30 ns).
    const sub = Math.floor(value / POW2[shift]!) - SUB;
    return LINEAR + (shift - 1) * SUB + sub;
  }

  /** The highest value of bucket `i`. */
  static highest(i: number): number {
    if (i < LINEAR) return i;
    // shift = floor((i - LINEAR) / SUB) + 1, sub = (i - LINEAR) % SUB + SUB: (sub + 1) << shift, less one.
    return (((i - LINEAR) & (SUB - 1)) + SUB + 1) * POW2[((i - LINEAR) >> 10) + 1]! - 1;
  }

  record(value: number): void {
    const v = value <= 0 ? 0 : value >= this.#max ? this.#max : Math.round(value);
    const i = LogHistogram.index(v);
    const c = this.#counts[i]!;
    if (c === this.#base[i]) {
      // The bucket's first sample of this interval (and perhaps ever).
      this.#fresh.push(i);
      if (c === 0) this.#used.push(i);
    }
    this.#counts[i] = c + 1;
    this.#sum += v;
  }

  /** The interval since the last reset; `reset` starts a new one after it. */
  snapshot(reset: boolean): HistogramStats {
    return LogHistogram.merged([this], reset);
  }

  /** The intervals of several histograms of the same range (one per shard), merged. */
  static merged(hists: readonly LogHistogram[], reset: boolean): HistogramStats {
    // Plain loops over typed arrays and no call per bucket: this usually runs cold (see above).
    const indices = sortedUnion(hists.map((h) => h.#fresh));
    const n = indices.length;
    // Each bucket's count in the interval, summed over the histograms.
    const diff = new Float64Array(n);
    let count = 0;
    let sum = 0;
    for (const h of hists) {
      const counts = h.#counts;
      const base = h.#base;
      for (let k = 0; k < n; k++) {
        const i = indices[k]!;
        if (i < counts.length) diff[k]! += counts[i]! - base[i]!;
      }
      sum += h.#sum - h.#baseSum;
    }
    for (let k = 0; k < n; k++) count += diff[k]!;
    // The buckets, and in the same pass the quantiles: the value of the bucket holding the
    // sample of rank ceil(q * count).
    const ranks = [0.5, 0.9, 0.99, 0.999].map((q) => Math.max(1, Math.ceil(q * count)));
    const at = [0, 0, 0, 0];
    const buckets: [number, number][] = [];
    let q = 0;
    let seen = 0;
    for (let k = 0; k < n; k++) {
      const c = diff[k]!;
      if (c === 0) continue;
      const i = indices[k]!;
      // LogHistogram.highest(i), inline.
      const v = i < LINEAR ? i : (((i - LINEAR) & (SUB - 1)) + SUB + 1) * POW2[((i - LINEAR) >> 10) + 1]! - 1;
      buckets.push([v, c]);
      seen += c;
      while (q < 4 && seen >= ranks[q]!) at[q++] = v;
    }
    const stats: HistogramStats = {
      count,
      min: count === 0 ? 0 : buckets[0]![0],
      p50: at[0]!,
      p90: at[1]!,
      p99: at[2]!,
      p999: at[3]!,
      max: count === 0 ? 0 : buckets[buckets.length - 1]![0],
      mean: count === 0 ? 0 : sum / count,
      sum,
      buckets,
    };
    if (reset) {
      for (const h of hists) {
        const fresh = h.#fresh;
        const counts = h.#counts;
        const base = h.#base;
        for (let k = 0; k < fresh.length; k++) {
          const i = fresh.items[k]!;
          base[i] = counts[i]!;
        }
        fresh.length = 0;
        h.#baseSum = h.#sum;
      }
    }
    return stats;
  }

  /** Counts at the bounds `le` since creation. */
  cumulative(le: readonly number[]): PromHistogram {
    const used = sortedUnion([this.#used]);
    const cumulative = le.map(() => 0);
    let count = 0;
    let k = 0;
    for (let j = 0; j < used.length; j++) {
      const i = used[j]!;
      const v = LogHistogram.highest(i);
      while (k < le.length && v > le[k]!) cumulative[k++] = count;
      count += this.#counts[i]!;
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
    // Recorded per move: below 2^31 (2.1 s in nanoseconds) integer bit operations, no pow.
    if (v < TWO_31) {
      const e = 31 - Math.clz32(v);
      return 4 * (e - 1) + ((v >>> (e - 2)) & 3);
    }
    let e = Math.floor(Math.log2(v));
    // log2 rounds near powers of two: correct it exactly.
    if (POW2[e]! > v) e--;
    else if (POW2[e + 1]! <= v) e++;
    e = Math.min(63, e);
    const sub = Math.floor(v / POW2[e - 2]!) & 3;
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
