/**
 * A log-linear histogram of non-negative values (nanoseconds here), in the manner of
 * HdrHistogram: exact below 128, then 128 sub-buckets per power of two, so every recorded
 * value is known to within 1/128 (< 0.8 %). Recording allocates nothing; percentiles
 * answer the highest value equivalent to the bucket (an upper bound, as HdrHistogram's
 * `valueAtPercentile` does), clamped to the largest value seen.
 */

const SUB_BITS = 7;
const SUB = 1 << SUB_BITS;
/** Powers of two covered: up to 2^46 ns (~19.5 hours). */
const POWERS = 40;

/** Below this, an integer is an int32 (V8 passes it unboxed) and shifts exactly. */
export const TWO_31 = 2 ** 31;

function floorLog2(v: number): number {
  if (v < TWO_31) return 31 - Math.clz32(v);
  let e = Math.floor(Math.log2(v));
  if (2 ** e > v) e--;
  else if (2 ** (e + 1) <= v) e++;
  return e;
}

/** `2 ** s` for every shift `indexOf` uses: V8 computes `2 ** x` with a call to pow (~30 ns). */
const POW2 = Float64Array.from({ length: POWERS + SUB_BITS + 1 }, (_, s) => 2 ** s);

function indexOf(v: number): number {
  if (v < SUB) return v;
  const e = floorLog2(v);
  // In [SUB, 2 * SUB); below 2^31, `v` (an integer) shifts exactly.
  const m = v < TWO_31 ? v >>> (e - SUB_BITS) : Math.floor(v / POW2[Math.min(e - SUB_BITS, POW2.length - 1)]!);
  return SUB + (e - SUB_BITS) * SUB + (m - SUB);
}

function highestOf(index: number): number {
  if (index < SUB) return index;
  const e = Math.floor((index - SUB) / SUB) + SUB_BITS;
  const m = ((index - SUB) % SUB) + SUB;
  const unit = 2 ** (e - SUB_BITS);
  return (m + 1) * unit - 1;
}

export interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  p9999: number;
  max: number;
}

export class Histogram {
  readonly counts = new Float64Array(SUB + POWERS * SUB);
  count = 0;
  sum = 0;
  min = Number.POSITIVE_INFINITY;
  max = 0;

  record(value: number): void {
    const v = value > 0 ? Math.round(value) : 0;
    let i = indexOf(v);
    if (i >= this.counts.length) i = this.counts.length - 1;
    this.counts[i]!++;
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** Records `n` occurrences of `value`. */
  recordN(value: number, n: number): void {
    if (n <= 0) return;
    const v = value > 0 ? Math.round(value) : 0;
    let i = indexOf(v);
    if (i >= this.counts.length) i = this.counts.length - 1;
    this.counts[i]! += n;
    this.count += n;
    this.sum += v * n;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  merge(other: Histogram): void {
    for (let i = 0; i < other.counts.length; i++) this.counts[i]! += other.counts[i]!;
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  /** The value at percentile `p` (0–100); NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(highestOf(i), this.max);
    }
    return this.max;
  }

  summary(): Summary {
    return {
      count: this.count,
      min: this.count === 0 ? Number.NaN : this.min,
      mean: this.count === 0 ? Number.NaN : this.sum / this.count,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
      p9999: this.percentile(99.99),
      max: this.count === 0 ? Number.NaN : this.max,
    };
  }

  /**
   * The latency-by-percentile curve: `[percentile, value]` at percentiles spaced evenly on
   * the axis `-log10(1 - p/100)` from 50 % (0.301) to 99.99 % (4), plus the maximum at 100.
   */
  curve(points = 64): [number, number][] {
    const out: [number, number][] = [];
    if (this.count === 0) return out;
    const lo = Math.log10(2);
    const hi = 4;
    for (let k = 0; k < points; k++) {
      const x = lo + ((hi - lo) * k) / (points - 1);
      const p = 100 * (1 - 10 ** -x);
      out.push([Number(p.toFixed(5)), this.percentile(p)]);
    }
    out.push([100, this.max]);
    return out;
  }
}
