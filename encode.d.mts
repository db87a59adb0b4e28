/**
 * Types of the `move-dispatcher/encode` ES module entry (`dist/esm/src/browser.js`): the
 * same names as its CommonJS entry, and no default export (the ES module build has none).
 */
export * from './dist/src/browser.js';
