//! Overload marks: a shard whose queue, or a room whose undelivered bytes, reach their
//! mark is reported (`onOverload`), and again when it falls back to half (`onRecovered`).
//!
//! `dispatch` only flags a crossing (publishing allocates, and `dispatch` must not); the
//! events are published by the next poll, drain or flush ([`Core::overload_events`]).

use std::sync::atomic::Ordering;

use crate::core::{Core, Room, ShardHandle};
use crate::outbox::{Outbox, OverloadEvent, Subject};
use crate::shard::Shared;
use crate::stats::View;

impl Core {
    /// Publishes the overload events flagged inside `dispatch` (with the p99 wait since the
    /// subject's previous event), then the recoveries: a shard whose queue fell to half its
    /// mark, a room whose undelivered bytes did (or that was forgotten). Runs on drain,
    /// poll and flush.
    pub(crate) fn overload_events(&mut self) {
        let mark = self.cfg.overload_queue_depth;
        for (i, s) in self.shards.iter_mut().enumerate() {
            let subject = Subject::Shard(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(depth) = s.raise_pending.take() {
                let p99_wait_ns =
                    s.validated[View::Overload as usize].value_at_quantile(0.99, true);
                self.outbox.publish_event(OverloadEvent {
                    subject,
                    recovered: false,
                    depth,
                    threshold: mark,
                    p99_wait_ns,
                });
            }
            if s.overloaded {
                s.consumed_cache = s.shared.consumed.0.load(Ordering::Acquire);
                let depth = s.pushed - s.consumed_cache;
                if depth <= mark / 2 {
                    s.overloaded = false;
                    let p99_wait_ns =
                        s.validated[View::Overload as usize].value_at_quantile(0.99, true);
                    self.outbox.publish_event(OverloadEvent {
                        subject,
                        recovered: true,
                        depth,
                        threshold: mark,
                        p99_wait_ns,
                    });
                }
            }
        }
        let threshold = self.cfg.overload_room_bytes;
        let mut k = 0;
        while k < self.overloaded_rooms.len() {
            let (id, pending) = self.overloaded_rooms[k];
            let room = self.rooms.get_mut(id);
            let bytes = room.as_ref().map_or(0, |r| r.inbox.reserved());
            let p99 = |room: Option<&mut Room>| {
                room.and_then(|r| r.waits.as_deref_mut()).map_or(0, |w| {
                    let p = w.value_at_quantile(0.99);
                    w.clear();
                    p
                })
            };
            let event = |recovered, depth| OverloadEvent {
                subject: Subject::Room(id),
                recovered,
                depth,
                threshold: threshold as u64,
                p99_wait_ns: 0,
            };
            if let Some(depth) = pending {
                self.overloaded_rooms[k].1 = None;
                self.outbox.publish_event(OverloadEvent {
                    p99_wait_ns: p99(room),
                    ..event(false, depth)
                });
                continue; // checked for recovery on the next pass of the loop
            }
            if bytes > threshold / 2 {
                k += 1;
                continue;
            }
            self.overloaded_rooms.swap_remove(k);
            if let Some(r) = room.as_deref() {
                debug_assert!(r.overloaded);
            }
            let mut room = room;
            if let Some(r) = room.as_deref_mut() {
                r.overloaded = false;
            }
            self.outbox.publish_event(OverloadEvent {
                p99_wait_ns: p99(room),
                ..event(true, bytes as u64)
            });
        }
    }
}

/// Flags `shard` overloaded when its (fresh) depth reaches `mark` (0 = off) and asks for a
/// wake-up, so that JavaScript polls and the event is published. Allocates nothing.
pub(crate) fn mark_shard(shard: &mut ShardHandle, mark: u64, outbox: &Outbox) {
    if mark == 0 || shard.overloaded {
        return;
    }
    shard.consumed_cache = shard.shared.consumed.0.load(Ordering::Acquire);
    let depth = shard.pushed - shard.consumed_cache;
    if depth >= mark {
        shard.overloaded = true;
        shard.raise_pending = Some(depth);
        outbox.request_wake();
        shard.shared.poke();
    }
}

/// Flags `room` overloaded when its undelivered bytes reach `mark` (0 = off), like
/// [`mark_shard`]. `list` has spare capacity for it (see `Core::overloaded_rooms`).
/// Inlined: it runs for every move accepted (and every one refused for backpressure), and
/// with no mark (the default) it is one test.
#[expect(
    clippy::inline_always,
    reason = "measured: left out of line (as `#[inline]` left it) the call cost 23 instructions \
              per move of dispatchStream (callgrind, examples/stream_ir)"
)]
#[inline(always)]
pub(crate) fn mark_room(
    room: &mut Room,
    id: u32,
    mark: usize,
    list: &mut Vec<(u32, Option<u64>)>,
    outbox: &Outbox,
    shared: &Shared,
) {
    if mark == 0 || room.overloaded {
        return;
    }
    let bytes = room.inbox.reserved();
    if bytes >= mark {
        room.overloaded = true;
        debug_assert!(list.len() < list.capacity(), "no spare capacity");
        list.push((id, Some(bytes as u64)));
        outbox.request_wake();
        shared.poke();
    }
}
