#!/usr/bin/env node
// Pack-and-install proof (run by .ci/run; `npm run pack:proof`).
//
// Packs the root package as a release publishes it (with the optionalDependencies that
// `napi prepublish` adds) and this machine's platform package (linux-x64-gnu here) with the
// addon built here, installs both tarballs into a fresh project with an empty npm cache and
// `--offline` (so nothing else can be fetched, and the root package can need no
// devDependency), then:
//   - require('move-dispatcher') and import 'move-dispatcher' each dispatch and drain a move
//     on the native engine, loaded from node_modules/move-dispatcher-linux-<arch>-gnu;
//   - tsc type-checks a CommonJS and an ES module consumer under `module: nodenext`.
// Needs the build first (`npm run build`: dist/, binding.js and the .node file).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// The platform package for this machine (CI runs the proof on x64 and arm64, glibc).
const ABI = process.env.PACK_PROOF_ABI ?? `linux-${process.arch}-gnu`;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const addon = `${pkg.napi.binaryName}.${ABI}.node`;
// The binary to pack: the one built here, or another build of it (e.g. a --use-napi-cross one).
const addonSource = process.env.PACK_PROOF_ADDON ?? join(ROOT, addon);
const t0 = Date.now();
let passed = 0;
let failed = 0;

function step(name, fn) {
  try {
    fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (error) {
    failed++;
    console.log(`FAIL ${name}\n${String(error.stdout ?? '')}${String(error.stderr ?? '')}${error.stack ?? error}`);
  }
}

function run(cmd, args, cwd, env = {}) {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

for (const f of [join(ROOT, 'dist/index.js'), join(ROOT, 'binding.js'), addonSource]) {
  if (!existsSync(f)) {
    console.error(`pack-proof: ${f} is missing; run 'npm run build' first`);
    process.exit(1);
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'move-dispatcher-pack-'));
const stage = join(tmp, 'stage');
const app = join(tmp, 'app');
const cache = join(tmp, 'npm-cache'); // empty: --offline can serve nothing but the two tarballs
mkdirSync(stage);
mkdirSync(app);
// npm must not read the developer's config (registry mirrors, cache, scripts settings).
const npmEnv = { npm_config_cache: cache, npm_config_userconfig: join(tmp, 'npmrc'), npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
const npm = (args, cwd) => run('npm', args, cwd, npmEnv);
const packOne = (dir) => JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', stage], dir))[0];

let rootTgz;
let platformTgz;
step('npm pack: root package, with the optionalDependencies napi prepublish writes', () => {
  // Pack once to let npm pick the files, then set optionalDependencies in the packed
  // manifest (napi prepublish does the same to package.json at release) and pack again.
  const first = packOne(ROOT);
  const unpacked = join(stage, 'root');
  mkdirSync(unpacked);
  run('tar', ['-xzf', join(stage, first.filename), '-C', unpacked]);
  rmSync(join(stage, first.filename));
  const manifestPath = join(unpacked, 'package', 'package.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  manifest.optionalDependencies = {};
  for (const dir of readdirSync(join(ROOT, 'npm')).sort()) {
    const sub = JSON.parse(readFileSync(join(ROOT, 'npm', dir, 'package.json'), 'utf8'));
    if (sub.version !== pkg.version) throw new Error(`npm/${dir} is at ${sub.version}, the root at ${pkg.version}: run 'npx napi version'`);
    manifest.optionalDependencies[sub.name] = pkg.version;
  }
  writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
  const packed = packOne(join(unpacked, 'package'));
  const files = packed.files.map((f) => f.path);
  for (const need of ['package.json', 'dist/index.js', 'index.mjs', 'index.d.ts', 'index.d.mts', 'binding.js', 'README.md', 'CHANGELOG.md', 'docs/architecture.md', 'proto/ingress.proto', 'dist/esm/package.json', 'dist/esm/src/browser.js']) {
    if (!files.includes(need)) throw new Error(`root tarball lacks ${need}`);
  }
  const stray = files.filter((f) => f.endsWith('.node') || f === 'binding.d.ts' || f.startsWith('src/') || f.startsWith('__test__/') || f.startsWith('crates/'));
  if (stray.length > 0) throw new Error(`root tarball carries ${stray.join(', ')}`);
  for (const hook of ['preinstall', 'install', 'postinstall']) {
    if (manifest.scripts?.[hook]) throw new Error(`root package has an ${hook} script: installing it would need a toolchain`);
  }
  rootTgz = join(stage, packed.filename);
  console.log(`     ${packed.filename}: ${files.length} files, ${packed.size} bytes`);
});

step(`npm pack: ${pkg.name}-${ABI} with the addon built here`, () => {
  const dir = join(stage, ABI);
  cpSync(join(ROOT, 'npm', ABI), dir, { recursive: true });
  cpSync(addonSource, join(dir, addon));
  const packed = packOne(dir);
  const files = packed.files.map((f) => f.path).sort();
  if (!files.includes(addon) || !files.includes('package.json')) throw new Error(`platform tarball holds ${files.join(', ')}`);
  platformTgz = join(stage, packed.filename);
  console.log(`     ${packed.filename}: ${files.join(', ')}, ${packed.size} bytes`);
});

step('npm install --offline of the two tarballs into a fresh project (empty cache)', () => {
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'pack-proof-app', version: '1.0.0', private: true }, null, 2));
  const out = npm(['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', rootTgz, platformTgz], app);
  if (out.trim()) console.log(out.trim().replace(/^/gm, '     '));
  const installed = readdirSync(join(app, 'node_modules')).filter((n) => !n.startsWith('.')).sort();
  if (installed.join(' ') !== `${pkg.name} ${pkg.name}-${ABI}`) throw new Error(`node_modules holds ${installed.join(', ')}`);
});

// Dispatch one move on the native engine, drain it, and show where the addon came from.
const body = (imp) => `${imp}
const d = new Dispatcher({ shards: 1, channelCapacity: 64, arenaBytes: 1 << 20 });
if (d.engine !== 'native') throw new Error('engine ' + d.engine);
d.openRoom(42);
d.join(42, 7);
const payload = new Uint8Array([1, 2, 3, 4]);
const v = d.dispatch(encodeMove({ room: 42, player: 7, seq: 1, tick: 9, kind: 3, payload }), 7);
if (v !== Verdict.Accepted) throw new Error('verdict ' + v);
await d.flush();
const moves = [];
for (const m of d.drain(42)) moves.push({ player: m.player, seq: m.seq, kind: m.kind, payload: Array.from(m.payload) });
await d.close();
const addon = require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/)[5]).find((p) => p && p.endsWith('.node'));
console.log(JSON.stringify({ moves, addon }));
`;
const expectOne = (out) => {
  const got = JSON.parse(out.trim().split('\n').pop());
  const want = [{ player: 7, seq: 1, kind: 3, payload: [1, 2, 3, 4] }];
  if (JSON.stringify(got.moves) !== JSON.stringify(want)) throw new Error(`drained ${JSON.stringify(got.moves)}`);
  if (!got.addon?.includes(join('node_modules', `${pkg.name}-${ABI}`, addon))) throw new Error(`addon loaded from ${got.addon}`);
  console.log(`     1 move dispatched and drained; addon: ${got.addon.slice(app.length + 1)}`);
};
// The environment must not point the loader elsewhere.
const cleanEnv = { MOVE_DISPATCHER_NATIVE_PATH: '', NAPI_RS_NATIVE_LIBRARY_PATH: '' };

step("require('move-dispatcher'): dispatch + drain on the native engine", () => {
  writeFileSync(join(app, 'cjs.cjs'), `const { Dispatcher, Verdict, encodeMove } = require('${pkg.name}');\n(async () => {${body('')}})().catch((e) => { console.error(e); process.exit(1); });\n`);
  expectOne(run(process.execPath, ['cjs.cjs'], app, cleanEnv));
});

step("import … from 'move-dispatcher': dispatch + drain on the native engine", () => {
  writeFileSync(
    join(app, 'esm.mjs'),
    `import md, { Dispatcher, Verdict, encodeMove } from '${pkg.name}';\nimport { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n` +
      `if (md.Dispatcher !== Dispatcher || require('${pkg.name}').Dispatcher !== Dispatcher) throw new Error('two instances');\n${body('')}`,
  );
  expectOne(run(process.execPath, ['esm.mjs'], app, cleanEnv));
});

step("import … from 'move-dispatcher/encode': the ES module build (dist/esm), same frames as require", () => {
  writeFileSync(
    join(app, 'encode.mjs'),
    `import { encodeMove } from '${pkg.name}/encode';\nimport { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n` +
      `if (!import.meta.resolve('${pkg.name}/encode').endsWith('/dist/esm/src/browser.js')) throw new Error('import resolved to ' + import.meta.resolve('${pkg.name}/encode'));\n` +
      `const input = { room: 1, player: 2, seq: 3, payload: new Uint8Array([9]) };\n` +
      `if (!Buffer.from(encodeMove(input)).equals(Buffer.from(require('${pkg.name}/encode').encodeMove(input)))) throw new Error('the two builds differ');\n` +
      `console.log(JSON.stringify({ ok: 1 }));\n`,
  );
  const out = run(process.execPath, ['encode.mjs'], app, cleanEnv);
  if (!out.includes('{"ok":1}')) throw new Error(`encode.mjs printed ${out}`);
});

step('tsc (module nodenext): a CommonJS and an ES module consumer type-check', () => {
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const use = `const d = new Dispatcher({ engine: 'js' });\nconst v: Verdict = d.dispatch(encodeMove({ room: 1, player: 1, seq: 1, payload: new Uint8Array(0) }));\nconst s: DispatcherStats = d.stats();\nexport const out = [v, s.accepted];\n// WebCrypto's own type (lib dom) fits signMove's parameter.\nexport const signed: Promise<Uint8Array> = signMove({ room: 1, player: 1, seq: 1, key: new Uint8Array(32) }, crypto.subtle);\n// @ts-expect-error: not part of the API\nd.noSuchMethod();\n`;
  writeFileSync(join(app, 'consumer-cjs.cts'), `import { Dispatcher, Verdict, encodeMove, signMove, type DispatcherStats } from '${pkg.name}';\n${use}`);
  writeFileSync(join(app, 'consumer-esm.mts'), `import md, { Dispatcher, Verdict, encodeMove, signMove, type DispatcherStats } from '${pkg.name}';\nexport const same: typeof Dispatcher = md.Dispatcher;\n${use}`);
  // The encode subpath: named exports from both module systems; the ES module build has no
  // default export, and its types must say so (a default import that type-checked failed at
  // run time).
  const encodeUse = `export const frame: Uint8Array = encodeMove({ room: 1, player: 1, seq: 1, payload: new Uint8Array(0) });\n`;
  writeFileSync(join(app, 'encode-cjs.cts'), `import { encodeMove } from '${pkg.name}/encode';\n${encodeUse}`);
  writeFileSync(join(app, 'encode-esm.mts'), `import { encodeMove } from '${pkg.name}/encode';\n// @ts-expect-error: the ES module build has no default export\nimport enc from '${pkg.name}/encode';\nexport const none: unknown = enc;\n${encodeUse}`);
  const files = ['consumer-cjs.cts', 'consumer-esm.mts', 'encode-cjs.cts', 'encode-esm.mts'];
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, types: [], lib: ['es2022', 'dom'] }, files }),
  );
  const out = run(process.execPath, [tsc, '-p', 'tsconfig.json', '--traceResolution'], app);
  // Each consumer resolved through its own condition of the exports map.
  const resolved = [
    ['consumer-cjs.cts', '', 'index.d.ts'],
    ['consumer-esm.mts', '', 'index.d.mts'],
    ['encode-cjs.cts', '/encode', 'dist/src/browser.d.ts'],
    ['encode-esm.mts', '/encode', 'encode.d.mts'],
  ];
  for (const [file, sub, types] of resolved) {
    const re = new RegExp(`'${pkg.name}${sub}' from '[^']*${file.replace('.', '\\.')}'[\\s\\S]*?successfully resolved to '([^']+)'`);
    const m = re.exec(out);
    if (!m || !m[1].endsWith(`/node_modules/${pkg.name}/${types}`)) throw new Error(`${file} resolved ${pkg.name}${sub} to ${m?.[1]}`);
  }
});

step('tsc (moduleResolution node10, no exports map): the main entry and the encode subpath type-check', () => {
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const dir = join(app, 'node10');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'consumer.ts'),
    `import { Dispatcher, Verdict } from '${pkg.name}';\nimport { encodeMove } from '${pkg.name}/encode';\nconst d = new Dispatcher({ engine: 'js' });\nexport const v: Verdict = d.dispatch(encodeMove({ room: 1, player: 1, seq: 1, payload: new Uint8Array(0) }));\n`,
  );
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'commonjs', moduleResolution: 'node10', target: 'es2022', strict: true, noEmit: true, types: [] }, files: ['consumer.ts'] }),
  );
  run(process.execPath, [tsc, '-p', 'tsconfig.json'], dir);
});

rmSync(tmp, { recursive: true, force: true });
console.log(`pack-proof (${((Date.now() - t0) / 1000).toFixed(1)} s): ${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
