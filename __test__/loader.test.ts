/**
 * The addon loader (`loadBinding()` in src/native.ts), in child processes with their own
 * environment: `MOVE_DISPATCHER_NATIVE_PATH` loads exactly the file it names, a binary that
 * is missing, broken or for another platform gives `ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE`
 * naming the platform, every file tried and what to do — and `engine: 'js'` works anyway.
 * Runs against the build (`dist/`, `binding.js` and the `.node` file beside it).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PREBUILT_PLATFORMS } from '../src/native';

const ROOT = join(__dirname, '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; napi: { binaryName: string; targets: string[] } };
/** This machine's glibc version, undefined on musl. */
const GLIBC = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
/** This machine's platform in napi's naming (the suite runs on linux x64 / arm64, glibc or musl). */
const ABI = `${process.platform}-${process.arch}-${GLIBC === undefined ? 'musl' : 'gnu'}`;
const ADDON = join(ROOT, `${PKG.napi.binaryName}.${ABI}.node`);
const TMP = mkdtempSync(join(tmpdir(), 'move-dispatcher-loader-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

/** A child script: `out(x)` prints x as the last line; the library is `lib`. */
function child(script: string, env: Record<string, string> = {}, cwd = ROOT, lib = join(ROOT, 'dist', 'index.js')) {
  const code = `const lib = require(${JSON.stringify(lib)});
const out = (x) => console.log(JSON.stringify(x));
const loaded = () => [...new Set(require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/)[5]).filter((p) => p && p.endsWith('.node')))];
const nativeError = () => { try { new lib.Dispatcher(); return null; } catch (e) { return { code: e.code, message: e.message, platform: e.platform, tried: e.tried }; } };
(async () => { ${script} })().catch((e) => { console.error(e); process.exit(1); });`;
  const base = { ...process.env };
  delete base.MOVE_DISPATCHER_NATIVE_PATH;
  delete base.NAPI_RS_NATIVE_LIBRARY_PATH;
  const r = spawnSync(process.execPath, ['-e', code], { cwd, encoding: 'utf8', timeout: 20_000, env: { ...base, ...env } });
  const text = `${r.stdout}${r.stderr}`;
  expect(r.status, text).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** Dispatch one move on the native engine and drain it; report the moves and loaded addons. */
const ROUND_TRIP = `const d = new lib.Dispatcher({ shards: 1, channelCapacity: 64, arenaBytes: 1 << 20 });
d.openRoom(1); d.join(1, 7);
const v = d.dispatch(lib.encodeMove({ room: 1, player: 7, seq: 1, payload: new Uint8Array([9]) }), 7);
await d.flush();
const moves = [...d.drain(1)].length;
await d.close();
out({ engine: d.engine, v, moves, loaded: loaded() });`;

type Failure = { code: string; message: string; platform: string; tried: string[] };

describe('loader', () => {
  it('lists the prebuilt platforms of package.json napi.targets and npm/', () => {
    const cpu: Record<string, string> = { x86_64: 'x64', aarch64: 'arm64' };
    const abi = (triple: string) => {
      const [arch, , os, env] = triple.split('-');
      return `${os}-${cpu[arch!]}-${env}`;
    };
    expect([...PREBUILT_PLATFORMS].sort()).toEqual(PKG.napi.targets.map(abi).sort());
    expect([...PREBUILT_PLATFORMS].sort()).toEqual(readdirSync(join(ROOT, 'npm')).sort());
  });

  it('loads the addon beside binding.js by default', () => {
    const r = child(ROUND_TRIP);
    expect(r).toMatchObject({ engine: 'native', v: 0, moves: 1, loaded: [ADDON] });
  });

  it('MOVE_DISPATCHER_NATIVE_PATH loads exactly that file (absolute or relative to the cwd)', () => {
    const copy = join(TMP, 'custom-name.node');
    copyFileSync(ADDON, copy);
    expect(child(ROUND_TRIP, { MOVE_DISPATCHER_NATIVE_PATH: copy })).toMatchObject({ engine: 'native', moves: 1, loaded: [copy] });
    expect(child(ROUND_TRIP, { MOVE_DISPATCHER_NATIVE_PATH: 'custom-name.node' }, TMP)).toMatchObject({ moves: 1, loaded: [copy] });
  });

  it("MOVE_DISPATCHER_NATIVE_PATH at a missing file: a clear error, no other binary, engine: 'js' still works", () => {
    const missing = join(TMP, 'nope', 'move-dispatcher.node');
    const r = child(`const e = nativeError(); const d = new lib.Dispatcher({ engine: 'js' }); out({ e, again: nativeError(), js: d.engine, loaded: loaded() }); await d.close();`, {
      MOVE_DISPATCHER_NATIVE_PATH: missing,
    });
    const e = r.e as Failure;
    expect(e.code).toBe('ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE');
    expect(e.platform).toBe(ABI);
    expect(e.message).toContain(`could not be loaded on ${ABI}${GLIBC === undefined ? '' : ` (glibc ${GLIBC})`}, `);
    expect(e.message).toContain(`Node.js ${process.version}`);
    expect(e.tried).toEqual([`${missing}: not found`]);
    expect(e.message).toContain(`MOVE_DISPATCHER_NATIVE_PATH=${missing} must name a move-dispatcher .node file built for ${ABI}`);
    expect(e.message).toContain("pass { engine: 'js' }");
    expect(r.again).toEqual(r.e); // the failure is remembered, not retried per Dispatcher
    expect(r.js).toBe('js');
    expect(r.loaded).toEqual([]); // nothing was loaded in its place
  });

  it('MOVE_DISPATCHER_NATIVE_PATH at a file that is no addon: the loader error is passed on', () => {
    const bogus = join(TMP, 'bogus.node');
    writeFileSync(bogus, 'not an ELF file');
    const e = child('out(nativeError());', { MOVE_DISPATCHER_NATIVE_PATH: bogus }) as Failure;
    expect(e.code).toBe('ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE');
    expect(e.tried).toHaveLength(1);
    expect(e.tried[0]).toContain(bogus);
    expect(e.tried[0]).toMatch(/invalid ELF header|file too short/);
  });

  it("NAPI_RS_NATIVE_LIBRARY_PATH (napi-rs's generic variable) is honoured and named when it fails", () => {
    const copy = join(TMP, 'via-napi.node');
    copyFileSync(ADDON, copy);
    expect(child(ROUND_TRIP, { NAPI_RS_NATIVE_LIBRARY_PATH: copy })).toMatchObject({ moves: 1, loaded: [copy] });
    const e = child('out(nativeError());', { NAPI_RS_NATIVE_LIBRARY_PATH: join(TMP, 'absent.node') }) as Failure;
    expect(e.tried).toEqual([`${join(TMP, 'absent.node')}: not found`]);
    expect(e.message).toContain('NAPI_RS_NATIVE_LIBRARY_PATH=');
  });

  /** A copy of the built package without any addon: what an install that lost its optional dependency looks like. */
  function bare(): string {
    const dir = mkdtempSync(join(TMP, 'bare-'));
    cpSync(join(ROOT, 'dist', 'index.js'), join(dir, 'dist', 'index.js'));
    cpSync(join(ROOT, 'dist', 'src'), join(dir, 'dist', 'src'), { recursive: true });
    cpSync(join(ROOT, 'binding.js'), join(dir, 'binding.js'));
    return dir;
  }

  it('no binary for a supported platform: names the platform, both places tried, and the fixes', () => {
    const dir = bare();
    const r = child(`const e = nativeError(); const d = new lib.Dispatcher({ engine: 'js' }); out({ e, js: d.engine }); await d.close();`, {}, dir, join(dir, 'dist', 'index.js'));
    const e = r.e as Failure;
    expect(e.code).toBe('ERR_MOVE_DISPATCHER_NATIVE_UNAVAILABLE');
    expect(e.tried).toEqual([`${join(dir, `${PKG.napi.binaryName}.${ABI}.node`)}: not found`, `package ${PKG.napi.binaryName}-${ABI}: not installed`]);
    expect(e.message).toContain(`optional dependency move-dispatcher-${ABI}`);
    expect(e.message).toContain('--omit=optional');
    expect(e.message).toContain('MOVE_DISPATCHER_NATIVE_PATH');
    expect(e.message).toContain("pass { engine: 'js' }");
    expect(r.js).toBe('js');
  });

  it('an unsupported platform (riscv64, simulated): says no prebuilt binary exists and how to build one', () => {
    const dir = bare();
    const e = child(`Object.defineProperty(process, 'arch', { value: 'riscv64' }); out(nativeError());`, {}, dir, join(dir, 'dist', 'index.js')) as Failure;
    const riscv = ABI.replace(process.arch, 'riscv64');
    expect(e.platform).toBe(riscv);
    expect(e.tried).toEqual([`${join(dir, `${PKG.napi.binaryName}.${riscv}.node`)}: not found`, `package ${PKG.napi.binaryName}-${riscv}: not installed`]);
    expect(e.message).toContain(`no prebuilt binary exists for ${riscv} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')}; glibc 2.17 or later)`);
    expect(e.message).toContain('npm run build:native');
  });

  it('binding.js itself missing (an unbuilt checkout): says to build', () => {
    const dir = bare();
    rmSync(join(dir, 'binding.js'));
    const e = child('out(nativeError());', {}, dir, join(dir, 'dist', 'index.js')) as Failure;
    expect(e.tried[0]).toMatch(/^binding\.js not found/);
    expect(e.message).toContain("run 'npm run build'");
  });
});
