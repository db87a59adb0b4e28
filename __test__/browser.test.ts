/**
 * encodeMove must run in browsers: the browser entry's whole import graph is free of
 * `node:` (and bare Node built-in) imports, and it works in a context without `require`.
 */
import { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { encodeMove as nodeEncode } from '../index';
import { encodeMove, encodeMoveInto, encodeMoveUnsigned, ErrorCode, frameBody, setTag, signMove, TAG_BYTES, type EncodeMoveInput, type SubtleCryptoLike } from '../src/browser';

const SRC = join(__dirname, '..', 'src');

/** Every module specifier imported (statically, types excluded) by `file` and its local imports. */
function importGraph(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
  if (seen.has(file)) return seen;
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]!);
  seen.set(file, specs);
  for (const spec of specs) {
    // Sources name their imports as the built files (`./encode.js`, for the ES module build).
    if (spec.startsWith('.')) importGraph(`${resolve(dirname(file), spec).replace(/\.js$/, '')}.ts`, seen);
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
        return load(spec.slice(2).replace(/\.js$/, ''));
      };
      runInNewContext(`(function (exports, require) {${code}\n})`, { Uint8Array, DataView, Error, TypeError, RangeError, Object, Number, Math, Array, Int32Array, Uint32Array, Symbol })(exports, localRequire);
      return exports;
    };
    const browser = load('browser') as { encodeMove: typeof nodeEncode };
    const input = { room: 42, player: 7, seq: 3, tick: 1200, kind: 5, payload: new Uint8Array([104, 101, 108, 108, 111]) };
    expect(Buffer.from(browser.encodeMove(input)).toString('hex')).toBe(Buffer.from(nodeEncode(input)).toString('hex'));
  });
});

describe('signing with WebCrypto (signMove, encodeMoveUnsigned, frameBody, setTag)', () => {
  const subtle: SubtleCryptoLike = webcrypto.subtle;
  const payloads = [0, 1, 9, 31, 32, 55, 56, 64, 119, 1000].map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff));
  const keys = [16, 32, 33, 64].map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 11 + 3) & 0xff));
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

  it('signMove gives encodeMove\'s bytes, HMAC-SHA256 with a key and SHA-256 without', async () => {
    for (const payload of payloads) {
      const base = { room: 0xfedc_ba98, player: 7, seq: 0xffff_ffff, tick: 12, kind: 0xffff, payload };
      expect(hex(await signMove(base, subtle)), `sha256, ${payload.length} bytes`).toBe(hex(encodeMove(base)));
      for (const key of keys) {
        const input: EncodeMoveInput = { ...base, key };
        expect(hex(await signMove(input, subtle)), `hmac, ${payload.length} bytes, key ${key.length}`).toBe(hex(encodeMove(input)));
      }
    }
  });

  it('encodeMoveUnsigned leaves the tag zero and sets the flag from key or auth', () => {
    const key = keys[1]!;
    const input = { room: 1, player: 2, seq: 3, payload: payloads[2]! };
    const signed = encodeMove({ ...input, key });
    const unsigned = encodeMoveUnsigned({ ...input, key });
    expect(unsigned.length).toBe(signed.length);
    expect(hex(unsigned.subarray(0, signed.length - TAG_BYTES))).toBe(hex(signed.subarray(0, signed.length - TAG_BYTES)));
    expect([...unsigned.subarray(signed.length - TAG_BYTES)].every((b) => b === 0)).toBe(true);
    expect(encodeMoveUnsigned(input)[3]).toBe(0);
    expect(encodeMoveUnsigned({ ...input, key })[3]).toBe(1);
    expect(encodeMoveUnsigned(input, 'hmac-sha256')[3]).toBe(1);
    expect(encodeMoveUnsigned({ ...input, key }, 'sha256')[3]).toBe(0);
    expect(frameBody(unsigned)).toEqual(unsigned.subarray(0, 24 + input.payload.length));
  });

  it('encodeMoveUnsigned + frameBody + setTag with a CryptoKey imported once, also at an offset in a multi-frame buffer', async () => {
    const key = keys[2]!;
    const cryptoKey = await webcrypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    const inputs = payloads.slice(0, 4).map((payload, i) => ({ room: 5, player: 6, seq: i + 1, payload, key }));
    for (const input of inputs) {
      const frame = encodeMoveUnsigned(input, 'hmac-sha256');
      setTag(frame, await webcrypto.subtle.sign('HMAC', cryptoKey, frameBody(frame)));
      expect(hex(frame)).toBe(hex(encodeMove(input)));
    }
    // Two frames in one buffer: blank the second one's tag, then restore it from WebCrypto.
    const a = inputs[1]!;
    const b = inputs[3]!;
    const buf = new Uint8Array(112 + a.payload.length + b.payload.length);
    const at = encodeMoveInto(a, buf, 0);
    encodeMoveInto(b, buf, at);
    const want = hex(buf);
    buf.fill(0, buf.length - TAG_BYTES);
    setTag(buf, new Uint8Array(await webcrypto.subtle.sign('HMAC', cryptoKey, frameBody(buf, at))), at);
    expect(hex(buf)).toBe(want);
    // SHA-256 frames through digest.
    const plain = encodeMoveUnsigned({ room: 1, player: 1, seq: 9, payload: payloads[7]! });
    setTag(plain, await webcrypto.subtle.digest('SHA-256', frameBody(plain)));
    expect(hex(plain)).toBe(hex(encodeMove({ room: 1, player: 1, seq: 9, payload: payloads[7]! })));
  });

  it('rejects bad arguments with typed errors naming the field', () => {
    const frame = encodeMoveUnsigned({ room: 1, player: 1, seq: 1, payload: new Uint8Array(8) });
    const code = ErrorCode.InvalidArgument;
    expect(() => setTag(frame, new Uint8Array(31))).toThrow(expect.objectContaining({ code, field: 'tag', name: 'RangeError' }));
    expect(() => setTag(frame, 'x' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code, field: 'tag', name: 'TypeError' }));
    expect(() => setTag(frame.subarray(0, frame.length - 1), new Uint8Array(32))).toThrow(expect.objectContaining({ code, field: 'frame', name: 'RangeError' }));
    expect(() => setTag(frame, new Uint8Array(32), 1)).toThrow(expect.objectContaining({ code, field: 'frame' }));
    expect(() => setTag(frame, new Uint8Array(32), -1)).toThrow(expect.objectContaining({ code, field: 'offset' }));
    expect(() => frameBody([1, 2] as unknown as Uint8Array)).toThrow(expect.objectContaining({ code, field: 'frame', name: 'TypeError' }));
    expect(() => frameBody(new Uint8Array(10))).toThrow(expect.objectContaining({ code, field: 'frame' }));
    expect(() => encodeMoveUnsigned({ room: 1, player: 1, seq: 0 })).toThrow(expect.objectContaining({ code, field: 'seq' }));
    expect(() => encodeMoveUnsigned({ room: 1, player: 1, seq: 1 }, 'hmac' as unknown as 'sha256')).toThrow(expect.objectContaining({ code, field: 'auth' }));
    expect(() => signMove({ room: 1, player: 1, seq: 1, key: new Uint8Array(8) }, subtle)).toThrow(expect.objectContaining({ code, field: 'key' }));
    expect(() => signMove({ room: 1, player: 1, seq: 1 }, {} as SubtleCryptoLike)).toThrow(expect.objectContaining({ code, field: 'subtle' }));
    expect([...frame.subarray(frame.length - TAG_BYTES)].every((b) => b === 0)).toBe(true);
  });
});
