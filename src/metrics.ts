/**
 * Renders a `stats()` snapshot in the Prometheus text exposition format (version 0.0.4):
 * HELP and TYPE lines, counters ending in `_total`, gauges, and a `shard` label where a
 * figure is per shard.
 */
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

  toString(): string {
    return `${this.#lines.join('\n')}\n`;
  }
}

const byShard = (s: DispatcherStats, pick: (x: DispatcherStats['shards'][number]) => number): Row[] =>
  s.shards.map((x) => [`{shard="${x.shard}"}`, pick(x)]);

/** The Prometheus text for a snapshot. */
export function renderMetrics(s: DispatcherStats): string {
  return new Exposition()
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
    .metric('arena_wraps_total', 'counter', 'Times the arena bump pointer went back to its start.', byShard(s, (x) => x.arena.wraps))
    .toString();
}
