//! The hot path (`dispatch` on the JavaScript thread, validation on the workers) makes no
//! heap allocation per move in steady state: measured by the counting allocator, across
//! 1,000,000 moves after a warm-up. Its own test binary, so that no other test's
//! deliberate allocations share the counter; inside it the measurements take turns
//! ([`SERIAL`]), since the counter is process-wide.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use move_dispatcher::alloc::{counting_installed, hot_path_allocations};
use move_dispatcher::auth;
use move_dispatcher::core::{Config, Core, View};
use move_dispatcher::frame::{self, Header};
use move_dispatcher::outbox::{Delivery, OverloadEvent, Subject};
use move_dispatcher::verdict::Verdict;

// The counting allocator the addon installs (the library itself installs none). Feature
// `system-alloc` (sanitizer builds) counts over the system allocator instead.
#[cfg(all(
    not(feature = "system-alloc"),
    not(any(target_env = "msvc", target_os = "freebsd", target_family = "wasm"))
))]
#[global_allocator]
static GLOBAL: move_dispatcher::alloc::Counting<tikv_jemallocator::Jemalloc> =
    move_dispatcher::alloc::Counting::new(tikv_jemallocator::Jemalloc);

#[cfg(any(
    feature = "system-alloc",
    target_env = "msvc",
    target_os = "freebsd",
    target_family = "wasm"
))]
#[global_allocator]
static GLOBAL: move_dispatcher::alloc::Counting<std::alloc::System> =
    move_dispatcher::alloc::Counting::new(std::alloc::System);

/// Held by each measurement: the counter counts every thread's hot path, and the test
/// harness runs this file's tests in parallel, so one test's warm-up (its workers growing
/// their vectors) would land in the other's measured window.
static SERIAL: Mutex<()> = Mutex::new(());

const ROOMS: u32 = 100;
const BATCH: u32 = 10_000;

/// One round of frames; with `corrupt`, the first frame of each room fails its tag check
/// (a rejection on the worker).
fn frames(round_seq: u32, corrupt: bool) -> Vec<Vec<u8>> {
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
            if corrupt && i < ROOMS {
                f[frame::HEADER_BYTES] ^= 1;
            }
            f
        })
        .collect()
}

fn flush(c: &mut Core, token: u64, events: &mut Vec<OverloadEvent>) {
    c.request_flush(token);
    for _ in 0..20_000 {
        let mut flushed = false;
        for d in c.poll() {
            match d {
                Delivery::Flushed { token: t } if t == token => flushed = true,
                Delivery::Overload(e) => events.push(e),
                _ => {}
            }
        }
        if flushed {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("flush {token} never answered");
}

/// Dispatches 110 rounds of 10,000 moves (10 of warm-up), flushing and draining every
/// room after each; returns the overload events seen. Asserts no hot-path allocation after
/// the warm-up.
fn million_moves(cfg: Config, corrupt: bool) -> Vec<OverloadEvent> {
    // A failed measurement poisons the lock; the other one can still run.
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        counting_installed(),
        "the counting allocator must be the global allocator here"
    );
    let mut c = Core::new(cfg, Box::new(|| {})).unwrap();
    for r in 0..ROOMS {
        c.open_room(r, false, false, None);
        c.join(r, 1, None);
    }
    // Pre-encode every round (allocations outside the hot path).
    let rounds: Vec<Vec<Vec<u8>>> = (0..110)
        .map(|k| frames(1 + k * (BATCH / ROOMS), corrupt))
        .collect();
    let per_room = BATCH / ROOMS - u32::from(corrupt);
    let mut token = 0;
    let mut events = Vec::new();
    let mut run = |c: &mut Core, round: &[Vec<u8>], events: &mut Vec<OverloadEvent>| {
        for f in round {
            assert_eq!(c.dispatch(f, Some(1)), Verdict::Accepted);
        }
        token += 1;
        flush(c, token, events);
        for r in 0..ROOMS {
            let m = c.drain(r).unwrap().expect("moves");
            assert_eq!(m.moves(), per_room);
            assert_eq!(m.rejections(), u32::from(corrupt));
            // As the addon's finalizer does once JavaScript is done with it.
            c.pool().put(m.into_bytes());
        }
        // Recoveries noticed by the drains.
        events.extend(c.poll().into_iter().filter_map(|d| match d {
            Delivery::Overload(e) => Some(e),
            _ => None,
        }));
    };
    // Warm-up: vectors and maps reach their steady sizes.
    for round in &rounds[..10] {
        run(&mut c, round, &mut events);
    }
    // The counter is live in this binary: one deliberate allocation on the hot path counts.
    let probe = hot_path_allocations();
    {
        let _hot = move_dispatcher::alloc::HotPath::enter();
        drop(std::hint::black_box(Box::new(0_u64)));
    }
    assert!(hot_path_allocations() > probe, "the counter does not count");
    let before = hot_path_allocations();
    for round in &rounds[10..] {
        run(&mut c, round, &mut events);
    }
    let during = hot_path_allocations() - before;
    assert_eq!(during, 0, "hot-path allocations across 1,000,000 moves");
    let lat = c.latencies(View::Stats, false);
    let moves = 110 * u64::from(ROOMS * per_room);
    assert_eq!(lat.validated.count(), 1_100_000);
    assert_eq!(lat.delivered.count(), moves);
    assert_eq!(lat.batch_size.count(), 110 * u64::from(ROOMS));
    assert!(lat.arena_alloc.count() >= 1_100_000 / 64);
    c.shutdown();
    events
}

#[test]
fn one_million_moves_allocate_nothing_on_the_hot_path() {
    let cfg = Config {
        overload_queue_depth: 0,
        overload_room_bytes: 0,
        ..Config::default()
    };
    assert!(million_moves(cfg, false).is_empty());
}

/// With overload marks crossed every round (the events are flagged inside `dispatch` and
/// published by `poll`/`drain`) and a rejection per room per round (the worker's rejection
/// lists come back through `recycle_rejections`), the hot path still allocates nothing.
#[test]
fn overload_events_and_rejections_allocate_nothing_on_the_hot_path() {
    let cfg = Config {
        overload_queue_depth: 1_000,
        overload_room_bytes: 4_096,
        ..Config::default()
    };
    let events = million_moves(cfg, true);
    let rooms = |recovered| {
        events
            .iter()
            .filter(|e| matches!(e.subject, Subject::Room(_)) && e.recovered == recovered)
            .count()
    };
    // Every room crosses 4 KiB every round and recovers when drained.
    assert_eq!(rooms(false), 110 * ROOMS as usize);
    assert_eq!(rooms(true), 110 * ROOMS as usize);
    assert!(events
        .iter()
        .all(|e| e.recovered || e.p99_wait_ns > 0 || e.depth >= e.threshold));
}
