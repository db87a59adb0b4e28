//! The Node.js addon: napi-rs conversions over the `move-dispatcher` crate (all logic lives
//! there), and the process's global allocator ([`allocator`]).
//!
//! - `dispatch`, `dispatchFrom` and `dispatchStream` are plain N-API callbacks ([`hot`]):
//!   they borrow the frame as `&[u8]` for the call only, and skip napi-rs's per-call
//!   wrapper, which cost a one-frame call more than the rest of the binding's share.
//! - Each delivery (many rooms' moves, `move_dispatcher::delivery`) is exposed as one
//!   external `ArrayBuffer` over its own buffer, which nothing writes once built; the
//!   finalizer gives the buffer back to the core's pool only after V8 let go of it, and
//!   `releaseDelivery` detaches it first, so no view ever sees it reused.
//! - Workers wake JavaScript through one libuv async handle per dispatcher ([`wake`]: no
//!   lock shared with the JavaScript thread, unlike a `ThreadsafeFunction`; unref'd, so it
//!   never keeps the process alive), sent at most once per batch of news.
//! - One environment cleanup hook per JavaScript thread stops the workers of every core
//!   still open there before the environment goes away (process exit, worker thread
//!   termination). It is registered with the thread's first dispatcher and never removed:
//!   napi-rs frees a hook's data only when the hook runs, so a hook per dispatcher,
//!   removed on close, leaked its data each time.
//! - A finalizer never blocks: dropping a core stops its workers in the background
//!   (`Stopper::stop_in_background`); the cleanup hook joins what is still stopping.
//!
//! # Safety
//! `unsafe` here: exposing a delivery as an external `ArrayBuffer`, and writing the caller's
//! private `Uint32Array` in `pollPacked`; each block says why it is sound.
#![allow(unsafe_code)]
// napi-derive registers exports only outside `cfg(test)`; `clippy --all-targets` checks a
// test build of the crate too, where every export would look unused.
#![cfg_attr(test, allow(dead_code))]

#[macro_use]
extern crate napi_derive;

mod allocator;
#[cfg(feature = "bench")]
mod bench;
mod hot;
mod wake;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;

use napi::bindgen_prelude::*;

use allocator::jemalloc_stats;
use move_dispatcher::alloc::{counting_installed, hot_path_allocations};
use move_dispatcher::core::{Config, Core, RateLimit, View};
use move_dispatcher::delivery::{Moves, Pool};
use move_dispatcher::ingress::{self, Ingress, SendOutcome, Transport};
use move_dispatcher::latency::{Snapshot, LATENCY_LE_NS, SIZE_LE};
use move_dispatcher::outbox::{Delivery, OverloadEvent, Subject};
use move_dispatcher::runtime::{self, Stopper};
use move_dispatcher::verdict::Status as EngineStatus;
use wake::JsWake;

/// Engine configuration, resolved and validated by `src/options.ts`.
#[napi(object)]
pub struct NativeConfig {
    pub worker_threads: u32,
    pub shards: u32,
    pub channel_capacity: u32,
    pub arena_bytes: u32,
    pub room_bytes: u32,
    pub max_payload: u32,
    pub max_batch_moves: u32,
    pub pin_cores: Option<Vec<u32>>,
    pub max_blocking_threads: u32,
    pub thread_name: String,
    /// Queue depth at which a shard is reported overloaded (0 = off).
    pub overload_queue_depth: u32,
    /// Undelivered bytes at which a room is reported overloaded (0 = off).
    pub overload_room_bytes: u32,
}

/// An overload (or recovery) notification.
#[napi(object)]
pub struct NativeOverload {
    /// `"shard"` or `"room"`.
    pub subject: String,
    pub id: u32,
    pub recovered: bool,
    pub depth: f64,
    pub threshold: f64,
    pub p99_wait_ns: f64,
}

/// Counters (numbers are exact up to 2^53).
#[napi(object)]
pub struct NativeCounters {
    pub dispatched: f64,
    pub accepted: f64,
    pub verdicts: Vec<f64>,
    pub reasons: Vec<f64>,
    pub delivered: f64,
    pub rejected: f64,
    pub batches: f64,
    /// `Backpressure` by cause: queue, arena, room budget.
    pub backpressure: Vec<f64>,
}

/// One shard's queue and arena (see `core::ShardStats`).
#[napi(object)]
pub struct NativeShardStats {
    pub queue_depth: f64,
    pub queue_high_water: f64,
    pub arena_capacity: f64,
    pub arena_used: f64,
    pub arena_high_water: f64,
    pub arena_wraps: f64,
}

/// One HDR histogram: summary (in the histogram's unit) and the non-empty buckets as
/// `[highestValue, count, highestValue, count, …]`, enough to rebuild it. The buckets are
/// one typed array: under load a histogram has thousands of non-empty buckets, and a
/// `Vec<f64>` becomes a JavaScript array one `napi_set_element` at a time (~2–3 ms of the
/// JavaScript thread per `stats()` call at 1 M moves/s, which held back every delivery).
#[napi(object)]
pub struct NativeHistogram {
    pub count: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub sum: f64,
    pub buckets: Float64Array,
}

/// The histograms of a snapshot (nanoseconds, except `batch_size` in moves).
#[napi(object)]
pub struct NativeLatencies {
    pub validated: NativeHistogram,
    pub delivered: NativeHistogram,
    pub batch_size: NativeHistogram,
    pub arena_alloc: NativeHistogram,
}

/// Cumulative counts of one histogram at the Prometheus bounds `le`.
#[napi(object)]
pub struct NativePromHistogram {
    pub le: Vec<f64>,
    pub cumulative: Vec<f64>,
    pub count: f64,
    pub sum: f64,
}

/// The histograms for `metrics()` (never reset).
#[napi(object)]
pub struct NativePromHistograms {
    /// One per shard, in shard order.
    pub validated: Vec<NativePromHistogram>,
    pub delivered: NativePromHistogram,
    pub batch_size: NativePromHistogram,
    pub arena_alloc: NativePromHistogram,
}

/// Allocator figures: jemalloc's (when it serves the heap) and the hot-path counter.
#[napi(object)]
pub struct NativeAllocator {
    pub jemalloc: Option<NativeJemalloc>,
    /// Heap allocations made on the hot path since the process started (`None`: not measured).
    pub hot_path_allocations: Option<f64>,
}

/// jemalloc `stats.*`, in bytes.
#[napi(object)]
pub struct NativeJemalloc {
    pub allocated: f64,
    pub active: f64,
    pub resident: f64,
    pub mapped: f64,
    pub retained: f64,
}

fn histogram(s: &Snapshot) -> NativeHistogram {
    let m = s.summary();
    NativeHistogram {
        count: num(m.count),
        min: num(m.min),
        p50: num(m.p50),
        p90: num(m.p90),
        p99: num(m.p99),
        p999: num(m.p999),
        max: num(m.max),
        mean: m.mean,
        sum: m.sum,
        buckets: Float64Array::new(
            s.buckets()
                .into_iter()
                .flat_map(|(v, c)| [num(v), num(c)])
                .collect(),
        ),
    }
}

fn prom(s: &Snapshot, le: &[u64]) -> NativePromHistogram {
    NativePromHistogram {
        le: le.iter().copied().map(num).collect(),
        cumulative: s.cumulative_counts(le).into_iter().map(num).collect(),
        count: num(s.count()),
        sum: s.sum(),
    }
}

/// A room's undelivered bytes.
#[napi(object)]
pub struct NativeRoomStats {
    pub room: u32,
    pub bytes: f64,
}

fn overload(e: &OverloadEvent) -> NativeOverload {
    let (subject, id) = match e.subject {
        Subject::Shard(i) => ("shard", i),
        Subject::Room(r) => ("room", r),
    };
    NativeOverload {
        subject: subject.to_owned(),
        id,
        recovered: e.recovered,
        depth: num(e.depth),
        threshold: num(e.threshold),
        p99_wait_ns: num(e.p99_wait_ns),
    }
}

/// `pollPacked` record kinds (first word of each record).
const REC_FLUSHED: u32 = 1;
const REC_OVERLOAD: u32 = 2;
const REC_GROW: u32 = 3;
const REC_FAILED: u32 = 4;
const REC_DELIVERY: u32 = 5;
const REC_CONNECTION: u32 = 6;

/// A 64-bit value as the two record words `[lo, hi]` (read back by src/native.ts).
#[expect(clippy::cast_possible_truncation, reason = "split into two words")]
fn split_u64(n: u64) -> (u32, u32) {
    (n as u32, (n >> 32) as u32)
}

fn record_words(d: &Delivery) -> usize {
    match d {
        Delivery::Moves(_) | Delivery::Overload(_) => 1,
        Delivery::Flushed { .. } => 3,
        Delivery::Failed { .. } => 2,
        Delivery::Connection(_) => 11,
    }
}

/// Writes `d` at the start of `out` (which has room for it); returns the words written.
fn write_record(e: &mut Entry, d: Delivery, out: &mut [u32]) -> usize {
    match d {
        Delivery::Moves(m) => {
            e.deliveries.push_back(m);
            out[0] = REC_DELIVERY;
            1
        }
        Delivery::Flushed { token } => {
            let (lo, hi) = split_u64(token);
            out[..3].copy_from_slice(&[REC_FLUSHED, lo, hi]);
            3
        }
        Delivery::Overload(ev) => {
            e.events.push(overload(&ev));
            out[0] = REC_OVERLOAD;
            1
        }
        Delivery::Failed { shard, message } => {
            e.failures.push(NativeFailure { shard, message });
            out[..2].copy_from_slice(&[REC_FAILED, shard]);
            2
        }
        Delivery::Connection(c) => {
            let flags =
                u32::from(c.opened) | (u32::from(c.transport) << 8) | (u32::from(c.reason) << 16);
            let (lo, hi) = split_u64(c.id);
            out[..6].copy_from_slice(&[REC_CONNECTION, flags, c.room, c.player, lo, hi]);
            out[6..11].copy_from_slice(&peer_words(c.peer));
            11
        }
    }
}

/// A connection's client address as five words: the port and the family (`4`, `6`, or `0`
/// when unknown) as `port | family << 16`, then the address's 16 bytes as four big-endian
/// words (an IPv4 address in the first word).
fn peer_words(peer: Option<std::net::SocketAddr>) -> [u32; 5] {
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match peer {
        None => [0; 5],
        Some(std::net::SocketAddr::V4(a)) => [
            u32::from(a.port()) | 4 << 16,
            u32::from_be_bytes(a.ip().octets()),
            0,
            0,
            0,
        ],
        Some(std::net::SocketAddr::V6(a)) => {
            let o = a.ip().octets();
            [
                u32::from(a.port()) | 6 << 16,
                word(&o[0..4]),
                word(&o[4..8]),
                word(&o[8..12]),
                word(&o[12..16]),
            ]
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "counters stay far below 2^53")]
fn num(n: u64) -> f64 {
    n as f64
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Cores owned by this JavaScript thread, by id. The hot path (`dispatch*`) is exported as
/// plain functions that take the id: napi-rs class methods register every `&self` /
/// `&mut self` borrow in a global, mutex-guarded table (~200 ns per call here), while a
/// thread-local slot costs a few nanoseconds. Each JavaScript thread (main or worker) has
/// its own slab; a core never leaves the thread that created it.
struct Slab {
    cores: Vec<Option<Entry>>,
    free: Vec<u32>,
}

/// A core and what `pollPacked` has taken from it but not yet handed to JavaScript.
struct Entry {
    core: Core,
    /// Deliveries that did not fit the caller's buffer, in order.
    stash: VecDeque<Delivery>,
    /// Overload events written as a marker, for `takeEvents`, in order.
    events: Vec<NativeOverload>,
    /// Shard failures written as a marker, for `takeFailures`, in order.
    failures: Vec<NativeFailure>,
    /// Push deliveries written as a marker, for `takeDelivery`, in order.
    deliveries: VecDeque<Moves>,
    /// Native ingress, once `listen` started it.
    ingress: Option<Ingress>,
    /// Stopped ingresses whose connections may still be closing (`ingressClosing`).
    stopped: Vec<Ingress>,
    /// The workers' wake-up of this thread; closed when the entry goes (the core's workers,
    /// maybe still stopping in the background, then wake nothing).
    _wake: JsWake,
}

/// `listen`'s options, resolved by `src/ingress.ts`.
#[napi(object)]
pub struct NativeListenOptions {
    pub ws_host: Option<String>,
    pub ws_port: Option<u32>,
    pub tcp_host: Option<String>,
    pub tcp_port: Option<u32>,
    pub grpc_host: Option<String>,
    pub grpc_port: Option<u32>,
    pub ticket_key: Buffer,
    pub max_connections: u32,
    pub idle_timeout_ms: u32,
    pub max_backpressure_bytes: u32,
    pub max_message_bytes: u32,
    pub handshake_timeout_ms: u32,
    /// Absent: no limit (as before the option).
    pub max_handshakes_per_address: Option<u32>,
    pub max_refusals: u32,
    /// Whether JavaScript listens for connection events (absent: yes, as before the option).
    pub connection_events: Option<bool>,
    pub echo_for_testing: Option<bool>,
}

/// The addresses `listen` bound.
#[napi(object)]
pub struct NativeListenInfo {
    pub ws_host: Option<String>,
    pub ws_port: Option<u32>,
    pub tcp_host: Option<String>,
    pub tcp_port: Option<u32>,
    pub grpc_host: Option<String>,
    pub grpc_port: Option<u32>,
}

/// Native ingress counters.
#[napi(object)]
pub struct NativeIngressStats {
    pub open: f64,
    pub accepted_connections: f64,
    pub refused_connections: f64,
    pub closed_connections: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub messages_out: f64,
    pub dropped_out: f64,
}

/// A shard whose worker panicked (see `move_dispatcher::shard`).
#[napi(object)]
pub struct NativeFailure {
    pub shard: u32,
    /// The panic's message.
    pub message: String,
}

thread_local! {
    static CORES: RefCell<Slab> = const { RefCell::new(Slab { cores: Vec::new(), free: Vec::new() }) };
    /// Whether this thread's environment has its cleanup hook ([`stop_all`]).
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// Registers [`stop_all`] for this thread's environment, once.
fn hook_environment(env: Env) -> Result<()> {
    if !HOOKED.get() {
        env.add_env_cleanup_hook((), |()| stop_all())?;
        HOOKED.set(true);
    }
    Ok(())
}

/// The environment is going away: stop the workers of every core still in the slab, and
/// wait for those finalizers stopped in the background, so no worker calls into a dead
/// environment. The cores themselves go with their finalizers.
fn stop_all() {
    let stoppers: Vec<Arc<Stopper>> = CORES
        .try_with(|slab| {
            slab.try_borrow()
                .map(|slab| {
                    slab.cores
                        .iter()
                        .flatten()
                        .map(|e| e.core.stopper())
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    for s in stoppers {
        s.stop(true);
    }
    runtime::join_retired();
    let _ = HOOKED.try_with(|h| h.set(false));
}

fn insert_core(core: Core, wake: JsWake) -> u32 {
    let entry = Entry {
        core,
        _wake: wake,
        stash: VecDeque::new(),
        events: Vec::new(),
        failures: Vec::new(),
        deliveries: VecDeque::new(),
        ingress: None,
        stopped: Vec::new(),
    };
    CORES.with_borrow_mut(|slab| {
        if let Some(id) = slab.free.pop() {
            slab.cores[id as usize] = Some(entry);
            id
        } else {
            slab.cores.push(Some(entry));
            u32_of(slab.cores.len() - 1)
        }
    })
}

fn remove_core(id: u32) -> Option<Core> {
    // `try_with` / `try_borrow_mut`: a finalizer must never panic, whether the thread is
    // tearing down (slab gone) or, in principle, another call holds the slab (none does: no
    // closure below calls into JavaScript).
    CORES
        .try_with(|slab| {
            let mut slab = slab.try_borrow_mut().ok()?;
            let entry = slab.cores.get_mut(id as usize)?.take()?;
            slab.free.push(id);
            Some(entry.core)
        })
        .ok()
        .flatten()
}

/// Runs `f` on core `id`; `None` if it is gone (finalized), the slab is busy, or the thread
/// is tearing down.
fn with_core<R>(id: u32, f: impl FnOnce(&mut Core) -> R) -> Option<R> {
    with_entry(id, |e| f(&mut e.core))
}

/// [`with_core`] with the core's poll stash.
fn with_entry<R>(id: u32, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    CORES
        .try_with(|slab| {
            let mut slab = slab.try_borrow_mut().ok()?;
            slab.cores
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .map(f)
        })
        .ok()
        .flatten()
}

/// Detaches a delivery's `ArrayBuffer` (unless it already is) without its dispatcher: the
/// release of a batch kept past its dispatcher's life (`src/native.ts`). Its memory goes back
/// to its pool from the finalizer, as always.
#[napi(catch_unwind)]
pub fn detach_delivery(buffer: ArrayBuffer) -> Result<()> {
    if !buffer.is_detached()? {
        buffer.detach()?;
    }
    Ok(())
}

/// The dispatcher class behind `src/native.ts`: owns a core in this thread's slab.
#[napi(custom_finalize)]
pub struct NativeDispatcher {
    id: u32,
}

#[napi]
impl NativeDispatcher {
    /// Starts the runtime and workers. `wake` is called (on the JavaScript thread) when
    /// `poll()` has news.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, config: NativeConfig, wake: Function<(), ()>) -> Result<Self> {
        let cfg = Config {
            worker_threads: config.worker_threads as usize,
            shards: config.shards as usize,
            channel_capacity: config.channel_capacity as usize,
            arena_bytes: config.arena_bytes as usize,
            room_bytes: config.room_bytes as usize,
            max_payload: config.max_payload as usize,
            max_batch_moves: config.max_batch_moves,
            pin_cores: config
                .pin_cores
                .map(|v| v.into_iter().map(|c| c as usize).collect()),
            max_blocking_threads: config.max_blocking_threads as usize,
            thread_name: config.thread_name,
            overload_queue_depth: u64::from(config.overload_queue_depth),
            overload_room_bytes: config.overload_room_bytes as usize,
        };
        // The outbox coalesces wake-ups: at most one is pending at a time.
        let (js_wake, waker) = JsWake::new(&env, wake.raw())?;
        let core = Core::new(cfg, Box::new(move || waker.wake()))
            .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
        hook_environment(env)?;
        Ok(Self {
            id: insert_core(core, js_wake),
        })
    }

    /// The id the hot-path functions (`dispatch`, `dispatchFrom`, `dispatchStream`) take.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Opens a room: `auth` 0 = SHA-256, 1 = HMAC-SHA256; `rate_per_second` 0 = no rate limit.
    #[napi(catch_unwind)]
    pub fn open_room(
        &self,
        room: u32,
        auth: u32,
        push: bool,
        rate_per_second: f64,
        rate_burst: f64,
    ) -> u32 {
        let rate = (rate_per_second > 0.0).then_some(RateLimit {
            per_second: rate_per_second,
            burst: rate_burst.max(1.0),
        });
        self.status(|c| c.open_room(room, auth == 1, push, rate))
    }

    /// Registers a player (with its HMAC key in HMAC rooms).
    #[napi(catch_unwind)]
    pub fn join(&self, room: u32, player: u32, key: Option<&[u8]>) -> u32 {
        self.status(|c| c.join(room, player, key))
    }

    /// Forgets a player.
    #[napi(catch_unwind)]
    pub fn leave(&self, room: u32, player: u32) -> u32 {
        self.status(|c| c.leave(room, player))
    }

    /// Closes a room (pending moves are still delivered).
    #[napi(catch_unwind)]
    pub fn close_room(&self, room: u32) -> u32 {
        self.status(|c| c.close_room(room))
    }

    /// Pull rooms: the room's moves and rejections since its last drain, as a delivery of
    /// that one room; `0` when nothing waits, else a `Status` code.
    #[napi(catch_unwind)]
    pub fn drain<'env>(&self, env: &'env Env, room: u32) -> Result<Either<ArrayBuffer<'env>, u32>> {
        match with_core(self.id, |c| {
            c.drain(room).map(|m| (m, Arc::clone(c.pool())))
        }) {
            None => Ok(Either::B(EngineStatus::Closed as u32)),
            Some(Err(status)) => Ok(Either::B(status as u32)),
            Some(Ok((None, _))) => Ok(Either::B(EngineStatus::Ok as u32)),
            Some(Ok((Some(m), pool))) => expose(env, m, pool).map(Either::A),
        }
    }

    /// Pull rooms: every pull room's moves and rejections since its last drain, in one
    /// delivery; `undefined` when nothing waits.
    #[napi(catch_unwind)]
    pub fn drain_all<'env>(&self, env: &'env Env) -> Result<Option<ArrayBuffer<'env>>> {
        match with_core(self.id, |c| {
            c.drain_all().map(|m| (m, Arc::clone(c.pool())))
        })
        .flatten()
        {
            None => Ok(None),
            Some((m, pool)) => expose(env, m, pool).map(Some),
        }
    }

    /// JavaScript is done with a delivery: detaches `buffer` (every view over it then
    /// reads as empty) and, for a push delivery (`shard` < 0xFFFFFFFF), lets its shard
    /// deliver again. Idempotent for the buffer; a shard is released once per delivery.
    #[napi(catch_unwind)]
    pub fn release_delivery(&self, buffer: ArrayBuffer, shard: u32) -> Result<()> {
        if !buffer.is_detached()? {
            buffer.detach()?;
        }
        if shard != move_dispatcher::delivery::PULL {
            with_core(self.id, |c| c.release_delivery(shard));
        }
        Ok(())
    }

    /// Lets `shard` deliver again while JavaScript keeps its push delivery attached (the
    /// delivery's memory stays with its `ArrayBuffer` until V8 lets go of it, so the worker
    /// never writes it); the delivery's own release then passes the pull marker and only
    /// detaches. `close()` uses it for batches a `batches()` loop still holds.
    #[napi(catch_unwind)]
    pub fn free_shard(&self, shard: u32) {
        if shard != move_dispatcher::delivery::PULL {
            with_core(self.id, |c| c.release_delivery(shard));
        }
    }

    /// Whether the room is open or still closing (moves of it still on their way).
    #[napi(catch_unwind)]
    pub fn has_room(&self, room: u32) -> bool {
        with_core(self.id, |c| c.has_room(room)).unwrap_or(false)
    }

    /// Every shard answers `token` (through `poll`) once everything before it is delivered.
    #[napi(catch_unwind)]
    pub fn request_flush(&self, token: f64) {
        #[expect(
            clippy::cast_sign_loss,
            clippy::cast_possible_truncation,
            reason = "tokens are small positive integers"
        )]
        let token = token as u64;
        with_core(self.id, |c| c.request_flush(token));
    }

    /// The counters the guarantees are stated in.
    #[napi(catch_unwind)]
    pub fn counters(&self) -> NativeCounters {
        let c = with_core(self.id, |c| c.counters()).unwrap_or_default();
        NativeCounters {
            dispatched: num(c.dispatched),
            accepted: num(c.accepted),
            verdicts: c.verdicts.iter().copied().map(num).collect(),
            reasons: c.reasons.iter().copied().map(num).collect(),
            delivered: num(c.delivered),
            rejected: num(c.rejected),
            batches: num(c.batches),
            backpressure: c.backpressure.iter().copied().map(num).collect(),
        }
    }

    /// Queue and arena figures per shard.
    #[napi(catch_unwind)]
    pub fn shard_stats(&self) -> Vec<NativeShardStats> {
        with_core(self.id, |c| c.shard_stats())
            .unwrap_or_default()
            .into_iter()
            .map(|s| NativeShardStats {
                queue_depth: num(s.queue_depth),
                queue_high_water: num(s.queue_high_water),
                arena_capacity: num(s.arena_capacity as u64),
                arena_used: num(s.arena_used as u64),
                arena_high_water: num(s.arena_high_water as u64),
                arena_wraps: num(s.arena_wraps),
            })
            .collect()
    }

    /// The `top` rooms with the most undelivered bytes.
    #[napi(catch_unwind)]
    pub fn room_stats(&self, top: u32) -> Vec<NativeRoomStats> {
        with_core(self.id, |c| c.room_stats(top as usize))
            .unwrap_or_default()
            .into_iter()
            .map(|(room, bytes)| NativeRoomStats {
                room,
                bytes: num(bytes as u64),
            })
            .collect()
    }

    /// Latency and size histograms for `stats()`; `reset` starts new intervals after it.
    #[napi(catch_unwind)]
    pub fn latencies(&self, reset: bool) -> Option<NativeLatencies> {
        with_core(self.id, |c| {
            let l = c.latencies(View::Stats, reset);
            NativeLatencies {
                validated: histogram(&l.validated),
                delivered: histogram(&l.delivered),
                batch_size: histogram(&l.batch_size),
                arena_alloc: histogram(&l.arena_alloc),
            }
        })
    }

    /// Histograms for `metrics()`: cumulative counts at fixed bounds, never reset.
    #[napi(catch_unwind)]
    pub fn prom_histograms(&self) -> Option<NativePromHistograms> {
        with_core(self.id, |c| {
            let (by_shard, l) = c.metric_latencies();
            NativePromHistograms {
                validated: by_shard.iter().map(|s| prom(s, &LATENCY_LE_NS)).collect(),
                delivered: prom(&l.delivered, &LATENCY_LE_NS),
                batch_size: prom(&l.batch_size, &SIZE_LE),
                arena_alloc: prom(&l.arena_alloc, &LATENCY_LE_NS),
            }
        })
    }

    /// Starts new high-water intervals.
    #[napi(catch_unwind)]
    pub fn reset_high_water(&self) {
        with_core(self.id, Core::reset_high_water);
    }

    /// From now on frames answer `Closed` and control calls `Status::Closed`; queued work
    /// is still validated and delivered.
    #[napi(catch_unwind)]
    pub fn close_input(&self) {
        with_core(self.id, Core::close_input);
    }

    /// Stops the workers after they finish what is queued. Idempotent.
    #[napi(catch_unwind)]
    pub fn shutdown(&mut self) {
        with_entry(self.id, |e| {
            if let Some(i) = e.ingress.take() {
                i.close();
            }
            e.stopped.clear();
            e.core.shutdown();
        });
    }

    /// Starts native ingress on this dispatcher's runtime; the addresses bound.
    #[napi(catch_unwind)]
    pub fn listen(&self, options: NativeListenOptions) -> Result<NativeListenInfo> {
        let addr =
            |host: &Option<String>, port: Option<u32>| -> Result<Option<std::net::SocketAddr>> {
                let Some(port) = port else { return Ok(None) };
                let host = host.as_deref().unwrap_or("127.0.0.1");
                let port = u16::try_from(port).map_err(|_| {
                    Error::new(Status::InvalidArg, format!("port {port} is out of range"))
                })?;
                let ip: std::net::IpAddr = if host == "localhost" {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    host.parse().map_err(|_| {
                        Error::new(
                            Status::InvalidArg,
                            format!("host {host:?} is not an IP address"),
                        )
                    })?
                };
                Ok(Some(std::net::SocketAddr::new(ip, port)))
            };
        let opts = ingress::Options {
            ws: addr(&options.ws_host, options.ws_port)?,
            tcp: addr(&options.tcp_host, options.tcp_port)?,
            grpc: addr(&options.grpc_host, options.grpc_port)?,
            ticket_key: Vec::from(options.ticket_key),
            max_connections: options.max_connections as usize,
            idle_timeout_ms: u64::from(options.idle_timeout_ms),
            max_backpressure_bytes: options.max_backpressure_bytes as usize,
            max_message_bytes: options.max_message_bytes as usize,
            handshake_timeout_ms: u64::from(options.handshake_timeout_ms),
            max_handshakes_per_address: options.max_handshakes_per_address.unwrap_or(0) as usize,
            max_refusals: options.max_refusals,
            connection_events: options.connection_events.unwrap_or(true),
            echo_for_testing: options.echo_for_testing.unwrap_or(false),
        };
        with_entry(self.id, |e| {
            if e.ingress.is_some() {
                return Err(Error::new(
                    Status::GenericFailure,
                    "this dispatcher is already listening".to_owned(),
                ));
            }
            let parts = e.core.ingress_parts().ok_or_else(|| {
                Error::new(
                    Status::GenericFailure,
                    "the dispatcher is closed".to_owned(),
                )
            })?;
            let i = Ingress::start(parts, opts).map_err(|err| match err {
                ingress::ListenError::Invalid(..) => {
                    Error::new(Status::InvalidArg, err.to_string())
                }
                ingress::ListenError::Bind(..) => {
                    Error::new(Status::GenericFailure, err.to_string())
                }
            })?;
            let info = NativeListenInfo {
                ws_port: i.address(Transport::Ws).map(|a| u32::from(a.port())),
                ws_host: i.address(Transport::Ws).map(|a| a.ip().to_string()),
                tcp_port: i.address(Transport::Tcp).map(|a| u32::from(a.port())),
                tcp_host: i.address(Transport::Tcp).map(|a| a.ip().to_string()),
                grpc_port: i.address(Transport::Grpc).map(|a| u32::from(a.port())),
                grpc_host: i.address(Transport::Grpc).map(|a| a.ip().to_string()),
            };
            e.ingress = Some(i);
            Ok(info)
        })
        .unwrap_or_else(|| {
            Err(Error::new(
                Status::GenericFailure,
                "the dispatcher is gone".to_owned(),
            ))
        })
    }

    /// Stops native ingress: listeners close, connections close (reason `shutdown`) on
    /// their own tasks; `ingressClosing` counts those not closed yet.
    #[napi(catch_unwind)]
    pub fn stop_listening(&self) {
        with_entry(self.id, |e| {
            if let Some(i) = e.ingress.take() {
                i.close();
                e.stopped.push(i);
            }
        });
    }

    /// Connections of stopped ingresses still closing (their close frame, half-close and
    /// linger), so that a close can wait for them before the runtime stops.
    #[napi(catch_unwind)]
    pub fn ingress_closing(&self) -> u32 {
        with_entry(self.id, |e| {
            let mut closing = 0;
            e.stopped.retain(|i| {
                let open = i.counters().open;
                closing += open;
                open > 0
            });
            closing
        })
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Queues `bytes` for a connected player: 0 sent, 1 backpressure, 2 dropped, 3 closed.
    #[napi(catch_unwind)]
    pub fn send(&self, room: u32, player: u32, bytes: &[u8]) -> u32 {
        let r = with_entry(self.id, |e| {
            e.ingress.as_ref().map(|i| i.send(room, player, bytes))
        })
        .flatten()
        .unwrap_or(SendOutcome::Closed);
        match r {
            SendOutcome::Sent => 0,
            SendOutcome::Backpressure => 1,
            SendOutcome::Dropped => 2,
            SendOutcome::Closed => 3,
        }
    }

    /// Queues `bytes` for every connection of `room` but `except`; how many took it.
    #[napi(catch_unwind)]
    pub fn broadcast(&self, room: u32, bytes: &[u8], except: Option<&[u32]>) -> u32 {
        with_entry(self.id, |e| {
            e.ingress
                .as_ref()
                .map(|i| i.broadcast(room, bytes, except.unwrap_or(&[])))
        })
        .flatten()
        .unwrap_or(0)
    }

    /// Closes a player's connection (`player` given) or every connection of `room`; how many.
    /// With `code` or `reason`, that is what a WebSocket's close frame (and a gRPC status
    /// message) says instead of 1000 "kicked" (checked by `src/dispatcher.ts` first).
    ///
    /// # Errors
    /// A code other than 1000 or 3000–4999, or a reason over 123 bytes of UTF-8.
    #[napi(catch_unwind)]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "napi-rs converts a JavaScript string argument to an owned String"
    )]
    pub fn disconnect(
        &self,
        room: u32,
        player: Option<u32>,
        code: Option<u32>,
        reason: Option<String>,
    ) -> Result<u32> {
        let kick = if code.is_none() && reason.is_none() {
            None
        } else {
            let code = code.unwrap_or(1000);
            let code = u16::try_from(code).map_err(|_| {
                Error::new(
                    Status::InvalidArg,
                    format!("code must be 1000 or from 3000 to 4999, got {code}"),
                )
            })?;
            let kick = ingress::Kick::new(code, reason.as_deref().unwrap_or("kicked"))
                .map_err(|(field, why)| Error::new(Status::InvalidArg, format!("{field} {why}")))?;
            Some(kick)
        };
        Ok(with_entry(self.id, |e| {
            e.ingress.as_ref().map(|i| match player {
                Some(p) => u32::from(i.disconnect(room, p, kick)),
                None => u32_of(i.disconnect_room(room, kick)),
            })
        })
        .flatten()
        .unwrap_or(0))
    }

    /// Native ingress figures; `undefined` when not listening.
    #[napi(catch_unwind)]
    pub fn ingress_stats(&self) -> Option<NativeIngressStats> {
        with_entry(self.id, |e| {
            e.ingress.as_ref().map(|i| {
                let c = i.counters();
                NativeIngressStats {
                    open: num(c.open),
                    accepted_connections: num(c.accepted_connections),
                    refused_connections: num(c.refused_connections),
                    closed_connections: num(c.closed_connections),
                    bytes_in: num(c.bytes_in),
                    bytes_out: num(c.bytes_out),
                    messages_out: num(c.messages_out),
                    dropped_out: num(c.dropped_out),
                }
            })
        })
        .flatten()
    }

    /// Test hook: stop (`true`) or resume validation.
    #[napi(catch_unwind)]
    pub fn pause(&self, paused: bool) {
        with_core(self.id, |c| c.pause(paused));
    }

    /// From now on `dispatch` / `dispatchStream` owe their workers the wake-up, paid by
    /// `wakeOwed(id)` (once per event-loop turn, from a microtask) or by any call that waits
    /// on the workers; no more than 64 moves of a shard wait for theirs.
    #[napi(catch_unwind)]
    pub fn defer_wakes(&self, defer: bool) {
        with_core(self.id, |c| c.defer_wakes(defer));
    }

    /// Asks for a wake-up once the worker frees capacity after the last `Backpressure`.
    #[napi(catch_unwind)]
    pub fn want_writable(&self) {
        with_core(self.id, Core::want_writable);
    }

    /// Test hook: the shard's worker panics when it reaches this point of its queue.
    #[napi(catch_unwind)]
    pub fn fail_shard_for_testing(&self, shard: u32) -> u32 {
        self.status(|c| c.fail_shard_for_testing(shard as usize))
    }

    fn status(&self, f: impl FnOnce(&mut Core) -> EngineStatus) -> u32 {
        with_core(self.id, f).unwrap_or(EngineStatus::Closed) as u32
    }
}

impl ObjectFinalize for NativeDispatcher {
    fn finalize(self, _env: Env) -> Result<()> {
        // Dropping the core stops its workers in the background: never blocks.
        drop(remove_core(self.id));
        Ok(())
    }
}

/// The hot path's `dispatch`, `dispatchFrom` and `dispatchStream`: plain N-API callbacks
/// ([`hot`]), set on the module's exports when it loads.
#[napi(module_exports)]
pub fn hot_path_exports(exports: Object, env: Env) -> Result<()> {
    hot::register(env, exports.raw())
}

/// Exposes a delivery to JavaScript: one external `ArrayBuffer` over its buffer, which goes
/// back to `pool` from the finalizer.
fn expose(env: &Env, moves: Moves, pool: Arc<Pool>) -> Result<ArrayBuffer<'_>> {
    let mut bytes = moves.into_bytes();
    let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
    // SAFETY: `ptr` points to `len` initialised bytes of `bytes`, a buffer nothing in Rust
    // writes once built (`move_dispatcher::delivery`); the finalizer owns `bytes`, so they
    // stay valid for the ArrayBuffer's whole life, and they return to `pool` (to be written
    // again) only when V8 has finalized the ArrayBuffer, so no live external buffer ever
    // shares this address. (`len` ≥ 32: a delivery has a header.)
    unsafe { ArrayBuffer::from_external(env, ptr, len, bytes, move |_env, b| pool.put(b)) }
}

/// The delivery path in one call, without an object per event: writes what `poll` returns
/// into `out` as records of `u32` words, and returns the words written (0: nothing new).
/// Records, by their first word:
/// - `1` flush answered: `token` low word, high word;
/// - `2` overload event: the next of `takeEvents(id)`, in order;
/// - `3` the next record needs `out.length >= words` (the second word): grow and call again;
/// - `4` shard failed: `shard`; its message is the next of `takeFailures(id)`;
/// - `5` a push delivery: the next of `takeDelivery(id)`, in order;
/// - `6` a native ingress connection opened or closed: flags (`opened | transport << 8 |
///   reason << 16`), room, player, id low word, high word, then the client's address
///   ([`peer_words`]: five words).
///
/// Deliveries that do not fit wait for the next call, in order.
#[napi(catch_unwind)]
pub fn poll_packed(id: u32, mut out: Uint32ArraySlice) -> u32 {
    // SAFETY: `out` is the engine's private Uint32Array (src/native.ts), never shared with
    // another thread; JavaScript is blocked in this call, so nothing else reads or writes
    // it while the slice lives, and the slice does not outlive the call.
    let out = unsafe { out.as_mut() };
    with_entry(id, |e| {
        if e.stash.is_empty() {
            e.stash.extend(e.core.poll());
        }
        let mut w = 0;
        while let Some(d) = e.stash.front() {
            let need = record_words(d);
            if w + need > out.len() {
                if w == 0 && out.len() >= 2 {
                    out[0] = REC_GROW;
                    out[1] = u32_of(need);
                    w = 2;
                }
                break;
            }
            let Some(d) = e.stash.pop_front() else { break };
            w += write_record(e, d, &mut out[w..]);
        }
        u32_of(w)
    })
    .unwrap_or(0)
}

/// The push delivery `pollPacked` announced (record `5`), in order, as an `ArrayBuffer`;
/// `undefined` when none is waiting.
#[napi(catch_unwind)]
pub fn take_delivery(env: &Env, id: u32) -> Result<Option<ArrayBuffer<'_>>> {
    match with_entry(id, |e| {
        e.deliveries
            .pop_front()
            .map(|m| (m, Arc::clone(e.core.pool())))
    })
    .flatten()
    {
        None => Ok(None),
        Some((m, pool)) => expose(env, m, pool).map(Some),
    }
}

/// Pays the wake-ups `dispatch` / `dispatchStream` owe the workers (see `deferWakes`).
#[napi(catch_unwind)]
pub fn wake_owed(id: u32) {
    with_core(id, Core::wake_owed);
}

/// The overload events `pollPacked` announced (record `2`), in order; empties the list.
#[napi(catch_unwind)]
pub fn take_events(id: u32) -> Vec<NativeOverload> {
    with_entry(id, |e| std::mem::take(&mut e.events)).unwrap_or_default()
}

/// The shard failures `pollPacked` announced (record `4`), in order; empties the list.
#[napi(catch_unwind)]
pub fn take_failures(id: u32) -> Vec<NativeFailure> {
    with_entry(id, |e| std::mem::take(&mut e.failures)).unwrap_or_default()
}

/// Allocator figures (process-wide): jemalloc's statistics (epoch advanced per call) and
/// the hot-path allocation counter.
#[napi(catch_unwind)]
pub fn allocator_stats() -> NativeAllocator {
    NativeAllocator {
        jemalloc: jemalloc_stats().map(|j| NativeJemalloc {
            allocated: num(j.allocated),
            active: num(j.active),
            resident: num(j.resident),
            mapped: num(j.mapped),
            retained: num(j.retained),
        }),
        hot_path_allocations: counting_installed().then(|| num(hot_path_allocations())),
    }
}

/// Calibration for benchmarks: an N-API call that borrows a buffer and does nothing.
#[cfg(feature = "bench")]
#[napi(catch_unwind)]
pub fn empty_call(buf: &[u8]) -> u32 {
    u32_of(buf.len())
}
