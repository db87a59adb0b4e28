/** Types of the ES module entry (`index.mjs`): the same API as the CommonJS entry. */
export * from './dist/index.js';
import * as api from './dist/index.js';
export default api;
