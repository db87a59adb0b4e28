//! A room's inbox: two halves of room memory that JavaScript reads in place.
//!
//! The shard worker appends validated frames to the *fill* half. Delivering a batch
//! (`drain` for pull rooms, a push delivery for push rooms) swaps the halves: the fill
//! half becomes the batch, back to back in dispatch order, and the previous batch's half
//! is reused for filling. That is why a batch is valid until the room's next delivery.
//!
//! # Budget
//! `reserved` counts the bytes of every accepted move of the room not yet handed to
//! JavaScript (in flight, validated, or rejected). `dispatch` refuses a move that would
//! push it past the half size, so the fill half can never overflow: the worker's append
//! cannot fail.
//!
//! # Memory exposed to JavaScript
//! [`RoomMemory`] is one allocation, shared through an `Arc` by the inbox and by the
//! external `ArrayBuffer` that exposes it. It is freed only when both are gone. It is
//! exposed at most once at a time: [`RoomMemory::expose`] hands out a unique [`Exposure`]
//! token (held by the `ArrayBuffer`'s finalizer) and refuses while one is alive, so V8 is
//! never given two live external buffers over one address (a fatal check in V8).
//!
//! # Safety
//! One of the crate's few modules allowed `unsafe` (see the crate docs): the raw room
//! memory. The worker writes only the fill half, under the inbox lock; Rust reads room
//! memory only through [`Inbox::copy_out`], which takes the same lock and refuses the fill
//! half, so no Rust read races a worker write.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::verdict::Reason;

static NEXT_MEMORY_ID: AtomicU32 = AtomicU32::new(1);

/// One zero-initialised allocation of room memory (two halves).
pub struct RoomMemory {
    ptr: *mut u8,
    len: usize,
    id: u32,
    /// An [`Exposure`] token is alive.
    exposed: AtomicBool,
}

/// Proof that a [`RoomMemory`] is exposed once: at most one token per allocation is alive
/// at a time ([`RoomMemory::expose`]); dropping it allows the next exposure. It keeps the
/// memory alive.
pub struct Exposure {
    mem: Arc<RoomMemory>,
}

impl Exposure {
    /// The exposed memory.
    pub fn memory(&self) -> &RoomMemory {
        &self.mem
    }
}

impl Drop for Exposure {
    fn drop(&mut self) {
        self.mem.exposed.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposure")
            .field("id", &self.mem.id)
            .finish()
    }
}

// SAFETY: the memory is a plain byte buffer; writers are serialised by the inbox mutex
// (the worker writes only the fill half), readers are JavaScript reading delivered halves.
unsafe impl Send for RoomMemory {}
// SAFETY: as above.
unsafe impl Sync for RoomMemory {}

impl RoomMemory {
    fn new(len: usize) -> Self {
        let boxed: Box<[u8]> = vec![0u8; len.max(1)].into_boxed_slice();
        let len = boxed.len();
        let ptr = Box::into_raw(boxed).cast::<u8>();
        Self {
            ptr,
            len,
            id: NEXT_MEMORY_ID.fetch_add(1, Ordering::Relaxed),
            exposed: AtomicBool::new(false),
        }
    }

    /// Base address (for exposing the memory as an external `ArrayBuffer`).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The token for exposing this memory to JavaScript, or `None` while another one is alive.
    pub fn expose(self: &Arc<Self>) -> Option<Exposure> {
        self.exposed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Exposure {
            mem: Arc::clone(self),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the allocation is empty (never: at least 1 byte is allocated).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Process-unique id of this allocation.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Copies `bytes` to `offset`.
    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len,
            "room memory write out of bounds"
        );
        // SAFETY: bounds checked; the caller holds the inbox lock and writes only the fill
        // half, which JavaScript has not been handed since the last swap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }

    /// Copies `len` bytes at `offset`; the caller holds the inbox lock and the range lies
    /// outside the fill half (checked by [`Inbox::copy_out`]).
    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "room memory read out of bounds"
        );
        let mut out = vec![0; len];
        // SAFETY: bounds checked; the worker writes only the fill half and only under the
        // inbox lock, which the caller holds, so nothing writes these bytes meanwhile (a raw
        // copy, not a `&[u8]`: JavaScript, on this same thread, may have written them).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), len) };
        out
    }
}

impl Drop for RoomMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a `Box<[u8]>` of exactly `len`
        // bytes in `new`, and are freed only here, once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// An accepted move that failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub room: u32,
    pub player: u32,
    pub seq: u32,
    pub reason: Reason,
}

/// A delivered window of room memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub room: u32,
    pub mem_id: u32,
    pub offset: usize,
    pub length: usize,
    pub count: u32,
    pub rejections: Vec<Rejection>,
    /// Dispatch time of each move ([`crate::clock::now_ns`]), in order; hand it back with
    /// [`Inbox::recycle`] once read, so the vectors are reused instead of reallocated.
    pub stamps: Vec<u64>,
}

#[derive(Debug, Default)]
struct State {
    fill: usize,
    fill_len: usize,
    fill_count: u32,
    /// Bytes of accepted and rejected frames in the fill half's batch (its budget cost).
    fill_cost: usize,
    rejections: Vec<Rejection>,
    stamps: Vec<u64>,
    /// Emptied vectors handed back by [`Inbox::recycle`], reused by the next batch.
    spare_rejections: Vec<Rejection>,
    spare_stamps: Vec<u64>,
    /// A push batch is out with JavaScript and not yet released.
    out_held: bool,
    /// The worker processed `closeRoom` (and no `openRoom` since).
    closed: bool,
    /// Push deliveries so far (flush tracking).
    generation: u64,
}

/// The inbox of one room.
pub struct Inbox {
    room: u32,
    half: usize,
    mem: Arc<RoomMemory>,
    /// Written per move by the producer only; kept off the line of `state`, which the worker
    /// locks per move.
    reserved: crate::shard::Padded<AtomicUsize>,
    state: Mutex<State>,
    /// Worker bookkeeping: the room is on its shard's list of push rooms to deliver.
    pub(crate) dirty: AtomicBool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("room", &self.room)
            .field("half", &self.half)
            .field("reserved", &self.reserved.0.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox whose halves hold `half` bytes each.
    pub fn new(room: u32, half: usize) -> Self {
        Self {
            room,
            half,
            mem: Arc::new(RoomMemory::new(2 * half)),
            reserved: crate::shard::Padded(AtomicUsize::new(0)),
            state: Mutex::new(State::default()),
            dirty: AtomicBool::new(false),
        }
    }

    /// The room id.
    pub fn room(&self) -> u32 {
        self.room
    }

    /// The memory both halves live in.
    pub fn memory(&self) -> &Arc<RoomMemory> {
        &self.mem
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent in a way that
        // matters more than losing the room, so recover the guard instead of propagating.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Producer side: reserves `bytes` of budget, or refuses if the room is full.
    /// Only the JavaScript thread reserves; workers only release, so check-then-add is exact.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let now = self.reserved.0.load(Ordering::Acquire);
        if now + bytes > self.half {
            return false;
        }
        self.reserved.0.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Gives back a reservation that was never used (the move was refused after reserving).
    pub fn unreserve(&self, bytes: usize) {
        self.reserved.0.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved (in flight + undelivered).
    pub fn reserved(&self) -> usize {
        self.reserved.0.load(Ordering::Acquire)
    }

    /// Worker: appends a validated frame to the fill half. Returns whether the room now
    /// holds `batch_full` moves or more and can be delivered (no push batch held).
    ///
    /// # Panics
    /// If the frame does not fit the fill half, which the budget reserved at dispatch rules out.
    pub fn push_frame(&self, frame: &[u8], stamp: u64, batch_full: u32) -> bool {
        let mut s = self.lock();
        s.stamps.push(stamp);
        let at = s.fill * self.half + s.fill_len;
        assert!(
            s.fill_len + frame.len() <= self.half,
            "room budget violated"
        );
        self.mem.write(at, frame);
        s.fill_len += frame.len();
        s.fill_count += 1;
        s.fill_cost += frame.len();
        s.fill_count >= batch_full && !s.out_held
    }

    /// Worker: records a rejected move (its bytes stay reserved until delivered).
    pub fn push_rejection(&self, rejection: Rejection, frame_len: usize) {
        let mut s = self.lock();
        s.rejections.push(rejection);
        s.fill_cost += frame_len;
    }

    /// Whether anything awaits delivery.
    pub fn has_pending(&self) -> bool {
        let s = self.lock();
        s.fill_count > 0 || !s.rejections.is_empty()
    }

    /// Worker: marks the room closed (`true`) or reopened (`false`).
    pub fn set_closed(&self, closed: bool) {
        self.lock().closed = closed;
    }

    /// Whether the worker has processed `closeRoom`.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Pull delivery: swaps the halves and returns what was validated since the last call.
    /// An empty inbox is not swapped (the previous batch stays valid).
    pub fn drain(&self) -> Batch {
        let mut s = self.lock();
        self.take(&mut s)
    }

    /// Push delivery: like [`Inbox::drain`] but only when the previous push batch was
    /// released; marks the new batch as held. Returns `None` when nothing can be delivered.
    pub fn deliver_push(&self) -> Option<Batch> {
        let mut s = self.lock();
        if s.out_held || (s.fill_count == 0 && s.rejections.is_empty()) {
            return None;
        }
        s.out_held = true;
        s.generation += 1;
        Some(self.take(&mut s))
    }

    /// JavaScript released the outstanding push batch. Returns whether moves are waiting.
    pub fn release_push(&self) -> bool {
        let mut s = self.lock();
        s.out_held = false;
        s.fill_count > 0 || !s.rejections.is_empty()
    }

    /// Whether a push batch is out with JavaScript, not yet released.
    pub fn is_held(&self) -> bool {
        self.lock().out_held
    }

    /// Takes back a delivered batch's vectors (emptied) for reuse: steady-state delivery then
    /// allocates nothing.
    pub fn recycle(&self, mut rejections: Vec<Rejection>, mut stamps: Vec<u64>) {
        rejections.clear();
        stamps.clear();
        let mut s = self.lock();
        if rejections.capacity() > s.spare_rejections.capacity() {
            s.spare_rejections = rejections;
        }
        if stamps.capacity() > s.spare_stamps.capacity() {
            s.spare_stamps = stamps;
        }
    }

    /// A copy of `len` bytes at `offset` of the room's memory, if that range lies inside the
    /// half the worker is not filling (a delivered batch, until the room's next delivery);
    /// `None` otherwise (out of bounds, or overlapping the half being filled).
    pub fn copy_out(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        let s = self.lock();
        let end = offset.checked_add(len)?;
        let fill = s.fill * self.half..(s.fill + 1) * self.half;
        let outside = end <= fill.start || offset >= fill.end;
        if end > self.mem.len || !(outside || len == 0) {
            return None;
        }
        Some(self.mem.read(offset, len))
    }

    /// Push deliveries made so far.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn take(&self, s: &mut State) -> Batch {
        let batch = Batch {
            room: self.room,
            mem_id: self.mem.id(),
            offset: s.fill * self.half,
            length: s.fill_len,
            count: s.fill_count,
            rejections: std::mem::replace(
                &mut s.rejections,
                std::mem::take(&mut s.spare_rejections),
            ),
            stamps: std::mem::replace(&mut s.stamps, std::mem::take(&mut s.spare_stamps)),
        };
        if batch.count > 0 || !batch.rejections.is_empty() {
            s.fill ^= 1;
            s.fill_len = 0;
            s.fill_count = 0;
            self.reserved
                .0
                .fetch_sub(std::mem::take(&mut s.fill_cost), Ordering::AcqRel);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_swaps_halves_and_returns_the_budget() {
        let inbox = Inbox::new(3, 4096);
        assert!(inbox.try_reserve(100));
        assert!(inbox.try_reserve(60));
        inbox.push_frame(&[1; 100], 0, 10);
        inbox.push_rejection(
            Rejection {
                room: 3,
                player: 1,
                seq: 2,
                reason: Reason::BadTag,
            },
            60,
        );
        let b = inbox.drain();
        assert_eq!(
            (b.offset, b.length, b.count, b.rejections.len()),
            (0, 100, 1, 1)
        );
        assert_eq!(inbox.copy_out(b.offset, 100).unwrap(), vec![1; 100]);
        // The fill half (where the next batch goes) is refused.
        assert!(inbox.copy_out(4096, 1).is_none());
        assert!(
            inbox.copy_out(4000, 200).is_none(),
            "overlaps the fill half"
        );
        assert!(inbox.copy_out(8000, 1000).is_none(), "out of bounds");
        assert_eq!(inbox.reserved(), 0);
        // Next batch goes to the other half.
        assert!(inbox.try_reserve(10));
        inbox.push_frame(&[2; 10], 0, 10);
        let b = inbox.drain();
        assert_eq!((b.offset, b.length), (4096, 10));
        // Empty drain does not swap.
        let e = inbox.drain();
        assert_eq!((e.offset, e.count), (0, 0));
    }

    #[test]
    fn reservation_is_bounded_by_the_half() {
        let inbox = Inbox::new(1, 4096);
        assert!(inbox.try_reserve(4000));
        assert!(!inbox.try_reserve(97));
        assert!(inbox.try_reserve(96));
        inbox.unreserve(96);
        assert_eq!(inbox.reserved(), 4000);
    }

    #[test]
    fn push_batches_wait_for_release() {
        let inbox = Inbox::new(1, 4096);
        assert!(inbox.try_reserve(8));
        inbox.push_frame(&[1; 8], 0, 100);
        assert!(inbox.deliver_push().is_some());
        assert!(inbox.try_reserve(8));
        inbox.push_frame(&[2; 8], 0, 100);
        assert!(inbox.deliver_push().is_none(), "previous batch still held");
        assert!(inbox.release_push());
        let b = inbox.deliver_push().unwrap();
        assert_eq!(inbox.copy_out(b.offset, b.length).unwrap(), vec![2; 8]);
        assert_eq!(inbox.generation(), 2);
    }

    /// A worker appends frames and rejections while the JavaScript side reserves, drains and
    /// reads each delivered half in place, as the dispatcher does: every move arrives once, in
    /// order, intact, and the budget returns to zero. Under Miri (`scripts/sanitize.sh miri`)
    /// this also checks that writing the fill half never races with reading the other one.
    #[test]
    fn worker_fills_while_javascript_drains() {
        const HALF: usize = 256;
        let n: u32 = if cfg!(miri) { 300 } else { 50_000 };
        let len_of = |seq: u32| 1 + (seq % 40) as usize;
        let rejected = |seq: u32| seq.is_multiple_of(7);
        let inbox = Arc::new(Inbox::new(9, HALF));
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
        while frames <= n || rejections <= n {
            while sent <= n && inbox.try_reserve(len_of(sent)) {
                tx.send(sent).unwrap();
                sent += 1;
            }
            let b = inbox.drain();
            let bytes = inbox.copy_out(b.offset, b.length).unwrap();
            let mut at = 0;
            for &stamp in &b.stamps {
                assert_eq!(stamp, u64::from(frames), "frames in dispatch order");
                let len = len_of(frames);
                assert!(bytes[at..at + len].iter().all(|&x| x == frames as u8));
                at += len;
                frames = next_kept(frames + 1, false);
            }
            assert_eq!((at, b.count as usize), (b.length, b.stamps.len()));
            for r in &b.rejections {
                assert_eq!(r.seq, rejections, "rejections in order");
                rejections = next_kept(rejections + 1, true);
            }
            inbox.recycle(b.rejections, b.stamps);
            if b.count == 0 {
                std::thread::yield_now();
            }
        }
        drop(tx);
        worker.join().unwrap();
        assert_eq!(inbox.reserved(), 0);
    }

    #[test]
    fn memory_is_exposed_once_at_a_time() {
        let inbox = Inbox::new(1, 4096);
        let first = inbox.memory().expose().unwrap();
        assert!(inbox.memory().expose().is_none(), "a second live exposure");
        assert_eq!(first.memory().id(), inbox.memory().id());
        drop(first);
        assert!(
            inbox.memory().expose().is_some(),
            "exposed again once released"
        );
    }

    #[test]
    fn memory_ids_are_unique() {
        let a = Inbox::new(1, 4096);
        let b = Inbox::new(1, 4096);
        assert_ne!(a.memory().id(), b.memory().id());
    }
}
