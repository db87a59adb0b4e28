/**
 * The game's own metrics, in the Prometheus text format, next to the dispatcher's
 * (`d.metrics()`) on one `GET /metrics`. No client library: a counter is a number, and the
 * per-tick figures are summaries over a sliding window of the last ticks (quantiles of the
 * window, `_sum` / `_count` since start). `prom-client` works as well (examples/prometheus.ts).
 */

/** Quantiles of the last `capacity` observations, plus a running sum and count. */
export class WindowSummary {
  readonly #window: Float64Array;
  #filled = 0;
  #at = 0;
  sum = 0;
  count = 0;
  max = 0;

  constructor(capacity: number) {
    this.#window = new Float64Array(capacity);
  }

  observe(value: number): void {
    this.#window[this.#at] = value;
    this.#at = (this.#at + 1) % this.#window.length;
    if (this.#filled < this.#window.length) this.#filled++;
    this.sum += value;
    this.count++;
    if (value > this.max) this.max = value;
  }

  /** The q-quantile (nearest rank) of the window; 0 when empty. */
  quantile(q: number): number {
    if (this.#filled === 0) return 0;
    const sorted = this.#window.slice(0, this.#filled).sort();
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
  }

  /** Observations in the window. */
  get windowSize(): number {
    return this.#filled;
  }
}

const QUANTILES = [0.5, 0.9, 0.99, 1] as const;

/** Renders a summary (`quantile="1"` is the window's maximum). */
export function renderSummary(name: string, help: string, s: WindowSummary): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} summary`];
  for (const q of QUANTILES) lines.push(`${name}{quantile="${q}"} ${s.quantile(q)}`);
  lines.push(`${name}_sum ${s.sum}`, `${name}_count ${s.count}`);
  return lines.join('\n');
}

/** Renders one counter or gauge, with optional labelled samples. */
export function renderValue(name: string, type: 'counter' | 'gauge', help: string, value: number | ReadonlyMap<string, number>, label = ''): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  if (typeof value === 'number') lines.push(`${name} ${value}`);
  else for (const [k, v] of value) lines.push(`${name}{${label}="${k}"} ${v}`);
  return lines.join('\n');
}
