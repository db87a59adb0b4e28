/**
 * Test hooks. Not exported by `index.ts`, outside the package's `exports` map, and left out
 * of the published declarations (every export here is `@internal`, and tsconfig.json sets
 * `stripInternal`). The conformance suite uses them to fill queues deterministically and to
 * make a shard fail; see docs/architecture.md "Test hooks".
 *
 * Each `Dispatcher` registers its engine here from its constructor; the registry is private
 * to this module, so nothing else can reach an engine through a dispatcher.
 */
import type { Dispatcher } from './dispatcher';
import type { Engine } from './engine';

const engines = new WeakMap<Dispatcher, Engine>();

/** @internal Called by the `Dispatcher` constructor. */
export function registerEngine(d: Dispatcher, engine: Engine): void {
  engines.set(d, engine);
}

function engineOf(d: Dispatcher, hook: string): Engine {
  const engine = engines.get(d);
  if (engine === undefined) {
    // Most likely a Dispatcher from another copy of the library (src/ vs dist/).
    throw new TypeError(`${hook}: not a Dispatcher of this build of move-dispatcher`);
  }
  return engine;
}

/**
 * @internal Test hook: `true` returns once every shard worker has stopped taking work;
 * nothing dispatched afterwards is validated until `pauseForTesting(d, false)`.
 */
export function pauseForTesting(d: Dispatcher, paused: boolean): void {
  engineOf(d, 'pauseForTesting').pause(paused);
}

/**
 * @internal Test hook: the worker of `shard` fails at its next turn (native: it panics;
 * js: it throws), as a bug would make it. See docs/architecture.md "Shard failure".
 */
export function failShardForTesting(d: Dispatcher, shard: number): void {
  engineOf(d, 'failShardForTesting').failShard(shard);
}
