//! Room membership as `dispatch` checks it: one open-addressing table keyed by
//! `(room, player)`, holding each member's rate-limit bucket.
//!
//! `dispatch` looks up every move's member. With thousands of rooms the lookup misses the
//! cache, and a per-room map missed twice more (its control bytes, then its bucket). Here a
//! member is one 32-byte slot of one table whose address follows from the key alone, and it
//! names its room's slot in [`crate::core::Rooms`], so a `dispatchStream` call can prefetch
//! the members of the frames ahead of the one it checks ([`Members::prefetch`]) and, once
//! those slots have arrived, their rooms: the misses overlap instead of adding up.
//!
//! Linear probing, Fibonacci hashing of the key, at most half full, removal by backward
//! shift (no tombstones). The table only grows on `join` (the control path); lookups and
//! prefetches never allocate. Like [`crate::IdHasher`], the hash is not keyed: only the
//! server inserts keys (`join`), a client can only choose what it looks up.
//!
//! # Safety
//! The one `unsafe` operation is the prefetch instruction ([`prefetch`]): a hint that never
//! faults and changes no memory, whatever address it is given.
#![allow(unsafe_code)]

use crate::ratelimit::Bucket;

/// One member: the key, the bucket, and its room's slot in [`crate::core::Rooms`]. Two
/// slots per cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    key: u64,
    bucket: Bucket,
    room: u32,
    used: bool,
}

const EMPTY: Slot = Slot {
    key: 0,
    bucket: Bucket::ZERO,
    room: 0,
    used: false,
};

/// Slots of a new table (a power of two).
const FIRST_SLOTS: usize = 16;

/// The members of every room of a dispatcher.
#[derive(Debug)]
pub(crate) struct Members {
    slots: Box<[Slot]>,
    /// `64 - log2(slots.len())`: the shift that turns a product into a slot index.
    shift: u32,
    len: usize,
}

impl Default for Members {
    fn default() -> Self {
        Self::with_slots(FIRST_SLOTS)
    }
}

fn key(room: u32, player: u32) -> u64 {
    u64::from(room) | u64::from(player) << 32
}

impl Members {
    fn with_slots(n: usize) -> Self {
        debug_assert!(n.is_power_of_two() && n >= 2);
        Self {
            slots: vec![EMPTY; n].into_boxed_slice(),
            shift: 64 - n.trailing_zeros(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The key's home slot (Fibonacci hashing: the product's top bits).
    fn home(&self, key: u64) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the shift leaves at most log2(slots) bits"
        )]
        let i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        i
    }

    /// The slot holding `key`, if any.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if !s.used {
                return None;
            }
            if s.key == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Members in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Where `player`'s membership of `room` is, if it is a member ([`Members::bucket`],
    /// [`Members::room_slot`]); valid until the next `join` or `leave`.
    #[inline]
    pub(crate) fn lookup(&self, room: u32, player: u32) -> Option<Member> {
        self.find(key(room, player)).map(Member)
    }

    /// The member's room slot in [`crate::core::Rooms`].
    #[inline]
    pub(crate) fn room_slot(&self, m: Member) -> u32 {
        self.slots[m.0].room
    }

    /// The member's rate-limit bucket.
    #[inline]
    pub(crate) fn bucket(&mut self, m: Member) -> &mut Bucket {
        &mut self.slots[m.0].bucket
    }

    /// Whether `player` is a member of `room`.
    #[cfg(test)]
    fn contains(&self, room: u32, player: u32) -> bool {
        self.find(key(room, player)).is_some()
    }

    /// Adds `player` to `room` (whose slot in [`crate::core::Rooms`] is `room_slot`) with
    /// `bucket`, or keeps the member's bucket if it is one (joining again cannot refill a
    /// rate limit). May grow the table (allocates).
    pub(crate) fn join(&mut self, room: u32, player: u32, room_slot: u32, bucket: Bucket) {
        let k = key(room, player);
        if let Some(i) = self.find(k) {
            debug_assert_eq!(self.slots[i].room, room_slot, "a room keeps its slot");
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.put(Slot {
            key: k,
            bucket,
            room: room_slot,
            used: true,
        });
        self.len += 1;
    }

    /// Puts a slot whose key is not in the table into its first free slot.
    fn put(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut i = self.home(slot.key);
        while self.slots[i].used {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, Self::with_slots(self.slots.len() * 2));
        for s in old.slots.iter().filter(|s| s.used) {
            self.put(*s);
        }
        self.len = old.len;
    }

    /// Removes `player` from `room`; whether it was a member.
    pub(crate) fn leave(&mut self, room: u32, player: u32) -> bool {
        let Some(mut hole) = self.find(key(room, player)) else {
            return false;
        };
        // Backward shift: every slot of the run after the hole that may live at the hole
        // (the hole lies between its home and where it is) moves there, leaving its own
        // slot as the next hole, until the run ends.
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        while self.slots[j].used {
            let origin = self.home(self.slots[j].key);
            if (j.wrapping_sub(origin) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Starts loading the slot a lookup of `player` in `room` reads first.
    #[inline]
    pub(crate) fn prefetch(&self, room: u32, player: u32) {
        prefetch(self.slots[self.home(key(room, player))..].as_ptr().cast());
    }
}

/// A member found by [`Members::lookup`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member(usize);

/// Asks the CPU to bring the cache line of `at` closer (a hint: nothing else happens).
#[inline]
pub(crate) fn prefetch(at: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `prefetcht0` (SSE, always present on x86_64) is a hint: it never faults,
    // whatever the address (even unmapped), and changes no memory or register state.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    // SAFETY: `prfm` is a hint: it never faults, whatever the address, and writes no
    // memory, register or flag.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) at, options(nostack, readonly, preserves_flags));
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn bucket(tokens: f64) -> Bucket {
        let mut b = Bucket::ZERO;
        b.tokens = tokens;
        b
    }

    /// Random joins and leaves, checked against a `HashMap` after every step: membership,
    /// buckets (kept on a second join), length, and the half-full bound.
    #[test]
    fn behaves_as_a_map_through_joins_leaves_and_growth() {
        let mut m = Members::default();
        let mut want: HashMap<(u32, u32), f64> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200_000_u32 {
            let r = next();
            // Few rooms and players, so joins hit members and leaves find them; some ids
            // at the extremes.
            let room = [0, 1, 7, u32::MAX][(r % 4) as usize] ^ ((r >> 8) % 50) as u32;
            let player = ((r >> 20) % 300) as u32
                | if r & (1 << 40) != 0 {
                    u32::MAX - 299
                } else {
                    0
                };
            if r & (1 << 41) == 0 || step < 20_000 {
                let t = f64::from(step);
                m.join(room, player, room, bucket(t));
                want.entry((room, player)).or_insert(t);
            } else {
                assert_eq!(
                    m.leave(room, player),
                    want.remove(&(room, player)).is_some()
                );
            }
            assert_eq!(m.len(), want.len());
            assert!(m.len() * 2 <= m.slots.len());
            if step % 997 == 0 {
                for (&(room, player), &t) in &want {
                    let at = m.lookup(room, player).map(|x| m.bucket(x).tokens);
                    assert_eq!(at, Some(t));
                }
                let full = m.slots.iter().filter(|s| s.used).count();
                assert_eq!(full, want.len(), "no stale slot left behind");
            }
        }
        for &(room, player) in want.clone().keys() {
            assert!(m.leave(room, player));
            assert!(!m.contains(room, player));
        }
        assert_eq!(m.len(), 0);
        assert!(m.slots.iter().all(|s| !s.used));
    }

    /// A run that wraps around the end of the table survives removals from its middle.
    #[test]
    fn backward_shift_across_the_end_of_the_table() {
        let mut m = Members::default();
        let last = m.slots.len() - 1;
        // Keys whose home is the last slot (found by search: the hash is fixed).
        let keys: Vec<(u32, u32)> = (0..u32::MAX)
            .map(|p| (3, p))
            .filter(|&(r, p)| m.home(key(r, p)) == last)
            .take(4)
            .collect();
        for &(r, p) in &keys {
            m.join(r, p, r, bucket(f64::from(p)));
        }
        assert!(m.leave(keys[1].0, keys[1].1));
        for (r, p) in [keys[0], keys[2], keys[3]] {
            let at = m.lookup(r, p).map(|x| m.bucket(x).tokens);
            assert_eq!(at, Some(f64::from(p)));
        }
        assert!(!m.contains(keys[1].0, keys[1].1));
    }

    #[test]
    fn a_member_names_its_room_slot() {
        let mut m = Members::default();
        m.prefetch(1, 2);
        m.join(1, 2, 40, bucket(1.0));
        m.join(1, 2, 40, bucket(9.0));
        let x = m.lookup(1, 2).expect("a member");
        assert_eq!(
            (m.room_slot(x), m.bucket(x).tokens),
            (40, 1.0),
            "joining again keeps the bucket"
        );
        assert!(m.lookup(2, 1).is_none());
    }

    #[test]
    fn prefetching_any_address_is_harmless() {
        // Nothing is mapped at these: a prefetch never faults.
        prefetch(std::ptr::null());
        prefetch(std::ptr::without_provenance(usize::MAX - 8));
    }
}
