/**
 * The addon's calibration and benchmark exports (`emptyCall`, `bench*` from
 * crates/dispatcher/src/bench.rs), loaded from the package root's `binding.js`.
 */
import { existsSync } from 'node:fs';
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

export function loadBenchBinding(): BenchBinding {
  const candidates = [join(__dirname, '..', '..', 'binding.js'), join(__dirname, '..', '..', '..', 'binding.js')];
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) throw new Error("binding.js not found: build the addon first ('npm run build')");
  const b = require(path) as Partial<BenchBinding>;
  if (typeof b.benchSha256 !== 'function' || typeof b.emptyCall !== 'function') {
    throw new Error('the addon lacks the benchmark exports (crates/dispatcher/src/bench.rs): rebuild it with npm run build:native');
  }
  return b as BenchBinding;
}
