//! The dispatcher as the JavaScript thread sees it, and the tokio runtime of its workers.
//!
//! [`Core`] is owned by one thread (the JavaScript thread that created it). Its
//! [`Core::dispatch`] does the O(1) synchronous checks of `docs/architecture.md`, reserves
//! the room's budget, copies the frame into the shard's arena and wakes the worker if it
//! sleeps. It never blocks and allocates nothing (overload marks are only flagged there;
//! their events are published by the next poll, drain or flush).
//!
//! # Ordering
//! Every operation on a room goes to the room's shard with the next sequence number of
//! that shard; the worker takes moves and control operations in that order.
//!
//! # Backpressure
//! A full queue (`channel_capacity` moves in flight), a full arena or a full room budget
//! answers [`Verdict::Backpressure`] and keeps nothing.
//!
//! # Shutdown
//! [`Core::shutdown`] stops the workers and joins them; what is still queued then is
//! dropped, so callers flush first (`Dispatcher.close` does). It is idempotent and also
//! runs on drop. Pull rooms can still be drained afterwards: room memory lives as long as
//! the room (or a JavaScript view of it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::alloc::HotPath;
use crate::arena::{self, Producer};
use crate::auth::PlayerKey;
use crate::frame::{self, FrameError};
use crate::inbox::{Batch, Inbox, Rejection};
use crate::latency::{self, Coarse, Observer, Recorder, Scale, Snapshot};
use crate::outbox::{Delivery, Outbox, OverloadEvent, Subject, Waker};
use crate::shard::{Control, Shared, Worker};
use crate::verdict::{Reason, Status, Verdict};
use crate::IdHashBuilder;

/// Resolved configuration (validated by the TypeScript layer, re-checked by [`Config::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub worker_threads: usize,
    pub shards: usize,
    pub channel_capacity: usize,
    pub arena_bytes: usize,
    pub room_bytes: usize,
    pub max_payload: usize,
    pub max_batch_moves: u32,
    pub pin_cores: Option<Vec<usize>>,
    pub max_blocking_threads: usize,
    pub thread_name: String,
    /// Queue depth (moves) at which a shard is reported overloaded; 0 = never.
    pub overload_queue_depth: u64,
    /// Undelivered bytes at which a room is reported overloaded; 0 = never.
    pub overload_room_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worker_threads: 1,
            shards: 1,
            channel_capacity: 65_536,
            arena_bytes: 8 << 20,
            room_bytes: 256 << 10,
            max_payload: 1024,
            max_batch_moves: 4096,
            pin_cores: None,
            max_blocking_threads: 4,
            thread_name: "move-disp".to_owned(),
            overload_queue_depth: 0,
            overload_room_bytes: 0,
        }
    }
}

/// An option out of range. Names the field; never carries data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "options.{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every field against the ranges documented in `src/types.ts`.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_frame = frame::FRAME_OVERHEAD + self.max_payload;
        let checks: [(&'static str, usize, usize, usize); 8] = [
            ("workerThreads", self.worker_threads, 1, 64),
            ("shards", self.shards, 1, 256),
            ("channelCapacity", self.channel_capacity, 1, 1 << 24),
            ("maxPayload", self.max_payload, 0, frame::MAX_WIRE_PAYLOAD),
            (
                "arenaBytes",
                self.arena_bytes,
                (64 << 10).max(2 * (arena::record_size(max_frame) + 8)),
                1 << 30,
            ),
            (
                "roomBytes",
                self.room_bytes,
                (4 << 10).max(max_frame),
                64 << 20,
            ),
            ("maxBatchMoves", self.max_batch_moves as usize, 1, 1 << 20),
            ("maxBlockingThreads", self.max_blocking_threads, 1, 512),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(ConfigError {
                    field,
                    message: format!("must be in {min}..={max}, got {value}"),
                });
            }
        }
        if self.thread_name.is_empty() || self.thread_name.contains('\0') {
            return Err(ConfigError {
                field: "threadName",
                message: "must be a non-empty string without NUL".to_owned(),
            });
        }
        Ok(())
    }
}

/// Counters kept by the JavaScript thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub dispatched: u64,
    pub accepted: u64,
    pub verdicts: [u64; Verdict::COUNT],
    pub reasons: [u64; Reason::COUNT],
    pub delivered: u64,
    pub rejected: u64,
    pub batches: u64,
    /// `Backpressure` by cause: queue, arena, room budget.
    pub backpressure: [u64; 3],
}

/// Cause of a `Backpressure` verdict (index into [`Counters::backpressure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Pressure {
    Queue = 0,
    Arena = 1,
    Room = 2,
}

/// One shard's queue and arena, as seen by the producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Moves dispatched and not yet taken by the worker.
    pub queue_depth: u64,
    /// Highest queue depth seen at a dispatch (an upper bound: the producer refreshes its
    /// view of the worker's progress every [`DEPTH_REFRESH`] moves, or when the queue looks full).
    pub queue_high_water: u64,
    pub arena_capacity: usize,
    /// Bytes of the arena holding records not yet freed by the worker.
    pub arena_used: usize,
    /// Highest arena use seen at a dispatch (an upper bound, like `queue_high_water`).
    pub arena_high_water: usize,
    /// Times the arena's write position went back to its start.
    pub arena_wraps: u64,
}

/// How often (in moves) the producer refreshes its view of the worker's progress.
pub const DEPTH_REFRESH: u64 = 64;

/// Result of [`Core::dispatch_stream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOutcome {
    pub consumed: usize,
    pub accepted: u32,
    pub rejected: u32,
    pub backpressure: bool,
    pub malformed: bool,
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent properties of a room, not states"
)]
struct Room {
    shard: usize,
    hmac: bool,
    push: bool,
    /// `false` after `closeRoom`: frames answer `UnknownRoom`, pending moves still flow.
    open: bool,
    /// Reported overloaded (or about to be), not yet recovered.
    overloaded: bool,
    /// Dispatch → delivered of this room's moves since its last overload event (for the
    /// event's p99); `None` when room overload events are off.
    waits: Option<Box<Coarse>>,
    /// Members, each with its rate-limit bucket (unused when `rate` is `None`).
    players: HashMap<u32, Bucket, IdHashBuilder>,
    rate: Option<RateLimit>,
    inbox: Arc<Inbox>,
}

/// A room's per-player rate limit: `per_second` tokens a second, at most `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// A player's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// [`crate::clock::now_ns`] of the last refill.
    at: u64,
}

impl Bucket {
    fn full(rate: Option<RateLimit>) -> Self {
        Self {
            tokens: rate.map_or(0.0, |r| r.burst),
            at: crate::clock::now_ns(),
        }
    }

    /// Refills for the time elapsed until `now` ([`crate::clock::now_ns`]); whether a token
    /// is available.
    fn ready(&mut self, rate: RateLimit, now: u64) -> bool {
        #[expect(
            clippy::cast_precision_loss,
            reason = "nanoseconds to seconds; exact below 104 days between two frames"
        )]
        let elapsed = now.saturating_sub(self.at) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = self.at.max(now);
        self.tokens >= 1.0
    }
}

impl Room {
    /// Closed, with nothing in flight, undelivered or out with JavaScript: the room can be
    /// forgotten (a later `openRoom` starts afresh).
    fn forgettable(&self) -> bool {
        !self.open && self.inbox.reserved() == 0 && !self.inbox.is_held()
    }
}

struct ShardHandle {
    shared: Arc<Shared>,
    producer: Producer,
    next_seq: u64,
    /// Moves pushed into the arena (the queue's write count).
    pushed: u64,
    /// Last value read from `shared.consumed` (refreshed when the queue looks full, and
    /// every [`DEPTH_REFRESH`] moves for the high-water marks).
    consumed_cache: u64,
    depth_high_water: u64,
    arena_high_water: usize,
    /// Dispatch → validated, recorded by the worker: one observer for `stats` (reset on
    /// request), one for `metrics` (never reset, as Prometheus histograms must be), one for
    /// overload events (reset at each event of the shard).
    validated: [Observer; 3],
    /// Reported overloaded (or about to be), not yet recovered.
    overloaded: bool,
    /// Crossed its mark inside `dispatch` at this depth; the event is published by the next
    /// `poll`, `drain` or flush (publishing allocates, `dispatch` must not).
    raise_pending: Option<u64>,
    /// `dispatch_stream` pushed to this shard and owes it a wake-up at the end of the call.
    wake_owed: bool,
}

impl ShardHandle {
    /// Copies the frame into the arena; times one allocation in [`ARENA_SAMPLE`]. A single
    /// `dispatch` stamps the move just before, so its stamp doubles as the start of the
    /// allocation; a stream's stamp is the call's, so a sampled push reads the clock itself.
    #[inline]
    fn push(
        &mut self,
        stamp: u64,
        head: &[u8; frame::HEADER_BYTES],
        rest: &[u8],
        stream: bool,
        alloc: &mut Recorder,
    ) -> bool {
        let sampled = self.pushed.is_multiple_of(ARENA_SAMPLE);
        let start = if sampled && stream {
            crate::clock::now_ns()
        } else {
            stamp
        };
        if self
            .producer
            .try_push_parts(self.next_seq, stamp, head, rest)
            .is_err()
        {
            return false;
        }
        if sampled {
            alloc.record(crate::clock::now_ns().saturating_sub(start));
        }
        true
    }

    /// Bookkeeping of one move pushed: counts, sequence, high-water marks.
    #[inline]
    fn count_push(&mut self) {
        self.pushed += 1;
        self.next_seq += 1;
        if self.pushed.is_multiple_of(DEPTH_REFRESH) {
            self.consumed_cache = self.shared.consumed.0.load(Ordering::Acquire);
            self.producer.refresh();
        }
        self.depth_high_water = self.depth_high_water.max(self.pushed - self.consumed_cache);
        self.arena_high_water = self.arena_high_water.max(self.producer.used_upper_bound());
    }

    /// Whether `capacity` moves are in flight. Reads the worker's counter only when the
    /// cached one says full, so the hot path does not share a cache line with the worker.
    fn queue_full(&mut self, capacity: u64) -> bool {
        if self.pushed - self.consumed_cache < capacity {
            return false;
        }
        self.consumed_cache = self.shared.consumed.0.load(Ordering::Acquire);
        self.pushed - self.consumed_cache >= capacity
    }
}

/// The runtime and the means to stop it; shared with the environment cleanup hook.
pub struct Stopper {
    /// `None` once stopped, and for a core whose workers run inline.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    stopped: AtomicBool,
    shards: Vec<Arc<Shared>>,
    outbox: Arc<Outbox>,
}

impl Stopper {
    /// Stops the workers and joins their threads (tasks parked at that moment are dropped
    /// with whatever they still had queued). `silent`: do not wake JavaScript any more (its
    /// environment is going away).
    pub fn stop(&self, silent: bool) {
        if silent {
            self.outbox.disable_waker();
        }
        self.stopped.store(true, Ordering::SeqCst);
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(runtime) = runtime else { return };
        for s in &self.shards {
            s.paused.store(false, Ordering::SeqCst);
            s.stop.store(true, Ordering::SeqCst);
            s.poke();
        }
        runtime.shutdown_timeout(Duration::from_secs(5));
    }

    /// Whether the workers have been stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// The dispatcher, JavaScript-thread side.
pub struct Core {
    cfg: Config,
    rooms: HashMap<u32, Room, IdHashBuilder>,
    shards: Vec<ShardHandle>,
    outbox: Arc<Outbox>,
    stopper: Arc<Stopper>,
    closed: bool,
    counters: Counters,
    /// The inbox of the room the last `drain` forgot: JavaScript may still need to expose
    /// the memory of that final batch (see [`Core::inbox`]).
    retired: Option<Arc<Inbox>>,
    /// Histograms recorded on the JavaScript thread.
    delivered: Histo,
    batch_size: Histo,
    arena_alloc: Histo,
    /// Rooms reported overloaded and not yet recovered, each with the depth at which it
    /// crossed its mark while that event is still to be published (on drain, poll and
    /// flush). Ids are distinct; spare capacity for every known room is kept, so `dispatch`
    /// never grows it.
    overloaded_rooms: Vec<(u32, Option<u64>)>,
    /// The workers of a core built by [`Core::new_inline`], run by [`Core::step_workers`]
    /// on the caller's thread; empty when they run on the runtime.
    #[cfg(any(test, feature = "inline-workers"))]
    inline: Vec<Worker>,
}

/// A recorder with its observers (`stats`, `metrics`, overload events).
struct Histo {
    recorder: Recorder,
    observers: [Observer; 3],
}

impl Histo {
    fn new(scale: Scale) -> Self {
        let (recorder, observer) = latency::pair(scale);
        Self {
            recorder,
            observers: [observer.clone(), observer.clone(), observer],
        }
    }
}

/// Which observers a snapshot reads: `stats()` intervals or the never-reset `metrics()` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Stats = 0,
    Metrics = 1,
    /// Internal: the interval since a subject's last overload event.
    Overload = 2,
}

/// The histograms of one snapshot.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Dispatch → validated (ns), all shards merged.
    pub validated: Snapshot,
    /// Dispatch → handed to JavaScript by `drain()` or a push delivery (ns).
    pub delivered: Snapshot,
    /// Moves per delivered batch.
    pub batch_size: Snapshot,
    /// Arena allocation (the bump-pointer push of a record), ns; every 64th dispatch.
    pub arena_alloc: Snapshot,
}

/// One in how many dispatches times its arena allocation.
pub const ARENA_SAMPLE: u64 = 64;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cfg", &self.cfg)
            .field("rooms", &self.rooms.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Moves or controls a worker takes per turn before it checks for deliveries and yields.
const TURN: usize = 256;
/// Empty polls a worker spins through before it parks.
const SPINS: u32 = 200;
/// The longest a busy worker (one whose queue does not run dry) holds validated moves
/// before it delivers them anyway. Smaller costs more wake-ups of JavaScript and smaller
/// batches; larger adds latency under sustained load.
const HOLD_NS: u64 = 100_000;

impl Core {
    /// Starts the workers. `waker` is called (from worker threads) when [`Core::poll`] has news.
    ///
    /// # Errors
    /// A field out of range, or the runtime could not start (threads refused by the OS).
    pub fn new(cfg: Config, waker: Waker) -> Result<Self, ConfigError> {
        Self::build(cfg, waker, false)
    }

    /// A core without a runtime: its workers run only inside [`Core::step_workers`], on the
    /// caller's thread, so that every delivery happens at a point the caller chooses (the
    /// `dispatch` fuzz target runs thousands of inputs a second this way). `worker_threads`,
    /// `pin_cores` and `max_blocking_threads` are ignored. A testing hook: only with the
    /// `inline-workers` feature, never in the addon.
    ///
    /// # Errors
    /// A field out of range.
    #[cfg(any(test, feature = "inline-workers"))]
    pub fn new_inline(cfg: Config, waker: Waker) -> Result<Self, ConfigError> {
        Self::build(cfg, waker, true)
    }

    fn build(cfg: Config, waker: Waker, inline: bool) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let outbox = Arc::new(Outbox::new(waker));
        let runtime = if inline {
            None
        } else {
            Some(build_runtime(&cfg)?)
        };
        let mut parked = Vec::new();
        let mut shards = Vec::with_capacity(cfg.shards);
        for _ in 0..cfg.shards {
            let shared = Arc::new(Shared::default());
            let (producer, consumer) =
                arena::try_ring(cfg.arena_bytes).map_err(|e| ConfigError {
                    field: "arenaBytes",
                    message: format!("could not allocate {} bytes for a shard arena", e.bytes),
                })?;
            let (validated, observer) = latency::pair(Scale::LATENCY_NS);
            let worker = Worker::new(
                Arc::clone(&shared),
                consumer,
                Arc::clone(&outbox),
                cfg.max_batch_moves,
                validated,
            );
            match &runtime {
                Some(rt) => drop(rt.spawn(run_worker(worker))),
                None => parked.push(worker),
            }
            shards.push(ShardHandle {
                shared,
                producer,
                next_seq: 0,
                pushed: 0,
                consumed_cache: 0,
                depth_high_water: 0,
                arena_high_water: 0,
                validated: [observer.clone(), observer.clone(), observer],
                overloaded: false,
                raise_pending: None,
                wake_owed: false,
            });
        }
        let stopper = Arc::new(Stopper {
            runtime: Mutex::new(runtime),
            stopped: AtomicBool::new(false),
            shards: shards.iter().map(|s| Arc::clone(&s.shared)).collect(),
            outbox: Arc::clone(&outbox),
        });
        Ok(Self {
            cfg,
            rooms: HashMap::default(),
            shards,
            outbox,
            stopper,
            closed: false,
            counters: Counters::default(),
            retired: None,
            delivered: Histo::new(Scale::LATENCY_NS),
            batch_size: Histo::new(Scale::SIZE),
            arena_alloc: Histo::new(Scale::LATENCY_NS),
            overloaded_rooms: Vec::new(),
            #[cfg(any(test, feature = "inline-workers"))]
            inline: parked,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The handle that stops the workers (for environment cleanup hooks).
    pub fn stopper(&self) -> Arc<Stopper> {
        Arc::clone(&self.stopper)
    }

    /// Checks `frame` and queues it. `sender`: the player id the connection proved.
    pub fn dispatch(&mut self, frame: &[u8], sender: Option<u32>) -> Verdict {
        // The hot path: dispatch must not allocate (counted by the global allocator).
        let _hot = HotPath::enter();
        let v = self.dispatch_inner(frame, sender, None);
        self.counters.dispatched += 1;
        self.counters.verdicts[v as usize] += 1;
        v
    }

    /// `chunk_stamp`: `Some` inside `dispatch_stream` — the call's one clock reading, used as
    /// every frame's dispatch stamp (they arrived together), and the worker's wake-up is
    /// owed to the end of the call instead of paid per frame.
    #[inline]
    fn dispatch_inner(
        &mut self,
        bytes: &[u8],
        sender: Option<u32>,
        chunk_stamp: Option<u64>,
    ) -> Verdict {
        if self.closed {
            return Verdict::Closed;
        }
        let (head, h) = match snapshot_header(bytes, self.cfg.max_payload) {
            Ok(x) => x,
            Err(v) => return v,
        };
        let rest = bytes.get(frame::HEADER_BYTES..).unwrap_or_default();
        let Some(room) = self.rooms.get_mut(&h.room).filter(|r| r.open) else {
            return Verdict::UnknownRoom;
        };
        if h.is_hmac() != room.hmac {
            return Verdict::AuthMismatch;
        }
        if sender.is_some_and(|s| s != h.player) {
            return Verdict::WrongSender;
        }
        // Rate limit: keyed by the proven sender (the frame's player when none is given);
        // frames of non-members are not limited here (validation rejects them).
        // One clock read per move: the rate limit's `now` is the dispatch stamp.
        let mut now = chunk_stamp;
        let mut bucket = None;
        if let Some(rate) = room.rate {
            if let Some(b) = room.players.get_mut(&sender.unwrap_or(h.player)) {
                let t = now.unwrap_or_else(crate::clock::now_ns);
                now = Some(t);
                if !b.ready(rate, t) {
                    return Verdict::RateLimited;
                }
                bucket = Some(b);
            }
        }
        let shard = &mut self.shards[room.shard];
        // Causes in the documented order: queue, arena, room budget.
        let pressure = if shard.queue_full(self.cfg.channel_capacity as u64) {
            Some(Pressure::Queue)
        } else if !shard.producer.fits(bytes.len()) {
            Some(Pressure::Arena)
        } else if !room.inbox.try_reserve(bytes.len()) {
            Some(Pressure::Room)
        } else {
            None
        };
        if let Some(p) = pressure {
            self.counters.backpressure[p as usize] += 1;
            // Backpressure may come before a mark is reached (a small arena), or at it.
            mark_shard(shard, self.cfg.overload_queue_depth, &self.outbox);
            mark_room(
                room,
                h.room,
                self.cfg.overload_room_bytes,
                &mut self.overloaded_rooms,
                &self.outbox,
                &shard.shared,
            );
            return Verdict::Backpressure;
        }
        let stamp = now.unwrap_or_else(crate::clock::now_ns);
        if !shard.push(
            stamp,
            &head,
            rest,
            chunk_stamp.is_some(),
            &mut self.arena_alloc.recorder,
        ) {
            debug_assert!(false, "fits() said the record fits");
            room.inbox.unreserve(bytes.len());
            return Verdict::Backpressure;
        }
        if let Some(b) = bucket {
            b.tokens -= 1.0;
        }
        shard.count_push();
        if chunk_stamp.is_some() {
            shard.wake_owed = true;
        } else {
            shard.shared.wake();
        }
        // Overload marks: only flagged here; events are published (and recovery checked) on
        // drain, poll and flush, off the hot path.
        let mark = self.cfg.overload_queue_depth;
        if mark > 0 && !shard.overloaded && shard.pushed - shard.consumed_cache >= mark {
            mark_shard(shard, mark, &self.outbox);
        }
        mark_room(
            room,
            h.room,
            self.cfg.overload_room_bytes,
            &mut self.overloaded_rooms,
            &self.outbox,
            &shard.shared,
        );
        self.counters.accepted += 1;
        Verdict::Accepted
    }

    /// Dispatches back-to-back frames from `chunk`. Stops before a partial frame, at a frame
    /// that meets backpressure (not consumed), or at bytes that are not a header (`malformed`).
    pub fn dispatch_stream(&mut self, chunk: &[u8], sender: Option<u32>) -> StreamOutcome {
        let mut out = StreamOutcome::default();
        // One clock reading for the chunk: its frames arrived together.
        let stamp = crate::clock::now_ns();
        loop {
            let rest = chunk.get(out.consumed..).unwrap_or_default();
            let len = match frame::read_header(rest) {
                Ok(h) => h.frame_len(),
                Err(FrameError::Short { .. }) => break,
                Err(_) => {
                    out.malformed = true;
                    self.counters.dispatched += 1;
                    self.counters.verdicts[Verdict::Malformed as usize] += 1;
                    break;
                }
            };
            let Some(frame) = rest.get(..len) else { break };
            let v = {
                let _hot = HotPath::enter();
                self.dispatch_inner(frame, sender, Some(stamp))
            };
            self.counters.dispatched += 1;
            self.counters.verdicts[v as usize] += 1;
            match v {
                Verdict::Accepted => out.accepted += 1,
                Verdict::Backpressure => {
                    out.backpressure = true;
                    break;
                }
                _ => out.rejected += 1,
            }
            out.consumed += len;
        }
        // The wake-ups owed: after every push of the call, as `dispatch` does after one.
        for s in &mut self.shards {
            if std::mem::take(&mut s.wake_owed) {
                s.shared.wake();
            }
        }
        out
    }

    fn push_control(&mut self, shard: usize, control: Control) {
        let s = &mut self.shards[shard];
        s.shared.push_control(s.next_seq, control);
        s.next_seq += 1;
        s.shared.wake();
    }

    /// Opens `room` (or reopens a closing one, keeping its pending moves ahead).
    /// A closing room cannot change its delivery mode (`WrongDelivery`): its pending moves
    /// are on their way by the old one.
    pub fn open_room(
        &mut self,
        room: u32,
        hmac: bool,
        push: bool,
        rate: Option<RateLimit>,
    ) -> Status {
        if self.closed {
            return Status::Closed;
        }
        let shard = room as usize % self.cfg.shards;
        let inbox = match self.rooms.get_mut(&room) {
            Some(r) if r.open => return Status::RoomExists,
            Some(r) if r.push != push => return Status::WrongDelivery,
            Some(r) => {
                r.open = true;
                r.hmac = hmac;
                r.push = push;
                r.rate = rate;
                Arc::clone(&r.inbox)
            }
            None => {
                let inbox = Arc::new(Inbox::new(room, self.cfg.room_bytes));
                self.rooms.insert(
                    room,
                    Room {
                        shard,
                        hmac,
                        push,
                        open: true,
                        // A room forgotten while overloaded comes back overloaded: its
                        // recovery is still to be reported, once.
                        overloaded: self.overloaded_rooms.iter().any(|e| e.0 == room),
                        waits: (self.cfg.overload_room_bytes > 0).then(Box::default),
                        players: HashMap::default(),
                        rate,
                        inbox: Arc::clone(&inbox),
                    },
                );
                // Room for every known room to be flagged inside `dispatch` without growing.
                self.overloaded_rooms.reserve(self.rooms.len());
                inbox
            }
        };
        self.push_control(shard, Control::OpenRoom { inbox, hmac, push });
        Status::Ok
    }

    fn open_room_mut(&mut self, room: u32) -> Result<&mut Room, Status> {
        if self.closed {
            return Err(Status::Closed);
        }
        self.rooms
            .get_mut(&room)
            .filter(|r| r.open)
            .ok_or(Status::UnknownRoom)
    }

    /// Registers `player` (again: replaces the key, keeps the window).
    pub fn join(&mut self, room: u32, player: u32, key: Option<&[u8]>) -> Status {
        let r = match self.open_room_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if key.is_some() != r.hmac {
            return Status::WrongDelivery;
        }
        let Ok(key) = key.map(PlayerKey::new).transpose() else {
            return Status::WrongDelivery;
        };
        // Joining again (key rotation) keeps the bucket: it cannot refill a rate limit.
        let rate = r.rate;
        r.players
            .entry(player)
            .or_insert_with(|| Bucket::full(rate));
        let shard = r.shard;
        self.push_control(
            shard,
            Control::Join {
                room,
                player,
                key: key.map(Box::new),
            },
        );
        Status::Ok
    }

    /// Forgets `player` (its key is zeroised when the worker drops it).
    pub fn leave(&mut self, room: u32, player: u32) -> Status {
        let r = match self.open_room_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if r.players.remove(&player).is_none() {
            return Status::UnknownPlayer;
        }
        let shard = r.shard;
        self.push_control(shard, Control::Leave { room, player });
        Status::Ok
    }

    /// Closes `room`: frames answer `UnknownRoom` from now on; pending moves are delivered.
    pub fn close_room(&mut self, room: u32) -> Status {
        let r = match self.open_room_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        r.open = false;
        r.players.clear();
        let shard = r.shard;
        if r.forgettable() {
            self.rooms.remove(&room);
        }
        self.push_control(shard, Control::CloseRoom { room });
        Status::Ok
    }

    /// Pull rooms: everything validated since the last drain.
    ///
    /// # Errors
    /// `UnknownRoom` (never opened, or closed and fully drained: then it is forgotten),
    /// `WrongDelivery` for push rooms.
    pub fn drain(&mut self, room: u32) -> Result<(Batch, Arc<Inbox>), Status> {
        let r = self.rooms.get(&room).ok_or(Status::UnknownRoom)?;
        if r.push {
            return Err(Status::WrongDelivery);
        }
        let inbox = Arc::clone(&r.inbox);
        let mut batch = inbox.drain();
        if batch.count > 0 || !batch.rejections.is_empty() {
            self.count_delivery(&mut batch);
        }
        // The stamps are read; hand them back for reuse (the rejections go with the batch,
        // and come back through `recycle_rejections`).
        inbox.recycle(Vec::new(), std::mem::take(&mut batch.stamps));
        self.overload_events();
        self.retired = None;
        if self.rooms.get(&room).is_some_and(Room::forgettable) {
            self.rooms.remove(&room);
            self.retired = Some(Arc::clone(&inbox));
        }
        Ok((batch, inbox))
    }

    /// Counts a batch handed to JavaScript and records its latencies (from each move's
    /// dispatch stamp to now) and size.
    fn count_delivery(&mut self, batch: &mut Batch) {
        self.counters.delivered += u64::from(batch.count);
        self.counters.batches += 1;
        if batch.count > 0 {
            let now = crate::clock::now_ns();
            for &stamp in &batch.stamps {
                self.delivered.recorder.record(now.saturating_sub(stamp));
            }
            self.batch_size.recorder.record(u64::from(batch.count));
            if let Some(waits) = self
                .rooms
                .get_mut(&batch.room)
                .and_then(|r| r.waits.as_deref_mut())
            {
                for &stamp in &batch.stamps {
                    waits.record(now.saturating_sub(stamp));
                }
            }
        }
    }

    /// The latency and size histograms, shards merged. `reset` (with [`View::Stats`])
    /// starts new intervals.
    pub fn latencies(&mut self, view: View, reset: bool) -> Latencies {
        let v = view as usize;
        let mut validated = Snapshot::empty(Scale::LATENCY_NS);
        for s in &mut self.shards {
            // Same scale by construction: adding cannot fail.
            let _ = s.validated[v].snapshot_into(&mut validated, reset);
        }
        self.thread_latencies(view, reset, validated)
    }

    /// The never-reset histograms for `metrics()`: dispatch → validated per shard (in shard
    /// order) and the others.
    pub fn metric_latencies(&mut self) -> (Vec<Snapshot>, Latencies) {
        let v = View::Metrics as usize;
        let by_shard = self
            .shards
            .iter_mut()
            .map(|s| s.validated[v].snapshot(false))
            .collect();
        let empty = Snapshot::empty(Scale::LATENCY_NS);
        (by_shard, self.thread_latencies(View::Metrics, false, empty))
    }

    fn thread_latencies(&mut self, view: View, reset: bool, validated: Snapshot) -> Latencies {
        let v = view as usize;
        Latencies {
            validated,
            delivered: self.delivered.observers[v].snapshot(reset),
            batch_size: self.batch_size.observers[v].snapshot(reset),
            arena_alloc: self.arena_alloc.observers[v].snapshot(reset),
        }
    }

    /// Whether `room` is open or still has moves on their way (closing).
    pub fn has_room(&self, room: u32) -> bool {
        self.rooms.contains_key(&room)
    }

    /// The inbox of `room` (open or closing, or forgotten by the last `drain`), to expose
    /// its memory.
    pub fn inbox(&self, room: u32) -> Option<&Arc<Inbox>> {
        self.rooms
            .get(&room)
            .map(|r| &r.inbox)
            .or_else(|| self.retired.as_ref().filter(|i| i.room() == room))
    }

    /// Push rooms: JavaScript is done with the room's outstanding batch.
    pub fn release(&mut self, room: u32) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        if r.inbox.release_push() {
            let s = &self.shards[r.shard].shared;
            s.kick.store(true, Ordering::SeqCst);
            s.poke();
        } else if r.forgettable() {
            self.rooms.remove(&room);
        }
    }

    /// Asks every shard to answer `token` once everything queued before is delivered.
    pub fn request_flush(&mut self, token: u64) {
        self.overload_events();
        if self.stopper.is_stopped() {
            self.outbox.expect_flush(token, 1);
            self.outbox.publish(&mut Vec::new(), &[token]);
            return;
        }
        self.outbox.expect_flush(token, self.shards.len());
        for shard in 0..self.shards.len() {
            self.push_control(shard, Control::Flush { token });
        }
    }

    /// Deliveries ready for JavaScript, in order; counts delivered push moves.
    pub fn poll(&mut self) -> Vec<Delivery> {
        let mut items = self.outbox.take();
        self.count_batches(&mut items);
        // After the batches: their moves count in the rooms' waits and depths.
        self.overload_events();
        // The events just published, and whatever the workers delivered meanwhile.
        let mut more = self.outbox.take();
        self.count_batches(&mut more);
        items.append(&mut more);
        items
    }

    fn count_batches(&mut self, items: &mut [Delivery]) {
        for d in items {
            if let Delivery::Batch(b) = d {
                self.count_delivery(b);
                if let Some(inbox) = self.inbox(b.room) {
                    inbox.recycle(Vec::new(), std::mem::take(&mut b.stamps));
                }
            }
        }
    }

    /// Hands back a delivered batch's rejection list (read and emptied by the caller) to
    /// its room's inbox, so the worker reuses the allocation.
    pub fn recycle_rejections(&self, room: u32, rejections: Vec<Rejection>) {
        if rejections.capacity() > 0 {
            if let Some(inbox) = self.inbox(room) {
                inbox.recycle(rejections, Vec::new());
            }
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        for s in &self.shards {
            for (i, r) in s.shared.reasons.iter().enumerate() {
                c.reasons[i] += r.load(Ordering::Relaxed);
            }
        }
        c.rejected = c.reasons.iter().sum();
        c
    }

    /// Queue and arena figures per shard.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .map(|s| ShardStats {
                queue_depth: s.pushed - s.shared.consumed.0.load(Ordering::Acquire),
                queue_high_water: s.depth_high_water,
                arena_capacity: s.producer.capacity(),
                arena_used: s.producer.used(),
                arena_high_water: s.arena_high_water,
                arena_wraps: s.producer.wraps(),
            })
            .collect()
    }

    /// Starts new high-water intervals (after a `stats({ reset: true })` snapshot).
    pub fn reset_high_water(&mut self) {
        for s in &mut self.shards {
            s.depth_high_water = 0;
            s.arena_high_water = 0;
        }
    }

    /// The `top` rooms with the most undelivered bytes (in flight, validated, or rejected and
    /// not yet handed to JavaScript), largest first; rooms holding nothing are left out.
    pub fn room_stats(&self, top: usize) -> Vec<(u32, usize)> {
        let mut v: Vec<(u32, usize)> = self
            .rooms
            .iter()
            .map(|(&id, r)| (id, r.inbox.reserved()))
            .filter(|&(_, bytes)| bytes > 0)
            .collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(top);
        v
    }

    /// Stops (`true`) or resumes validation; a test hook for filling queues deterministically.
    /// Pausing waits (up to a second) until every worker has acknowledged, so no move
    /// dispatched after the call is validated before `pause(false)`.
    pub fn pause(&mut self, paused: bool) {
        for s in &self.shards {
            if !paused {
                s.shared.paused_ack.store(false, Ordering::SeqCst);
            }
            s.shared.paused.store(paused, Ordering::SeqCst);
            s.shared.poke();
        }
        if !paused || self.stopper.is_stopped() || self.runs_inline() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self
            .shards
            .iter()
            .any(|s| !s.shared.paused_ack.load(Ordering::SeqCst))
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }

    /// Publishes the overload events flagged inside `dispatch` (with the p99 wait since the
    /// subject's previous event), then the recoveries: a shard whose queue fell to half its
    /// mark, a room whose undelivered bytes did (or that was forgotten). Runs on drain,
    /// poll and flush.
    fn overload_events(&mut self) {
        let mark = self.cfg.overload_queue_depth;
        for (i, s) in self.shards.iter_mut().enumerate() {
            let subject = Subject::Shard(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(depth) = s.raise_pending.take() {
                let p99_wait_ns =
                    s.validated[View::Overload as usize].value_at_quantile(0.99, true);
                self.outbox.publish_event(OverloadEvent {
                    subject,
                    recovered: false,
                    depth,
                    threshold: mark,
                    p99_wait_ns,
                });
            }
            if s.overloaded {
                s.consumed_cache = s.shared.consumed.0.load(Ordering::Acquire);
                let depth = s.pushed - s.consumed_cache;
                if depth <= mark / 2 {
                    s.overloaded = false;
                    let p99_wait_ns =
                        s.validated[View::Overload as usize].value_at_quantile(0.99, true);
                    self.outbox.publish_event(OverloadEvent {
                        subject,
                        recovered: true,
                        depth,
                        threshold: mark,
                        p99_wait_ns,
                    });
                }
            }
        }
        let threshold = self.cfg.overload_room_bytes;
        let mut k = 0;
        while k < self.overloaded_rooms.len() {
            let (id, pending) = self.overloaded_rooms[k];
            let room = self.rooms.get_mut(&id);
            let bytes = room.as_ref().map_or(0, |r| r.inbox.reserved());
            let p99 = |room: Option<&mut Room>| {
                room.and_then(|r| r.waits.as_deref_mut()).map_or(0, |w| {
                    let p = w.value_at_quantile(0.99);
                    w.clear();
                    p
                })
            };
            let event = |recovered, depth| OverloadEvent {
                subject: Subject::Room(id),
                recovered,
                depth,
                threshold: threshold as u64,
                p99_wait_ns: 0,
            };
            if let Some(depth) = pending {
                self.overloaded_rooms[k].1 = None;
                self.outbox.publish_event(OverloadEvent {
                    p99_wait_ns: p99(room),
                    ..event(false, depth)
                });
                continue; // checked for recovery on the next pass of the loop
            }
            if bytes > threshold / 2 {
                k += 1;
                continue;
            }
            self.overloaded_rooms.swap_remove(k);
            if let Some(r) = room.as_deref() {
                debug_assert!(r.overloaded);
            }
            let mut room = room;
            if let Some(r) = room.as_deref_mut() {
                r.overloaded = false;
            }
            self.outbox.publish_event(OverloadEvent {
                p99_wait_ns: p99(room),
                ..event(true, bytes as u64)
            });
        }
    }

    /// Refuses new frames (`Closed`) and control calls from now on; queued work still runs.
    pub fn close_input(&mut self) {
        self.closed = true;
    }

    /// Refuses new frames, stops the workers and joins them, then drops what only they
    /// needed: the arenas and the wake-up callback (which holds a JavaScript function).
    /// Call after a flush to have everything queued delivered first (`Dispatcher.close`).
    pub fn shutdown(&mut self) {
        self.closed = true;
        self.stopper.stop(false);
        #[cfg(any(test, feature = "inline-workers"))]
        self.inline.clear();
        self.outbox.drop_waker();
        for s in &mut self.shards {
            // A minimal ring in place of the arena frees its memory; nothing pushes any more.
            if let Ok((p, _)) = arena::try_ring(0) {
                s.producer = p;
            }
        }
    }

    /// Whether [`Core::shutdown`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the workers run inside [`Core::step_workers`] ([`Core::new_inline`]).
    #[cfg(any(test, feature = "inline-workers"))]
    fn runs_inline(&self) -> bool {
        !self.inline.is_empty()
    }

    #[cfg(not(any(test, feature = "inline-workers")))]
    #[allow(clippy::unused_self)]
    fn runs_inline(&self) -> bool {
        false
    }

    /// A core built by [`Core::new_inline`]: runs each unpaused worker on this thread until
    /// its queue is empty, delivering as the runtime's worker loop does — when a push room
    /// fills a batch, after a released batch (`kick`) at the end of a turn, and when the
    /// queue runs dry — except that it never delivers on elapsed time, so the outcome
    /// depends only on the calls made. Returns the moves and controls processed; 0 for a
    /// core whose workers run on the runtime, or once shut down.
    #[cfg(any(test, feature = "inline-workers"))]
    pub fn step_workers(&mut self) -> usize {
        let mut total = 0;
        for w in &mut self.inline {
            let shared = Arc::clone(w.shared());
            w.outbox().serve_wake_request();
            if shared.paused.load(Ordering::Acquire) || shared.stop.load(Ordering::Acquire) {
                continue;
            }
            loop {
                let n = w.run(TURN);
                total += n;
                if n < TURN {
                    w.deliver();
                    break;
                }
                if shared.kick.load(Ordering::Acquire) {
                    w.deliver();
                }
            }
        }
        total
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.closed = true;
        self.stopper.stop(true);
    }
}

/// One read of the frame's header, checked. JavaScript may share the frame's memory with
/// another thread (a `SharedArrayBuffer` view): every decision of `dispatch`, and the header
/// the worker validates, come from this copy; torn payload or tag bytes fail the tag check
/// (a rejection, accounted), never the accounting.
#[inline]
fn snapshot_header(
    bytes: &[u8],
    max_payload: usize,
) -> Result<([u8; frame::HEADER_BYTES], frame::Header), Verdict> {
    let mut head = [0_u8; frame::HEADER_BYTES];
    let src = bytes.get(..frame::HEADER_BYTES).ok_or(Verdict::Malformed)?;
    head.copy_from_slice(src);
    match frame::check_header(&head, bytes.len(), max_payload) {
        Ok(h) => Ok((head, h)),
        Err(FrameError::Oversize { .. }) => Err(Verdict::Oversize),
        Err(_) => Err(Verdict::Malformed),
    }
}

/// Flags `shard` overloaded when its (fresh) depth reaches `mark` (0 = off) and asks for a
/// wake-up, so that JavaScript polls and the event is published. Allocates nothing.
fn mark_shard(shard: &mut ShardHandle, mark: u64, outbox: &Outbox) {
    if mark == 0 || shard.overloaded {
        return;
    }
    shard.consumed_cache = shard.shared.consumed.0.load(Ordering::Acquire);
    let depth = shard.pushed - shard.consumed_cache;
    if depth >= mark {
        shard.overloaded = true;
        shard.raise_pending = Some(depth);
        outbox.request_wake();
        shard.shared.poke();
    }
}

/// Flags `room` overloaded when its undelivered bytes reach `mark` (0 = off), like
/// [`mark_shard`]. `list` has spare capacity for it (see `Core::overloaded_rooms`).
fn mark_room(
    room: &mut Room,
    id: u32,
    mark: usize,
    list: &mut Vec<(u32, Option<u64>)>,
    outbox: &Outbox,
    shared: &Shared,
) {
    if mark == 0 || room.overloaded {
        return;
    }
    let bytes = room.inbox.reserved();
    if bytes >= mark {
        room.overloaded = true;
        debug_assert!(list.len() < list.capacity(), "no spare capacity");
        list.push((id, Some(bytes as u64)));
        outbox.request_wake();
        shared.poke();
    }
}

fn build_runtime(cfg: &Config) -> Result<tokio::runtime::Runtime, ConfigError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(cfg.worker_threads)
        .max_blocking_threads(cfg.max_blocking_threads)
        .thread_name(cfg.thread_name.clone());
    if let Some(cores) = cfg.pin_cores.clone().filter(|c| !c.is_empty()) {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        builder.on_thread_start(move || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            pin_current_thread(cores[i % cores.len()]);
        });
    }
    builder.build().map_err(|e| ConfigError {
        field: "workerThreads",
        message: format!("the runtime could not start: {e}"),
    })
}

/// Pins the calling thread to `core` (Linux); a no-op elsewhere or if the OS refuses.
#[cfg(target_os = "linux")]
fn pin_current_thread(core: usize) {
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is valid; CPU_SET only
    // writes inside it for `core < CPU_SETSIZE` (checked); sched_setaffinity reads it.
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_core: usize) {}

/// The worker loop: take work in turns, deliver when the queue runs dry, spin briefly,
/// then park until the producer wakes it.
async fn run_worker(w: Worker) {
    // A panic here is a bug in this crate. Unwinding out of the task would leave the shard
    // dead and every later flush hanging; stop the process with the reason instead.
    let outcome = std::panic::AssertUnwindSafe(worker_loop(w));
    if let Err(panic) = futures_catch_unwind(outcome).await {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("move-dispatcher: a shard worker panicked ({msg}); aborting to avoid losing moves silently");
        std::process::abort();
    }
}

/// `catch_unwind` for a future, without a dependency: polls it inside `catch_unwind`.
async fn futures_catch_unwind<F: std::future::Future>(
    fut: std::panic::AssertUnwindSafe<F>,
) -> std::thread::Result<F::Output> {
    let mut fut = Box::pin(fut.0);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    })
    .await
}

async fn worker_loop(mut w: Worker) {
    let shared = Arc::clone(w.shared());
    let outbox = Arc::clone(w.outbox());
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        // Wake-ups the JavaScript thread asked for from inside `dispatch` (overload marks).
        outbox.serve_wake_request();
        if shared.paused.load(Ordering::Acquire) {
            // Park without announcing sleep: dispatches while paused must not pay for a
            // wake-up each. `pause(false)` and `stop` poke the worker unconditionally.
            shared.paused_ack.store(true, Ordering::SeqCst);
            shared.notify.notified().await;
            continue;
        }
        let n = w.run(TURN);
        if n == TURN {
            if shared.kick.load(Ordering::Acquire) || w.delivery_due(HOLD_NS) {
                w.deliver();
            }
            tokio::task::yield_now().await;
            continue;
        }
        // The queue ran dry: deliver (smart batching, no timers).
        w.deliver();
        let mut spins = 0;
        while spins < SPINS
            && !w.has_work()
            && !shared.kick.load(Ordering::Acquire)
            && !shared.stop.load(Ordering::Acquire)
        {
            std::hint::spin_loop();
            spins += 1;
        }
        if spins < SPINS {
            continue;
        }
        if w.may_sleep() {
            shared.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::frame::{Header, FLAG_HMAC};
    use std::sync::atomic::AtomicUsize;

    fn frame(room: u32, player: u32, seq: u32, payload: &[u8], key: Option<&PlayerKey>) -> Vec<u8> {
        let h = Header {
            flags: if key.is_some() { FLAG_HMAC } else { 0 },
            room,
            player,
            seq,
            tick: 0,
            kind: 1,
            len: payload.len() as u16,
        };
        let mut f = frame::encode_unsigned(&h, payload).unwrap();
        auth::sign(&mut f, key);
        f
    }

    fn core(cfg: Config) -> (Core, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let c = Core::new(
            cfg,
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        (c, wakes)
    }

    /// Requests a flush and polls until it is answered, releasing push batches as they
    /// arrive (as `Dispatcher` does after `onBatch` returns).
    fn flush(c: &mut Core, token: u64) -> Vec<Delivery> {
        c.request_flush(token);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let news = c.poll();
            for d in &news {
                if let Delivery::Batch(b) = d {
                    c.release(b.room);
                }
            }
            got.extend(news);
            if got.contains(&Delivery::Flushed { token }) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("flush {token} never answered");
    }

    #[test]
    fn accepts_validates_and_drains_in_order() {
        let (mut c, _) = core(Config::default());
        assert_eq!(c.open_room(1, false, false, None), Status::Ok);
        assert_eq!(c.join(1, 7, None), Status::Ok);
        let frames: Vec<Vec<u8>> = (1..=100)
            .map(|s| frame(1, 7, s, &[s as u8; 10], None))
            .collect();
        for f in &frames {
            assert_eq!(c.dispatch(f, Some(7)), Verdict::Accepted);
        }
        assert_eq!(
            c.dispatch(&frames[0], Some(7)),
            Verdict::Accepted,
            "replays are caught later"
        );
        flush(&mut c, 1);
        let (b, inbox) = c.drain(1).unwrap();
        assert_eq!(b.count, 100);
        assert_eq!(b.rejections.len(), 1);
        assert_eq!(b.rejections[0].reason, Reason::Replay);
        assert_eq!(inbox.memory().to_vec(b.offset, b.length), frames.concat());
        let k = c.counters();
        assert_eq!(k.accepted, 101);
        assert_eq!(k.delivered + k.rejected, 101);
        c.shutdown();
        assert_eq!(c.dispatch(&frames[0], None), Verdict::Closed);
    }

    #[test]
    fn sync_verdicts() {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.open_room(2, true, false, None);
        let ok = frame(1, 7, 1, b"x", None);
        assert_eq!(c.dispatch(&[], None), Verdict::Malformed);
        assert_eq!(c.dispatch(&ok[..30], None), Verdict::Malformed);
        assert_eq!(
            c.dispatch(&frame(1, 7, 0, b"x", None), None),
            Verdict::Malformed
        );
        assert_eq!(
            c.dispatch(&frame(1, 7, 1, &[0; 1025], None), None),
            Verdict::Oversize
        );
        assert_eq!(
            c.dispatch(&frame(3, 7, 1, b"x", None), None),
            Verdict::UnknownRoom
        );
        assert_eq!(
            c.dispatch(&frame(2, 7, 1, b"x", None), None),
            Verdict::AuthMismatch
        );
        assert_eq!(c.dispatch(&ok, Some(8)), Verdict::WrongSender);
        assert_eq!(c.dispatch(&ok, None), Verdict::Accepted);
        assert_eq!(c.counters().verdicts.iter().sum::<u64>(), 8);
    }

    #[test]
    fn backpressure_queue_room_and_arena() {
        let cfg = Config {
            channel_capacity: 64,
            arena_bytes: 64 << 10,
            room_bytes: 4096,
            ..Config::default()
        };
        let (mut c, _) = core(cfg);
        c.open_room(1, false, false, None);
        c.open_room(2, false, false, None);
        c.pause(true);
        // Room budget: 4096 / 60-byte frames = 68 frames, but the queue stops at 64.
        let mut accepted = 0;
        for s in 1..=100 {
            if c.dispatch(&frame(1, 7, s, b"abcd", None), None) == Verdict::Accepted {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 64);
        c.pause(false);
        flush(&mut c, 1);
        // Room budget alone (undrained room): 4096 / 60 = 68.
        let mut accepted = 0;
        for s in 1..=100 {
            if c.dispatch(&frame(2, 7, s, b"abcd", None), None) == Verdict::Accepted {
                accepted += 1;
            }
            if s % 32 == 0 {
                flush(&mut c, 100 + u64::from(s));
            }
        }
        assert_eq!(accepted, 4096 / 60);
        assert!(c.drain(2).is_ok());
        assert_eq!(
            c.dispatch(&frame(2, 7, 500, b"abcd", None), None),
            Verdict::Accepted
        );
    }

    #[test]
    fn push_rooms_deliver_and_flush_waits_for_release() {
        let (mut c, wakes) = core(Config::default());
        c.open_room(5, false, true, None);
        c.join(5, 1, None);
        for s in 1..=10 {
            assert_eq!(
                c.dispatch(&frame(5, 1, s, b"p", None), None),
                Verdict::Accepted
            );
        }
        let got = flush(&mut c, 9);
        let batches: Vec<&Batch> = got
            .iter()
            .filter_map(|d| match d {
                Delivery::Batch(b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(batches.iter().map(|b| b.count).sum::<u32>(), 10);
        assert!(wakes.load(Ordering::SeqCst) >= 1);
        assert_eq!(c.drain(5).unwrap_err(), Status::WrongDelivery);
    }

    #[test]
    fn inline_workers_run_only_when_stepped() {
        let mut c = Core::new_inline(
            Config {
                shards: 2,
                max_batch_moves: 4,
                ..Config::default()
            },
            Box::new(|| {}),
        )
        .unwrap();
        c.pause(true); // returns at once: nothing to wait for
        c.open_room(4, false, true, None); // push, shard 0
        c.open_room(5, false, false, None); // pull, shard 1
        c.join(4, 1, None);
        c.join(5, 1, None);
        let frames: Vec<Vec<u8>> = (1..=10).map(|s| frame(4, 1, s, b"p", None)).collect();
        for f in &frames {
            assert_eq!(c.dispatch(f, None), Verdict::Accepted);
        }
        assert_eq!(
            c.dispatch(&frame(5, 1, 1, b"q", None), None),
            Verdict::Accepted
        );
        c.request_flush(7);
        assert_eq!(c.step_workers(), 0, "paused workers do not run");
        assert!(c.poll().is_empty());
        assert_eq!(c.shard_stats()[0].queue_depth, 10);
        c.pause(false);
        // Shard 0: open, join, 10 moves, flush; shard 1: open, join, 1 move, flush.
        assert_eq!(c.step_workers(), 17);
        // Batches of 4 fill during the run; the first is delivered, the rest wait for its
        // release, so the flush is not answered yet.
        let got = c.poll();
        let counts: Vec<u32> = got
            .iter()
            .filter_map(|d| match d {
                Delivery::Batch(b) => Some(b.count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, vec![4]);
        assert!(!got.contains(&Delivery::Flushed { token: 7 }));
        let mut delivered = 4;
        for _ in 0..10 {
            c.release(4);
            assert_eq!(c.step_workers(), 0, "nothing left to validate");
            for d in c.poll() {
                match d {
                    Delivery::Batch(b) => delivered += b.count,
                    Delivery::Flushed { token } => {
                        assert_eq!(token, 7);
                        assert_eq!(delivered, 10);
                        let (b, _) = c.drain(5).unwrap();
                        assert_eq!(b.count, 1);
                        let k = c.counters();
                        assert_eq!(k.accepted, k.delivered + k.rejected);
                        c.shutdown();
                        assert_eq!(c.step_workers(), 0);
                        return;
                    }
                    Delivery::Overload(_) => {}
                }
            }
        }
        panic!("flush 7 never answered");
    }

    #[test]
    fn flush_waits_for_an_unreleased_push_batch() {
        let (mut c, _) = core(Config::default());
        c.open_room(5, false, true, None);
        c.join(5, 1, None);
        assert_eq!(
            c.dispatch(&frame(5, 1, 1, b"p", None), None),
            Verdict::Accepted
        );
        let first = flush(&mut c, 1);
        assert!(first
            .iter()
            .any(|d| matches!(d, Delivery::Batch(b) if b.count == 1)));
        // The test's flush released that batch; deliver one more and hold it.
        assert_eq!(
            c.dispatch(&frame(5, 1, 2, b"p", None), None),
            Verdict::Accepted
        );
        let mut held = false;
        for _ in 0..5_000 {
            if c.poll().iter().any(|d| matches!(d, Delivery::Batch(_))) {
                held = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(held);
        assert_eq!(
            c.dispatch(&frame(5, 1, 3, b"p", None), None),
            Verdict::Accepted
        );
        c.request_flush(2);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !c.poll().contains(&Delivery::Flushed { token: 2 }),
            "flush answered while a batch was held"
        );
        c.release(5);
        let got = flush(&mut c, 3);
        assert!(got.contains(&Delivery::Flushed { token: 2 }));
    }

    #[test]
    fn hmac_rooms_check_keys() {
        let (mut c, _) = core(Config::default());
        let k1 = PlayerKey::new(&[1; 32]).unwrap();
        let k2 = PlayerKey::new(&[2; 32]).unwrap();
        c.open_room(4, true, false, None);
        assert_eq!(c.join(4, 1, None), Status::WrongDelivery);
        assert_eq!(c.join(4, 1, Some(&[1; 32])), Status::Ok);
        assert_eq!(
            c.dispatch(&frame(4, 1, 1, b"m", Some(&k1)), None),
            Verdict::Accepted
        );
        assert_eq!(
            c.dispatch(&frame(4, 1, 2, b"m", Some(&k2)), None),
            Verdict::Accepted
        );
        assert_eq!(
            c.dispatch(&frame(4, 2, 1, b"m", Some(&k1)), None),
            Verdict::Accepted
        );
        flush(&mut c, 1);
        let (b, _) = c.drain(4).unwrap();
        assert_eq!(b.count, 1);
        let reasons: Vec<Reason> = b.rejections.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, vec![Reason::BadTag, Reason::UnknownPlayer]);
    }

    #[test]
    fn close_room_delivers_pending_then_forgets() {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        assert_eq!(
            c.dispatch(&frame(1, 1, 1, b"a", None), None),
            Verdict::Accepted
        );
        assert_eq!(c.close_room(1), Status::Ok);
        assert_eq!(
            c.dispatch(&frame(1, 1, 2, b"a", None), None),
            Verdict::UnknownRoom
        );
        flush(&mut c, 1);
        assert_eq!(c.drain(1).unwrap().0.count, 1);
        assert_eq!(c.drain(1).unwrap_err(), Status::UnknownRoom);
        assert_eq!(c.open_room(1, false, false, None), Status::Ok);
        // Nothing pending: forgotten at once.
        assert_eq!(c.close_room(1), Status::Ok);
        assert!(!c.has_room(1));
    }

    /// A move must never overtake a control call queued just before it (found in review:
    /// with one load of the control sequence, a worker preempted between the load and its
    /// `peek` validated the move first). `leave` then a move: `UnknownPlayer`; `join` then
    /// a move: accepted.
    #[test]
    fn controls_and_moves_stay_in_order_under_load() {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        let rounds = 20_000u32;
        for i in 0..rounds {
            c.leave(1, 1);
            assert_eq!(
                c.dispatch(&frame(1, 1, 2 * i + 1, b"x", None), None),
                Verdict::Accepted
            );
            c.join(1, 1, None);
            assert_eq!(
                c.dispatch(&frame(1, 1, 2 * i + 2, b"x", None), None),
                Verdict::Accepted
            );
            if i % 1000 == 999 {
                flush(&mut c, u64::from(i));
                let (b, _) = c.drain(1).unwrap();
                assert_eq!(b.count, 1000, "round {i}");
                assert!(b
                    .rejections
                    .iter()
                    .all(|r| r.reason == Reason::UnknownPlayer && r.seq % 2 == 1));
                assert_eq!(b.rejections.len(), 1000);
            }
        }
    }

    #[test]
    fn rate_limit_allows_the_burst_then_refills() {
        let (mut c, _) = core(Config::default());
        let rate = RateLimit {
            per_second: 1000.0,
            burst: 5.0,
        };
        c.open_room(1, false, false, Some(rate));
        c.join(1, 7, None);
        let verdicts: Vec<Verdict> = (1..=7)
            .map(|s| c.dispatch(&frame(1, 7, s, b"x", None), Some(7)))
            .collect();
        assert_eq!(&verdicts[..5], &[Verdict::Accepted; 5]);
        assert_eq!(&verdicts[5..], &[Verdict::RateLimited; 2]);
        // Refused moves spend nothing; a refill of 1 ms gives one token back.
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(
            c.dispatch(&frame(1, 7, 8, b"x", None), Some(7)),
            Verdict::Accepted
        );
        assert_eq!(c.counters().verdicts[Verdict::RateLimited as usize], 2);
        // Other players have their own bucket; rooms without a limit have none.
        c.join(1, 8, None);
        assert_eq!(
            c.dispatch(&frame(1, 8, 1, b"x", None), Some(8)),
            Verdict::Accepted
        );
        c.open_room(2, false, false, None);
        c.join(2, 7, None);
        for s in 1..=50 {
            assert_eq!(
                c.dispatch(&frame(2, 7, s, b"x", None), Some(7)),
                Verdict::Accepted
            );
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = Config {
            channel_capacity: 0,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "channelCapacity");
        let bad = Config {
            room_bytes: 100,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "roomBytes");
    }

    fn events(items: &[Delivery]) -> Vec<OverloadEvent> {
        items
            .iter()
            .filter_map(|d| match d {
                Delivery::Overload(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    /// A room mark crossed inside `dispatch` is only flagged there: the outbox stays empty
    /// until a poll, a worker sends the wake-up, and the event names the depth at crossing.
    #[test]
    fn overload_is_flagged_in_dispatch_and_published_by_poll() {
        let cfg = Config {
            shards: 1,
            overload_room_bytes: 1_000,
            ..Config::default()
        };
        let (mut c, wakes) = core(cfg);
        c.open_room(1, false, false, None);
        c.join(1, 7, None);
        let f = frame(1, 7, 1, &[0; 200], None);
        let need = 1_000_usize.div_ceil(f.len());
        for seq in 1..=u32::try_from(need).unwrap() {
            let f = frame(1, 7, seq, &[0; 200], None);
            assert_eq!(c.dispatch(&f, Some(7)), Verdict::Accepted);
        }
        assert!(c.outbox.take().is_empty(), "published inside dispatch");
        for _ in 0..2_000 {
            if wakes.load(Ordering::SeqCst) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            wakes.load(Ordering::SeqCst) > 0,
            "no worker sent the wake-up"
        );
        let raised = events(&c.poll());
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].subject, Subject::Room(1));
        assert!(!raised[0].recovered);
        assert!(raised[0].depth >= 1_000);
        flush(&mut c, 1);
        c.drain(1).unwrap();
        let recovered = events(&c.poll());
        assert_eq!(recovered.len(), 1);
        assert!(recovered[0].recovered);
        assert!(recovered[0].p99_wait_ns > 0, "the room's own waits");
        c.shutdown();
    }

    /// A room closed, forgotten and opened again under the same id, overloading each time,
    /// is one subject: its events alternate, overload then recovered, never two of a kind.
    #[test]
    fn reopened_room_recovers_once() {
        let cfg = Config {
            shards: 1,
            overload_room_bytes: 500,
            ..Config::default()
        };
        let (mut c, _) = core(cfg);
        let mut all = Vec::new();
        let mut seq = 0;
        for _ in 0..3 {
            assert_eq!(c.open_room(1, false, true, None), Status::Ok);
            c.join(1, 7, None);
            for _ in 0..5 {
                seq += 1;
                let f = frame(1, 7, seq, &[0; 200], None);
                assert_eq!(c.dispatch(&f, Some(7)), Verdict::Accepted);
            }
            // Publishes the overload; the batch is delivered and released in the same poll
            // as the flush answer, so no recovery check ran since.
            all.extend(events(&flush(&mut c, u64::from(seq))));
            c.close_room(1);
            assert!(!c.has_room(1), "released and closed: forgotten");
        }
        all.extend(events(&c.poll()));
        let flips: Vec<bool> = all.iter().map(|e| e.recovered).collect();
        assert!(!flips.is_empty());
        assert!(
            flips.windows(2).all(|w| w[0] != w[1]) && !flips[0] && *flips.last().unwrap(),
            "events do not alternate: {flips:?}"
        );
        c.shutdown();
    }
}
