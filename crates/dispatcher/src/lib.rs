//! move-dispatcher: the Rust data plane behind the `move-dispatcher` npm package.
//!
//! Layers (see `docs/architecture.md`):
//! - [`frame`]: wire format v1, checked parser;
//! - [`auth`]: SHA-256 / HMAC-SHA256 tags, constant-time comparison;
//! - [`window`]: anti-replay sliding window;
//! - [`arena`]: the shard's ingress ring (bump-pointer, single producer/consumer);
//! - [`inbox`]: room memory that JavaScript reads in place;
//! - [`shard`]: the worker: validation, room inboxes, push delivery;
//! - [`outbox`]: deliveries waiting for JavaScript;
//! - [`core`]: the dispatcher as seen from the JavaScript thread, and its tokio runtime;
//! - [`latency`]: HDR histograms recorded without locks, snapshotted from another thread;
//! - [`alloc`]: jemalloc figures and the hot-path allocation counter;
//! - [`clock`]: the process-wide monotonic nanosecond clock;
//! - `binding` (feature `napi`): the napi-rs class over [`core::Core`].
//!
//! Only [`arena`] and [`inbox`] (and the memory bridge in `binding`, and the `GlobalAlloc`
//! wrapper in [`alloc`]) contain `unsafe`.

#[cfg(all(feature = "napi", not(test)))]
#[macro_use]
extern crate napi_derive;

#[cfg(all(
    feature = "napi",
    not(feature = "system-alloc"),
    not(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm"))
))]
#[global_allocator]
static GLOBAL: alloc::Counting<tikv_jemallocator::Jemalloc> =
    alloc::Counting::new(tikv_jemallocator::Jemalloc);

// Also with feature `system-alloc` (sanitizer builds: ASan and valgrind track malloc/free only).
#[cfg(all(
    feature = "napi",
    any(
        feature = "system-alloc",
        target_env = "msvc",
        target_os = "freebsd",
        target_family = "wasm"
    )
))]
#[global_allocator]
static GLOBAL: alloc::Counting<std::alloc::System> = alloc::Counting::new(std::alloc::System);

pub mod alloc;
pub mod arena;
pub mod auth;
pub mod clock;
pub mod core;
pub mod frame;
pub mod inbox;
pub mod latency;
pub mod outbox;
pub mod shard;
pub mod verdict;
pub mod window;

// The binding registers its exports through napi's module constructor, which test builds
// do not run; it is linted and built with the library itself.
#[cfg(all(feature = "napi", not(test)))]
mod binding;

// Benchmark helpers (`bench*` exports for `npm run bench`), built and linted like the binding.
#[cfg(all(feature = "napi", not(test)))]
mod bench;

#[cfg(test)]
mod testutil;

/// Hasher for `u32` ids: one multiply (Fibonacci hashing). The maps it serves hold only
/// ids the server itself registered (`openRoom`, `join`); a client can choose the ids it
/// looks up but cannot insert colliding keys, so a keyed hash (`SipHash`) would buy
/// nothing here but latency on every dispatch.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Builds [`IdHasher`]s.
pub type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;
