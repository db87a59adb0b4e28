/**
 * metrics(): valid Prometheus text exposition, checked by `promtool check metrics` (Debian
 * package `prometheus`; .ci/run installs it). Without promtool the check is skipped locally
 * and fails in CI.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Dispatcher, encodeMove } from '../index';

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).status === 0;
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

describe.each(['js', 'native'] as const)('metrics [%s]', (engine) => {
  it('names every counter and gauge, with values from stats()', async () => {
    const d = new Dispatcher({ engine, shards: 2 });
    d.openRoom(1);
    d.join(1, 1);
    for (let s = 1; s <= 5; s++) d.dispatch(encodeMove({ room: 1, player: 1, seq: s }));
    d.dispatch(new Uint8Array(3));
    await d.flush();
    d.drain(1);
    const text = d.metrics();
    expect(text).toContain('move_dispatcher_dispatched_total 6');
    expect(text).toContain('move_dispatcher_verdicts_total{verdict="Malformed"} 1');
    expect(text).toContain('move_dispatcher_delivered_total 5');
    expect(text).toMatch(/move_dispatcher_arena_capacity_bytes\{shard="1"\} \d+/);
    // dispatch → validated per shard (room 1 lives on shard 1 of 2).
    expect(text).toContain('move_dispatcher_validated_latency_seconds_count{shard="0"} 0');
    expect(text).toContain('move_dispatcher_validated_latency_seconds_count{shard="1"} 5');
    expect(text).toMatch(/move_dispatcher_validated_latency_seconds_bucket\{shard="1",le="\+Inf"\} 5/);
    for (const line of text.trimEnd().split('\n')) {
      expect(line).toMatch(/^(# (HELP|TYPE) move_dispatcher_\w+ .+|move_dispatcher_\w+(\{[^}]*\})? -?\d+(\.\d+)?(e[+-]?\d+)?)$/);
    }
    await d.close();
  });

  it.runIf(promtool || inCi)('passes promtool check metrics', async () => {
    expect(promtool, 'promtool is required in CI (apt-get install prometheus)').toBe(true);
    const d = new Dispatcher({ engine, shards: 2 });
    d.openRoom(1);
    d.join(1, 1);
    d.dispatch(encodeMove({ room: 1, player: 1, seq: 1 }));
    await d.flush();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: d.metrics(), encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
    expect(r.status).toBe(0);
    await d.close();
  });
});
