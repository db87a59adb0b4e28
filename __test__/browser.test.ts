/**
 * encodeMove must run in browsers: the browser entry's whole import graph is free of
 * `node:` (and bare Node built-in) imports, and it works in a context without `require`.
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { encodeMove as nodeEncode } from '../index';

const SRC = join(__dirname, '..', 'src');

/** Every module specifier imported (statically, types excluded) by `file` and its local imports. */
function importGraph(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
  if (seen.has(file)) return seen;
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]!);
  seen.set(file, specs);
  for (const spec of specs) {
    if (spec.startsWith('.')) importGraph(`${resolve(dirname(file), spec)}.ts`, seen);
  }
  return seen;
}

describe('browser entry', () => {
  it('imports nothing from Node.js, directly or transitively', () => {
    const graph = importGraph(join(SRC, 'browser.ts'));
    expect(graph.size).toBeGreaterThanOrEqual(4);
    const builtins = new Set(builtinModules);
    for (const [file, specs] of graph) {
      for (const spec of specs) {
        expect(spec.startsWith('node:') || builtins.has(spec), `${file} imports ${spec}`).toBe(false);
        expect(spec.startsWith('.'), `${file} imports the package ${spec}`).toBe(true);
      }
    }
  });

  it('the built entry encodes frames in a context with no require, process or Buffer', () => {
    // Bundle the compiled CommonJS modules by hand: a tiny module table, no Node APIs.
    const dist = join(__dirname, '..', 'dist', 'src');
    const cache = new Map<string, Record<string, unknown>>();
    const load = (name: string): Record<string, unknown> => {
      const hit = cache.get(name);
      if (hit !== undefined) return hit;
      const exports: Record<string, unknown> = {};
      cache.set(name, exports);
      const code = readFileSync(join(dist, `${name}.js`), 'utf8');
      const localRequire = (spec: string): Record<string, unknown> => {
        if (!spec.startsWith('./')) throw new Error(`browser entry required ${spec}`);
        return load(spec.slice(2));
      };
      runInNewContext(`(function (exports, require) {${code}\n})`, { Uint8Array, DataView, Error, TypeError, RangeError, Object, Number, Math, Array, Int32Array, Uint32Array, Symbol })(exports, localRequire);
      return exports;
    };
    const browser = load('browser') as { encodeMove: typeof nodeEncode };
    const input = { room: 42, player: 7, seq: 3, tick: 1200, kind: 5, payload: new Uint8Array([104, 101, 108, 108, 111]) };
    expect(Buffer.from(browser.encodeMove(input)).toString('hex')).toBe(Buffer.from(nodeEncode(input)).toString('hex'));
  });
});
