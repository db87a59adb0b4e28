//! The addon's global allocator and jemalloc's figures.
//!
//! jemalloc (prefixed symbols, `disable_initial_exec_tls` so that the `dlopen`ed addon can
//! use it) serves the addon's Rust heap, wrapped in the core's hot-path allocation counter
//! (`move_dispatcher::alloc::Counting`). Feature `system-alloc` (sanitizer builds) wraps the
//! system allocator instead: the sanitizers (address, valgrind) track only `malloc`/`free`.
//!
//! [`jemalloc_stats`] reads `stats.allocated`, `active`, `resident`, `mapped` and
//! `retained`, advancing jemalloc's epoch first (the figures are cached until then). It
//! answers `None` unless jemalloc serves the Rust heap, which is measured once, not assumed
//! from features: a one-byte allocation must move jemalloc's `thread.allocated` counter.

use std::sync::OnceLock;

use move_dispatcher::alloc::Counting;

#[cfg(all(
    not(feature = "system-alloc"),
    not(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm"))
))]
#[global_allocator]
static GLOBAL: Counting<tikv_jemallocator::Jemalloc> = Counting::new(tikv_jemallocator::Jemalloc);

#[cfg(any(
    feature = "system-alloc",
    target_env = "msvc",
    target_os = "freebsd",
    target_family = "wasm"
))]
#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting::new(std::alloc::System);

/// jemalloc's view of the heap, in bytes (see jemalloc's `stats.*` documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JemallocStats {
    /// Bytes allocated by the application.
    pub allocated: u64,
    /// Bytes in active pages (a multiple of the page size, `>= allocated`).
    pub active: u64,
    /// Bytes in physically resident data pages mapped by jemalloc (an upper bound).
    pub resident: u64,
    /// Bytes in active extents mapped by jemalloc.
    pub mapped: u64,
    /// Bytes in virtual memory kept for later reuse, not returned to the OS.
    pub retained: u64,
}

/// jemalloc's statistics, with the epoch advanced first; `None` when jemalloc is not the
/// Rust heap's allocator or a statistic cannot be read. Advancing the epoch merges
/// jemalloc's per-arena statistics under jemalloc's own locks: a reporting call, never on
/// the hot path.
pub fn jemalloc_stats() -> Option<JemallocStats> {
    static GLOBAL_IS_JEMALLOC: OnceLock<bool> = OnceLock::new();
    if !*GLOBAL_IS_JEMALLOC.get_or_init(jemalloc::probe) {
        return None;
    }
    jemalloc::stats()
}

#[cfg(not(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm")))]
mod jemalloc {
    use super::JemallocStats;
    use tikv_jemalloc_ctl::{epoch, stats, thread};

    pub(super) fn probe() -> bool {
        let Ok(allocated) = thread::allocatedp::read() else {
            return false;
        };
        let before = allocated.get();
        drop(std::hint::black_box(Box::new(0_u8)));
        allocated.get() != before
    }

    pub(super) fn stats() -> Option<JemallocStats> {
        epoch::advance().ok()?;
        Some(JemallocStats {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
            mapped: stats::mapped::read().ok()? as u64,
            retained: stats::retained::read().ok()? as u64,
        })
    }
}

#[cfg(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm"))]
mod jemalloc {
    use super::JemallocStats;

    pub(super) fn probe() -> bool {
        false
    }

    pub(super) fn stats() -> Option<JemallocStats> {
        None
    }
}
