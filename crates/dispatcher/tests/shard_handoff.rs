//! The hand-offs between the JavaScript thread and a shard worker, driven without the tokio
//! runtime of `Core` so that Miri can run them (`scripts/sanitize.sh miri`): the arena
//! (SPSC ring), the worker's sleep/wake handshake (`Shared::wake` / `Worker::may_sleep`),
//! control operations ordered with moves, room inboxes (pull drains, push batches released
//! with a kick) and the outbox's coalesced wake-ups.
//!
//! The worker thread runs the worker loop that ships (`shard::drive`, the task the runtime
//! spawns) on a current-thread runtime, parking on `Shared::notify`, with the runtime's
//! policy (fewer spins under Miri). The JavaScript side blocks on a condition variable that only the
//! outbox's waker signals, so a lost wake-up on either side leaves both threads blocked:
//! natively the test times out, and Miri reports the deadlock at once. Under Miri every
//! schedule differs by seed (`-Zmiri-many-seeds`); its data-race detector checks the
//! plain memory each hand-off publishes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use move_dispatcher::arena;
use move_dispatcher::auth;
use move_dispatcher::delivery::{Builder, Moves, Pool};
use move_dispatcher::frame::{self, Header};
use move_dispatcher::inbox::Inbox;
use move_dispatcher::latency::{pair, Scale};
use move_dispatcher::outbox::{Delivery, Outbox};
use move_dispatcher::shard::{self, Control, Policy, Shared, Worker};

const PULL: u32 = 1;
const PUSH: u32 = 2;
const PLAYER: u32 = 7;
const SPINS: u32 = if cfg!(miri) { 4 } else { 200 };

fn frame(room: u32, seq: u32) -> Vec<u8> {
    let h = Header {
        flags: 0,
        room,
        player: PLAYER,
        seq,
        tick: 0,
        kind: 1,
        len: (seq % 24) as u16,
    };
    let mut f = frame::encode_unsigned(&h, &vec![seq as u8; (seq % 24) as usize]).unwrap();
    auth::sign(&mut f, None);
    f
}

/// `shard::drive`, on a current-thread runtime (no I/O or timer driver).
fn worker_loop(w: Arc<Mutex<Worker>>) {
    // Timers on, as the runtime's (runtime.rs): a worker of pull rooms naps on one.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(shard::drive(w));
}

/// The JavaScript side of one shard: the arena's producer, the shared state, the outbox and
/// its wake-up signal; the worker runs `shard::drive` on a thread of its own.
struct Harness {
    producer: arena::Producer,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    wake: Arc<Wake>,
    /// The lock `shard::drive` takes for each step (native ingress and releases take it too).
    worker: Arc<Mutex<Worker>>,
    thread: std::thread::JoinHandle<()>,
}

/// [`start_with`] the runtime's policy.
fn start(index: u32, ring_bytes: usize) -> Harness {
    start_with(
        index,
        ring_bytes,
        Policy {
            spins: SPINS,
            ..Policy::runtime(8)
        },
    )
}

fn start_with(index: u32, ring_bytes: usize, policy: Policy) -> Harness {
    let (producer, consumer) = arena::ring(ring_bytes);
    let shared = Arc::new(Shared::default());
    let wake = Arc::new(Wake::default());
    let outbox = {
        let wake = Arc::clone(&wake);
        Arc::new(Outbox::new(Box::new(move || wake.signal())))
    };
    let (recorder, _observer) = pair(Scale::new(1, 1 << 20, 1).unwrap());
    let worker = Arc::new(Mutex::new(
        Worker::new(
            index,
            Arc::clone(&shared),
            consumer,
            Arc::clone(&outbox),
            Arc::new(Pool::new()),
            policy,
            recorder,
        )
        .expect("the worker's staging"),
    ));
    let thread = {
        let worker = Arc::clone(&worker);
        std::thread::spawn(move || worker_loop(worker))
    };
    Harness {
        producer,
        shared,
        outbox,
        wake,
        worker,
        thread,
    }
}

/// Queues the controls that open the pull room and join its player (sequence numbers 1
/// and 2) and wakes the worker; the room's inbox.
fn open_pull_room(shared: &Shared) -> Arc<Inbox> {
    let inbox = Arc::new(Inbox::new(PULL, 1 << 16, true));
    let controls = [
        Control::OpenRoom {
            inbox: Arc::clone(&inbox),
            hmac: false,
            push: false,
            rate: None,
        },
        Control::Join {
            room: PULL,
            player: PLAYER,
            key: None,
        },
    ];
    for (seq, c) in (1..).zip(controls) {
        shared.push_control(seq, c).unwrap();
    }
    shared.wake();
    inbox
}

/// The JavaScript side's "`poll()` has news" signal: set by the outbox's waker.
#[derive(Default)]
struct Wake {
    news: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn signal(&self) {
        *self.news.lock().unwrap() = true;
        self.cv.notify_one();
    }

    /// Blocks until the waker ran (a lost wake-up blocks here for good).
    fn wait(&self) {
        let mut news = self.news.lock().unwrap();
        while !*news {
            if cfg!(miri) {
                news = self.cv.wait(news).unwrap();
            } else {
                let (n, timeout) = self.cv.wait_timeout(news, Duration::from_secs(20)).unwrap();
                assert!(!timeout.timed_out(), "no wake-up for 20 s: a lost wake-up");
                news = n;
            }
        }
        *news = false;
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: the JavaScript side's loop"
)]
fn moves_controls_and_deliveries_cross_without_lost_wakeups() {
    let n: u32 = if cfg!(miri) { 60 } else { 20_000 };
    let Harness {
        mut producer,
        shared,
        outbox,
        wake,
        thread,
        ..
    } = start(0, if cfg!(miri) { 512 } else { 4096 });

    // One sequence for controls and moves, as `Core` numbers them per shard.
    let mut seq = 0_u64;
    let mut control = |c: Control| {
        seq += 1;
        shared.push_control(seq, c).unwrap();
        shared.wake();
        seq
    };
    let pull = Arc::new(Inbox::new(PULL, 1024, true));
    let push = Arc::new(Inbox::new(PUSH, 1024, false));
    for (inbox, is_push) in [(&pull, false), (&push, true)] {
        control(Control::OpenRoom {
            inbox: Arc::clone(inbox),
            hmac: false,
            push: is_push,
            rate: None,
        });
        let room = inbox.room();
        control(Control::Join {
            room,
            player: PLAYER,
            key: None,
        });
    }
    let mut seq = seq + 1;

    // Expected next move seq per room, as the JavaScript side reads them back.
    let (mut next_pull, mut next_push) = (1_u32, 1_u32);
    // Every room of a delivery, its moves in order, as the JavaScript side reads them.
    let check = |next: &mut u32, room: u32, m: &Moves| {
        assert_eq!(m.rejections(), 0);
        for e in m.room_entries() {
            assert_eq!(e.room, room);
            let bytes = m.frames(&e);
            let mut at = 0;
            for _ in 0..e.moves {
                let f = frame(room, *next);
                assert_eq!(&bytes[at..at + f.len()], &f[..], "room {room} move {next}");
                at += f.len();
                *next += 1;
            }
            assert_eq!(at, e.frame_bytes);
        }
    };
    let mut builder = Builder::new();
    let mut take = |next_pull: &mut u32, next_push: &mut u32| {
        let mut flushed = Vec::new();
        for d in outbox.take() {
            match d {
                Delivery::Moves(m) => {
                    assert_eq!(m.shard(), Some(0));
                    check(next_push, PUSH, &m);
                    shared.release_delivery();
                }
                Delivery::Flushed { token } => flushed.push(token),
                Delivery::Overload(e) => panic!("no overload marks configured: {e:?}"),
                Delivery::Failed { message, .. } => panic!("the worker failed: {message}"),
                Delivery::Connection(e) => panic!("no ingress here: {e:?}"),
            }
        }
        builder.start(Vec::new());
        if pull.take_into(&mut builder) {
            check(next_pull, PULL, &builder.finish(None));
        } else {
            builder.abandon();
        }
        flushed
    };

    let mut sent = [0_u32; 2];
    for i in 0..2 * n {
        let (inbox, room) = if i % 2 == 0 {
            (&pull, PULL)
        } else {
            (&push, PUSH)
        };
        let k = &mut sent[(room - 1) as usize];
        let f = frame(room, *k + 1);
        // Room budget and arena space, as `Core::dispatch` checks them; when either is short,
        // make room the way JavaScript would (drain, release push batches), then retry.
        let started = std::time::Instant::now();
        for attempt in 0.. {
            if inbox.try_reserve(f.len()) {
                if producer.try_push(seq, 0, &f).is_ok() {
                    break;
                }
                inbox.unreserve(f.len());
            }
            take(&mut next_pull, &mut next_push);
            std::thread::yield_now();
            // The worker has work queued: it must make room without another wake-up.
            let stuck = if cfg!(miri) {
                attempt > 20_000
            } else {
                started.elapsed() > Duration::from_secs(20)
            };
            assert!(
                !stuck,
                "move {i}: no room freed (a worker asleep with work queued?)"
            );
        }
        *k += 1;
        seq += 1;
        shared.wake();
        if i % 50 == 49 {
            // A control between moves: a flush marker, which must come back in order.
            let token = seq;
            outbox.expect_flush(token, 1);
            shared.push_control(seq, Control::Flush { token }).unwrap();
            seq += 1;
            shared.wake();
            while !take(&mut next_pull, &mut next_push).contains(&token) {
                wake.wait();
            }
        }
    }
    let token = u64::MAX - 1;
    outbox.expect_flush(token, 1);
    shared.push_control(seq, Control::Flush { token }).unwrap();
    shared.wake();
    while !take(&mut next_pull, &mut next_push).contains(&token) {
        wake.wait();
    }
    // Everything delivered, in order, once.
    take(&mut next_pull, &mut next_push);
    assert_eq!((next_pull - 1, next_push - 1), (n, n));
    assert_eq!(shared.consumed.0.load(Ordering::Acquire), u64::from(2 * n));
    assert_eq!((pull.reserved(), push.reserved()), (0, 0));

    shared.stop.store(true, Ordering::SeqCst);
    shared.poke();
    thread.join().unwrap();
}

/// A worker that panics (the `Fail` control) goes on in failed mode on its own thread:
/// moves queued before the failure point are validated, those after it rejected
/// `ShardFailed`, flushes answered; a second panic stops the thread after answering the
/// flushes queued, and the shard then refuses controls (the producer answers its flushes).
#[test]
fn a_panic_fails_the_shard_and_flushes_are_still_answered() {
    let n: u32 = if cfg!(miri) { 6 } else { 200 };
    // Room for every move at once: the test never waits for the worker to free space.
    let Harness {
        mut producer,
        shared,
        outbox,
        wake,
        thread,
        ..
    } = start(3, 1 << 16);
    let inbox = open_pull_room(&shared);
    let mut seq = 2_u64;
    let mut push_move = |s: u32, seq: &mut u64| {
        let f = frame(PULL, s);
        assert!(inbox.try_reserve(f.len()));
        *seq += 1;
        producer.try_push(*seq, 0, &f).unwrap();
        shared.wake();
    };
    for s in 1..=n {
        push_move(s, &mut seq);
    }
    seq += 1;
    shared.push_control(seq, Control::Fail).unwrap();
    for s in n + 1..=2 * n {
        push_move(s, &mut seq);
    }
    let flush = |token: u64, seq: &mut u64| {
        *seq += 1;
        outbox.expect_flush(token, 1);
        let r = shared.push_control(*seq, Control::Flush { token });
        shared.wake();
        r
    };
    flush(1, &mut seq).unwrap();
    let mut failures = Vec::new();
    let wait_for = |token: u64, failures: &mut Vec<String>| loop {
        let mut flushed = false;
        for d in outbox.take() {
            match d {
                Delivery::Flushed { token: t } => flushed |= t == token,
                Delivery::Failed { shard, message } => {
                    assert_eq!(shard, 3);
                    failures.push(message);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if flushed {
            return;
        }
        wake.wait();
    };
    wait_for(1, &mut failures);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("on purpose"), "{}", failures[0]);
    let mut b = Builder::new();
    b.start(Vec::new());
    assert!(inbox.take_into(&mut b));
    let m = b.finish(None);
    assert_eq!(m.moves(), n, "queued before the failure point: validated");
    assert_eq!(m.rejections(), n);
    assert!(m
        .rejection_entries()
        .all(|r| r.reason == move_dispatcher::verdict::Reason::ShardFailed));
    assert_eq!(inbox.reserved(), 0);
    // A second panic: the worker stops, answering the flush queued behind it.
    seq += 1;
    shared.push_control(seq, Control::Fail).unwrap();
    flush(2, &mut seq).unwrap();
    wait_for(2, &mut failures);
    thread.join().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        matches!(flush(3, &mut seq), Err(Control::Flush { token: 3 })),
        "a dead shard refuses controls"
    );
}

/// A worker whose queue ran dry spins for work without holding its lock (native ingress and
/// JavaScript's release take that lock), and still sees a move pushed meanwhile. Its spin
/// here is endless, so under the lock the `try_lock` below could never succeed.
#[test]
#[cfg_attr(miri, ignore = "waits on wall-clock time")]
fn a_spinning_worker_leaves_its_lock_free_and_sees_new_moves() {
    let Harness {
        mut producer,
        shared,
        worker,
        thread,
        ..
    } = start_with(
        0,
        4096,
        Policy {
            spins: u32::MAX,
            nap_ns: None,
            ..Policy::runtime(8)
        },
    );
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waited 10 s for {what}"
            );
            std::thread::yield_now();
        }
    };
    // A pull room with one player; its first move is taken, then the queue is dry.
    let inbox = open_pull_room(&shared);
    let mut push_move = |seq: u64, s: u32| {
        let f = frame(PULL, s);
        assert!(inbox.try_reserve(f.len()));
        producer.try_push(seq, 0, &f).unwrap();
    };
    push_move(3, 1);
    shared.wake();
    wait_for("the first move to be taken", &|| {
        shared.consumed.0.load(Ordering::Acquire) == 1
    });
    wait_for("the worker's lock while it spins", &|| {
        worker.try_lock().is_ok()
    });
    assert!(
        !shared.sleeping.load(Ordering::SeqCst),
        "still spinning: it never announces sleep"
    );
    // No wake-up: the spin itself finds the move.
    push_move(4, 2);
    wait_for("the spin to find the second move", &|| {
        shared.consumed.0.load(Ordering::Acquire) == 2
    });
    shared.stop.store(true, Ordering::SeqCst);
    shared.poke();
    thread.join().unwrap();
}
