//! What waits for JavaScript: push deliveries, flush answers, overload events and shard
//! failures, in order.
//!
//! Workers append; the JavaScript thread takes everything at once in `poll()`. A wake-up
//! (the binding's libuv async send) is sent only when the outbox goes from "seen" to
//! "has news", so there is at most one call in flight however many batches arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::delivery::Moves;

/// Something JavaScript must see.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A shard's push delivery (many rooms).
    Moves(Moves),
    /// Every shard has answered flush `token`.
    Flushed { token: u64 },
    /// A shard queue or a room crossed its overload mark (`recovered: false`), or fell back
    /// to half of it (`recovered: true`).
    Overload(OverloadEvent),
    /// A shard's worker panicked (a bug of this crate): the shard is failed (see
    /// [`crate::shard`]); `message` is the panic's.
    Failed { shard: u32, message: String },
    /// A native ingress connection opened or closed.
    Connection(ConnectionEvent),
}

/// A native ingress connection opened (`reason` 0) or closed (with its reason), as
/// `crate::ingress` numbers transports and reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub opened: bool,
    /// The connection's id: unique in the process, the same on its open and close events.
    pub id: u64,
    pub room: u32,
    pub player: u32,
    pub transport: u8,
    pub reason: u8,
    /// The client's address, if known.
    pub peer: Option<std::net::SocketAddr>,
}

/// What crossed its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A shard's queue; depth in moves.
    Shard(u32),
    /// A room's undelivered bytes.
    Room(u32),
}

/// An overload or recovery notification for the control plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverloadEvent {
    pub subject: Subject,
    pub recovered: bool,
    /// Queue depth (moves) or room bytes when detected.
    pub depth: u64,
    /// The overload mark it is compared with.
    pub threshold: u64,
    /// p99 of dispatch → validated (shard) or dispatch → delivered (room) since the
    /// subject's previous event, in nanoseconds; 0 if nothing was recorded.
    pub p99_wait_ns: u64,
}

/// How the outbox tells JavaScript to poll.
pub type Waker = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    items: Vec<Delivery>,
    /// Flush token -> shards yet to answer.
    flushes: HashMap<u64, usize>,
}

/// The shared outbox of one dispatcher.
pub struct Outbox {
    inner: Mutex<Inner>,
    wake_pending: AtomicBool,
    /// The JavaScript thread has news for itself (an overload mark crossed inside
    /// `dispatch`, where calling the waker would allocate): a worker sends the wake-up.
    wake_requested: AtomicBool,
    enabled: AtomicBool,
    /// `None` once dropped at shutdown (it holds a JavaScript function).
    waker: Mutex<Option<Waker>>,
}

impl Outbox {
    /// An outbox that calls `waker` when it has news.
    pub fn new(waker: Waker) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            wake_pending: AtomicBool::new(false),
            wake_requested: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            waker: Mutex::new(Some(waker)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops calling the waker (the JavaScript environment is going away).
    pub fn disable_waker(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    /// Drops the waker (and what it holds of the JavaScript side); later news is only polled.
    pub fn drop_waker(&self) {
        self.disable_waker();
        drop(
            self.waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    fn wake(&self) {
        if self.enabled.load(Ordering::SeqCst) && !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(waker) = self
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                waker();
            }
        }
    }

    /// Asks for a wake-up without sending it (no allocation, no lock): the next worker turn
    /// sends it ([`Outbox::serve_wake_request`]). Poke a worker after calling this.
    pub fn request_wake(&self) {
        self.wake_requested.store(true, Ordering::Release);
    }

    /// Sends the wake-up [`Outbox::request_wake`] asked for, if any (workers, every turn).
    pub fn serve_wake_request(&self) {
        if self.wake_requested.load(Ordering::Relaxed)
            && self.wake_requested.swap(false, Ordering::AcqRel)
        {
            self.wake();
        }
    }

    /// Registers a flush that `shards` shards will answer.
    pub fn expect_flush(&self, token: u64, shards: usize) {
        self.lock().flushes.insert(token, shards);
    }

    /// Appends a push delivery, if any, then the answers of `flushed` tokens.
    pub fn publish(&self, moves: Option<Moves>, flushed: &[u64]) {
        if moves.is_none() && flushed.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            inner.items.extend(moves.map(Delivery::Moves));
            for &token in flushed {
                let done = match inner.flushes.get_mut(&token) {
                    Some(left) => {
                        *left = left.saturating_sub(1);
                        *left == 0
                    }
                    None => true,
                };
                if done {
                    inner.flushes.remove(&token);
                    inner.items.push(Delivery::Flushed { token });
                }
            }
        }
        self.wake();
    }

    /// Appends an overload or recovery event.
    pub fn publish_event(&self, event: OverloadEvent) {
        self.lock().items.push(Delivery::Overload(event));
        self.wake();
    }

    /// Appends the report of a failed shard.
    pub fn publish_failure(&self, shard: u32, message: String) {
        self.lock().items.push(Delivery::Failed { shard, message });
        self.wake();
    }

    /// Queues a connection event; events published close together reach JavaScript in one
    /// poll (the wake-up is coalesced until JavaScript takes them).
    pub fn publish_connection(&self, event: ConnectionEvent) {
        self.lock().items.push(Delivery::Connection(event));
        self.wake();
    }

    /// Wakes JavaScript without news (capacity was freed: retry what met `Backpressure`).
    pub fn notify(&self) {
        self.wake();
    }

    /// Everything waiting, in order.
    pub fn take(&self) -> Vec<Delivery> {
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(&mut self.lock().items)
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}
