/**
 * examples/arena/loop.ts with a fake clock: ticks run at start + n × period whatever each
 * costs (no drift), a late wake-up catches up in order, a stall longer than maxCatchUp
 * skips and counts the oldest ticks.
 */
import { describe, expect, it } from 'vitest';
import { TickLoop, type Clock, type TickInfo } from '../examples/arena/loop';

/** A clock whose time moves only when the test says; timers fire in time order. */
class FakeClock implements Clock {
  t = 1000;
  #timers: { at: number; fn: () => void; id: number }[] = [];
  #id = 0;
  now(): number {
    return this.t;
  }
  schedule(fn: () => void, ms: number): unknown {
    const timer = { at: this.t + Math.max(0, ms), fn, id: ++this.#id };
    this.#timers.push(timer);
    return timer.id;
  }
  cancel(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }
  /** Moves time to `until`, firing due timers on the way, each `extra` ms late. */
  advance(until: number, extra = 0): void {
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at);
      const next = this.#timers[0];
      if (next === undefined || next.at + extra > until) break;
      this.#timers.shift();
      this.t = Math.max(this.t, next.at + extra);
      next.fn();
    }
    this.t = until;
  }
  get pending(): number {
    return this.#timers.length;
  }
}

function run(options: { hz?: number; maxCatchUp?: number; cost?: number } = {}): { clock: FakeClock; loop: TickLoop; ticks: TickInfo[]; skips: [number, number][] } {
  const clock = new FakeClock();
  const ticks: TickInfo[] = [];
  const skips: [number, number][] = [];
  const loop = new TickLoop({
    hz: options.hz ?? 20,
    clock,
    ...(options.maxCatchUp === undefined ? {} : { maxCatchUp: options.maxCatchUp }),
    onTick: (info) => {
      ticks.push(info);
      clock.t += options.cost ?? 0; // the tick's own work takes time
    },
    onSkip: (count, first) => skips.push([count, first]),
  });
  return { clock, loop, ticks, skips };
}

describe('arena TickLoop (fake clock)', () => {
  it('plans tick n at start + n × 50 ms: costly ticks and late timers do not drift', () => {
    const { clock, loop, ticks } = run({ cost: 30 });
    loop.start();
    clock.advance(1000 + 50 * 100 + 3, 3); // every timer fires 3 ms late, every tick costs 30 ms
    expect(ticks.map((t) => t.tick)).toEqual(Array.from({ length: 101 }, (_, i) => i));
    ticks.forEach((t, i) => expect(t.planned).toBe(1000 + 50 * i));
    expect(Math.max(...ticks.slice(1).map((t) => t.lateMs))).toBe(3);
    expect(loop.late).toBe(0);
    expect(loop.skipped).toBe(0);
  });

  it('a late wake-up runs the missed ticks in order, each with its own lateness', () => {
    const { clock, loop, ticks } = run();
    loop.start();
    clock.advance(1000 + 50 * 10);
    expect(ticks).toHaveLength(11);
    clock.t += 170; // the event loop was busy for 170 ms: ticks 11..13 are due (planned 1550, 1600, 1650)
    clock.advance(clock.t, 0);
    expect(ticks.length).toBeGreaterThanOrEqual(14);
    const caught = ticks.slice(11, 14);
    expect(caught.map((t) => t.tick)).toEqual([11, 12, 13]);
    expect(caught.map((t) => t.lateMs)).toEqual([120, 70, 20]);
    expect(loop.late).toBe(2); // 120 and 70 ms are a period or more
    expect(loop.skipped).toBe(0);
    // and then back on the grid
    clock.advance(1000 + 50 * 20);
    expect(ticks.at(-1)).toMatchObject({ tick: 20, planned: 2000, lateMs: 0 });
  });

  it('a stall longer than maxCatchUp periods skips the oldest ticks and counts them; numbers follow the plan', () => {
    const { clock, loop, ticks, skips } = run({ maxCatchUp: 3 });
    loop.start();
    clock.advance(1000 + 50 * 4); // ticks 0..4
    clock.t = 1000 + 50 * 14 + 10; // a 510 ms stall: ticks 5..14 are due
    clock.advance(clock.t);
    expect(skips).toEqual([[7, 5]]);
    expect(loop.skipped).toBe(7);
    expect(ticks.map((t) => t.tick)).toEqual([0, 1, 2, 3, 4, 12, 13, 14]);
    expect(loop.ran).toBe(8);
    clock.advance(1000 + 50 * 16);
    expect(ticks.map((t) => t.tick).slice(-2)).toEqual([15, 16]);
  });

  it('stop() cancels its timer; start() again starts a new plan at tick 0', () => {
    const { clock, loop, ticks } = run();
    loop.start();
    clock.advance(1100);
    loop.stop();
    expect(clock.pending).toBe(0);
    clock.advance(2000);
    expect(ticks).toHaveLength(3);
    loop.start();
    expect(ticks.at(-1)).toMatchObject({ tick: 0, planned: 2000 });
  });

  it('refuses a bad rate or catch-up', () => {
    expect(() => new TickLoop({ hz: 0, onTick: () => undefined })).toThrow(RangeError);
    expect(() => new TickLoop({ hz: 20, maxCatchUp: 0, onTick: () => undefined })).toThrow(RangeError);
  });
});
