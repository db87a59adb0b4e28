//! The shard's ingress arena: a single-producer, single-consumer bump-pointer ring of
//! move records.
//!
//! `dispatch` (the producer, on the JavaScript thread) bump-allocates a record at the
//! head and copies the frame into it: no heap allocation, no lock, one release store.
//! The shard worker (the consumer) reads records in order, validates the frame in place
//! and frees the record by advancing the tail.
//!
//! Record layout (8-byte aligned): `u32` frame length, `u32` reserved, `u64` sequence
//! number, `u64` dispatch time ([`crate::clock::now_ns`]), the frame. A record never wraps: when it does not fit before the end of the
//! ring, the producer writes a skip marker and starts the record at offset 0.
//!
//! # Backpressure
//! [`Producer::try_push`] refuses (returning the record size it needed) when the ring
//! lacks space; nothing is written then.
//!
//! # Safety
//! One of the crate's few modules allowed `unsafe` (see the crate docs). The invariant that
//! makes it sound: the producer writes only to `[head, tail + cap)`, the consumer reads only
//! `[tail, head)`, and each side publishes its position with a release store that the other
//! side reads with an acquire load. The consumer's tail only ever moves past a record that
//! [`Consumer::peek`] found inside `[tail, head)` ([`Consumer::pop`] takes no size): no safe
//! call can free bytes the producer has not published or hand the producer bytes a reader
//! still borrows.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of a record header.
pub const RECORD_HEADER: usize = 24;
const SKIP_MARKER: u32 = u32::MAX;

/// Bytes a frame of `frame_len` occupies in the ring (without a possible skip).
pub const fn record_size(frame_len: usize) -> usize {
    (RECORD_HEADER + frame_len + 7) & !7
}

#[repr(align(64))]
struct Padded(AtomicUsize);

struct Ring {
    buf: Box<[UnsafeCell<u8>]>,
    cap: usize,
    head: Padded,
    tail: Padded,
}

// SAFETY: the buffer is shared between exactly one producer and one consumer, which touch
// disjoint byte ranges synchronised by the acquire/release positions (module docs).
unsafe impl Sync for Ring {}
// SAFETY: as above; the ring owns its buffer.
unsafe impl Send for Ring {}

impl Ring {
    fn ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.cap, "one past the end at most");
        UnsafeCell::raw_get(self.buf.as_ptr().wrapping_add(offset))
    }
}

/// The arena's memory could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocError {
    pub bytes: usize,
}

/// `cap` zeroed bytes from the allocator, untouched (pages become resident on first write).
fn zeroed(cap: usize) -> Result<Box<[UnsafeCell<u8>]>, AllocError> {
    let layout = std::alloc::Layout::array::<u8>(cap).map_err(|_| AllocError { bytes: cap })?;
    // SAFETY: `cap >= 64`, so the layout is non-zero-sized as `alloc_zeroed` requires.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(AllocError { bytes: cap });
    }
    // SAFETY: `ptr` is a live, zeroed allocation of `cap` bytes with the layout of `[u8]`;
    // `UnsafeCell<u8>` is `repr(transparent)` over `u8`, so the slice has the same layout
    // and the box frees it with the layout it was allocated with.
    Ok(unsafe {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            ptr.cast::<UnsafeCell<u8>>(),
            cap,
        ))
    })
}

/// Creates a ring of `cap` bytes (rounded down to a multiple of 8, at least 64). Its pages
/// are touched only as records reach them.
///
/// # Errors
/// [`AllocError`] if the allocator refuses (never aborts).
pub fn try_ring(cap: usize) -> Result<(Producer, Consumer), AllocError> {
    let cap = (cap & !7).max(64);
    let buf = zeroed(cap)?;
    Ok(ring_over(buf, cap))
}

/// [`try_ring`] for tests: panics if the allocation fails.
///
/// # Panics
/// If the allocator refuses `cap` bytes.
pub fn ring(cap: usize) -> (Producer, Consumer) {
    try_ring(cap).expect("arena allocation")
}

fn ring_over(buf: Box<[UnsafeCell<u8>]>, cap: usize) -> (Producer, Consumer) {
    let ring = Arc::new(Ring {
        buf,
        cap,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            ring: Arc::clone(&ring),
            head: 0,
            off: 0,
            tail_cache: 0,
            wraps: 0,
        },
        Consumer {
            ring,
            tail: 0,
            tail_off: 0,
            head_cache: 0,
            peeked: 0,
        },
    )
}

/// The writing end (one thread).
pub struct Producer {
    ring: Arc<Ring>,
    head: usize,
    /// `head % cap`, kept as records are written (no division per record).
    off: usize,
    tail_cache: usize,
    wraps: u64,
}

/// The ring lacks space for a record of `needed` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub needed: usize,
}

impl Producer {
    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// Bytes in use (records not yet freed by the consumer).
    pub fn used(&self) -> usize {
        self.head - self.ring.tail.0.load(Ordering::Acquire)
    }

    /// Bytes in use as last seen by the producer: an upper bound of [`Producer::used`] that
    /// costs no shared read.
    pub fn used_upper_bound(&self) -> usize {
        self.head - self.tail_cache
    }

    /// Refreshes the producer's view of the consumer's position.
    pub fn refresh(&mut self) {
        self.tail_cache = self.ring.tail.0.load(Ordering::Acquire);
    }

    /// Times the write position went back to the start of the ring.
    pub fn wraps(&self) -> u64 {
        self.wraps
    }

    /// Whether a record for a frame of `frame_len` bytes fits now (a following
    /// [`Producer::try_push`] of that frame cannot fail).
    pub fn fits(&mut self, frame_len: usize) -> bool {
        let cap = self.ring.cap;
        let need = record_size(frame_len);
        let off = self.off;
        let total = need + if off + need > cap { cap - off } else { 0 };
        if total > cap {
            return false;
        }
        if self.head + total - self.tail_cache <= cap {
            return true;
        }
        self.tail_cache = self.ring.tail.0.load(Ordering::Acquire);
        self.head + total - self.tail_cache <= cap
    }

    /// Copies `frame` into a new record tagged `seq`. O(1), no allocation.
    ///
    /// # Errors
    /// [`Full`] when the ring has no room; nothing is written.
    pub fn try_push(&mut self, seq: u64, stamp: u64, frame: &[u8]) -> Result<(), Full> {
        self.try_push_parts(seq, stamp, frame, &[])
    }

    /// [`Producer::try_push`] of the frame `head` followed by `rest` (one record): lets the
    /// caller store a header it copied and checked, not the caller's memory read again.
    ///
    /// # Errors
    /// As [`Producer::try_push`].
    pub fn try_push_parts(
        &mut self,
        seq: u64,
        stamp: u64,
        head: &[u8],
        rest: &[u8],
    ) -> Result<(), Full> {
        let frame_len = head.len() + rest.len();
        let cap = self.ring.cap;
        let need = record_size(frame_len);
        let off = self.off;
        debug_assert_eq!(off, self.head % cap);
        let skip = if off + need > cap { cap - off } else { 0 };
        let total = skip + need;
        if total > cap || frame_len > u32::MAX as usize - 1 {
            return Err(Full { needed: total });
        }
        if self.head + total - self.tail_cache > cap {
            self.tail_cache = self.ring.tail.0.load(Ordering::Acquire);
            if self.head + total - self.tail_cache > cap {
                return Err(Full { needed: total });
            }
        }
        if off + total >= cap {
            self.wraps += 1;
        }
        let start = if skip > 0 {
            self.write(off, &SKIP_MARKER.to_le_bytes());
            0
        } else {
            off
        };
        // The lines a few records ahead (not across the wrap), so that a burst's stores hit
        // the cache.
        if start + 1216 <= cap {
            for ahead in [1024, 1088, 1152] {
                crate::members::prefetch(self.ring.ptr(start + ahead).cast_const());
            }
        }
        let len = frame_len as u32;
        self.write(start, &len.to_le_bytes());
        self.write(start + 8, &seq.to_le_bytes());
        self.write(start + 16, &stamp.to_le_bytes());
        self.write(start + RECORD_HEADER, head);
        self.write(start + RECORD_HEADER + head.len(), rest);
        self.head += total;
        self.off = if start + need == cap { 0 } else { start + need };
        self.ring.head.0.store(self.head, Ordering::Release);
        Ok(())
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.ring.cap,
            "arena write out of bounds"
        );
        // SAFETY: bounds checked above; `[offset, offset + len)` lies in the free region
        // `[head, tail + cap)` that only the producer touches (checked in `try_push`), and
        // `bytes` cannot overlap the ring (it is a caller-owned slice).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.ptr(offset), bytes.len());
        };
    }
}

/// The reading end (one thread).
pub struct Consumer {
    ring: Arc<Ring>,
    tail: usize,
    /// `tail % cap`, kept as records are freed (no division per record).
    tail_off: usize,
    head_cache: usize,
    /// Bytes of the record the last [`Consumer::peek`] returned (skip included), which
    /// [`Consumer::pop`] frees; 0 when none is pending.
    peeked: usize,
}

/// A lock-free look at whether a ring holds records, for a thread that does not own its
/// [`Consumer`] (the worker's task, spinning without the worker's lock). A hint: the
/// consumer may take the records meanwhile.
#[derive(Clone)]
pub struct Watch {
    ring: Arc<Ring>,
}

impl Watch {
    /// Whether the producer has published past the consumer's position.
    pub fn has_records(&self) -> bool {
        self.ring.head.0.load(Ordering::Acquire) != self.ring.tail.0.load(Ordering::Acquire)
    }
}

/// A record at the tail of the ring, borrowed until the next call on its [`Consumer`].
#[derive(Debug)]
pub struct Record<'a> {
    pub seq: u64,
    /// When the move was dispatched ([`crate::clock::now_ns`]).
    pub stamp: u64,
    pub frame: &'a [u8],
}

impl Consumer {
    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// A [`Watch`] on this ring.
    pub fn watch(&self) -> Watch {
        Watch {
            ring: Arc::clone(&self.ring),
        }
    }

    /// Whether a record is ready (refreshing the producer's position).
    pub fn is_empty(&mut self) -> bool {
        if self.tail != self.head_cache {
            return false;
        }
        self.head_cache = self.ring.head.0.load(Ordering::Acquire);
        self.tail == self.head_cache
    }

    /// The oldest record, if any; [`Consumer::pop`] frees it once the caller is done with it
    /// (the borrow of the record ends first, so the producer can never overwrite bytes a
    /// reader still holds).
    ///
    /// # Panics
    /// Only if the ring's own invariants are broken (a record header pointing past the end),
    /// which the producer never writes.
    pub fn peek(&mut self) -> Option<Record<'_>> {
        if self.is_empty() {
            return None;
        }
        let cap = self.ring.cap;
        let mut off = self.tail_off;
        let mut skip = 0;
        if self.read_u32(off) == SKIP_MARKER {
            skip = cap - off;
            off = 0;
        }
        let len = self.read_u32(off) as usize;
        let seq = u64::from_le_bytes(self.read::<8>(off + 8));
        let stamp = u64::from_le_bytes(self.read::<8>(off + 16));
        let start = off + RECORD_HEADER;
        assert!(start + len <= cap, "corrupt arena record");
        // SAFETY: `[start, start + len)` lies inside the published region `[tail, head)`,
        // which the producer never writes until the consumer advances past it; bounds
        // checked by the assert above.
        let frame = unsafe { std::slice::from_raw_parts(self.ring.ptr(start).cast_const(), len) };
        self.peeked = skip + record_size(len);
        Some(Record { seq, stamp, frame })
    }

    /// Frees the record the last [`Consumer::peek`] returned; does nothing if there is none
    /// (never peeked, or already popped). Returns whether a record was freed.
    pub fn pop(&mut self) -> bool {
        let size = std::mem::take(&mut self.peeked);
        if size == 0 {
            return false;
        }
        self.tail_off = self.offset_of(self.tail + size);
        self.tail += size;
        debug_assert!(
            self.tail <= self.head_cache,
            "peek saw this record published"
        );
        self.ring.tail.0.store(self.tail, Ordering::Release);
        true
    }

    /// Where the oldest record is: the position [`Consumer::frame_at`] starts from.
    pub(crate) fn tail(&self) -> usize {
        self.tail
    }

    /// The frame of the record at `pos` and the position of the record after it, for a
    /// reader looking ahead of the tail (prefetching what the records name): `pos` is the
    /// tail or a position an earlier call returned since. `None` at the head as last seen
    /// by [`Consumer::is_empty`] or [`Consumer::peek`] (no load of the producer's line), or
    /// for a position behind the tail (its bytes may be rewritten already).
    pub(crate) fn frame_at(&self, pos: usize) -> Option<(&[u8], usize)> {
        if pos < self.tail || pos >= self.head_cache {
            return None;
        }
        let cap = self.ring.cap;
        let mut off = self.offset_of(pos);
        let mut skip = 0;
        if self.read_u32(off) == SKIP_MARKER {
            skip = cap - off;
            off = 0;
        }
        let len = self.read_u32(off) as usize;
        let start = off + RECORD_HEADER;
        let next = pos + skip + record_size(len);
        assert!(
            start + len <= cap && next <= self.head_cache,
            "corrupt arena record"
        );
        // SAFETY: as in `peek`: `[tail, head)` is published and not written by the producer
        // until the consumer advances past it, and the record lies in it (checked above).
        let frame = unsafe { std::slice::from_raw_parts(self.ring.ptr(start).cast_const(), len) };
        Some((frame, next))
    }

    /// `pos % cap` for a position at most `cap` past the tail (one compare, no division).
    #[inline]
    fn offset_of(&self, pos: usize) -> usize {
        let cap = self.ring.cap;
        let o = self.tail_off + (pos - self.tail);
        let o = if o >= cap { o - cap } else { o };
        debug_assert_eq!(o, pos % cap);
        o
    }

    fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
        assert!(offset + N <= self.ring.cap, "arena read out of bounds");
        let mut out = [0; N];
        // SAFETY: bounds checked; the bytes lie in the published region `[tail, head)`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring.ptr(offset).cast_const(), out.as_mut_ptr(), N);
        };
        out
    }

    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.read::<4>(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn push_peek_advance_in_order() {
        let (mut p, mut c) = ring(256);
        assert!(c.peek().is_none());
        p.try_push(1, 0, b"abc").unwrap();
        p.try_push(2, 0, &[9; 40]).unwrap();
        let r = c.peek().unwrap();
        assert_eq!((r.seq, r.frame), (1, &b"abc"[..]));
        assert!(c.pop());
        assert!(!c.pop(), "popped once per peek");
        let r = c.peek().unwrap();
        assert_eq!((r.seq, r.frame.len()), (2, 40));
        // Peeking again without popping returns the same record.
        assert_eq!(c.peek().unwrap().seq, 2);
        assert!(c.pop());
        assert!(c.peek().is_none());
        assert!(!c.pop(), "nothing to free");
        assert_eq!(p.used(), 0);
    }

    #[test]
    fn full_and_wrap_with_skip_marker() {
        let (mut p, mut c) = ring(144);
        // 24 + 40 = 64 bytes per record: two fit (128), the third does not.
        p.try_push(1, 0, &[1; 40]).unwrap();
        p.try_push(2, 0, &[2; 40]).unwrap();
        assert_eq!(p.try_push(3, 0, &[3; 40]), Err(Full { needed: 16 + 64 }));
        assert!(c.peek().is_some() && c.pop());
        // head at 128: 16 bytes left before the end, so the record skips to 0.
        p.try_push(3, 0, &[3; 40]).unwrap();
        assert!(c.peek().is_some() && c.pop());
        let r = c.peek().unwrap();
        assert_eq!((r.seq, r.frame), (3, &[3u8; 40][..]));
        assert!(c.pop());
        // The skip and the record were freed together.
        assert_eq!(p.used(), 0);
    }

    /// Looking ahead walks the published records in order, across the wrap, stops at the
    /// head as last seen, and refuses positions the tail has passed.
    #[test]
    fn frame_at_walks_ahead_of_the_tail() {
        let walk = |c: &Consumer| {
            let (mut pos, mut seen) = (c.tail(), Vec::new());
            while let Some((f, next)) = c.frame_at(pos) {
                seen.push(f[0]);
                pos = next;
            }
            seen
        };
        let (mut p, mut c) = ring(144);
        p.try_push(1, 0, &[1; 40]).unwrap();
        p.try_push(2, 0, &[2; 40]).unwrap();
        assert!(walk(&c).is_empty(), "head not seen yet");
        assert!(!c.is_empty());
        assert_eq!(walk(&c), [1, 2]);
        let first = c.tail();
        assert!(c.peek().is_some() && c.pop());
        assert!(c.frame_at(first).is_none(), "behind the tail");
        p.try_push(3, 0, &[3; 40]).unwrap(); // skips to the start
        assert_eq!(walk(&c), [2], "the head as last seen");
        assert!(c.peek().is_some() && c.pop());
        assert!(c.peek().is_some(), "sees the head move");
        assert_eq!(walk(&c), [3], "across the wrap");
    }

    /// Property: any interleaving of pushes and pops returns exactly the pushed frames in
    /// order, read at the tail or ahead of it, and `used` never exceeds the capacity. Sizes
    /// are drawn to hit the wrap edge (both ends keep their offset in the ring without a
    /// division; debug builds check it against one).
    #[test]
    fn prop_fifo_against_a_model() {
        // Miri (`scripts/sanitize.sh miri`) interprets every access: fewer, shorter rounds.
        let (rounds, ops) = if cfg!(miri) { (4, 400) } else { (50, 5_000) };
        let mut rng = crate::testutil::Rng::new(99);
        for round in 0..rounds {
            let cap = 64 + 8 * rng.below(64) as usize;
            let (mut p, mut c) = ring(cap);
            let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            let mut seq = 0;
            for _ in 0..ops {
                if rng.below(2) == 0 {
                    let len = rng.below(cap as u64 / 2) as usize;
                    let frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    seq += 1;
                    if p.try_push(seq, 0, &frame).is_ok() {
                        model.push_back((seq, frame));
                    }
                    assert!(p.used() <= p.capacity(), "round {round}");
                } else if let Some(r) = c.peek() {
                    let (s, f) = model
                        .pop_front()
                        .expect("ring returned a record the model lacks");
                    assert_eq!((r.seq, r.frame), (s, &f[..]));
                    assert!(c.pop());
                } else {
                    assert!(model.is_empty());
                }
                // Reading ahead of the tail finds the records the model holds, in order (the
                // head as last seen: a prefix of them).
                let (mut pos, mut ahead) = (c.tail(), 0);
                while let Some((f, next)) = c.frame_at(pos) {
                    assert_eq!(f, &model[ahead].1[..], "round {round}");
                    (pos, ahead) = (next, ahead + 1);
                }
            }
        }
    }

    #[test]
    fn threads_transfer_every_record_in_order() {
        let (mut p, mut c) = ring(4096);
        // Under Miri: enough records to wrap the ring a few times (~60 B each).
        let n: u64 = if cfg!(miri) { 300 } else { 200_000 };
        let t = std::thread::spawn(move || {
            let mut next = 1;
            while next <= n {
                if let Some(r) = c.peek() {
                    assert_eq!(r.seq, next);
                    assert_eq!(r.frame.len(), (next % 97) as usize);
                    assert!(r.frame.iter().all(|&b| b == next as u8));
                    assert!(c.pop());
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut seq = 1;
        while seq <= n {
            let frame = vec![seq as u8; (seq % 97) as usize];
            if p.try_push(seq, 0, &frame).is_ok() {
                seq += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t.join().unwrap();
    }
}
