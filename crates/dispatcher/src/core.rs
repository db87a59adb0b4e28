//! The dispatcher as the JavaScript thread sees it.
//!
//! [`Core`] is owned by one thread (the JavaScript thread that created it). Its
//! [`Core::dispatch`] does the O(1) synchronous checks of `docs/architecture.md` (room,
//! auth, sender, membership, rate limit, capacity), reserves the room's budget, copies the
//! frame into the shard's arena and wakes the worker if it sleeps. It never blocks and
//! allocates nothing (overload marks are only flagged there; their events are published by
//! the next poll, drain or flush: [`crate::overload`]). The workers run [`crate::shard`]'s
//! loop on the runtime of [`crate::runtime`].
//!
//! # Ordering
//! Every operation on a room goes to the room's shard with the next sequence number of
//! that shard; the worker takes moves and control operations in that order.
//!
//! # Backpressure
//! A full queue (`channel_capacity` moves in flight), a full arena or a full room budget
//! answers [`Verdict::Backpressure`] and keeps nothing.
//!
//! # Failure
//! A shard whose worker panicked is failed (see [`crate::shard`]): once [`Core::poll`] has
//! reported it, its rooms answer [`Verdict::Closed`] and control calls on them
//! [`Status::Closed`]; moves accepted before are still accounted (delivered, or rejected
//! with [`Reason::ShardFailed`]); the other shards go on.
//!
//! # Shutdown
//! [`Core::shutdown`] stops the workers and joins them; what is still queued then is
//! dropped, so callers flush first (`Dispatcher.close` does). It is idempotent. Dropping a
//! core stops its workers without blocking ([`Stopper::stop_in_background`]). Pull rooms can
//! still be drained afterwards: room memory lives as long as the room (or a JavaScript view
//! of it).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::alloc::HotPath;
use crate::arena::{self, Producer};
use crate::auth::PlayerKey;
use crate::delivery::{Builder, Moves, Pool};
use crate::frame::{self, FrameError};
use crate::inbox::Inbox;
use crate::latency::{self, Coarse, Observer, Recorder, Scale, Snapshot};
use crate::members::{Members, Rooms, FAR, NEAR};
use crate::outbox::{Delivery, Outbox, Waker};
use crate::overload::{mark_room, mark_shard};
use crate::ratelimit::Bucket;
use crate::runtime::{self, Stopper};
use crate::shard::{self, Control, Policy, Shared, Worker, PAUSE_ACK};
use crate::stats::{Histo, ARENA_SAMPLE, DEPTH_REFRESH};
use crate::verdict::{Status, Verdict};
use crate::IdHashBuilder;

pub use crate::config::{Config, ConfigError};
pub use crate::ratelimit::RateLimit;
pub use crate::stats::{Counters, Latencies, Pressure, ShardStats, View};

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
pub(crate) struct Room {
    shard: usize,
    hmac: bool,
    push: bool,
    /// `false` after `closeRoom`: frames answer `UnknownRoom`, pending moves still flow.
    open: bool,
    /// Reported overloaded (or about to be), not yet recovered.
    pub(crate) overloaded: bool,
    /// Dispatch → delivered of this room's moves since its last overload event (for the
    /// event's p99); `None` when room overload events are off.
    pub(crate) waits: Option<Box<Coarse>>,
    /// Members: those of [`Core::members`] in this room (which `dispatch` checks, with
    /// their rate-limit buckets' indices), listed for `closeRoom`; in step with the
    /// worker's through the ordered `join` / `leave` controls.
    players: HashSet<u32, IdHashBuilder>,
    rate: Option<RateLimit>,
    pub(crate) inbox: Arc<Inbox>,
}

impl Room {
    /// Closed, with nothing in flight or waiting in its inbox: the room can be forgotten (a
    /// later `openRoom` starts afresh). Moves already in a delivery live there.
    fn forgettable(&self) -> bool {
        !self.open && self.inbox.reserved() == 0
    }
}

pub(crate) struct ShardHandle {
    pub(crate) shared: Arc<Shared>,
    producer: Producer,
    next_seq: u64,
    /// Moves pushed into the arena (the queue's write count).
    pub(crate) pushed: u64,
    /// Last value read from `shared.consumed` (refreshed when the queue looks full, and
    /// every [`DEPTH_REFRESH`] moves for the high-water marks).
    pub(crate) consumed_cache: u64,
    depth_high_water: u64,
    arena_high_water: usize,
    /// The arena's capacity and wrap count when [`Core::shutdown`] freed it: `stats()` and
    /// `metrics()` keep reporting them (a counter must never go back).
    retired_arena: Option<(usize, u64)>,
    /// Dispatch → validated, recorded by the worker: one observer for `stats` (reset on
    /// request), one for `metrics` (never reset, as Prometheus histograms must be), one for
    /// overload events (reset at each event of the shard).
    pub(crate) validated: [Observer; 3],
    /// Reported overloaded (or about to be), not yet recovered.
    pub(crate) overloaded: bool,
    /// Crossed its mark inside `dispatch` at this depth; the event is published by the next
    /// `poll`, `drain` or flush (publishing allocates, `dispatch` must not).
    pub(crate) raise_pending: Option<u64>,
    /// Moves pushed to this shard whose wake-up is owed: at the end of a `dispatch_stream`
    /// call, or, with deferred wake-ups ([`Core::defer_wakes`]), at [`Core::wake_owed`].
    owed: u32,
    /// Its worker panicked and [`Core::poll`] reported it: its rooms answer `Closed`.
    failed: bool,
    /// Push deliveries of this shard polled, and released by JavaScript: one is out when
    /// they differ (a release with none out is ignored).
    deliveries: u64,
    releases: u64,
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

/// Steps of a worker a drain runs at most to catch up ([`Core::catch_up`]): each takes up to
/// [`shard::TURN`] moves, far more than a nap lets wait.
const CATCH_UP_STEPS: usize = 4096;

/// Who wakes a shard's worker after `dispatch` pushed to it ([`Core::defer_wakes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wakes {
    /// `dispatch` does, at once (`dispatch_stream` at the end of its call).
    Now,
    /// The caller, through [`Core::wake_owed`]; no worker it fed since has announced sleep.
    Deferred,
    /// As `Deferred`, and a move went to a worker that announced sleep since the last
    /// [`Core::wake_owed`]: the caller must pay ([`Core::wake_due`]).
    Due,
}

/// The dispatcher, JavaScript-thread side.
pub struct Core {
    pub(crate) cfg: Config,
    pub(crate) rooms: Rooms<Room>,
    /// Push rooms closed with moves still to deliver (kept until those went out): the ones
    /// a delivery may let go of. Usually empty, so that a delivery looks up no room for it.
    closing_push: Vec<u32>,
    /// Every room's members, each with the index of its rate-limit bucket in `buckets`:
    /// what `dispatch` checks. The buckets live apart so that a slot is 16 bytes — with tens
    /// of thousands of players the table misses the cache on every `dispatch`, and a
    /// smaller table misses less; only rooms with a rate limit read a bucket.
    members: Members<u32>,
    /// The members' rate-limit buckets, by the index their slot holds; the indices of
    /// members gone are in `free_buckets`, for the next `join`.
    buckets: Vec<Bucket>,
    free_buckets: Vec<u32>,
    /// By room slot: the address of the room's budget line ([`Inbox::budget_addr`]), a
    /// prefetch hint for `dispatch` (a stale one, of a room gone, is a harmless hint).
    budget_at: Vec<usize>,
    pub(crate) shards: Vec<ShardHandle>,
    pub(crate) outbox: Arc<Outbox>,
    stopper: Arc<Stopper>,
    closed: bool,
    counters: Counters,
    /// Buffers for deliveries, shared with the workers and with the finalizers of the
    /// `ArrayBuffer`s that expose them.
    pool: Arc<Pool>,
    /// Builds the drains' deliveries.
    builder: Builder,
    /// Histograms recorded on the JavaScript thread.
    delivered: Histo,
    batch_size: Histo,
    arena_alloc: Histo,
    /// Rooms reported overloaded and not yet recovered, each with the depth at which it
    /// crossed its mark while that event is still to be published (on drain, poll and
    /// flush). Ids are distinct; spare capacity for every known room is kept, so `dispatch`
    /// never grows it.
    pub(crate) overloaded_rooms: Vec<(u32, Option<u64>)>,
    /// The shard and cause of the last `Backpressure` (what [`Core::want_writable`] waits on).
    pressure: Option<(usize, Pressure)>,
    /// Some shard has failed (see [`Core::poll`]).
    any_failed: bool,
    /// Whether `dispatch` wakes workers itself or leaves it to [`Core::wake_owed`].
    wakes: Wakes,
    /// The runtime's workers, which native ingress also runs (between their steps) on the
    /// threads that read its connections; empty for inline workers.
    workers: Vec<Arc<Mutex<Worker>>>,
    /// Verdicts of native ingress, counted by the threads that read the connections.
    ingress_verdicts: Arc<[AtomicU64; Verdict::COUNT]>,
    /// Tickets spent on any of this dispatcher's listens (single use across `close()` and a
    /// new `listen()` too).
    tickets: Arc<Mutex<crate::ingress::ticket::Nonces>>,
    /// The workers of a core built by [`Core::new_inline`], run by [`Core::step_workers`]
    /// on the caller's thread (`None` once stopped for good, as a runtime task would have
    /// returned); empty when they run on the runtime.
    #[cfg(any(test, feature = "inline-workers"))]
    inline: Vec<Option<Worker>>,
    /// What the runtime's threads deliver before they park (tests run it by hand).
    #[cfg(test)]
    park: Arc<runtime::ParkDeliveries>,
}

/// A full bucket for a new member, in a free place of `buckets` or a new one; its index.
fn new_bucket(buckets: &mut Vec<Bucket>, free: &mut Vec<u32>, rate: Option<RateLimit>) -> u32 {
    let full = Bucket::full(rate);
    if let Some(i) = free.pop() {
        buckets[i as usize] = full;
        return i;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "one bucket per member: 2^32 members would take 64 GiB of table first"
    )]
    let i = buckets.len() as u32;
    buckets.push(full);
    i
}

/// Prefetches for `dispatch_stream` (see [`Members`]): cursors running ahead of its checks
/// over the chunk's frames — the member slot of the frame `FAR` ahead of the one checked,
/// the room and the room's budget of the frame `NEAR` ahead (whose slot has arrived by then;
/// the budget's address is kept by room slot, so it need not wait for the room), and the
/// chunk's own bytes a kilobyte ahead. The cache misses of a stream's frames overlap
/// instead of adding up.
struct Lookahead {
    far: Cursor,
    near: Cursor,
    /// The chunk is too short for cursors: each frame prefetches its own room and budget
    /// ([`Core::prefetch_member`]), as a `dispatch` does.
    off: bool,
    /// Frames the cursors moved on for ([`Lookahead::advance`]).
    advanced: usize,
}

impl Lookahead {
    /// A shorter chunk holds too few frames for prefetching to pay (one-frame calls).
    const MIN_CHUNK: usize = 512;

    fn start(core: &Core, chunk: &[u8]) -> Self {
        let done = chunk.len() < Self::MIN_CHUNK;
        let cursor = Cursor { at: 0, done };
        let mut a = Self {
            far: cursor,
            near: cursor,
            off: done,
            advanced: 0,
        };
        for _ in 0..FAR {
            a.far
                .step(chunk, |h| core.members.prefetch(h.room, h.player));
        }
        for _ in 0..NEAR {
            a.near.step(chunk, |_| {});
        }
        a
    }

    /// Whether the frame about to be checked has no room prefetched by a cursor: in a
    /// short chunk, or among the first `NEAR` frames of a long one (the `near` cursor
    /// starts `NEAR` frames ahead).
    #[inline]
    fn alone(&self) -> bool {
        self.off || self.advanced <= NEAR
    }

    /// Before the checks of the next frame: every cursor moves one frame on.
    #[inline]
    fn advance(&mut self, core: &Core, chunk: &[u8]) {
        self.advanced += 1;
        if let Some(b) = chunk.get(self.far.at + 1024..self.far.at + 1152) {
            crate::members::prefetch(b.as_ptr());
            crate::members::prefetch(b[64..].as_ptr());
        }
        self.far
            .step(chunk, |h| core.members.prefetch(h.room, h.player));
        self.near.step(chunk, |h| {
            if let Some(m) = core.members.lookup(h.room, h.player) {
                core.prefetch_room(core.members.room_slot(m));
            }
        });
    }
}

/// A position in a chunk, frame by frame.
#[derive(Clone, Copy)]
struct Cursor {
    at: usize,
    done: bool,
}

impl Cursor {
    /// Calls `f` with the next frame's header and moves past the frame; stops for good at
    /// bytes that are not a whole header (the checks will stop there too).
    #[inline]
    fn step(&mut self, chunk: &[u8], f: impl FnOnce(&frame::Header)) {
        if self.done {
            return;
        }
        match frame::read_header(chunk.get(self.at..).unwrap_or_default()) {
            Ok(h) => {
                f(&h);
                self.at += h.frame_len();
            }
            Err(_) => self.done = true,
        }
    }
}

/// Equal consecutive samples, recorded once with their count ([`Core::count_delivery`]).
#[derive(Default)]
struct Run {
    value: u64,
    count: u64,
}

impl Run {
    /// Counts `value`; a different value first records the run before it.
    #[inline]
    fn add(&mut self, value: u64, to: &mut Recorder) {
        if self.count > 0 && self.value != value {
            to.record_n(self.value, self.count);
            self.count = 0;
        }
        self.value = value;
        self.count += 1;
    }

    /// Records the run in progress.
    fn flush(&mut self, to: &mut Recorder) {
        if self.count > 0 {
            to.record_n(self.value, self.count);
            self.count = 0;
        }
    }
}

/// The error of a shard's memory (sized by `arenaBytes`) the machine would not give.
fn unallocated(bytes: usize, what: &str) -> ConfigError {
    ConfigError {
        field: "arenaBytes",
        message: format!("could not allocate {bytes} bytes for {what}"),
    }
}

/// The most moves of a shard that wait for their worker's wake-up when it is deferred.
pub const WAKE_EVERY: u32 = 64;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cfg", &self.cfg)
            .field("rooms", &self.rooms.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

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
    /// `dispatch` fuzz target runs thousands of inputs a second this way). They run the same
    /// loop as the runtime's ([`Worker::step`]) with [`Policy::inline`]: no delivery on
    /// elapsed time, no spinning. `worker_threads`, `pin_cores` and `max_blocking_threads`
    /// are ignored. A testing hook: only with the `inline-workers` feature, never in the addon.
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
        let pool = Arc::new(Pool::new());
        let park = Arc::new(runtime::ParkDeliveries::default());
        let runtime = if inline {
            None
        } else {
            Some(runtime::build(&cfg, Arc::clone(&park))?)
        };
        let policy = if inline {
            Policy::inline(cfg.max_batch_moves)
        } else {
            Policy::runtime(cfg.max_batch_moves)
        };
        let mut parked = Vec::new();
        let mut workers = Vec::new();
        let mut shards = Vec::with_capacity(cfg.shards);
        for index in 0..cfg.shards {
            let shared = Arc::new(Shared::default());
            let (producer, consumer) = arena::try_ring(cfg.arena_bytes)
                .map_err(|e| unallocated(e.bytes, "a shard arena"))?;
            let (validated, observer) = latency::pair(Scale::LATENCY_NS);
            let worker = Worker::new(
                u32::try_from(index).unwrap_or(u32::MAX),
                Arc::clone(&shared),
                consumer,
                Arc::clone(&outbox),
                Arc::clone(&pool),
                policy,
                validated,
            )
            .map_err(|bytes| unallocated(bytes, "a shard's staging"))?;
            match &runtime {
                Some(rt) => {
                    let worker = Arc::new(Mutex::new(worker));
                    workers.push(Arc::clone(&worker));
                    drop(rt.spawn(shard::drive(worker)));
                }
                None => parked.push(Some(worker)),
            }
            shards.push(ShardHandle {
                shared,
                producer,
                next_seq: 0,
                pushed: 0,
                consumed_cache: 0,
                depth_high_water: 0,
                arena_high_water: 0,
                retired_arena: None,
                validated: [observer.clone(), observer.clone(), observer],
                overloaded: false,
                raise_pending: None,
                owed: 0,
                deliveries: 0,
                releases: 0,
                failed: false,
            });
        }
        park.set(
            shards
                .iter()
                .map(|s| Arc::clone(&s.shared))
                .zip(workers.iter().cloned())
                .collect(),
        );
        let stopper = Arc::new(Stopper::new(
            runtime,
            shards.iter().map(|s| Arc::clone(&s.shared)).collect(),
            Arc::clone(&outbox),
        ));
        Ok(Self {
            cfg,
            rooms: Rooms::default(),
            closing_push: Vec::new(),
            members: Members::default(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            budget_at: Vec::new(),
            shards,
            outbox,
            stopper,
            closed: false,
            counters: Counters::default(),
            pool,
            builder: Builder::new(),
            delivered: Histo::new(Scale::LATENCY_NS),
            batch_size: Histo::new(Scale::SIZE),
            arena_alloc: Histo::new(Scale::LATENCY_NS),
            overloaded_rooms: Vec::new(),
            pressure: None,
            any_failed: false,
            wakes: Wakes::Now,
            workers,
            ingress_verdicts: Arc::default(),
            tickets: Arc::default(),
            #[cfg(any(test, feature = "inline-workers"))]
            inline: parked,
            #[cfg(test)]
            park,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What native ingress needs of this core: the workers, the verdict counters, the
    /// runtime and the frame limit; `None` for inline workers or once closed.
    pub fn ingress_parts(&self) -> Option<crate::ingress::Parts> {
        if self.closed || self.workers.is_empty() {
            return None;
        }
        Some(crate::ingress::Parts {
            workers: self.workers.clone(),
            verdicts: Arc::clone(&self.ingress_verdicts),
            runtime: self.stopper.handle()?,
            outbox: Arc::clone(&self.outbox),
            max_payload: self.cfg.max_payload,
            tickets: Arc::clone(&self.tickets),
        })
    }

    /// The handle that stops the workers (for environment cleanup hooks).
    pub fn stopper(&self) -> Arc<Stopper> {
        Arc::clone(&self.stopper)
    }

    /// Checks `frame` and queues it. `sender`: the player id the connection proved.
    pub fn dispatch(&mut self, frame: &[u8], sender: Option<u32>) -> Verdict {
        // The hot path: dispatch must not allocate (counted by the global allocator).
        let _hot = HotPath::enter();
        let v = self.dispatch_inner(frame, sender, None, true);
        self.counters.dispatched += 1;
        self.counters.verdicts[v as usize] += 1;
        v
    }

    /// `chunk_stamp`: `Some` inside `dispatch_stream` — the call's one clock reading, used as
    /// every frame's dispatch stamp (they arrived together), and the worker's wake-up is
    /// owed to the end of the call instead of paid per frame. `alone`: no stream cursor
    /// prefetched this frame's room, so the frame does ([`Core::prefetch_member`]).
    #[inline]
    fn dispatch_inner(
        &mut self,
        bytes: &[u8],
        sender: Option<u32>,
        chunk_stamp: Option<u64>,
        alone: bool,
    ) -> Verdict {
        if self.closed {
            return Verdict::Closed;
        }
        let (head, h) = match snapshot_header(bytes, self.cfg.max_payload) {
            Ok(x) => x,
            Err(v) => return v,
        };
        let rest = bytes.get(frame::HEADER_BYTES..).unwrap_or_default();
        if alone {
            self.prefetch_member(h.room, h.player);
        }
        // A member leads to its room by slot, with no second hash lookup (and only members
        // of open rooms are listed); anyone else is looked up by room id, for the verdict.
        let member = self.members.lookup(h.room, h.player);
        let room = self.rooms.of_move(&self.members, member, h.room);
        let Some(room) = room.filter(|r| r.open) else {
            return self.unknown_room(h.room);
        };
        let shard = &mut self.shards[room.shard];
        if shard.failed {
            return Verdict::Closed;
        }
        if h.is_hmac() != room.hmac {
            return Verdict::AuthMismatch;
        }
        if sender.is_some_and(|s| s != h.player) {
            return Verdict::WrongSender;
        }
        // Membership, exact here: the player (the proven sender, past `WrongSender`) must
        // have joined. A non-member spends nothing of the room.
        let Some(member) = member else {
            return Verdict::NotMember;
        };
        let bucket = *self.members.value(member) as usize;
        // Rate limit: one clock read per move, the rate limit's `now` is the dispatch stamp.
        let mut now = chunk_stamp;
        if let Some(rate) = room.rate {
            let t = now.unwrap_or_else(crate::clock::now_ns);
            now = Some(t);
            if !self.buckets[bucket].ready(rate, t) {
                return Verdict::RateLimited;
            }
        }
        // Causes in the documented order: queue, arena, room budget. The arena is asked
        // by pushing (one look at its space, not a check and then the push): the room's
        // budget is reserved first and given back if the push finds no space (for that
        // moment native ingress may find the room one frame fuller, see
        // `Inbox::try_reserve`), and a room out of budget asks the arena before answering
        // that its budget is the cause.
        let pressure = if shard.queue_full(self.cfg.channel_capacity as u64) {
            Some(Pressure::Queue)
        } else if !room.inbox.try_reserve(bytes.len()) {
            Some(if shard.producer.fits(bytes.len()) {
                Pressure::Room
            } else {
                Pressure::Arena
            })
        } else if shard.push(
            // Read only when the push is reached (a single `dispatch`'s stamp also starts
            // the arena's allocation timing).
            now.unwrap_or_else(crate::clock::now_ns),
            &head,
            rest,
            chunk_stamp.is_some(),
            &mut self.arena_alloc.recorder,
        ) {
            None
        } else {
            room.inbox.unreserve(bytes.len());
            Some(Pressure::Arena)
        };
        if let Some(p) = pressure {
            self.counters.backpressure[p as usize] += 1;
            self.pressure = Some((room.shard, p));
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
        if room.rate.is_some() {
            self.buckets[bucket].tokens -= 1.0;
        }
        shard.count_push();
        // Wake the worker now, or owe it the wake-up (a stream's frames arrived together; a
        // caller that defers wakes it once per event-loop turn) — but never let more than
        // `WAKE_EVERY` moves wait for one.
        if (chunk_stamp.is_some() || self.wakes != Wakes::Now) && shard.owed < WAKE_EVERY {
            shard.owed += 1;
            // A deferred wake-up matters only to a worker that announced sleep: tell the
            // caller (once until paid), so that a turn of calls to running or napping
            // workers schedules no payment at all. A stream asks once, at the end of its
            // call ([`Core::note_sleepers`]): the question costs a full fence.
            if self.wakes == Wakes::Deferred && chunk_stamp.is_none() && shard.shared.sleeps() {
                self.wakes = Wakes::Due;
            }
        } else {
            shard.owed = 0;
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

    /// For a frame checked alone (no stream cursors ahead): starts loading the member's
    /// slot, then its room's entry and budget line — three cache misses at once, not one
    /// after the other (the member names the room, whose entry names the budget). The room
    /// map itself is small and stays cached.
    #[inline]
    fn prefetch_member(&self, room: u32, player: u32) {
        self.members.prefetch(room, player);
        if let Some(slot) = self.rooms.slot(room) {
            self.prefetch_room(slot);
        }
    }

    /// Starts loading the entry and the budget line of the room in `slot` (the budget's
    /// address is kept by slot, so it need not wait for the entry).
    #[inline]
    fn prefetch_room(&self, slot: u32) {
        self.rooms.prefetch(slot);
        if let Some(&at) = self.budget_at.get(slot as usize) {
            crate::members::prefetch(std::ptr::without_provenance(at));
        }
    }

    /// The verdict on a frame for a room that is not open: a failed shard answers `Closed`
    /// for any room it would own, open or not (no division on the hot path: only unknown
    /// rooms pay for it).
    fn unknown_room(&self, room: u32) -> Verdict {
        if self.any_failed && self.shards[room as usize % self.shards.len()].failed {
            Verdict::Closed
        } else {
            Verdict::UnknownRoom
        }
    }

    /// Dispatches back-to-back frames from `chunk`. Stops before a partial frame, at a frame
    /// that meets backpressure (not consumed), or at bytes that are not a header (`malformed`).
    pub fn dispatch_stream(&mut self, chunk: &[u8], sender: Option<u32>) -> StreamOutcome {
        let mut out = StreamOutcome::default();
        // One clock reading for the chunk: its frames arrived together.
        let stamp = crate::clock::now_ns();
        let mut ahead = Lookahead::start(self, chunk);
        loop {
            ahead.advance(self, chunk);
            let rest = chunk.get(out.consumed..).unwrap_or_default();
            let len = match frame::read_header(rest) {
                Ok(h) => h.frame_len(),
                Err(FrameError::Short { .. }) => break,
                Err(_) => {
                    // Stop: the stream cannot be resynchronised. Its verdict follows the
                    // checks' order: a closed dispatcher answers `Closed` before any header.
                    out.malformed = true;
                    let v = if self.closed {
                        Verdict::Closed
                    } else {
                        Verdict::Malformed
                    };
                    self.counters.dispatched += 1;
                    self.counters.verdicts[v as usize] += 1;
                    break;
                }
            };
            let Some(frame) = rest.get(..len) else { break };
            let v = {
                let _hot = HotPath::enter();
                self.dispatch_inner(frame, sender, Some(stamp), ahead.alone())
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
        // The wake-ups owed: after every push of the call, as `dispatch` does after one
        // (or later, with deferred wake-ups).
        match self.wakes {
            Wakes::Now => {
                self.wake_owed();
            }
            Wakes::Deferred => self.note_sleepers(),
            Wakes::Due => {}
        }
        out
    }

    /// With deferred wake-ups, after a stream's pushes: whether a shard owed a wake-up has
    /// announced sleep (then the caller must pay, [`Core::wake_due`]). Asked once per call
    /// and shard instead of once per move: every push of the call precedes the fence of
    /// [`Shared::sleeps`], so either the worker sees them or this sees it asleep.
    fn note_sleepers(&mut self) {
        if self.shards.iter().any(|s| s.owed > 0 && s.shared.sleeps()) {
            self.wakes = Wakes::Due;
        }
    }

    /// From now on (`true`), `dispatch` and `dispatch_stream` only owe their workers the
    /// wake-up, which [`Core::wake_owed`] pays: the caller (JavaScript) calls it once per
    /// event-loop turn, so a socket handler's one-frame calls cost one wake-up a turn, not
    /// one each. Every call that waits on the workers (drains, flushes, polls, pause,
    /// shutdown) pays what is owed first, and no more than [`WAKE_EVERY`] moves of a shard
    /// ever wait for theirs.
    pub fn defer_wakes(&mut self, defer: bool) {
        self.wakes = if defer { Wakes::Deferred } else { Wakes::Now };
        if !defer {
            self.wake_owed();
        }
    }

    /// With deferred wake-ups ([`Core::defer_wakes`]): whether a move pushed since the last
    /// [`Core::wake_owed`] went to a worker that announced sleep, so that the caller must
    /// pay what is owed (its other workers are running or napping and need no wake-up).
    pub fn wake_due(&self) -> bool {
        self.wakes == Wakes::Due
    }

    /// Wakes every worker owed a wake-up (see [`Core::defer_wakes`]); whether any was.
    pub fn wake_owed(&mut self) -> bool {
        if self.wakes == Wakes::Due {
            self.wakes = Wakes::Deferred;
        }
        let mut any = false;
        for s in &mut self.shards {
            if std::mem::take(&mut s.owed) > 0 {
                s.shared.wake();
                any = true;
            }
        }
        any
    }

    /// Queues `control` on `shard`, in order with its moves; whether it was queued. A shard
    /// whose worker is gone for good takes nothing: a flush is answered here instead,
    /// anything else dropped.
    fn push_control(&mut self, shard: usize, control: Control) -> bool {
        let s = &mut self.shards[shard];
        match s.shared.push_control(s.next_seq, control) {
            Ok(()) => {
                s.next_seq += 1;
                s.owed = 0;
                s.shared.wake_for_control();
                true
            }
            Err(Control::Flush { token }) => {
                self.outbox.publish(None, &[token]);
                false
            }
            Err(_) => false,
        }
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
        if self.shards[shard].failed {
            return Status::Closed;
        }
        let inbox = match self.rooms.get_mut(room) {
            Some(r) if r.open => return Status::RoomExists,
            Some(r) if r.push != push => return Status::WrongDelivery,
            Some(r) => {
                r.open = true;
                r.hmac = hmac;
                r.push = push;
                r.rate = rate;
                let inbox = Arc::clone(&r.inbox);
                self.closing_push.retain(|&id| id != room);
                inbox
            }
            None => {
                // A pull room's inbox holds `roomBytes` up front: a size the machine cannot
                // give (many rooms, a large roomBytes) is refused, not an abort.
                let Some(inbox) = Inbox::try_new(room, self.cfg.room_bytes, !push) else {
                    return Status::OutOfMemory;
                };
                let inbox = Arc::new(inbox);
                let slot = self.rooms.insert(
                    room,
                    Room {
                        shard,
                        hmac,
                        push,
                        open: true,
                        // A room forgotten while overloaded comes back overloaded: its
                        // recovery is still to be reported, once.
                        overloaded: self.overloaded_rooms.iter().any(|e| e.0 == room),
                        waits: self.rooms_keep_waits().then(Box::default),
                        players: HashSet::default(),
                        rate,
                        inbox: Arc::clone(&inbox),
                    },
                ) as usize;
                if self.budget_at.len() <= slot {
                    self.budget_at.resize(slot + 1, 0);
                }
                self.budget_at[slot] = inbox.budget_addr();
                // Room for every known room to be flagged inside `dispatch` without growing.
                self.overloaded_rooms.reserve(self.rooms.len());
                inbox
            }
        };
        self.push_control(
            shard,
            Control::OpenRoom {
                inbox,
                hmac,
                push,
                rate,
            },
        );
        Status::Ok
    }

    fn open_room_mut(&mut self, room: u32) -> Result<&mut Room, Status> {
        if self.closed {
            return Err(Status::Closed);
        }
        if self.shards[room as usize % self.shards.len()].failed {
            return Err(Status::Closed);
        }
        self.rooms
            .get_mut(room)
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
        r.players.insert(player);
        let (rate, shard) = (r.rate, r.shard);
        let Some(slot) = self.rooms.slot(room) else {
            return Status::UnknownRoom; // unreachable: an open room has a slot
        };
        let (bucket, new) = self.members.join(room, player, slot);
        if new {
            *bucket = new_bucket(&mut self.buckets, &mut self.free_buckets, rate);
        }
        self.push_control(shard, Control::Join { room, player, key });
        Status::Ok
    }

    /// Forgets `player` (its key is zeroised when the worker drops it).
    pub fn leave(&mut self, room: u32, player: u32) -> Status {
        let r = match self.open_room_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if !r.players.remove(&player) {
            return Status::UnknownPlayer;
        }
        let shard = r.shard;
        self.forget_member(room, player);
        self.push_control(shard, Control::Leave { room, player });
        Status::Ok
    }

    /// Takes `player` out of `room`'s members (`dispatch`'s side); its bucket's place is free.
    fn forget_member(&mut self, room: u32, player: u32) {
        if let Some(bucket) = self.members.leave(room, player) {
            self.free_buckets.push(bucket);
        }
    }

    /// Closes `room`: frames answer `UnknownRoom` from now on; pending moves are delivered.
    pub fn close_room(&mut self, room: u32) -> Status {
        let r = match self.open_room_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        r.open = false;
        let players = std::mem::take(&mut r.players);
        let shard = r.shard;
        if r.forgettable() {
            self.rooms.remove(room);
        } else if r.push {
            self.closing_push.push(room);
        }
        for player in players {
            self.forget_member(room, player);
        }
        self.push_control(shard, Control::CloseRoom { room });
        Status::Ok
    }

    /// Pull rooms: everything validated (and rejected) since the room's last drain, as a
    /// delivery of that one room; `None` when nothing waits.
    ///
    /// # Errors
    /// `UnknownRoom` (never opened, or closed and fully drained: then it is forgotten),
    /// `WrongDelivery` for push rooms.
    pub fn drain(&mut self, room: u32) -> Result<Option<Moves>, Status> {
        self.catch_up();
        self.wake_owed();
        let r = self.rooms.get(room).ok_or(Status::UnknownRoom)?;
        if r.push {
            return Err(Status::WrongDelivery);
        }
        let inbox = Arc::clone(&r.inbox);
        self.builder.start(self.pool.get());
        inbox.take_into(&mut self.builder);
        let moves = self.finish_drain();
        if self.rooms.get(room).is_some_and(Room::forgettable) {
            self.rooms.remove(room);
        }
        Ok(moves)
    }

    /// Pull rooms: every pull room's moves and rejections since its last drain, in one
    /// delivery; `None` when nothing waits. Closed rooms drained empty are forgotten.
    pub fn drain_all(&mut self) -> Option<Moves> {
        self.catch_up();
        self.wake_owed();
        self.builder.start(self.pool.get());
        let mut forget = false;
        for r in self.rooms.values().filter(|r| !r.push) {
            // Nothing reserved: nothing in flight or waiting, no lock taken.
            if r.inbox.reserved() > 0 {
                r.inbox.take_into(&mut self.builder);
            }
            forget |= r.forgettable();
        }
        let moves = self.finish_drain();
        if forget {
            // Pull rooms only: a push room's last moves may sit in a delivery not yet
            // polled, which still needs the room (its waits); poll forgets it.
            self.rooms.retain(|r| r.push || !r.forgettable());
        }
        moves
    }

    /// Before a drain: a shard whose worker has not taken every move pushed to it (it naps,
    /// [`crate::shard::Policy::nap_ns`], or has not run yet) gets its worker's remaining
    /// steps run here, on the caller's thread, under the worker's lock (the lock native
    /// ingress and the worker's task take), so that a drain holds every move dispatched
    /// before it: a nap never makes a move miss the game loop's tick. The work is what
    /// the worker would have done next, in the same order (bounded: what is queued).
    fn catch_up(&mut self) {
        for (s, w) in self.shards.iter_mut().zip(&self.workers) {
            let consumed = s.shared.consumed.0.load(Ordering::Acquire);
            s.consumed_cache = consumed;
            if consumed == s.pushed {
                continue;
            }
            let mut w = shard::lock_worker(w);
            for _ in 0..CATCH_UP_STEPS {
                if !matches!(w.step(), shard::Step::Again | shard::Step::Yield) {
                    break;
                }
            }
            // All taken here: the wake-up the moves owed would find nothing to do.
            if s.shared.consumed.0.load(Ordering::Acquire) == s.pushed {
                s.owed = 0;
            }
        }
    }

    /// The drain just built, counted; then the overload events it may have settled.
    fn finish_drain(&mut self) -> Option<Moves> {
        let moves = if self.builder.is_empty() {
            self.pool.put(self.builder.abandon());
            None
        } else {
            let m = self.builder.finish(None);
            self.count_delivery(&m);
            Some(m)
        };
        self.overload_events();
        moves
    }

    /// Push rooms: JavaScript released `shard`'s push delivery; its worker may deliver again.
    /// A release when none of the shard's deliveries is out is ignored (JavaScript releases
    /// each delivery once; this keeps a stray call from letting two out).
    ///
    /// What waited for the release (push rooms' moves, flushes) is delivered right here,
    /// under the worker's lock, when no one holds it: waking the worker's thread for that
    /// cost a context switch per delivery — with native ingress, where a delivery carries a
    /// few moves, as much as the JavaScript thread's own wake-up. When the lock is busy, its
    /// holder is a runtime thread (a worker step, an ingress read, a park's delivery), and
    /// that thread delivers when it next parks ([`Shared::release_to_park`]); a failed,
    /// paused or stopped worker (and inline workers) get the release through their own task.
    pub fn release_delivery(&mut self, shard: u32) {
        let Some(s) = self.shards.get_mut(shard as usize) else {
            return;
        };
        if s.releases >= s.deliveries {
            return;
        }
        s.releases += 1;
        let Some(worker) = self.workers.get(shard as usize) else {
            s.shared.release_delivery();
            return;
        };
        // Before the lock is tried: a holder that lets go after the try sees it at its park.
        s.shared.release_to_park();
        if let Ok(mut w) = worker.try_lock() {
            if !w.release_here() {
                // Released and kicked above: the worker's own task takes it once woken.
                drop(w);
                s.shared.poke();
            }
        }
    }

    /// The buffers deliveries are built in (a finalizer gives each back when JavaScript is
    /// done with it).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Whether rooms keep a histogram of their moves' waits: only with a room overload
    /// mark, which is all that reads them.
    fn rooms_keep_waits(&self) -> bool {
        self.cfg.overload_room_bytes > 0
    }

    /// Counts a delivery handed to JavaScript and records its latencies (from each move's
    /// dispatch stamp to now, overall and per room for overload events) and the size of
    /// each room's batch.
    fn count_delivery(&mut self, m: &Moves) {
        self.counters.delivered += u64::from(m.moves());
        self.counters.batches += u64::from(m.rooms());
        if m.moves() == 0 {
            return;
        }
        let now = crate::clock::now_ns();
        let mut stamps = m.stamps();
        // Without wait histograms no room is looked up (two likely cache misses per room
        // with thousands of rooms).
        let track_waits = self.rooms_keep_waits();
        // Runs of equal values are recorded once with their count: a delivery's moves carry
        // few distinct stamps (a `dispatchStream` chunk's frames share one) and most of its
        // rooms hold one move or a few, in room order.
        let mut waits_run = Run::default();
        let mut sizes_run = Run::default();
        for e in m.room_entries() {
            if e.moves > 0 {
                sizes_run.add(u64::from(e.moves), &mut self.batch_size.recorder);
            }
            let mut waits = if track_waits {
                self.rooms
                    .get_mut(e.room)
                    .and_then(|r| r.waits.as_deref_mut())
            } else {
                None
            };
            for stamp in stamps.by_ref().take(e.moves as usize) {
                let wait = now.saturating_sub(stamp);
                waits_run.add(wait, &mut self.delivered.recorder);
                if let Some(w) = waits.as_deref_mut() {
                    w.record(wait);
                }
            }
        }
        waits_run.flush(&mut self.delivered.recorder);
        sizes_run.flush(&mut self.batch_size.recorder);
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
        self.rooms.contains_key(room)
    }

    /// Asks every shard to answer `token` once everything queued before is delivered.
    pub fn request_flush(&mut self, token: u64) {
        self.overload_events();
        if self.stopper.is_stopped() {
            self.outbox.expect_flush(token, 1);
            self.outbox.publish(None, &[token]);
            return;
        }
        self.outbox.expect_flush(token, self.shards.len());
        for shard in 0..self.shards.len() {
            self.push_control(shard, Control::Flush { token });
        }
    }

    /// Deliveries ready for JavaScript, in order; counts delivered push moves.
    pub fn poll(&mut self) -> Vec<Delivery> {
        self.wake_owed();
        let mut items = self.outbox.take();
        self.count_batches(&items);
        // After the batches: their moves count in the rooms' waits and depths.
        self.overload_events();
        // The events just published, and whatever the workers delivered meanwhile.
        let mut more = self.outbox.take();
        self.count_batches(&more);
        items.append(&mut more);
        items
    }

    fn count_batches(&mut self, items: &[Delivery]) {
        for d in items {
            match d {
                Delivery::Moves(m) => {
                    if let Some(s) = m.shard().and_then(|s| self.shards.get_mut(s as usize)) {
                        s.deliveries += 1;
                    }
                    self.count_delivery(m);
                    // Closed push rooms whose last moves went out are forgotten: rooms of
                    // this delivery's shard (another shard's delivery holding a room's last
                    // moves may not be polled yet, and counting it needs the room).
                    if !self.closing_push.is_empty() {
                        let rooms = &mut self.rooms;
                        let shard = m.shard().map(|s| s as usize);
                        self.closing_push.retain(|&id| {
                            let gone = rooms
                                .get(id)
                                .is_none_or(|r| Some(r.shard) == shard && r.forgettable());
                            if gone {
                                rooms.remove(id);
                            }
                            !gone
                        });
                    }
                }
                // From now on the shard's rooms answer `Closed`.
                Delivery::Failed { shard, .. } => {
                    if let Some(s) = self.shards.get_mut(*shard as usize) {
                        s.failed = true;
                        self.any_failed = true;
                    }
                }
                Delivery::Flushed { .. } | Delivery::Overload(_) | Delivery::Connection(_) => {}
            }
        }
    }

    /// Asks to be woken ([`Core::poll`]'s waker) once capacity may have been freed after the
    /// last `Backpressure`: when the worker of the shard whose queue or arena was full takes
    /// moves off it (or parks with its queue empty). A room's own budget is freed by
    /// JavaScript (a drain, or a push batch released and the next one delivered, which wakes
    /// anyway), so nothing is asked of the worker then.
    pub fn want_writable(&mut self) {
        let Some((shard, pressure)) = self.pressure else {
            return;
        };
        if pressure == Pressure::Room || self.stopper.is_stopped() {
            return;
        }
        let s = &self.shards[shard].shared;
        s.want_writable.store(true, Ordering::SeqCst);
        // Pairs with the worker's fence in `may_sleep`: either it sees the request, or we
        // see that it parked with its queue empty (space now) and answer ourselves.
        std::sync::atomic::fence(Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) && s.want_writable.swap(false, Ordering::AcqRel) {
            self.outbox.notify();
        }
    }

    /// Test hook: the worker of `shard` panics when it reaches this point of its queue
    /// (see [`crate::shard`] for what a failed shard does).
    pub fn fail_shard_for_testing(&mut self, shard: usize) -> Status {
        if self.closed || shard >= self.shards.len() || !self.push_control(shard, Control::Fail) {
            return Status::Closed;
        }
        Status::Ok
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        for (i, v) in self.ingress_verdicts.iter().enumerate() {
            let n = v.load(Ordering::Relaxed);
            c.verdicts[i] += n;
            c.dispatched += n;
            if i == Verdict::Accepted as usize {
                c.accepted += n;
            }
            // Native ingress answers `Backpressure` for one cause only: the room's budget (it
            // stores in place, with no queue or arena between the read and the worker).
            if i == Verdict::Backpressure as usize {
                c.backpressure[Pressure::Room as usize] += n;
            }
        }
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
            .map(|s| {
                let (arena_capacity, arena_wraps) = s
                    .retired_arena
                    .unwrap_or_else(|| (s.producer.capacity(), s.producer.wraps()));
                ShardStats {
                    queue_depth: s.pushed - s.shared.consumed.0.load(Ordering::Acquire),
                    queue_high_water: s.depth_high_water,
                    arena_capacity,
                    arena_used: s.producer.used(),
                    arena_high_water: s.arena_high_water,
                    arena_wraps,
                }
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
            .map(|(id, r)| (id, r.inbox.reserved()))
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
        let deadline = std::time::Instant::now() + PAUSE_ACK;
        // A worker gone for good (a second panic) will never acknowledge: not waited for.
        while self
            .shards
            .iter()
            .any(|s| !s.shared.paused_ack.load(Ordering::SeqCst) && !s.shared.is_dead())
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
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
            // Its figures stay: `stats()` after `close()` reports the arena that was.
            if let Ok((p, _)) = arena::try_ring(0) {
                if s.retired_arena.is_none() {
                    s.retired_arena = Some((s.producer.capacity(), s.producer.wraps()));
                }
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

    /// A core built by [`Core::new_inline`]: steps each worker on this thread
    /// ([`Worker::step`], the runtime's loop) until it would park, pause or stop — its queue
    /// is empty — so it delivers as the runtime's workers do, except never on elapsed time
    /// ([`Policy::inline`]): the outcome depends only on the calls made. Returns the moves
    /// taken off the queues; 0 for a core whose workers run on the runtime, or once shut down.
    #[cfg(any(test, feature = "inline-workers"))]
    pub fn step_workers(&mut self) -> u64 {
        let mut total = 0;
        for slot in &mut self.inline {
            let Some(w) = slot else { continue };
            let shared = Arc::clone(w.shared());
            let before = shared.consumed.0.load(Ordering::Relaxed);
            let last = loop {
                match w.step() {
                    shard::Step::Again | shard::Step::Yield => {}
                    step => break step,
                }
            };
            if last == shard::Step::Stop && shared.is_dead() {
                // Gone for good, as the runtime's task would be: never stepped again.
                *slot = None;
            }
            total += shared.consumed.0.load(Ordering::Relaxed) - before;
        }
        total
    }
}

impl Drop for Core {
    /// Never blocks: a finalizer drops cores on the JavaScript thread.
    fn drop(&mut self) {
        self.closed = true;
        self.stopper.stop_in_background();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::frame::{Header, FLAG_HMAC};
    use crate::outbox::{OverloadEvent, Subject};
    use crate::verdict::Reason;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

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

    #[test]
    fn runs_record_every_sample_once() {
        let (mut rec, mut obs) = crate::latency::pair(Scale::LATENCY_NS);
        let mut run = Run::default();
        let samples = [5_u64, 5, 5, 9, 5, 5, 1_000, 1_000, 9];
        for v in samples {
            run.add(v, &mut rec);
        }
        run.flush(&mut rec);
        run.flush(&mut rec); // nothing left: records nothing
        let s = obs.snapshot(false);
        assert_eq!(s.count(), samples.len() as u64);
        let sum: u32 = samples.iter().map(|&v| u32::try_from(v).unwrap()).sum();
        assert!((s.sum() - f64::from(sum)).abs() < 0.5, "the sum is exact");
        assert_eq!((s.min(), s.max()), (5, 1_000));
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

    /// What a delivery (or a drain) held: its moves' count, rejections and frame bytes,
    /// every room merged.
    #[derive(Debug, Default)]
    struct Got {
        count: u32,
        rejections: Vec<crate::inbox::Rejection>,
        bytes: Vec<u8>,
        rooms: Vec<u32>,
    }

    fn got(m: Option<&Moves>) -> Got {
        let mut g = Got::default();
        if let Some(m) = m {
            g.count = m.moves();
            g.rejections = m.rejection_entries().collect();
            for e in m.room_entries() {
                g.bytes.extend_from_slice(m.frames(&e));
                g.rooms.push(e.room);
            }
        }
        g
    }

    fn drained(c: &mut Core, room: u32) -> Got {
        got(c.drain(room).unwrap().as_ref())
    }

    /// A push delivery's contents, if `d` is one.
    fn pushed(d: &Delivery) -> Option<Got> {
        match d {
            Delivery::Moves(m) => Some(got(Some(m))),
            _ => None,
        }
    }

    /// Releases every push delivery in `items` (as `Dispatcher` does after `onDelivery`).
    fn release_all(c: &mut Core, items: &[Delivery]) {
        for d in items {
            if let Delivery::Moves(m) = d {
                c.release_delivery(m.shard().unwrap());
            }
        }
    }

    /// Requests a flush and polls until it is answered, releasing push deliveries as they
    /// arrive (as `Dispatcher` does after `onDelivery` returns).
    fn flush(c: &mut Core, token: u64) -> Vec<Delivery> {
        c.request_flush(token);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let news = c.poll();
            release_all(c, &news);
            got.extend(news);
            if got.contains(&Delivery::Flushed { token }) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("flush {token} never answered");
    }

    /// Native ingress's push moves wait for the runtime thread's park (or `hold_ns`), and a
    /// release delivers what waited for it on the releasing thread: no worker wake-up.
    #[test]
    fn ingress_moves_go_at_the_park_or_the_hold_and_a_release_delivers_on_its_thread() {
        let (mut c, _) = core(Config {
            shards: 1,
            ..Config::default()
        });
        assert_eq!(c.open_room(1, false, true, None), Status::Ok);
        assert_eq!(c.join(1, 7, None), Status::Ok);
        let _ = flush(&mut c, 1);
        let verdicts: [AtomicU64; Verdict::COUNT] = Default::default();
        let mut sender = shard::Sender::new(1, 7);
        let worker = Arc::clone(&c.workers[0]);
        let hold = shard::Policy::runtime(0).hold_ns.unwrap();
        let moves_of = |items: &[Delivery]| {
            items
                .iter()
                .filter_map(pushed)
                .map(|g| g.count)
                .sum::<u32>()
        };
        let t0 = crate::clock::now_ns();
        let mut ingest = |seq: u32, at: u64| {
            let f = frame(1, 7, seq, b"m", None);
            let done = shard::lock_worker(&worker).ingest(&f, &mut sender, at, 1024, &verdicts);
            assert_eq!(done.accepted, 1);
        };
        // Two reads before the park: nothing out yet; the park delivers both at once.
        ingest(1, t0);
        ingest(2, t0 + 1);
        assert_eq!(moves_of(&c.poll()), 0, "held for the park");
        assert!(
            c.shards[0].shared.park_due.load(Ordering::Acquire),
            "left for the park"
        );
        c.park.run();
        let first = c.poll();
        assert_eq!(moves_of(&first), 2, "one delivery for both reads");
        // While it is out, more moves wait; a thread that never parks delivers once the
        // first held move is `hold_ns` old, but not while a delivery is out.
        ingest(3, t0 + 10);
        ingest(4, t0 + 10 + hold);
        assert_eq!(moves_of(&c.poll()), 0, "a delivery is out");
        // The release delivers them here, before it returns: nothing waits for a worker.
        release_all(&mut c, &first);
        let second = c.poll();
        assert_eq!(moves_of(&second), 2, "delivered by the release itself");
        release_all(&mut c, &second);
        // Past the hold, a read delivers at once.
        ingest(5, t0 + 20 * hold);
        ingest(6, t0 + 21 * hold);
        let third = c.poll();
        assert_eq!(
            moves_of(&third),
            2,
            "the second read found the first held past hold_ns"
        );
        // A release that finds the worker's lock held leaves the next delivery to the
        // holder's park (here the lock is held by this thread, so `try_lock` fails).
        ingest(7, t0 + 30 * hold);
        c.park.run();
        assert_eq!(
            moves_of(&c.poll()),
            0,
            "a delivery is out: the park builds nothing"
        );
        let holder = shard::lock_worker(&worker);
        release_all(&mut c, &third);
        assert_eq!(
            moves_of(&c.poll()),
            0,
            "the lock is held: nothing built here"
        );
        drop(holder);
        c.park.run();
        assert_eq!(moves_of(&c.poll()), 1, "the holder's park delivered it");
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
        let b = drained(&mut c, 1);
        assert_eq!(b.count, 100);
        assert_eq!(b.rejections.len(), 1);
        assert_eq!(b.rejections[0].reason, Reason::Replay);
        assert_eq!(b.bytes, frames.concat());
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
        c.join(1, 7, None);
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
        assert_eq!(
            c.dispatch(&frame(1, 8, 1, b"x", None), Some(8)),
            Verdict::NotMember
        );
        assert_eq!(c.dispatch(&ok, None), Verdict::Accepted);
        assert_eq!(c.counters().verdicts.iter().sum::<u64>(), 9);
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
        c.join(1, 7, None);
        c.join(2, 7, None);
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
    fn a_full_arena_is_named_before_a_room_and_spends_none_of_its_budget() {
        let cfg = Config {
            channel_capacity: 1 << 10,
            arena_bytes: 64 << 10,
            room_bytes: 8192,
            ..Config::default()
        };
        let (mut c, _) = core(cfg);
        for r in 1..=20 {
            c.open_room(r, false, false, None);
            c.join(r, 7, None);
        }
        c.pause(true);
        let payload = [9_u8; 1000];
        let per_room = 8192 / (1000 + frame::FRAME_OVERHEAD as u32);
        // Fill the arena from rooms 2.. (each within its own budget) until it is full.
        let mut arena_full = false;
        'fill: for r in 2..=20 {
            for s in 1..=per_room {
                match c.dispatch(&frame(r, 7, s, &payload, None), None) {
                    Verdict::Accepted => {}
                    Verdict::Backpressure => {
                        arena_full = true;
                        break 'fill;
                    }
                    v => panic!("{v:?}"),
                }
            }
        }
        assert!(arena_full);
        assert_eq!(c.counters.backpressure, [0, 1, 0], "queue, arena, room");
        // Room 1 has all its budget: the arena is the cause, and the budget stays whole.
        for s in 1..=3 {
            assert_eq!(
                c.dispatch(&frame(1, 7, s, &payload, None), None),
                Verdict::Backpressure
            );
        }
        assert_eq!(c.counters.backpressure, [0, 4, 0]);
        assert_eq!(
            c.rooms.get(1).unwrap().inbox.reserved(),
            0,
            "no budget spent"
        );
        c.pause(false);
        flush(&mut c, 1);
        // Paused again (the arena is empty after the flush): room 1's moves stay undelivered,
        // so its budget is not given back behind the test's back.
        c.pause(true);
        // With the arena free again, room 1 takes exactly its budget, then names itself.
        for s in 1..=per_room {
            assert_eq!(
                c.dispatch(&frame(1, 7, s, &payload, None), None),
                Verdict::Accepted,
                "frame {s}"
            );
        }
        assert_eq!(
            c.dispatch(&frame(1, 7, per_room + 1, &payload, None), None),
            Verdict::Backpressure
        );
        assert_eq!(c.counters.backpressure, [0, 4, 1]);
        // A room out of budget while the arena is full too: the arena is named.
        let mut refilled = false;
        'refill: for r in 11..=20 {
            for s in 1..=per_room {
                if c.dispatch(&frame(r, 7, s, &payload, None), None) == Verdict::Backpressure {
                    refilled = true;
                    break 'refill;
                }
            }
        }
        assert!(refilled, "the arena filled again");
        assert_eq!(
            c.rooms.get(1).unwrap().inbox.reserved(),
            per_room as usize * (1000 + frame::FRAME_OVERHEAD),
            "room 1 out of budget"
        );
        let before = c.counters.backpressure;
        assert_eq!(
            c.dispatch(&frame(1, 7, per_room + 1, &payload, None), None),
            Verdict::Backpressure
        );
        assert_eq!(
            c.counters.backpressure,
            [before[0], before[1] + 1, before[2]],
            "queue, arena, room"
        );
        c.pause(false);
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
        let batches: Vec<Got> = got.iter().filter_map(pushed).collect();
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
        // Shard 0: 10 moves (and open, join, flush); shard 1: 1 move.
        assert_eq!(c.step_workers(), 11);
        // A batch of 4 fills during the run and is delivered; the rest wait for its
        // release, so the flush is not answered yet.
        let got = c.poll();
        let counts: Vec<u32> = got.iter().filter_map(pushed).map(|b| b.count).collect();
        assert_eq!(counts, vec![4]);
        assert!(!got.contains(&Delivery::Flushed { token: 7 }));
        let mut delivered = 4;
        for _ in 0..10 {
            c.release_delivery(0);
            assert_eq!(c.step_workers(), 0, "nothing left to validate");
            for d in c.poll() {
                match d {
                    Delivery::Moves(m) => delivered += m.moves(),
                    Delivery::Flushed { token } => {
                        assert_eq!(token, 7);
                        assert_eq!(delivered, 10);
                        assert_eq!(drained(&mut c, 5).count, 1);
                        let k = c.counters();
                        assert_eq!(k.accepted, k.delivered + k.rejected);
                        c.shutdown();
                        assert_eq!(c.step_workers(), 0);
                        return;
                    }
                    Delivery::Overload(_) | Delivery::Connection(_) => {}
                    Delivery::Failed { message, .. } => panic!("{message}"),
                }
            }
        }
        panic!("flush 7 never answered");
    }

    #[test]
    fn flush_waits_for_an_unreleased_push_delivery() {
        let (mut c, _) = core(Config::default());
        c.open_room(5, false, true, None);
        c.join(5, 1, None);
        assert_eq!(
            c.dispatch(&frame(5, 1, 1, b"p", None), None),
            Verdict::Accepted
        );
        let first = flush(&mut c, 1);
        assert!(first.iter().filter_map(pushed).any(|b| b.count == 1));
        // The test's flush released that delivery; deliver one more and hold it.
        assert_eq!(
            c.dispatch(&frame(5, 1, 2, b"p", None), None),
            Verdict::Accepted
        );
        let mut held = false;
        for _ in 0..5_000 {
            if c.poll().iter().any(|d| matches!(d, Delivery::Moves(_))) {
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
            "flush answered while a delivery was held"
        );
        c.release_delivery(0);
        let got = flush(&mut c, 3);
        assert!(got.contains(&Delivery::Flushed { token: 2 }));
    }

    /// Push rooms' moves wait in the worker's staging, not in their inboxes, until a
    /// delivery places them: each room's moves stay in dispatch order and together, across
    /// a delivery held out by JavaScript, rejections, and a room closed and reopened while
    /// its moves waited (they move to its inbox and go out first).
    #[test]
    fn push_rooms_keep_order_across_held_deliveries_and_reopen() {
        let (mut c, _) = core(Config::default());
        for room in 1..=3 {
            assert_eq!(c.open_room(room, false, true, None), Status::Ok);
            assert_eq!(c.join(room, 1, None), Status::Ok);
        }
        let send = |c: &mut Core, room: u32, seq: u32| {
            assert_eq!(
                c.dispatch(&frame(room, 1, seq, &[seq as u8; 3], None), None),
                Verdict::Accepted
            );
        };
        let mut got = Vec::new();
        for seq in 1..=3 {
            for room in 1..=3 {
                send(&mut c, room, seq);
            }
        }
        // Hold the first delivery: what follows waits for its release.
        let mut held = false;
        for _ in 0..5_000 {
            let news = c.poll();
            held |= news.iter().any(|d| matches!(d, Delivery::Moves(_)));
            got.extend(news);
            if held {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(held);
        for seq in 4..=6 {
            for room in 1..=3 {
                send(&mut c, room, seq);
            }
        }
        let mut forged = frame(2, 1, 9, b"x", None);
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(c.dispatch(&forged, None), Verdict::Accepted);
        wait_for_empty_queue(&c);
        assert_eq!(c.close_room(1), Status::Ok);
        assert_eq!(c.open_room(1, false, true, None), Status::Ok);
        assert_eq!(c.join(1, 1, None), Status::Ok);
        send(&mut c, 1, 7);
        send(&mut c, 3, 7);
        wait_for_empty_queue(&c);
        release_all(&mut c, &got);
        got.extend(flush(&mut c, 1));

        let mut seqs: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
        let mut rejected = Vec::new();
        for d in &got {
            let Delivery::Moves(m) = d else { continue };
            let mut seen = HashSet::new();
            for e in m.room_entries() {
                assert!(seen.insert(e.room), "room {} twice in one delivery", e.room);
                let frames = m.frames(&e);
                let mut at = 0;
                let mut n = 0;
                while at < frames.len() {
                    let h = frame::read_header(&frames[at..]).unwrap();
                    assert_eq!(h.room, e.room);
                    assert_eq!(
                        frames[at + h.frame_len() - 33],
                        h.seq as u8,
                        "payload of seq {}",
                        h.seq
                    );
                    seqs.entry(e.room).or_default().push(h.seq);
                    at += h.frame_len();
                    n += 1;
                }
                assert_eq!(n, e.moves);
            }
            assert_eq!(m.stamps().count(), m.moves() as usize);
            assert!(m.stamps().all(|s| s > 0), "every placed move has its stamp");
            rejected.extend(m.rejection_entries().map(|r| (r.room, r.seq, r.reason)));
        }
        assert_eq!(seqs[&1], (1..=7).collect::<Vec<_>>());
        assert_eq!(seqs[&2], (1..=6).collect::<Vec<_>>());
        assert_eq!(seqs[&3], (1..=7).collect::<Vec<_>>());
        assert_eq!(rejected, vec![(2, 9, Reason::BadTag)]);
        for room in 1..=3 {
            assert_eq!(
                c.rooms.get(room).unwrap().inbox.reserved(),
                0,
                "room {room}'s budget given back"
            );
        }
        c.shutdown();
    }

    /// A push room closed with moves still to deliver is kept until a delivery took them,
    /// then forgotten; one reopened meanwhile is not. Only such rooms are looked at when a
    /// delivery is counted (`closing_push`).
    #[test]
    fn closed_push_rooms_are_forgotten_once_their_moves_went_out() {
        let (mut c, _) = core(Config {
            shards: 1,
            ..Config::default()
        });
        for room in [2, 4] {
            assert_eq!(c.open_room(room, false, true, None), Status::Ok);
            assert_eq!(c.join(room, 1, None), Status::Ok);
        }
        let send = |c: &mut Core, room: u32, seq: u32| {
            assert_eq!(
                c.dispatch(&frame(room, 1, seq, b"m", None), None),
                Verdict::Accepted
            );
        };
        send(&mut c, 2, 1);
        let mut held = Vec::new();
        for _ in 0..5_000 {
            held.extend(c.poll());
            if held.iter().any(|d| matches!(d, Delivery::Moves(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        send(&mut c, 2, 2);
        send(&mut c, 4, 1);
        wait_for_empty_queue(&c);
        assert_eq!(c.close_room(2), Status::Ok);
        assert_eq!(c.close_room(4), Status::Ok);
        assert!(c.has_room(2) && c.has_room(4), "kept for their moves");
        assert_eq!(c.closing_push, vec![2, 4]);
        assert_eq!(c.open_room(4, false, true, None), Status::Ok);
        assert_eq!(c.closing_push, vec![2]);
        release_all(&mut c, &held);
        let got = flush(&mut c, 1);
        assert_eq!(
            got.iter().filter_map(pushed).map(|g| g.count).sum::<u32>(),
            2,
            "both waiting moves delivered"
        );
        assert!(!c.has_room(2), "its last move went out: forgotten");
        assert!(c.has_room(4), "reopened: kept");
        assert!(c.closing_push.is_empty());
        c.shutdown();
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
            Verdict::NotMember
        );
        flush(&mut c, 1);
        let b = drained(&mut c, 4);
        assert_eq!(b.count, 1);
        let reasons: Vec<Reason> = b.rejections.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, vec![Reason::BadTag]);
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
        assert_eq!(drained(&mut c, 1).count, 1);
        assert_eq!(c.drain(1).unwrap_err(), Status::UnknownRoom);
        assert_eq!(c.open_room(1, false, false, None), Status::Ok);
        // Nothing pending: forgotten at once.
        assert_eq!(c.close_room(1), Status::Ok);
        assert!(!c.has_room(1));
    }

    /// A move must never overtake a control call queued just before it, nor a control a
    /// move queued before it (found in review: with one load of the control sequence, a
    /// worker preempted between the load and its `peek` validated the move first). Key
    /// rotation in an HMAC room makes both visible: a move signed with the new key validates
    /// only if the `join` before it was applied first, one signed with the old key only if
    /// the rotation after it was not. (`leave` then a move answers `NotMember` at once.)
    #[test]
    fn controls_and_moves_stay_in_order_under_load() {
        let (mut c, _) = core(Config::default());
        let (a, b) = ([1_u8; 32], [2_u8; 32]);
        let (ka, kb) = (PlayerKey::new(&a).unwrap(), PlayerKey::new(&b).unwrap());
        c.open_room(1, true, false, None);
        let rounds = 20_000u32;
        for i in 0..rounds {
            assert_eq!(c.join(1, 1, Some(&a)), Status::Ok);
            assert_eq!(
                c.dispatch(&frame(1, 1, 2 * i + 1, b"x", Some(&ka)), None),
                Verdict::Accepted
            );
            assert_eq!(c.join(1, 1, Some(&b)), Status::Ok, "rotation");
            assert_eq!(
                c.dispatch(&frame(1, 1, 2 * i + 2, b"x", Some(&kb)), None),
                Verdict::Accepted
            );
            assert_eq!(c.leave(1, 1), Status::Ok);
            assert_eq!(
                c.dispatch(&frame(1, 1, 2 * i + 3, b"x", Some(&kb)), None),
                Verdict::NotMember
            );
            if i % 1000 == 999 {
                flush(&mut c, u64::from(i));
                let batch = drained(&mut c, 1);
                assert_eq!(batch.count, 2000, "round {i}");
                assert!(batch.rejections.is_empty(), "{:?}", batch.rejections[0]);
            }
        }
        let k = c.counters();
        assert_eq!(k.verdicts[Verdict::NotMember as usize], u64::from(rounds));
        assert_eq!(k.rejected, 0);
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

    /// Buckets live apart from the member table, their places reused: a player who joins
    /// into the place of one who left (and drained their bucket) starts full, a second
    /// `join` keeps a drained bucket, and a member who leaves and comes back starts full.
    #[test]
    fn a_bucket_place_given_back_starts_full_for_the_next_member() {
        let (mut c, _) = core(Config::default());
        let rate = RateLimit {
            per_second: 0.001,
            burst: 3.0,
        };
        c.open_room(1, false, false, Some(rate));
        let burst = |c: &mut Core, player: u32, from: u32| -> Vec<Verdict> {
            (from..from + 4)
                .map(|s| c.dispatch(&frame(1, player, s, b"x", None), Some(player)))
                .collect()
        };
        let spent = [
            Verdict::Accepted,
            Verdict::Accepted,
            Verdict::Accepted,
            Verdict::RateLimited,
        ];
        c.join(1, 7, None);
        assert_eq!(burst(&mut c, 7, 1), spent);
        assert_eq!(c.join(1, 7, None), Status::Ok);
        assert_eq!(
            c.dispatch(&frame(1, 7, 5, b"x", None), Some(7)),
            Verdict::RateLimited,
            "joining again keeps the drained bucket"
        );
        assert_eq!(c.leave(1, 7), Status::Ok);
        assert_eq!(c.free_buckets.len(), 1);
        c.join(1, 8, None);
        assert!(c.free_buckets.is_empty(), "the place is reused");
        assert_eq!(burst(&mut c, 8, 1), spent);
        c.join(1, 7, None);
        assert_eq!(burst(&mut c, 7, 6), spent);
        assert_eq!(c.buckets.len(), 2);
        // closeRoom gives every member's place back.
        assert_eq!(c.close_room(1), Status::Ok);
        assert_eq!(c.free_buckets.len(), 2);
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

    /// Non-members are refused at once and spend nothing: a flood from player 999 leaves
    /// room 1's budget, its shard's queue and arena untouched, and player 1 unaffected.
    #[test]
    fn non_members_spend_nothing() {
        let cfg = Config {
            room_bytes: 4096,
            ..Config::default()
        };
        let (mut c, _) = core(cfg);
        let rate = RateLimit {
            per_second: 1.0,
            burst: 1.0,
        };
        c.open_room(1, false, false, Some(rate));
        c.join(1, 1, None);
        c.pause(true);
        for seq in 1..=200 {
            let f = frame(1, 999, seq, b"flood", None);
            assert_eq!(c.dispatch(&f, Some(999)), Verdict::NotMember);
            assert_eq!(c.dispatch(&f, None), Verdict::NotMember);
        }
        let chunk: Vec<u8> = (1..=50)
            .flat_map(|s| frame(1, 999, s, b"x", None))
            .collect();
        let out = c.dispatch_stream(&chunk, Some(999));
        assert_eq!(
            (out.consumed, out.accepted, out.rejected),
            (chunk.len(), 0, 50)
        );
        assert_eq!(c.room_stats(10), vec![], "no budget reserved");
        assert_eq!(c.shard_stats()[0].queue_depth, 0);
        assert_eq!(c.shard_stats()[0].arena_used, 0);
        // Player 1's one token is still there.
        assert_eq!(
            c.dispatch(&frame(1, 1, 1, b"mine", None), Some(1)),
            Verdict::Accepted
        );
        c.pause(false);
        flush(&mut c, 1);
        let b = drained(&mut c, 1);
        assert_eq!((b.count, b.rejections.len()), (1, 0));
        assert_eq!(c.counters().verdicts[Verdict::NotMember as usize], 450);
    }

    /// After `close`, a stream that starts with bytes that are not a header stops there, as
    /// before, but its one verdict is `Closed` (the first check), as the js engine answers.
    #[test]
    fn stream_after_close_counts_closed() {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        c.close_input();
        let out = c.dispatch_stream(b"not a frame header at all", None);
        assert!(out.malformed && out.consumed == 0);
        let k = c.counters();
        assert_eq!(k.verdicts[Verdict::Closed as usize], 1);
        assert_eq!(k.verdicts[Verdict::Malformed as usize], 0);
        let two = [frame(1, 1, 1, b"a", None), frame(1, 1, 2, b"b", None)].concat();
        let out = c.dispatch_stream(&two, None);
        assert_eq!(
            (out.consumed, out.rejected, out.malformed),
            (two.len(), 2, false)
        );
        assert_eq!(c.counters().verdicts[Verdict::Closed as usize], 3);
    }

    /// Polls until `pred` holds for what arrived (releasing push batches), or panics.
    fn poll_until(
        c: &mut Core,
        what: &str,
        mut pred: impl FnMut(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let mut got = Vec::new();
        for _ in 0..5_000 {
            let news = c.poll();
            release_all(c, &news);
            got.extend(news);
            if pred(&got) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("never: {what}");
    }

    /// A worker that panics marks its shard failed and is reported; its rooms then answer
    /// `Closed`; everything accepted is still accounted (validated moves delivered, the rest
    /// rejected `ShardFailed`); the other shard goes on; flushes are answered, even after a
    /// second panic stops the failed worker for good.
    #[test]
    #[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
    fn a_panicking_worker_fails_its_shard_only() {
        let cfg = Config {
            shards: 2,
            ..Config::default()
        };
        let (mut c, _) = core(cfg);
        // Rooms 2 and 4 on shard 0 (2: push), room 3 on shard 1.
        for (room, push) in [(2, true), (3, false), (4, false)] {
            c.open_room(room, false, push, None);
            c.join(room, 1, None);
        }
        for seq in 1..=20 {
            assert_eq!(
                c.dispatch(&frame(4, 1, seq, b"v", None), None),
                Verdict::Accepted
            );
        }
        flush(&mut c, 1);
        c.pause(true);
        // Queued before the failure point: validated as usual.
        for seq in 21..=30 {
            assert_eq!(
                c.dispatch(&frame(4, 1, seq, b"v", None), None),
                Verdict::Accepted
            );
        }
        assert_eq!(c.fail_shard_for_testing(0), Status::Ok);
        for seq in 31..=35 {
            // Queued after the failure point: rejected `ShardFailed` too.
            assert_eq!(
                c.dispatch(&frame(4, 1, seq, b"v", None), None),
                Verdict::Accepted
            );
            assert_eq!(
                c.dispatch(&frame(2, 1, seq, b"p", None), None),
                Verdict::Accepted
            );
        }
        c.pause(false);
        let mut got = poll_until(&mut c, "the failure report", |d| {
            d.iter()
                .any(|d| matches!(d, Delivery::Failed { shard: 0, .. }))
        });
        let message = got
            .iter()
            .find_map(|d| match d {
                Delivery::Failed { message, .. } => Some(message.clone()),
                _ => None,
            })
            .unwrap();
        assert!(message.contains("on purpose"), "{message}");
        // Reported: shard 0's rooms refuse, shard 1's go on.
        assert_eq!(
            c.dispatch(&frame(4, 1, 99, b"v", None), None),
            Verdict::Closed
        );
        assert_eq!(c.join(2, 5, None), Status::Closed);
        assert_eq!(
            c.open_room(6, false, false, None),
            Status::Closed,
            "room 6 is on shard 0"
        );
        assert_eq!(
            c.dispatch(&frame(3, 1, 1, b"w", None), None),
            Verdict::Accepted
        );
        got.extend(flush(&mut c, 2));
        let push_rejected: usize = got
            .iter()
            .filter_map(|d| match d {
                Delivery::Moves(m) => Some(m.rejection_entries().filter(|r| r.room == 2).count()),
                _ => None,
            })
            .sum();
        assert_eq!(push_rejected, 5);
        let b4 = drained(&mut c, 4);
        assert_eq!(b4.count, 30, "queued before the failure point: delivered");
        assert_eq!(b4.rejections.len(), 5);
        assert!(b4
            .rejections
            .iter()
            .all(|r| r.reason == Reason::ShardFailed));
        assert_eq!(drained(&mut c, 3).count, 1);
        let k = c.counters();
        assert_eq!(k.accepted, k.delivered + k.rejected);
        assert_eq!(k.reasons[Reason::ShardFailed as usize], 10);
        // A second panic stops the failed worker; flushes are still answered.
        c.push_control(0, Control::Fail);
        poll_until(&mut c, "the second report", |d| {
            d.iter()
                .any(|d| matches!(d, Delivery::Failed { shard: 0, .. }))
        });
        flush(&mut c, 3);
        flush(&mut c, 4);
        // The stopped worker is not waited for, and takes no more controls.
        let t = std::time::Instant::now();
        c.pause(true);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "pause waited for a dead worker"
        );
        c.pause(false);
        assert_eq!(c.fail_shard_for_testing(0), Status::Closed);
        assert_eq!(
            c.dispatch(&frame(3, 1, 2, b"w", None), None),
            Verdict::Accepted
        );
        flush(&mut c, 5);
        assert_eq!(drained(&mut c, 3).count, 1);
        c.shutdown();
    }

    /// `want_writable` after a full queue: the worker wakes JavaScript once it takes moves
    /// off the queue (or parks with it empty), without news in the outbox.
    #[test]
    fn want_writable_wakes_once_the_queue_drains() {
        let cfg = Config {
            channel_capacity: 64,
            ..Config::default()
        };
        let (mut c, wakes) = core(cfg);
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        flush(&mut c, 1);
        c.pause(true);
        let mut seq = 0;
        loop {
            seq += 1;
            if c.dispatch(&frame(1, 1, seq, b"q", None), None) == Verdict::Backpressure {
                break;
            }
        }
        let before = wakes.load(Ordering::SeqCst);
        c.poll(); // clears the pending wake-up flag, as JavaScript's poll does
        c.want_writable();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            before,
            "paused: nothing freed"
        );
        c.pause(false);
        for _ in 0..2_000 {
            if wakes.load(Ordering::SeqCst) > before {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            wakes.load(Ordering::SeqCst) > before,
            "no wake-up after the queue drained"
        );
        assert_eq!(
            c.dispatch(&frame(1, 1, seq, b"q", None), None),
            Verdict::Accepted
        );
        // A room's own budget is JavaScript's to free: nothing is asked of the worker.
        c.shutdown();
    }

    /// Dropping a core (what a garbage-collection finalizer does) never waits for its
    /// workers: here one is stuck in a 1.5 s step, and the drop still returns at once; the
    /// runtime is joined in the background ([`runtime::join_retired`] waits for it).
    #[test]
    fn dropping_a_core_never_blocks() {
        let (mut c, wakes) = core(Config::default());
        c.push_control(0, Control::Stall(Duration::from_millis(1_500)));
        std::thread::sleep(Duration::from_millis(50)); // the worker is inside the stall
        let t = std::time::Instant::now();
        drop(c);
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "drop blocked for {took:?}"
        );
        let t = std::time::Instant::now();
        runtime::join_retired();
        assert!(
            t.elapsed() > Duration::from_millis(500),
            "the stall outlived the drop"
        );
        // The waker was dropped with the core: nothing woke JavaScript after it.
        let after = wakes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(wakes.load(Ordering::SeqCst), after);
    }

    /// Inline workers stop for good after a second panic, as runtime tasks do: moves queued
    /// behind it stay unvalidated (the loss docs/architecture.md describes), in both modes.
    #[test]
    fn an_inline_worker_stops_for_good_after_a_second_panic() {
        let mut c = Core::new_inline(Config::default(), Box::new(|| {})).unwrap();
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        assert_eq!(c.fail_shard_for_testing(0), Status::Ok);
        assert_eq!(
            c.dispatch(&frame(1, 1, 1, b"a", None), None),
            Verdict::Accepted
        );
        assert_eq!(c.step_workers(), 1, "rejected ShardFailed in failed mode");
        assert!(c
            .poll()
            .iter()
            .any(|d| matches!(d, Delivery::Failed { shard: 0, .. })));
        assert_eq!(c.fail_shard_for_testing(0), Status::Ok);
        assert_eq!(c.step_workers(), 0);
        assert_eq!(
            c.fail_shard_for_testing(0),
            Status::Closed,
            "dead: takes nothing"
        );
        assert_eq!(c.step_workers(), 0, "never stepped again");
        c.request_flush(9);
        assert!(
            c.poll().contains(&Delivery::Flushed { token: 9 }),
            "answered by the producer"
        );
        let b = drained(&mut c, 1);
        assert_eq!(b.rejections[0].reason, Reason::ShardFailed);
        c.shutdown();
    }

    /// Rooms live in slots that members name: a forgotten room's slot serves the next room
    /// with no member of the old one reaching it, and a closed room kept for its pending
    /// moves keeps its slot when reopened, its members gone until they join again — in
    /// `dispatch`'s table and in the worker's.
    #[test]
    fn room_slots_are_reused_without_stale_members() {
        let (mut c, _) = core(Config::default());
        let send = |c: &mut Core, room, player, seq| {
            c.dispatch(&frame(room, player, seq, b"m", None), None)
        };
        assert_eq!(c.open_room(1, false, false, None), Status::Ok);
        assert_eq!(c.join(1, 7, None), Status::Ok);
        assert_eq!(c.close_room(1), Status::Ok);
        assert!(!c.has_room(1), "nothing pending: forgotten at once");
        assert_eq!(c.open_room(2, false, false, None), Status::Ok);
        assert_eq!(c.rooms.slot(2), Some(0), "room 1's slot is reused");
        assert_eq!(c.join(2, 8, None), Status::Ok);
        flush(&mut c, 1);
        assert_eq!(send(&mut c, 1, 7, 1), Verdict::UnknownRoom);
        assert_eq!(send(&mut c, 2, 7, 1), Verdict::NotMember);
        assert_eq!(send(&mut c, 2, 8, 1), Verdict::Accepted);

        assert_eq!(c.open_room(3, false, false, None), Status::Ok);
        assert_eq!(c.join(3, 9, None), Status::Ok);
        assert_eq!(send(&mut c, 3, 9, 1), Verdict::Accepted);
        let slot = c.rooms.slot(3);
        assert_eq!(c.close_room(3), Status::Ok);
        assert_eq!(send(&mut c, 3, 9, 2), Verdict::UnknownRoom);
        assert_eq!(
            c.open_room(3, false, false, None),
            Status::Ok,
            "kept for its pending move"
        );
        assert_eq!(c.rooms.slot(3), slot);
        assert_eq!(
            send(&mut c, 3, 9, 3),
            Verdict::NotMember,
            "closing removed its members"
        );
        assert_eq!(c.join(3, 9, None), Status::Ok);
        // Sequence 1 again: the worker forgot the closed room's members (their windows)
        // too, or it would answer Replay.
        assert_eq!(send(&mut c, 3, 9, 1), Verdict::Accepted);
        flush(&mut c, 2);
        let two = drained(&mut c, 2);
        assert_eq!((two.count, two.rooms), (1, vec![2]));
        let three = drained(&mut c, 3);
        assert_eq!((three.count, three.rooms), (2, vec![3]));
        assert!(three.rejections.is_empty(), "{:?}", three.rejections);
        c.shutdown();
    }

    /// A core with room 1 and player 1, deferred wake-ups, and its worker parked (it spins
    /// briefly first).
    fn parked_with_deferred_wakes() -> Core {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        flush(&mut c, 1);
        c.defer_wakes(true);
        std::thread::sleep(Duration::from_millis(20));
        c
    }

    /// Waits (up to 2 s) for shard 0's worker to take every queued move.
    fn wait_for_empty_queue(c: &Core) {
        for _ in 0..2_000 {
            if c.shard_stats()[0].queue_depth == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Deferred wake-ups: a parked worker stays parked through one-frame dispatches until
    /// the owed wake-up is paid (once for many calls), or until a shard owes `WAKE_EVERY`.
    #[test]
    fn deferred_wakes_are_paid_once_per_turn() {
        let mut c = parked_with_deferred_wakes();
        for seq in 1..=10 {
            assert_eq!(
                c.dispatch(&frame(1, 1, seq, b"d", None), None),
                Verdict::Accepted
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.shard_stats()[0].queue_depth, 10, "nobody woke the worker");
        assert!(c.wake_due(), "the caller is told: the worker sleeps");
        assert!(c.wake_owed());
        assert!(!c.wake_due());
        assert!(!c.wake_owed(), "paid once");
        wait_for_empty_queue(&c);
        assert_eq!(c.shard_stats()[0].queue_depth, 0);
        // A long burst never waits for more than WAKE_EVERY moves.
        std::thread::sleep(Duration::from_millis(20));
        for seq in 11..=(11 + WAKE_EVERY) {
            assert_eq!(
                c.dispatch(&frame(1, 1, seq, b"d", None), None),
                Verdict::Accepted
            );
        }
        wait_for_empty_queue(&c);
        assert_eq!(c.shard_stats()[0].queue_depth, 0, "woken at WAKE_EVERY");
        // A drain pays what is owed.
        c.dispatch(&frame(1, 1, 200, b"d", None), None);
        let _ = c.drain(1);
        flush(&mut c, 2);
        c.shutdown();
    }

    /// Deferred wake-ups and streams: a stream asks whether its workers sleep once, at the
    /// end of the call, and a parked worker's moves are still reported as needing the
    /// wake-up (and wait for it).
    #[test]
    fn a_stream_to_a_parked_worker_is_reported_due() {
        let mut c = parked_with_deferred_wakes();
        let chunk: Vec<u8> = (1..=10)
            .flat_map(|seq| frame(1, 1, seq, b"s", None))
            .collect();
        let out = c.dispatch_stream(&chunk, None);
        assert_eq!((out.accepted, out.consumed), (10, chunk.len()));
        assert!(c.wake_due(), "the caller is told: the worker sleeps");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.shard_stats()[0].queue_depth, 10, "nobody woke the worker");
        assert!(c.wake_owed());
        wait_for_empty_queue(&c);
        assert_eq!(c.shard_stats()[0].queue_depth, 0);
        c.shutdown();
    }

    /// A worker of pull rooms that just took moves naps (`Policy::nap_ns`) instead of
    /// sleeping: a move dispatched then is not reported as needing a wake-up, and the
    /// worker still takes it, at the end of its nap, with no wake-up ever paid.
    #[test]
    fn a_napping_worker_takes_moves_without_a_wake_up() {
        let (mut c, _) = core(Config::default());
        c.open_room(1, false, false, None);
        c.join(1, 1, None);
        flush(&mut c, 1);
        c.defer_wakes(true);
        let mut seq = 0;
        let mut napping = 0;
        for _ in 0..50 {
            // Keep the worker busy: a burst, paid for, taken.
            for _ in 0..20 {
                seq += 1;
                assert_eq!(
                    c.dispatch(&frame(1, 1, seq, b"d", None), None),
                    Verdict::Accepted
                );
            }
            c.wake_owed();
            while c.shard_stats()[0].queue_depth > 0 {
                std::thread::yield_now();
            }
            // At once: the worker naps (or, on a slow machine, may already sleep).
            seq += 1;
            c.dispatch(&frame(1, 1, seq, b"d", None), None);
            if c.wake_due() {
                c.wake_owed();
            } else {
                napping += 1;
            }
            let mut waited = 0;
            while c.shard_stats()[0].queue_depth > 0 {
                assert!(waited < 2_000, "a move left waiting without a wake-up");
                std::thread::sleep(Duration::from_millis(1));
                waited += 1;
            }
        }
        assert!(napping > 0, "the worker never napped");
        assert_eq!(c.drain_all().map_or(0, |m| m.moves()), seq);
        c.shutdown();
    }

    /// A drain holds every move dispatched before it, whether the worker napped, slept or
    /// ran: it takes the worker's remaining steps itself (`Core::catch_up`).
    #[test]
    fn a_drain_holds_every_move_dispatched_before_it() {
        let (mut c, _) = core(Config::default());
        for room in [1, 2, 3] {
            c.open_room(room, false, false, None);
            c.join(room, 1, None);
        }
        flush(&mut c, 1);
        c.defer_wakes(true);
        let mut seq = 0;
        for round in 0..300_u32 {
            let n = 1 + round % 5;
            for i in 0..n {
                seq += 1;
                let room = 1 + seq % 3;
                assert_eq!(
                    c.dispatch(&frame(room, 1, seq, b"d", None), None),
                    Verdict::Accepted,
                    "{i}"
                );
            }
            // Sometimes pay the wake-up (the worker races the drain), sometimes not.
            if round % 3 == 0 {
                c.wake_owed();
            }
            let got = c.drain_all().map_or(0, |m| m.moves());
            assert_eq!(
                got, n,
                "round {round}: a drain missed moves dispatched before it"
            );
            if round % 50 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        c.shutdown();
    }
}
