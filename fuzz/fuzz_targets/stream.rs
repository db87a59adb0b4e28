//! Stream decoder: `Core::dispatch_stream` over the same bytes, whole or split.
//!
//! Each input is a control prefix (sender, split points, which core) and a byte stream. It
//! is fed to one long-lived `Core` three ways:
//! - A: one `dispatch_stream(all)` call;
//! - B: as a connection would, in chunks cut at fuzzer-chosen points: each call gets the
//!   unconsumed rest of the previous chunks plus the new chunk; a `malformed` or
//!   `backpressure` answer ends the connection;
//! - C: an independent reference splitter (the rules of `docs/architecture.md`, by direct
//!   indexing) calling `Core::dispatch` frame by frame, each verdict checked against a
//!   model of `dispatch`'s synchronous checks in their order (`Closed`, `Malformed` /
//!   `Oversize`, `UnknownRoom`, `AuthMismatch`, `WrongSender`, `NotMember`, `RateLimited`,
//!   `Backpressure`) over the harness's fixed rooms and members.
//!
//! Properties: the three agree on bytes consumed, accepted, rejected (every verdict other
//! than `Accepted` and `Backpressure`, `NotMember` included, consumes its frame and counts
//! as rejected), `malformed`, `backpressure`, and on the verdicts counted by
//! `Core::counters` (per verdict and per backpressure cause); a consumed prefix is exactly a
//! sequence of whole frames; a bad header counts one verdict, `Malformed`, or `Closed` once
//! input is closed (one input in four runs on a second core whose input is closed).
//!
//! Determinism: the workers are paused, so nothing is validated behind our back, and the
//! core is sized so that no queue, arena or room budget can fill during one input (it is
//! flushed and drained between inputs when its headroom runs low). One room is kept full
//! on purpose: its members' frames always answer `Backpressure` (room budget),
//! deterministically; a non-member's answer `NotMember` first, spending nothing.
#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use move_dispatcher::arena;
use move_dispatcher::auth;
use move_dispatcher::core::{Config, Core, Counters, RateLimit, StreamOutcome};
use move_dispatcher::frame::{self, FrameError, Header};
use move_dispatcher::outbox::Delivery;
use move_dispatcher::verdict::{Status, Verdict};
use move_dispatcher_fuzz::{ref_check, ref_header, Input};

const MAX_PAYLOAD: usize = 256;
const ROOM_BYTES: usize = 256 << 10;
const ARENA_BYTES: usize = 32 << 20;
const CAPACITY: usize = 1 << 20;
/// Rooms: 1 SHA-256 pull, 2 HMAC pull, 3 SHA-256 push, 4 rate-limited SHA-256 pull (a
/// bucket that never runs dry), 9 full, each with members 1..=3 (player 4 joined room 1 and
/// left); 5 opened then closed (forgotten); 6 SHA-256 pull, closed while a move was in
/// flight and reopened: open, without members (closing a room clears them).
const ROOMS: [u32; 6] = [1, 2, 3, 4, 6, 9];
const FULL_ROOM: u32 = 9;
const REOPENED_ROOM: u32 = 6;
const MEMBERS: [u32; 3] = [1, 2, 3];
const KEY: [u8; 32] = [0x0b; 32];

struct Harness {
    core: Core,
    /// A core whose input is closed: every frame answers `Closed`.
    closed: Core,
    token: u64,
    resets: u64,
}

/// `Core::dispatch`'s synchronous verdict for `bytes` on the harness's core (`closed`: the
/// closed one), from the documented checks and the rooms above.
fn model_verdict(bytes: &[u8], sender: Option<u32>, closed: bool) -> Verdict {
    if closed {
        return Verdict::Closed;
    }
    let h = match ref_check(bytes, MAX_PAYLOAD) {
        Ok(h) => h,
        Err(FrameError::Oversize { .. }) => return Verdict::Oversize,
        Err(_) => return Verdict::Malformed,
    };
    if !ROOMS.contains(&h.room) {
        return Verdict::UnknownRoom;
    }
    if (h.flags & 1 == 1) != (h.room == 2) {
        return Verdict::AuthMismatch;
    }
    if sender.is_some_and(|s| s != h.player) {
        return Verdict::WrongSender;
    }
    if h.room == REOPENED_ROOM || !MEMBERS.contains(&h.player) {
        return Verdict::NotMember;
    }
    if h.room == FULL_ROOM {
        return Verdict::Backpressure;
    }
    Verdict::Accepted
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

impl Harness {
    fn new() -> Self {
        let cfg = Config {
            shards: 1,
            worker_threads: 1,
            channel_capacity: CAPACITY,
            arena_bytes: ARENA_BYTES,
            room_bytes: ROOM_BYTES,
            max_payload: MAX_PAYLOAD,
            max_batch_moves: 64,
            ..Config::default()
        };
        let mut closed = Core::new_inline(cfg.clone(), Box::new(|| {})).expect("core");
        closed.close_input();
        let mut core = Core::new(cfg, Box::new(|| {})).expect("core");
        assert_eq!(core.open_room(1, false, false, None), Status::Ok);
        assert_eq!(core.open_room(2, true, false, None), Status::Ok);
        assert_eq!(core.open_room(3, false, true, None), Status::Ok);
        let rate = RateLimit {
            per_second: 0.0,
            burst: 1e18,
        };
        assert_eq!(core.open_room(4, false, false, Some(rate)), Status::Ok);
        assert_eq!(core.open_room(FULL_ROOM, false, false, None), Status::Ok);
        for r in [1, 2, 3, 4, FULL_ROOM] {
            for p in MEMBERS {
                let key = (r == 2).then_some(&KEY[..]);
                assert_eq!(core.join(r, p, key), Status::Ok);
            }
        }
        assert_eq!(core.join(1, 4, None), Status::Ok);
        assert_eq!(core.leave(1, 4), Status::Ok);
        assert_eq!(core.open_room(5, false, false, None), Status::Ok);
        assert_eq!(core.close_room(5), Status::Ok);
        assert!(!core.has_room(5));
        let mut h = Self {
            core,
            closed,
            token: 0,
            resets: 0,
        };
        h.core.pause(true);
        // Room 6: a move in flight keeps it while closing; reopened, it has no members.
        assert_eq!(
            h.core.open_room(REOPENED_ROOM, false, false, None),
            Status::Ok
        );
        assert_eq!(h.core.join(REOPENED_ROOM, 1, None), Status::Ok);
        let f = frame(REOPENED_ROOM, 1, 1, 0);
        assert_eq!(h.core.dispatch(&f, Some(1)), Verdict::Accepted);
        assert_eq!(h.core.close_room(REOPENED_ROOM), Status::Ok);
        assert!(h.core.has_room(REOPENED_ROOM), "closing, not forgotten");
        assert_eq!(
            h.core.open_room(REOPENED_ROOM, false, false, None),
            Status::Ok
        );
        assert_eq!(h.core.dispatch(&f, Some(1)), Verdict::NotMember);
        assert_eq!(h.core.leave(REOPENED_ROOM, 1), Status::UnknownPlayer);
        h.fill_full_room();
        h
    }

    /// Fills room 9 until even the smallest frame no longer fits its budget.
    fn fill_full_room(&mut self) {
        let mut seq = 1;
        loop {
            let len = MAX_PAYLOAD.min(ROOM_BYTES - self.reserved(FULL_ROOM) - 56);
            let f = frame(FULL_ROOM, 1, seq, len);
            seq += 1;
            match self.core.dispatch(&f, None) {
                Verdict::Accepted => {}
                Verdict::Backpressure => break,
                v => panic!("filling room 9: {v:?}"),
            }
            if self.reserved(FULL_ROOM) + 56 > ROOM_BYTES {
                break;
            }
        }
        assert!(self.reserved(FULL_ROOM) + 56 > ROOM_BYTES);
    }

    fn reserved(&self, room: u32) -> usize {
        self.core
            .room_stats(usize::MAX)
            .iter()
            .find(|r| r.0 == room)
            .map_or(0, |r| r.1)
    }

    /// Whether three passes over `n` bytes fit without any backpressure (other than room 9).
    fn has_headroom(&self, n: usize) -> bool {
        let s = self.core.shard_stats()[0];
        let frames = 3 * (n / frame::FRAME_OVERHEAD + 1);
        let arena = 3 * (arena::record_size(n) * 2 + 64) + frames * 32;
        if s.queue_depth as usize + frames >= CAPACITY || s.arena_used + arena >= s.arena_capacity {
            return false;
        }
        ROOMS
            .iter()
            .filter(|&&r| r != FULL_ROOM)
            .all(|&r| self.reserved(r) + 3 * n <= ROOM_BYTES)
    }

    /// Validates and delivers everything, drains the pull rooms, refills room 9.
    fn reset(&mut self) {
        self.resets += 1;
        self.core.pause(false);
        self.token += 1;
        let token = self.token;
        self.core.request_flush(token);
        let deadline = Instant::now() + Duration::from_secs(60);
        'flush: loop {
            for d in self.core.poll() {
                match d {
                    // As `Dispatcher` does once `onDelivery` returns: release the shard's
                    // delivery, and (the ArrayBuffer's finalizer) give its buffer back.
                    Delivery::Moves(m) => {
                        let shard = m.shard().expect("a push delivery names its shard");
                        self.core.release_delivery(shard);
                        self.core.pool().put(m.into_bytes());
                    }
                    Delivery::Flushed { token: t } if t == token => break 'flush,
                    _ => {}
                }
            }
            assert!(Instant::now() < deadline, "reset flush never answered");
            std::thread::yield_now();
        }
        // Every pull room at once (rooms 1, 2, 4, 6 and 9).
        if let Some(m) = self.core.drain_all() {
            assert!(m.shard().is_none(), "a drain is a pull delivery");
            self.core.pool().put(m.into_bytes());
        }
        assert_eq!(
            self.core.room_stats(usize::MAX),
            vec![],
            "budget left reserved after the flush and drain_all"
        );
        self.core.pause(true);
        let c = self.core.counters();
        assert_eq!(
            c.accepted,
            c.delivered + c.rejected,
            "exactly-once after a reset"
        );
        self.fill_full_room();
    }
}

fn frame(room: u32, player: u32, seq: u32, len: usize) -> Vec<u8> {
    let h = Header {
        flags: 0,
        room,
        player,
        seq,
        tick: 0,
        kind: 0,
        len: len as u16,
    };
    let mut f = frame::encode_unsigned(&h, &vec![0x5a; len]).expect("frame");
    auth::sign(&mut f, None);
    f
}

/// What one pass observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    consumed: usize,
    accepted: u32,
    rejected: u32,
    malformed: bool,
    backpressure: bool,
}

fn counters_delta(a: &Counters, b: &Counters) -> ([u64; Verdict::COUNT], [u64; 3], u64, u64) {
    let mut v = [0; Verdict::COUNT];
    for (i, x) in v.iter_mut().enumerate() {
        *x = b.verdicts[i] - a.verdicts[i];
    }
    let mut p = [0; 3];
    for (i, x) in p.iter_mut().enumerate() {
        *x = b.backpressure[i] - a.backpressure[i];
    }
    (v, p, b.dispatched - a.dispatched, b.accepted - a.accepted)
}

fn pass_a(core: &mut Core, bytes: &[u8], sender: Option<u32>) -> Pass {
    let o: StreamOutcome = core.dispatch_stream(bytes, sender);
    assert!(o.consumed <= bytes.len());
    assert!(!(o.malformed && o.backpressure));
    Pass {
        consumed: o.consumed,
        accepted: o.accepted,
        rejected: o.rejected,
        malformed: o.malformed,
        backpressure: o.backpressure,
    }
}

fn pass_b(core: &mut Core, bytes: &[u8], cuts: &[usize], sender: Option<u32>) -> Pass {
    let mut p = Pass {
        consumed: 0,
        accepted: 0,
        rejected: 0,
        malformed: false,
        backpressure: false,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&bytes.len())) {
        buf.extend_from_slice(&bytes[from..to]);
        from = to;
        let o = core.dispatch_stream(&buf, sender);
        assert!(o.consumed <= buf.len());
        // What is consumed is a run of whole frames, each from a valid header.
        let mut at = 0;
        while at < o.consumed {
            let h = ref_header(&buf[at..]).expect("consumed bytes start with a header");
            at += h.frame_len();
        }
        assert_eq!(at, o.consumed, "consumed ends inside a frame");
        p.consumed += o.consumed;
        p.accepted += o.accepted;
        p.rejected += o.rejected;
        buf.drain(..o.consumed);
        if o.malformed || o.backpressure {
            p.malformed = o.malformed;
            p.backpressure = o.backpressure;
            break;
        }
    }
    p
}

fn pass_c(core: &mut Core, bytes: &[u8], sender: Option<u32>, closed: bool) -> Pass {
    let mut p = Pass {
        consumed: 0,
        accepted: 0,
        rejected: 0,
        malformed: false,
        backpressure: false,
    };
    loop {
        let rest = &bytes[p.consumed..];
        if rest.len() < 24 {
            break;
        }
        if rest[0] != 0x4d || rest[1] != 0x56 || rest[2] != 1 || rest[3] & 0xfe != 0 {
            p.malformed = true;
            // Counted once, as the verdict of a header-less slice (any too-short one):
            // `Malformed`, or `Closed` on a closed core (closed is checked first).
            let want = if closed {
                Verdict::Closed
            } else {
                Verdict::Malformed
            };
            assert_eq!(model_verdict(&[], sender, closed), want);
            assert_eq!(core.dispatch(&[], sender), want, "verdict of a bad header");
            break;
        }
        let len = 56 + usize::from(u16::from_le_bytes([rest[22], rest[23]]));
        if rest.len() < len {
            break;
        }
        let v = core.dispatch(&rest[..len], sender);
        assert_eq!(
            v,
            model_verdict(&rest[..len], sender, closed),
            "verdict of the frame at {} (sender {sender:?})",
            p.consumed
        );
        match v {
            Verdict::Accepted => p.accepted += 1,
            Verdict::Backpressure => {
                p.backpressure = true;
                break;
            }
            _ => p.rejected += 1,
        }
        p.consumed += len;
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.u8();
    let sender = match control & 3 {
        0 | 1 => None,
        2 => Some(u32::from(input.u8() % 4)),
        _ => Some(input.u32()),
    };
    let ncuts = usize::from(input.u8() % 8);
    let cut_seeds: Vec<u16> = (0..ncuts).map(|_| input.u16()).collect();
    let bytes = input.rest();
    let mut cuts: Vec<usize> = if control & 4 != 0 && bytes.len() <= 512 {
        // Byte by byte, or in steps of k bytes.
        let step = 1 + usize::from(control >> 5);
        (step..bytes.len()).step_by(step).collect()
    } else {
        cut_seeds
            .iter()
            .map(|&s| usize::from(s) % (bytes.len() + 1))
            .collect()
    };
    cuts.sort_unstable();

    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let h = slot.get_or_insert_with(Harness::new);
        let closed = control & 0x18 == 0x18;
        if !closed && !h.has_headroom(bytes.len()) {
            h.reset();
            assert!(h.has_headroom(bytes.len()), "no headroom after a reset");
        }
        let core = if closed { &mut h.closed } else { &mut h.core };

        let c0 = core.counters();
        let a = pass_a(core, bytes, sender);
        let c1 = core.counters();
        let b = pass_b(core, bytes, &cuts, sender);
        let c2 = core.counters();
        let c = pass_c(core, bytes, sender, closed);
        let c3 = core.counters();

        assert_eq!(a, c, "whole chunk vs reference splitter");
        assert_eq!(a, b, "whole chunk vs split at {cuts:?}");
        let da = counters_delta(&c0, &c1);
        assert_eq!(da, counters_delta(&c1, &c2), "verdicts: whole vs split");
        assert_eq!(da, counters_delta(&c2, &c3), "verdicts: whole vs reference");
        // Every frame got exactly one verdict; the stream's counts are those verdicts.
        let (verdicts, pressure, dispatched, accepted) = da;
        assert_eq!(verdicts.iter().sum::<u64>(), dispatched);
        assert_eq!(accepted, u64::from(a.accepted));
        assert_eq!(verdicts[Verdict::Accepted as usize], accepted);
        let bp = verdicts[Verdict::Backpressure as usize];
        assert_eq!(bp, u64::from(a.backpressure));
        assert_eq!(
            pressure,
            [0, 0, bp],
            "only room 9 may push back, by its budget"
        );
        assert_eq!(
            u64::from(a.accepted) + u64::from(a.rejected) + bp + u64::from(a.malformed),
            dispatched
        );
        if closed {
            assert_eq!(
                verdicts[Verdict::Closed as usize],
                dispatched,
                "a closed core answers Closed to everything, bad headers included"
            );
        }
    });
});
