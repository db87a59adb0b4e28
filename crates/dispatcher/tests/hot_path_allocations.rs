//! The hot path (`dispatch` on the JavaScript thread, validation on the workers) makes no
//! heap allocation per move in steady state: measured by the counting allocator, across
//! 1,000,000 moves after a warm-up. Its own test binary, so that no other test's
//! deliberate allocations share the counter.

use std::time::Duration;

use move_dispatcher::alloc::{counting_installed, hot_path_allocations};
use move_dispatcher::auth;
use move_dispatcher::core::{Config, Core, View};
use move_dispatcher::frame::{self, Header};
use move_dispatcher::outbox::Delivery;
use move_dispatcher::verdict::Verdict;

// With the `napi` feature the library installs this same counting allocator itself.
#[cfg(all(
    not(feature = "napi"),
    not(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm"))
))]
#[global_allocator]
static GLOBAL: move_dispatcher::alloc::Counting<tikv_jemallocator::Jemalloc> =
    move_dispatcher::alloc::Counting::new(tikv_jemallocator::Jemalloc);

#[cfg(all(
    not(feature = "napi"),
    any(target_env = "msvc", target_os = "freebsd", target_family = "wasm")
))]
#[global_allocator]
static GLOBAL: move_dispatcher::alloc::Counting<std::alloc::System> =
    move_dispatcher::alloc::Counting::new(std::alloc::System);

const ROOMS: u32 = 100;
const BATCH: u32 = 10_000;

fn frames(round_seq: u32) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let h = Header {
                flags: 0,
                room: i % ROOMS,
                player: 1,
                seq: round_seq + i / ROOMS,
                tick: 0,
                kind: 1,
                len: 64,
            };
            let mut f = frame::encode_unsigned(&h, &[7; 64]).unwrap();
            auth::sign(&mut f, None);
            f
        })
        .collect()
}

fn flush(c: &mut Core, token: u64) {
    c.request_flush(token);
    for _ in 0..20_000 {
        if c.poll().contains(&Delivery::Flushed { token }) {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("flush {token} never answered");
}

#[test]
fn one_million_moves_allocate_nothing_on_the_hot_path() {
    assert!(
        counting_installed(),
        "the counting allocator must be the global allocator here"
    );
    let mut c = Core::new(Config::default(), Box::new(|| {})).unwrap();
    for r in 0..ROOMS {
        c.open_room(r, false, false, None);
        c.join(r, 1, None);
    }
    // Pre-encode every round (allocations outside the hot path).
    let rounds: Vec<Vec<Vec<u8>>> = (0..110).map(|k| frames(1 + k * (BATCH / ROOMS))).collect();
    let mut token = 0;
    let mut run = |c: &mut Core, round: &[Vec<u8>]| {
        for f in round {
            assert_eq!(c.dispatch(f, Some(1)), Verdict::Accepted);
        }
        token += 1;
        flush(c, token);
        for r in 0..ROOMS {
            let (b, _) = c.drain(r).unwrap();
            assert_eq!(b.count, BATCH / ROOMS);
            assert!(b.rejections.is_empty());
        }
    };
    // Warm-up: vectors and maps reach their steady sizes.
    for round in &rounds[..10] {
        run(&mut c, round);
    }
    let before = hot_path_allocations();
    // The counter sees this path: growing the rooms' stamp vectors during warm-up counted.
    assert!(before > 0, "warm-up allocations were not counted");
    for round in &rounds[10..] {
        run(&mut c, round);
    }
    let during = hot_path_allocations() - before;
    assert_eq!(during, 0, "hot-path allocations across 1,000,000 moves");
    let lat = c.latencies(View::Stats, false);
    assert_eq!(lat.validated.count(), 1_100_000);
    assert_eq!(lat.delivered.count(), 1_100_000);
    assert_eq!(lat.batch_size.count(), 110 * u64::from(ROOMS));
    assert!(lat.arena_alloc.count() >= 1_100_000 / 64);
    c.shutdown();
}
