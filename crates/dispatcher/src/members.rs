//! Room membership as `dispatch` and the shard workers check it: one open-addressing table
//! keyed by `(room, player)` per side, holding what that side keeps per member (`dispatch`:
//! the index of its rate-limit bucket, kept beside the table; a worker: the replay window
//! and key), and the rooms in a slab.
//!
//! With thousands of rooms a lookup misses the cache, and a per-room map behind a map of
//! rooms missed three or four times (the rooms map's control bytes and entry, the room's own
//! map's). Here a member is one slot of one table whose address follows from the key alone,
//! and it names its room's slot in a [`Rooms`] slab, so a batch (a `dispatchStream` chunk,
//! a worker's arena) can prefetch the members of the frames ahead of the one it checks
//! ([`Members::prefetch`]) and, once those slots have arrived, their rooms: the misses
//! overlap instead of adding up.
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

use std::collections::HashMap;

use crate::IdHashBuilder;

/// One member: the key, its room's slot in a [`Rooms`] ([`EMPTY`] in a free slot), and what
/// the table's owner keeps per member (`dispatch`: where its rate-limit bucket is, 16-byte
/// slots, four per cache line; a worker: the replay window and key, 64-byte slots).
#[derive(Debug)]
#[repr(C, align(16))]
struct Slot<V> {
    key: u64,
    room: u32,
    value: V,
}

/// The room slot of a free [`Slot`]: no room has it ([`Rooms::insert`] stops short of it).
const EMPTY: u32 = u32::MAX;

impl<V: Default> Default for Slot<V> {
    fn default() -> Self {
        Self {
            key: 0,
            room: EMPTY,
            value: V::default(),
        }
    }
}

impl<V> Slot<V> {
    fn used(&self) -> bool {
        self.room != EMPTY
    }
}

/// Slots of a new table (a power of two).
const FIRST_SLOTS: usize = 16;

/// The members of every room of a dispatcher (or of a shard), with a `V` each.
#[derive(Debug)]
pub(crate) struct Members<V> {
    slots: Box<[Slot<V>]>,
    /// `64 - log2(slots.len())`: the shift that turns a product into a slot index.
    shift: u32,
    len: usize,
}

impl<V: Default> Default for Members<V> {
    fn default() -> Self {
        Self::with_slots(FIRST_SLOTS)
    }
}

fn key(room: u32, player: u32) -> u64 {
    u64::from(room) | u64::from(player) << 32
}

impl<V: Default> Members<V> {
    fn with_slots(n: usize) -> Self {
        debug_assert!(n.is_power_of_two() && n >= 2);
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
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
            if !s.used() {
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

    /// Where `player`'s membership of `room` is, if it is a member ([`Members::value`],
    /// [`Members::room_slot`]); valid until the next `join` or `leave`.
    #[inline]
    pub(crate) fn lookup(&self, room: u32, player: u32) -> Option<Member> {
        self.find(key(room, player)).map(Member)
    }

    /// The member's room slot in its [`Rooms`].
    #[inline]
    pub(crate) fn room_slot(&self, m: Member) -> u32 {
        self.slots[m.0].room
    }

    /// What the owner keeps for the member.
    #[inline]
    pub(crate) fn value(&mut self, m: Member) -> &mut V {
        &mut self.slots[m.0].value
    }

    /// Whether `player` is a member of `room`.
    pub(crate) fn contains(&self, room: u32, player: u32) -> bool {
        self.find(key(room, player)).is_some()
    }

    /// Adds `player` to `room` (whose slot in its [`Rooms`] is `room_slot`) with a default
    /// value, or finds the member if it is one; its value, and whether it is new. May grow
    /// the table (allocates).
    pub(crate) fn join(&mut self, room: u32, player: u32, room_slot: u32) -> (&mut V, bool) {
        let k = key(room, player);
        if let Some(i) = self.find(k) {
            debug_assert_eq!(self.slots[i].room, room_slot, "a room keeps its slot");
            return (&mut self.slots[i].value, false);
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        // A member in a slot marked free would vanish from the table (`Rooms` never hands
        // out the mark): the control path can afford the check.
        assert_ne!(room_slot, EMPTY, "no room has the free slots' mark");
        let i = self.put(Slot {
            key: k,
            room: room_slot,
            value: V::default(),
        });
        self.len += 1;
        (&mut self.slots[i].value, true)
    }

    /// Puts a slot whose key is not in the table into its first free slot; where.
    fn put(&mut self, slot: Slot<V>) -> usize {
        let mask = self.mask();
        let mut i = self.home(slot.key);
        while self.slots[i].used() {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
        i
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, Self::with_slots(self.slots.len() * 2));
        for s in old.slots.into_vec().into_iter().filter(Slot::used) {
            self.put(s);
        }
        self.len = old.len;
    }

    /// Removes `player` from `room`; its value, if it was a member.
    pub(crate) fn leave(&mut self, room: u32, player: u32) -> Option<V> {
        let mut hole = self.find(key(room, player))?;
        // Backward shift: every slot of the run after the hole that may live at the hole
        // (the hole lies between its home and where it is) moves there, leaving its own
        // slot as the next hole, until the run ends. The removed member travels along
        // (swaps) and its value is returned at the end.
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        while self.slots[j].used() {
            let origin = self.home(self.slots[j].key);
            if (j.wrapping_sub(origin) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots.swap(hole, j);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        let gone = std::mem::take(&mut self.slots[hole]);
        self.len -= 1;
        Some(gone.value)
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

/// Rooms (of a dispatcher, or of a shard): by id (a map to slots) and by slot (where they
/// live, so that [`Members`], which names each member's room by its slot, leads from a move
/// to its room without a second hash lookup, and lets a batch prefetch it). A room keeps
/// its slot while it exists; a forgotten room's slot is reused.
pub(crate) struct Rooms<R> {
    by_id: HashMap<u32, u32, IdHashBuilder>,
    by_slot: Vec<Option<(u32, R)>>,
    free: Vec<u32>,
}

impl<R> Default for Rooms<R> {
    fn default() -> Self {
        Self {
            by_id: HashMap::default(),
            by_slot: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<R> Rooms<R> {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn contains_key(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The room's slot, if it exists.
    pub(crate) fn slot(&self, id: u32) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&R> {
        self.at(self.slot(id)?)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut R> {
        self.at_mut(self.slot(id)?, id)
    }

    /// The room in `slot`, if any.
    #[inline]
    pub(crate) fn at(&self, slot: u32) -> Option<&R> {
        self.by_slot.get(slot as usize)?.as_ref().map(|(_, r)| r)
    }

    /// The room in `slot` if it is room `id` (a member's slot is checked against the
    /// frame's room, so that no bookkeeping slip could route a move to another room).
    #[inline]
    pub(crate) fn at_mut(&mut self, slot: u32, id: u32) -> Option<&mut R> {
        match self.by_slot.get_mut(slot as usize)? {
            Some((at, r)) if *at == id => Some(r),
            _ => None,
        }
    }

    /// The room of a move of `player` in room `id`: by the slot its membership `m` names
    /// (one hash lookup for both; the slot is checked against `id`), or by id for a
    /// non-member.
    #[inline]
    pub(crate) fn of_move<V: Default>(
        &mut self,
        members: &Members<V>,
        m: Option<Member>,
        id: u32,
    ) -> Option<&mut R> {
        match m {
            Some(m) => self.at_mut(members.room_slot(m), id),
            None => self.get_mut(id),
        }
    }

    /// The room of member `(room, player)` by its slot, for a batch looking ahead (a hint:
    /// the slot is not checked against the id).
    #[inline]
    pub(crate) fn of_member<V: Default>(
        &self,
        members: &Members<V>,
        room: u32,
        player: u32,
    ) -> Option<&R> {
        self.at(members.room_slot(members.lookup(room, player)?))
    }

    /// Starts loading the room of member `(room, player)`, if it is one.
    #[inline]
    pub(crate) fn prefetch_of_member<V: Default>(
        &self,
        members: &Members<V>,
        room: u32,
        player: u32,
    ) {
        if let Some(m) = members.lookup(room, player) {
            self.prefetch(members.room_slot(m));
        }
    }

    /// Starts loading the room in `slot`: every cache line its entry touches (an entry of
    /// 65–128 bytes that starts late in a line spans three; prefetching only the first two
    /// lines left the fields at its end to miss).
    #[inline]
    pub(crate) fn prefetch(&self, slot: u32) {
        if let Some(r) = self.by_slot.get(slot as usize) {
            let at = std::ptr::from_ref(r).cast::<u8>();
            let size = std::mem::size_of_val(r);
            let mut off = 0;
            while off < size {
                crate::members::prefetch(at.wrapping_add(off));
                off += 64;
            }
            crate::members::prefetch(at.wrapping_add(size - 1));
        }
    }

    /// Adds a room that does not exist; its slot.
    pub(crate) fn insert(&mut self, id: u32, room: R) -> u32 {
        debug_assert!(!self.by_id.contains_key(&id));
        let slot = if let Some(slot) = self.free.pop() {
            self.by_slot[slot as usize] = Some((id, room));
            slot
        } else {
            let slot = u32::try_from(self.by_slot.len())
                .ok()
                .filter(|&s| s != EMPTY)
                .expect("fewer than 2^32 - 1 rooms");
            self.by_slot.push(Some((id, room)));
            slot
        };
        self.by_id.insert(id, slot);
        slot
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<R> {
        let slot = self.by_id.remove(&id)?;
        self.free.push(slot);
        self.by_slot[slot as usize].take().map(|(_, r)| r)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &R)> {
        self.by_slot.iter().flatten().map(|(id, r)| (*id, r))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &R> {
        self.iter().map(|(_, r)| r)
    }

    /// Keeps the rooms `keep` says to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&R) -> bool) {
        let gone: Vec<u32> = self
            .iter()
            .filter(|(_, r)| !keep(r))
            .map(|(id, _)| id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }
}

/// How far ahead of the frame it checks a batch looks (in frames; `dispatchStream`'s
/// chunk and a worker's arena alike): the member slot `FAR` ahead, the room `NEAR` ahead
/// (its slot has arrived by then) — and `dispatchStream` the room's budget with it (its
/// address is kept by room slot) — and a worker the room's inbox `NEAREST` ahead (the room
/// has arrived). Tried longer (12/6/3, 14/6, 16/8/4): no faster.
pub(crate) const FAR: usize = 8;
pub(crate) const NEAR: usize = 4;
pub(crate) const NEAREST: usize = 2;

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

    /// Joins with `value` unless a member already (whose value is kept).
    fn join(m: &mut Members<f64>, room: u32, player: u32, slot: u32, value: f64) {
        let (v, new) = m.join(room, player, slot);
        if new {
            *v = value;
        }
    }

    /// Random joins and leaves, checked against a `HashMap` after every step: membership,
    /// values (kept on a second join), length, and the half-full bound.
    #[test]
    fn behaves_as_a_map_through_joins_leaves_and_growth() {
        let mut m = Members::<f64>::default();
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
                join(&mut m, room, player, room % 1000, t);
                want.entry((room, player)).or_insert(t);
            } else {
                assert_eq!(m.leave(room, player), want.remove(&(room, player)));
            }
            assert_eq!(m.len(), want.len());
            assert!(m.len() * 2 <= m.slots.len());
            if step % 997 == 0 {
                for (&(room, player), &t) in &want {
                    let at = m.lookup(room, player).map(|x| *m.value(x));
                    assert_eq!(at, Some(t));
                }
                let full = m.slots.iter().filter(|s| s.used()).count();
                assert_eq!(full, want.len(), "no stale slot left behind");
            }
        }
        for (&(room, player), &t) in &want.clone() {
            assert_eq!(
                m.leave(room, player),
                Some(t),
                "leaving gives the value back"
            );
            assert!(!m.contains(room, player));
        }
        assert_eq!(m.len(), 0);
        assert!(m.slots.iter().all(|s| !s.used()));
    }

    /// A run that wraps around the end of the table survives removals from its middle.
    #[test]
    fn backward_shift_across_the_end_of_the_table() {
        let mut m = Members::<f64>::default();
        let last = m.slots.len() - 1;
        // Keys whose home is the last slot (found by search: the hash is fixed).
        let keys: Vec<(u32, u32)> = (0..u32::MAX)
            .map(|p| (3, p))
            .filter(|&(r, p)| m.home(key(r, p)) == last)
            .take(4)
            .collect();
        for &(r, p) in &keys {
            join(&mut m, r, p, r, f64::from(p));
        }
        assert!(m.leave(keys[1].0, keys[1].1).is_some());
        for (r, p) in [keys[0], keys[2], keys[3]] {
            let at = m.lookup(r, p).map(|x| *m.value(x));
            assert_eq!(at, Some(f64::from(p)));
        }
        assert!(!m.contains(keys[1].0, keys[1].1));
    }

    #[test]
    fn a_member_names_its_room_slot() {
        let mut m = Members::<f64>::default();
        m.prefetch(1, 2);
        join(&mut m, 1, 2, 40, 1.0);
        join(&mut m, 1, 2, 40, 9.0);
        let x = m.lookup(1, 2).expect("a member");
        assert_eq!(
            (m.room_slot(x), *m.value(x)),
            (40, 1.0),
            "joining again keeps the value"
        );
        assert!(m.lookup(2, 1).is_none());
    }

    /// A member's value is dropped when it leaves (a backward shift moves values, never
    /// copies them), and every value when the table goes; growing keeps them all.
    #[test]
    fn values_are_moved_and_dropped_not_copied() {
        use std::rc::Rc;
        let alive = Rc::new(());
        let mut m = Members::<Option<Rc<()>>>::default();
        for p in 0..100 {
            *m.join(5, p, 0).0 = Some(Rc::clone(&alive));
        }
        assert_eq!(Rc::strong_count(&alive), 101);
        for p in (0..100).step_by(2) {
            assert!(m.leave(5, p).is_some());
        }
        assert_eq!(Rc::strong_count(&alive), 51);
        for p in (1..100).step_by(2) {
            let x = m.lookup(5, p).expect("a member");
            assert!(m.value(x).is_some());
        }
        drop(m);
        assert_eq!(Rc::strong_count(&alive), 1);
    }

    /// The slot sizes the docs promise: `dispatch`'s 16 bytes (four per line: its value is
    /// the index of a bucket kept elsewhere), a worker's 64 (its value: a replay window, 32
    /// bytes aligned to 16, and a key pointer).
    #[test]
    fn slots_fill_cache_lines_exactly() {
        #[expect(dead_code, reason = "only its layout matters")]
        #[derive(Default)]
        struct WorkerLike(crate::window::ReplayWindow, Option<Box<u8>>);
        assert_eq!(std::mem::size_of::<Slot<u32>>(), 16);
        assert_eq!(std::mem::size_of::<Slot<WorkerLike>>(), 64);
    }

    #[test]
    fn prefetching_any_address_is_harmless() {
        // Nothing is mapped at these: a prefetch never faults.
        prefetch(std::ptr::null());
        prefetch(std::ptr::without_provenance(usize::MAX - 8));
    }
}
