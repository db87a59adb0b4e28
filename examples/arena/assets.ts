/**
 * The files the browser loads: `public/` (the page and its script), served from the
 * source tree, and the package's browser entry `move-dispatcher/encode` as the ES modules
 * the package ships for it (`exports['./encode'].import`, dist/esm/src/): the page's import
 * map names `move-dispatcher/encode`, so its code reads as it would with a bundler.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
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

/** The directory of the ES module build `import 'move-dispatcher/encode'` resolves to, by the package's own `exports`. */
export function encodeDir(root: string = packageRoot()): string {
  type Target = string | { default?: string } | undefined;
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports: Record<string, { import?: Target } | undefined> };
  const entry = pkg.exports['./encode']?.import;
  // A path, or a condition object whose `default` is the path (`types` beside it).
  const target = typeof entry === 'string' ? entry : entry?.default;
  if (target === undefined) throw new Error("arena: package.json has no exports['./encode'].import");
  const file = join(root, target);
  if (!existsSync(file)) throw new Error(`arena: ${file} is missing: run 'npm run build' first`);
  return dirname(file);
}

/** A static file: its content type and bytes. */
export interface Asset {
  type: string;
  body: Buffer;
}

/** Every file the page needs, by URL path, read once at startup. */
export function loadAssets(root: string = packageRoot()): Map<string, Asset> {
  const dir = publicDir(root);
  const js = 'text/javascript; charset=utf-8';
  const file = (name: string, type: string): Asset => ({ type, body: readFileSync(join(dir, name)) });
  const assets = new Map<string, Asset>([
    ['/', file('index.html', 'text/html; charset=utf-8')],
    ['/client.js', file('client.js', js)],
  ]);
  // move-dispatcher/encode: browser.js and the modules it imports (relative, with extensions).
  const esm = encodeDir(root);
  for (const name of readdirSync(esm)) {
    if (name.endsWith('.js')) assets.set(`/vendor/move-dispatcher/encode/${name}`, { type: js, body: readFileSync(join(esm, name)) });
  }
  return assets;
}
