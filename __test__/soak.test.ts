/**
 * The soak harness (tools/soak.ts) itself: a short run passes, and its checker catches a
 * lost move (a fault injected into its own bookkeeping), so a green soak means something.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const soak = join(__dirname, '..', 'dist', 'tools', 'soak.js');
const run = (...extra: string[]) =>
  spawnSync(process.execPath, [soak, '--seconds', '3', '--cycle', '0.5', '--rate', '20000', '--rooms', '16', ...extra], { encoding: 'utf8', timeout: 60_000 });

describe('soak harness', () => {
  it('a short run of hostile traffic: 0 violations, nothing lost', () => {
    const r = run();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('soak: OK, 0 violations');
    expect(r.stdout).toMatch(/"lost": 0/);
    // every kind of frame was sent and answered
    expect(r.stdout).toMatch(/"Replay": [1-9]/);
    expect(r.stdout).toMatch(/"BadTag": [1-9]/);
    expect(r.stdout).toMatch(/"WrongSender": [1-9]/);
  });

  it('catches a lost move (fault injected into its bookkeeping) and exits 1', () => {
    const r = run('--inject-fault');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/VIOLATION: .*(order, gap or duplicate|lost)/);
    expect(r.stdout).toContain('soak: FAILED');
  });
});
