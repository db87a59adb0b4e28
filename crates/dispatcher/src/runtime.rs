//! The tokio runtime the shard workers run on, and how it stops.
//!
//! # Shutdown
//! [`Stopper::stop`] tells every worker to stop and joins the runtime's threads; it blocks
//! for as long as the workers take to finish their current step (`Dispatcher.close` calls
//! it after a flush, when they are idle; an environment cleanup hook calls it so that no
//! worker outlives the JavaScript environment it wakes). [`Stopper::stop_in_background`]
//! never blocks the calling thread: it drops the wake-up callback (whatever it holds of
//! the JavaScript side) on the calling thread and shuts the runtime down on a thread of its
//! own, which [`join_retired`] waits for. Finalizers use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::outbox::Outbox;
use crate::shard::{lock_worker, Shared, Worker};

/// How long a stop waits for the workers' threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Threads shutting down runtimes stopped in the background, until [`join_retired`].
static RETIRED: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// The runtime and the means to stop it; shared with the environment cleanup hook.
pub struct Stopper {
    /// `None` once stopped, and for a core whose workers run inline.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    stopped: AtomicBool,
    shards: Vec<Arc<Shared>>,
    outbox: Arc<Outbox>,
}

impl Stopper {
    pub(crate) fn new(
        runtime: Option<tokio::runtime::Runtime>,
        shards: Vec<Arc<Shared>>,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            runtime: Mutex::new(runtime),
            stopped: AtomicBool::new(false),
            shards,
            outbox,
        }
    }

    /// Marks the workers stopped and takes the runtime (once).
    fn signal(&self) -> Option<tokio::runtime::Runtime> {
        self.stopped.store(true, Ordering::SeqCst);
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        for s in &self.shards {
            s.paused.store(false, Ordering::SeqCst);
            s.stop.store(true, Ordering::SeqCst);
            s.poke();
        }
        Some(runtime)
    }

    /// Stops the workers and joins their threads (tasks parked at that moment are dropped
    /// with whatever they still had queued). `silent`: do not wake JavaScript any more (its
    /// environment is going away).
    pub fn stop(&self, silent: bool) {
        if silent {
            self.outbox.disable_waker();
        }
        if let Some(runtime) = self.signal() {
            runtime.shutdown_timeout(STOP_TIMEOUT);
        }
    }

    /// Stops the workers without blocking the calling thread: the wake-up callback is
    /// dropped here, the runtime's threads are joined on a thread of their own
    /// ([`join_retired`] waits for it).
    pub fn stop_in_background(&self) {
        self.outbox.drop_waker();
        let Some(runtime) = self.signal() else { return };
        let mut retired = RETIRED.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|t| !t.is_finished());
        // The closure owns the runtime; if the thread cannot start, the runtime comes back
        // through the error only as part of the closure, so it is stopped without joining.
        let (tx, rx) = std::sync::mpsc::channel::<tokio::runtime::Runtime>();
        let spawned = std::thread::Builder::new()
            .name("move-disp-stop".to_owned())
            .spawn(move || {
                if let Ok(rt) = rx.recv() {
                    rt.shutdown_timeout(STOP_TIMEOUT);
                }
            });
        match spawned {
            Ok(thread) => {
                if let Err(back) = tx.send(runtime) {
                    back.0.shutdown_background();
                }
                retired.push(thread);
            }
            Err(_) => runtime.shutdown_background(),
        }
    }

    /// A handle to the runtime (for native ingress), unless stopped or inline.
    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rt| rt.handle().clone())
    }

    /// Whether the workers have been stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// Waits until every runtime stopped by [`Stopper::stop_in_background`] has joined its
/// threads (an environment cleanup hook calls it, so no worker outlives the environment).
pub fn join_retired() {
    let threads = std::mem::take(&mut *RETIRED.lock().unwrap_or_else(PoisonError::into_inner));
    for t in threads {
        let _ = t.join();
    }
}

/// The shards whose push moves native ingress left for a runtime thread's park
/// ([`crate::shard::Policy::park_delivery`]): each thread about to park delivers them, so a
/// burst of reads costs JavaScript one wake-up, not one per read. No thread parks while it
/// has ready work, so nothing waits longer than that work (and at most `hold_ns`: ingress
/// delivers at once past it).
#[derive(Default)]
pub(crate) struct ParkDeliveries {
    shards: OnceLock<Vec<ShardWorker>>,
}

/// A shard's shared state and its worker.
pub(crate) type ShardWorker = (Arc<Shared>, Arc<Mutex<Worker>>);

impl ParkDeliveries {
    /// The workers, once built (before any connection can be read).
    pub(crate) fn set(&self, shards: Vec<ShardWorker>) {
        let _ = self.shards.set(shards);
    }

    pub(crate) fn run(&self) {
        // Pairs with `Shared::release_to_park`'s fence: this thread's last unlock of a worker
        // is ordered before the loads below, so a release that found the lock held is seen.
        std::sync::atomic::fence(Ordering::SeqCst);
        for (shared, worker) in self.shards.get().map_or(&[][..], Vec::as_slice) {
            if shared.park_due.load(Ordering::Relaxed)
                && shared.park_due.swap(false, Ordering::AcqRel)
            {
                lock_worker(worker).deliver_at_park();
            }
        }
    }
}

/// A multi-thread runtime as `cfg` sets it: worker threads, blocking pool, thread names,
/// core pinning; its threads deliver what `park` holds before they park.
pub(crate) fn build(
    cfg: &Config,
    park: Arc<ParkDeliveries>,
) -> Result<tokio::runtime::Runtime, ConfigError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // I/O and timers: native ingress (`crate::ingress`) runs its sockets on this runtime.
    builder
        .on_thread_park(move || park.run())
        .enable_io()
        .enable_time()
        .worker_threads(cfg.worker_threads)
        .max_blocking_threads(cfg.max_blocking_threads)
        .thread_name(cfg.thread_name.clone());
    if let Some(cores) = cfg.pin_cores.clone().filter(|c| !c.is_empty()) {
        let next = Arc::new(AtomicUsize::new(0));
        builder.on_thread_start(move || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            pin_current_thread(cores[i % cores.len()]);
        });
    }
    builder.build().map_err(|e| ConfigError {
        field: "workerThreads",
        message: format!("the runtime could not start: {e}"),
    })
}

/// Pins the calling thread to `core` (Linux); a no-op elsewhere or if the OS refuses.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "sched_setaffinity: std has no thread-affinity API"
)]
fn pin_current_thread(core: usize) {
    if core >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is valid; CPU_SET only
    // writes inside it for `core < CPU_SETSIZE` (checked above); sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_core: usize) {}
