import { defineConfig } from 'vitest/config';

/**
 * The native addon keeps threads and external memory per process: each test file runs in
 * its own child process (`forks`), never in worker_threads sharing one isolate pool.
 */
export default defineConfig({
  test: {
    include: ['__test__/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    // A test file that leaves a dispatcher open must still let its process exit.
    restoreMocks: true,
  },
});
