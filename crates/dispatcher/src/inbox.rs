//! A room's inbox: where the shard worker puts the room's rejections, and a pull room's
//! validated moves, until they are taken into a delivery ([`crate::delivery`]). A push
//! room's moves wait in the worker's staging instead, and join the room's inbox contents
//! when the delivery is built ([`Inbox::take_reserving`]).
//!
//! JavaScript never sees inbox memory: a delivery copies the room's frames out (under the
//! inbox lock), and the inbox is reusable at once. The worker appends; drains (on the
//! JavaScript thread) and push deliveries (on the worker) take.
//!
//! # Budget
//! `reserved` counts the bytes of every accepted move of the room not yet taken into a
//! delivery (in flight, validated, or rejected). `dispatch` refuses a move that would push
//! it past the room's capacity (`roomBytes`), so the inbox can never overflow: the worker's
//! append cannot fail.
//!
//! # Allocation
//! The frame area is allocated with the inbox (its pages are touched as moves arrive); the
//! stamp and rejection lists keep their capacity when taken, so in steady state appending
//! and taking allocate nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::delivery::{Builder, Placement};
use crate::verdict::Reason;

/// An accepted move that failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub room: u32,
    pub player: u32,
    pub seq: u32,
    pub reason: Reason,
}

#[derive(Debug, Default)]
struct State {
    frames: Vec<u8>,
    count: u32,
    /// Bytes of accepted and rejected frames waiting (their budget cost).
    cost: usize,
    rejections: Vec<Rejection>,
    /// Dispatch time of each move in `frames` ([`crate::clock::now_ns`]), in order.
    stamps: Vec<u64>,
}

/// The inbox of one room.
pub struct Inbox {
    room: u32,
    capacity: usize,
    /// Written per move by the producer only; kept off the line of `state`, which the worker
    /// locks per move.
    reserved: crate::shard::Padded<Budget>,
    state: Mutex<State>,
}

/// The room budget as a producer checks it: the bytes reserved and, on the same cache line,
/// the capacity they are checked against — with thousands of rooms a `dispatch` misses the
/// cache on its room's budget, and must not miss twice.
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    /// The inbox's `capacity` (the worker reads its own copy, off this line).
    capacity: usize,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("room", &self.room)
            .field("capacity", &self.capacity)
            .field("reserved", &self.reserved.0.used.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Stamps (and so moves) an inbox holds without growing its list: a room of 256 KiB holds
/// at most 4,681 of the smallest frames; most rooms never come near, so the list starts
/// here and grows once if it must.
const STAMPS_AT_FIRST: usize = 256;
/// Rejections an inbox holds without growing its list (a few forged or replayed frames
/// between two deliveries; a flood grows it once, within the room's budget).
const REJECTIONS_AT_FIRST: usize = 8;

impl Inbox {
    /// An inbox that holds up to `capacity` bytes of frames. `pull`: the room's validated
    /// moves wait here, so the frame list is reserved in full now and the worker never
    /// grows it. A push room's moves are staged by its worker and reach its inbox only when
    /// the room closes before they went out (a control, off the hot path, which grows the
    /// list then): reserving 256 KiB per push room up front made 5,000 rooms map 1.28 GB
    /// that jemalloc's `resident` and `active` figures counted.
    ///
    /// # Panics
    /// If the memory cannot be allocated (for tests: the dispatcher uses [`Inbox::try_new`]).
    pub fn new(room: u32, capacity: usize, pull: bool) -> Self {
        Self::try_new(room, capacity, pull).expect("an inbox's memory")
    }

    /// [`Inbox::new`], or `None` if its frame list cannot be allocated.
    pub fn try_new(room: u32, capacity: usize, pull: bool) -> Option<Self> {
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(if pull { capacity } else { 0 })
            .ok()?;
        Some(Self {
            room,
            capacity,
            reserved: crate::shard::Padded(Budget {
                used: AtomicUsize::new(0),
                capacity,
            }),
            state: Mutex::new(State {
                frames,
                stamps: Vec::with_capacity(STAMPS_AT_FIRST.min(capacity / 56 + 1)),
                // A room's first rejection would otherwise allocate on the hot path.
                rejections: Vec::with_capacity(REJECTIONS_AT_FIRST),
                ..State::default()
            }),
        })
    }

    /// The room id.
    pub fn room(&self) -> u32 {
        self.room
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent in a way that
        // matters more than losing the room, so recover the guard instead of propagating.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Producer side: reserves `bytes` of budget, or refuses if the room is full. The
    /// JavaScript thread (`dispatch`) and native ingress both reserve: one compare-and-swap,
    /// so the budget is exact with several producers. (`dispatch` reserves before it pushes
    /// and gives the bytes back if its arena is full: for that moment another producer of
    /// the room may find one frame's less budget and answer `Backpressure` — held and
    /// offered again, never lost.)
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let budget = &self.reserved.0;
        budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + bytes <= budget.capacity).then_some(now + bytes)
            })
            .is_ok()
    }

    /// Where the budget's cache line is: a prefetch hint for a caller that can compute it
    /// before it has the inbox at hand.
    pub(crate) fn budget_addr(&self) -> usize {
        std::ptr::from_ref(&self.reserved).addr()
    }

    /// Starts loading the budget's cache line, which [`Inbox::try_reserve`] will update.
    #[inline]
    pub(crate) fn prefetch_budget(&self) {
        crate::members::prefetch(std::ptr::from_ref(&self.reserved).cast());
    }

    /// Starts loading the lock and the lists' headers, which [`Inbox::push_frame`] reads.
    #[inline]
    pub(crate) fn prefetch_state(&self) {
        let at = std::ptr::from_ref(&self.state).cast::<u8>();
        crate::members::prefetch(at);
        crate::members::prefetch(at.wrapping_add(64));
    }

    /// Gives back a reservation that was never used (the move was refused after reserving).
    pub fn unreserve(&self, bytes: usize) {
        self.reserved.0.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved (in flight + not yet taken into a delivery).
    pub fn reserved(&self) -> usize {
        self.reserved.0.used.load(Ordering::Acquire)
    }

    /// Worker: appends a validated frame. Returns whether the room now holds `batch_full`
    /// moves or more.
    ///
    /// # Panics
    /// If the frame does not fit, which the budget reserved at dispatch rules out.
    pub fn push_frame(&self, frame: &[u8], stamp: u64, batch_full: u32) -> bool {
        let mut s = self.lock();
        assert!(
            s.frames.len() + frame.len() <= self.capacity,
            "room budget violated"
        );
        s.frames.extend_from_slice(frame);
        s.stamps.push(stamp);
        s.count += 1;
        s.cost += frame.len();
        s.count >= batch_full
    }

    /// Worker: records a rejected move (its bytes stay reserved until taken).
    pub fn push_rejection(&self, rejection: Rejection, frame_len: usize) {
        let mut s = self.lock();
        s.rejections.push(rejection);
        s.cost += frame_len;
    }

    /// Whether anything awaits delivery.
    pub fn has_pending(&self) -> bool {
        let s = self.lock();
        s.count > 0 || !s.rejections.is_empty()
    }

    /// Copies everything waiting (moves and rejections) into `out` as one room and gives
    /// its budget back; `false` (and nothing added) when nothing waits.
    pub fn take_into(&self, out: &mut Builder) -> bool {
        self.take_reserving(out, 0, 0).is_some()
    }

    /// Worker, for a push room: like [`Inbox::take_into`], and also reserves room after
    /// the inbox's frames for `later_moves` frames (`later_bytes` in all) that the worker
    /// kept outside the inbox since the last take, whose budget it gives back here too.
    /// `None` (nothing added) when nothing waits in either.
    pub fn take_reserving(
        &self,
        out: &mut Builder,
        later_moves: u32,
        later_bytes: usize,
    ) -> Option<Placement> {
        let mut s = self.lock();
        if s.count == 0 && s.rejections.is_empty() && later_moves == 0 {
            return None;
        }
        out.push_room(self.room, &s.frames, s.count, &s.stamps, &s.rejections);
        let at = out.reserve(later_moves, later_bytes);
        s.frames.clear();
        s.stamps.clear();
        s.rejections.clear();
        s.count = 0;
        let cost = std::mem::take(&mut s.cost) + later_bytes;
        self.reserved.0.used.fetch_sub(cost, Ordering::AcqRel);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Builder, Pool};
    use std::sync::Arc;

    fn take(inbox: &Inbox) -> Option<crate::delivery::Moves> {
        let mut b = Builder::new();
        b.start(Vec::new());
        inbox.take_into(&mut b).then(|| b.finish(None))
    }

    #[test]
    fn a_push_rooms_inbox_reserves_no_frames_and_grows_when_a_close_fills_it() {
        let inbox = Inbox::new(4, 4096, false);
        assert_eq!(inbox.lock().frames.capacity(), 0);
        assert!(inbox.try_reserve(300));
        for i in 0..3_u8 {
            inbox.push_frame(&[i; 100], u64::from(i), u32::MAX);
        }
        let moves = take(&inbox).expect("three moves");
        assert_eq!(moves.moves(), 3);
        assert_eq!(inbox.reserved.0.used.load(Ordering::Relaxed), 0);
        assert_eq!(Inbox::new(4, 4096, true).lock().frames.capacity(), 4096);
    }

    #[test]
    fn take_copies_out_and_returns_the_budget() {
        let inbox = Inbox::new(3, 4096, true);
        assert!(inbox.try_reserve(100));
        assert!(inbox.try_reserve(60));
        inbox.push_frame(&[1; 100], 5, 10);
        inbox.push_rejection(
            Rejection {
                room: 3,
                player: 1,
                seq: 2,
                reason: Reason::BadTag,
            },
            60,
        );
        let m = take(&inbox).unwrap();
        let e: Vec<_> = m.room_entries().collect();
        assert_eq!(
            (e.len(), e[0].room, e[0].moves, e[0].rejections),
            (1, 3, 1, 1)
        );
        assert_eq!(m.frames(&e[0]), &[1; 100][..]);
        assert_eq!(m.stamps().collect::<Vec<_>>(), vec![5]);
        assert_eq!(inbox.reserved(), 0);
        assert!(take(&inbox).is_none(), "nothing waits");
        // The inbox is reusable at once: the whole capacity again.
        assert!(inbox.try_reserve(4096));
        inbox.push_frame(&[2; 4096], 6, 10);
        assert_eq!(take(&inbox).unwrap().moves(), 1);
    }

    #[test]
    fn reservation_is_bounded_by_the_capacity() {
        let inbox = Inbox::new(1, 4096, true);
        assert!(inbox.try_reserve(4000));
        assert!(!inbox.try_reserve(97));
        assert!(inbox.try_reserve(96));
        inbox.unreserve(96);
        assert_eq!(inbox.reserved(), 4000);
    }

    /// A worker appends frames and rejections while the JavaScript side reserves and takes
    /// deliveries, as the dispatcher does: every move arrives once, in order, intact, and
    /// the budget returns to zero. Under Miri (`scripts/sanitize.sh miri`) this also checks
    /// that taking never races with appending.
    #[test]
    fn worker_fills_while_javascript_takes() {
        const CAP: usize = 256;
        let n: u32 = if cfg!(miri) { 300 } else { 50_000 };
        let len_of = |seq: u32| 1 + (seq % 40) as usize;
        let rejected = |seq: u32| seq.is_multiple_of(7);
        let inbox = Arc::new(Inbox::new(9, CAP, true));
        let pool = Pool::new();
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let worker = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                for seq in rx {
                    let len = len_of(seq);
                    if rejected(seq) {
                        let r = Rejection {
                            room: 9,
                            player: 1,
                            seq,
                            reason: Reason::Replay,
                        };
                        inbox.push_rejection(r, len);
                    } else {
                        inbox.push_frame(&vec![seq as u8; len], u64::from(seq), u32::MAX);
                    }
                }
            })
        };
        let (mut sent, mut frames, mut rejections) = (1_u32, 1_u32, 1_u32);
        let next_kept = |mut seq: u32, keep: bool| {
            while seq <= n && rejected(seq) != keep {
                seq += 1;
            }
            seq
        };
        frames = next_kept(frames, false);
        rejections = next_kept(rejections, true);
        let mut b = Builder::new();
        while frames <= n || rejections <= n {
            while sent <= n && inbox.try_reserve(len_of(sent)) {
                tx.send(sent).unwrap();
                sent += 1;
            }
            b.start(pool.get());
            if !inbox.take_into(&mut b) {
                pool.put(b.abandon());
                std::thread::yield_now();
                continue;
            }
            let m = b.finish(None);
            let e = m.room_entries().next().unwrap();
            let bytes = m.frames(&e);
            let mut at = 0;
            for stamp in m.stamps() {
                assert_eq!(stamp, u64::from(frames), "frames in dispatch order");
                let len = len_of(frames);
                assert!(bytes[at..at + len].iter().all(|&x| x == frames as u8));
                at += len;
                frames = next_kept(frames + 1, false);
            }
            assert_eq!(at, e.frame_bytes);
            for r in m.rejection_entries() {
                assert_eq!(r.seq, rejections, "rejections in order");
                rejections = next_kept(rejections + 1, true);
            }
            pool.put(m.into_bytes());
        }
        drop(tx);
        worker.join().unwrap();
        assert_eq!(inbox.reserved(), 0);
    }
}
