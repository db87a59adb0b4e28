/**
 * Shared layout of the worker_threads pipeline: one control block (Int32Array over a
 * SharedArrayBuffer) per worker, and two byte rings.
 *
 * Ring positions are int32 byte counters that wrap at 2^32 (`(a - b) | 0` is the bytes
 * between them while the ring is smaller than 2^31); the offset is `counter & (cap - 1)`,
 * capacities are powers of two. A record never wraps: at the end of the ring the writer
 * puts a 0 byte (no record starts with 0) and continues at offset 0.
 *
 * - input ring (main → worker): frames exactly as received, back to back;
 * - output ring (worker → main): validated frames, and 16-byte rejection records
 *   `[0x52, reason, 0, 0, room u32, player u32, seq u32]`.
 *
 * Each position lives on its own 64-byte line (no false sharing between the threads).
 */
export const IN_HEAD = 0;
export const IN_TAIL = 16;
export const IN_SEQ = 32;
export const IN_SLEEP = 33;
export const OUT_HEAD = 48;
export const OUT_TAIL = 64;
export const OUT_SEQ = 80;
export const OUT_ARMED = 81;
export const STOP = 96;
export const WINDOW = 97;
export const CONTROL_INTS = 128;

export const FRAME_MAGIC = 0x4d;
export const REJECT_MAGIC = 0x52;
export const REJECT_BYTES = 16;

export const REASON_BAD_TAG = 0;
export const REASON_UNKNOWN_PLAYER = 1;
export const REASON_REPLAY = 2;

export interface WorkerSetup {
  control: SharedArrayBuffer;
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
  rooms: { room: number; hmac: boolean }[];
  joins: { room: number; player: number; key: Uint8Array | null }[];
  /** Signed bytes of the load's frames (the hash calibration's size). */
  signedBytes: number;
}

export interface WorkerReport {
  /** V8 GC pauses of the worker's isolate inside the measured window. */
  gcCount: number;
  gcTotalMs: number;
  gcMaxMs: number;
  moves: number;
  /** The tag check the worker's calibration chose: `js` (../hand/sha256.ts) or `node:crypto`. */
  hash: string;
}
