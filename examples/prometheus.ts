/**
 * Serving move-dispatcher's figures with prom-client, next to the application's own metrics.
 *
 *   npm run build && node dist/examples/prometheus.js [port]   →   curl localhost:9464/metrics
 *
 * Two ways are shown: a prom-client collector (gauges whose `collect()` reads `stats()` on
 * each scrape), and the dispatcher's complete exposition (`metrics()`, with its histograms)
 * appended to the registry's output. Pick either; both read the same snapshot.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { Dispatcher, encodeMove, type HistogramStats } from '../index';

/**
 * The p99 of the samples recorded between two snapshots of the same never-reset histogram
 * (bucket counts only grow), so that a collector never has to reset `stats()`, which would
 * also restart the high-water marks every other reader sees.
 */
export function p99Between(before: HistogramStats | undefined, after: HistogramStats): number {
  const seen = new Map(before?.buckets ?? []);
  const delta: [number, number][] = [];
  let count = 0;
  for (const [value, n] of after.buckets) {
    const d = n - (seen.get(value) ?? 0);
    if (d > 0) {
      delta.push([value, d]);
      count += d;
    }
  }
  const rank = Math.ceil(0.99 * count);
  let acc = 0;
  for (const [value, n] of delta) {
    acc += n;
    if (acc >= rank) return value;
  }
  return 0;
}

/** Registers prom-client gauges that read `dispatcher.stats()` at scrape time (never resetting it). */
export function registerDispatcherCollector(registry: Registry, dispatcher: Dispatcher): void {
  new Gauge({
    name: 'game_dispatcher_queue_depth',
    help: 'Moves waiting for validation, per shard (read from stats() on scrape).',
    labelNames: ['shard'],
    registers: [registry],
    collect() {
      for (const s of dispatcher.stats({ topRooms: 0 }).shards) this.set({ shard: String(s.shard) }, s.queueDepth);
    },
  });
  let previous: HistogramStats | undefined;
  new Gauge({
    name: 'game_dispatcher_delivered_p99_seconds',
    help: 'p99 dispatch to JavaScript latency since the previous scrape (0 if no moves).',
    registers: [registry],
    collect() {
      const l = dispatcher.stats({ topRooms: 0 }).latency;
      if (l === null) return;
      this.set(p99Between(previous, l.deliveredNs) / 1e9);
      previous = l.deliveredNs;
    },
  });
}

/** An HTTP server answering `/metrics` with the app's registry plus the dispatcher's exposition. */
export function serveMetrics(registry: Registry, dispatcher: Dispatcher, port: number): Server {
  return createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry
      .metrics()
      .then((own) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(`${own}\n${dispatcher.metrics()}`);
      })
      .catch((error: unknown) => {
        res.writeHead(500).end(String(error));
      });
  }).listen(port, '127.0.0.1');
}

async function main(): Promise<void> {
  const port = Number(process.argv[2] ?? 9464);
  const registry = new Registry();
  const games = new Counter({ name: 'game_matches_started_total', help: 'Matches started (the application’s own metric).', registers: [registry] });
  const d = new Dispatcher();
  registerDispatcherCollector(registry, d);
  d.openRoom(1);
  d.join(1, 1);
  games.inc();
  for (let seq = 1; seq <= 100; seq++) d.dispatch(encodeMove({ room: 1, player: 1, seq }));
  await d.flush();
  d.drain(1);
  const server = serveMetrics(registry, d, port);
  console.log(`serving http://127.0.0.1:${port}/metrics (Ctrl-C to stop)`);
  process.once('SIGINT', () => {
    server.close();
    void d.close();
  });
}

if (require.main === module) void main();
