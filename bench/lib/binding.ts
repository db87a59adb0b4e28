/**
 * The addon's calibration and benchmark exports (`emptyCall`, `bench*` from
 * crates/binding/src/bench.rs). They exist only in the bench build of the addon
 * (`npm run build:bench-addon`, cargo feature `bench`, written to `bench/addon/`), never
 * in the published one; `npm run bench` builds it and runs every step on it.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchRate {
  iters: number;
  totalNs: number;
  nsPerOp: number;
  failures: number;
}

export interface BenchDistribution {
  samples: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  clockFloorNs: number;
  clockFloorP999Ns: number;
}

export interface BenchBinding {
  emptyCall(buf: Uint8Array): number;
  benchSha256(frameLen: number, iters: number): BenchRate;
  benchHmac(frameLen: number, iters: number): BenchRate;
  benchArenaAlloc(sizes: number[], iters: number, arenaBytes?: number): BenchDistribution;
  benchMalloc(sizes: number[], iters: number): BenchDistribution;
  benchQueueHandoff(frameLen: number, moves: number): BenchRate;
  benchCoreDispatch(frameLen: number, moves: number): BenchRate;
}

/** The bench build of the addon (`bench/addon/move-dispatcher.<platform>.node`). */
export function benchAddonPath(): string {
  // From bench/lib when run as TypeScript sources, from dist/bench/lib when built.
  const dirs = [join(__dirname, '..', 'addon'), join(__dirname, '..', '..', '..', 'bench', 'addon')];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    const node = readdirSync(dir).find((f) => f.endsWith('.node'));
    if (node !== undefined) return join(dir, node);
  }
  throw new Error(`the bench build of the addon is missing (looked in ${dirs.join(', ')}): run 'npm run build:bench-addon'`);
}

export function loadBenchBinding(): BenchBinding {
  const b = require(benchAddonPath()) as Partial<BenchBinding>;
  if (typeof b.benchSha256 !== 'function' || typeof b.emptyCall !== 'function') {
    throw new Error("the bench addon lacks the benchmark exports (cargo feature 'bench'): run 'npm run build:bench-addon'");
  }
  return b as BenchBinding;
}
