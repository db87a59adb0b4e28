import type { Summary } from './hist';
import type { Store, StoreSpec } from './frames';
import type { ThreadSplit } from './threads';
import type { HashChoice, RejectReason } from '../hand/pipeline';

/**
 * `idle`: the harness and a native dispatcher with every room open, no moves (the GC baseline).
 * `node`: the hand-written single-thread pipeline (bench/hand/); `js`: this package's own
 * pure-TypeScript engine (`engine: 'js'`); `wt`: the worker_threads pipeline (bench/wt/);
 * `native`: this package's default engine.
 */
export type Row = 'idle' | 'node' | 'js' | 'wt' | 'native';

export const ROWS: readonly Exclude<Row, 'idle'>[] = ['node', 'js', 'wt', 'native'];

/** The rows that do without the addon: the candidates for "the strongest baseline". */
export const BASELINE_ROWS: readonly Row[] = ['node', 'wt', 'js'];

export const ROW_LABELS: Record<Row, string> = {
  idle: 'Idle (harness, no moves)',
  node: 'Pure Node (hand-written)',
  js: "Pure Node (move-dispatcher engine: 'js')",
  wt: 'Node + worker_threads',
  native: 'Node + Rust (move-dispatcher)',
};

export interface RunSpec {
  row: Row;
  /** Offered moves/s (a multiple of 1000 / sliceMs). */
  rate: number;
  spec: StoreSpec;
  store: Store;
  warmupS: number;
  windowS: number;
  /** After the window, how long the run may take to catch up before it stops sending. */
  drainLimitS: number;
  sliceMs: number;
  wtWorkers: number;
}

export interface GcFigures {
  count: number;
  totalMs: number;
  maxMs: number;
}

export interface RunResult {
  row: Row;
  rate: number;
  windowS: number;
  /** Moves due inside the window. */
  windowMoves: number;
  /** Moves delivered to JavaScript while the window lasted, per second. */
  achieved: number;
  /** Scheduled time → JavaScript, ns (every move due in the window; see `censored`). */
  latency: Summary | null;
  curve: [number, number][];
  /** The `dispatchStream` call that carried the move → JavaScript, ns. */
  fromDispatch: Summary | null;
  /** Moves due in the window never sent before the drain limit: recorded with the latency they had reached then (a lower bound). */
  censored: number;
  /** How late the feeder ran against the newest due read, ns, per feed in the window. */
  feedLag: Summary;
  /**
   * The idle row only: how late the main thread ran each read of the clock in the window
   * (from that read's due time), ns; no moves sent. Absent in older results; the run of
   * 6caf652 kept it in the idle row's `feedLag`, sampled once per wake-up (the oldest read
   * not yet run), which misses the other reads of a late wake-up: its tail reads low.
   */
  floor?: Summary | null;
  gc: GcFigures;
  /** GC of the worker_threads row's verification workers (their own isolates). */
  workerGc: GcFigures | null;
  /** worker_threads row: the tag check its workers' calibration chose. */
  workerHash?: string | null;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  /**
   * Samples behind the two figures above. 0 means the event loop never reached its timers in
   * the window (one callback held it throughout, e.g. the clock thread's messages drained back
   * to back): the delay was then the whole window, and the 20 ms RSS sampler did not run either.
   */
  eventLoopDelaySamples: number;
  /** Peak resident set in the window, minus the frame store. */
  rssPeakBytes: number;
  storeBytes: number;
  /** User + system CPU of the whole process over the window's wall time, % of one core. */
  cpuPercent: number;
  /** The same CPU by thread (Linux; % of one core, 10 ms ticks): the JavaScript thread, the engine's threads, the load's clock thread, the rest. */
  threads: ThreadSplit;
  /** Ingress allocation (arena push / ring reservation + copy), sampled 1 in 64, ns. */
  alloc: Summary | null;
  /** Heap allocations counted on the native hot path during the window (null: not measurable). */
  hotPathAllocations: number | null;
  /** The engine's own dispatch → delivered histogram over the window (native and js engines). */
  engineDelivered: Summary | null;
  jemallocResidentBytes: number | null;
  accepted: number;
  delivered: number;
  rejected: number;
  lost: number;
  duplicates: number;
  syncRejected: number;
  backpressureVerdicts: number;
  backlogMid: number;
  backlogEnd: number;
  growing: boolean;
  sustained: boolean;
  /** The hand-written row: the hash it measured and chose at startup (null for other rows). */
  hash: HashChoice | null;
  /** The hand-written row: every rejection by reason, sync verdicts included (null for other rows). */
  rejectedByReason: Record<RejectReason, number> | null;
}

/** The micro benchmarks' dispatch trials: frames per trial, measured trials, warm-up trials. */
export function microTrials(quick: boolean): { perTrial: number; trials: number; warm: number } {
  return { perTrial: Math.round(100_000 * (quick ? 0.25 : 1)), trials: quick ? 3 : 7, warm: 3 };
}

export interface MicroResult {
  name: string;
  /** What is measured, in words. */
  what: string;
  value: number;
  unit: string;
  floorName: string | null;
  floor: number | null;
  ratio: number | null;
  extra?: Record<string, number>;
}
