/**
 * Setup file of `scripts/sanitize/vitest.config.mts`: fails the test file unless the process
 * runs with the ASan runtime and the ASan build of the addon (not the release `.node` at the
 * repository root), so a misconfigured run cannot pass silently.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
require(fileURLToPath(new URL('../../binding.js', import.meta.url)));
const report = process.report.getReport() as { sharedObjects: string[] };
const loaded = report.sharedObjects;
const addon = process.env.NAPI_RS_NATIVE_LIBRARY_PATH!;
const runtime = process.env.LD_PRELOAD!;
if (!loaded.includes(addon)) throw new Error(`ASan run: ${addon} is not loaded (${loaded.filter((s) => s.endsWith('.node')).join(', ')})`);
if (!loaded.some((s) => s === runtime)) throw new Error(`ASan run: the runtime ${runtime} is not preloaded`);
if (loaded.some((s) => /move-dispatcher\.[^/]*\.node$/.test(s) && s !== addon)) throw new Error('ASan run: another build of the addon is loaded too');
