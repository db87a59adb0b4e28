/**
 * The prom-client example: the app's own metrics and the dispatcher's, served together,
 * form one valid exposition (promtool, when installed; required in CI).
 */
import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerDispatcherCollector, serveMetrics } from '../examples/prometheus';
import { Dispatcher, encodeMove } from '../index';

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
});
