//! A shard: the worker side of one ingress arena.
//!
//! The worker takes moves from the arena and control operations from the control queue
//! in one order (their sequence numbers), validates each move (session, tag in constant
//! time, replay window), appends it to its room's inbox or records a rejection, and
//! delivers push batches when its queue runs dry or a room's batch is full.
//!
//! This module is synchronous and free of napi and tokio: [`Worker::run`] processes a
//! bounded amount of work and returns, so tests drive it directly and the runtime loop
//! (in [`crate::core`]) only decides when to sleep.
//!
//! # Allocation
//! Validating a move allocates nothing: the frame is read in place from the arena and
//! copied into preallocated room memory. Rejections push onto a vector whose capacity
//! is kept; control operations and deliveries may allocate.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::alloc::HotPath;
use crate::arena::Consumer;
use crate::auth::{self, PlayerKey};
use crate::frame;
use crate::inbox::{Batch, Inbox, Rejection};
use crate::latency::Recorder;
use crate::outbox::Outbox;
use crate::verdict::Reason;
use crate::window::ReplayWindow;
use crate::IdHashBuilder;

/// A control operation, ordered with the moves of its shard.
pub enum Control {
    OpenRoom {
        inbox: Arc<Inbox>,
        hmac: bool,
        push: bool,
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
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OpenRoom { inbox, hmac, push } => {
                write!(f, "OpenRoom({}, hmac={hmac}, push={push})", inbox.room())
            }
            Self::Join { room, player, key } => {
                write!(f, "Join({room}, {player}, key={})", key.is_some())
            }
            Self::Leave { room, player } => write!(f, "Leave({room}, {player})"),
            Self::CloseRoom { room } => write!(f, "CloseRoom({room})"),
            Self::Flush { token } => write!(f, "Flush({token})"),
        }
    }
}

/// A value alone on its cache line (no false sharing between producer and worker).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// State shared by the producer (JavaScript thread) and the worker of one shard.
#[derive(Debug)]
pub struct Shared {
    controls: Mutex<VecDeque<(u64, Control)>>,
    /// Sequence number of the oldest queued control, or `u64::MAX`.
    next_control: AtomicU64,
    /// Moves the worker has taken from the arena (validated or rejected). Written only by
    /// the worker, on a cache line of its own; the producer compares it with its own count
    /// of moves pushed, and reads it only when its cached copy says the queue is full.
    pub consumed: Padded<AtomicU64>,
    /// The worker is parked (or about to be) and needs a notification.
    pub sleeping: AtomicBool,
    pub notify: tokio::sync::Notify,
    pub paused: AtomicBool,
    /// The worker saw `paused` and is idle until it is cleared.
    pub paused_ack: AtomicBool,
    pub stop: AtomicBool,
    /// A push batch was released: try delivering again.
    pub kick: AtomicBool,
    /// Rejections by reason.
    pub reasons: [AtomicU64; Reason::COUNT],
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            controls: Mutex::new(VecDeque::new()),
            next_control: AtomicU64::new(u64::MAX),
            consumed: Padded(AtomicU64::new(0)),
            sleeping: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            paused: AtomicBool::new(false),
            paused_ack: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            kick: AtomicBool::new(false),
            reasons: Default::default(),
        }
    }
}

impl Shared {
    fn controls(&self) -> MutexGuard<'_, VecDeque<(u64, Control)>> {
        self.controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Producer: queues a control operation with sequence number `seq`.
    pub fn push_control(&self, seq: u64, control: Control) {
        let mut q = self.controls();
        q.push_back((seq, control));
        if q.len() == 1 {
            self.next_control.store(seq, Ordering::Release);
        }
    }

    fn pop_control(&self) -> Option<Control> {
        let mut q = self.controls();
        let (_, c) = q.pop_front()?;
        let next = q.front().map_or(u64::MAX, |(s, _)| *s);
        self.next_control.store(next, Ordering::Release);
        Some(c)
    }

    /// Producer: wakes the worker if it sleeps. The fence pairs with the worker's in
    /// [`Worker::may_sleep`] so that a record published before it is never missed.
    pub fn wake(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Wakes the worker unconditionally (pause changes, stop, kicks).
    pub fn poke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

struct Player {
    key: Option<Box<PlayerKey>>,
    window: ReplayWindow,
}

struct Room {
    hmac: bool,
    push: bool,
    players: HashMap<u32, Player, IdHashBuilder>,
    inbox: Arc<Inbox>,
}

struct PendingFlush {
    token: u64,
    waits: Vec<(Arc<Inbox>, u64)>,
}

/// The worker of one shard.
pub struct Worker {
    shared: Arc<Shared>,
    consumer: Consumer,
    outbox: Arc<Outbox>,
    rooms: HashMap<u32, Room, IdHashBuilder>,
    /// Push rooms with moves not yet delivered.
    dirty: Vec<Arc<Inbox>>,
    flushes: Vec<PendingFlush>,
    batch_full: u32,
    /// A push room reached `batch_full` since the last delivery.
    full: bool,
    /// When [`Worker::deliver`] last ran ([`crate::clock::now_ns`]).
    delivered_at: u64,
    scratch_batches: Vec<Batch>,
    scratch_tokens: Vec<u64>,
    /// Dispatch → validated, nanoseconds.
    validated: Recorder,
}

impl Worker {
    /// A worker reading `consumer`, delivering to `outbox`.
    pub fn new(
        shared: Arc<Shared>,
        consumer: Consumer,
        outbox: Arc<Outbox>,
        batch_full: u32,
        validated: Recorder,
    ) -> Self {
        Self {
            shared,
            consumer,
            outbox,
            rooms: HashMap::default(),
            dirty: Vec::new(),
            flushes: Vec::new(),
            batch_full: batch_full.max(1),
            full: false,
            delivered_at: 0,
            scratch_batches: Vec::new(),
            scratch_tokens: Vec::new(),
            validated,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The outbox it delivers to.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Whether a move or a control operation is waiting.
    pub fn has_work(&mut self) -> bool {
        self.shared.next_control.load(Ordering::Acquire) != u64::MAX || !self.consumer.is_empty()
    }

    /// Announces that the worker is about to park; returns `false` (and cancels) if work
    /// arrived meanwhile. Pairs with [`Shared::wake`].
    pub fn may_sleep(&mut self) -> bool {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.has_work()
            || self.shared.kick.load(Ordering::SeqCst)
            || self.shared.stop.load(Ordering::SeqCst)
        {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Processes up to `budget` moves and control operations in sequence order.
    /// Returns how many it processed. Delivers push batches whenever one fills.
    pub fn run(&mut self, budget: usize) -> usize {
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
            let took_move = match self.consumer.peek() {
                Some(record) if record.seq < self.shared.next_control.load(Ordering::Acquire) => {
                    let size = record.size;
                    // Re-borrow the frame through a raw split: `record` borrows the
                    // consumer, which `validate` does not touch.
                    let (frame, stamp) = (record.frame, record.stamp);
                    // The hot path: validation must not allocate in steady state (counted).
                    let hot = HotPath::enter();
                    Self::validate(
                        &mut self.rooms,
                        &mut self.dirty,
                        &self.shared,
                        frame,
                        stamp,
                        self.batch_full,
                        &mut self.full,
                    );
                    drop(hot);
                    self.validated
                        .record(crate::clock::now_ns().saturating_sub(stamp));
                    self.consumer.advance(size);
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
        done
    }

    fn validate(
        rooms: &mut HashMap<u32, Room, IdHashBuilder>,
        dirty: &mut Vec<Arc<Inbox>>,
        shared: &Shared,
        bytes: &[u8],
        stamp: u64,
        batch_full: u32,
        full: &mut bool,
    ) {
        let Ok(h) = frame::read_header(bytes) else {
            debug_assert!(false, "the arena holds only checked frames");
            return;
        };
        let Some(room) = rooms.get_mut(&h.room) else {
            debug_assert!(false, "a move arrived for a room its shard does not know");
            return;
        };
        let outcome = match room.players.get_mut(&h.player) {
            None => Err(Reason::UnknownPlayer),
            Some(p) => {
                if !auth::verify(bytes, if room.hmac { p.key.as_deref() } else { None }) {
                    Err(Reason::BadTag)
                } else if p.window.accept(h.seq).is_err() {
                    Err(Reason::Replay)
                } else {
                    Ok(())
                }
            }
        };
        match outcome {
            Ok(()) => {
                // `full` only when the batch can go now: a held room would make every
                // following move trigger a pointless delivery pass.
                if room.inbox.push_frame(bytes, stamp, batch_full) && room.push {
                    *full = true;
                }
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
            }
        }
        if room.push {
            mark_dirty(dirty, &room.inbox);
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::OpenRoom { inbox, hmac, push } => {
                inbox.set_closed(false);
                if push && inbox.has_pending() {
                    mark_dirty(&mut self.dirty, &inbox);
                }
                self.rooms.insert(
                    inbox.room(),
                    Room {
                        hmac,
                        push,
                        players: HashMap::default(),
                        inbox,
                    },
                );
            }
            Control::Join { room, player, key } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    match r.players.get_mut(&player) {
                        Some(p) => p.key = key,
                        None => {
                            r.players.insert(
                                player,
                                Player {
                                    key,
                                    window: ReplayWindow::new(),
                                },
                            );
                        }
                    }
                }
            }
            Control::Leave { room, player } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.players.remove(&player);
                }
            }
            Control::CloseRoom { room } => {
                if let Some(r) = self.rooms.remove(&room) {
                    r.inbox.set_closed(true);
                }
            }
            Control::Flush { token } => {
                let waits: Vec<(Arc<Inbox>, u64)> = self
                    .dirty
                    .iter()
                    .filter(|i| i.has_pending())
                    .map(|i| (Arc::clone(i), i.generation()))
                    .collect();
                if waits.is_empty() && self.flushes.is_empty() {
                    self.outbox.publish(&mut self.scratch_batches, &[token]);
                } else {
                    self.flushes.push(PendingFlush { token, waits });
                }
            }
        }
    }

    /// Whether moves or flushes have waited at least `hold_ns` since the last delivery.
    /// A worker whose queue never runs dry delivers on this bound: without it, a queue
    /// kept non-empty by a steady load would hold every push batch back indefinitely.
    pub fn delivery_due(&self, hold_ns: u64) -> bool {
        (!self.dirty.is_empty() || !self.flushes.is_empty())
            && crate::clock::now_ns().saturating_sub(self.delivered_at) >= hold_ns
    }

    /// Delivers every push room whose previous batch was released, then answers the
    /// flushes whose rooms have all been delivered since.
    pub fn deliver(&mut self) {
        self.full = false;
        self.delivered_at = crate::clock::now_ns();
        self.shared.kick.store(false, Ordering::Release);
        let batches = &mut self.scratch_batches;
        self.dirty.retain(|inbox| {
            if let Some(b) = inbox.deliver_push() {
                batches.push(b);
            }
            let keep = inbox.has_pending();
            if !keep {
                inbox.dirty.store(false, Ordering::Relaxed);
            }
            keep
        });
        // Flushes complete in order: a later one never overtakes an earlier one.
        let tokens = &mut self.scratch_tokens;
        let mut blocked = false;
        self.flushes.retain(|f| {
            if blocked {
                return true;
            }
            let done = f
                .waits
                .iter()
                .all(|(inbox, gen)| inbox.generation() > *gen || !inbox.has_pending());
            if done {
                tokens.push(f.token);
            } else {
                blocked = true;
            }
            !done
        });
        self.outbox
            .publish(&mut self.scratch_batches, &self.scratch_tokens);
        self.scratch_tokens.clear();
    }
}

fn mark_dirty(dirty: &mut Vec<Arc<Inbox>>, inbox: &Arc<Inbox>) {
    if !inbox.dirty.swap(true, Ordering::Relaxed) {
        dirty.push(Arc::clone(inbox));
    }
}
