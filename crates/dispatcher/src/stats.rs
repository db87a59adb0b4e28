//! Counters and histograms: what `stats()` and `metrics()` report.

use crate::latency::{self, Observer, Recorder, Scale, Snapshot};
use crate::verdict::{Reason, Verdict};

/// Counters kept by the JavaScript thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub dispatched: u64,
    pub accepted: u64,
    pub verdicts: [u64; Verdict::COUNT],
    pub reasons: [u64; Reason::COUNT],
    pub delivered: u64,
    pub rejected: u64,
    pub batches: u64,
    /// `Backpressure` by cause: queue, arena, room budget.
    pub backpressure: [u64; 3],
}

/// Cause of a `Backpressure` verdict (index into [`Counters::backpressure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Pressure {
    Queue = 0,
    Arena = 1,
    Room = 2,
}

/// One shard's queue and arena, as seen by the producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Moves dispatched and not yet taken by the worker.
    pub queue_depth: u64,
    /// Highest queue depth seen at a dispatch (an upper bound: the producer refreshes its
    /// view of the worker's progress every [`DEPTH_REFRESH`] moves, or when the queue looks full).
    pub queue_high_water: u64,
    pub arena_capacity: usize,
    /// Bytes of the arena holding records not yet freed by the worker.
    pub arena_used: usize,
    /// Highest arena use seen at a dispatch (an upper bound, like `queue_high_water`).
    pub arena_high_water: usize,
    /// Times the arena's write position went back to its start.
    pub arena_wraps: u64,
}

/// How often (in moves) the producer refreshes its view of the worker's progress.
pub const DEPTH_REFRESH: u64 = 64;

/// A recorder with its observers (`stats`, `metrics`, overload events).
pub(crate) struct Histo {
    pub(crate) recorder: Recorder,
    pub(crate) observers: [Observer; 3],
}

impl Histo {
    pub(crate) fn new(scale: Scale) -> Self {
        let (recorder, observer) = latency::pair(scale);
        Self {
            recorder,
            observers: [observer.clone(), observer.clone(), observer],
        }
    }
}

/// Which observers a snapshot reads: `stats()` intervals or the never-reset `metrics()` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Stats = 0,
    Metrics = 1,
    /// Internal: the interval since a subject's last overload event.
    Overload = 2,
}

/// The histograms of one snapshot.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Dispatch → validated (ns), all shards merged.
    pub validated: Snapshot,
    /// Dispatch → handed to JavaScript by `drain()` or a push delivery (ns).
    pub delivered: Snapshot,
    /// Moves per delivered batch.
    pub batch_size: Snapshot,
    /// Arena allocation (the bump-pointer push of a record), ns; every 64th dispatch.
    pub arena_alloc: Snapshot,
}

/// One in how many dispatches times its arena allocation.
pub const ARENA_SAMPLE: u64 = 64;
