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
import { Dispatcher, encodeMove } from '../index';

/** Registers prom-client gauges that read `dispatcher.stats()` at scrape time. */
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
  new Gauge({
    name: 'game_dispatcher_delivered_p99_seconds',
    help: 'p99 dispatch to JavaScript latency since the previous scrape.',
    registers: [registry],
    collect() {
      const l = dispatcher.stats({ topRooms: 0, reset: true }).latency;
      this.set(l === null ? 0 : l.deliveredNs.p99 / 1e9);
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
