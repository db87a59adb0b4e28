#!/usr/bin/env node
// The echo server the Autobahn conformance run (scripts/autobahn.sh) drives: a native
// Dispatcher whose WebSocket ingress runs in its test-only echo mode (`echoForTesting`:
// every message goes back as the same type, text is accepted and checked as UTF-8, no
// ticket is needed). Never for production: echo mode takes no moves.
//
// Usage: node scripts/autobahn-server.mjs [port]   (default 9001; 0 picks a free port)
// Prints `listening <port>` on stdout once bound; stops on SIGINT / SIGTERM.
// Needs the build (`npm run build`).
import { Dispatcher } from '../index.mjs';

const port = Number(process.argv[2] ?? 9001);
const d = new Dispatcher({ engine: 'native' });
const server = await d.listen({
  ws: { port, host: '127.0.0.1' },
  ticketKey: 'autobahn echo server, no tickets',
  echoForTesting: true,
  // 9.x sends messages of up to 16 MiB; echo queues each whole message before writing it.
  maxMessageBytes: 16 << 20,
  maxBackpressureBytes: 64 << 20,
  // Cases run one after another: each connection is short-lived.
  maxConnections: 64,
  idleTimeoutMs: 0,
});
process.stdout.write(`listening ${server.address('ws').port}\n`);
// The listener runs on the addon's threads, which hold no Node handle: keep the process up.
const keepAlive = setInterval(() => undefined, 1 << 30);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(keepAlive);
  await server.close();
  await d.close();
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
