/**
 * A fixed-rate tick scheduler that never drifts: tick n is planned at `start + n × period`,
 * whatever the previous ticks cost. Each wake-up runs every tick whose planned time has
 * come, in order; when it is more than `maxCatchUp` ticks behind (the process was stalled:
 * a GC pause, a suspended VM), the oldest are skipped and counted, never silently dropped.
 * Tick numbers follow the planned times, so a skipped tick's number is never reused.
 *
 * The clock is injected (`performance.now` and `setTimeout` by default) so that the tests
 * drive it with a fake one (__test__/arena-loop.test.ts).
 */

/** What the scheduler needs of a clock. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Calls `fn` after about `ms` milliseconds; returns a handle for `cancel`. */
  schedule(fn: () => void, ms: number): unknown;
  cancel(handle: unknown): void;
}

/** `performance.now()` and Node's timers (unref'd: a tick loop alone does not keep the process alive). */
export const systemClock: Clock = {
  now: () => performance.now(),
  schedule: (fn, ms) => setTimeout(fn, ms).unref(),
  cancel: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** One tick, as the loop hands it to `onTick`. */
export interface TickInfo {
  /** 0, 1, 2, …: the tick's number, = (its planned time − start) / period. */
  tick: number;
  /** When it was planned to run (clock ms). */
  planned: number;
  /** How late it runs: now − planned, ≥ 0 (ms). */
  lateMs: number;
}

export interface TickLoopOptions {
  /** Ticks per second (e.g. 20: a tick every 50 ms). */
  hz: number;
  /** Ticks one wake-up may run to catch up; older missed ticks are skipped. Default 5. */
  maxCatchUp?: number;
  clock?: Clock;
  onTick(info: TickInfo): void;
  /** Called when ticks were skipped, with how many (they also count in `skipped`). */
  onSkip?(count: number, firstSkipped: number): void;
}

export class TickLoop {
  readonly periodMs: number;
  readonly #maxCatchUp: number;
  readonly #clock: Clock;
  readonly #onTick: (info: TickInfo) => void;
  readonly #onSkip: ((count: number, firstSkipped: number) => void) | undefined;
  #start = 0;
  /** The next tick to run. */
  #next = 0;
  #timer: unknown = undefined;
  #running = false;
  /** Ticks run. */
  ran = 0;
  /** Ticks that ran a whole period or more after their planned time (a catch-up). */
  late = 0;
  /** Ticks skipped because the loop was more than `maxCatchUp` behind. */
  skipped = 0;

  constructor(options: TickLoopOptions) {
    if (!Number.isFinite(options.hz) || options.hz <= 0 || options.hz > 1000) throw new RangeError('TickLoop: hz must be in (0, 1000]');
    this.periodMs = 1000 / options.hz;
    this.#maxCatchUp = options.maxCatchUp ?? 5;
    if (!Number.isInteger(this.#maxCatchUp) || this.#maxCatchUp < 1) throw new RangeError('TickLoop: maxCatchUp must be an integer ≥ 1');
    this.#clock = options.clock ?? systemClock;
    this.#onTick = options.onTick;
    this.#onSkip = options.onSkip;
  }

  get running(): boolean {
    return this.#running;
  }

  /** The tick the loop will run next. */
  get nextTick(): number {
    return this.#next;
  }

  /** Starts now: tick 0 runs at once. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#start = this.#clock.now();
    this.#next = 0;
    this.#wake();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.cancel(this.#timer);
    this.#timer = undefined;
  }

  #planned(tick: number): number {
    return this.#start + tick * this.periodMs;
  }

  #wake = (): void => {
    this.#timer = undefined;
    if (!this.#running) return;
    const now = this.#clock.now();
    // The last tick whose planned time has come.
    const due = Math.floor((now - this.#start) / this.periodMs);
    const behind = due - this.#next + 1;
    if (behind > this.#maxCatchUp) {
      const count = behind - this.#maxCatchUp;
      const first = this.#next;
      this.skipped += count;
      this.#next += count;
      this.#onSkip?.(count, first);
    }
    while (this.#running && this.#next <= due) {
      const tick = this.#next++;
      const planned = this.#planned(tick);
      // Read the clock per tick: a catch-up tick runs after the previous one's work.
      const lateMs = Math.max(0, this.#clock.now() - planned);
      if (lateMs >= this.periodMs) this.late++;
      this.ran++;
      this.#onTick({ tick, planned, lateMs });
    }
    if (!this.#running) return;
    const delay = Math.max(0, this.#planned(this.#next) - this.#clock.now());
    this.#timer = this.#clock.schedule(this.#wake, delay);
  };
}
