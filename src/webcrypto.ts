/**
 * Signing frames with WebCrypto (`crypto.subtle`): what a browser page uses to tag its
 * frames with the platform's SHA-256 / HMAC-SHA256 instead of this package's plain
 * TypeScript ones (`encodeMove`). The bytes are the same either way.
 *
 * Browser-safe: no Node.js imports; `subtle` is passed in (any WebCrypto: browsers,
 * workers, Node.js ≥ 20's `globalThis.crypto.subtle`, Deno, Bun).
 */
import { encodeMoveUnsigned, frameBody, setTag } from './encode.js';
import { ErrorCode, typeError } from './errors.js';
import type { EncodeMoveInput } from './types.js';

/**
 * The three methods of WebCrypto's `SubtleCrypto` that {@link signMove} calls, typed
 * structurally so that `crypto.subtle` fits without the DOM library in `lib`.
 */
export interface SubtleCryptoLike {
  importKey(format: 'raw', keyData: BufferSourceLike, algorithm: { name: 'HMAC'; hash: 'SHA-256' }, extractable: boolean, keyUsages: ['sign']): Promise<unknown>;
  sign(algorithm: 'HMAC', key: unknown, data: BufferSourceLike): Promise<ArrayBuffer>;
  digest(algorithm: 'SHA-256', data: BufferSourceLike): Promise<ArrayBuffer>;
}

/**
 * The bytes `SubtleCryptoLike` passes: wide enough that the DOM's `BufferSource`
 * parameters (`ArrayBuffer | ArrayBufferView<ArrayBuffer>` in TypeScript ≥ 5.7) fit it, so
 * that `crypto.subtle` type-checks with the DOM library as well as with Node's types.
 */
export type BufferSourceLike = ArrayBuffer | ArrayBufferView;

/**
 * Builds one v1 frame like `encodeMove(input)` — HMAC-SHA256 with `input.key`, SHA-256
 * without — but computes the tag with WebCrypto's `subtle`. The key is imported (raw,
 * not extractable, `sign` only) on every call; to sign many frames with one imported
 * `CryptoKey`, use `encodeMoveUnsigned` + `frameBody` + `setTag` instead.
 * @returns a promise of the frame, byte for byte what `encodeMove(input)` returns.
 * @throws (synchronously) like `encodeMove` for a bad `input`, and TypeError (field
 * `subtle`) when `subtle` has no `importKey`, `sign` and `digest` functions.
 * @example
 * const frame = await signMove({ room: 1, player: 7, seq: 1, payload, key }, crypto.subtle);
 * socket.send(frame);
 */
export function signMove(input: EncodeMoveInput, subtle: SubtleCryptoLike): Promise<Uint8Array> {
  const frame = encodeMoveUnsigned(input);
  if (typeof subtle !== 'object' || subtle === null || typeof subtle.importKey !== 'function' || typeof subtle.sign !== 'function' || typeof subtle.digest !== 'function') {
    throw typeError(ErrorCode.InvalidArgument, 'signMove: subtle must be a WebCrypto SubtleCrypto (crypto.subtle)', { field: 'subtle' });
  }
  const body = frameBody(frame);
  const key = input.key;
  const tag =
    key === undefined
      ? subtle.digest('SHA-256', body)
      : subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']).then((k) => subtle.sign('HMAC', k, body));
  return tag.then((t) => {
    setTag(frame, t);
    return frame;
  });
}
