/**
 * vitest under AddressSanitizer (`scripts/sanitize.sh asan`, docs/sanitizers.md): the
 * project's config, with the test processes (vitest's forks, never vitest's own process)
 * loading the ASan build of the addon with the ASan runtime preloaded.
 *
 * `NAPI_RS_NATIVE_LIBRARY_PATH` goes into the forks only: every napi-rs loader honours it,
 * including rolldown's inside vitest itself, which would then load our addon instead.
 */
import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig, mergeConfig } from 'vitest/config';
import base from '../../vitest.config.mts';

const addon = process.env.SANITIZE_ADDON;
const runtime = process.env.SANITIZE_PRELOAD;
if (!addon || !runtime) {
  throw new Error('run through scripts/sanitize.sh asan (SANITIZE_ADDON and SANITIZE_PRELOAD unset)');
}

export default mergeConfig(
  base,
  defineConfig({
    root: fileURLToPath(new URL('../..', import.meta.url)),
    test: {
      env: {
        NAPI_RS_NATIVE_LIBRARY_PATH: addon,
        LD_PRELOAD: runtime,
        ASAN_OPTIONS: process.env.SANITIZE_ASAN_OPTIONS ?? 'detect_leaks=0',
        // The ASan addon is built with feature `system-alloc` (no jemalloc figures in stats()).
        MOVE_DISPATCHER_ALLOCATOR: 'system',
      },
      // Every test file first proves that the instrumented addon and the runtime are loaded.
      setupFiles: [fileURLToPath(new URL('./asan-setup.ts', import.meta.url))],
      // Instrumented debug build: slower than the release addon.
      testTimeout: 120_000,
      hookTimeout: 120_000,
      // Timing tests run slower here (ASan's malloc), and Node 20 itself sometimes hangs at
      // exit (nodejs/node#54918, DrainTasks vs. a background compile waiting for a GC; seen
      // in teardown.test.ts's child processes with or without ASan). A retry cannot hide a
      // memory error: scripts/sanitize.sh fails on any ASan report file, whatever the tests say.
      retry: 2,
      // Chromium would inherit LD_PRELOAD (the ASan runtime) and is not instrumented: the
      // real-browser tests (and the arena example's, which drives Chromium too) run in the
      // plain suite; the addon's ingress paths they drive are covered here by
      // ingress.test.ts, ingress-hostile.test.ts and ingress-grpc.test.ts.
      exclude: [...configDefaults.exclude, '__test__/browser-ingress.test.ts', '__test__/arena.test.ts'],
    },
  }),
);
