#!/usr/bin/env node
// Prints the vitest totals as one plain closing line ("vitest: N passed, N failed"),
// read from the JSON report that `npm test` asks vitest to write.
const { readFileSync } = require('node:fs');
const path = process.argv[2] ?? '.vitest/results.json';
const r = JSON.parse(readFileSync(path, 'utf8'));
const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exitCode = r.numFailedTests === 0 && r.numTotalTests > 0 ? 0 : 1;
