// The arena's browser client: plain ES module, no framework, no bundler.
//
// 1. POST /api/login { name } → { session, player, room, key (base64), url, hz, arenaSize }
//    (the answer comes once matchmaking has seated us); the session id is kept in
//    sessionStorage so that a reload reconnects (POST /api/reconnect { session }).
// 2. new WebSocket(url) straight to the data plane (the ticket is in the URL).
// 3. 20 times a second: one input frame, signed with WebCrypto (signMove), payload =
//    dx, dy (int8) + our send time (u32 ms), see examples/arena/game.ts for the layout.
// 4. Every message back is the room's state (or its roster): drawn on the canvas; the
//    state echoes our last input's send time, which gives the ping (input → state).
//
// `window.arena.snapshot()` shows the client's view of the game (for the console and the
// end-to-end test).
import { signMove } from 'move-dispatcher/encode';

const KIND_INPUT = 1;
const MSG_STATE = 1;
const MSG_ROSTER = 2;
const STATE_HEADER_BYTES = 8;
const STATE_PLAYER_BYTES = 24;
const SESSION_KEY = 'arena.session';

const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById('arena'));
const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
const hud = /** @type {HTMLElement} */ (document.getElementById('hud'));
const form = /** @type {HTMLFormElement} */ (document.getElementById('login'));
const nameInput = /** @type {HTMLInputElement} */ (document.getElementById('name'));

/** @typedef {{ id: number, x: number, y: number, lastSeq: number, lastClientTime: number, connected: boolean }} Dot */
/** @typedef {{ session: string, player: number, name: string, room: number, key: string, url: string, hz: number, arenaSize: number }} Seat */

const game = {
  /** @type {Seat | null} */ seat: null,
  /** @type {Uint8Array | null} */ key: null,
  /** @type {WebSocket | null} */ ws: null,
  connected: false,
  status: 'logged out',
  seq: 0,
  tick: 0,
  /** @type {number | null} */ ping: null,
  lastEcho: 0,
  /** @type {Map<number, Dot>} */ dots: new Map(),
  /** @type {Map<number, Dot>} */ previous: new Map(),
  stateAt: 0,
  /** @type {Map<number, string>} */ names: new Map(),
  statesReceived: 0,
  movesSent: 0,
  reconnects: 0,
  /** Connections in a row that closed without opening (the reconnect backoff). */
  failures: 0,
  signing: false,
};

// ----------------------------------------------------------------------------- control plane

/** POSTs JSON; resolves to the parsed answer, or throws with the server's error. */
async function post(path, body) {
  const response = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(answer.error ?? `HTTP ${response.status}`), { status: response.status });
  return answer;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  nameInput.blur(); // the arrow keys steer from now on
  form.hidden = true;
  setStatus('waiting for players…');
  try {
    play(await post('/api/login', { name: nameInput.value }));
  } catch (error) {
    form.hidden = false;
    setStatus(`login failed: ${error.message}`);
  }
});

/** Asks for a new ticket for our seat; false when the seat is gone. */
async function reconnect() {
  const session = sessionStorage.getItem(SESSION_KEY);
  if (session === null) return false;
  try {
    play(await post('/api/reconnect', { session }));
    game.reconnects++;
    return true;
  } catch (error) {
    if (error.status === 404 || error.status === 400) sessionStorage.removeItem(SESSION_KEY);
    else throw error;
    return false;
  }
}

// ----------------------------------------------------------------------------- data plane

/** Connects to the data plane with a fresh seat (login or reconnect). */
function play(/** @type {Seat} */ seat) {
  game.seat = seat;
  game.key = Uint8Array.from(atob(seat.key), (c) => c.charCodeAt(0));
  game.seq = 0; // a new key means a new replay window: seqs start again
  sessionStorage.setItem(SESSION_KEY, seat.session);
  const old = game.ws;
  if (old !== null) {
    old.onclose = null;
    old.close();
  }
  const ws = new WebSocket(seat.url);
  ws.binaryType = 'arraybuffer';
  game.ws = ws;
  setStatus('connecting…');
  ws.onopen = () => {
    game.connected = true;
    game.failures = 0;
    setStatus('playing');
  };
  ws.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) receive(new Uint8Array(event.data));
  };
  ws.onclose = (event) => {
    const opened = game.connected;
    game.connected = false;
    if (game.ws !== ws) return;
    game.ws = null;
    if (event.code === 1008 && event.reason === 'replaced by a new connection') {
      // Our seat connected from elsewhere (another tab of this session): reconnecting here
      // would replace that one, which would reconnect and replace us, forever.
      setStatus('playing in another tab or window: reload this page to play here');
      return;
    }
    // Connections that fail before opening (503 full, 401) back off like failed requests.
    if (!opened) game.failures++;
    setStatus(`disconnected (${event.code}${event.reason ? ` ${event.reason}` : ''}), reconnecting…`);
    retry(game.failures);
  };
}

/** Reconnects with backoff while the server keeps our seat. */
function retry(attempt) {
  setTimeout(async () => {
    try {
      if (!(await reconnect())) {
        form.hidden = false;
        setStatus('the seat is gone (grace period over): log in again');
      }
    } catch {
      if (attempt < 8) retry(attempt + 1);
      else setStatus('the server does not answer');
    }
  }, attempt === 0 ? 250 : Math.min(8000, 250 * 2 ** attempt));
}

function receive(/** @type {Uint8Array} */ message) {
  if (message[0] === MSG_ROSTER) {
    const roster = JSON.parse(new TextDecoder().decode(message.subarray(1)));
    game.names = new Map(roster.map((p) => [p.id, p.name]));
    return;
  }
  if (message[0] !== MSG_STATE || message.length < STATE_HEADER_BYTES) return;
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const n = view.getUint16(2, true);
  if (message.length !== STATE_HEADER_BYTES + n * STATE_PLAYER_BYTES) return;
  game.tick = view.getUint32(4, true);
  game.previous = game.dots;
  game.dots = new Map();
  for (let i = 0, at = STATE_HEADER_BYTES; i < n; i++, at += STATE_PLAYER_BYTES) {
    const dot = {
      id: view.getUint32(at, true),
      x: view.getFloat32(at + 4, true),
      y: view.getFloat32(at + 8, true),
      lastSeq: view.getUint32(at + 12, true),
      lastClientTime: view.getUint32(at + 16, true),
      connected: (view.getUint8(at + 20) & 1) === 1,
    };
    game.dots.set(dot.id, dot);
  }
  game.stateAt = performance.now();
  game.statesReceived++;
  const me = game.seat === null ? undefined : game.dots.get(game.seat.player);
  // Ping: our input's send time, echoed in the first state that applied it.
  if (me !== undefined && me.lastSeq !== 0 && me.lastClientTime !== game.lastEcho) {
    game.lastEcho = me.lastClientTime;
    const rtt = ((now32() - me.lastClientTime) >>> 0);
    if (rtt < 60_000) game.ping = game.ping === null ? rtt : Math.round(game.ping * 0.8 + rtt * 0.2);
  }
  showHud();
}

// ----------------------------------------------------------------------------- input

const held = new Set();
const KEYS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1], a: [-1, 0], d: [1, 0], w: [0, -1], s: [0, 1] };
/** @type {{ x: number, y: number } | null} */
let pointer = null;

addEventListener('keydown', (e) => {
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (k in KEYS && document.activeElement !== nameInput) {
    held.add(k);
    e.preventDefault();
  }
});
addEventListener('keyup', (e) => held.delete(e.key.length === 1 ? e.key.toLowerCase() : e.key));
addEventListener('blur', () => held.clear());

/** The pointer in world units. */
function worldPoint(/** @type {PointerEvent} */ e) {
  const r = canvas.getBoundingClientRect();
  const size = game.seat?.arenaSize ?? 1000;
  return { x: ((e.clientX - r.left) / r.width) * size, y: ((e.clientY - r.top) / r.height) * size };
}
canvas.addEventListener('pointerdown', (e) => {
  canvas.setPointerCapture(e.pointerId);
  pointer = worldPoint(e);
});
canvas.addEventListener('pointermove', (e) => {
  if (pointer !== null) pointer = worldPoint(e);
});
for (const type of ['pointerup', 'pointercancel']) canvas.addEventListener(type, () => (pointer = null));

/** The direction we hold now: keys win; else towards the pointer (slower when close). */
function direction() {
  let dx = 0;
  let dy = 0;
  for (const k of held) {
    dx += KEYS[k][0];
    dy += KEYS[k][1];
  }
  if (dx !== 0 || dy !== 0) return [Math.sign(dx) * 127, Math.sign(dy) * 127];
  const me = game.seat === null ? undefined : game.dots.get(game.seat.player);
  if (pointer === null || me === undefined) return [0, 0];
  const vx = pointer.x - me.x;
  const vy = pointer.y - me.y;
  const d = Math.hypot(vx, vy);
  if (d < 4) return [0, 0];
  const scale = (127 * Math.min(1, d / 100)) / d;
  return [Math.round(vx * scale), Math.round(vy * scale)];
}

function now32() {
  return Math.floor(performance.now()) >>> 0;
}

/** One input frame per tick period, signed with WebCrypto. */
async function sendInput() {
  const ws = game.ws;
  if (ws === null || ws.readyState !== WebSocket.OPEN || game.seat === null || game.key === null || game.signing) return;
  const [dx, dy] = direction();
  const payload = new Uint8Array(6);
  const view = new DataView(payload.buffer);
  view.setInt8(0, dx);
  view.setInt8(1, dy);
  view.setUint32(2, now32(), true);
  const seq = ++game.seq;
  game.signing = true; // one at a time: frames leave in seq order
  try {
    const frame = await signMove({ room: game.seat.room, player: game.seat.player, seq, tick: game.tick, kind: KIND_INPUT, payload, key: game.key }, crypto.subtle);
    if (ws.readyState === WebSocket.OPEN && game.ws === ws) {
      ws.send(frame);
      game.movesSent++;
    }
  } finally {
    game.signing = false;
  }
}
setInterval(sendInput, 50);

// ----------------------------------------------------------------------------- drawing

function setStatus(text) {
  game.status = text;
  showHud();
}

function showHud() {
  const s = game.seat;
  hud.textContent =
    s === null
      ? game.status
      : `${s.name} · room ${s.room} · player ${s.player} · tick ${game.tick} · ping ${game.ping === null ? '–' : `${game.ping} ms`} · ${game.dots.size} players · ${game.status}`;
}

function colour(id) {
  return `hsl(${(id * 137.508) % 360} 70% 60%)`;
}

function draw() {
  const size = game.seat?.arenaSize ?? 1000;
  const k = canvas.width / size;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = '#1d232d';
  ctx.lineWidth = 1;
  for (let g = 100; g < size; g += 100) {
    ctx.beginPath();
    ctx.moveTo(g * k, 0);
    ctx.lineTo(g * k, canvas.height);
    ctx.moveTo(0, g * k);
    ctx.lineTo(canvas.width, g * k);
    ctx.stroke();
  }
  // Between two states, draw the dots where they are on their way (one tick behind).
  const period = 1000 / (game.seat?.hz ?? 20);
  const t = Math.min(1, (performance.now() - game.stateAt) / period);
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  for (const dot of game.dots.values()) {
    const before = game.previous.get(dot.id) ?? dot;
    const x = (before.x + (dot.x - before.x) * t) * k;
    const y = (before.y + (dot.y - before.y) * t) * k;
    const mine = dot.id === game.seat?.player;
    ctx.globalAlpha = dot.connected ? 1 : 0.35;
    ctx.fillStyle = colour(dot.id);
    ctx.beginPath();
    ctx.arc(x, y, mine ? 11 : 9, 0, Math.PI * 2);
    ctx.fill();
    if (mine) {
      ctx.strokeStyle = '#eceff4';
      ctx.lineWidth = 2;
      ctx.stroke();
    }
    ctx.fillStyle = '#d8dee9';
    ctx.fillText(game.names.get(dot.id) ?? `#${dot.id}`, x, y - 16);
  }
  ctx.globalAlpha = 1;
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);

// ----------------------------------------------------------------------------- start

window.arena = {
  /** The client's view of the game, as plain data. */
  snapshot: () => ({
    status: game.status,
    connected: game.connected,
    room: game.seat?.room ?? null,
    player: game.seat?.player ?? null,
    tick: game.tick,
    ping: game.ping,
    movesSent: game.movesSent,
    statesReceived: game.statesReceived,
    reconnects: game.reconnects,
    names: Object.fromEntries(game.names),
    dots: [...game.dots.values()].map(({ id, x, y, connected }) => ({ id, x, y, connected })),
  }),
};

if (sessionStorage.getItem(SESSION_KEY) !== null) {
  setStatus('rejoining…');
  form.hidden = true;
  reconnect()
    .then((ok) => {
      if (!ok) {
        form.hidden = false;
        setStatus('enter a name to play');
      }
    })
    .catch(() => {
      form.hidden = false;
      setStatus('the server does not answer');
    });
}
