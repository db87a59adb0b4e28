/**
 * The files the browser loads: `public/` (the page and its script), served from the
 * source tree, and the package's browser entry `move-dispatcher/encode` as one ES module.
 *
 * Why a wrapper: the package's browser entry (`exports['./encode']`, dist/src/browser.js)
 * is a CommonJS build, which a page cannot `import` without a bundler. This serves those
 * built files byte for byte, each wrapped in a function of a small module table, with the
 * entry's names re-exported (as __test__/browser-ingress.test.ts does). With a bundler
 * (esbuild, Vite, webpack) a client imports `move-dispatcher/encode` and none of this is
 * needed; the page's import map names the same specifier, so its code reads the same.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The package root: the nearest directory up from here whose package.json is move-dispatcher's (source and dist/ alike). */
export function packageRoot(from: string = __dirname): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { name?: string }).name === 'move-dispatcher') return dir;
    if (dirname(dir) === dir) throw new Error(`arena: no move-dispatcher package.json above ${from}`);
  }
}

/** `examples/arena/public` in the source tree (also when running from dist/). */
export function publicDir(root: string = packageRoot()): string {
  return join(root, 'examples', 'arena', 'public');
}

/** The file `move-dispatcher/encode` resolves to, by the package's own `exports`. */
function encodeEntry(root: string): string {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports: Record<string, { default?: string } | undefined> };
  const target = pkg.exports['./encode']?.default;
  if (target === undefined) throw new Error("arena: package.json has no exports['./encode']");
  const file = join(root, target);
  if (!existsSync(file)) throw new Error(`arena: ${file} is missing: run 'npm run build' first`);
  return file;
}

/**
 * `move-dispatcher/encode` as one ES module: the built CommonJS files of its `require`
 * graph (relative requires only, which the browser entry is limited to) in a module table.
 */
export function browserEncodeModule(root: string = packageRoot()): string {
  const entryFile = encodeEntry(root);
  const dir = dirname(entryFile);
  const files = new Map<string, string>();
  const visit = (name: string): void => {
    if (files.has(name)) return;
    const code = readFileSync(join(dir, `${name}.js`), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/gm, '');
    files.set(name, code);
    for (const m of code.matchAll(/require\(("[^"]*"|'[^']*')\)/g)) {
      const spec = m[1]!.slice(1, -1);
      if (!/^\.\/[\w.-]+$/.test(spec)) throw new Error(`arena: ${name}.js requires ${spec}, not a browser-safe local module`);
      visit(spec.slice(2).replace(/\.js$/, ''));
    }
  };
  const entry = entryFile.slice(dir.length + 1).replace(/\.js$/, '');
  visit(entry);
  const names = Object.keys(createRequire(__filename)(entryFile) as Record<string, unknown>).filter((n) => n !== '__esModule');
  const table = [...files].map(([name, code]) => `${JSON.stringify(name)}: function (exports, require) {\n${code}\n}`).join(',\n');
  return [
    `// move-dispatcher/encode (${[...files.keys()].map((f) => `${f}.js`).join(', ')}): the CommonJS build, unchanged, in a module table.`,
    `const files = {\n${table}\n};`,
    'const cache = {};',
    'function load(name) {',
    '  if (cache[name] !== undefined) return cache[name];',
    '  const exports = (cache[name] = {});',
    "  files[name](exports, (spec) => load(spec.slice(2).replace(/\\.js$/, '')));",
    '  return exports;',
    '}',
    `const entry = load(${JSON.stringify(entry)});`,
    `export const { ${names.join(', ')} } = entry;`,
    '',
  ].join('\n');
}

/** A static file: its content type and bytes. */
export interface Asset {
  type: string;
  body: Buffer;
}

/** Every file the page needs, by URL path, read once at startup. */
export function loadAssets(root: string = packageRoot()): Map<string, Asset> {
  const dir = publicDir(root);
  const file = (name: string, type: string): Asset => ({ type, body: readFileSync(join(dir, name)) });
  return new Map<string, Asset>([
    ['/', file('index.html', 'text/html; charset=utf-8')],
    ['/client.js', file('client.js', 'text/javascript; charset=utf-8')],
    ['/vendor/move-dispatcher-encode.mjs', { type: 'text/javascript; charset=utf-8', body: Buffer.from(browserEncodeModule(root)) }],
  ]);
}
