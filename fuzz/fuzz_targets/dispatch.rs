//! The whole dispatch path (`core::Core` with its shard worker, arena, inboxes, outbox),
//! driven by random operation sequences and checked step by step against a reference
//! model written from `docs/architecture.md`.
//!
//! Determinism: the workers run only inside a flush, so every synchronous verdict —
//! including `Backpressure` from the queue, the arena and the room budget, and
//! `RateLimited` (buckets with `per_second: 0`) — and every drain is predicted exactly.
//! By default the core is built with `Core::new_inline` (feature `inline-workers`): a flush
//! runs the workers on the fuzzing thread with `Core::step_workers`, so an input replays
//! identically and no thread hand-off bounds the rate. With `MOVE_FUZZ_THREADED=1` the core
//! runs its workers on their tokio runtime as in production, paused (`Core::pause`, the
//! documented test hook) outside flushes; inside one they run freely and where a push
//! delivery is cut depends on timing. Either way the model checks that each push delivery
//! of a shard is the next contiguous run of that shard's push events (validated moves and
//! rejections of its push rooms, in the order its worker met them).
//!
//! Deliveries (delivery v2, `060f29d`; from that commit's description and the `delivery`
//! module docs, which `docs/architecture.md` does not describe yet): a delivery
//! (`delivery::Moves`) is one buffer of many rooms. A shard's worker puts *every* push
//! room with something waiting into one delivery, in the order it listed them (the order
//! of each room's first event since its last delivery), each room with all it holds; it
//! builds no other until `release_delivery(shard)`, so one push delivery per shard is out
//! at a time, and push rooms accumulate meanwhile (and answer `Backpressure` on their
//! budget once it is spent). `drain(room)` is a pull delivery of that one room (`None`
//! when nothing waits); `drain_all()` one of every pull room with something waiting (rooms
//! in the core's map order: compared as a set, each room exactly). A room's budget comes
//! back when its moves are taken into a delivery (not when the delivery is released); a
//! closed room is forgotten once nothing of it is in flight or waiting (moves in a
//! delivery still out do not count): at `closeRoom`, at the drain or the push delivery
//! that takes its last moves. `batches` counts room entries.
//!
//! Operations: openRoom (SHA-256 / HMAC, pull / push, rate limit), closeRoom, join (good,
//! missing and bad-length keys), leave, dispatch of frames (valid, corrupted, forged with
//! another key, wrong tag kind, replayed, old, seq 0, oversize, truncated, padded, bad
//! magic or version, spoofed sender, from a non-member), dispatchStream of several frames
//! with a partial or malformed tail, drain(room), drainAll, flush (optionally holding the
//! last push delivery of a shard out past the flush, and optionally releasing the held
//! ones only after a first round of the workers), releaseDelivery(shard) (of shards 0..=2,
//! some of which do not exist), poll, closing input, and `failShardForTesting` (a shard's
//! worker panics when it reaches that point of its queue). Deliveries go back to
//! `Core::pool` once released (drains at once), as the addon's finalizer does, so later
//! deliveries are built in reused buffers.
//!
//! The model's check order of `dispatch` (docs/architecture.md): input closed (`Closed`),
//! header (`Malformed` / `Oversize`), the room's shard reported failed (`Closed`, whether
//! the room is open or not), room open (`UnknownRoom`), tag kind (`AuthMismatch`), sender
//! (`WrongSender`), membership (`NotMember`: the frame's player, which is the sender when
//! one is given, has joined and not left, and the room was not closed since), rate limit
//! (`RateLimited`), then capacity (queue, arena, room budget: `Backpressure`). Every
//! refusal spends nothing: no budget, queue slot, arena byte or token. Membership being
//! exact at dispatch, the model's worker never meets a non-member (`Reason::UnknownPlayer`
//! never occurs: the model asserts it).
//!
//! Shard failure (op 15 followed by `0xf4..=0xf7`): moves queued on a shard before its
//! `Fail` control are validated as usual, moves after it are rejected with
//! `Reason::ShardFailed` (and delivered like any rejection); controls and flushes go on.
//! The failure is reported once (`Delivery::Failed` of that shard, before the flush that
//! follows it is answered); from the `poll` that returned it, every room of the shard, open
//! or not, answers `Closed` (dispatch, openRoom, join, leave, closeRoom; before
//! `UnknownRoom`), and its open rooms stay open until the core is dropped. A second `Fail`
//! reaching a failed shard stops its worker: it reports again and answers the flushes
//! queued on it; later flushes are answered by the producer, later `Fail`s dropped. The
//! driver makes a shard fail a second time only once its first failure is reported (inline
//! workers only): nothing else can be queued on it then, so no move is left in an arena
//! nobody reads (the runtime loses those; see the README). A core with a failed shard is
//! not reused by later inputs.
//!
//! Properties checked after every operation: each verdict and status; `Core::counters`
//! equal to the model's (per verdict, per backpressure cause, per reason, delivered,
//! `batches` = room entries); `has_room`, `room_stats` (bytes not yet taken per room) and
//! `shard_stats` (queue depth, arena bytes, wraps); no closed room lingers in the model
//! with nothing of it left. At each delivery: its format (header, frames room after room
//! from byte 32, room and rejection tables adding up to the header's counts, one stamp per
//! move, aligned tables, nothing past the stamps); its shard (`None` for a drain); for
//! each room, frames byte for byte what was dispatched and validated, in order,
//! rejections exactly the model's, in order, and each move's stamp within the dispatch
//! call that accepted it; a push delivery never while the shard's previous one is out; a
//! flush not answered while a shard's delivery is out and push moves of it wait; failure
//! reports exactly the model's, per shard, in order. At the end (flush, drain everything,
//! with `drain_all` or room by room): accepted = delivered + rejected, nothing reserved or
//! out, every room forgotten that should be (only rooms of failed shards stay), overload
//! events alternating raise/recover per subject and all recovered.
#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use move_dispatcher::arena::record_size;
use move_dispatcher::auth::{self, PlayerKey};
use move_dispatcher::clock;
use move_dispatcher::core::{Config, Core, RateLimit, StreamOutcome};
use move_dispatcher::delivery::{self, Moves, RoomEntry};
use move_dispatcher::frame::{self, FrameError, Header};
use move_dispatcher::inbox::Rejection;
use move_dispatcher::outbox::{Delivery, OverloadEvent, Subject};
use move_dispatcher::verdict::{Reason, Status, Verdict};
use move_dispatcher_fuzz::{ref_check, ref_header, Input, WindowModel};

const ROOM_IDS: [u32; 5] = [0, 1, 2, 3, u32::MAX];
const UNKNOWN_ROOM: u32 = 99;
const PLAYER_IDS: [u32; 4] = [1, 2, 3, u32::MAX];
const KEYS: [&[u8]; 4] = [
    &[0x11; 16],
    &[0x22; 32],
    &[0x33; 64],
    b"twenty-byte-key-0123",
];
const PAYLOADS: [usize; 6] = [0, 8, 64, 200, 1024, 4000];

/// 0, 1, …, 255 twice: payload bytes are slices of it.
const PATTERN: [u8; 512] = {
    let mut p = [0; 512];
    let mut i = 0;
    while i < 512 {
        p[i] = i as u8;
        i += 1;
    }
    p
};

/// `len` payload bytes counting up from `start` (wrapping), built by copies of `PATTERN`
/// rather than a loop per byte: the instrumented loop of up to 65,535 iterations per frame
/// cost a tenth of the target's time.
fn payload(len: usize, start: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    let mut at = usize::from(start);
    while p.len() < len {
        let n = (len - p.len()).min(256);
        p.extend_from_slice(&PATTERN[at..at + n]);
        at = (at + n) % 256;
    }
    p
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    Sha,
    Hmac(usize),
    /// Signed, then a payload or tag byte changed.
    Broken,
}

/// A validated move (with the bounds of its dispatch stamp) or a rejection (with its
/// frame's length, its budget cost).
#[derive(Debug, Clone)]
enum Ev {
    Frame(Vec<u8>, Window),
    Rej(Rejection, usize),
}

/// [`clock::now_ns`] just before the model and the core saw the call that accepted a move,
/// and just after the core answered: its dispatch stamp lies in between.
type Window = [u64; 2];

#[derive(Debug)]
struct MInbox {
    push: bool,
    /// Bytes of the room's accepted moves not yet taken into a delivery.
    reserved: usize,
    /// Pull rooms: validated or rejected, not yet drained, in order. (A push room's
    /// events wait in its shard's `pushed`, in the order its worker met them.)
    events: VecDeque<Ev>,
}

#[derive(Debug)]
struct MRoom {
    open: bool,
    hmac: bool,
    push: bool,
    rate: Option<f64>,
    /// Core-side members with their token count.
    members: BTreeMap<u32, f64>,
    inbox: usize,
}

#[derive(Debug)]
enum WOp {
    Move(Vec<u8>, Signer, Window),
    Open {
        room: u32,
        inbox: usize,
        hmac: bool,
    },
    Join {
        room: u32,
        player: u32,
        key: Option<usize>,
    },
    Leave {
        room: u32,
        player: u32,
    },
    Close {
        room: u32,
    },
    /// `failShardForTesting`: the worker panics here.
    Fail,
}

struct WPlayer {
    key: Option<usize>,
    window: WindowModel,
}

struct WRoom {
    inbox: usize,
    hmac: bool,
    players: BTreeMap<u32, WPlayer>,
}

#[derive(Default)]
struct MShard {
    queue: Vec<WOp>,
    inflight: u64,
    head: usize,
    tail: usize,
    wraps: u64,
    rooms: BTreeMap<u32, WRoom>,
    /// The worker took a `Fail`: it rejects every later move (`ShardFailed`).
    failed: bool,
    /// The worker took a second `Fail`: it is gone, the control queue refuses everything.
    dead: bool,
    /// `poll` returned the failure: the shard's rooms answer `Closed`.
    reported: bool,
    /// Failure reports due and not yet polled (`true`: the second one, the worker stopped).
    reports: VecDeque<bool>,
    /// The push rooms' events (room, inbox) not yet taken into a delivery, in the order the
    /// worker met them: the next delivery is a prefix of it.
    pushed: VecDeque<(u32, usize, Ev)>,
    /// A push delivery of this shard is out with JavaScript, not yet released: the worker
    /// builds no other.
    out: bool,
}

impl MShard {
    fn fail_queued(&self) -> bool {
        self.queue.iter().any(|op| matches!(op, WOp::Fail))
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct MCounters {
    dispatched: u64,
    accepted: u64,
    verdicts: [u64; Verdict::COUNT],
    reasons: [u64; Reason::COUNT],
    delivered: u64,
    batches: u64,
    backpressure: [u64; 3],
}

struct Model {
    cfg: Config,
    cap: usize,
    closed: bool,
    /// [`clock::now_ns`] before the current dispatch call (the driver sets it).
    called_at: u64,
    /// Moves queued by the current dispatch call, whose stamp bound the driver sets once
    /// the core has answered: (shard, index in its queue).
    unstamped: Vec<(usize, usize)>,
    rooms: BTreeMap<u32, MRoom>,
    inboxes: Vec<MInbox>,
    shards: Vec<MShard>,
    k: MCounters,
}

impl Model {
    /// A model of `core` as it stands: no rooms, nothing queued, counters as they are, each
    /// shard's arena write position at `offsets` (tracked across inputs by the pool).
    fn new(cfg: &Config, core: &Core, offsets: &[usize]) -> Self {
        let c = core.counters();
        let stats = core.shard_stats();
        Self {
            cap: (cfg.arena_bytes & !7).max(64),
            cfg: cfg.clone(),
            closed: false,
            called_at: 0,
            unstamped: Vec::new(),
            rooms: BTreeMap::new(),
            inboxes: Vec::new(),
            shards: offsets
                .iter()
                .zip(&stats)
                .map(|(&o, st)| MShard {
                    head: o,
                    tail: o,
                    wraps: st.arena_wraps,
                    ..MShard::default()
                })
                .collect(),
            k: MCounters {
                dispatched: c.dispatched,
                accepted: c.accepted,
                verdicts: c.verdicts,
                reasons: c.reasons,
                delivered: c.delivered,
                batches: c.batches,
                backpressure: c.backpressure,
            },
        }
    }

    fn shard(&self, room: u32) -> usize {
        room as usize % self.cfg.shards
    }

    fn verdict(&mut self, v: Verdict) -> Verdict {
        self.k.dispatched += 1;
        self.k.verdicts[v as usize] += 1;
        if v == Verdict::Accepted {
            self.k.accepted += 1;
        }
        v
    }

    fn dispatch(&mut self, bytes: &[u8], signer: Signer, sender: Option<u32>) -> Verdict {
        if self.closed {
            return self.verdict(Verdict::Closed);
        }
        let h = match ref_check(bytes, self.cfg.max_payload) {
            Ok(h) => h,
            Err(FrameError::Oversize { .. }) => return self.verdict(Verdict::Oversize),
            Err(_) => return self.verdict(Verdict::Malformed),
        };
        let shard = self.shard(h.room);
        // A failed shard answers for every room it would own, open or not.
        if self.shards[shard].reported {
            return self.verdict(Verdict::Closed);
        }
        let Some(room) = self.rooms.get_mut(&h.room).filter(|r| r.open) else {
            return self.verdict(Verdict::UnknownRoom);
        };
        if (h.flags & 1 == 1) != room.hmac {
            return self.verdict(Verdict::AuthMismatch);
        }
        if sender.is_some_and(|s| s != h.player) {
            return self.verdict(Verdict::WrongSender);
        }
        // Past `WrongSender`, the frame's player is the sender (when one is given).
        let key = h.player;
        let Some(&tokens) = room.members.get(&key) else {
            return self.verdict(Verdict::NotMember);
        };
        if room.rate.is_some() && tokens < 1.0 {
            return self.verdict(Verdict::RateLimited);
        }
        let len = bytes.len();
        let s = &mut self.shards[shard];
        let need = record_size(len);
        let off = s.head % self.cap;
        let skip = if off + need > self.cap {
            self.cap - off
        } else {
            0
        };
        let total = need + skip;
        let inbox = &mut self.inboxes[room.inbox];
        let cause = if s.inflight >= self.cfg.channel_capacity as u64 {
            Some(0)
        } else if total > self.cap || s.head + total - s.tail > self.cap {
            Some(1)
        } else if inbox.reserved + len > self.cfg.room_bytes {
            Some(2)
        } else {
            None
        };
        if let Some(c) = cause {
            self.k.backpressure[c] += 1;
            return self.verdict(Verdict::Backpressure);
        }
        inbox.reserved += len;
        if off + total >= self.cap {
            s.wraps += 1;
        }
        s.head += total;
        s.inflight += 1;
        s.queue.push(WOp::Move(
            bytes.to_vec(),
            signer,
            [self.called_at, u64::MAX],
        ));
        self.unstamped.push((shard, s.queue.len() - 1));
        if room.rate.is_some() {
            if let Some(t) = room.members.get_mut(&key) {
                *t -= 1.0;
            }
        }
        self.verdict(Verdict::Accepted)
    }

    fn open_room(&mut self, room: u32, hmac: bool, push: bool, rate: Option<f64>) -> Status {
        if self.closed || self.shards[self.shard(room)].reported {
            return Status::Closed;
        }
        let inbox = match self.rooms.get_mut(&room) {
            Some(r) if r.open => return Status::RoomExists,
            Some(r) if r.push != push => return Status::WrongDelivery,
            Some(r) => {
                r.open = true;
                r.hmac = hmac;
                r.rate = rate;
                r.inbox
            }
            None => {
                self.inboxes.push(MInbox {
                    push,
                    reserved: 0,
                    events: VecDeque::new(),
                });
                let inbox = self.inboxes.len() - 1;
                self.rooms.insert(
                    room,
                    MRoom {
                        open: true,
                        hmac,
                        push,
                        rate,
                        members: BTreeMap::new(),
                        inbox,
                    },
                );
                inbox
            }
        };
        let s = self.shard(room);
        self.shards[s].queue.push(WOp::Open { room, inbox, hmac });
        Status::Ok
    }

    fn open_mut(&mut self, room: u32) -> Result<&mut MRoom, Status> {
        if self.closed {
            return Err(Status::Closed);
        }
        if self.shards[self.shard(room)].reported {
            return Err(Status::Closed);
        }
        self.rooms
            .get_mut(&room)
            .filter(|r| r.open)
            .ok_or(Status::UnknownRoom)
    }

    /// `failShardForTesting(shard)`: queues a `Fail` (dropped by a stopped worker's queue).
    fn fail_shard(&mut self, shard: usize) -> Status {
        if self.closed || shard >= self.shards.len() {
            return Status::Closed;
        }
        let s = &mut self.shards[shard];
        if s.dead {
            // Gone for good: the control is not taken.
            return Status::Closed;
        }
        s.queue.push(WOp::Fail);
        Status::Ok
    }

    fn join(
        &mut self,
        room: u32,
        player: u32,
        key: Option<&[u8]>,
        key_idx: Option<usize>,
    ) -> Status {
        let r = match self.open_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if key.is_some() != r.hmac {
            return Status::WrongDelivery;
        }
        if key.is_some_and(|k| !(16..=64).contains(&k.len())) {
            return Status::WrongDelivery;
        }
        let burst = r.rate.unwrap_or(0.0);
        r.members.entry(player).or_insert(burst);
        let s = self.shard(room);
        self.shards[s].queue.push(WOp::Join {
            room,
            player,
            key: key_idx,
        });
        Status::Ok
    }

    fn leave(&mut self, room: u32, player: u32) -> Status {
        let r = match self.open_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        if r.members.remove(&player).is_none() {
            return Status::UnknownPlayer;
        }
        let s = self.shard(room);
        self.shards[s].queue.push(WOp::Leave { room, player });
        Status::Ok
    }

    /// Closed with nothing in flight or waiting in its inbox (moves already taken into a
    /// delivery, even one still out, do not count): the room is forgotten.
    fn forgettable(&self, room: u32) -> bool {
        self.rooms
            .get(&room)
            .is_some_and(|r| !r.open && self.inboxes[r.inbox].reserved == 0)
    }

    fn forget_if_done(&mut self, room: u32) {
        if self.forgettable(room) {
            self.rooms.remove(&room);
        }
    }

    fn close_room(&mut self, room: u32) -> Status {
        let r = match self.open_mut(room) {
            Ok(r) => r,
            Err(s) => return s,
        };
        r.open = false;
        r.members.clear();
        self.forget_if_done(room);
        let s = self.shard(room);
        self.shards[s].queue.push(WOp::Close { room });
        Status::Ok
    }

    /// `Core::release_delivery(shard)`: the shard's worker may deliver again (a no-op
    /// when none is out, or for a shard that does not exist).
    fn release(&mut self, shard: usize) {
        if let Some(s) = self.shards.get_mut(shard) {
            s.out = false;
        }
    }

    /// The worker takes every queued operation, in order (what a flush lets it do).
    fn run_workers(&mut self) {
        for s in &mut self.shards {
            let mut ops = std::mem::take(&mut s.queue).into_iter();
            while let Some(op) = ops.next() {
                match op {
                    WOp::Move(bytes, signer, window) => {
                        let h = ref_header(&bytes).expect("queued frames have headers");
                        let r = s
                            .rooms
                            .get_mut(&h.room)
                            .expect("a move for a room its worker does not know");
                        let outcome = match r.players.get_mut(&h.player) {
                            _ if s.failed => Err(Reason::ShardFailed),
                            None => panic!(
                                "model: a move of non-member {} of room {} was queued \
                                 (dispatch answers NotMember)",
                                h.player, h.room
                            ),
                            Some(p) => {
                                let tag_ok = match (r.hmac, signer) {
                                    (false, Signer::Sha) => true,
                                    (true, Signer::Hmac(k)) => p.key == Some(k),
                                    _ => false,
                                };
                                if !tag_ok {
                                    Err(Reason::BadTag)
                                } else if p.window.accept(h.seq).is_err() {
                                    Err(Reason::Replay)
                                } else {
                                    Ok(())
                                }
                            }
                        };
                        let ev = match outcome {
                            Ok(()) => Ev::Frame(bytes, window),
                            Err(reason) => {
                                self.k.reasons[reason as usize] += 1;
                                let len = bytes.len();
                                Ev::Rej(
                                    Rejection {
                                        room: h.room,
                                        player: h.player,
                                        seq: h.seq,
                                        reason,
                                    },
                                    len,
                                )
                            }
                        };
                        let inbox = &mut self.inboxes[r.inbox];
                        if inbox.push {
                            s.pushed.push_back((h.room, r.inbox, ev));
                        } else {
                            inbox.events.push_back(ev);
                        }
                    }
                    WOp::Open { room, inbox, hmac } => {
                        s.rooms.insert(
                            room,
                            WRoom {
                                inbox,
                                hmac,
                                players: BTreeMap::new(),
                            },
                        );
                    }
                    WOp::Join { room, player, key } => {
                        if let Some(r) = s.rooms.get_mut(&room) {
                            r.players
                                .entry(player)
                                .and_modify(|p| p.key = key)
                                .or_insert(WPlayer {
                                    key,
                                    window: WindowModel::default(),
                                });
                        }
                    }
                    WOp::Leave { room, player } => {
                        if let Some(r) = s.rooms.get_mut(&room) {
                            r.players.remove(&player);
                        }
                    }
                    WOp::Close { room } => {
                        s.rooms.remove(&room);
                    }
                    WOp::Fail if !s.failed => {
                        s.failed = true;
                        s.reports.push_back(false);
                    }
                    WOp::Fail => {
                        // Stopped for good: the queue is buried. The driver queues nothing
                        // behind a second failure (see the header).
                        s.dead = true;
                        s.reports.push_back(true);
                        assert!(
                            ops.next().is_none(),
                            "driver: work queued behind a second failure"
                        );
                    }
                }
            }
            s.inflight = 0;
            s.tail = s.head;
        }
    }

    fn rejected(&self) -> u64 {
        self.k.reasons.iter().sum()
    }

    /// Before a dispatch call: its moves are stamped from now on.
    fn calling(&mut self) {
        self.called_at = clock::now_ns();
        self.unstamped.clear();
    }

    /// After the core answered a dispatch call: its moves were stamped by now.
    fn answered(&mut self) {
        let now = clock::now_ns();
        for (s, i) in self.unstamped.drain(..) {
            if let WOp::Move(_, _, window) = &mut self.shards[s].queue[i] {
                window[1] = now;
            }
        }
    }
}

/// One room of a delivery as the model expects it.
#[derive(Debug, Default)]
struct Group {
    room: u32,
    inbox: usize,
    /// The validated frames, back to back, in dispatch order.
    frames: Vec<u8>,
    moves: u32,
    rejections: Vec<Rejection>,
    /// Bounds of each move's dispatch stamp.
    stamps: Vec<Window>,
    /// Budget the room gets back when the group is taken.
    cost: usize,
}

impl Group {
    fn add(&mut self, ev: Ev) {
        match ev {
            Ev::Frame(f, window) => {
                self.moves += 1;
                self.cost += f.len();
                self.frames.extend_from_slice(&f);
                self.stamps.push(window);
            }
            Ev::Rej(r, len) => {
                self.cost += len;
                self.rejections.push(r);
            }
        }
    }
}

/// Events of many rooms, in the order the worker met them, grouped by room: the rooms in
/// the order each first appears (the order the worker lists a push room as having moves
/// to deliver, which is the order it takes them into a delivery), each room's events in
/// order.
fn group(events: impl IntoIterator<Item = (u32, usize, Ev)>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (room, inbox, ev) in events {
        let at = match groups.iter().position(|g| g.room == room) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    room,
                    inbox,
                    ..Group::default()
                });
                groups.len() - 1
            }
        };
        assert_eq!(
            groups[at].inbox, inbox,
            "model: two inboxes of room {room} pending at once"
        );
        groups[at].add(ev);
    }
    groups
}

/// One room of a delivery, read back.
struct Read {
    entry: RoomEntry,
    rejections: Vec<Rejection>,
    stamps: Vec<u64>,
}

fn word(b: &[u8], i: usize) -> usize {
    u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as usize
}

/// Reads a delivery back through its accessors and checks its format (the module docs of
/// `delivery`): the header, frames room after room from byte 32 with no gap, a room table
/// and a rejection table that add up to the header's counts, each room's rejections its
/// own, one stamp per move (never in the future, in dispatch order within a room), tables
/// aligned for JavaScript's typed arrays, nothing past the stamps. Returns each room entry
/// with its rejections and stamps.
fn read_delivery(m: &Moves, shard: Option<u32>) -> Vec<Read> {
    let b = m.bytes();
    assert!(
        b.len() >= delivery::HEADER_BYTES,
        "delivery shorter than its header"
    );
    assert_eq!(word(b, 0), delivery::VERSION as usize, "delivery version");
    assert_eq!(m.shard(), shard, "delivery's shard");
    let entries: Vec<RoomEntry> = m.room_entries().collect();
    let rejections: Vec<Rejection> = m.rejection_entries().collect();
    let stamps: Vec<u64> = m.stamps().collect();
    assert_eq!(entries.len(), m.rooms() as usize);
    assert!(!entries.is_empty(), "a delivery of no room");
    let mut frame_at = delivery::HEADER_BYTES;
    let mut rej_at = 0;
    let mut moves = 0;
    let now = clock::now_ns();
    let mut out = Vec::new();
    for e in &entries {
        assert!(
            e.moves > 0 || e.rejections > 0,
            "an empty room entry: {e:?}"
        );
        assert_eq!(
            e.frame_start, frame_at,
            "room frames not back to back: {e:?}"
        );
        assert_eq!(
            e.rejection_start as usize, rej_at,
            "rejections not in table order"
        );
        frame_at += e.frame_bytes;
        let rej = rejections[rej_at..rej_at + e.rejections as usize].to_vec();
        assert!(
            rej.iter().all(|r| r.room == e.room),
            "another room's rejection in room {}: {rej:?}",
            e.room
        );
        rej_at += e.rejections as usize;
        let own = &stamps[moves..moves + e.moves as usize];
        assert!(
            own.windows(2).all(|w| w[0] <= w[1]) && own.iter().all(|&t| t <= now),
            "room {}: stamps out of dispatch order or in the future: {own:?} (now {now})",
            e.room
        );
        out.push(Read {
            entry: *e,
            rejections: rej,
            stamps: own.to_vec(),
        });
        moves += e.moves as usize;
    }
    assert_eq!(moves, m.moves() as usize, "moves in the header");
    assert_eq!(rej_at, m.rejections() as usize, "rejections in the header");
    assert_eq!(stamps.len(), moves);
    let (rooms_at, rejections_at, stamps_at) = (word(b, 5), word(b, 6), word(b, 7));
    assert!(
        rooms_at % 4 == 0 && (frame_at..frame_at + 4).contains(&rooms_at),
        "room table at {rooms_at}, frames end at {frame_at}"
    );
    assert_eq!(
        rejections_at,
        rooms_at + 4 * delivery::ROOM_WORDS * entries.len(),
        "rejection table right after the room table"
    );
    let rej_end = rejections_at + 4 * delivery::REJECTION_WORDS * rej_at;
    assert!(
        stamps_at % 8 == 0 && (rej_end..rej_end + 8).contains(&stamps_at),
        "stamps at {stamps_at}, rejection table ends at {rej_end}"
    );
    assert_eq!(b.len(), stamps_at + 8 * moves, "bytes past the stamps");
    out
}

/// Checks one room of a delivery against the model's group.
fn check_room(m: &Moves, r: &Read, g: &Group, what: &str) {
    let (e, rej) = (&r.entry, &r.rejections[..]);
    assert_eq!(e.room, g.room, "{what}: room order");
    assert_eq!(
        (e.moves, rej),
        (g.moves, &g.rejections[..]),
        "{what}: room {}: moves or rejections differ from the model's",
        e.room
    );
    assert!(
        m.frames(e) == &g.frames[..],
        "{what}: room {}: frame bytes differ from what was dispatched",
        e.room
    );
    for (stamp, [lo, hi]) in r.stamps.iter().zip(&g.stamps) {
        assert!(
            (*lo..=*hi).contains(stamp),
            "{what}: room {}: a dispatch stamp {stamp} outside its call [{lo}, {hi}]",
            e.room
        );
    }
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

struct Driver<'a> {
    input: Input<'a>,
    core: Core,
    m: Model,
    /// Generator state: last seq per (room, player), key last joined per (room, player).
    last_seq: BTreeMap<(u32, u32), u32>,
    joined_key: BTreeMap<(u32, u32), usize>,
    events: Vec<OverloadEvent>,
    /// Failure reports polled (first, second).
    failures: [u32; 2],
    hmac_keys: Vec<Box<PlayerKey>>,
    /// The core's workers run inside `Core::step_workers` (see the header).
    inline: bool,
    /// Per shard, its push delivery out with JavaScript, if any (back to the pool when
    /// released).
    held: Vec<Option<Moves>>,
    /// What the input exercised (printed with `MOVE_FUZZ_DEBUG=1`).
    tally: Tally,
}

/// Deliveries an input saw, for `MOVE_FUZZ_DEBUG=1`.
#[derive(Debug, Default)]
struct Tally {
    /// Push deliveries, and those of more than one room.
    push: u32,
    push_multi: u32,
    /// Push deliveries held out after a flush; flushes that found one out with push moves
    /// waiting (bit 7 of `hold`).
    held: u32,
    waited: u32,
    /// Non-empty `drain` / `drain_all` results, and `drain_all`s of more than one room.
    drains: u32,
    drain_alls: u32,
    drain_all_multi: u32,
    /// Rooms forgotten by a delivery or a drain (their last moves taken).
    forgotten_at_take: u32,
}

impl Driver<'_> {
    fn room_id(&mut self) -> u32 {
        let i = self.input.below(ROOM_IDS.len() + 1);
        ROOM_IDS.get(i).copied().unwrap_or(UNKNOWN_ROOM)
    }

    fn player_id(&mut self) -> u32 {
        PLAYER_IDS[self.input.below(PLAYER_IDS.len())]
    }

    fn make_frame(&mut self, structural: bool) -> (Vec<u8>, Signer) {
        let room = self.room_id();
        let player = self.player_id();
        let sel = self.input.u8();
        let last = self.last_seq.get(&(room, player)).copied().unwrap_or(0);
        let seq = match sel & 7 {
            0..=2 => last.wrapping_add(1),
            3 => last,
            // Around the replay window's edges (top - 127 is the oldest still inside).
            4 => last.wrapping_sub(match sel >> 3 {
                0 => 127,
                1 => 128,
                2 => 126,
                k => u32::from(k) * 5,
            }),
            5 => last.wrapping_add(u32::from(self.input.u16())),
            6 => 0,
            _ => self.input.u32(),
        };
        if seq > last || sel & 7 <= 2 {
            self.last_seq.insert((room, player), seq);
        }
        let room_hmac = self.m.rooms.get(&room).is_some_and(|r| r.hmac);
        let mode = self.input.u8();
        // Tag kind: mostly the room's; sometimes the other one (flag and tag agree), or a
        // flag that disagrees with the tag.
        let (hmac_flag, signer) = {
            let hmac = match mode & 3 {
                0..=1 => room_hmac,
                _ => !room_hmac,
            };
            let key = match (mode >> 2) & 3 {
                0..=2 => self.joined_key.get(&(room, player)).copied().unwrap_or(0),
                _ => usize::from(mode >> 4) % KEYS.len(),
            };
            let signer = if hmac { Signer::Hmac(key) } else { Signer::Sha };
            if mode & 3 == 3 {
                (!hmac, signer)
            } else {
                (hmac, signer)
            }
        };
        let max = self.m.cfg.max_payload;
        let lsel = self.input.u8();
        // Exact fits: what is left of the room budget, or of the arena before its end.
        let budget_left = self.m.rooms.get(&room).map_or(0, |r| {
            (self.m.cfg.room_bytes - self.m.inboxes[r.inbox].reserved)
                .saturating_sub(frame::FRAME_OVERHEAD)
        });
        let ring_left = {
            let s = &self.m.shards[self.m.shard(room)];
            (self.m.cap - s.head % self.m.cap).saturating_sub(24 + frame::FRAME_OVERHEAD)
        };
        let len = match lsel {
            0..=199 => usize::from(lsel) % (max.min(255) + 1),
            200..=239 => max.saturating_sub(usize::from(lsel - 200) % 4),
            240..=243 => (max + 1 + usize::from(lsel % 3)).min(65535),
            244..=246 => budget_left.min(max) - usize::from(lsel - 244).min(budget_left.min(max)),
            247..=249 => (budget_left + 1 + usize::from(lsel - 247) * 7).min(max),
            250..=252 => ring_left.min(max) - usize::from(lsel - 250).min(ring_left.min(max)),
            253 | 254 => (ring_left + 1 + usize::from(lsel - 253) * 8).min(max),
            255 => usize::from(self.input.u16()),
        };
        let h = Header {
            flags: u8::from(hmac_flag),
            room,
            player,
            seq,
            tick: u32::from(lsel),
            kind: u16::from(mode),
            len: len as u16,
        };
        let payload = payload(len, sel);
        let mut f = frame::encode_unsigned(&h, &payload).expect("len < 65536");
        let key = match signer {
            Signer::Hmac(k) => Some(&*self.hmac_keys[k]),
            _ => None,
        };
        auth::sign(&mut f, key);
        let mut signer = signer;
        let damage = self.input.u8();
        match damage % 16 {
            // Corrupt a payload or tag byte: never verifies.
            0 | 1 => {
                let at = 24 + usize::from(damage) % (len + 32);
                f[at] ^= 1 | (damage >> 4);
                signer = Signer::Broken;
            }
            // Structural damage (length-changing only outside streams).
            2 if structural => {
                let cut = usize::from(damage >> 4) + 1;
                f.truncate(f.len().saturating_sub(cut));
            }
            3 if structural => f.extend_from_slice(&[0; 3][..usize::from(damage >> 6) % 3 + 1]),
            4 => f[0] = b'X',
            5 => f[2] = 2,
            6 => f[3] |= 0x80,
            _ => {}
        }
        (f, signer)
    }

    fn sender(&mut self, player: Option<u32>) -> Option<u32> {
        match self.input.u8() % 8 {
            0..=3 => None,
            4..=6 => player,
            _ => Some(self.player_id()),
        }
    }

    fn op_move(&mut self) {
        let (f, signer) = self.make_frame(true);
        let player = f
            .get(8..12)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
        let sender = self.sender(player);
        self.m.calling();
        let want = self.m.dispatch(&f, signer, sender);
        let got = self.core.dispatch(&f, sender);
        self.m.answered();
        assert_eq!(got, want, "dispatch verdict");
    }

    fn op_stream(&mut self) {
        let n = 1 + self.input.below(16);
        let mut bytes = Vec::new();
        let mut signers = BTreeMap::new();
        for _ in 0..n {
            let (f, s) = self.make_frame(false);
            signers.insert(bytes.len(), s);
            bytes.extend_from_slice(&f);
        }
        match self.input.u8() % 4 {
            1 => {
                let (f, _) = self.make_frame(false);
                let cut = self.input.below(f.len());
                bytes.extend_from_slice(&f[..cut]);
            }
            2 => bytes.extend_from_slice(&[0x4d; 23][..self.input.below(24)]),
            3 => bytes.extend_from_slice(b"MV\x02\x00 a header that is not v1"),
            _ => {}
        }
        let sender = match self.input.u8() % 3 {
            0 => None,
            _ => Some(self.player_id()),
        };
        // The model, by the documented rules.
        self.m.calling();
        let mut want = StreamOutcome::default();
        loop {
            let rest = &bytes[want.consumed..];
            if rest.len() < 24 {
                break;
            }
            let Ok(h) = ref_header(rest) else {
                // One verdict for the bad header: `Closed` once input is closed (the checks'
                // order), else `Malformed`.
                want.malformed = true;
                self.m.verdict(if self.m.closed {
                    Verdict::Closed
                } else {
                    Verdict::Malformed
                });
                break;
            };
            if rest.len() < h.frame_len() {
                break;
            }
            let signer = *signers
                .get(&want.consumed)
                .expect("stream frames are length-consistent");
            match self.m.dispatch(&rest[..h.frame_len()], signer, sender) {
                Verdict::Accepted => want.accepted += 1,
                Verdict::Backpressure => {
                    want.backpressure = true;
                    break;
                }
                _ => want.rejected += 1,
            }
            want.consumed += h.frame_len();
        }
        let got = self.core.dispatch_stream(&bytes, sender);
        self.m.answered();
        assert_eq!(got, want, "dispatch_stream outcome");
    }

    fn op_open(&mut self) {
        let room = self.room_id();
        let b = self.input.u8();
        let hmac = b & 1 == 1;
        let push = b & 2 == 2;
        let rate = (b & 4 == 4).then(|| f64::from((b >> 3) % 6));
        let want = self.m.open_room(room, hmac, push, rate);
        let got = self.core.open_room(
            room,
            hmac,
            push,
            rate.map(|burst| RateLimit {
                per_second: 0.0,
                burst,
            }),
        );
        assert_eq!(got, want, "open_room({room}, hmac {hmac}, push {push})");
    }

    fn op_join(&mut self) {
        let room = self.room_id();
        let player = self.player_id();
        let k = self.input.u8() % 8;
        let (key, idx): (Option<Vec<u8>>, Option<usize>) = match k {
            0..=3 => (Some(KEYS[usize::from(k)].to_vec()), Some(usize::from(k))),
            4 | 5 => (None, None),
            6 => (Some(vec![7; 15]), None),
            _ => (Some(vec![7; 65]), None),
        };
        let want = self.m.join(room, player, key.as_deref(), idx);
        let got = self.core.join(room, player, key.as_deref());
        assert_eq!(got, want, "join({room}, {player}, key {k})");
        if got == Status::Ok {
            if let Some(i) = idx {
                self.joined_key.insert((room, player), i);
            }
        }
    }

    fn op_drain(&mut self, room: u32) {
        let got = self.core.drain(room);
        let Some(r) = self.m.rooms.get(&room) else {
            assert_eq!(got.err(), Some(Status::UnknownRoom), "drain({room})");
            return;
        };
        if r.push {
            assert_eq!(got.err(), Some(Status::WrongDelivery), "drain({room})");
            return;
        }
        let got = got.expect("drain of a pull room");
        let inbox = r.inbox;
        let events = std::mem::take(&mut self.m.inboxes[inbox].events);
        let want = group(events.into_iter().map(|ev| (room, inbox, ev)));
        match (got, want.first()) {
            (None, None) => {}
            (Some(m), Some(g)) => {
                let read = read_delivery(&m, None);
                assert_eq!(read.len(), 1, "drain({room}): one room");
                check_room(&m, &read[0], g, "drain");
                self.tally.drains += 1;
                self.taken(&want);
                self.core.pool().put(m.into_bytes());
            }
            (got, _) => panic!(
                "drain({room}): got {got:?}, the model has {} moves and {} rejections",
                want.first().map_or(0, |g| g.moves),
                want.first().map_or(0, |g| g.rejections.len())
            ),
        }
        if self.m.forgettable(room) {
            self.tally.forgotten_at_take += 1;
        }
        self.m.forget_if_done(room);
    }

    /// `drain_all`: every pull room with something waiting, each exactly once and with all
    /// it holds; the rooms come in the core's map order, so they are compared as a set.
    fn op_drain_all(&mut self) {
        let got = self.core.drain_all();
        let mut want = Vec::new();
        for (&room, r) in &self.m.rooms {
            if !r.push {
                let events = std::mem::take(&mut self.m.inboxes[r.inbox].events);
                let inbox = r.inbox;
                want.extend(group(events.into_iter().map(|ev| (room, inbox, ev))));
            }
        }
        match got {
            None => assert!(
                want.is_empty(),
                "drain_all: nothing, the model has rooms {:?} waiting",
                want.iter().map(|g| g.room).collect::<Vec<_>>()
            ),
            Some(m) => {
                let read = read_delivery(&m, None);
                let mut rooms: Vec<u32> = read.iter().map(|r| r.entry.room).collect();
                rooms.sort_unstable();
                let mut model: Vec<u32> = want.iter().map(|g| g.room).collect();
                model.sort_unstable();
                assert_eq!(rooms, model, "drain_all: rooms (each once)");
                for r in &read {
                    let g = want
                        .iter()
                        .find(|g| g.room == r.entry.room)
                        .expect("compared above");
                    check_room(&m, r, g, "drain_all");
                }
                self.tally.drain_alls += 1;
                self.tally.drain_all_multi += u32::from(read.len() > 1);
                self.taken(&want);
                self.core.pool().put(m.into_bytes());
            }
        }
        // Closed pull rooms drained empty are forgotten.
        let done: Vec<u32> = self
            .m
            .rooms
            .keys()
            .copied()
            .filter(|&id| self.m.forgettable(id))
            .collect();
        for room in done {
            self.tally.forgotten_at_take += 1;
            self.m.rooms.remove(&room);
        }
    }

    /// The model's side of a delivery of `groups` (checked): budgets back, counters.
    fn taken(&mut self, groups: &[Group]) {
        for g in groups {
            self.m.inboxes[g.inbox].reserved -= g.cost;
            self.m.k.delivered += u64::from(g.moves);
            // `batches` counts room entries.
            self.m.k.batches += 1;
        }
    }

    /// `release_delivery(shard)`, as `Dispatcher` calls it once `onDelivery` returns; the
    /// buffer goes back to the pool, as the `ArrayBuffer`'s finalizer does.
    fn op_release(&mut self, shard: usize) {
        self.m.release(shard);
        if let Some(m) = self.held.get_mut(shard).and_then(Option::take) {
            self.core.pool().put(m.into_bytes());
        }
        self.core.release_delivery(shard as u32);
    }

    /// Lets the workers run until the flush is answered, releasing push deliveries as
    /// `Dispatcher` does, except the last one of the shards in `hold` (bit `s` for shard
    /// `s`), which stays out until the next flush or release; pauses. Deliveries held by
    /// the previous flush are released first, or, with bit 7 of `hold`, only after one round
    /// of the workers: a shard whose delivery is out cannot deliver, so the flush must not
    /// be answered then if such a shard has push moves waiting.
    fn flush(&mut self, hold: u8) {
        let late_release = hold & 0x80 != 0;
        if !late_release {
            self.release_held();
        }
        self.m.run_workers();
        let token = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.core.pause(false);
        self.core.request_flush(token);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut done = false;
        let mut first_round = true;
        while !done {
            if self.inline {
                self.core.step_workers();
            }
            for d in self.core.poll() {
                match d {
                    Delivery::Moves(m) => self.push_delivery(m, hold),
                    Delivery::Flushed { token: t } => {
                        assert_eq!(t, token, "unexpected flush token");
                        done = true;
                    }
                    Delivery::Overload(e) => self.events.push(e),
                    Delivery::Failed { shard, message } => self.failure(shard, &message),
                    Delivery::Connection(e) => panic!("no native ingress in this target: {e:?}"),
                }
            }
            if first_round && late_release {
                self.tally.waited += self
                    .m
                    .shards
                    .iter()
                    .filter(|s| s.out && !s.pushed.is_empty())
                    .count() as u32;
                for (i, s) in self.m.shards.iter().enumerate() {
                    assert!(
                        !(done && s.out && !s.pushed.is_empty()),
                        "flush answered while shard {i}'s delivery is out and {} push \
                         moves or rejections wait",
                        s.pushed.len()
                    );
                }
                self.release_held();
            }
            first_round = false;
            assert!(Instant::now() < deadline, "flush {token} never answered");
            if !done && !self.inline {
                std::thread::yield_now();
            }
        }
        self.core.pause(true);
        for d in self.core.poll() {
            match d {
                Delivery::Overload(e) => self.events.push(e),
                d => panic!("delivery after the flush answer: {d:?}"),
            }
        }
        // Every failure was reported before the flush answer; the core has seen them, so
        // the failed shards' rooms answer `Closed` from now on.
        for (i, s) in self.m.shards.iter_mut().enumerate() {
            assert!(
                s.reports.is_empty(),
                "shard {i}: failure reports missing: {:?}",
                s.reports
            );
            s.reported = s.failed;
            assert!(
                s.pushed.is_empty(),
                "shard {i}: push moves not delivered by the flush: {} left",
                s.pushed.len()
            );
        }
    }

    /// Releases the deliveries held out (the shards whose delivery the model has out).
    fn release_held(&mut self) {
        for shard in 0..self.m.shards.len() {
            if self.m.shards[shard].out {
                self.op_release(shard);
            }
        }
    }

    /// A `Delivery::Failed`: the next report the model expects of that shard.
    fn failure(&mut self, shard: u32, message: &str) {
        let s = self
            .m
            .shards
            .get_mut(shard as usize)
            .unwrap_or_else(|| panic!("failure of shard {shard}, which does not exist"));
        let again = s
            .reports
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected failure of shard {shard}: {message}"));
        assert!(
            message.contains(DELIBERATE),
            "shard {shard} failed for another reason: {message}"
        );
        assert_eq!(
            message.contains("again, while failed"),
            again,
            "shard {shard}: first or second failure? {message}"
        );
        self.failures[usize::from(again)] += 1;
    }

    /// `failShardForTesting`. At most one `Fail` waits per shard, and a second failure
    /// comes only once the first is reported, inline (see the header).
    fn op_fail(&mut self, shard: usize) {
        if let Some(s) = self.m.shards.get(shard).filter(|_| !self.m.closed) {
            if s.fail_queued() || (s.failed && !(s.reported && self.inline)) {
                return;
            }
        }
        let want = self.m.fail_shard(shard);
        assert_eq!(
            self.core.fail_shard_for_testing(shard),
            want,
            "fail_shard_for_testing({shard})"
        );
    }

    /// A shard's push delivery: the next run of its worker's push events (every room with
    /// something waiting when the worker took them, in the order it listed them), each room
    /// with everything it held; one out at a time per shard.
    fn push_delivery(&mut self, m: Moves, hold: u8) {
        let shard = m.shard().expect("a push delivery names its shard") as usize;
        assert!(shard < self.m.shards.len(), "delivery of shard {shard}");
        let read = read_delivery(&m, Some(shard as u32));
        let s = &mut self.m.shards[shard];
        assert!(
            !s.out,
            "shard {shard}: a push delivery while the previous one is out"
        );
        let n = (m.moves() + m.rejections()) as usize;
        assert!(
            n <= s.pushed.len(),
            "shard {shard}: a delivery of {n} moves and rejections, the model has {} waiting",
            s.pushed.len()
        );
        let want = group(s.pushed.drain(..n));
        let rooms: Vec<u32> = read.iter().map(|r| r.entry.room).collect();
        assert_eq!(
            rooms,
            want.iter().map(|g| g.room).collect::<Vec<_>>(),
            "shard {shard}: the delivery's rooms (in the order the worker listed them)"
        );
        for (r, g) in read.iter().zip(&want) {
            let push = self.m.rooms.get(&g.room).is_some_and(|x| x.push);
            assert!(push, "room {} in a push delivery", g.room);
            check_room(&m, r, g, "push delivery");
        }
        s.out = true;
        let last = s.pushed.is_empty();
        self.taken(&want);
        // Closed rooms whose last moves just went out are forgotten.
        for g in &want {
            if self.m.forgettable(g.room) {
                self.tally.forgotten_at_take += 1;
            }
            self.m.forget_if_done(g.room);
        }
        self.tally.push += 1;
        self.tally.push_multi += u32::from(want.len() > 1);
        self.held[shard] = Some(m);
        if last && hold & (1 << shard) != 0 {
            self.tally.held += 1;
        } else {
            self.op_release(shard);
        }
    }

    /// Everything observable agrees with the model.
    fn check(&mut self) {
        let c = self.core.counters();
        let k = &self.m.k;
        assert_eq!(c.dispatched, k.dispatched, "dispatched");
        assert_eq!(c.accepted, k.accepted, "accepted");
        assert_eq!(c.verdicts, k.verdicts, "verdicts");
        assert_eq!(c.backpressure, k.backpressure, "backpressure causes");
        assert_eq!(c.reasons, k.reasons, "reasons");
        assert_eq!(c.rejected, self.m.rejected(), "rejected");
        assert_eq!(c.delivered, k.delivered, "delivered");
        assert_eq!(c.batches, k.batches, "batches");
        // The model forgets a closed room as soon as nothing of it is in flight or waiting
        // (closeRoom, a drain, a push delivery): none lingers.
        for &id in self.m.rooms.keys() {
            assert!(!self.m.forgettable(id), "model: room {id} not forgotten");
        }
        for id in ROOM_IDS.iter().chain(&[UNKNOWN_ROOM]) {
            assert_eq!(
                self.core.has_room(*id),
                self.m.rooms.contains_key(id),
                "has_room({id})"
            );
        }
        let mut want: Vec<(u32, usize)> = self
            .m
            .rooms
            .iter()
            .map(|(&id, r)| (id, self.m.inboxes[r.inbox].reserved))
            .filter(|&(_, b)| b > 0)
            .collect();
        want.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(self.core.room_stats(usize::MAX), want, "room budgets");
        for (s, m) in self.core.shard_stats().iter().zip(&self.m.shards) {
            assert_eq!(s.queue_depth, m.inflight, "queue depth");
            assert_eq!(s.arena_used, m.head - m.tail, "arena bytes");
            assert_eq!(s.arena_capacity, self.m.cap, "arena capacity");
            assert_eq!(s.arena_wraps, m.wraps, "arena wraps");
        }
    }

    fn run(&mut self) {
        let mut ops = 0;
        while !self.input.is_empty() && ops < 400 {
            ops += 1;
            match self.input.u8() % 16 {
                0 => self.op_open(),
                1 => {
                    let room = self.room_id();
                    let want = self.m.close_room(room);
                    assert_eq!(self.core.close_room(room), want, "close_room({room})");
                }
                2 | 3 => self.op_join(),
                4 => {
                    let (room, player) = (self.room_id(), self.player_id());
                    let want = self.m.leave(room, player);
                    assert_eq!(
                        self.core.leave(room, player),
                        want,
                        "leave({room}, {player})"
                    );
                }
                5..=8 => self.op_move(),
                9 => self.op_stream(),
                10 => {
                    let room = self.room_id();
                    self.op_drain(room);
                }
                11 => self.op_drain_all(),
                12 => {
                    let hold = self.input.u8();
                    self.flush(hold);
                }
                13 => {
                    // Shard 0, 1 or 2 (2, and 1 with one shard, do not exist: a no-op).
                    let shard = self.input.below(3);
                    if shard < self.m.shards.len() {
                        self.op_release(shard);
                    } else {
                        self.core.release_delivery(shard as u32);
                    }
                }
                14 => {
                    for d in self.core.poll() {
                        match d {
                            Delivery::Overload(e) => self.events.push(e),
                            d => panic!("delivery while paused: {d:?}"),
                        }
                    }
                }
                _ => match self.input.u8() {
                    0xc1 => {
                        self.m.closed = true;
                        self.core.close_input();
                    }
                    // 0xf4..=0xf7: shard 0, 1, 2 (none of the configurations has a third), 2.
                    b @ 0xf4..=0xf7 => self.op_fail(usize::from(b & 3).min(2)),
                    _ => {}
                },
            }
            self.check();
        }
        // The end: close every room (so that the core can serve the next input; the rooms of
        // a failed shard answer `Closed` and stay), deliver everything, drain every pull
        // room; then the books must balance.
        if !self.m.closed {
            let open: Vec<u32> = self
                .m
                .rooms
                .iter()
                .filter(|r| r.1.open)
                .map(|r| *r.0)
                .collect();
            for room in open {
                let want = self.m.close_room(room);
                assert_eq!(self.core.close_room(room), want, "close_room({room})");
            }
        }
        self.flush(0);
        // Every pull room: at once (then each room, which has nothing left), or one by one
        // (by the input alone: a reused core's counters are not part of the reproduction).
        if ops % 2 == 0 {
            self.op_drain_all();
        }
        let rooms: Vec<u32> = self.m.rooms.keys().copied().collect();
        for room in rooms {
            self.op_drain(room);
        }
        self.check();
        for d in self.core.poll() {
            match d {
                Delivery::Overload(e) => self.events.push(e),
                d => panic!("delivery after the final flush: {d:?}"),
            }
        }
        let c = self.core.counters();
        assert_eq!(c.accepted, c.delivered + c.rejected, "exactly once");
        if std::env::var_os("MOVE_FUZZ_DEBUG").is_some() {
            eprintln!(
                "counters {c:?}; overload events {}; failures reported {:?}; deliveries {:?}",
                self.events.len(),
                self.failures,
                self.tally
            );
        }
        for (&id, r) in &self.m.rooms {
            assert!(
                r.open && (self.m.closed || self.m.shards[self.m.shard(id)].reported),
                "room {id}: closed rooms not forgotten, or a room left open"
            );
        }
        self.check();
        assert!(self
            .m
            .inboxes
            .iter()
            .all(|i| i.reserved == 0 && i.events.is_empty()));
        assert!(
            self.m.shards.iter().all(|s| !s.out && s.pushed.is_empty())
                && self.held.iter().all(Option::is_none),
            "a push delivery left out or push moves left at the end"
        );
        self.check_overload_events();
    }

    fn check_overload_events(&self) {
        let (qmark, rmark) = (
            self.m.cfg.overload_queue_depth,
            self.m.cfg.overload_room_bytes,
        );
        let mut last: BTreeMap<(u8, u32), bool> = BTreeMap::new();
        for e in &self.events {
            let key = match e.subject {
                Subject::Shard(s) => {
                    assert!(qmark > 0, "shard event with the mark off");
                    (0, s)
                }
                Subject::Room(r) => {
                    assert!(rmark > 0, "room event with the mark off");
                    (1, r)
                }
            };
            let was_recovered = last.get(&key).copied().unwrap_or(true);
            assert_ne!(
                was_recovered, e.recovered,
                "overload events of {:?} do not alternate: {:?}",
                e.subject, self.events
            );
            last.insert(key, e.recovered);
        }
        assert!(
            last.values().all(|&r| r),
            "overloaded at the end with nothing pending: {:?}",
            self.events
        );
    }
}

/// The configurations inputs choose from (by their first byte). A small fixed set, so that
/// each gets one long-lived core: creating a core (runtime thread, arenas, histograms)
/// costs ~1 ms, ten times a typical input.
const CONFIGS: u8 = 32;

/// Flush tokens, unique across inputs (cores are reused).
static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn config(idx: u8) -> Config {
    let i = usize::from(idx % CONFIGS);
    let max_payload = PAYLOADS[(i >> 1) % PAYLOADS.len()];
    let max_frame = frame::FRAME_OVERHEAD + max_payload;
    let min_arena = (64 << 10).max(2 * (record_size(max_frame) + 8));
    let overload = i % 3 == 0;
    Config {
        worker_threads: 1,
        shards: 1 + (i & 1),
        channel_capacity: [1, 7, 64, 4096][(i >> 2) & 3],
        // Not always a multiple of 8: the arena rounds down.
        arena_bytes: min_arena + (i * 1001) % 16_016,
        // Large room budgets in some configurations, so that the arena can fill first.
        room_bytes: if (i >> 3) & 1 == 1 {
            40_000 + i * 8
        } else {
            (4 << 10).max(max_frame) + ((i >> 4) & 1) * 512
        },
        max_payload,
        max_batch_moves: 1 + (i % 5) as u32,
        overload_queue_depth: if overload { 1 + (i % 16) as u64 } else { 0 },
        overload_room_bytes: if overload { 200 + i * 64 } else { 0 },
        ..Config::default()
    }
}

/// A core kept between inputs, with what the model cannot observe: each shard's arena
/// write position.
struct Slot {
    core: Core,
    offsets: Vec<usize>,
}

thread_local! {
    static POOL: RefCell<BTreeMap<u8, Slot>> = RefCell::new(BTreeMap::new());
    /// How to rebuild the state the current input started from (printed on failure).
    static CONTEXT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A fresh core whose arena write positions are advanced to `offsets` (to reproduce an
/// input that failed on a reused core): padding frames to a padding room, flushed one by
/// one.
fn fresh(cfg: &Config, offsets: &[usize]) -> Slot {
    let mut core = if threaded() {
        Core::new(cfg.clone(), Box::new(|| {}))
    } else {
        Core::new_inline(cfg.clone(), Box::new(|| {}))
    }
    .expect("valid config");
    let cap = (cfg.arena_bytes & !7).max(64);
    let mut token = u64::MAX / 2;
    for (shard, &target) in offsets.iter().enumerate() {
        if target % cap == 0 {
            continue;
        }
        let room = 1000 + shard as u32; // 1000 % 2 == 0: shard 0; 1001: shard 1
        assert_eq!(core.open_room(room, false, false, None), Status::Ok);
        assert_eq!(core.join(room, 1, None), Status::Ok);
        // Record sizes run from 80 to `biggest` in steps of 8; `reachable[x]`: x bytes are a
        // sum of such records (every position a real history left is).
        let biggest = record_size(frame::FRAME_OVERHEAD + cfg.max_payload);
        let goal = target % cap;
        let mut reachable = vec![false; goal + 1];
        reachable[0] = true;
        for x in (80..=goal).step_by(8) {
            reachable[x] = (80..=biggest.min(x)).step_by(8).any(|s| reachable[x - s]);
        }
        assert!(reachable[goal], "offset {target} unreachable");
        let mut at = 0usize;
        let mut seq = 0;
        while at != goal {
            let left = goal - at;
            let size = (80..biggest.min(left) + 1)
                .step_by(8)
                .rfind(|&s| reachable[left - s])
                .expect("reachable");
            let len = size - 24 - frame::FRAME_OVERHEAD;
            seq += 1;
            let h = Header {
                flags: 0,
                room,
                player: 1,
                seq,
                tick: 0,
                kind: 0,
                len: len as u16,
            };
            let mut f = frame::encode_unsigned(&h, &vec![0; len]).expect("frame");
            auth::sign(&mut f, None);
            assert_eq!(record_size(f.len()), size);
            assert_eq!(core.dispatch(&f, None), Verdict::Accepted);
            at += size;
            token += 1;
            core.request_flush(token);
            while !core.poll().contains(&Delivery::Flushed { token }) {
                if core.step_workers() == 0 {
                    std::thread::yield_now();
                }
            }
            if let Some(m) = core.drain(room).expect("drain") {
                core.pool().put(m.into_bytes());
            }
        }
        assert_eq!(core.close_room(room), Status::Ok);
        assert!(!core.has_room(room));
    }
    Slot {
        core,
        offsets: offsets.to_vec(),
    }
}

/// `MOVE_FUZZ_THREADED=1`: cores run their workers on the runtime (see the header).
fn threaded() -> bool {
    static THREADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *THREADED.get_or_init(|| std::env::var_os("MOVE_FUZZ_THREADED").is_some_and(|v| v == "1"))
}

/// The panic message of `Control::Fail` (`Core::fail_shard_for_testing`).
const DELIBERATE: &str = "was made to fail on purpose (failShardForTesting)";

/// Prints how to reproduce before libFuzzer's hook aborts, except for the panic of
/// `failShardForTesting`: that one must unwind to the worker's `catch_unwind` (hence
/// `panic = "unwind"` in Cargo.toml), as it does in the addon. Any other panic, on any
/// thread, still aborts at once.
fn install_panic_context() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .payload_as_str()
                .is_some_and(|m| m.contains(DELIBERATE))
            {
                return;
            }
            CONTEXT.with(|c| eprintln!("dispatch fuzz context: {}", c.borrow()));
            prev(info);
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    install_panic_context();
    let mut input = Input::new(data);
    let idx = input.u8() % CONFIGS;
    let cfg = config(idx);
    // MOVE_FUZZ_RING=o0,o1: a fresh core with the arena at those positions (reproduces a
    // failure on a reused core); MOVE_FUZZ_FRESH=1: a fresh core for every input.
    let ring: Option<Vec<usize>> = std::env::var("MOVE_FUZZ_RING").ok().map(|v| {
        v.split(',')
            .map(|o| o.trim().parse().expect("MOVE_FUZZ_RING"))
            .collect()
    });
    let fresh_only = std::env::var_os("MOVE_FUZZ_FRESH").is_some();
    let slot = match ring {
        Some(offsets) => fresh(&cfg, &offsets),
        None => {
            let reused = if fresh_only {
                None
            } else {
                POOL.with(|p| p.borrow_mut().remove(&idx))
            };
            reused.unwrap_or_else(|| fresh(&cfg, &vec![0; cfg.shards]))
        }
    };
    let offsets = slot.offsets.clone();
    CONTEXT.with(|c| {
        *c.borrow_mut() = format!(
            "config {idx}, arena offsets {offsets:?}: reproduce with MOVE_FUZZ_RING={}",
            offsets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    });
    let m = Model::new(&cfg, &slot.core, &offsets);
    let mut d = Driver {
        input,
        core: slot.core,
        m,
        last_seq: BTreeMap::new(),
        joined_key: BTreeMap::new(),
        events: Vec::new(),
        failures: [0; 2],
        hmac_keys: KEYS
            .iter()
            .map(|k| PlayerKey::new(k).expect("key"))
            .collect(),
        inline: !threaded(),
        held: Vec::new(),
        tally: Tally::default(),
    };
    d.held.resize_with(cfg.shards, || None);
    d.core.pause(true);
    d.run();
    if d.m.closed || fresh_only || d.m.shards.iter().any(|s| s.failed) {
        d.core.shutdown();
        return;
    }
    let cap = d.m.cap;
    let offsets = d.m.shards.iter().map(|s| s.head % cap).collect();
    POOL.with(|p| {
        p.borrow_mut().insert(
            idx,
            Slot {
                core: d.core,
                offsets,
            },
        )
    });
});
