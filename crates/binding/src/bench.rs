//! Benchmark helpers (feature `bench`, never in the published addon): timing loops over the
//! core's building blocks, exported to JavaScript for `bench/micro.ts` (`npm run bench`).
//! They are not part of the dispatcher's API: every export is named `bench*`, allocates
//! freely outside its timed region, and returns what it measured.
//!
//! Timings use [`std::time::Instant`] (`clock_gettime(CLOCK_MONOTONIC)` through the vDSO).
//! Distributions time every operation on its own, so each sample includes one clock read;
//! the same loop with nothing between the two reads is returned as `clockFloorNs` so the
//! reader can tell the operation from the ruler.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use napi::bindgen_prelude::*;

use move_dispatcher::arena;
use move_dispatcher::auth::{self, PlayerKey};
use move_dispatcher::core::{Config, Core};
use move_dispatcher::frame::{self, Header, FLAG_HMAC, FRAME_OVERHEAD};
use move_dispatcher::verdict::Verdict;

/// A throughput measurement: `iters` operations in `totalNs`.
#[napi(object)]
pub struct BenchRate {
    /// Operations timed.
    pub iters: f64,
    /// Wall time of the whole loop, nanoseconds.
    pub total_ns: f64,
    /// `totalNs / iters`.
    pub ns_per_op: f64,
    /// Operations that did not do what was asked (a tag that failed, a move not accepted):
    /// 0 in a valid measurement.
    pub failures: f64,
}

/// A latency distribution of individually timed operations, nanoseconds (HDR histogram,
/// 3 significant digits). Each sample includes one clock read; `clockFloorNs` is the p50 of
/// an empty timed region measured the same way, just before.
#[napi(object)]
pub struct BenchDistribution {
    pub samples: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub clock_floor_ns: f64,
    /// p99.9 of the empty timed region.
    pub clock_floor_p999_ns: f64,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds far below 2^53"
)]
fn num(n: u64) -> f64 {
    n as f64
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits: `new_with_bounds` only fails for bad bounds.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// p50 and p99.9 of an empty timed region (two consecutive clock reads).
fn clock_floor() -> (u64, u64) {
    let mut h = histogram();
    for _ in 0..200_000 {
        let t = Instant::now();
        let e = t.elapsed();
        h.saturating_record(nanos(e).max(1));
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.999))
}

fn distribution(h: &Histogram<u64>, floor: (u64, u64)) -> BenchDistribution {
    BenchDistribution {
        samples: num(h.len()),
        p50: num(h.value_at_quantile(0.5)),
        p90: num(h.value_at_quantile(0.9)),
        p99: num(h.value_at_quantile(0.99)),
        p999: num(h.value_at_quantile(0.999)),
        max: num(h.max()),
        mean: h.mean(),
        clock_floor_ns: num(floor.0),
        clock_floor_p999_ns: num(floor.1),
    }
}

fn rate(iters: u64, total: Duration, failures: u64) -> BenchRate {
    let total_ns = num(nanos(total));
    BenchRate {
        iters: num(iters),
        total_ns,
        ns_per_op: total_ns / num(iters.max(1)),
        failures: num(failures),
    }
}

/// A signed frame of exactly `frame_len` bytes (at least the 56-byte overhead).
fn signed_frame(frame_len: u32, key: Option<&PlayerKey>, seq: u32) -> Result<Vec<u8>> {
    let payload = (frame_len as usize)
        .checked_sub(FRAME_OVERHEAD)
        .ok_or_else(|| {
            Error::new(
                Status::InvalidArg,
                format!("frameLen must be at least {FRAME_OVERHEAD}, got {frame_len}"),
            )
        })?;
    let h = Header {
        flags: if key.is_some() { FLAG_HMAC } else { 0 },
        room: 1,
        player: 1,
        seq,
        tick: 0,
        kind: 1,
        len: u16::try_from(payload).map_err(|_| {
            Error::new(
                Status::InvalidArg,
                format!("frameLen {frame_len} exceeds the wire format"),
            )
        })?,
    };
    let body: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
    let mut f = frame::encode_unsigned(&h, &body)
        .map_err(|e| Error::new(Status::InvalidArg, format!("{e:?}")))?;
    auth::sign(&mut f, key);
    Ok(f)
}

fn verify_loop(frame: &[u8], key: Option<&PlayerKey>, iters: u32) -> BenchRate {
    // Warm caches and branch predictors first.
    for _ in 0..iters.min(10_000) {
        black_box(auth::verify(black_box(frame), key));
    }
    let mut failures = 0;
    let t = Instant::now();
    for _ in 0..iters {
        if !auth::verify(black_box(frame), black_box(key)) {
            failures += 1;
        }
    }
    rate(u64::from(iters), t.elapsed(), failures)
}

/// Benchmark helper: verifies one SHA-256 frame of `frameLen` bytes `iters` times, as a shard
/// worker does (SHA-256 of bytes `0 .. 24 + len`, constant-time comparison with the tag).
#[napi(catch_unwind)]
pub fn bench_sha256(frame_len: u32, iters: u32) -> Result<BenchRate> {
    let frame = signed_frame(frame_len, None, 1)?;
    Ok(verify_loop(&frame, None, iters))
}

/// Benchmark helper: verifies one HMAC-SHA256 frame of `frameLen` bytes `iters` times with a
/// 32-byte player key (the keyed state is precomputed at `join`, as in the dispatcher).
#[napi(catch_unwind)]
pub fn bench_hmac(frame_len: u32, iters: u32) -> Result<BenchRate> {
    let key = PlayerKey::new(&[0x5a; 32])
        .map_err(|e| Error::new(Status::InvalidArg, format!("{e:?}")))?;
    let frame = signed_frame(frame_len, Some(&*key), 1)?;
    Ok(verify_loop(&frame, Some(&*key), iters))
}

fn frames_of(sizes: Vec<u32>) -> Result<Vec<Vec<u8>>> {
    if sizes.is_empty() {
        return Err(Error::new(
            Status::InvalidArg,
            "sizes must not be empty".to_owned(),
        ));
    }
    sizes
        .into_iter()
        .map(|s| signed_frame(s, None, 1))
        .collect()
}

/// Benchmark helper: arena allocation latency. Pushes `iters` records (frames of the given
/// sizes, cycled) into an ingress ring of `arenaBytes` (default 8 MiB, the dispatcher's
/// default), timing each `try_push` (bump-pointer
/// reservation and the copy of the frame) on its own; the record is consumed right after,
/// untimed, on the same thread. Recording starts once the ring has wrapped twice (every page
/// touched).
#[napi(catch_unwind)]
pub fn bench_arena_alloc(
    sizes: Vec<u32>,
    iters: u32,
    arena_bytes: Option<u32>,
) -> Result<BenchDistribution> {
    let frames = frames_of(sizes)?;
    let (mut producer, mut consumer) = arena::try_ring(arena_bytes.map_or(8 << 20, |b| b as usize))
        .map_err(|e| Error::new(Status::GenericFailure, format!("{e:?}")))?;
    let floor = clock_floor();
    let mut h = histogram();
    let mut seq = 0_u64;
    let mut failures = 0_u64;
    let mut wrapped = false;
    let mut recorded = 0_u32;
    while recorded < iters {
        let f = &frames[(seq as usize) % frames.len()];
        let t = Instant::now();
        let pushed = producer.try_push(seq, 0, black_box(f));
        let e = t.elapsed();
        if pushed.is_err() {
            failures += 1;
        }
        if wrapped {
            h.saturating_record(nanos(e).max(1));
            recorded += 1;
        } else {
            wrapped = producer.wraps() >= 2;
        }
        if let Some(r) = consumer.peek() {
            black_box(r.frame);
            consumer.pop();
        }
        seq += 1;
    }
    if failures > 0 {
        return Err(Error::new(
            Status::GenericFailure,
            format!("{failures} arena pushes failed"),
        ));
    }
    Ok(distribution(&h, floor))
}

/// Benchmark helper: the same work through the global allocator (jemalloc, unless the addon
/// is built with feature `system-alloc`):
/// each timed operation allocates a buffer of the frame's size and copies the frame into it
/// (`Box<[u8]>::from`). 1,024 buffers stay alive, the oldest freed (untimed) before each
/// allocation, like records waiting in a queue.
#[napi(catch_unwind)]
pub fn bench_malloc(sizes: Vec<u32>, iters: u32) -> Result<BenchDistribution> {
    const LIVE: usize = 1024;
    let frames = frames_of(sizes)?;
    let floor = clock_floor();
    let mut hist = histogram();
    let mut live: Vec<Option<Box<[u8]>>> = (0..LIVE).map(|_| None).collect();
    let warmup = 200_000_u64;
    for i in 0..(warmup + u64::from(iters)) {
        let slot = (i as usize) % LIVE;
        drop(live[slot].take());
        let frame = &frames[(i as usize) % frames.len()];
        let start = Instant::now();
        let copy: Box<[u8]> = Box::from(black_box(&frame[..]));
        let took = start.elapsed();
        live[slot] = Some(black_box(copy));
        if i >= warmup {
            hist.saturating_record(nanos(took).max(1));
        }
    }
    Ok(distribution(&hist, floor))
}

/// Benchmark helper: hand-off through the ingress ring between two threads. The calling
/// thread pushes `moves` records of `frameLen` bytes into an 8 MiB ring (spinning while it
/// is full); a second thread takes them in order (spinning while it is empty). Returns the
/// wall time from the first push until the consumer has taken the last record.
#[napi(catch_unwind)]
pub fn bench_queue_handoff(frame_len: u32, moves: u32) -> Result<BenchRate> {
    let frame = signed_frame(frame_len, None, 1)?;
    let (mut producer, mut consumer) = arena::try_ring(8 << 20)
        .map_err(|e| Error::new(Status::GenericFailure, format!("{e:?}")))?;
    let n = u64::from(moves);
    let go = Arc::new(AtomicBool::new(false));
    let started = Arc::clone(&go);
    let reader = std::thread::Builder::new()
        .name("bench-consumer".to_owned())
        .spawn(move || {
            while !started.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut next = 0_u64;
            let mut out_of_order = 0_u64;
            while next < n {
                if let Some(r) = consumer.peek() {
                    if r.seq != next {
                        out_of_order += 1;
                    }
                    black_box(r.frame);
                    consumer.pop();
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            (Instant::now(), out_of_order)
        })
        .map_err(|e| Error::new(Status::GenericFailure, e.to_string()))?;
    let t = Instant::now();
    go.store(true, Ordering::Release);
    let mut seq = 0_u64;
    while seq < n {
        if producer.try_push(seq, 0, &frame).is_ok() {
            seq += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    let (done, failures) = reader
        .join()
        .map_err(|_| Error::new(Status::GenericFailure, "consumer panicked".to_owned()))?;
    Ok(rate(n, done.saturating_duration_since(t), failures))
}

/// Benchmark helper: `Core::dispatch` called from Rust, without N-API: the dispatcher's
/// own cost per move on the calling thread (checks, room budget, arena copy, wake-up).
/// Dispatches `moves` distinct SHA-256 frames of `frameLen` bytes to one pull room of a
/// fresh one-shard dispatcher whose worker validates them meanwhile (large enough queue,
/// arena and room budget that nothing answers `Backpressure`), then shuts it down.
#[napi(catch_unwind)]
pub fn bench_core_dispatch(frame_len: u32, moves: u32) -> Result<BenchRate> {
    let moves = moves.clamp(1, 400_000);
    let frames: Vec<Vec<u8>> = (1..=moves)
        .map(|seq| signed_frame(frame_len, None, seq))
        .collect::<Result<_>>()?;
    let cfg = Config {
        channel_capacity: 1 << 20,
        arena_bytes: 256 << 20,
        room_bytes: 64 << 20,
        ..Config::default()
    };
    let mut core = Core::new(cfg, Box::new(|| {}))
        .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
    core.open_room(1, false, false, None);
    core.join(1, 1, None);
    let mut failures = 0_u64;
    let t = Instant::now();
    for f in &frames {
        if core.dispatch(black_box(f), None) != Verdict::Accepted {
            failures += 1;
        }
    }
    let total = t.elapsed();
    core.shutdown();
    Ok(rate(u64::from(moves), total, failures))
}
