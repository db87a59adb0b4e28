//! The listeners and connections of native ingress, on the dispatcher's tokio runtime.
//!
//! # Shared by every transport
//! WebSocket, TCP and gRPC ([`super::grpc`]) differ only in how bytes reach a connection
//! and leave it. The rest is here, once: the admission ([`Hub::reserve`] for
//! `max_connections`, [`Hub::check_ticket`], [`Hub::admit`] for the registry and the open
//! event), the frame offering ([`Intake`]: `Worker::ingest`, refusals in a row, frames held
//! back while a room is out of budget and offered again ~1 ms later, none lost), the
//! outbound queue ([`Conn`], `send`, `broadcast`), and the close ([`Hub::leave`]: registry
//! removal and the close event with its reason).
//!
//! # Where the work runs
//! A connection is a task of the runtime. When its socket is readable, the task reads into
//! a buffer of the thread it runs on (a connection keeps only a partial frame of its own),
//! cuts v1 frames, and hands them to [`Worker::ingest`] of the shard that owns its ticket's
//! room, under that worker's lock, on the same thread: the frame is checked, validated
//! (tag, replay window) and stored in its room's inbox with no hand-off to another thread
//! and no wake-up per message. The shard's own task takes the lock between its steps, so
//! moves dispatched from JavaScript and moves read from the network meet in one order per
//! room. JavaScript hears only of deliveries and of connection events, in batches.
//!
//! # Waiting
//! A waiting connection's task holds no timer and no waiter node: its socket's readiness
//! keeps the task's waker ([`TcpStream::poll_read_ready`]), [`Conn::notify`] wakes it through
//! a slot of its outbound state, and idle deadlines are [`sweep_idle`]'s, one task per
//! ingress that scans the open connections.
//!
//! # Outbound
//! `send` and `broadcast` queue shared, already-encoded bytes on each connection (a
//! broadcast encodes once per transport) and wake its task; a connection whose queue would
//! pass `max_backpressure_bytes` answers `Backpressure`, and is dropped if it is still
//! over the limit at the next send. The frames a connection's task queues itself count
//! against the same limit: an echo (test mode) past it drops the connection, and a pong
//! past it replaces the pong waiting at the end of the queue, so pings from a client that
//! does not read cannot grow the queue.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ticket::{self, TicketVerifier};
use super::ws;
use super::Parts;
use crate::outbox::ConnectionEvent;
use crate::shard::{lock_worker, Sender};

/// Transports, as numbered in connection events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Transport {
    Ws = 0,
    Tcp = 1,
    Grpc = 2,
}

/// Why a connection closed, as numbered in connection events (`src/ingress.ts` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client closed it (WebSocket close handshake, or end of stream between frames).
    Closed = 1,
    /// The stream ended or failed mid-frame, or the socket failed.
    Reset = 2,
    /// Nothing arrived for `idle_timeout_ms`.
    Idle = 3,
    /// Bytes that are not v1 frames: the stream cannot be resynchronised.
    Malformed = 4,
    /// Too many frames refused in a row (wrong sender, not a member, forged room, …).
    Refused = 5,
    /// The client did not read: its outbound queue stayed over `max_backpressure_bytes`.
    Backpressure = 6,
    /// Another connection of the same room and player replaced it.
    Replaced = 7,
    /// The server (or the dispatcher) closed.
    Shutdown = 8,
    /// A WebSocket text message (moves are binary): close code 1003.
    Text = 9,
    /// A WebSocket protocol violation (close code 1002 or 1007).
    Protocol = 10,
    /// A WebSocket message larger than the limit (close code 1009).
    TooBig = 11,
    /// `disconnect` or `closeRoom` from the control plane.
    Kicked = 12,
}

/// The answer of [`Ingress::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    Backpressure,
    Dropped,
    Closed,
}

/// What `listen` takes (validated by the TypeScript layer, re-checked here).
#[derive(Debug, Clone)]
pub struct Options {
    pub ws: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub ticket_key: Vec<u8>,
    pub max_connections: usize,
    /// 0: never.
    pub idle_timeout_ms: u64,
    pub max_backpressure_bytes: usize,
    /// The largest WebSocket message (also bounds a fragmented one).
    pub max_message_bytes: usize,
    /// How long a client may take to send its upgrade request or ticket line.
    pub handshake_timeout_ms: u64,
    /// Handshakes in flight at once from one client address (IPv6: one /64), every
    /// transport together (a gRPC socket counts until a call is admitted on it); more are
    /// refused at once (WebSocket `503` `busy`, TCP `error busy`, a gRPC socket closed).
    /// 0: no limit.
    pub max_handshakes_per_address: usize,
    /// Frames refused in a row after which a connection is closed (0: never).
    pub max_refusals: u32,
    /// Whether connection opens and closes are published to JavaScript: without a listener
    /// for them each would cost it a wake-up and an object for nothing.
    pub connection_events: bool,
    /// Test hook for the WebSocket conformance suite: echo every message instead of
    /// taking it as moves, and accept text (validated UTF-8); no ticket needed.
    pub echo_for_testing: bool,
}

/// Counters of native ingress (`stats()`).
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted_connections: AtomicU64,
    /// Refused before opening: bad ticket, full, bad handshake.
    pub refused_connections: AtomicU64,
    pub closed_connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_out: AtomicU64,
    pub dropped_out: AtomicU64,
}

/// A plain-number snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub open: u64,
    pub accepted_connections: u64,
    pub refused_connections: u64,
    pub closed_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
    pub dropped_out: u64,
}

/// What a kicked connection is told ([`Ingress::disconnect`] with one): the WebSocket close
/// frame's code and reason, and the gRPC status message (`ABORTED`). TCP has no close
/// message: its stream just ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    code: u16,
    reason: Box<str>,
}

impl Kick {
    /// The close frame's reason holds 123 bytes at most (a control frame's 125, less the code).
    pub const MAX_REASON_BYTES: usize = 123;

    /// A kick with a close code of 1000 or 3000–4999 (the codes an application may send;
    /// 4000–4999 are private) and a reason of at most [`Kick::MAX_REASON_BYTES`] bytes.
    ///
    /// # Errors
    /// The code or the reason out of bounds: which, and why.
    pub fn new(code: u16, reason: &str) -> Result<Self, (&'static str, String)> {
        if code != ws::CLOSE_NORMAL && !(3000..=4999).contains(&code) {
            return Err((
                "code",
                format!("must be 1000 or from 3000 to 4999, got {code}"),
            ));
        }
        if reason.len() > Self::MAX_REASON_BYTES {
            return Err((
                "reason",
                format!(
                    "must be at most {} bytes of UTF-8, got {}",
                    Self::MAX_REASON_BYTES,
                    reason.len()
                ),
            ));
        }
        Ok(Self {
            code,
            reason: reason.into(),
        })
    }

    /// The close code.
    #[must_use]
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The outbound side of one connection, shared with `send` and `broadcast`.
/// The next connection's [`Conn::id`]: one counter for every ingress of the process, so an
/// id is never reused, not even by a later `listen` or another dispatcher.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

pub(super) struct Conn {
    /// Unique in the process, from 1 ([`NEXT_CONNECTION_ID`]): what JavaScript tells a
    /// connection's open and close events apart by (a replaced connection's close comes
    /// after its successor's open, with the same room and player).
    id: u64,
    pub(super) room: u32,
    pub(super) player: u32,
    transport: Transport,
    /// The client's address (IPv4-mapped IPv6 as IPv4), if the socket still knew it.
    peer: Option<SocketAddr>,
    /// Whether the idle sweeper pinged the connection since its last read (WebSocket).
    pinged: AtomicBool,
    /// 0 while open; else the [`CloseReason`] the server side asked for.
    close: AtomicU8,
    /// When the connection last read something, in [`Hub::now_ms`] (the idle sweeper's
    /// clock; wraps after 49 days, compared with wrapping arithmetic).
    last_read_ms: AtomicU32,
    /// Its index in the idle sweeper's table ([`Hub::live`]), `u32::MAX` when none.
    slot: AtomicU32,
    out: Mutex<Outbound>,
}

#[derive(Default)]
struct Outbound {
    queue: VecDeque<Arc<[u8]>>,
    /// Bytes of the front buffer already written.
    offset: usize,
    bytes: usize,
    /// A send was refused for backpressure and the queue has not drained since.
    over: bool,
    /// The task was notified (bytes to write, a close to carry out) and has not looked yet.
    notified: bool,
    /// The connection's task, while it waits ([`Conn::poll_notified`]).
    waker: Option<Waker>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, Outbound> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether messages wait in the outbound queue.
    pub(super) fn has_outbound(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// The close the server side asked for, if any.
    pub(super) fn asked_close(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            0 => None,
            6 => Some(CloseReason::Backpressure),
            7 => Some(CloseReason::Replaced),
            3 => Some(CloseReason::Idle),
            12 => Some(CloseReason::Kicked),
            _ => Some(CloseReason::Shutdown),
        }
    }

    /// Takes the next whole message of the outbound queue, counted as written (message
    /// transports, whose messages are handed over whole: gRPC).
    pub(super) fn pop_message(&self, hub: &Hub) -> Option<Arc<[u8]>> {
        let mut out = self.lock();
        let msg = out.queue.pop_front()?;
        out.bytes -= msg.len() - out.offset;
        out.offset = 0;
        hub.counters
            .bytes_out
            .fetch_add(msg.len() as u64, Ordering::Relaxed);
        hub.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        if out.queue.is_empty() {
            out.over = false;
            if out.queue.capacity() > 64 {
                out.queue.shrink_to(8);
            }
        }
        Some(msg)
    }

    fn ask_close(&self, reason: CloseReason) {
        let _ = self.try_close(reason);
        self.notify();
    }

    /// Sets the close the server side asks for unless one is set already; whether it did.
    /// The caller notifies.
    fn try_close(&self, reason: CloseReason) -> bool {
        self.close
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Wakes the connection's task (bytes to write, or a close to carry out); if it is not
    /// waiting, its next [`Conn::poll_notified`] is ready at once (one permit, as
    /// `tokio::sync::Notify::notify_one`).
    pub(super) fn notify(&self) {
        let waker = {
            let mut out = self.lock();
            out.notified = true;
            out.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready (and the permit taken) once [`Conn::notify`] was called since the last time it
    /// was ready; else the task's waker is kept for it. A slot of the outbound state rather
    /// than a `Notify`: a waiting task holds no waiter node of its own.
    /// Also says whether messages wait in the outbound queue (one lock for both).
    pub(super) fn poll_notified(&self, cx: &Context<'_>) -> (Poll<()>, bool) {
        let mut out = self.lock();
        let outbound = !out.queue.is_empty();
        if std::mem::take(&mut out.notified) {
            return (Poll::Ready(()), outbound);
        }
        match &mut out.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        (Poll::Pending, outbound)
    }

    /// Resolves at the next [`Conn::notify`] (at once if one is pending).
    pub(super) async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_notified(cx).0).await;
    }

    /// Notes a read: the idle deadline starts again, and a new ping is due at its half.
    pub(super) fn mark_read(&self, hub: &Hub) {
        if hub.opts.idle_timeout_ms > 0 {
            self.last_read_ms.store(Hub::now_ms(), Ordering::Relaxed);
            if self.pinged.load(Ordering::Relaxed) {
                self.pinged.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The connections the idle sweeper watches (only when `idle_timeout_ms > 0`): a slot per
/// open connection, reused.
#[derive(Default)]
struct Live {
    slots: Vec<Option<Arc<Conn>>>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Registry {
    by_player: HashMap<(u32, u32), Arc<Conn>, crate::IdHashBuilder>,
    by_room: HashMap<u32, Vec<Arc<Conn>>, crate::IdHashBuilder>,
}

impl Registry {
    fn insert(&mut self, c: &Arc<Conn>) -> Option<Arc<Conn>> {
        self.by_room.entry(c.room).or_default().push(Arc::clone(c));
        let old = self.by_player.insert((c.room, c.player), Arc::clone(c));
        if let Some(old) = &old {
            self.remove_from_room(old);
        }
        old
    }

    fn remove(&mut self, c: &Arc<Conn>) {
        if self
            .by_player
            .get(&(c.room, c.player))
            .is_some_and(|x| Arc::ptr_eq(x, c))
        {
            self.by_player.remove(&(c.room, c.player));
        }
        self.remove_from_room(c);
    }

    fn remove_from_room(&mut self, c: &Arc<Conn>) {
        if let Some(list) = self.by_room.get_mut(&c.room) {
            list.retain(|x| !Arc::ptr_eq(x, c));
            if list.is_empty() {
                self.by_room.remove(&c.room);
            }
        }
    }
}

/// What every listener and connection task shares.
pub(super) struct Hub {
    parts: Parts,
    pub(super) opts: Options,
    verifier: TicketVerifier,
    registry: Mutex<Registry>,
    open: AtomicUsize,
    pub(super) counters: Counters,
    /// Set by [`Ingress::close`]: listeners stop, connections close.
    stopping: AtomicBool,
    stop: Notify,
    /// What the idle sweeper scans ([`sweep_idle`]).
    live: Mutex<Live>,
    /// Handshakes in flight by client address ([`Hub::begin_handshake`]); an address is
    /// listed only while it has one, and a handshake is counted only while it holds a slot
    /// of `max_connections` (or a socket of the gRPC port, as many at most): the map holds
    /// at most twice `max_connections` entries.
    handshaking: Mutex<HashMap<u128, u32>>,
    /// What kicked connections are told, by connection id ([`Ingress::disconnect`] with a
    /// [`Kick`]): kept here rather than in every [`Conn`], which few use; taken by the close,
    /// removed at the latest by [`Hub::leave`], after which none can be added (under this
    /// lock, `leave` marks the connection closed, and [`Hub::kick`] adds only while it is not).
    kicks: Mutex<HashMap<u64, Arc<Kick>>>,
    /// Refusals being written and lingered ([`refuse`], at most [`MAX_LINGERING_REFUSALS`]).
    lingering: AtomicUsize,
}

/// The key a client's address is counted under by [`Hub::begin_handshake`]: an IPv4 address
/// as itself, an IPv6 address by its /64 — the prefix one subscriber is given, so holding
/// many addresses of it costs an attacker nothing. The two do not collide in practice: an
/// IPv4 key is below 2^32 and an IPv6 one a multiple of 2^64, both 0 only for `0.0.0.0`
/// (never a client) and `::/64` (`::1`, IPv6 loopback). Link-local clients (`fe80::/64`) of
/// every interface share one key.
fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// A handshake in flight counted against its client's address ([`Hub::begin_handshake`]);
/// given back on drop.
pub(super) struct Handshaking {
    hub: Arc<Hub>,
    key: u128,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut map = self.hub.handshaking();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Hub {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds of the process's monotonic clock, truncated to 32 bits (the idle
    /// sweeper compares them with wrapping arithmetic).
    fn now_ms() -> u32 {
        (crate::clock::now_ns() / 1_000_000) as u32
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kicks(&self) -> MutexGuard<'_, HashMap<u64, Arc<Kick>>> {
        self.kicks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks `conn` to close as kicked, with what it is told (`None`: the default, code 1000
    /// and "kicked"). A connection already closing for another reason keeps that one.
    fn kick(&self, conn: &Conn, kick: Option<&Arc<Kick>>) {
        if let Some(kick) = kick {
            // Under the lock, so that the close, once it sees `Kicked`, finds the kick.
            let mut kicks = self.kicks();
            if conn.try_close(CloseReason::Kicked) {
                kicks.insert(conn.id, Arc::clone(kick));
            }
        } else {
            let _ = conn.try_close(CloseReason::Kicked);
        }
        conn.notify();
    }

    /// What a connection closing as kicked is told, if [`Hub::kick`] was given it.
    pub(super) fn take_kick(&self, conn: &Conn) -> Option<Arc<Kick>> {
        self.kicks().remove(&conn.id)
    }

    fn handshaking(&self) -> MutexGuard<'_, HashMap<u128, u32>> {
        self.handshaking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admission, before anything else (every transport): a place among the handshakes in
    /// flight of `peer`'s address, held until the returned guard drops; `Err`, counted as
    /// refused, when that address has `max_handshakes_per_address` in flight already. With
    /// no limit, or no address known (a socket already gone), nothing is counted.
    ///
    /// Without it, handshakes in flight hold slots of `max_connections` until
    /// `handshake_timeout_ms`, so one client opening sockets it never completes keeps
    /// everyone out.
    pub(super) fn begin_handshake(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Handshaking>, ()> {
        let max = self.opts.max_handshakes_per_address;
        let Some(peer) = peer.filter(|_| max > 0) else {
            return Ok(None);
        };
        let key = address_key(peer.ip());
        {
            let mut map = self.handshaking();
            let n = map.entry(key).or_insert(0);
            if *n as usize >= max {
                drop(map);
                self.counters
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
            *n += 1;
        }
        Ok(Some(Handshaking {
            hub: Arc::clone(self),
            key,
        }))
    }

    /// Whether [`Ingress::close`] was called.
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Resolves once [`Ingress::close`] was called (at once if it was already).
    pub(super) async fn stopped(&self) {
        loop {
            let notified = self.stop.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }

    /// Admission, first step (every transport): takes a slot of `max_connections`;
    /// `false`, counted as refused, when none is left. Cheap, and a client refused here
    /// keeps its ticket.
    pub(super) fn reserve(&self) -> bool {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.opts.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back the slot of a client refused after [`Hub::reserve`] (bad ticket, bad
    /// handshake), counted as refused.
    pub(super) fn refuse(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Admission, second step: who a ticket names, or the ticket error's reason
    /// (`ticket_expired`, …).
    pub(super) fn check_ticket(&self, t: &str) -> Result<Who, &'static str> {
        let claims = self
            .verifier
            .verify_str(t, ticket::now_unix_ms())
            .map_err(ticket::TicketError::as_str)?;
        Ok(Who {
            room: claims.room,
            player: claims.player,
        })
    }

    /// Admission, last step (in a slot of [`Hub::reserve`], the ticket checked): registers
    /// the connection (an older one of the same room and player is closed, `Replaced`),
    /// counts it and tells JavaScript. A connection admitted while the server closes is
    /// asked to close at once.
    pub(super) fn admit(
        &self,
        who: &Who,
        transport: Transport,
        peer: Option<SocketAddr>,
    ) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            room: who.room,
            player: who.player,
            transport,
            peer,
            pinged: AtomicBool::new(false),
            close: AtomicU8::new(0),
            last_read_ms: AtomicU32::new(Self::now_ms()),
            slot: AtomicU32::new(u32::MAX),
            out: Mutex::default(),
        });
        if self.opts.idle_timeout_ms > 0 {
            let mut live = self.live();
            let slot = if let Some(i) = live.free.pop() {
                live.slots[i as usize] = Some(Arc::clone(&conn));
                i
            } else {
                live.slots.push(Some(Arc::clone(&conn)));
                u32::try_from(live.slots.len() - 1).unwrap_or(u32::MAX)
            };
            conn.slot.store(slot, Ordering::Relaxed);
        }
        if !self.opts.echo_for_testing {
            let old = self.registry().insert(&conn);
            if let Some(old) = old {
                old.ask_close(CloseReason::Replaced);
            }
            self.counters
                .accepted_connections
                .fetch_add(1, Ordering::Relaxed);
            self.event(true, &conn, 0);
        }
        if self.stopping() {
            conn.ask_close(CloseReason::Shutdown);
        }
        conn
    }

    /// The end of an admitted connection (every transport): out of the registry, counted,
    /// the close event with `reason`, its slot given back.
    pub(super) fn leave(&self, conn: &Arc<Conn>, reason: CloseReason) {
        let slot = conn.slot.swap(u32::MAX, Ordering::Relaxed);
        if slot != u32::MAX {
            let mut live = self.live();
            live.slots[slot as usize] = None;
            live.free.push(slot);
        }
        {
            // A kick not taken by the close (a TCP stream, or a connection that ended another
            // way first) goes now; marked closed under the same lock, the connection takes
            // no later kick (`disconnect` may still hold it, taken from the registry before
            // this removes it).
            let mut kicks = self.kicks();
            let _ = conn.try_close(CloseReason::Closed);
            kicks.remove(&conn.id);
        }
        if !self.opts.echo_for_testing {
            self.registry().remove(conn);
            self.counters
                .closed_connections
                .fetch_add(1, Ordering::Relaxed);
            self.event(false, conn, reason as u8);
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    fn event(&self, opened: bool, c: &Conn, reason: u8) {
        if !self.opts.connection_events {
            return;
        }
        self.parts.outbox.publish_connection(ConnectionEvent {
            opened,
            id: c.id,
            room: c.room,
            player: c.player,
            transport: c.transport as u8,
            reason,
            peer: c.peer,
        });
    }
}

/// A running native ingress: its listeners and connections.
pub struct Ingress {
    hub: Arc<Hub>,
    ws: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("ws", &self.ws)
            .field("tcp", &self.tcp)
            .field("grpc", &self.grpc)
            .field("open", &self.hub.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why `listen` failed.
#[derive(Debug)]
pub enum ListenError {
    /// An option out of range (the field's name).
    Invalid(&'static str, String),
    /// Binding a listener failed.
    Bind(&'static str, std::io::Error),
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(field, m) => write!(f, "{field}: {m}"),
            Self::Bind(what, e) => write!(f, "could not listen for {what}: {e}"),
        }
    }
}

impl Ingress {
    /// Binds the listeners (synchronously, so that ports are known on return) and starts
    /// accepting on the runtime of `parts`.
    ///
    /// # Errors
    /// A bad option, or a listener that could not bind.
    pub fn start(parts: Parts, opts: Options) -> Result<Self, ListenError> {
        if opts.ws.is_none() && opts.tcp.is_none() && opts.grpc.is_none() {
            return Err(ListenError::Invalid(
                "listen",
                "give at least one of ws, tcp, grpc".into(),
            ));
        }
        let verifier = TicketVerifier::with_memory(
            &opts.ticket_key,
            opts.max_connections.max(1) * 4,
            Arc::clone(&parts.tickets),
        )
        .map_err(|e| {
            ListenError::Invalid("ticketKey", format!("must be 16 to 64 bytes ({e:?})"))
        })?;
        if opts.max_connections == 0 {
            return Err(ListenError::Invalid(
                "maxConnections",
                "must be at least 1".into(),
            ));
        }
        let runtime = parts.runtime.clone();
        // A backlog of 4096 (std's `bind` listens with 128): a burst of connections waits
        // in the kernel instead of being dropped and retried by the clients a second later.
        let bind = |addr: SocketAddr, what: &'static str| -> Result<TcpListener, ListenError> {
            let _guard = runtime.enter();
            let fail = |e| ListenError::Bind(what, e);
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(fail)?;
            socket.set_reuseaddr(true).map_err(fail)?;
            socket.bind(addr).map_err(fail)?;
            socket.listen(LISTEN_BACKLOG).map_err(fail)
        };
        let ws = opts.ws.map(|a| bind(a, "ws")).transpose()?;
        let tcp = opts.tcp.map(|a| bind(a, "tcp")).transpose()?;
        let grpc = opts.grpc.map(|a| bind(a, "grpc")).transpose()?;
        let ws_addr = ws.as_ref().and_then(|l| l.local_addr().ok());
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let grpc_addr = grpc.as_ref().and_then(|l| l.local_addr().ok());
        let hub = Arc::new(Hub {
            parts,
            opts,
            verifier,
            registry: Mutex::default(),
            open: AtomicUsize::new(0),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            live: Mutex::default(),
            handshaking: Mutex::default(),
            kicks: Mutex::default(),
            lingering: AtomicUsize::new(0),
        });
        let mut tasks = Vec::new();
        if hub.opts.idle_timeout_ms > 0 {
            tasks.push(runtime.spawn(sweep_idle(Arc::clone(&hub))));
        }
        for (listener, transport) in [(ws, Transport::Ws), (tcp, Transport::Tcp)] {
            if let Some(l) = listener {
                tasks.push(runtime.spawn(accept_loop(Arc::clone(&hub), l, transport)));
            }
        }
        if let Some(l) = grpc {
            // Not in `tasks`: it stops on its own when asked (GOAWAY, then the calls end
            // with their status), rather than being aborted.
            runtime.spawn(super::grpc::serve(Arc::clone(&hub), l));
        }
        Ok(Self {
            hub,
            ws: ws_addr,
            tcp: tcp_addr,
            grpc: grpc_addr,
            tasks,
        })
    }

    /// The address a transport is bound to.
    pub fn address(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Ws => self.ws,
            Transport::Tcp => self.tcp,
            Transport::Grpc => self.grpc,
        }
    }

    /// Open connections. The fence pairs with a gRPC call's admission: a call that took
    /// a slot after [`Ingress::close`] sees the close, or is counted here.
    pub fn connections(&self) -> usize {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.hub.open.load(Ordering::Acquire)
    }

    /// The counters. (`open` after a fence, as [`Ingress::connections`] reads it: what a
    /// close waits on.)
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.hub.counters;
        std::sync::atomic::fence(Ordering::SeqCst);
        CounterSnapshot {
            open: self.hub.open.load(Ordering::Relaxed) as u64,
            accepted_connections: c.accepted_connections.load(Ordering::Relaxed),
            refused_connections: c.refused_connections.load(Ordering::Relaxed),
            closed_connections: c.closed_connections.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            messages_out: c.messages_out.load(Ordering::Relaxed),
            dropped_out: c.dropped_out.load(Ordering::Relaxed),
        }
    }

    /// Queues `bytes` for `player` of `room`.
    pub fn send(&self, room: u32, player: u32, bytes: &[u8]) -> SendOutcome {
        let Some(c) = self.hub.registry().by_player.get(&(room, player)).cloned() else {
            return SendOutcome::Closed;
        };
        let msg = encode(c.transport, bytes);
        offer(&self.hub, &c, &msg)
    }

    /// Queues `bytes` for every connection of `room` but `except`; how many took it.
    /// Encoded once per transport.
    pub fn broadcast(&self, room: u32, bytes: &[u8], except: &[u32]) -> u32 {
        let targets: Vec<Arc<Conn>> = match self.hub.registry().by_room.get(&room) {
            Some(list) => list
                .iter()
                .filter(|c| !except.contains(&c.player))
                .cloned()
                .collect(),
            None => return 0,
        };
        let mut encoded: [Option<Arc<[u8]>>; 3] = [None, None, None];
        let mut n = 0;
        for c in &targets {
            let msg =
                encoded[c.transport as usize].get_or_insert_with(|| encode(c.transport, bytes));
            if offer(&self.hub, c, msg) == SendOutcome::Sent {
                n += 1;
            }
        }
        n
    }

    /// Closes the connection of `player` in `room` (reason `Kicked`), telling it `kick` (by
    /// default, WebSocket close 1000 "kicked"); whether there was one.
    pub fn disconnect(&self, room: u32, player: u32, kick: Option<Kick>) -> bool {
        let c = self.hub.registry().by_player.get(&(room, player)).cloned();
        let kick = kick.map(Arc::new);
        c.inspect(|c| self.hub.kick(c, kick.as_ref())).is_some()
    }

    /// Closes every connection of `room` (reason `Kicked`), telling each `kick`; how many.
    pub fn disconnect_room(&self, room: u32, kick: Option<Kick>) -> usize {
        let list = self
            .hub
            .registry()
            .by_room
            .get(&room)
            .cloned()
            .unwrap_or_default();
        let kick = kick.map(Arc::new);
        for c in &list {
            self.hub.kick(c, kick.as_ref());
        }
        list.len()
    }

    /// Stops accepting and closes every connection (reason `Shutdown`); returns at once.
    /// Their close events follow as the tasks end.
    pub fn close(&self) {
        if self.hub.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.hub.stop.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
        let all: Vec<Arc<Conn>> = self.hub.registry().by_player.values().cloned().collect();
        for c in all {
            c.ask_close(CloseReason::Shutdown);
        }
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.close();
    }
}

/// The bytes a client receives for one outbound message: a WebSocket binary frame; on
/// TCP (a byte stream) the message behind its length as a u32, little-endian; on gRPC the
/// raw bytes (the `message` of a `MoveAcks`, which shares them).
fn encode(transport: Transport, bytes: &[u8]) -> Arc<[u8]> {
    match transport {
        Transport::Ws => {
            let mut out = Vec::with_capacity(bytes.len() + 10);
            ws::encode_frame(ws::Opcode::Binary, bytes, &mut out);
            out.into()
        }
        Transport::Tcp => {
            let mut out = Vec::with_capacity(bytes.len() + 4);
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(bytes);
            out.into()
        }
        Transport::Grpc => bytes.into(),
    }
}

fn offer(hub: &Hub, c: &Conn, msg: &Arc<[u8]>) -> SendOutcome {
    if c.close.load(Ordering::Acquire) != 0 {
        return SendOutcome::Closed;
    }
    let mut out = c.lock();
    // A message larger than the limit still goes to an idle connection (alone in its queue).
    if out.bytes > 0 && out.bytes + msg.len() > hub.opts.max_backpressure_bytes {
        if out.over {
            drop(out);
            hub.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
            c.ask_close(CloseReason::Backpressure);
            return SendOutcome::Dropped;
        }
        out.over = true;
        return SendOutcome::Backpressure;
    }
    let was_empty = out.queue.is_empty();
    out.bytes += msg.len();
    out.queue.push_back(Arc::clone(msg));
    drop(out);
    if was_empty {
        c.notify();
    }
    SendOutcome::Sent
}

/// Queues a frame the connection's own task made: a pong, the server's ping, an echo (test
/// mode). Counted against `max_backpressure_bytes` like `send`: past the limit (the queue
/// not empty) it is refused with [`CloseReason::Backpressure`], and the caller closes the
/// connection. But a pong is never refused: past the limit it replaces a pong still
/// waiting, untouched, at the end of the queue (RFC 6455 §5.5.3: only the latest ping
/// needs an answer), so a client that floods pings without reading holds one pong here
/// beyond the limit, not one per ping (and at most one after each queued message). Below
/// the limit every ping gets its pong.
fn queue_own(hub: &Hub, c: &Conn, frame: Vec<u8>) -> Result<(), CloseReason> {
    if push_own(&mut c.lock(), frame, hub.opts.max_backpressure_bytes) {
        Ok(())
    } else {
        hub.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
        Err(CloseReason::Backpressure)
    }
}

/// [`queue_own`] on the locked queue, with the limit: whether `frame` was taken.
fn push_own(out: &mut Outbound, frame: Vec<u8>, limit: usize) -> bool {
    if out.bytes > 0 && out.bytes + frame.len() > limit {
        if !ws::is_pong(&frame) {
            return false;
        }
        // The front buffer may be partly written: it is not replaced.
        let untouched = out.queue.len() > 1 || out.offset == 0;
        if let Some(last) = out.queue.back_mut().filter(|b| untouched && ws::is_pong(b)) {
            out.bytes = out.bytes - last.len() + frame.len();
            *last = frame.into();
            return true;
        }
    }
    out.bytes += frame.len();
    out.queue.push_back(frame.into());
    true
}

/// Queues the answer to a client's Close: the connection's last frame, never refused.
fn queue_close(c: &Conn, frame: Vec<u8>) {
    let mut out = c.lock();
    out.bytes += frame.len();
    out.queue.push_back(frame.into());
}

/// The idle sweeper (when `idle_timeout_ms > 0`): one task for every connection of every
/// transport, instead of a timer in each connection's task. Every tenth of the timeout (1 ms
/// to 1 s) it scans the open connections: one that has read nothing for half the timeout is
/// pinged (WebSocket; once per silence), one that has read nothing for the whole timeout is
/// asked to close, reason [`CloseReason::Idle`]. So a connection is closed between
/// `idle_timeout_ms` and 1.1 × that after its last read.
async fn sweep_idle(hub: Arc<Hub>) {
    let idle = u32::try_from(hub.opts.idle_timeout_ms)
        .unwrap_or(u32::MAX / 2)
        .min(u32::MAX / 2);
    let period = Duration::from_millis(u64::from(idle / 10))
        .clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.stopped() => return,
            _ = ticks.tick() => {}
        }
        let now = Hub::now_ms();
        let live = hub.live();
        for c in live.slots.iter().flatten() {
            let silent = now.wrapping_sub(c.last_read_ms.load(Ordering::Relaxed));
            if silent > u32::MAX / 2 {
                // Read after `now` was taken.
                continue;
            }
            if silent >= idle {
                c.ask_close(CloseReason::Idle);
            } else if silent >= idle / 2
                && c.transport == Transport::Ws
                && !c.pinged.swap(true, Ordering::Relaxed)
            {
                // An empty ping: 0x89 0x00.
                match queue_own(&hub, c, vec![0x89, 0]) {
                    Ok(()) => c.notify(),
                    Err(reason) => c.ask_close(reason),
                }
            }
        }
    }
}

async fn accept_loop(hub: Arc<Hub>, listener: TcpListener, transport: Transport) {
    loop {
        let accepted = tokio::select! {
            () = hub.stop.notified() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                if hub.stopping.load(Ordering::Acquire) {
                    return;
                }
                tokio::spawn(connection_task(Arc::clone(&hub), stream, transport));
            }
            // Out of file descriptors (or another transient failure): wait a little rather
            // than spin; connections beyond the limit wait in the backlog or are refused by
            // the kernel.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The task of one accepted connection: what every idle connection keeps alive, so its
/// size is watched (`the_connection_task_stays_small`).
///
/// The hub and the stream are the task's own and everything below borrows them: an async
/// fn's arguments taken by value are kept twice in its future (as captured, then as its
/// locals), which every idle connection would pay for.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn connection_task(
    hub: Arc<Hub>,
    mut stream: TcpStream,
    transport: Transport,
) -> impl Future<Output = ()> + Send {
    async move {
        // Boxed: only a connection in its handshake pays for it (buffers, timer, refusals).
        let Some((conn, mut r, first)) = Box::pin(admission(&hub, &mut stream, transport)).await
        else {
            return;
        };
        let reason = match first {
            Next::Close(reason) => Box::pin(finish(&hub, &conn, &mut stream, reason, &mut r)).await,
            Next::Go | Next::Stall => run(&hub, &conn, &mut stream, &mut r).await,
        };
        hub.leave(&conn, reason);
    }
}

thread_local! {
    /// The read buffer of this thread's connections: a connection keeps only a partial
    /// frame of its own.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// Connections waiting in the kernel to be accepted (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// The most bytes of a handshake (the WebSocket upgrade request, the TCP ticket line).
const MAX_TCP_LINE: usize = 256;

/// A connection's admission: a slot of `max_connections`, its handshake (within
/// `handshake_timeout_ms`), its ticket. Then the connection, its reader, and what the bytes
/// that followed the handshake decided; `None` when it was refused (and answered).
async fn admission(
    hub: &Arc<Hub>,
    stream: &mut TcpStream,
    transport: Transport,
) -> Option<(Arc<Conn>, Reader, Next)> {
    // The address's handshakes in flight, then capacity (cheap, and a refused client keeps
    // its ticket), then the handshake.
    let peer = stream.peer_addr().ok().map(canonical);
    let Ok(handshaking) = hub.begin_handshake(peer) else {
        let msg: &[u8] = match transport {
            Transport::Ws => WS_BUSY,
            _ => b"error busy\n",
        };
        refuse(hub, stream, msg).await;
        return None;
    };
    if !hub.reserve() {
        // Counted only while holding a slot: not during the refusal (a client of the same
        // address is then told `full`, the true reason, not `busy`).
        drop(handshaking);
        let msg: &[u8] = match transport {
            Transport::Ws => WS_FULL,
            _ => b"error full\n",
        };
        refuse(hub, stream, msg).await;
        return None;
    }
    let deadline = Instant::now() + Duration::from_millis(hub.opts.handshake_timeout_ms);
    // A handshake still in flight when the server closes ends then (answered `503` /
    // `error shutdown`): it must not be let in after `close()` resolved, nor hold that
    // close up until its own timeout.
    let shaken = tokio::select! {
        shaken = tokio::time::timeout_at(deadline, handshake(hub, stream, transport)) => shaken,
        () = hub.stopped() => Ok(Err(shutdown_response(transport).to_vec())),
    };
    // The handshake is over, done or refused: its address's place goes back now, not after
    // a refusal's linger.
    drop(handshaking);
    let (who, leftover, accept) = match shaken {
        Ok(Ok(x)) => x,
        Ok(Err(response)) if hub.stopping() => {
            // The slot is kept until the refusal is written and lingered (at most ~400 ms):
            // the close waits for it, so `dispatcher.close()` does not stop the runtime
            // under a refusal that a client still sending would then see as a reset.
            refuse(hub, stream, &response).await;
            hub.refuse();
            return None;
        }
        Ok(Err(response)) => {
            hub.refuse();
            refuse(hub, stream, &response).await;
            return None;
        }
        Err(_) => {
            // Slowloris: no complete request in time.
            hub.refuse();
            let msg: &[u8] = match transport {
                Transport::Ws => WS_TIMEOUT,
                _ => b"error timeout\n",
            };
            refuse(hub, stream, msg).await;
            return None;
        }
    };
    // What the socket did not take of the WebSocket's `101` at once (none, as a rule).
    if !accept.is_empty() && stream.write_all(&accept).await.is_err() {
        hub.refuse();
        return None;
    }
    let conn = hub.admit(&who, transport, peer);
    let mut r = Reader::new(hub, &conn);
    // The bytes that followed the handshake; none once the server closes (the connection
    // is asked to close at once by `admit`, and takes in no frame after `close()`).
    let first = if leftover.is_empty() || hub.stopping() {
        Next::Go
    } else {
        process(hub, &conn, &mut r, &mut { leftover })
    };
    Some((conn, r, first))
}

/// WebSocket refusals, as [`ws::response_error`] writes them: the body names the reason, as
/// the TCP transport's error line does (`full`, `busy`, `shutdown`, `timeout`).
const WS_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nfull\n";
const WS_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nbusy\n";
const WS_SHUTDOWN: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n\r\nshutdown\n";
const WS_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\ntimeout\n";

/// `addr` with an IPv4-mapped IPv6 address (a dual-stack listener's IPv4 client) as IPv4.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The answer to a handshake that the server's close interrupted.
fn shutdown_response(transport: Transport) -> &'static [u8] {
    match transport {
        Transport::Ws => WS_SHUTDOWN,
        _ => b"error shutdown\n",
    }
}

/// Refusals written and lingered at once, at most ([`refuse`]); past it a refused socket
/// gets its answer only if the socket takes it at once, and is closed at once.
pub(super) const MAX_LINGERING_REFUSALS: usize = 512;

/// Answers a refused connection (`response`: an HTTP error or a TCP error line) and closes
/// it, in at most about 400 ms. The half-close and [`linger`] matter: the client has sent
/// bytes the server did not read (its request, or the start of it), and closing a socket
/// with unread input sends a reset that can destroy the answer before the client reads it.
///
/// At most [`MAX_LINGERING_REFUSALS`] do so at once: a flood of connections refused (full,
/// busy) would otherwise hold a file and a task each for those ~400 ms, and could use up
/// the process's files. Past it the answer is written only if the socket takes it without
/// waiting, and the socket is closed at once (its client may then read a reset instead).
async fn refuse(hub: &Hub, stream: &mut TcpStream, response: &[u8]) {
    let Some(_lingering) = Lingering::enter(hub) else {
        let _ = stream.try_write(response);
        return;
    };
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(response)).await;
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
    linger(stream).await;
}

/// A refusal counted among the [`MAX_LINGERING_REFUSALS`] ([`Hub::lingering`]) until it
/// drops (also when its task is dropped mid-refusal, as at the runtime's shutdown).
struct Lingering<'a>(&'a Hub);

impl<'a> Lingering<'a> {
    fn enter(hub: &'a Hub) -> Option<Self> {
        if hub.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING_REFUSALS {
            hub.lingering.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(hub))
    }
}

impl Drop for Lingering<'_> {
    fn drop(&mut self) {
        self.0.lingering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who a connection is, from its ticket.
pub(super) struct Who {
    room: u32,
    player: u32,
}

/// The most bytes a handshake may take before it is complete: an upgrade request's header
/// block, or a ticket line.
fn request_cap(transport: Transport) -> usize {
    match transport {
        Transport::Ws => ws::MAX_REQUEST_BYTES,
        _ => MAX_TCP_LINE,
    }
}

/// What a handshake decided: the sender, the bytes that followed the handshake, and what
/// is left to write of the answer (the WebSocket's `101`, tried at once; nothing for TCP);
/// or the response to write before closing.
type Shaken = Result<(Who, Vec<u8>, Vec<u8>), Vec<u8>>;

/// Reads the upgrade request (WebSocket) or the ticket line (TCP) and checks the ticket
/// ([`settle`]).
///
/// The first read goes into the thread's read buffer: a request that arrives whole, as
/// clients send it, is settled there and its `101` written from the stack, with no
/// allocation of its own (in a burst of connections, thousands of handshake buffers freed
/// a moment later would stay as dirty pages). Only a request that arrives in pieces is
/// gathered in a buffer of the handshake's own.
async fn handshake(hub: &Hub, stream: &mut TcpStream, transport: Transport) -> Shaken {
    let cap = request_cap(transport);
    // Read straight into `buf` (no chunk in the future: every handshake in flight pays for
    // its future, and a burst of connections has thousands in flight).
    let mut buf = Vec::new();
    loop {
        stream.readable().await.map_err(|_| Vec::new())?;
        if buf.is_empty() {
            let first = READ_BUF.with_borrow_mut(|rb| {
                let limit = (cap + 1).min(rb.len());
                match stream.try_read(&mut rb[..limit]) {
                    Ok(0) => Some(Err(Vec::new())),
                    Ok(n) => settle(hub, stream, transport, &rb[..n]).or_else(|| {
                        buf.extend_from_slice(&rb[..n]);
                        None
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(Err(Vec::new())),
                }
            });
            match first {
                Some(done) => return done,
                None => continue,
            }
        }
        let had = buf.len();
        // What the buffer holds without growing (at least 512 bytes), up to one past `cap`.
        let room = (cap + 1)
            .saturating_sub(had)
            .min((buf.capacity() - had).max(512));
        buf.resize(had + room, 0);
        let read = stream.try_read(&mut buf[had..]);
        buf.truncate(had + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Err(Vec::new()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(Vec::new()),
        }
        if let Some(done) = settle(hub, stream, transport, &buf) {
            return done;
        }
    }
}

/// What the handshake's bytes so far decide, `None` while the request (or the ticket line)
/// is incomplete: the ticket checked, and for a WebSocket the `101` written as far as the
/// socket takes it without waiting (all of it, on a new connection's empty send buffer).
fn settle(hub: &Hub, stream: &TcpStream, transport: Transport, buf: &[u8]) -> Option<Shaken> {
    let cap = request_cap(transport);
    if transport == Transport::Ws {
        match ws::parse_request(buf) {
            Ok(None) => {}
            Ok(Some((req, used))) => {
                // Before the ticket is spent: a client refused by the close keeps it.
                if hub.stopping() {
                    return Some(Err(shutdown_response(transport).to_vec()));
                }
                let who = if hub.opts.echo_for_testing {
                    Who { room: 0, player: 0 }
                } else {
                    let t = ticket::ticket_from_query(req.target).unwrap_or("");
                    match hub.check_ticket(t) {
                        Ok(w) => w,
                        Err(reason) => {
                            let mut out = Vec::new();
                            ws::response_error(401, reason, &mut out);
                            return Some(Err(out));
                        }
                    }
                };
                // Written here, where no close can cut it short (nothing awaits): a client
                // never reads a `101` followed by a `503`.
                let reply = ws::response_101(req.key);
                let wrote = match stream.try_write(&reply) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(_) => return Some(Err(Vec::new())),
                };
                return Some(Ok((who, buf[used..].to_vec(), reply[wrote..].to_vec())));
            }
            Err(e) => {
                let mut out = Vec::new();
                ws::response_error(e.status(), e.as_str(), &mut out);
                return Some(Err(out));
            }
        }
    } else if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        let line = std::str::from_utf8(&buf[..nl]).unwrap_or("");
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(t) = line.strip_prefix("ticket ") else {
            return Some(Err(b"error ticket_malformed\n".to_vec()));
        };
        // Before the ticket is spent: a client refused by the close keeps it.
        if hub.stopping() {
            return Some(Err(shutdown_response(transport).to_vec()));
        }
        return Some(match hub.check_ticket(t.trim()) {
            Ok(who) => Ok((who, buf[nl + 1..].to_vec(), Vec::new())),
            Err(reason) => Err(format!("error {reason}\n").into_bytes()),
        });
    } else if buf.len() > MAX_TCP_LINE {
        return Some(Err(b"error ticket_malformed\n".to_vec()));
    }
    if buf.len() > cap {
        return Some(Err(match transport {
            Transport::Ws => {
                let mut out = Vec::new();
                ws::response_error(431, "request too large", &mut out);
                out
            }
            _ => b"error ticket_malformed\n".to_vec(),
        }));
    }
    None
}

/// Where a connection's v1 frames go, whatever the transport: `Worker::ingest` of the
/// shard of its ticket's room, under the worker's lock, on the thread that read them.
pub(super) struct Intake {
    sender: Sender,
    /// Frames refused in a row.
    refusals: u32,
    /// Frames held back while their room is out of budget (on TCP, with the partial frame
    /// that followed them), offered again by [`Intake::retry`] after a pause: none is lost.
    /// While it holds bytes, the connection reads nothing more.
    stalled: Vec<u8>,
}

/// What [`Intake::offer`] did with a chunk of frames.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Offered {
    /// Bytes of whole frames taken (accepted or refused).
    pub(super) consumed: usize,
    pub(super) accepted: u32,
    pub(super) refused: u32,
    /// Stopped at a frame its room has no budget for: offer the rest again later.
    pub(super) held: bool,
}

impl Intake {
    pub(super) fn new(room: u32, player: u32) -> Self {
        Self {
            sender: Sender::new(room, player),
            refusals: 0,
            stalled: Vec::new(),
        }
    }

    /// Whether frames are held back ([`Intake::retry`] them in ~1 ms, read nothing more).
    pub(super) fn stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Offers back-to-back frames to the shard: what it took, or the reason to close
    /// (bytes that are not v1 frames; more than `max_refusals` frames refused in a row).
    pub(super) fn offer(&mut self, hub: &Hub, frames: &[u8]) -> Result<Offered, CloseReason> {
        if frames.is_empty() {
            return Ok(Offered::default());
        }
        let shard = self.sender.room as usize % hub.parts.workers.len();
        let done = lock_worker(&hub.parts.workers[shard]).ingest(
            frames,
            &mut self.sender,
            crate::clock::now_ns(),
            hub.parts.max_payload,
            &hub.parts.verdicts,
        );
        if done.malformed {
            return Err(CloseReason::Malformed);
        }
        if done.accepted > 0 {
            self.refusals = 0;
        }
        self.refusals = self.refusals.saturating_add(done.refused);
        if hub.opts.max_refusals > 0 && self.refusals > hub.opts.max_refusals {
            return Err(CloseReason::Refused);
        }
        Ok(Offered {
            consumed: done.consumed,
            accepted: done.accepted,
            refused: done.refused,
            held: done.backpressure,
        })
    }

    /// Offers `frames`, holding back what the room has no budget for now: what was taken,
    /// and whether bytes that are not whole frames were left (the caller decides: a partial
    /// frame to complete on a byte stream, a malformed message otherwise).
    pub(super) fn offer_or_hold(
        &mut self,
        hub: &Hub,
        frames: &[u8],
    ) -> Result<(Offered, bool), CloseReason> {
        if self.stalled() {
            // A message must hold whole frames, held back or not: held messages are offered
            // again as one run of bytes, where a frame cut across two of them would join up.
            if !whole_frames(frames) {
                return Ok((Offered::default(), true));
            }
            // Behind frames already held back: in order, after them.
            self.stalled.extend_from_slice(frames);
            return Ok((Offered::default(), false));
        }
        let o = self.offer(hub, frames)?;
        if o.held {
            // What the room had no budget for: whole frames only (`ingest` stopped at the
            // first frame it could not take, without reading past it).
            let rest = &frames[o.consumed..];
            if !whole_frames(rest) {
                return Ok((o, true));
            }
            self.stalled.extend_from_slice(rest);
            return Ok((o, false));
        }
        Ok((o, o.consumed < frames.len()))
    }

    /// Offers the frames held back again. What was taken, and the bytes left that are not
    /// whole frames once the room took every whole one (empty most of the time).
    pub(super) fn retry(&mut self, hub: &Hub) -> Result<(Offered, Vec<u8>), CloseReason> {
        let mut held = std::mem::take(&mut self.stalled);
        let o = self.offer(hub, &held)?;
        held.drain(..o.consumed);
        if o.held {
            self.stalled = held;
            return Ok((o, Vec::new()));
        }
        Ok((o, held))
    }
}

/// Whether `bytes` are back-to-back frames by the lengths their headers announce (the
/// headers themselves are checked when the frames are taken in).
fn whole_frames(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(&[lo, hi]) = bytes.get(22..24) else {
            return false;
        };
        let Some(rest) =
            bytes.get(crate::frame::FRAME_OVERHEAD + usize::from(u16::from_le_bytes([lo, hi]))..)
        else {
            return false;
        };
        bytes = rest;
    }
    true
}

/// Per-connection reading state of a socket transport (kept small: it lives as long as
/// the connection).
struct Reader {
    decoder: Option<ws::Decoder>,
    /// A partial frame (TCP) or partial WebSocket frame waiting for more bytes.
    pending: Vec<u8>,
    intake: Intake,
    /// Why the WebSocket decoder failed the connection: its code (1002, 1003, 1007, 1009)
    /// and reason go in the close frame.
    /// (Boxed: it is set only as the connection closes.)
    ws_close: Option<Box<ws::Close>>,
}

impl Reader {
    fn new(hub: &Hub, conn: &Conn) -> Self {
        Self {
            decoder: (conn.transport == Transport::Ws)
                .then(|| ws::Decoder::new(hub.opts.max_message_bytes, hub.opts.echo_for_testing)),
            pending: Vec::new(),
            intake: Intake::new(conn.room, conn.player),
            ws_close: None,
        }
    }
}

/// What processing a read decided.
enum Next {
    Go,
    /// Offer `stalled` again after a pause (room budget full).
    Stall,
    Close(CloseReason),
}

/// What woke a connection's task ([`run`]), in the order they are looked at.
enum Wake {
    /// [`Conn::notify`]: bytes to write, or a close to carry out.
    Notified,
    Writable,
    Readable,
    /// Time to offer the frames a full room held back again.
    Retry,
}

/// How long frames held back by a full room wait before they are offered again.
const RETRY_HELD: Duration = Duration::from_millis(1);

/// A connection's life once admitted, its reader's state borrowed (see [`connection_task`];
/// an `async` block rather than an `async fn`, whose arguments would be kept twice).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn run<'a>(
    hub: &'a Hub,
    conn: &'a Conn,
    stream: &'a mut TcpStream,
    r: &'a mut Reader,
) -> impl Future<Output = CloseReason> + Send + 'a {
    async move {
        // The retry timer of frames held back, boxed: only a connection whose room is out of
        // budget pays for a timer (idle deadlines are the sweeper's, [`sweep_idle`]).
        let mut retry: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let stalled = r.intake.stalled();
            if !stalled {
                retry = None;
            } else if retry.is_none() {
                retry = Some(Box::pin(tokio::time::sleep(RETRY_HELD)));
            }
            // One small future instead of `select!` over `Notified`, two `Readiness` futures and
            // a `Sleep`: the socket's readiness keeps the task's waker itself
            // (`poll_read_ready`), and the notification slot is the connection's.
            // Matched at once: only the 1-byte `Wake` lives across the awaits below.
            let Ok(woke) = std::future::poll_fn(|cx| {
                let (notified, want_write) = conn.poll_notified(cx);
                if notified.is_ready() {
                    return Poll::Ready(Ok(Wake::Notified));
                }
                if want_write {
                    if let Poll::Ready(w) = stream.poll_write_ready(cx) {
                        return Poll::Ready(w.map(|()| Wake::Writable));
                    }
                }
                match retry.as_mut() {
                    Some(t) => {
                        if t.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Ok(Wake::Retry));
                        }
                    }
                    None => {
                        if let Poll::Ready(rd) = stream.poll_read_ready(cx) {
                            return Poll::Ready(rd.map(|()| Wake::Readable));
                        }
                    }
                }
                Poll::Pending
            })
            .await
            else {
                return CloseReason::Reset;
            };
            match woke {
                Wake::Notified | Wake::Writable => {}
                Wake::Readable => match read_some(hub, conn, stream, r) {
                    None => {}
                    Some(Next::Go | Next::Stall) => conn.mark_read(hub),
                    Some(Next::Close(reason)) => {
                        return Box::pin(finish(hub, conn, stream, reason, r)).await
                    }
                },
                Wake::Retry => {
                    if let Some(t) = retry.as_mut() {
                        t.as_mut().reset(Instant::now() + RETRY_HELD);
                    }
                    if let Err(reason) = retry_held(hub, r) {
                        return Box::pin(finish(hub, conn, stream, reason, r)).await;
                    }
                    // Not idle: the client's bytes wait for its room (a connection held back
                    // by a full room is not timed out, as before the sweeper).
                    conn.mark_read(hub);
                    continue;
                }
            }
            if let Some(reason) = conn.asked_close() {
                return Box::pin(finish(hub, conn, stream, reason, r)).await;
            }
            if let Err(reason) = write_some(hub, conn, stream) {
                return reason;
            }
        }
    }
}

/// Reads what the socket holds into the thread's buffer and processes it: what to do next,
/// or `None` when there was nothing to read after all.
fn read_some(hub: &Hub, conn: &Conn, stream: &TcpStream, r: &mut Reader) -> Option<Next> {
    READ_BUF.with_borrow_mut(|buf| match read_drained(stream, buf) {
        Ok(0) => Some(Next::Close(
            if r.pending.is_empty() && r.decoder.is_none() {
                CloseReason::Closed
            } else {
                CloseReason::Reset
            },
        )),
        Ok(n) => {
            hub.counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            Some(process(hub, conn, r, &mut buf[..n]))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(_) => Some(Next::Close(CloseReason::Reset)),
    })
}

/// Reads what the socket holds into `buf` (non-blocking): the bytes read, 0 at the end of
/// the stream, or `WouldBlock`.
///
/// A read shorter than `buf` drained the socket (a stream socket's read returns less than
/// asked only when nothing more is queued), so the socket's readiness is cleared right away
/// rather than by a second read answering `EAGAIN`: one read syscall per wake-up instead of
/// two. `try_io` clears the readiness it saw before the read, so a readiness event the
/// driver records after it (bytes that arrived since) is kept: nothing is missed, and at
/// worst one more wake-up reads nothing. The end of the stream stays signalled (tokio never
/// clears read-closed).
fn read_drained(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut short = 0;
    match stream.try_io(tokio::io::Interest::READABLE, || {
        let n = stream.try_read(buf)?;
        if n > 0 && n < buf.len() {
            short = n;
            // Makes `try_io` clear the readiness; the bytes are returned below.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }) {
        Err(_) if short > 0 => Ok(short),
        r => r,
    }
}

/// Offers the frames a full room held back again. A partial frame that followed them
/// waits for the next read (TCP); on WebSocket a message must hold whole frames.
fn retry_held(hub: &Hub, r: &mut Reader) -> Result<(), CloseReason> {
    match r.intake.retry(hub)? {
        (_, tail) if tail.is_empty() => Ok(()),
        (_, tail) if r.decoder.is_none() => {
            r.pending = tail;
            Ok(())
        }
        _ => Err(CloseReason::Malformed),
    }
}

/// Writes what the socket takes now of the outbound queue.
fn write_some(hub: &Hub, conn: &Conn, stream: &TcpStream) -> Result<(), CloseReason> {
    let mut out = conn.lock();
    while let Some(front) = out.queue.front().cloned() {
        let from = out.offset;
        match stream.try_write(&front[from..]) {
            Ok(n) => {
                hub.counters
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                out.bytes -= n;
                if from + n == front.len() {
                    out.queue.pop_front();
                    out.offset = 0;
                    hub.counters.messages_out.fetch_add(1, Ordering::Relaxed);
                } else {
                    out.offset = from + n;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return Err(CloseReason::Reset),
        }
    }
    if out.queue.is_empty() {
        out.over = false;
        if out.queue.capacity() > 64 {
            out.queue.shrink_to(8);
        }
    }
    Ok(())
}

/// How long a server-side close waits for the outbound queue to drain before its close
/// frame: a peer that does not read is not waited for.
const CLOSE_FLUSH: Duration = Duration::from_millis(200);
/// How long the answer to a client's Close (queued after the messages before it) may take
/// to go out: the client is reading, it waits for that answer.
const CLOSE_HANDSHAKE_FLUSH: Duration = Duration::from_secs(2);

/// The code and reason of the close frame the server sends when it closes for `reason`:
/// the decoder's own (1002, 1003, 1007, 1009) when the decoder failed the connection.
fn close_frame(reason: CloseReason, decoder: Option<ws::Close>) -> (u16, &'static str) {
    if let Some(close) = decoder {
        return (close.code, close.reason);
    }
    match reason {
        CloseReason::Text => (ws::CLOSE_UNSUPPORTED_DATA, "text messages are not accepted"),
        CloseReason::Protocol => (ws::CLOSE_PROTOCOL_ERROR, "protocol error"),
        CloseReason::TooBig => (ws::CLOSE_TOO_BIG, "message too big"),
        CloseReason::Malformed => (ws::CLOSE_INVALID_DATA, "not v1 frames"),
        CloseReason::Refused => (ws::CLOSE_POLICY_VIOLATION, "too many frames refused"),
        CloseReason::Idle => (ws::CLOSE_GOING_AWAY, "idle"),
        CloseReason::Backpressure => (ws::CLOSE_POLICY_VIOLATION, "not reading"),
        CloseReason::Replaced => (ws::CLOSE_POLICY_VIOLATION, "replaced by a new connection"),
        CloseReason::Shutdown => (ws::CLOSE_GOING_AWAY, "server closing"),
        CloseReason::Kicked => (ws::CLOSE_NORMAL, "kicked"),
        CloseReason::Closed | CloseReason::Reset => (ws::CLOSE_NORMAL, "closed"),
    }
}

/// Writes the outbound queue until it is empty or `deadline` passes. Returns whether the
/// stream stands between frames (nothing written of the front buffer), where a close frame
/// may follow; what is left in the queue is never written.
async fn flush(hub: &Hub, conn: &Conn, stream: &TcpStream, deadline: Instant) -> bool {
    loop {
        if write_some(hub, conn, stream).is_err() {
            return false;
        }
        if conn.lock().queue.is_empty() {
            return true;
        }
        match tokio::time::timeout_at(deadline, stream.writable()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    conn.lock().offset == 0
}

/// Closes a connection the server decided to close (or whose client sent a Close): what
/// is queued (the answer to the client's Close last), the WebSocket close frame (with the
/// code for `reason`, or the decoder's, kept in `r.ws_close`), then the socket. Bounded in time: a
/// peer that does not read is not waited for.
async fn finish(
    hub: &Hub,
    conn: &Conn,
    stream: &mut TcpStream,
    reason: CloseReason,
    r: &mut Reader,
) -> CloseReason {
    let ws_close = r.ws_close.take().map(|c| *c);
    if conn.transport == Transport::Ws && reason != CloseReason::Reset {
        let grace = if reason == CloseReason::Closed {
            CLOSE_HANDSHAKE_FLUSH
        } else {
            CLOSE_FLUSH
        };
        let between_frames = flush(hub, conn, stream, Instant::now() + grace).await;
        // A client's Close was answered in the queue. Otherwise the close frame follows
        // whole frames only: after a frame cut short, the client could not parse it.
        if reason != CloseReason::Closed && between_frames {
            let kick = if reason == CloseReason::Kicked {
                hub.take_kick(conn)
            } else {
                None
            };
            let (code, text) = kick
                .as_deref()
                .map_or_else(|| close_frame(reason, ws_close), |k| (k.code, k.reason()));
            let mut frame = Vec::new();
            ws::encode_close(code, text, &mut frame);
            let _ = tokio::time::timeout(CLOSE_FLUSH, stream.write_all(&frame)).await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH, stream.shutdown()).await;
    linger(stream).await;
    reason
}

/// After the server's last bytes and its half-close: reads and drops what the client still
/// sends, until it closes too or 200 ms pass. Closing a socket with unread input makes the
/// kernel answer with a reset, which can destroy the close frame or error line just sent
/// before the client reads it.
async fn linger(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        // Into the thread's read buffer: no sink in the future of every closing connection.
        match READ_BUF.with_borrow_mut(|sink| stream.try_read(sink)) {
            Ok(0) => break,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
            _ => {}
        }
    }
}

/// Takes freshly read bytes (`input`, in the thread's buffer, or the leftover of the
/// handshake): decodes them (WebSocket) and offers their frames.
fn process(hub: &Hub, conn: &Conn, r: &mut Reader, input: &mut [u8]) -> Next {
    // Bytes kept from the previous read go first: then the whole is worked on in `pending`.
    let mut owned;
    let work: &mut [u8] = if r.pending.is_empty() {
        input
    } else {
        owned = std::mem::take(&mut r.pending);
        owned.extend_from_slice(input);
        &mut owned
    };
    let (used, next) = match r.decoder.as_mut() {
        None => match r.intake.offer(hub, work) {
            Ok(o) if o.held => {
                // The room is out of budget: hold the rest, whole frames and partial tail.
                r.intake.stalled.extend_from_slice(&work[o.consumed..]);
                (work.len(), Next::Stall)
            }
            Ok(o) => (o.consumed, Next::Go),
            Err(reason) => return Next::Close(reason),
        },
        Some(_) => decode_ws(hub, conn, r, work),
    };
    if let Next::Close(_) = next {
        return next;
    }
    let rest = &work[used..];
    if !rest.is_empty() {
        if rest.len() > hub.opts.max_message_bytes + 14 + hub.parts.max_payload + 64 {
            return Next::Close(CloseReason::Malformed);
        }
        let mut keep = std::mem::take(&mut r.pending);
        keep.clear();
        keep.extend_from_slice(rest);
        r.pending = keep;
    } else if r.pending.capacity() > 4096 {
        r.pending = Vec::new();
    }
    next
}

/// Decodes WebSocket frames from `work`; returns the bytes consumed and what to do next.
fn decode_ws(hub: &Hub, conn: &Conn, r: &mut Reader, work: &mut [u8]) -> (usize, Next) {
    let Some(mut decoder) = r.decoder.take() else {
        return (0, Next::Close(CloseReason::Protocol));
    };
    let echo = hub.opts.echo_for_testing;
    let mut next = Next::Go;
    let fed = decoder.feed(work, &mut |event| {
        if let Next::Close(_) = next {
            return;
        }
        match event {
            ws::Event::Binary(payload) if echo => {
                let mut out = Vec::with_capacity(payload.len() + 10);
                ws::encode_frame(ws::Opcode::Binary, payload, &mut out);
                if let Err(reason) = queue_own(hub, conn, out) {
                    next = Next::Close(reason);
                }
            }
            ws::Event::Text(payload) if echo => {
                let mut out = Vec::with_capacity(payload.len() + 10);
                ws::encode_frame(ws::Opcode::Text, payload, &mut out);
                if let Err(reason) = queue_own(hub, conn, out) {
                    next = Next::Close(reason);
                }
            }
            ws::Event::Binary(payload) => match r.intake.offer_or_hold(hub, payload) {
                // A message must hold whole frames.
                Ok((_, true)) => next = Next::Close(CloseReason::Malformed),
                Ok(_) if r.intake.stalled() => next = Next::Stall,
                Ok(_) => {}
                Err(reason) => next = Next::Close(reason),
            },
            ws::Event::Text(_) => next = Next::Close(CloseReason::Text),
            ws::Event::Ping(payload) => {
                let mut out = Vec::with_capacity(payload.len() + 2);
                ws::encode_frame(ws::Opcode::Pong, payload, &mut out);
                if let Err(reason) = queue_own(hub, conn, out) {
                    next = Next::Close(reason);
                }
            }
            ws::Event::Pong(_) => {}
            ws::Event::Close { code, .. } => {
                // Echo the code back (or 1000), then close.
                let mut out = Vec::with_capacity(4);
                ws::encode_close(code.unwrap_or(1000), "", &mut out);
                if code.is_none() {
                    out.clear();
                    ws::encode_frame(ws::Opcode::Close, &[], &mut out);
                }
                queue_close(conn, out);
                next = Next::Close(CloseReason::Closed);
            }
        }
    });
    r.decoder = Some(decoder);
    match fed {
        Ok(used) => (used, next),
        Err(close) => {
            r.ws_close = Some(Box::new(close));
            let reason = match close.code {
                1003 => CloseReason::Text,
                1009 => CloseReason::TooBig,
                _ => CloseReason::Protocol,
            };
            (work.len(), Next::Close(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use super::*;
    use crate::config::Config;
    use crate::core::Core;

    #[test]
    fn websocket_refusals_name_their_reason_as_response_error_writes_it() {
        for (bytes, status, reason) in [
            (WS_FULL, 503, "full"),
            (WS_SHUTDOWN, 503, "shutdown"),
            (WS_TIMEOUT, 408, "timeout"),
        ] {
            let mut want = Vec::new();
            ws::response_error(status, reason, &mut want);
            assert_eq!(bytes, &want[..], "{reason}");
        }
    }

    #[test]
    fn whole_frames_follows_the_announced_lengths() {
        let f = |len: u16| {
            let h = crate::frame::Header {
                flags: 0,
                room: 1,
                player: 2,
                seq: 3,
                tick: 0,
                kind: 0,
                len,
            };
            crate::frame::encode_unsigned(&h, &vec![1; usize::from(len)]).unwrap()
        };
        let (a, b) = (f(100), f(3));
        assert!(whole_frames(&[]));
        assert!(whole_frames(&a));
        assert!(whole_frames(&[a.clone(), b.clone(), a.clone()].concat()));
        let ab = [a.clone(), b].concat();
        for cut in 1..ab.len() {
            if cut != a.len() {
                assert!(!whole_frames(&ab[..cut]), "cut at {cut}");
            }
        }
        assert!(
            !whole_frames(&[a, vec![0; 23]].concat()),
            "a header cut short"
        );
    }

    /// The tests' listen options: no transport, a fixed ticket key, small limits, connection
    /// events published, no echo.
    fn test_options() -> Options {
        Options {
            ws: None,
            tcp: None,
            grpc: None,
            ticket_key: vec![7; 32],
            max_connections: 8,
            idle_timeout_ms: 0,
            max_backpressure_bytes: 1 << 16,
            max_message_bytes: 1 << 16,
            handshake_timeout_ms: 5_000,
            max_handshakes_per_address: 0,
            max_refusals: 0,
            connection_events: true,
            echo_for_testing: false,
        }
    }

    /// A TCP client admitted with a ticket, then gone: whether its open and close reached
    /// the outbox (JavaScript's poll) follows `connection_events`.
    #[test]
    fn connection_events_are_published_only_when_wanted() {
        for wanted in [false, true] {
            let mut core = Core::new(Config::default(), Box::new(|| {})).unwrap();
            assert_eq!(
                core.open_room(3, false, true, None),
                crate::verdict::Status::Ok
            );
            assert_eq!(core.join(3, 9, None), crate::verdict::Status::Ok);
            let parts = core.ingress_parts().unwrap();
            let outbox = Arc::clone(&parts.outbox);
            let ingress = Ingress::start(
                parts,
                Options {
                    tcp: Some("127.0.0.1:0".parse().unwrap()),
                    connection_events: wanted,
                    ..test_options()
                },
            )
            .unwrap();
            let key = test_options().ticket_key;
            let at = ingress.address(Transport::Tcp).unwrap();
            let ticket = crate::ingress::ticket::tests::mint(
                &key,
                3,
                9,
                crate::ingress::ticket::now_unix_ms() + 60_000,
                [1; 16],
            );
            let mut s = StdStream::connect(at).unwrap();
            s.write_all(format!("ticket {ticket}\n").as_bytes())
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while ingress.connections() == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(ingress.connections(), 1, "the ticket admits the client");
            drop(s);
            while ingress.connections() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(ingress.connections(), 0, "the close is seen");
            let events = outbox
                .take()
                .into_iter()
                .filter(|d| matches!(d, crate::outbox::Delivery::Connection(_)))
                .count();
            assert_eq!(
                events,
                if wanted { 2 } else { 0 },
                "connection_events: {wanted}"
            );
            ingress.close();
        }
    }

    /// A core with room 3 (player 9 a member) and its ingress on TCP, 127.0.0.1, with `opts`.
    fn member_tcp_server(opts: Options) -> (Core, Ingress) {
        let mut core = Core::new(Config::default(), Box::new(|| {})).unwrap();
        assert_eq!(
            core.open_room(3, false, true, None),
            crate::verdict::Status::Ok
        );
        assert_eq!(core.join(3, 9, None), crate::verdict::Status::Ok);
        let ingress = Ingress::start(
            core.ingress_parts().unwrap(),
            Options {
                tcp: Some("127.0.0.1:0".parse().unwrap()),
                ..opts
            },
        )
        .unwrap();
        (core, ingress)
    }

    /// A ticket of player 9 in room 3 under the tests' key, for a minute.
    fn ticket_of_9(nonce: [u8; 16]) -> String {
        crate::ingress::ticket::tests::mint(
            &test_options().ticket_key,
            3,
            9,
            crate::ingress::ticket::now_unix_ms() + 60_000,
            nonce,
        )
    }

    /// Waits until `f` holds, at most 5 s (then fails, saying `what`).
    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A TCP client of `ingress` that sent player 9's ticket (minted with `nonce`).
    fn ticketed_tcp_client(ingress: &Ingress, nonce: [u8; 16]) -> StdStream {
        let mut s = StdStream::connect(ingress.address(Transport::Tcp).unwrap()).unwrap();
        s.write_all(format!("ticket {}\n", ticket_of_9(nonce)).as_bytes())
            .unwrap();
        s
    }

    /// IPv4 addresses count alone, IPv6 ones by their /64, an IPv4-mapped one as IPv4.
    #[test]
    fn handshakes_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_ne!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("::ffff:127.0.0.1"), key("127.0.0.1"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("::1"), key("0.0.0.1"));
    }

    /// Past `max_handshakes_per_address` silent sockets from one address, the next is
    /// refused at once (`error busy`) while slots of `max_connections` are left; a place
    /// comes back when one of them goes, and a ticket still gets in then.
    #[test]
    fn handshakes_in_flight_per_address_are_bounded() {
        let (_core, ingress) = member_tcp_server(Options {
            max_handshakes_per_address: 2,
            ..test_options()
        });
        let at = ingress.address(Transport::Tcp).unwrap();
        let mut silent: Vec<StdStream> = (0..2).map(|_| StdStream::connect(at).unwrap()).collect();
        wait_for("two handshakes in flight", || ingress.connections() == 2);
        let mut third = StdStream::connect(at).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "error busy\n");
        assert_eq!(ingress.connections(), 2, "the refused one took no slot");
        assert_eq!(ingress.counters().refused_connections, 1);
        // One silent socket goes: its handshake fails (refused, with its place given back).
        drop(silent.remove(0));
        wait_for("the place given back", || {
            ingress.hub.handshaking().values().sum::<u32>() == 1
        });
        let _s = ticketed_tcp_client(&ingress, [2; 16]);
        wait_for("the ticket admitted", || {
            ingress.counters().accepted_connections == 1
        });
        // Admitted, it no longer counts among the handshakes in flight.
        wait_for("one handshake left", || {
            ingress.hub.handshaking().values().sum::<u32>() == 1
        });
        assert_eq!(
            silent.len(),
            1,
            "the other silent socket is still in flight"
        );
        ingress.close();
    }

    /// A kick's code is 1000 or an application's (3000–4999); its reason fits a close frame.
    #[test]
    fn a_kick_is_a_close_an_application_may_send() {
        assert!(Kick::new(1000, "").is_ok());
        assert!(Kick::new(3000, "x").is_ok());
        assert!(Kick::new(4999, &"x".repeat(123)).is_ok());
        for code in [0, 999, 1001, 1008, 2999, 5000, u16::MAX] {
            assert_eq!(Kick::new(code, "x").unwrap_err().0, "code", "{code}");
        }
        assert_eq!(Kick::new(4000, &"x".repeat(124)).unwrap_err().0, "reason");
    }

    /// A kicked TCP connection (no close message on TCP) leaves no kick behind.
    #[test]
    fn a_kick_no_close_frame_took_is_dropped_with_its_connection() {
        let (_core, ingress) = member_tcp_server(test_options());
        let mut s = ticketed_tcp_client(&ingress, [3; 16]);
        wait_for("admitted", || ingress.counters().accepted_connections == 1);
        assert!(ingress.disconnect(3, 9, Some(Kick::new(4001, "banned").unwrap())));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a TCP stream just ends");
        wait_for("closed", || ingress.connections() == 0);
        assert!(ingress.hub.kicks().is_empty());
        ingress.close();
    }

    /// A client refused `full` does not hold its address's place during the refusal's
    /// linger: the next client of that address is told the true reason.
    #[test]
    fn a_full_refusal_gives_its_address_place_back_at_once() {
        let (_core, ingress) = member_tcp_server(Options {
            max_connections: 1,
            max_handshakes_per_address: 2,
            ..test_options()
        });
        let at = ingress.address(Transport::Tcp).unwrap();
        let places = || ingress.hub.handshaking().values().sum::<u32>();
        let _silent = StdStream::connect(at).unwrap();
        wait_for("the first handshake counted", || places() == 1);
        // Kept open: the server lingers ~200 ms on its refusal, waiting for this end.
        let mut full = StdStream::connect(at).unwrap();
        full.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = [0; 11];
        full.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"error full\n");
        assert_eq!(
            places(),
            1,
            "the refused client's place went back with its slot"
        );
        ingress.close();
    }

    /// A kick that comes after its connection left (`disconnect` took it from the registry
    /// just before) is not kept.
    #[test]
    fn a_kick_after_the_connection_left_is_not_kept() {
        let (_core, ingress) = member_tcp_server(test_options());
        let s = ticketed_tcp_client(&ingress, [4; 16]);
        let registered = || ingress.hub.registry().by_player.get(&(3, 9)).cloned();
        wait_for("admitted", || registered().is_some());
        let conn = registered().unwrap();
        drop(s);
        wait_for("left", || ingress.connections() == 0);
        ingress
            .hub
            .kick(&conn, Some(&Arc::new(Kick::new(4001, "late").unwrap())));
        assert!(ingress.hub.kicks().is_empty());
        ingress.close();
    }

    /// At most `MAX_LINGERING_REFUSALS` refusals linger at once; each gives its place back
    /// when it ends, and refusals made meanwhile end with the counter back at 0.
    #[test]
    fn lingering_refusals_are_bounded() {
        let (_core, ingress) = member_tcp_server(Options {
            max_connections: 1,
            ..test_options()
        });
        let hub = &ingress.hub;
        let held: Vec<Lingering<'_>> = (0..MAX_LINGERING_REFUSALS)
            .map(|_| Lingering::enter(hub).unwrap())
            .collect();
        assert!(Lingering::enter(hub).is_none(), "past the bound");
        drop(held);
        assert_eq!(hub.lingering.load(Ordering::Acquire), 0);
        // Real refusals (`full`: the one slot is held by a silent socket) count while they
        // linger and give their place back.
        let at = ingress.address(Transport::Tcp).unwrap();
        let _silent = StdStream::connect(at).unwrap();
        wait_for("the slot held", || ingress.connections() == 1);
        let refused: Vec<StdStream> = (0..8).map(|_| StdStream::connect(at).unwrap()).collect();
        wait_for("eight refused", || {
            ingress.counters().refused_connections >= 8
        });
        drop(refused);
        wait_for("the refusals ended", || {
            hub.lingering.load(Ordering::Acquire) == 0
        });
        ingress.close();
    }

    /// A core and its ingress in echo mode, on a free port of 127.0.0.1.
    fn echo_server(max_message_bytes: usize, max_backpressure_bytes: usize) -> (Core, Ingress) {
        echo_server_idle(max_message_bytes, max_backpressure_bytes, 0)
    }

    /// [`echo_server`] with an idle timeout.
    fn echo_server_idle(
        max_message_bytes: usize,
        max_backpressure_bytes: usize,
        idle_timeout_ms: u64,
    ) -> (Core, Ingress) {
        let core = Core::new(Config::default(), Box::new(|| {})).unwrap();
        let parts = core.ingress_parts().unwrap();
        let ingress = Ingress::start(
            parts,
            Options {
                ws: Some("127.0.0.1:0".parse().unwrap()),
                idle_timeout_ms,
                max_backpressure_bytes,
                max_message_bytes,
                echo_for_testing: true,
                ..test_options()
            },
        )
        .unwrap();
        (core, ingress)
    }

    /// A client past the upgrade.
    fn connect(ingress: &Ingress) -> StdStream {
        let mut s = StdStream::connect(ingress.address(Transport::Ws).unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "));
        s
    }

    /// A masked client frame.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0xfe);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0xff);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    /// The next server frame: first byte and payload.
    fn read_frame(s: &mut StdStream) -> (u8, Vec<u8>) {
        let mut h = [0; 2];
        s.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut x = [0; 2];
                s.read_exact(&mut x).unwrap();
                usize::from(u16::from_be_bytes(x))
            }
            127 => {
                let mut x = [0; 8];
                s.read_exact(&mut x).unwrap();
                usize::try_from(u64::from_be_bytes(x)).unwrap()
            }
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).unwrap();
        (h[0], payload)
    }

    fn close_code(payload: &[u8]) -> u16 {
        u16::from_be_bytes([payload[0], payload[1]])
    }

    #[test]
    fn the_connection_task_stays_small() {
        let (_core, ingress) = echo_server(1 << 16, 64 << 10);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let _guard = ingress.hub.parts.runtime.enter();
        let stream = TcpStream::from_std(accepted).unwrap();
        let mut stream = stream;
        let admission_size =
            std::mem::size_of_val(&admission(&ingress.hub, &mut stream, Transport::Ws));
        println!("admission future (boxed while a handshake is in flight): {admission_size} B");
        let task = connection_task(Arc::clone(&ingress.hub), stream, Transport::Ws);
        let size = std::mem::size_of_val(&task);
        println!(
            "connection task future: {size} B; Conn: {} B; Reader: {} B; Outbound: {} B",
            std::mem::size_of::<Conn>(),
            std::mem::size_of::<Reader>(),
            std::mem::size_of::<Outbound>()
        );
        // 256 bytes in release builds (264 in debug ones): tokio's task cell (header and
        // trailer around the future, aligned to 128) is then 384 bytes; past 288 it would be
        // 512. The admission (boxed only while a handshake is in flight, and racing the
        // server's close) is 624 bytes in both (560 before it held the client's address and
        // its place among that address's handshakes in flight).
        assert!(size <= 288, "the connection task grew to {size} bytes");
        assert!(
            admission_size <= 640,
            "the admission grew to {admission_size} bytes"
        );
    }

    #[test]
    fn an_upgrade_request_whole_or_in_pieces_gets_its_101_and_the_bytes_after_it() {
        // Whole: settled in the thread's read buffer, the message after it in the same
        // write kept as the leftover. In pieces (cut anywhere): gathered in the
        // handshake's own buffer, settled once complete.
        let (_core, ingress) = echo_server(1 << 16, 64 << 20);
        let request: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let message = client_frame(0x82, b"after the upgrade");
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(&message);
        for cut in [
            0,
            1,
            17,
            request.len() - 1,
            request.len(),
            request.len() + 3,
        ] {
            let mut s = StdStream::connect(ingress.address(Transport::Ws).unwrap()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            if cut > 0 {
                s.write_all(&bytes[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            s.write_all(&bytes[cut..]).unwrap();
            let mut head = Vec::new();
            let mut byte = [0];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            assert_eq!(
                std::str::from_utf8(&head).unwrap(),
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                "cut at {cut}"
            );
            let (b0, payload) = read_frame(&mut s);
            assert_eq!(
                (b0, payload.as_slice()),
                (0x82, &b"after the upgrade"[..]),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bytes_that_arrive_after_a_short_read_are_not_missed() {
        // A short read clears the socket's readiness without a read answering EAGAIN: bytes
        // that arrive right after it must still wake the connection. Messages written in
        // pieces of every size, some back to back, some after the previous echo.
        let (_core, ingress) = echo_server(1 << 16, 64 << 20);
        let mut s = connect(&ingress);
        let mut writer = s.try_clone().unwrap();
        let messages: Vec<Vec<u8>> = (0..3_000_u32)
            .map(|i| client_frame(0x82, &i.to_le_bytes().repeat(1 + (i % 7) as usize)))
            .collect();
        let expected = messages.clone();
        let sending = std::thread::spawn(move || {
            for (i, m) in messages.iter().enumerate() {
                let cut = (i * 7) % m.len();
                writer.write_all(&m[..cut]).unwrap();
                if i % 3 == 0 {
                    std::thread::yield_now();
                }
                writer.write_all(&m[cut..]).unwrap();
            }
        });
        for (i, m) in expected.iter().enumerate() {
            let (b0, payload) = read_frame(&mut s);
            assert_eq!(b0, 0x82, "message {i}");
            assert_eq!(
                payload,
                m[6..]
                    .iter()
                    .zip([0x11, 0x22, 0x33, 0x44].iter().cycle())
                    .map(|(b, k)| b ^ k)
                    .collect::<Vec<u8>>(),
                "message {i}"
            );
        }
        sending.join().unwrap();
    }

    #[test]
    fn a_silent_websocket_is_pinged_at_half_the_idle_timeout_then_closed_idle() {
        let (_core, ingress) = echo_server_idle(1 << 16, 64 << 10, 400);
        let mut s = connect(&ingress);
        let t0 = std::time::Instant::now();
        assert_eq!(read_frame(&mut s), (0x89, Vec::new()), "an empty ping");
        let pinged = t0.elapsed();
        assert!(
            pinged >= Duration::from_millis(180),
            "pinged after {pinged:?}"
        );
        // Not answered: closed at the timeout, 1001 "idle".
        let (b0, payload) = read_frame(&mut s);
        let closed = t0.elapsed();
        assert_eq!(b0, 0x88);
        assert_eq!(close_code(&payload), 1001);
        assert_eq!(&payload[2..], b"idle");
        assert!(
            closed >= Duration::from_millis(390) && closed < Duration::from_millis(1_500),
            "closed after {closed:?}"
        );
        // A client that answers (any frame) is not closed.
        let mut s = connect(&ingress);
        for _ in 0..3 {
            assert_eq!(read_frame(&mut s).0, 0x89);
            s.write_all(&client_frame(0x8a, b"")).unwrap();
        }
        s.write_all(&client_frame(0x82, b"still here")).unwrap();
        assert_eq!(read_frame(&mut s), (0x82, b"still here".to_vec()));
        assert_eq!(ingress.connections(), 1);
    }

    #[test]
    fn the_close_frame_carries_the_decoders_code() {
        // Invalid UTF-8 is 1007 (RFC 6455 §7.4.1), not the generic protocol error.
        assert_eq!(
            close_frame(CloseReason::Protocol, Some(ws::Close::BAD_TEXT)),
            (1007, "invalid UTF-8 in text")
        );
        assert_eq!(
            close_frame(CloseReason::Protocol, Some(ws::Close::BAD_CLOSE_REASON)).0,
            1007
        );
        assert_eq!(
            close_frame(CloseReason::Protocol, Some(ws::Close::UNMASKED)).0,
            1002
        );
        assert_eq!(
            close_frame(CloseReason::TooBig, Some(ws::Close::TOO_BIG)).0,
            1009
        );
        assert_eq!(close_frame(CloseReason::Protocol, None).0, 1002);
        assert_eq!(close_frame(CloseReason::Malformed, None).0, 1007);
        assert_eq!(close_frame(CloseReason::Shutdown, None).0, 1001);
    }

    #[test]
    fn invalid_utf8_text_is_closed_with_1007_on_the_wire() {
        let (_core, ingress) = echo_server(1 << 16, 64 << 10);
        let mut s = connect(&ingress);
        s.write_all(&client_frame(0x81, b"fine")).unwrap();
        assert_eq!(read_frame(&mut s), (0x81, b"fine".to_vec()));
        // A fragmented text message whose second fragment breaks UTF-8 (Autobahn 6.4.1).
        s.write_all(&client_frame(0x01, "κόσμε".as_bytes()))
            .unwrap();
        s.write_all(&client_frame(0x00, &[0xf4, 0x90, 0x80, 0x80]))
            .unwrap();
        let (b0, payload) = read_frame(&mut s);
        assert_eq!(b0, 0x88);
        assert_eq!(close_code(&payload), 1007);
        // And a Close whose reason is not UTF-8 (Autobahn 7.5.1).
        let mut s = connect(&ingress);
        s.write_all(&client_frame(0x88, &[0x03, 0xe8, 0xff, 0xfe]))
            .unwrap();
        let (b0, payload) = read_frame(&mut s);
        assert_eq!(b0, 0x88);
        assert_eq!(close_code(&payload), 1007);
    }

    #[test]
    fn a_clients_close_is_answered_after_everything_queued_before_it() {
        // 16 MiB echoed, then the Close answered: more than the socket buffers take at
        // once, so the answer waits for the client to read (it used to be written only as
        // far as one non-blocking write went, then the socket was closed).
        let (_core, ingress) = echo_server(16 << 20, 64 << 20);
        let mut s = connect(&ingress);
        let message: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut out = client_frame(0x82, &message);
        out.extend_from_slice(&client_frame(0x88, &[0x03, 0xe8]));
        let mut writer = s.try_clone().unwrap();
        let sending = std::thread::spawn(move || writer.write_all(&out));
        std::thread::sleep(Duration::from_millis(300));
        let (b0, echoed) = read_frame(&mut s);
        assert_eq!(b0, 0x82);
        assert!(echoed == message, "the echo differs");
        let (b0, payload) = read_frame(&mut s);
        assert_eq!((b0, close_code(&payload)), (0x88, 1000));
        sending.join().unwrap().unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap(),
            0,
            "then the server closes"
        );
    }

    #[test]
    fn pongs_past_the_limit_are_coalesced() {
        let pong = |tag: u8| {
            let mut f = Vec::new();
            ws::encode_frame(ws::Opcode::Pong, &[tag; 100], &mut f);
            f
        };
        // Below the limit (here 3 pongs of 102 bytes), every ping gets its pong (Autobahn
        // 2.10); past it, the latest replaces the one at the end of the queue.
        let mut out = Outbound::default();
        for tag in 0..100 {
            assert!(push_own(&mut out, pong(tag), 350));
        }
        assert_eq!(out.queue.len(), 3);
        assert_eq!(out.bytes, 306);
        let tags: Vec<u8> = out.queue.iter().map(|f| f[2]).collect();
        assert_eq!(tags, [0, 1, 99], "the latest ping is answered");
        // A partly written front pong is not replaced: a new one goes behind it.
        let mut out = Outbound::default();
        assert!(push_own(&mut out, pong(0), 150));
        out.offset = 10;
        assert!(push_own(&mut out, pong(1), 150));
        assert!(push_own(&mut out, pong(2), 150));
        assert_eq!(out.queue.len(), 2);
        assert_eq!(out.queue[1][2], 2);
        // Other frames count against the limit and are refused past it; behind one, a pong
        // is queued even past the limit (then coalesced).
        let mut echo = Vec::new();
        ws::encode_frame(ws::Opcode::Binary, &[0; 600], &mut echo);
        assert!(!push_own(&mut out, echo.clone(), 700));
        let mut out = Outbound::default();
        assert!(push_own(&mut out, echo.clone(), 1024));
        assert!(!push_own(&mut out, echo, 1024));
        assert!(push_own(&mut out, pong(3), 650));
        assert!(push_own(&mut out, pong(4), 650));
        assert_eq!(out.queue.len(), 2);
        assert_eq!(out.bytes, 604 + 102);
        // An empty queue takes a frame of any size.
        let mut empty = Outbound::default();
        let mut big = Vec::new();
        ws::encode_frame(ws::Opcode::Binary, &[0; 4096], &mut big);
        assert!(push_own(&mut empty, big, 1024));
    }

    #[test]
    fn a_ping_flood_from_a_client_that_does_not_read_holds_one_pong() {
        let (_core, ingress) = echo_server(1 << 16, 64 << 10);
        let mut s = connect(&ingress);
        // 100,000 pings of 125 bytes: 12 MiB of pongs, more than the socket buffers and the
        // 64 KiB limit hold.
        let ping = client_frame(0x89, &[0x5a; 125]);
        let flood: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 100_000)
            .collect();
        s.write_all(&flood).unwrap();
        s.write_all(&client_frame(0x89, b"last")).unwrap();
        // Reading now: the pongs that made it into the socket buffers and the queue, the
        // latest last; far fewer pongs than pings, and the connection still open.
        let mut pongs = 0;
        loop {
            let (b0, payload) = read_frame(&mut s);
            assert_eq!(b0, 0x8a, "only pongs");
            pongs += 1;
            if payload == b"last" {
                break;
            }
        }
        s.write_all(&client_frame(0x82, b"still here")).unwrap();
        assert_eq!(read_frame(&mut s), (0x82, b"still here".to_vec()));
        assert!(pongs < 100_000, "{pongs} pongs");
    }
}
