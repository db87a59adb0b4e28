/**
 * Renders a `stats()` snapshot in the Prometheus text exposition format (version 0.0.4):
 * HELP and TYPE lines, counters ending in `_total`, gauges, and a `shard` label where a
 * figure is per shard.
 */
import type { PromHistogram, PromHistograms } from './engine';
import type { DispatcherStats } from './types';

type Row = [labels: string, value: number];

class Exposition {
  readonly #lines: string[] = [];

  metric(name: string, type: 'counter' | 'gauge', help: string, rows: Row[]): this {
    const full = `move_dispatcher_${name}`;
    this.#lines.push(`# HELP ${full} ${help}`, `# TYPE ${full} ${type}`);
    for (const [labels, value] of rows) this.#lines.push(`${full}${labels} ${value}`);
    return this;
  }

  /**
   * A histogram: `_bucket{le}` (cumulative, `+Inf` last), `_sum`, `_count`; values divided
   * by `scale`. Several series (one per shard) share the HELP and TYPE lines, each with its
   * own `labels` (like `shard="0"`).
   */
  histogram(name: string, help: string, series: readonly (readonly [labels: string, h: PromHistogram])[], scale: number): this {
    const full = `move_dispatcher_${name}`;
    this.#lines.push(`# HELP ${full} ${help}`, `# TYPE ${full} histogram`);
    for (const [labels, h] of series) {
      const pre = labels === '' ? '' : `${labels},`;
      const braces = labels === '' ? '' : `{${labels}}`;
      h.le.forEach((le, i) => this.#lines.push(`${full}_bucket{${pre}le="${le / scale}"} ${h.cumulative[i] ?? 0}`));
      this.#lines.push(`${full}_bucket{${pre}le="+Inf"} ${h.count}`, `${full}_sum${braces} ${h.sum / scale}`, `${full}_count${braces} ${h.count}`);
    }
    return this;
  }

  toString(): string {
    return `${this.#lines.join('\n')}\n`;
  }
}

const byShard = (s: DispatcherStats, pick: (x: DispatcherStats['shards'][number]) => number): Row[] =>
  s.shards.map((x) => [`{shard="${x.shard}"}`, pick(x)]);

/** The Prometheus text for a snapshot (and the engine's never-reset histograms, if it keeps them). */
export function renderMetrics(s: DispatcherStats, histograms: PromHistograms | null): string {
  const e = new Exposition()
    .metric('dispatched_total', 'counter', 'Frames passed to dispatch.', [['', s.dispatched]])
    .metric('verdicts_total', 'counter', 'Synchronous verdicts, by verdict.', Object.entries(s.verdicts).map(([k, v]) => [`{verdict="${k}"}`, v]))
    .metric('backpressure_total', 'counter', 'Backpressure verdicts, by cause.', Object.entries(s.backpressure).map(([k, v]) => [`{cause="${k}"}`, v]))
    .metric('rejections_total', 'counter', 'Accepted moves rejected by validation, by reason.', Object.entries(s.reasons).map(([k, v]) => [`{reason="${k}"}`, v]))
    .metric('delivered_total', 'counter', 'Moves delivered to JavaScript.', [['', s.delivered]])
    .metric('batches_total', 'counter', 'Batches delivered to JavaScript.', [['', s.batches]])
    .metric('queue_depth', 'gauge', 'Moves dispatched and not yet taken by the shard worker.', byShard(s, (x) => x.queueDepth))
    .metric('queue_high_water', 'gauge', 'Highest queue depth since the last reset.', byShard(s, (x) => x.queueHighWater))
    .metric('arena_capacity_bytes', 'gauge', 'Size of the shard ingress arena.', byShard(s, (x) => x.arena.capacity))
    .metric('arena_used_bytes', 'gauge', 'Arena bytes holding frames not yet validated.', byShard(s, (x) => x.arena.used))
    .metric('arena_high_water_bytes', 'gauge', 'Highest arena use since the last reset.', byShard(s, (x) => x.arena.highWater))
    .metric('arena_wraps_total', 'counter', 'Times the arena bump pointer went back to its start.', byShard(s, (x) => x.arena.wraps));
  if (histograms !== null) {
    const NS = 1e9;
    const one = (h: PromHistogram): [string, PromHistogram][] => [['', h]];
    e.histogram(
      'validated_latency_seconds',
      'Dispatch to validated by the shard worker.',
      histograms.validated.map((h, shard) => [`shard="${shard}"`, h] as const),
      NS,
    )
      .histogram('delivered_latency_seconds', 'Dispatch to handed to JavaScript (drain or onBatch).', one(histograms.delivered), NS)
      .histogram('arena_alloc_seconds', 'Arena allocation time, every 64th dispatch.', one(histograms.arenaAlloc), NS)
      .histogram('batch_size_moves', 'Moves per delivered batch.', one(histograms.batchSize), 1);
  }
  const a = s.allocator;
  if (a?.jemalloc) {
    const j = a.jemalloc;
    e.metric('jemalloc_allocated_bytes', 'gauge', 'jemalloc stats.allocated.', [['', j.allocated]])
      .metric('jemalloc_active_bytes', 'gauge', 'jemalloc stats.active.', [['', j.active]])
      .metric('jemalloc_resident_bytes', 'gauge', 'jemalloc stats.resident.', [['', j.resident]])
      .metric('jemalloc_mapped_bytes', 'gauge', 'jemalloc stats.mapped.', [['', j.mapped]])
      .metric('jemalloc_retained_bytes', 'gauge', 'jemalloc stats.retained.', [['', j.retained]]);
  }
  if (a?.hotPathAllocations !== null && a?.hotPathAllocations !== undefined) {
    e.metric('hot_path_allocations_total', 'counter', 'Heap allocations made on the hot path (dispatch, validation).', [['', a.hotPathAllocations]]);
  }
  const g = s.ingress;
  if (g !== null) {
    e.metric('ingress_connections', 'gauge', 'Native ingress connections open.', [['', g.connections]])
      .metric('ingress_connections_accepted_total', 'counter', 'Native ingress connections admitted (ticket checked).', [['', g.accepted]])
      .metric('ingress_connections_refused_total', 'counter', 'Native ingress connections refused before opening.', [['', g.refused]])
      .metric('ingress_connections_closed_total', 'counter', 'Admitted native ingress connections closed.', [['', g.closed]])
      .metric('ingress_received_bytes_total', 'counter', 'Bytes read from native ingress connections.', [['', g.bytesIn]])
      .metric('ingress_sent_bytes_total', 'counter', 'Bytes written to native ingress connections.', [['', g.bytesOut]])
      .metric('ingress_sent_messages_total', 'counter', 'Outbound messages written whole.', [['', g.messagesOut]])
      .metric('ingress_dropped_total', 'counter', 'Connections dropped for outbound backpressure.', [['', g.dropped]]);
  }
  return e.toString();
}
