//! Deliveries: the validated moves and rejections of many rooms in one buffer, handed to
//! JavaScript whole and never written again.
//!
//! # Format (little-endian)
//! A header of 8 `u32` words (32 bytes):
//! `[0]` [`VERSION`], `[1]` the shard that built it ([`PULL`] for a drain), `[2]` rooms,
//! `[3]` moves, `[4]` rejections, `[5]` byte offset of the room table, `[6]` of the
//! rejection table, `[7]` of the stamps. Then the frames, from byte 32: each room's
//! validated frames back to back in dispatch order, room after room. The room table holds
//! [`ROOM_WORDS`] words per room: `room, frame start (bytes from the buffer's start),
//! frame bytes, moves, first rejection (index), rejections`; the rejection table
//! [`REJECTION_WORDS`] words per rejection: `room, player, seq, reason`; the stamps one
//! `u64` per move (its dispatch time, [`crate::clock::now_ns`], in frame order), read by
//! Rust for the latency histograms and ignored by JavaScript.
//!
//! # Soundness
//! A delivery's bytes are written only while it is built, by one thread (the worker for
//! push rooms, the JavaScript thread for drains) that owns them. Once built ([`Moves`]),
//! nothing writes them again: they move, owned, into the external `ArrayBuffer` that
//! exposes them, and return to the [`Pool`] only from that buffer's finalizer, after V8 has
//! let go of it (released deliveries are detached first). So JavaScript never sees memory
//! that is written or reused while it can still read it, and V8 is never given two live
//! external buffers over one address.
//!
//! # Allocation
//! Builders keep their tables between deliveries, and delivery buffers come back to the
//! [`Pool`]: in steady state building a delivery allocates nothing.

use std::sync::{Mutex, PoisonError};

use crate::inbox::Rejection;

/// The format's version (header word 0).
pub const VERSION: u32 = 2;
/// Bytes of the header; the frames start here.
pub const HEADER_BYTES: usize = 32;
/// Header word 1 of a pull delivery (a drain), which no shard waits for.
pub const PULL: u32 = u32::MAX;
/// Words of a room table entry.
pub const ROOM_WORDS: usize = 6;
/// Words of a rejection table entry.
pub const REJECTION_WORDS: usize = 4;

/// One room of a delivery (a room table entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomEntry {
    pub room: u32,
    /// Byte offset of the room's first frame in the delivery.
    pub frame_start: usize,
    pub frame_bytes: usize,
    pub moves: u32,
    /// Index of the room's first rejection in the rejection table.
    pub rejection_start: u32,
    pub rejections: u32,
}

/// A built delivery: its bytes are final (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Moves {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Moves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moves")
            .field("shard", &self.shard())
            .field("rooms", &self.rooms())
            .field("moves", &self.moves())
            .field("rejections", &self.rejections())
            .finish()
    }
}

impl Moves {
    fn word(&self, i: usize) -> u32 {
        word(&self.bytes, i * 4)
    }

    /// The whole buffer, in the format of the module docs.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The buffer, to expose to JavaScript (and to give back to the [`Pool`] afterwards).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The shard whose worker built it (a push delivery), or `None` for a drain.
    pub fn shard(&self) -> Option<u32> {
        Some(self.word(1)).filter(|&s| s != PULL)
    }

    /// Rooms in it.
    pub fn rooms(&self) -> u32 {
        self.word(2)
    }

    /// Moves in it.
    pub fn moves(&self) -> u32 {
        self.word(3)
    }

    /// Rejections in it.
    pub fn rejections(&self) -> u32 {
        self.word(4)
    }

    /// The room table.
    pub fn room_entries(&self) -> impl Iterator<Item = RoomEntry> + '_ {
        let at = self.word(5) as usize;
        (0..self.rooms() as usize).map(move |i| {
            let w = |k: usize| word(&self.bytes, at + 4 * (i * ROOM_WORDS + k));
            RoomEntry {
                room: w(0),
                frame_start: w(1) as usize,
                frame_bytes: w(2) as usize,
                moves: w(3),
                rejection_start: w(4),
                rejections: w(5),
            }
        })
    }

    /// The frames of one room of this delivery.
    pub fn frames(&self, entry: &RoomEntry) -> &[u8] {
        &self.bytes[entry.frame_start..entry.frame_start + entry.frame_bytes]
    }

    /// The rejection table, in order.
    pub fn rejection_entries(&self) -> impl Iterator<Item = Rejection> + '_ {
        let at = self.word(6) as usize;
        (0..self.rejections() as usize).map(move |i| {
            let w = |k: usize| word(&self.bytes, at + 4 * (i * REJECTION_WORDS + k));
            Rejection {
                room: w(0),
                player: w(1),
                seq: w(2),
                reason: crate::verdict::Reason::from_u32(w(3))
                    .unwrap_or(crate::verdict::Reason::ShardFailed),
            }
        })
    }

    /// The dispatch time of each move, in frame order.
    pub fn stamps(&self) -> impl Iterator<Item = u64> + '_ {
        let at = self.word(7) as usize;
        (0..self.moves() as usize).map(move |i| {
            let mut b = [0; 8];
            b.copy_from_slice(&self.bytes[at + 8 * i..at + 8 * i + 8]);
            u64::from_le_bytes(b)
        })
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).expect("a delivery is smaller than 4 GiB")
}

/// Builds deliveries, one at a time; its tables are kept between deliveries.
#[derive(Debug, Default)]
pub struct Builder {
    buf: Vec<u8>,
    rooms: Vec<[u32; ROOM_WORDS]>,
    rejections: Vec<[u32; REJECTION_WORDS]>,
    stamps: Vec<u64>,
}

impl Builder {
    /// A builder (allocates nothing until used).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a delivery in `buf` (a buffer from the [`Pool`]; its contents are discarded).
    pub fn start(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        self.buf = buf;
        self.rooms.clear();
        self.rejections.clear();
        self.stamps.clear();
    }

    /// Whether no room was added since [`Builder::start`].
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Adds one room: its frames back to back (`moves` of them, with their dispatch
    /// `stamps`) and its rejections, in order.
    pub fn push_room(
        &mut self,
        room: u32,
        frames: &[u8],
        moves: u32,
        stamps: &[u64],
        rejections: &[Rejection],
    ) {
        debug_assert_eq!(stamps.len(), moves as usize);
        let start = self.buf.len();
        self.buf.extend_from_slice(frames);
        self.rooms.push([
            room,
            u32_of(start),
            u32_of(frames.len()),
            moves,
            u32_of(self.rejections.len()),
            u32_of(rejections.len()),
        ]);
        self.rejections.extend(
            rejections
                .iter()
                .map(|r| [r.room, r.player, r.seq, r.reason as u32]),
        );
        self.stamps.extend_from_slice(stamps);
    }

    /// Reserves room after the last room's frames for `later_moves` more of them
    /// (`later_bytes` in all), which the caller writes with [`Builder::place`]; where they
    /// go. A worker's staged moves follow what waited in the room's inbox this way. Until
    /// every reserved frame is placed, the room holds zeros there (a worker only reserves
    /// what it places).
    pub fn reserve(&mut self, later_moves: u32, later_bytes: usize) -> Placement {
        let placement = Placement {
            frame: self.buf.len(),
            frame_end: self.buf.len() + later_bytes,
            stamp: self.stamps.len(),
            stamp_end: self.stamps.len() + later_moves as usize,
        };
        if let Some(entry) = self.rooms.last_mut().filter(|_| later_moves > 0) {
            self.buf.resize(placement.frame_end, 0);
            self.stamps.resize(placement.stamp_end, 0);
            entry[2] += u32_of(later_bytes);
            entry[3] += later_moves;
        }
        placement
    }

    /// Writes one frame reserved by [`Builder::reserve`] at `at` and moves `at`
    /// past it. A frame that would not fit in what its room reserved is not written
    /// (`false`): the caller's bookkeeping is wrong, and no room's run is written past.
    #[inline]
    pub fn place(&mut self, at: &mut Placement, frame: &[u8], stamp: u64) -> bool {
        let end = at.frame + frame.len();
        if end > at.frame_end || at.stamp >= at.stamp_end {
            return false;
        }
        match (
            self.buf.get_mut(at.frame..end),
            self.stamps.get_mut(at.stamp),
        ) {
            (Some(dst), Some(s)) => {
                dst.copy_from_slice(frame);
                *s = stamp;
                at.frame = end;
                at.stamp += 1;
                true
            }
            _ => false,
        }
    }

    /// The delivery built since [`Builder::start`], for `shard` (`None`: a drain). The
    /// builder is empty afterwards.
    pub fn finish(&mut self, shard: Option<u32>) -> Moves {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < HEADER_BYTES {
            buf.resize(HEADER_BYTES, 0);
        }
        let moves = self.stamps.len();
        buf.resize(buf.len().next_multiple_of(4), 0);
        let rooms_at = buf.len();
        for r in &self.rooms {
            for w in r {
                buf.extend_from_slice(&w.to_le_bytes());
            }
        }
        let rejections_at = buf.len();
        for r in &self.rejections {
            for w in r {
                buf.extend_from_slice(&w.to_le_bytes());
            }
        }
        buf.resize(buf.len().next_multiple_of(8), 0);
        let stamps_at = buf.len();
        for s in &self.stamps {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        let header = [
            VERSION,
            shard.unwrap_or(PULL),
            u32_of(self.rooms.len()),
            u32_of(moves),
            u32_of(self.rejections.len()),
            u32_of(rooms_at),
            u32_of(rejections_at),
            u32_of(stamps_at),
        ];
        for (i, w) in header.iter().enumerate() {
            buf[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        self.rooms.clear();
        self.rejections.clear();
        self.stamps.clear();
        Moves { bytes: buf }
    }

    /// Takes back the buffer of an abandoned (empty) delivery.
    pub fn abandon(&mut self) -> Vec<u8> {
        self.rooms.clear();
        self.rejections.clear();
        self.stamps.clear();
        std::mem::take(&mut self.buf)
    }
}

/// Where the next frame reserved by [`Builder::reserve`] goes, and where its
/// room's reserved run ends. The default reserves nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset in the delivery, and the end of the run.
    frame: usize,
    frame_end: usize,
    /// Index in the stamps, and the end of the run.
    stamp: usize,
    stamp_end: usize,
}

/// Delivery buffers that JavaScript is done with, for the next deliveries to reuse (their
/// capacity grows to the deliveries' usual size, and then nothing is allocated).
///
/// Bounded in count ([`POOL_KEEP`]) and in bytes ([`POOL_KEEP_BYTES`]): after a spike —
/// one outsized delivery, or many released together by a garbage collection — the pool
/// frees what is beyond its bounds instead of keeping it for the life of the dispatcher.
#[derive(Debug, Default)]
pub struct Pool {
    free: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    buffers: Vec<Vec<u8>>,
    /// The sum of their capacities.
    bytes: usize,
}

/// Buffers a pool keeps; more are freed.
const POOL_KEEP: usize = 16;

/// Bytes (capacity) a pool keeps at most: a few deliveries of a 20 Hz drain at 1 M moves/s
/// (~6 MiB each) and many smaller ones. A buffer that would take the pool past it is freed.
const POOL_KEEP_BYTES: usize = 64 << 20;

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer (a kept one if any).
    pub fn get(&self) -> Vec<u8> {
        let mut kept = self.lock();
        let buf = kept.buffers.pop().unwrap_or_default();
        kept.bytes -= buf.capacity();
        buf
    }

    /// Gives a buffer back (JavaScript can no longer see it); it is kept if the pool stays
    /// within its bounds, else freed.
    pub fn put(&self, buf: Vec<u8>) {
        let mut kept = self.lock();
        let cap = buf.capacity();
        if kept.buffers.len() < POOL_KEEP && cap > 0 && kept.bytes + cap <= POOL_KEEP_BYTES {
            kept.bytes += cap;
            kept.buffers.push(buf);
        }
        // Else `buf` is freed as this returns, after the lock is let go.
    }

    /// Bytes (capacity) the pool keeps.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Reason;

    #[test]
    fn round_trip_of_the_format() {
        let mut b = Builder::new();
        b.start(Pool::new().get());
        assert!(b.is_empty());
        let rej = Rejection {
            room: 7,
            player: 1,
            seq: 3,
            reason: Reason::BadTag,
        };
        b.push_room(7, &[1; 120], 2, &[10, 11], &[rej]);
        b.push_room(9, &[], 0, &[], &[rej, rej]);
        b.push_room(4, &[2; 57], 1, &[12], &[]);
        let m = b.finish(Some(3));
        assert!(b.is_empty());
        assert_eq!(
            (m.shard(), m.rooms(), m.moves(), m.rejections()),
            (Some(3), 3, 3, 3)
        );
        let rooms: Vec<RoomEntry> = m.room_entries().collect();
        assert_eq!(rooms[0].frame_start, HEADER_BYTES);
        assert_eq!(m.frames(&rooms[0]), &[1; 120][..]);
        assert_eq!(
            (
                rooms[1].frame_bytes,
                rooms[1].rejection_start,
                rooms[1].rejections
            ),
            (0, 1, 2)
        );
        assert_eq!(m.frames(&rooms[2]), &[2; 57][..]);
        assert_eq!(m.stamps().collect::<Vec<_>>(), vec![10, 11, 12]);
        assert_eq!(m.rejection_entries().count(), 3);
        assert_eq!(word(m.bytes(), 0), VERSION);
        assert_eq!(word(m.bytes(), 20) % 4, 0, "room table aligned");
        assert_eq!(word(m.bytes(), 28) % 8, 0, "stamps aligned");
        let mut b2 = Builder::new();
        b2.start(Vec::new());
        let pull = b2.finish(None);
        assert_eq!((pull.shard(), pull.rooms(), pull.moves()), (None, 0, 0));
    }

    /// Rooms reserved for frames placed later (a worker's staged moves): each room's waiting
    /// frames first, then the placed ones in order, stamps alike; a frame that would leave
    /// its room's run is refused, not written.
    #[test]
    fn reserved_runs_take_placed_frames_in_order() {
        let mut b = Builder::new();
        b.start(Pool::new().get());
        b.push_room(1, &[9; 10], 1, &[100], &[]);
        let mut a = b.reserve(2, 7);
        b.push_room(2, &[], 0, &[], &[]);
        let mut c = b.reserve(1, 4);
        // Interleaved, as staged: room 1, room 2, room 1.
        assert!(b.place(&mut a, &[1, 1, 1], 101));
        assert!(b.place(&mut c, &[2, 2, 2, 2], 201));
        assert!(
            !b.place(&mut a, &[4; 5], 103),
            "longer than what room 1 has left"
        );
        assert!(b.place(&mut a, &[3, 3, 3, 3], 102));
        assert!(!b.place(&mut a, &[6], 104), "a third move for room 1's two");
        assert!(!b.place(&mut c, &[5; 60], 202), "past room 2's run");
        let m = b.finish(Some(0));
        let rooms: Vec<RoomEntry> = m.room_entries().collect();
        assert_eq!(
            (rooms[0].room, rooms[0].moves, rooms[0].frame_bytes),
            (1, 3, 17)
        );
        assert_eq!(
            m.frames(&rooms[0]),
            &[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 1, 1, 3, 3, 3, 3][..]
        );
        assert_eq!((rooms[1].room, rooms[1].moves), (2, 1));
        assert_eq!(m.frames(&rooms[1]), &[2, 2, 2, 2][..]);
        assert_eq!(m.stamps().collect::<Vec<_>>(), vec![100, 101, 102, 201]);
    }

    #[test]
    fn pool_keeps_buffers() {
        let pool = Pool::new();
        let mut v = pool.get();
        v.reserve(1000);
        let ptr = v.as_ptr();
        pool.put(v);
        let again = pool.get();
        assert_eq!(again.as_ptr(), ptr, "reused");
    }

    #[test]
    fn pool_keeps_within_its_count_and_bytes() {
        let pool = Pool::new();
        // Many small ones: at most POOL_KEEP.
        for _ in 0..POOL_KEEP + 4 {
            pool.put(Vec::with_capacity(1000));
        }
        assert_eq!(pool.lock().buffers.len(), POOL_KEEP);
        assert_eq!(pool.kept_bytes(), POOL_KEEP * 1000);
        while pool.lock().buffers.pop().is_some() {}
        pool.lock().bytes = 0;
        // Big ones: no more than POOL_KEEP_BYTES of capacity; one bigger than that alone
        // is never kept.
        let big = POOL_KEEP_BYTES / 3;
        for _ in 0..5 {
            pool.put(Vec::with_capacity(big));
        }
        assert_eq!(pool.lock().buffers.len(), 3);
        assert!(pool.kept_bytes() <= POOL_KEEP_BYTES);
        let taken = pool.get();
        assert_eq!(pool.kept_bytes(), 2 * taken.capacity());
        pool.put(taken);
        pool.put(Vec::with_capacity(POOL_KEEP_BYTES + 1));
        assert_eq!(pool.lock().buffers.len(), 3);
        // Getting every buffer back out leaves the count at zero.
        for _ in 0..3 {
            drop(pool.get());
        }
        assert_eq!(pool.kept_bytes(), 0);
        assert!(pool.get().capacity() == 0, "empty: a new buffer");
    }
}
