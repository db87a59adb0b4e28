/**
 * The types users see. They are generated from `index.ts` and `src/types.ts` by
 * `npm run build:ts` into `dist/`; this file re-exports them so that
 * `import … from 'move-dispatcher'` is typed without reaching into `dist/`.
 */
export * from './dist/index';
