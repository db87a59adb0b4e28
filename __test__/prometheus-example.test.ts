/**
 * The prom-client example: the app's own metrics and the dispatcher's, served together,
 * form one valid exposition (promtool, when installed; required in CI).
 */
import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { p99Between, registerDispatcherCollector, serveMetrics } from '../examples/prometheus';
import { Dispatcher, encodeMove } from '../index';
import { pauseForTesting } from './helpers';

const promtool = spawnSync('promtool', ['--version']).status === 0;
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

describe('examples/prometheus', () => {
  it('serves the app registry and the dispatcher figures on one scrape', async () => {
    const registry = new Registry();
    new Counter({ name: 'game_matches_started_total', help: 'Matches started.', registers: [registry] }).inc(3);
    const d = new Dispatcher({ shards: 1 });
    registerDispatcherCollector(registry, d);
    d.openRoom(1);
    d.join(1, 1);
    for (let seq = 1; seq <= 20; seq++) d.dispatch(encodeMove({ room: 1, player: 1, seq }));
    await d.flush();
    d.drain(1);
    const server = serveMetrics(registry, d, 0);
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    server.close();
    await d.close();
    expect(text).toContain('game_matches_started_total 3');
    expect(text).toContain('game_dispatcher_queue_depth{shard="0"} 0');
    expect(text).toMatch(/game_dispatcher_delivered_p99_seconds \d/);
    expect(text).toContain('move_dispatcher_delivered_total 20');
    expect(text).toContain('move_dispatcher_delivered_latency_seconds_count 20');
    if (promtool || inCi) {
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('scrapes never reset what other readers see (high-water marks, histogram intervals)', async () => {
    const registry = new Registry();
    const d = new Dispatcher({ shards: 1 });
    registerDispatcherCollector(registry, d);
    d.openRoom(1);
    d.join(1, 1);
    pauseForTesting(d, true);
    for (let seq = 1; seq <= 50; seq++) d.dispatch(encodeMove({ room: 1, player: 1, seq }));
    pauseForTesting(d, false);
    await d.flush();
    d.drain(1);
    const before = d.stats({ topRooms: 0 });
    await registry.metrics();
    await registry.metrics();
    const after = d.stats({ topRooms: 0 });
    expect(after.shards[0]!.queueHighWater).toBe(before.shards[0]!.queueHighWater);
    expect(after.shards[0]!.queueHighWater).toBeGreaterThanOrEqual(50);
    expect(after.latency!.deliveredNs.count).toBe(50);
    await d.close();
  });

  it('p99Between reads the samples recorded between two snapshots', () => {
    const h = (buckets: [number, number][]) => {
      const count = buckets.reduce((a, [, n]) => a + n, 0);
      return { count, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0, sum: 0, buckets };
    };
    const first = h([[10, 100], [1000, 1]]);
    const second = h([[10, 100], [500, 99], [1000, 1], [9000, 2]]);
    // Between them: 99 samples of 500 and 2 of 9000; rank ceil(0.99 * 101) = 100 is 9000.
    expect(p99Between(first, second)).toBe(9000);
    expect(p99Between(undefined, first)).toBe(10);
    expect(p99Between(second, second)).toBe(0);
  });
});
