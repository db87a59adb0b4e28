//! Heap allocations made on the hot path: a counting wrapper around the global allocator.
//!
//! # Hot-path allocation counter
//! [`HotPath::enter`] marks the calling thread as being on the hot path until its guard
//! drops; [`Counting`], a wrapper around the global allocator, counts every allocation,
//! reallocation and deallocation made by a thread so marked, process-wide
//! ([`hot_path_allocations`], [`hot_path_stats`]) and for the calling thread
//! ([`thread_hot_path_stats`]). With the mark off, the wrapper costs one thread-local read
//! and a not-taken branch per call; counting (the rare case, which is the bug being looked
//! for) adds relaxed atomic increments. [`HotPath::pause`] lifts the mark inside a hot
//! section, for work that may allocate by design (a cold branch such as opening a room).
//!
//! Whether [`Counting`] is installed is also measured, not assumed ([`counting_installed`]):
//! `stats()` should report the counter as unavailable rather than as zero when it is not.
//!
//! # Installing
//! A binary has one `#[global_allocator]`; this library installs none. The addon
//! (`crates/binding`) installs `Counting<Jemalloc>`:
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: alloc::Counting<tikv_jemallocator::Jemalloc> =
//!     alloc::Counting::new(tikv_jemallocator::Jemalloc);
//! ```
//! and this crate's own unit tests install `Counting<System>` (so Miri and the sanitizers
//! see every allocation); `tests/hot_path_allocations.rs` installs `Counting<Jemalloc>`.

//! # Safety
//! `GlobalAlloc` is an `unsafe` trait of `unsafe fn`s, so this module is one of the few
//! allowed `unsafe` (crate docs): each method forwards its arguments unchanged to the wrapped
//! allocator under the caller's contract, and its own work (thread-local and atomic
//! counters) neither allocates, panics nor unwinds.
//!
//! The thread-local mark is `const`-initialised and has no destructor, so reading it from
//! the allocator never allocates or registers anything (and works during thread teardown).
//!
//! # Cost
//! Measured on this machine (Xeon, release), 64-byte allocation and free through jemalloc:
//! in an executable 3.98 ns plain, 4.09–4.15 ns with `Counting` and the mark off, 19.3 ns with
//! the mark on; in a `dlopen`ed cdylib like the addon (where the mark is read through
//! `__tls_get_addr`, as jemalloc's own thread cache is with `disable_initial_exec_tls`)
//! 7.6–7.9 ns either way, the difference lost in noise. A [`HotPath`] guard (enter and drop)
//! costs 0.5–0.8 ns. The `counting_cost` test (ignored) measures it again.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The global allocator of the unit-test build (the library itself installs none).
#[cfg(test)]
#[global_allocator]
static TEST_GLOBAL: Counting<std::alloc::System> = Counting::new(std::alloc::System);

// ---------------------------------------------------------------------------------------------
// Hot-path allocation counter

/// The thread's mark: allocations are not counted.
const OFF: u8 = 0;
/// Allocations are counted (on the hot path).
const COUNT: u8 = 1;
/// Allocations are counted in `PROBED` only ([`counting_installed`] at work).
const PROBE: u8 = 2;

thread_local! {
    static MODE: Cell<u8> = const { Cell::new(OFF) };
    static THREAD: Cell<HotPathStats> = const { Cell::new(HotPathStats::ZERO) };
    static PROBED: Cell<u64> = const { Cell::new(0) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Heap operations made on the hot path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotPathStats {
    /// Allocations and reallocations.
    pub allocations: u64,
    /// Bytes requested by them (a reallocation counts its new size).
    pub bytes: u64,
    /// Deallocations (memory freed on the hot path was allocated somewhere, maybe there).
    pub deallocations: u64,
}

impl HotPathStats {
    const ZERO: Self = Self {
        allocations: 0,
        bytes: 0,
        deallocations: 0,
    };
}

/// Allocations (and reallocations) made on the hot path by any thread since the process
/// started; 0 if [`Counting`] is not installed.
pub fn hot_path_allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Everything counted on the hot path by any thread since the process started.
pub fn hot_path_stats() -> HotPathStats {
    HotPathStats {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        deallocations: DEALLOCATIONS.load(Ordering::Relaxed),
    }
}

/// What the calling thread did on the hot path since it started.
pub fn thread_hot_path_stats() -> HotPathStats {
    THREAD.try_with(Cell::get).unwrap_or_default()
}

/// Whether [`Counting`] is the global allocator (measured once, then cached): a one-byte
/// allocation is made in probe mode, which [`Counting`] counts apart from the totals.
///
/// # Example
/// ```
/// use move_dispatcher::alloc::{counting_installed, hot_path_allocations};
///
/// let counted = counting_installed().then(hot_path_allocations); // None: not measured
/// # let _ = counted;
/// ```
pub fn counting_installed() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&STATE, || {
        let before = PROBED.with(Cell::get);
        let prev = MODE.replace(PROBE);
        drop(std::hint::black_box(Box::new(0_u8)));
        MODE.set(prev);
        PROBED.with(Cell::get) != before
    })
}

const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// `probe()`, computed once per `state` (a race computes it twice, with the same answer).
fn cached(state: &AtomicU8, probe: impl FnOnce() -> bool) -> bool {
    match state.load(Ordering::Relaxed) {
        NO => false,
        YES => true,
        _ => {
            let yes = probe();
            state.store(if yes { YES } else { NO }, Ordering::Relaxed);
            yes
        }
    }
}

/// Marks the calling thread as on the hot path (or off it, [`HotPath::pause`]) until the
/// guard drops, which restores the mark it found: guards nest.
///
/// The guard is neither `Send` nor `Sync`: it restores the mark of the thread that made it.
/// Drop guards in the reverse order of their creation (as scopes do).
///
/// # Example
/// ```
/// use move_dispatcher::alloc::{thread_hot_path_stats, HotPath};
///
/// let before = thread_hot_path_stats();
/// {
///     let _hot = HotPath::enter();
///     assert!(HotPath::is_active());
///     let sum: u64 = [1, 2, 3].iter().sum(); // no heap: nothing counted
///     assert_eq!(sum, 6);
///     {
///         let _cold = HotPath::pause(); // may allocate by design: not counted
///         assert!(!HotPath::is_active());
///         drop(vec![0_u8; 64]);
///     }
/// }
/// assert!(!HotPath::is_active());
/// assert_eq!(thread_hot_path_stats(), before);
/// ```
#[derive(Debug)]
#[must_use = "the mark is lifted when the guard drops"]
pub struct HotPath {
    prev: u8,
    _not_send: PhantomData<*const ()>,
}

impl HotPath {
    /// Counts the calling thread's heap operations until the guard drops.
    #[inline]
    pub fn enter() -> Self {
        Self::set(COUNT)
    }

    /// Stops counting the calling thread's heap operations until the guard drops (inside a
    /// hot section, around work that may allocate by design).
    #[inline]
    pub fn pause() -> Self {
        Self::set(OFF)
    }

    /// Whether the calling thread is on the hot path.
    #[inline]
    pub fn is_active() -> bool {
        MODE.try_with(Cell::get).unwrap_or(OFF) == COUNT
    }

    #[inline]
    fn set(mode: u8) -> Self {
        Self {
            prev: MODE.try_with(|m| m.replace(mode)).unwrap_or(OFF),
            _not_send: PhantomData,
        }
    }
}

impl Drop for HotPath {
    #[inline]
    fn drop(&mut self) {
        let _ = MODE.try_with(|m| m.set(self.prev));
    }
}

/// A global allocator that counts the heap operations made on the hot path ([`HotPath`])
/// and forwards every call to `A`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counting<A> {
    inner: A,
}

impl<A> Counting<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

#[derive(Clone, Copy)]
enum Op {
    Alloc(usize),
    Dealloc,
}

/// The whole cost with the mark off: one thread-local read and a branch.
#[inline]
fn note(op: Op) {
    let mode = MODE.try_with(Cell::get).unwrap_or(OFF);
    if mode != OFF {
        note_marked(mode, op);
    }
}

#[cold]
#[inline(never)]
fn note_marked(mode: u8, op: Op) {
    if mode == PROBE {
        let _ = PROBED.try_with(|p| p.set(p.get() + 1));
        return;
    }
    let _ = THREAD.try_with(|t| {
        let mut s = t.get();
        match op {
            Op::Alloc(bytes) => {
                s.allocations += 1;
                s.bytes += bytes as u64;
            }
            Op::Dealloc => s.deallocations += 1,
        }
        t.set(s);
    });
    match op {
        Op::Alloc(bytes) => {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Op::Dealloc => {
            DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards its arguments unchanged to `A`, so the memory returned and
// freed is exactly `A`'s, under the contract `A` already upholds; counting touches only
// `const`-initialised thread-locals without destructors and atomics, so it never allocates
// (no re-entry) and never panics or unwinds out of the allocator.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(Op::Alloc(layout.size()));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(Op::Alloc(layout.size()));
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract for `layout`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(Op::Dealloc);
        // SAFETY: the caller guarantees `ptr` came from this allocator (so from `inner`, to
        // which every allocation was forwarded) with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(Op::Alloc(new_size));
        // SAFETY: as in `dealloc` for `ptr` and `layout`; the caller upholds `realloc`'s
        // contract for `new_size`.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::sync::{Arc, Barrier};

    /// The counting tests need `Counting` as the global allocator, which the unit-test
    /// build installs.
    fn counting() -> bool {
        assert!(
            counting_installed(),
            "alloc.rs installs Counting in this build"
        );
        true
    }

    fn delta(before: HotPathStats) -> HotPathStats {
        let now = thread_hot_path_stats();
        HotPathStats {
            allocations: now.allocations - before.allocations,
            bytes: now.bytes - before.bytes,
            deallocations: now.deallocations - before.deallocations,
        }
    }

    #[test]
    fn installed_in_the_test_build() {
        assert!(counting_installed());
        assert_eq!(counting_installed(), counting_installed());
    }

    #[test]
    fn counts_inside_the_guard_only() {
        if !counting() {
            return;
        }
        let before = thread_hot_path_stats();
        let global = hot_path_stats();
        drop(black_box(Vec::<u8>::with_capacity(100)));
        assert_eq!(delta(before), HotPathStats::default(), "outside the guard");
        {
            let _hot = HotPath::enter();
            drop(black_box(Vec::<u8>::with_capacity(100)));
            let zeroed = black_box(vec![0_u64; 16]);
            drop(zeroed);
        }
        assert_eq!(
            delta(before),
            HotPathStats {
                allocations: 2,
                bytes: 228,
                deallocations: 2
            }
        );
        // Other tests never enter the hot path, but they might once the dispatcher does.
        let g = hot_path_stats();
        assert!(g.allocations >= global.allocations + 2 && g.bytes >= global.bytes + 228);
        assert!(hot_path_allocations() >= g.allocations);
        drop(black_box(Box::new(1_u32)));
        assert_eq!(delta(before).allocations, 2, "after the guard");
    }

    #[test]
    fn realloc_counts_its_new_size() {
        if !counting() {
            return;
        }
        let mut v = black_box(Vec::<u8>::with_capacity(8));
        let before = thread_hot_path_stats();
        {
            let _hot = HotPath::enter();
            v.reserve_exact(1000);
            black_box(&mut v);
        }
        assert_eq!(
            delta(before),
            HotPathStats {
                allocations: 1,
                bytes: 1000,
                deallocations: 0
            }
        );
        drop(v);
        assert_eq!(delta(before).deallocations, 0);
    }

    #[test]
    fn guards_nest_and_pause() {
        if !counting() {
            return;
        }
        let alloc = || drop(black_box(Box::new([0_u8; 32])));
        let before = thread_hot_path_stats();
        assert!(!HotPath::is_active());
        {
            let _outer = HotPath::enter();
            {
                let _inner = HotPath::enter();
                alloc(); // 1
            }
            assert!(
                HotPath::is_active(),
                "the inner guard restored the outer mark"
            );
            alloc(); // 2
            {
                let _cold = HotPath::pause();
                assert!(!HotPath::is_active());
                alloc();
                {
                    let _hot_again = HotPath::enter();
                    alloc(); // 3
                }
                assert!(!HotPath::is_active());
                alloc();
            }
            assert!(HotPath::is_active());
            alloc(); // 4
        }
        assert!(!HotPath::is_active());
        alloc();
        let d = delta(before);
        assert_eq!((d.allocations, d.bytes, d.deallocations), (4, 128, 4));
    }

    /// The mark is per thread: a marked thread's allocations count, an unmarked thread's
    /// running at the same time do not, and a thread spawned from a hot path starts unmarked.
    #[test]
    fn the_mark_is_per_thread() {
        const N: u64 = 1000;
        if !counting() {
            return;
        }
        let barrier = Arc::new(Barrier::new(2));
        let global = hot_path_stats();
        let hot = {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let before = thread_hot_path_stats();
                let _hot = HotPath::enter();
                barrier.wait();
                for i in 0..N {
                    drop(black_box(vec![i; 4]));
                }
                let ours = delta(before);
                // Spawned while marked (spawning allocates, and is counted here).
                let child = std::thread::spawn(|| {
                    let marked = HotPath::is_active();
                    let before = thread_hot_path_stats();
                    drop(black_box(vec![0_u8; 10]));
                    (marked, delta(before))
                });
                (ours, child.join().unwrap())
            })
        };
        let cold = std::thread::spawn(move || {
            let before = thread_hot_path_stats();
            barrier.wait();
            for i in 0..N {
                drop(black_box(vec![i; 4]));
            }
            delta(before)
        });
        let (hot, child) = hot.join().unwrap();
        assert_eq!(
            hot,
            HotPathStats {
                allocations: N,
                bytes: N * 32,
                deallocations: N
            }
        );
        assert_eq!(child, (false, HotPathStats::default()));
        assert_eq!(cold.join().unwrap(), HotPathStats::default());
        assert!(hot_path_stats().allocations >= global.allocations + N);
    }

    /// Cost of the wrapper with the mark off, and of a guard (run:
    /// `cargo test --release --no-default-features --lib alloc::tests::counting_cost --
    /// --ignored --nocapture`).
    #[test]
    #[ignore = "timing; run in release with --ignored --nocapture"]
    fn counting_cost() {
        use std::time::Instant;
        const N: u32 = 10_000_000;
        fn per_op(t: Instant) -> f64 {
            t.elapsed().as_secs_f64() * 1e9 / f64::from(N)
        }
        fn pairs<A: GlobalAlloc>(a: &A) -> f64 {
            let layout = Layout::from_size_align(64, 8).unwrap();
            let t = Instant::now();
            for _ in 0..N {
                // SAFETY: `layout` has a non-zero size; the pointer is freed with it, once.
                unsafe {
                    let p = black_box(a.alloc(layout));
                    assert!(!p.is_null());
                    a.dealloc(p, layout);
                }
            }
            per_op(t)
        }
        let (plain, counting) = (std::alloc::System, Counting::new(std::alloc::System));
        for _ in 0..3 {
            let base = pairs(&plain);
            let off = pairs(&counting);
            let on = {
                let _hot = HotPath::enter();
                pairs(&counting)
            };
            let t = Instant::now();
            for _ in 0..N {
                drop(black_box(HotPath::enter()));
            }
            let guard = per_op(t);
            println!(
                "alloc+dealloc of 64 B: {base:.2} ns plain, {off:.2} ns counting (mark off), \
                 {on:.2} ns counting (mark on); HotPath::enter+drop {guard:.2} ns"
            );
        }
    }
}
