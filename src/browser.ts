/**
 * The browser (and any-runtime) entry: frame encoding and the shared vocabularies, with no
 * Node.js imports anywhere in its import graph (checked by `__test__/browser.test.ts`).
 * Bundlers pick it through the `browser` condition of the package's `exports`; it is also
 * reachable as `move-dispatcher/encode`.
 *
 * A page that signs with WebCrypto (`crypto.subtle`) rather than the plain TypeScript
 * SHA-256 of `encodeMove`: `await signMove(input, crypto.subtle)`, or, with a `CryptoKey`
 * imported once, `encodeMoveUnsigned` + `crypto.subtle.sign('HMAC', key, frameBody(f))` +
 * `setTag`.
 */
export { encodeMove, encodeMoveInto, encodeMoveUnsigned, frameBody, frameLength, parseHeader, setTag, type FrameHeader } from './encode.js';
export { signMove, type BufferSourceLike, type SubtleCryptoLike } from './webcrypto.js';
export { hmacSha256, sha256 } from './sha256.js';
export { Verdict, Reason, VERDICT_NAMES, REASON_NAMES, REPLAY_WINDOW, FRAME_OVERHEAD, HEADER_BYTES, TAG_BYTES, MAX_WIRE_PAYLOAD } from './constants.js';
export { ErrorCode } from './errors.js';
export type { EncodeMoveInput } from './types.js';
