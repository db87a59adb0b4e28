/**
 * The package as npm sees it: the platform packages under npm/ (names, os / cpu / libc,
 * entry, files, versions in step with the root), the version hook that keeps them there,
 * the declarations tsc emits (no test hook or other internal in them), and both module
 * systems through the `exports` map of a package linked into a fresh node_modules
 * (`require` and `import` reach the same single instance). The packed form, installed
 * offline, and the TypeScript resolution of both entries are proven by
 * scripts/pack-proof.mjs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..');
type Manifest = Record<string, unknown> & { name: string; version: string; engines: { node: string }; napi: { binaryName: string; targets: string[] } };
const read = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Manifest;
const PKG = read(join(ROOT, 'package.json'));

describe('platform packages (npm/)', () => {
  const cpu: Record<string, string> = { x86_64: 'x64', aarch64: 'arm64' };
  const libc: Record<string, string> = { gnu: 'glibc', musl: 'musl' };
  for (const triple of PKG.napi.targets) {
    const [arch, , os, env] = triple.split('-') as [string, string, string, string];
    const abi = `${os}-${cpu[arch]}-${env}`;
    it(`npm/${abi} (${triple})`, () => {
      const p = read(join(ROOT, 'npm', abi, 'package.json'));
      const file = `${PKG.napi.binaryName}.${abi}.node`;
      expect(p).toMatchObject({ name: `${PKG.name}-${abi}`, version: PKG.version, os: [os], cpu: [cpu[arch]], libc: [libc[env]], main: file, files: [file] });
      expect(p.engines).toEqual(PKG.engines);
      expect(p.license).toBe(PKG.license);
    });
  }

  it('there is no other package under npm/, and the version hook keeps them in step', () => {
    expect(readdirSync(join(ROOT, 'npm')).length).toBe(PKG.napi.targets.length);
    expect((PKG.scripts as Record<string, string>).version).toContain('napi version');
  });

  it('the published files leave out locally built binaries; CHANGELOG.md has the version', () => {
    expect(PKG.files).not.toContain('*.node');
    expect(readFileSync(join(ROOT, 'CHANGELOG.md'), 'utf8')).toContain(`## [${PKG.version}]`);
  });

  it('proto/ingress.proto, the gRPC transport\'s contract, is published', () => {
    expect(PKG.files).toContain('proto/');
    expect(readFileSync(join(ROOT, 'proto', 'ingress.proto'), 'utf8')).toContain('package move_dispatcher.v1;');
  });

  it('docs/architecture.md, which the published comments cite, is published', () => {
    expect(PKG.files).toContain('docs/architecture.md');
    expect(existsSync(join(ROOT, 'docs', 'architecture.md'))).toBe(true);
  });
});

describe('published declarations (tsc -p tsconfig.json, declarations only)', () => {
  // Emitted into a directory of its own with the build's tsconfig: the same .d.ts files as
  // dist/, from the sources as they are now, without touching the dist/ other tests load.
  const out = mkdtempSync(join(tmpdir(), 'move-dispatcher-dts-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));
  const files = (): string[] => {
    const found: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else if (e.name.endsWith('.d.ts')) found.push(join(dir, e.name));
      }
    };
    walk(out);
    return found.sort();
  };

  it('carry no test hook, no @internal member and no reference outside the package', { timeout: 120_000 }, () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json'), '--emitDeclarationOnly', '--outDir', out], { encoding: 'utf8', timeout: 110_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const all = files();
    expect(all.map((f) => relative(out, f))).toEqual(expect.arrayContaining(['index.d.ts', join('src', 'dispatcher.d.ts'), join('src', 'delivery.d.ts'), join('src', 'internal.d.ts')]));
    const forbidden: [string, RegExp][] = [
      ['_pauseForTesting', /_pauseForTesting/],
      ['invalidate', /\binvalidate\b/],
      ['@internal', /@internal/],
      ['pauseForTesting', /pauseForTesting/],
      ['failShard', /failShard/],
      ['DESIGN.md', /DESIGN\.md/],
      ['../shared', /\.\.\/shared/],
    ];
    const hits: string[] = [];
    for (const file of all) {
      const text = readFileSync(file, 'utf8');
      for (const [name, re] of forbidden) if (re.test(text)) hits.push(`${relative(out, file)}: ${name}`);
    }
    expect(hits).toEqual([]);
    // MoveBatch.room is a number, never undefined
    expect(readFileSync(join(out, 'src', 'types.d.ts'), 'utf8')).toMatch(/readonly room: number;/);
  });

  it('src/internal.d.ts is not reachable from index.d.ts', () => {
    const reached = new Set<string>();
    const visit = (file: string): void => {
      if (reached.has(file)) return;
      reached.add(file);
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) {
        const base = resolve(dirname(file), m[1]!.replace(/\.js$/, ''));
        const next = [`${base}.d.ts`, join(base, 'index.d.ts')].find((p) => existsSync(p));
        if (next === undefined) throw new Error(`${relative(out, file)} imports ${m[1]}, which has no declaration file`);
        visit(next);
      }
    };
    expect(existsSync(join(out, 'index.d.ts')), 'run the test above first (it emits the declarations)').toBe(true);
    visit(join(out, 'index.d.ts'));
    const names = [...reached].map((f) => relative(out, f)).sort();
    expect(names).toContain(join('src', 'dispatcher.d.ts'));
    expect(names).not.toContain(join('src', 'internal.d.ts'));
  });
});

describe('module systems (package linked into a fresh node_modules)', () => {
  const app = mkdtempSync(join(tmpdir(), 'move-dispatcher-modules-'));
  afterAll(() => rmSync(app, { recursive: true, force: true }));
  mkdirSync(join(app, 'node_modules'));
  symlinkSync(ROOT, join(app, 'node_modules', PKG.name), 'dir');

  function node(file: string, code: string): Record<string, unknown> {
    writeFileSync(join(app, file), code);
    const r = spawnSync(process.execPath, [file], { cwd: app, encoding: 'utf8', timeout: 20_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  }

  const roundTrip = `
const result = {};
for (const engine of ['js', 'native']) {
  const d = new Dispatcher({ engine, shards: 1, channelCapacity: 64, arenaBytes: 1 << 20 });
  d.openRoom(1); d.join(1, 7);
  const verdict = d.dispatch(encodeMove({ room: 1, player: 7, seq: 1, payload: new Uint8Array([5]) }), 7);
  await d.flush();
  result[engine] = { verdict, moves: [...d.drain(1)].map((m) => [m.player, m.seq, m.payload[0]]) };
  await d.close();
}`;
  const want = { js: { verdict: 0, moves: [[7, 1, 5]] }, native: { verdict: 0, moves: [[7, 1, 5]] } };

  it("require('move-dispatcher') resolves the CommonJS build and runs both engines", () => {
    const r = node(
      'cjs.cjs',
      `const { Dispatcher, encodeMove } = require('${PKG.name}');
(async () => {${roundTrip}
  console.log(JSON.stringify({ result, entry: require.resolve('${PKG.name}') }));
})().catch((e) => { console.error(e); process.exit(1); });`,
    );
    expect(r.result).toEqual(want);
    expect(r.entry).toBe(join(ROOT, 'dist', 'index.js'));
  });

  it("import … from 'move-dispatcher' gets every CommonJS export, a default, and the same instance", () => {
    const r = node(
      'esm.mjs',
      `import * as ns from '${PKG.name}';
import md, { Dispatcher, encodeMove } from '${PKG.name}';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('${PKG.name}');
${roundTrip}
const missing = Object.keys(cjs).filter((k) => !(k in ns));
console.log(JSON.stringify({ result, missing, same: md === cjs && Dispatcher === cjs.Dispatcher, entry: import.meta.resolve('${PKG.name}') }));`,
    );
    expect(r.result).toEqual(want);
    expect(r.missing).toEqual([]);
    expect(r.same).toBe(true);
    expect(r.entry).toMatch(/\/index\.mjs$/);
  });

  it("'move-dispatcher/encode' works from both module systems; import gets the ES module build", () => {
    const r = node(
      'encode.mjs',
      `import { encodeMove } from '${PKG.name}/encode';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const viaRequire = require('${PKG.name}/encode').encodeMove;
const input = { room: 1, player: 2, seq: 3, payload: new Uint8Array([1]) };
console.log(JSON.stringify({
  same: Buffer.from(encodeMove(input)).equals(Buffer.from(viaRequire(input))),
  length: encodeMove(input).length,
  esm: import.meta.resolve('${PKG.name}/encode').endsWith('/dist/esm/src/browser.js'),
  cjs: require.resolve('${PKG.name}/encode').endsWith('/dist/src/browser.js'),
}));`,
    );
    expect(r).toEqual({ same: true, length: 57, esm: true, cjs: true });
  });

  it('the ES module build of the browser entry imports only relative files with extensions, nothing from Node', () => {
    const dir = join(ROOT, 'dist', 'esm', 'src');
    expect(JSON.parse(readFileSync(join(ROOT, 'dist', 'esm', 'package.json'), 'utf8'))).toEqual({ type: 'module' });
    const seen = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(join(dir, file), 'utf8');
      for (const m of text.matchAll(/^(?:import|export)\b[^;]*?from\s+'([^']+)'/gm)) {
        const spec = m[1]!;
        expect(spec, `${file} imports ${spec}`).toMatch(/^\.\/[\w-]+\.js$/);
        visit(spec.slice(2));
      }
    };
    visit('browser.js');
    expect([...seen].sort()).toEqual(['browser.js', 'constants.js', 'encode.js', 'errors.js', 'sha256.js', 'webcrypto.js']);
  });
});
