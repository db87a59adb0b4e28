//! A shard: the worker side of one ingress arena.
//!
//! The worker takes moves from the arena and control operations from the control queue
//! in one order (their sequence numbers), validates each move (session, tag in constant
//! time, replay window), stages it (a push room's: [`Staging`]) or appends it to its room's
//! inbox (a pull room's), or records a rejection in the inbox, and
//! delivers its push rooms — all of them in one delivery ([`crate::delivery`]) — when its
//! queue runs dry or a room's batch is full. At most one push delivery of a shard is out
//! with JavaScript: the next waits until it is released ([`Shared::out`]).
//!
//! # One loop
//! [`Worker::step`] is the worker's whole policy: take up to [`TURN`] items, deliver when
//! the queue runs dry, a batch fills, a released batch asks for it, or (under sustained
//! load) [`Policy::hold_ns`] has passed; spin briefly; announce sleep. It returns what the
//! driver should do next ([`Step`]); the spin is the driver's, without the worker's lock
//! ([`Step::Spin`], then [`Worker::settle`]). [`drive`] is the tokio task the runtime
//! spawns; the inline mode of `Core` (fuzzing) and the hand-off test call the same `step`,
//! so the loop that ships is the loop that is tested.
//!
//! # Failure
//! A panic inside a step (a bug of this crate) never leaves the worker: it is caught, the
//! shard is marked failed and reported ([`crate::outbox::Delivery::Failed`]), and the
//! worker goes on in failed mode: every move it had not validated yet, and every move that
//! still arrives, is rejected with [`Reason::ShardFailed`] and delivered like any
//! rejection; controls and flushes keep working. A panic in failed mode stops the worker
//! for good: it answers every flush queued on the shard (and later ones are answered by the
//! producer), so nothing waits forever; moves still in its arena are then lost, which the
//! failure report says.
//!
//! # Allocation
//! Validating a move allocates nothing: the frame is read in place from the arena and
//! copied into preallocated memory (the staging, sized like the arena; a pull room's
//! inbox). Rejections push onto a vector whose capacity is kept; control operations and
//! deliveries may allocate.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::alloc::HotPath;
use crate::arena::Consumer;
use crate::auth::{self, PlayerKey};
use crate::delivery::{Builder, Placement, Pool};
use crate::frame;
use crate::inbox::{Inbox, Rejection};
use crate::latency::Recorder;
use crate::members::{Members, Rooms, FAR, NEAR, NEAREST};
use crate::outbox::Outbox;
use crate::ratelimit::{Bucket, RateLimit};
use crate::verdict::{Reason, Verdict};
use crate::window::ReplayWindow;
use crate::IdHashBuilder;

/// A control operation, ordered with the moves of its shard.
pub enum Control {
    OpenRoom {
        inbox: Arc<Inbox>,
        hmac: bool,
        push: bool,
        /// The room's rate limit, which native ingress applies per connection.
        rate: Option<RateLimit>,
    },
    Join {
        room: u32,
        player: u32,
        key: Option<Box<PlayerKey>>,
    },
    Leave {
        room: u32,
        player: u32,
    },
    CloseRoom {
        room: u32,
    },
    Flush {
        token: u64,
    },
    /// Test hook (`failShardForTesting`): the worker panics when it takes this control.
    Fail,
    /// Unit tests: the worker blocks for this long when it takes this control.
    #[cfg(test)]
    Stall(Duration),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OpenRoom {
                inbox, hmac, push, ..
            } => {
                write!(f, "OpenRoom({}, hmac={hmac}, push={push})", inbox.room())
            }
            Self::Join { room, player, key } => {
                write!(f, "Join({room}, {player}, key={})", key.is_some())
            }
            Self::Leave { room, player } => write!(f, "Leave({room}, {player})"),
            Self::CloseRoom { room } => write!(f, "CloseRoom({room})"),
            Self::Flush { token } => write!(f, "Flush({token})"),
            Self::Fail => write!(f, "Fail"),
            #[cfg(test)]
            Self::Stall(d) => write!(f, "Stall({d:?})"),
        }
    }
}

/// A value alone on its cache line (no false sharing between producer and worker).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// Moves or controls a worker takes per turn before it checks for deliveries and yields.
pub const TURN: usize = 256;

/// How a worker decides when to deliver and when to park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A push room's batch is delivered once it holds this many moves.
    pub batch_full: u32,
    /// The longest a busy worker (one whose queue does not run dry) holds validated moves
    /// before it delivers them anyway; `None`: never on elapsed time, so that deliveries
    /// depend only on the calls made (inline workers, for fuzzing). Smaller costs more
    /// wake-ups of JavaScript and smaller batches; larger adds latency under sustained load.
    pub hold_ns: Option<u64>,
    /// Empty polls a worker spins through before it announces sleep.
    pub spins: u32,
    /// How long a busy worker of pull rooms only naps when its queue runs dry, instead of
    /// announcing sleep; `None`: never naps. A napping worker is not woken by moves (the
    /// producer's wake-up finds it not sleeping and costs one load), only by controls,
    /// pokes and the end of the nap: no JavaScript-side wake-up (an eventfd write and often
    /// a context switch) per event-loop turn while moves keep coming. Pull rooms' moves
    /// are read at `drain` time, so the nap delays nothing JavaScript can see except a
    /// move validated after a drain it would just have made (at most the nap). A nap that
    /// finds no work ends the streak: the worker then sleeps as usual.
    pub nap_ns: Option<u64>,
    /// Native ingress leaves its push moves to the runtime thread's park (at most
    /// `hold_ns` after the first of them): every read a thread serves between two parks
    /// goes out in one delivery, and JavaScript is woken once for them
    /// ([`crate::runtime::ParkDeliveries`]). `false`: delivered after each read.
    pub park_delivery: bool,
}

impl Policy {
    /// The runtime's workers.
    pub const fn runtime(batch_full: u32) -> Self {
        Self {
            batch_full,
            hold_ns: Some(100_000),
            spins: 200,
            nap_ns: Some(1_000_000),
            park_delivery: true,
        }
    }

    /// Workers run on the caller's thread at points it chooses: no time-based delivery, no
    /// spinning.
    pub const fn inline(batch_full: u32) -> Self {
        Self {
            batch_full,
            hold_ns: None,
            spins: 0,
            nap_ns: None,
            park_delivery: false,
        }
    }
}

/// What the driver of a worker does after a [`Worker::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Work may be waiting: step again at once.
    Again,
    /// A full turn ran: let other tasks run, then step again.
    Yield,
    /// The queue ran dry and nothing asks for a nap: look for work for a moment without the
    /// worker's lock ([`drive`]), then step again, or [`Worker::settle`] if none came.
    Spin,
    /// The worker announced sleep: wait for a wake-up ([`Shared::notify`]), then step again.
    Park,
    /// The worker of pull rooms ran dry while busy ([`Policy::nap_ns`]): wait for that long
    /// or a notification, whichever comes first, then step again.
    Nap(Duration),
    /// Paused (test hook): wait for a poke, then step again.
    Paused,
    /// Stopped, or gone for good after a second panic: return.
    Stop,
}

/// The control queue and whether its worker is gone for good.
#[derive(Debug, Default)]
struct Controls {
    queue: VecDeque<(u64, Control)>,
    /// The worker stopped after a panic in failed mode: nothing takes controls any more.
    dead: bool,
}

/// State shared by the producer (JavaScript thread) and the worker of one shard.
#[derive(Debug)]
pub struct Shared {
    controls: Mutex<Controls>,
    /// Sequence number of the oldest queued control, or `u64::MAX`.
    next_control: AtomicU64,
    /// Moves the worker has taken from the arena (validated or rejected). Written only by
    /// the worker, on a cache line of its own; the producer compares it with its own count
    /// of moves pushed, and reads it only when its cached copy says the queue is full.
    pub consumed: Padded<AtomicU64>,
    /// The worker is parked (or about to be) and needs a notification.
    pub sleeping: AtomicBool,
    /// The worker naps ([`Step::Nap`]): moves do not wake it, controls do.
    pub napping: AtomicBool,
    pub notify: tokio::sync::Notify,
    pub paused: AtomicBool,
    /// The worker saw `paused` and is idle until it is cleared.
    pub paused_ack: AtomicBool,
    pub stop: AtomicBool,
    /// A push delivery was released: try delivering again.
    pub kick: AtomicBool,
    /// A push delivery of this shard is out with JavaScript, not yet released: the worker
    /// builds no other until [`Shared::release_delivery`].
    out: AtomicBool,
    /// The producer met `Backpressure` on this shard's queue or arena and wants to hear
    /// when the worker frees some ([`crate::outbox::Outbox::notify`]), once.
    pub want_writable: AtomicBool,
    /// Rejections by reason.
    pub reasons: [AtomicU64; Reason::COUNT],
    /// The worker stopped for good after a second panic (see the module docs).
    dead: AtomicBool,
    /// Native ingress left push moves for the next runtime thread about to park to deliver
    /// ([`crate::runtime::ParkDeliveries`]).
    pub park_due: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            controls: Mutex::new(Controls::default()),
            next_control: AtomicU64::new(u64::MAX),
            consumed: Padded(AtomicU64::new(0)),
            sleeping: AtomicBool::new(false),
            napping: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            paused: AtomicBool::new(false),
            paused_ack: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            kick: AtomicBool::new(false),
            out: AtomicBool::new(false),
            want_writable: AtomicBool::new(false),
            reasons: Default::default(),
            dead: AtomicBool::new(false),
            park_due: AtomicBool::new(false),
        }
    }
}

impl Shared {
    fn controls(&self) -> MutexGuard<'_, Controls> {
        self.controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the worker stopped for good (after a second panic).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Producer: queues a control operation with sequence number `seq`.
    ///
    /// # Errors
    /// The control, handed back, when the worker is gone for good (see the module docs):
    /// nothing will take it, so the caller answers it itself (a flush) or drops it.
    pub fn push_control(&self, seq: u64, control: Control) -> Result<(), Control> {
        let mut c = self.controls();
        if c.dead {
            return Err(control);
        }
        c.queue.push_back((seq, control));
        if c.queue.len() == 1 {
            self.next_control.store(seq, Ordering::Release);
        }
        Ok(())
    }

    fn pop_control(&self) -> Option<Control> {
        let mut c = self.controls();
        let (_, control) = c.queue.pop_front()?;
        let next = c.queue.front().map_or(u64::MAX, |(s, _)| *s);
        self.next_control.store(next, Ordering::Release);
        Some(control)
    }

    /// The worker is gone for good: refuses later controls and returns the flush tokens of
    /// those queued, for the worker to answer.
    fn bury(&self) -> Vec<u64> {
        let mut c = self.controls();
        c.dead = true;
        self.dead.store(true, Ordering::Release);
        self.next_control.store(u64::MAX, Ordering::Release);
        c.queue
            .drain(..)
            .filter_map(|(_, control)| match control {
                Control::Flush { token } => Some(token),
                _ => None,
            })
            .collect()
    }

    /// Producer: wakes the worker if it sleeps. The fence pairs with the worker's in
    /// [`Worker::may_sleep`] so that a record published before it is never missed.
    pub fn wake(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Producer, after pushing a move: whether the worker announced sleep (and so needs
    /// [`Shared::wake`]). The fence pairs with the worker's in [`Worker::may_sleep`]: either
    /// the worker sees the move, or this sees it asleep.
    pub fn sleeps(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Producer: wakes the worker if it sleeps or naps, for a control operation (which a
    /// nap must not hold back: a flush waits on it).
    pub fn wake_for_control(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel)
            || self.napping.load(Ordering::Relaxed)
        {
            self.notify.notify_one();
        }
    }

    /// Producer: JavaScript released the shard's push delivery; the worker may deliver again.
    pub fn release_delivery(&self) {
        self.out.store(false, Ordering::Release);
        self.kick.store(true, Ordering::SeqCst);
        self.poke();
    }

    /// JavaScript released the shard's push delivery while a runtime thread holds the
    /// worker's lock (or may): that thread delivers what waited when it next parks
    /// ([`crate::runtime::ParkDeliveries`]), and a worker task that holds it (busy with
    /// dispatched moves) at the end of its turn (`kick`, without a wake-up: a parked worker
    /// is not needed for this). The fence pairs with the park's: either the holder's park
    /// sees `park_due`, or the holder had let go and the caller's `try_lock` takes the lock
    /// and delivers itself.
    pub fn release_to_park(&self) {
        self.out.store(false, Ordering::Release);
        self.kick.store(true, Ordering::SeqCst);
        self.park_due.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Wakes the worker unconditionally (pause changes, stop, kicks).
    pub fn poke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A member of one of the shard's rooms, as the worker checks its moves (a value of
/// [`Worker::members`]).
#[derive(Default)]
struct Player {
    key: Option<Box<PlayerKey>>,
    window: ReplayWindow,
}

struct Room {
    hmac: bool,
    push: bool,
    rate: Option<RateLimit>,
    /// Its members (their entries are in [`Worker::members`]), for closing the room.
    players: HashSet<u32, IdHashBuilder>,
    /// With a `rate`: each member's token bucket for the frames of its connections (native
    /// ingress), made full at `join` (kept by a second `join`), gone at `leave`. Per player,
    /// not per connection: reconnecting does not refill it. (`dispatch` spends the buckets
    /// of the JavaScript thread's member table.)
    buckets: HashMap<u32, Bucket, IdHashBuilder>,
    inbox: Arc<Inbox>,
    /// Its id and its slot in [`Worker::rooms`].
    id: u32,
    slot: u32,
    /// A push room's entry on [`Worker::dirty`], or [`NOT_LISTED`]. A cell: the worker
    /// lists a room while it holds it shared (it reaches it through its member).
    listed: Cell<u32>,
}

/// [`Room::listed`] of a room not on the dirty list.
const NOT_LISTED: u32 = u32::MAX;
/// [`Dirty::slot`] once its room is closed or replaced.
const NO_SLOT: u32 = u32::MAX;
/// [`Staged::entry`] of a move taken out of the staging ([`Worker::unstage`]).
const UNSTAGED: u32 = u32::MAX;

/// A push room with something to deliver, on the worker's dirty list until the next
/// delivery is built.
///
/// An open room's entry names its slot, not its inbox: listing a room is then no atomic
/// on a cache line of the inbox's (a reference count, a flag), which with thousands of
/// rooms and a delivery every few hundred microseconds would be most moves' first touch
/// of that line. A closed room's entry holds its inbox ([`Worker::unstage`]).
struct Dirty {
    /// The room's id.
    room: u32,
    /// The room's slot while it is open (its [`Room::listed`] names this entry), else
    /// [`NO_SLOT`].
    slot: u32,
    /// The inbox of a room closed while listed; `None` while the room is open.
    closed: Option<Arc<Inbox>>,
    /// Something went into the inbox since the last delivery (rejections, unstaged moves),
    /// so taking the room takes its lock; otherwise the inbox is empty and only its budget
    /// is given back.
    inbox_used: bool,
    /// Its moves in [`Worker::staging`], and their bytes.
    staged_moves: u32,
    staged_bytes: usize,
    /// Where its staged frames go in the delivery being built.
    at: Placement,
}

impl Dirty {
    /// The entry's inbox: the closed room's, or that of `room`, the open room at its slot.
    fn inbox<'a>(&'a self, room: Option<&'a Room>) -> Option<&'a Arc<Inbox>> {
        self.closed.as_ref().or(room.map(|r| &r.inbox))
    }
}

/// Validated moves of push rooms since the last delivery built, in validation order.
///
/// A push room's accepted move is copied here, next to the one before it, not into its
/// room's inbox: with thousands of rooms an inbox is a lock and two or three cache lines
/// nowhere near the previous move's, per move. The delivery then places each staged frame
/// in its room's run ([`Builder::reserve`]): still one copy to the delivery,
/// now from memory the worker just wrote. The inbox keeps rejections, the moves of pull
/// rooms, and the staged moves of a room closed before its delivery ([`Worker::unstage`]).
#[derive(Default)]
struct Staging {
    bytes: Vec<u8>,
    moves: Vec<Staged>,
}

/// One staged move: its entry on the dirty list, its frame's length (the frames are back to
/// back in [`Staging::bytes`]) and its dispatch stamp.
#[derive(Clone, Copy)]
struct Staged {
    entry: u32,
    len: u32,
    stamp: u64,
}

/// Prefetches for the worker (see [`Members`]): cursors running ahead of the record it
/// validates over the records already published — the member slot of the move `FAR`
/// records ahead, the room of the move `NEAR` ahead (whose slot has arrived by then), the
/// inbox of the move `NEAREST` ahead (whose room has). With thousands of rooms each of
/// these misses the cache; ahead of time, the misses of consecutive moves overlap.
#[derive(Default)]
struct Ahead {
    far: RingCursor,
    near: RingCursor,
    nearest: RingCursor,
}

impl Ahead {
    /// Before the worker takes the record at the tail (and after [`Ahead::popped`]).
    #[inline]
    fn advance(&mut self, consumer: &Consumer, members: &Members<Player>, rooms: &Rooms<Room>) {
        self.far
            .fill(consumer, FAR, |h| members.prefetch(h.room, h.player));
        self.near.fill(consumer, NEAR, |h| {
            rooms.prefetch_of_member(members, h.room, h.player);
        });
        self.nearest.fill(consumer, NEAREST, |h| {
            // A push room's move goes to the staging, which is in cache.
            if let Some(r) = rooms
                .of_member(members, h.room, h.player)
                .filter(|r| !r.push)
            {
                r.inbox.prefetch_state();
            }
        });
    }

    /// The record at the tail was taken.
    #[inline]
    fn popped(&mut self) {
        for c in [&mut self.far, &mut self.near, &mut self.nearest] {
            c.n = c.n.saturating_sub(1);
        }
    }
}

/// A position in the arena ahead of its tail, record by record.
#[derive(Default, Clone, Copy)]
struct RingCursor {
    pos: usize,
    /// Records between the tail and `pos`.
    n: usize,
}

impl RingCursor {
    /// Moves on until `want` records ahead of the tail (or at the last record seen
    /// published), calling `f` with the header of each record it passes.
    #[inline]
    fn fill(&mut self, consumer: &Consumer, want: usize, mut f: impl FnMut(&frame::Header)) {
        if self.pos < consumer.tail() {
            // Fell behind (the tail passed it): start again from the tail.
            self.pos = consumer.tail();
            self.n = 0;
        }
        while self.n < want {
            let Some((bytes, next)) = consumer.frame_at(self.pos) else {
                return;
            };
            if let Ok(h) = frame::read_header(bytes) {
                f(&h);
            }
            self.pos = next;
            self.n += 1;
        }
    }
}

/// A flush that waits for the push rooms listed when it arrived: every listed room goes
/// into the next delivery built, so it is answered after that one.
struct PendingFlush {
    token: u64,
    /// [`Worker::builds`] when it arrived.
    after: u64,
}

/// The worker of one shard.
pub struct Worker {
    /// The shard's index (for failure reports).
    index: u32,
    shared: Arc<Shared>,
    consumer: Consumer,
    outbox: Arc<Outbox>,
    policy: Policy,
    rooms: Rooms<Room>,
    /// The members of the shard's rooms, keyed by `(room, player)`.
    members: Members<Player>,
    /// Prefetches ahead of the record validated.
    ahead: Ahead,
    /// Push rooms with moves or rejections not yet delivered, in the order they got them.
    dirty: Vec<Dirty>,
    staging: Staging,
    /// Deliveries built so far.
    builds: u64,
    flushes: Vec<PendingFlush>,
    /// Builds the push deliveries; its buffers come from, and return to, `pool`.
    builder: Builder,
    pool: Arc<Pool>,
    /// A push room reached `batch_full` since the last delivery.
    full: bool,
    /// A step panicked: moves are rejected with [`Reason::ShardFailed`], not validated.
    failed: bool,
    /// The failure's message, until the next [`Worker::deliver`] reports it.
    failure: Option<String>,
    /// When [`Worker::deliver`] last ran ([`crate::clock::now_ns`]).
    delivered_at: u64,
    /// When native ingress first left push moves for the park ([`Policy::park_delivery`])
    /// since the last delivery built; 0: none held.
    held_since: u64,
    scratch_tokens: Vec<u64>,
    /// Dispatch → validated, nanoseconds.
    validated: Recorder,
    /// Stamps of moves validated but not yet recorded in `validated` ([`Worker::note_validated`]).
    unrecorded: Unrecorded,
    /// Open push rooms: a shard with any never naps ([`Policy::nap_ns`]).
    push_rooms: usize,
}

impl Worker {
    /// The worker of shard `index`, reading `consumer`, delivering to `outbox` in buffers
    /// of `pool`.
    pub fn new(
        index: u32,
        shared: Arc<Shared>,
        consumer: Consumer,
        outbox: Arc<Outbox>,
        pool: Arc<Pool>,
        policy: Policy,
        validated: Recorder,
    ) -> Result<Self, usize> {
        let arena = consumer.capacity();
        // Sized like the arena: what a delivery held out by JavaScript lets accumulate
        // without growing on the hot path (more only once moves pile up beyond it). Allocated
        // fallibly, like the arena: a size the machine cannot give is an error, not an abort.
        let mut staging = Staging::default();
        staging.bytes.try_reserve_exact(arena).map_err(|_| arena)?;
        let moves = arena / 64;
        staging
            .moves
            .try_reserve_exact(moves)
            .map_err(|_| moves * std::mem::size_of::<Staged>())?;
        Ok(Self {
            index,
            shared,
            consumer,
            outbox,
            policy: Policy {
                batch_full: policy.batch_full.max(1),
                ..policy
            },
            rooms: Rooms::default(),
            members: Members::default(),
            ahead: Ahead::default(),
            dirty: Vec::new(),
            staging,
            builds: 0,
            flushes: Vec::new(),
            builder: Builder::new(),
            pool,
            full: false,
            failed: false,
            failure: None,
            delivered_at: 0,
            held_since: 0,
            scratch_tokens: Vec::new(),
            validated,
            unrecorded: Unrecorded::default(),
            push_rooms: 0,
        })
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// One step of the worker loop (module docs), with panics caught: a panic marks the
    /// shard failed and the worker goes on rejecting; a second one stops it for good.
    pub fn step(&mut self) -> Step {
        self.step_with(true)
    }

    /// A step after a [`Step::Spin`] that found no work: the same, except that a dry queue
    /// announces sleep at once.
    pub fn settle(&mut self) -> Step {
        self.step_with(false)
    }

    fn step_with(&mut self, spin: bool) -> Step {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.turn(spin))) {
            Ok(step) => step,
            Err(panic) => self.recover(panic_message(&*panic)),
        }
    }

    /// A lock-free look at the worker's queue ([`Step::Spin`]).
    pub fn watch(&self) -> crate::arena::Watch {
        self.consumer.watch()
    }

    /// Empty polls to spin through before announcing sleep ([`Policy::spins`]).
    pub fn spins(&self) -> u32 {
        self.policy.spins
    }

    fn recover(&mut self, message: String) -> Step {
        if !self.failed {
            self.failed = true;
            // Reported with the next delivery, after the moves validated before the failure:
            // JavaScript hears of it only once those are on their way (a second failure,
            // which stops the worker for good, cannot then overtake them).
            self.failure = Some(message);
            return Step::Again;
        }
        // A panic in failed mode: stop for good, but answer every flush waiting on this
        // shard first (queued controls, and those waiting for deliveries), so none hangs.
        if let Some(first) = self.failure.take() {
            self.outbox.publish_failure(self.index, first);
        }
        let mut tokens: Vec<u64> = self.flushes.drain(..).map(|f| f.token).collect();
        tokens.extend(self.shared.bury());
        self.outbox.publish_failure(
            self.index,
            format!("{message} (again, while failed: the shard stopped; moves still in its queue are lost)"),
        );
        self.outbox.publish(None, &tokens);
        Step::Stop
    }

    fn turn(&mut self, spin: bool) -> Step {
        if self.shared.stop.load(Ordering::Acquire) {
            return Step::Stop;
        }
        // Wake-ups the JavaScript thread asked for from inside `dispatch` (overload marks).
        self.outbox.serve_wake_request();
        if self.shared.paused.load(Ordering::Acquire) {
            // Park without announcing sleep: dispatches while paused must not pay for a
            // wake-up each. `pause(false)` and `stop` poke the worker unconditionally.
            self.shared.paused_ack.store(true, Ordering::SeqCst);
            return Step::Paused;
        }
        let taken = self.shared.consumed.0.load(Ordering::Relaxed);
        let n = self.run(TURN);
        if self.shared.consumed.0.load(Ordering::Relaxed) != taken {
            self.answer_writable();
        }
        if n == TURN {
            let due = self.policy.hold_ns.is_some_and(|h| self.delivery_due(h));
            if self.shared.kick.load(Ordering::Acquire) || due {
                self.deliver();
            }
            return Step::Yield;
        }
        // The queue ran dry: deliver (smart batching, no timers).
        self.deliver();
        if let Some(nap) = self.nap(n) {
            return nap;
        }
        // Spinning is left to the caller, without the worker's lock: a spin under it kept
        // native ingress and JavaScript's release from taking it (~10 µs of `pause`s).
        if spin && self.policy.spins > 0 {
            return Step::Spin;
        }
        if self.may_sleep() {
            Step::Park
        } else {
            Step::Again
        }
    }

    /// A nap instead of sleep ([`Policy::nap_ns`]): the turn that ran dry took work (`taken`),
    /// and nothing of this shard waits on a timely delivery (no push room, nothing held
    /// for one, no flush waiting).
    fn nap(&self, taken: usize) -> Option<Step> {
        let ns = self.policy.nap_ns?;
        (taken > 0
            && self.push_rooms == 0
            && self.dirty.is_empty()
            && self.flushes.is_empty()
            && !self.shared.stop.load(Ordering::Acquire))
        .then(|| Step::Nap(Duration::from_nanos(ns)))
    }

    /// Tells the producer it freed capacity, if it asked ([`Shared::want_writable`]).
    fn answer_writable(&self) {
        if self.shared.want_writable.load(Ordering::Relaxed)
            && self.shared.want_writable.swap(false, Ordering::AcqRel)
        {
            self.outbox.notify();
        }
    }

    /// Whether a move or a control operation is waiting.
    fn has_work(&mut self) -> bool {
        self.shared.next_control.load(Ordering::Acquire) != u64::MAX || !self.consumer.is_empty()
    }

    /// Announces that the worker is about to park; returns `false` (and cancels) if work
    /// arrived meanwhile. Pairs with [`Shared::wake`], and with the producer's
    /// `want_writable` request: a worker parking with its queue empty answers it, so a
    /// producer that asked just as the queue ran dry still hears of the space.
    fn may_sleep(&mut self) -> bool {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.has_work()
            || self.shared.kick.load(Ordering::SeqCst)
            || self.shared.stop.load(Ordering::SeqCst)
        {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        self.answer_writable();
        true
    }

    /// Processes up to `budget` moves and control operations in sequence order.
    /// Returns how many it processed. Delivers push batches whenever one fills.
    fn run(&mut self, budget: usize) -> usize {
        let mut done = 0;
        // `paused` is checked per item so that a pause takes effect at once (tests rely on
        // it to fill queues deterministically); it is a relaxed load of a line nobody writes.
        while done < budget && !self.shared.paused.load(Ordering::Relaxed) {
            // Two loads of `next_control`, one on each side of `peek`: with no record, the
            // first says whether a control is due (a move queued before it would be visible
            // to `peek`); with a record, the second is compared, because a control queued
            // before that record is visible once the record is. One load alone, on either
            // side, lets a move overtake a control queued just before it.
            let control_before = self.shared.next_control.load(Ordering::Acquire);
            self.ahead
                .advance(&self.consumer, &self.members, &self.rooms);
            let took_move = match self.consumer.peek() {
                Some(record) if record.seq < self.shared.next_control.load(Ordering::Acquire) => {
                    let stamp = record.stamp;
                    // The hot path: validation must not allocate in steady state (counted).
                    let hot = HotPath::enter();
                    Self::validate(
                        &mut self.rooms,
                        &mut self.members,
                        &mut self.dirty,
                        &mut self.staging,
                        &self.shared,
                        record.frame,
                        stamp,
                        self.policy.batch_full,
                        self.failed,
                        &mut self.full,
                    );
                    drop(hot);
                    self.note_validated(stamp);
                    self.consumer.pop();
                    self.ahead.popped();
                    let n = self.shared.consumed.0.load(Ordering::Relaxed);
                    self.shared.consumed.0.store(n + 1, Ordering::Release);
                    true
                }
                _ => false,
            };
            if !took_move {
                // Only the load made before `peek` may send us to the control queue: a
                // control seen later could have a move queued before it that `peek` missed.
                if control_before == u64::MAX {
                    break;
                }
                if let Some(c) = self.shared.pop_control() {
                    self.control(c);
                }
            }
            done += 1;
            if self.full {
                self.deliver();
            }
        }
        self.record_validated();
        done
    }

    /// Notes that the move stamped `stamp` was validated: its wait is recorded with the next
    /// [`UNRECORDED`] moves', after one clock read for them all. A per-move read was ~5 % of
    /// a busy worker (perf, 1 M moves/s); each wait is now measured up to the end of the
    /// last of those moves (a few µs at most), so it may read longer, never shorter.
    #[inline]
    fn note_validated(&mut self, stamp: u64) {
        let u = &mut self.unrecorded;
        u.stamps[u.len] = stamp;
        u.len += 1;
        if u.len == UNRECORDED {
            self.record_validated();
        }
    }

    /// Records the waits [`Worker::note_validated`] holds, with one clock read.
    fn record_validated(&mut self) {
        let u = &mut self.unrecorded;
        if u.len == 0 {
            return;
        }
        let now = crate::clock::now_ns();
        for &stamp in &u.stamps[..u.len] {
            self.validated.record(now.saturating_sub(stamp));
        }
        u.len = 0;
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "disjoint borrows of the worker's fields, so that the frame can borrow the arena"
    )]
    fn validate(
        rooms: &mut Rooms<Room>,
        members: &mut Members<Player>,
        dirty: &mut Vec<Dirty>,
        staging: &mut Staging,
        shared: &Shared,
        bytes: &[u8],
        stamp: u64,
        batch_full: u32,
        failed: bool,
        full: &mut bool,
    ) {
        let Ok(h) = frame::read_header(bytes) else {
            debug_assert!(false, "the arena holds only checked frames");
            return;
        };
        let member = members.lookup(h.room, h.player);
        let Some(room) = rooms.of_move(members, member, h.room) else {
            debug_assert!(false, "a move arrived for a room its shard does not know");
            return;
        };
        let outcome = if failed {
            Err(Reason::ShardFailed)
        } else {
            match member {
                // `dispatch` answers `NotMember` for non-members, in order with join and
                // leave: kept as a second line of defence, it does not occur.
                None => Err(Reason::UnknownPlayer),
                Some(m) => {
                    let p = members.value(m);
                    if !auth::verify(bytes, if room.hmac { p.key.as_deref() } else { None }) {
                        Err(Reason::BadTag)
                    } else if p.window.accept(h.seq).is_err() {
                        Err(Reason::Replay)
                    } else {
                        Ok(())
                    }
                }
            }
        };
        match outcome {
            Ok(()) if room.push => {
                let entry = list(dirty, room);
                staging.bytes.extend_from_slice(bytes);
                staging.moves.push(Staged {
                    entry,
                    len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                    stamp,
                });
                if let Some(d) = dirty.get_mut(entry as usize) {
                    d.staged_moves += 1;
                    d.staged_bytes += bytes.len();
                    // `full` only when a delivery can go now: while one is out, every
                    // following move would trigger a pointless delivery pass.
                    if d.staged_moves >= batch_full && !shared.out.load(Ordering::Relaxed) {
                        *full = true;
                    }
                }
            }
            Ok(()) => {
                // A pull room: `drain` takes it from the inbox, on the JavaScript thread.
                room.inbox.push_frame(bytes, stamp, batch_full);
            }
            Err(reason) => {
                shared.reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
                room.inbox.push_rejection(
                    Rejection {
                        room: h.room,
                        player: h.player,
                        seq: h.seq,
                        reason,
                    },
                    bytes.len(),
                );
                if room.push {
                    let entry = list(dirty, room);
                    if let Some(d) = dirty.get_mut(entry as usize) {
                        d.inbox_used = true;
                    }
                }
            }
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::OpenRoom {
                inbox,
                hmac,
                push,
                rate,
            } => {
                if push {
                    // Room on the dirty list for every room of the shard, sized here (a
                    // control) rather than grown on the hot path when a delivery is held
                    // longer than ever before. Closed rooms may stay listed until delivered.
                    let want = (self.rooms.len() + 1).max(self.dirty.len() + 1);
                    if self.dirty.capacity() < want {
                        self.dirty.reserve(want - self.dirty.len());
                    }
                }
                // Opening a room the shard has replaces it (members and all).
                self.close_room(inbox.room());
                let id = inbox.room();
                let slot = self.rooms.insert(
                    id,
                    Room {
                        hmac,
                        push,
                        rate,
                        players: HashSet::default(),
                        buckets: HashMap::default(),
                        inbox: Arc::clone(&inbox),
                        id,
                        slot: 0,
                        listed: Cell::new(NOT_LISTED),
                    },
                );
                if let Some(r) = self.rooms.at_mut(slot, id) {
                    r.slot = slot;
                    if push {
                        // Reopened before the moves of its earlier life were delivered: they
                        // wait in the inbox, listed; the room takes that entry back.
                        let earlier = self.dirty.iter().position(|d| {
                            d.closed.as_ref().is_some_and(|i| Arc::ptr_eq(i, &inbox))
                        });
                        if let Some(i) = earlier {
                            let d = &mut self.dirty[i];
                            d.slot = slot;
                            d.closed = None;
                            r.listed.set(u32::try_from(i).unwrap_or(NOT_LISTED));
                        } else if inbox.has_pending() {
                            let entry = list(&mut self.dirty, r);
                            if let Some(d) = self.dirty.get_mut(entry as usize) {
                                d.inbox_used = true;
                            }
                        }
                    }
                }
                self.push_rooms += usize::from(push);
            }
            Control::Join { room, player, key } => {
                if let Some(slot) = self.rooms.slot(room) {
                    // Joining again replaces the key and keeps the window.
                    self.members.join(room, player, slot).0.key = key;
                    if let Some(r) = self.rooms.at_mut(slot, room) {
                        r.players.insert(player);
                        if let Some(rate) = r.rate {
                            r.buckets
                                .entry(player)
                                .or_insert_with(|| Bucket::full(Some(rate)));
                        }
                    }
                }
            }
            Control::Leave { room, player } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.players.remove(&player);
                    r.buckets.remove(&player);
                    self.members.leave(room, player);
                }
            }
            Control::CloseRoom { room } => self.close_room(room),
            Control::Flush { token } => {
                // What the flush answers for is counted before it is answered.
                self.record_validated();
                if self.dirty.is_empty() && self.flushes.is_empty() {
                    // A failure not reported yet goes before the flush that follows it.
                    if let Some(message) = self.failure.take() {
                        self.outbox.publish_failure(self.index, message);
                    }
                    self.outbox.publish(None, &[token]);
                } else {
                    self.flushes.push(PendingFlush {
                        token,
                        after: self.builds,
                    });
                }
            }
            Control::Fail => panic!(
                "shard {} was made to fail on purpose (failShardForTesting)",
                self.index
            ),
            #[cfg(test)]
            Control::Stall(d) => std::thread::sleep(d),
        }
    }

    /// Forgets `room` and its members, if the shard has it. Its pending moves stay in the
    /// inbox (and on the dirty list, for a push room) until delivered.
    fn close_room(&mut self, room: u32) {
        if let Some(r) = self.rooms.remove(room) {
            if r.listed.get() != NOT_LISTED {
                self.unstage(r.listed.get(), &r.inbox);
            }
            for &player in &r.players {
                self.members.leave(room, player);
            }
            self.push_rooms -= usize::from(r.push);
        }
    }

    /// A listed push room is closing: its staged moves move into its inbox, in order, and
    /// its entry stays listed without a room (the delivery takes them from the inbox).
    fn unstage(&mut self, entry: u32, inbox: &Arc<Inbox>) {
        let Some(d) = self.dirty.get_mut(entry as usize) else {
            return;
        };
        d.slot = NO_SLOT;
        d.inbox_used = true;
        d.closed = Some(Arc::clone(inbox));
        if d.staged_moves == 0 {
            return;
        }
        let mut at = 0;
        for m in &mut self.staging.moves {
            let len = m.len as usize;
            if m.entry == entry {
                if let Some(frame) = self.staging.bytes.get(at..at + len) {
                    inbox.push_frame(frame, m.stamp, u32::MAX);
                }
                m.entry = UNSTAGED;
            }
            at += len;
        }
        // The budget reserved at dispatch now covers the inbox's copies.
        d.staged_moves = 0;
        d.staged_bytes = 0;
    }

    /// Whether moves or flushes have waited at least `hold_ns` since the last delivery.
    /// A worker whose queue never runs dry delivers on this bound: without it, a queue
    /// kept non-empty by a steady load would hold every push batch back indefinitely.
    fn delivery_due(&self, hold_ns: u64) -> bool {
        (!self.dirty.is_empty() || !self.flushes.is_empty())
            && crate::clock::now_ns().saturating_sub(self.delivered_at) >= hold_ns
    }

    /// A runtime thread is about to park and native ingress left push moves of this shard
    /// for it ([`Policy::park_delivery`]): delivers them.
    pub fn deliver_at_park(&mut self) {
        if !self.failed && !self.shared.stop.load(Ordering::Acquire) {
            self.deliver();
        }
    }

    /// JavaScript released this shard's push delivery and holds the worker's lock: delivers
    /// what waited for the release here, on its thread ([`crate::core::Core::release_delivery`]).
    /// Returns `false` (nothing done) if the worker has failed, stopped or is paused: its
    /// own task then takes the release.
    pub fn release_here(&mut self) -> bool {
        if self.failed
            || self.shared.stop.load(Ordering::Acquire)
            || self.shared.paused.load(Ordering::Acquire)
        {
            return false;
        }
        // Done here: neither the worker's turn nor a park need to look at this release.
        self.shared.out.store(false, Ordering::Release);
        self.shared.kick.store(false, Ordering::Release);
        self.shared.park_due.store(false, Ordering::Release);
        if !self.dirty.is_empty() || !self.flushes.is_empty() {
            self.deliver();
        }
        true
    }

    /// Delivers every push room with something waiting, in one delivery, unless the
    /// previous one is still out with JavaScript; then answers the flushes whose rooms have
    /// all been delivered since.
    fn deliver(&mut self) {
        self.record_validated();
        self.full = false;
        self.delivered_at = crate::clock::now_ns();
        self.shared.kick.store(false, Ordering::Release);
        let mut moves = None;
        if !self.dirty.is_empty() && !self.shared.out.load(Ordering::Acquire) {
            self.held_since = 0;
            self.builder.start(self.pool.get());
            // Each listed room's budget is given back below: an atomic on a line of its
            // inbox, reached through its room, both most likely out of cache (thousands of
            // rooms). Loaded ahead, in two passes, their misses overlap instead of adding up.
            for d in &self.dirty {
                self.rooms.prefetch(d.slot);
            }
            for d in &self.dirty {
                if let Some(inbox) = d.inbox(self.rooms.at(d.slot)) {
                    inbox.prefetch_budget();
                }
            }
            for d in &mut self.dirty {
                let room = self.rooms.at(d.slot);
                if let Some(r) = room {
                    r.listed.set(NOT_LISTED);
                }
                let Some(inbox) = d.inbox(room) else {
                    continue;
                };
                d.at = if d.inbox_used {
                    inbox
                        .take_reserving(&mut self.builder, d.staged_moves, d.staged_bytes)
                        .unwrap_or_default()
                } else if d.staged_moves > 0 {
                    // Nothing went into the inbox (only the worker writes a push room's):
                    // no lock, no look at it but its budget.
                    inbox.unreserve(d.staged_bytes);
                    self.builder.push_room(d.room, &[], 0, &[], &[]);
                    self.builder.reserve(d.staged_moves, d.staged_bytes)
                } else {
                    Placement::default()
                };
            }
            // Each staged frame into its room's run, in order.
            let mut at = 0;
            for m in &self.staging.moves {
                let len = m.len as usize;
                if let (Some(d), Some(frame)) = (
                    self.dirty.get_mut(m.entry as usize),
                    self.staging.bytes.get(at..at + len),
                ) {
                    let placed = self.builder.place(&mut d.at, frame, m.stamp);
                    debug_assert!(placed, "a staged frame outside its room's run");
                }
                at += len;
            }
            self.staging.bytes.clear();
            self.staging.moves.clear();
            self.dirty.clear();
            self.builds += 1;
            if self.builder.is_empty() {
                self.pool.put(self.builder.abandon());
            } else {
                self.shared.out.store(true, Ordering::Release);
                moves = Some(self.builder.finish(Some(self.index)));
            }
        }
        // Flushes complete in order: a later one never overtakes an earlier one.
        let builds = self.builds;
        let tokens = &mut self.scratch_tokens;
        let mut blocked = false;
        self.flushes.retain(|f| {
            if blocked {
                return true;
            }
            let done = builds > f.after;
            if done {
                tokens.push(f.token);
            } else {
                blocked = true;
            }
            !done
        });
        // In this order: the moves, a failure not reported yet (after the moves validated
        // before it), then the flushes answered (after both).
        if let Some(message) = self.failure.take() {
            self.outbox.publish(moves, &[]);
            self.outbox.publish_failure(self.index, message);
            self.outbox.publish(None, &self.scratch_tokens);
        } else {
            self.outbox.publish(moves, &self.scratch_tokens);
        }
        self.scratch_tokens.clear();
    }
}

/// The message of a caught panic (`panic!` with a literal or a formatted string).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Locks a worker shared with native ingress. A panic while it was held (a bug, caught and
/// reported by [`Worker::step`] or [`Worker::ingest`], which leave the worker consistent)
/// does not make the lock unusable.
pub fn lock_worker(w: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The proven sender of a native ingress connection (its ticket's room and player), for
/// [`Worker::ingest`].
#[derive(Debug)]
pub struct Sender {
    pub room: u32,
    pub player: u32,
}

impl Sender {
    /// The sender `player` of `room`.
    pub fn new(room: u32, player: u32) -> Self {
        Self { room, player }
    }
}

/// What [`Worker::ingest`] did with a chunk of back-to-back frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Bytes of whole frames taken (accepted or refused); the rest is a partial frame, or
    /// what followed a stop.
    pub consumed: usize,
    /// Frames accepted (validated or rejected by the worker, as `dispatch`'s `Accepted`).
    pub accepted: u32,
    /// Frames refused at once (any verdict but `Accepted` and `Backpressure`).
    pub refused: u32,
    /// Stopped before a frame its room has no budget for: nothing of it was kept; offer it
    /// again later.
    pub backpressure: bool,
    /// Stopped at bytes that are not a v1 frame: the stream cannot be resynchronised.
    pub malformed: bool,
}

impl Worker {
    /// Native ingress: takes the back-to-back v1 frames of `chunk`, read by a connection of
    /// `sender` at `stamp`, on the calling thread — checked, validated and stored with no
    /// hand-off to another thread. Each frame gets the verdict `dispatch` would give it
    /// (counted in `verdicts`) plus `NotMember` for a room other than the ticket's; the
    /// accepted ones are validated at once and land in their room's inbox like any other.
    ///
    /// Controls and moves queued before (by `dispatch`) are taken first, so a `join` made
    /// before a ticket was issued is in force for its connection's frames. Push rooms are
    /// delivered when this runtime thread is about to park ([`Policy::park_delivery`]; at
    /// once past `hold_ns`), and while a delivery is out later moves wait and go together
    /// in the next.
    pub fn ingest(
        &mut self,
        chunk: &[u8],
        sender: &mut Sender,
        stamp: u64,
        max_payload: usize,
        verdicts: &[AtomicU64; Verdict::COUNT],
    ) -> Ingested {
        let mut out = Ingested::default();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.has_work() {
                self.run(TURN);
            }
            while out.consumed < chunk.len() {
                let rest = &chunk[out.consumed..];
                let len = match frame::read_header(rest) {
                    Ok(h) => h.frame_len(),
                    Err(frame::FrameError::Short { .. }) => break,
                    Err(_) => {
                        verdicts[Verdict::Malformed as usize].fetch_add(1, Ordering::Relaxed);
                        out.malformed = true;
                        break;
                    }
                };
                let Some(bytes) = rest.get(..len) else { break };
                let v = self.ingest_one(bytes, sender, stamp, max_payload);
                verdicts[v as usize].fetch_add(1, Ordering::Relaxed);
                match v {
                    Verdict::Accepted => out.accepted += 1,
                    Verdict::Backpressure => {
                        out.backpressure = true;
                        break;
                    }
                    _ => out.refused += 1,
                }
                out.consumed += len;
                if self.full {
                    self.deliver();
                }
            }
            // Deliver when this runtime thread is about to park, so that every read it
            // serves meanwhile goes in the same delivery and JavaScript is woken once for
            // them (each wake-up of the JavaScript thread costs it a context switch), or
            // now if the first move held has waited `hold_ns` (a thread that never parks).
            // A timer was measured here instead: with tokio's 1 ms timer it cut CPU per
            // message by a third at 10-20 k messages/s but added ~1 ms to the median
            // latency; the park adds only the rest of the thread's ready work. While a
            // delivery is out with JavaScript, moves wait for its release either way.
            if out.accepted > 0 && !self.has_work() {
                let hold = self.policy.hold_ns.unwrap_or(0);
                if !self.policy.park_delivery
                    || self.held_since != 0 && stamp.saturating_sub(self.held_since) >= hold
                {
                    self.deliver();
                } else if !self.dirty.is_empty() || !self.flushes.is_empty() {
                    if self.held_since == 0 {
                        self.held_since = stamp;
                    }
                    self.shared.park_due.store(true, Ordering::Release);
                }
            }
        }));
        if let Err(panic) = caught {
            let message = panic_message(&*panic);
            // The frames of this chunk not counted yet are lost with the connection, which
            // the caller closes; the shard goes on in failed mode as after a step's panic.
            let _ = self.recover(message);
            if let Some(message) = self.failure.take() {
                self.outbox.publish_failure(self.index, message);
            }
            out.malformed = true;
        }
        // The worker may have work of its own (moves dispatched meanwhile): its own loop
        // takes it. Moves kept back while a delivery is out go when JavaScript releases it
        // (`Core::release_delivery` builds the next one, or leaves it to the lock's holder).
        if self.has_work() {
            self.shared.wake();
        }
        out
    }

    fn ingest_one(
        &mut self,
        bytes: &[u8],
        sender: &mut Sender,
        stamp: u64,
        max_payload: usize,
    ) -> Verdict {
        let h = match frame::check_header(bytes, bytes.len(), max_payload) {
            Ok(h) => h,
            Err(frame::FrameError::Oversize { .. }) => return Verdict::Oversize,
            Err(_) => return Verdict::Malformed,
        };
        if h.room != sender.room {
            // A connection speaks for its ticket's room only.
            return Verdict::NotMember;
        }
        if self.failed {
            return Verdict::Closed;
        }
        let Some(room) = self.rooms.get_mut(h.room) else {
            return Verdict::UnknownRoom;
        };
        if h.is_hmac() != room.hmac {
            return Verdict::AuthMismatch;
        }
        if h.player != sender.player {
            return Verdict::WrongSender;
        }
        if !self.members.contains(h.room, h.player) {
            return Verdict::NotMember;
        }
        // The member's bucket (made at `join`), not the connection's: a reconnect does not
        // refill it.
        let bucket = match room.rate {
            Some(rate) => {
                let bucket = room
                    .buckets
                    .entry(h.player)
                    .or_insert_with(|| Bucket::full(Some(rate)));
                if !bucket.ready(rate, stamp) {
                    return Verdict::RateLimited;
                }
                Some(bucket)
            }
            None => None,
        };
        if !room.inbox.try_reserve(bytes.len()) {
            return Verdict::Backpressure;
        }
        if let Some(bucket) = bucket {
            bucket.tokens -= 1.0;
        }
        let hot = HotPath::enter();
        Self::validate(
            &mut self.rooms,
            &mut self.members,
            &mut self.dirty,
            &mut self.staging,
            &self.shared,
            bytes,
            stamp,
            self.policy.batch_full,
            false,
            &mut self.full,
        );
        drop(hot);
        self.validated
            .record(crate::clock::now_ns().saturating_sub(stamp));
        Verdict::Accepted
    }
}

/// Moves whose dispatch → validated waits share one clock read ([`Worker::note_validated`]).
const UNRECORDED: usize = 16;

/// Stamps of validated moves whose waits are not recorded yet.
#[derive(Default)]
struct Unrecorded {
    stamps: [u64; UNRECORDED],
    len: usize,
}

/// Puts a push room on the dirty list if it is not there yet; its entry. The room says
/// (no look at its inbox, elsewhere in memory, for the moves of a room already listed).
fn list(dirty: &mut Vec<Dirty>, room: &Room) -> u32 {
    let listed = room.listed.get();
    if listed != NOT_LISTED {
        return listed;
    }
    let entry = u32::try_from(dirty.len()).unwrap_or(NOT_LISTED);
    dirty.push(Dirty {
        room: room.id,
        slot: room.slot,
        closed: None,
        inbox_used: false,
        staged_moves: 0,
        staged_bytes: 0,
        at: Placement::default(),
    });
    room.listed.set(entry);
    entry
}

/// The worker as a tokio task: steps it, yielding, parking and returning as it says.
/// Spawned once per shard by the runtime; the hand-off test runs the same function.
pub async fn drive(worker: Arc<Mutex<Worker>>) {
    let (shared, watch, spins) = {
        let w = lock_worker(&worker);
        (Arc::clone(w.shared()), w.watch(), w.spins())
    };
    let mut settle = false;
    loop {
        // The lock is held for one step only: native ingress takes it between steps.
        let step = {
            let mut w = lock_worker(&worker);
            if std::mem::take(&mut settle) {
                w.settle()
            } else {
                w.step()
            }
        };
        match step {
            Step::Again => {}
            Step::Spin => settle = !spin_for_work(&shared, &watch, spins),
            Step::Yield => tokio::task::yield_now().await,
            Step::Park | Step::Paused => shared.notify.notified().await,
            Step::Nap(d) => {
                shared.napping.store(true, Ordering::SeqCst);
                // A control queued before `napping` was set is seen by the next step.
                if shared.next_control.load(Ordering::SeqCst) == u64::MAX {
                    let _ = tokio::time::timeout(d, shared.notify.notified()).await;
                }
                shared.napping.store(false, Ordering::Relaxed);
            }
            Step::Stop => return,
        }
    }
}

/// [`Step::Spin`]: polls the worker's queue and signals `spins` times, without its lock;
/// whether anything came (a move, a control, a kick or stop).
fn spin_for_work(shared: &Shared, watch: &crate::arena::Watch, spins: u32) -> bool {
    for _ in 0..spins {
        if watch.has_records()
            || shared.next_control.load(Ordering::Acquire) != u64::MAX
            || shared.kick.load(Ordering::Acquire)
            || shared.stop.load(Ordering::Acquire)
        {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// How long [`Shared`]'s users may wait for a paused worker's acknowledgement.
pub const PAUSE_ACK: Duration = Duration::from_secs(1);
