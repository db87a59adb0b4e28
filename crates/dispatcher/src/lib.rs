//! move-dispatcher: the Rust data plane behind the `move-dispatcher` npm package, as a pure
//! library: no napi, no global allocator. The addon (`crates/binding`) wraps it for Node.js.
//!
//! Layers (see `docs/architecture.md`):
//! - [`frame`]: wire format v1, checked parser;
//! - [`auth`]: SHA-256 / HMAC-SHA256 tags, constant-time comparison, zeroised keys;
//! - [`window`]: anti-replay sliding window;
//! - [`arena`]: the shard's ingress ring (bump-pointer, single producer/consumer);
//! - [`inbox`]: a room's validated moves until a delivery takes them;
//! - [`delivery`]: many rooms' moves in one buffer handed to JavaScript, never written again;
//! - [`shard`]: the worker and its one loop: validation, room inboxes, push delivery, failure;
//! - [`outbox`]: deliveries waiting for JavaScript;
//! - [`core`]: the dispatcher as seen from the JavaScript thread (sync checks, controls,
//!   drains, polls), with [`config`], [`ratelimit`], [`overload`] and [`stats`];
//! - [`runtime`]: the tokio runtime the workers run on, and how it stops;
//! - [`latency`]: HDR histograms recorded without locks, snapshotted from another thread;
//! - [`alloc`]: the hot-path allocation counter (a `GlobalAlloc` wrapper a binary installs);
//! - [`clock`]: the process-wide monotonic nanosecond clock.
//!
//! # Safety
//! `unsafe` is denied crate-wide and allowed, module by module, only where it is needed:
//! [`arena`] (the ring's raw memory), [`alloc`] (the `GlobalAlloc` wrapper, an `unsafe`
//! trait), one function of [`runtime`] (`sched_setaffinity` for core pinning) and one of
//! `members` (the prefetch instruction, a hint that never faults). Every
//! `unsafe` block carries a `// SAFETY:` comment (`clippy::undocumented_unsafe_blocks` is
//! denied), and no safe public function can cause undefined behaviour: the arena frees only
//! records it handed out ([`arena::Consumer::pop`]); memory handed to JavaScript is a
//! [`delivery::Moves`] buffer that nothing writes once built.
#![deny(unsafe_code)]

pub mod alloc;
pub mod arena;
pub mod auth;
pub mod clock;
pub mod config;
pub mod core;
pub mod delivery;
pub mod frame;
pub mod inbox;
pub mod ingress;
pub mod latency;
mod members;
pub mod outbox;
pub mod overload;
pub mod ratelimit;
pub mod runtime;
pub mod shard;
pub mod stats;
pub mod verdict;
pub mod window;

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
