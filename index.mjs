// The ES module entry: the CommonJS build, re-exported. One instance of the library per
// process whichever way it is loaded (no dual-package hazard); names come from
// dist/index.js through Node's CommonJS export detection, checked by __test__/package.test.ts.
export * from './dist/index.js';
export { default } from './dist/index.js';
