/**
 * move-dispatcher: a Rust data plane for Node.js real-time servers.
 *
 * ```ts
 * import { Dispatcher, Verdict, encodeMove } from 'move-dispatcher';
 * const d = new Dispatcher();
 * d.openRoom(1);
 * d.join(1, 7);
 * d.dispatch(encodeMove({ room: 1, player: 7, seq: 1, payload }), 7) === Verdict.Accepted;
 * await d.flush();
 * for (const move of d.drain(1)) console.log(move.player, move.seq, move.payload);
 * // or every pull room at once, in one buffer:
 * for (const batch of d.drainAll()) for (const move of batch) console.log(batch.room, move.seq);
 * ```
 */
export { Dispatcher } from './src/dispatcher';
export { Verdict, Reason, VERDICT_NAMES, REASON_NAMES, REPLAY_WINDOW, FRAME_OVERHEAD, HEADER_BYTES, TAG_BYTES, MAX_WIRE_PAYLOAD } from './src/constants';
export { ErrorCode } from './src/errors';
export { encodeMove, encodeMoveInto, encodeMoveUnsigned, frameBody, frameLength, parseHeader, setTag } from './src/encode';
export { signMove, type BufferSourceLike, type SubtleCryptoLike } from './src/webcrypto';
export { DEFAULTS } from './src/options';
export { issueTicket, TICKET_VERSION, MAX_TICKET_TTL_MS, DEFAULT_TICKET_TTL_MS } from './src/ticket';
export type {
  AuthMode,
  Delivery,
  DeliveryMode,
  DispatcherOptions,
  DispatcherStats,
  EncodeMoveInput,
  HistogramStats,
  IngressStats,
  AllocatorStats,
  JoinOptions,
  LatencyStats,
  MoveBatch,
  MoveView,
  OverloadEvent,
  Rejection,
  RateLimit,
  RoomOptions,
  RoomStats,
  RuntimeStats,
  ShardStats,
  StatsOptions,
  StreamResult,
} from './src/types';
export type { TicketClaims } from './src/ticket';
export type { ConnectionInfo, DisconnectInfo, DisconnectOptions, DisconnectReason, IngressServer, ListenAddress, ListenedTransports, ListenOptions, SendResult, Transport } from './src/ingress';
