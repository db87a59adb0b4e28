//! The JavaScript thread's work per move in `Core::dispatch_stream`, for counting
//! instructions where timings are too noisy to compare builds:
//!
//! ```sh
//! cargo build --release -p move-dispatcher --example stream_ir
//! valgrind --tool=callgrind --toggle-collect='*stream_ir*dispatch_all*' \
//!     target/release/examples/stream_ir
//! callgrind_annotate callgrind.out.<pid>   # total Ir ÷ the moves printed below
//! ```
//!
//! 5,000 pull rooms of 10 players (the bench's shape), 100 chunks of 1,000 SHA-256 frames
//! of 120 bytes, players in a fixed random order; every move must be accepted. `ROOMS`,
//! `CHUNKS` override the defaults.

use move_dispatcher::auth;
use move_dispatcher::core::{Config, Core};
use move_dispatcher::frame::{self, Header};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The measured part (not inlined, so that callgrind can count it alone).
#[inline(never)]
fn dispatch_all(core: &mut Core, stream: &[Vec<u8>]) -> u64 {
    let mut accepted = 0_u64;
    for chunk in stream {
        let out = core.dispatch_stream(std::hint::black_box(chunk), None);
        accepted += u64::from(out.accepted);
        assert!(!out.backpressure && !out.malformed && out.rejected == 0);
    }
    accepted
}

fn main() {
    let rooms = env("ROOMS", 5_000);
    let chunks = env("CHUNKS", 100);
    let per_chunk = 1_000_u32;
    let players = rooms * 10;
    let cfg = Config {
        channel_capacity: 1 << 20,
        arena_bytes: 64 << 20,
        ..Config::default()
    };
    let mut core = Core::new(cfg, Box::new(|| {})).expect("a dispatcher");
    for r in 0..rooms {
        core.open_room(r, false, false, None);
        for j in 0..10 {
            core.join(r, r * 10 + j, None);
        }
    }
    // A fixed permutation of the players (SplitMix64 + Fisher–Yates).
    let mut order: Vec<u32> = (0..players).collect();
    let mut state = 0x5eed_u64;
    for i in (1..order.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    let mut seqs = vec![0_u32; players as usize];
    let body = [7_u8; 64];
    let mut stream: Vec<Vec<u8>> = Vec::with_capacity(chunks as usize);
    let mut next = 0_usize;
    for _ in 0..chunks {
        let mut chunk = Vec::with_capacity(per_chunk as usize * 120);
        for _ in 0..per_chunk {
            let player = order[next % order.len()];
            next += 1;
            seqs[player as usize] += 1;
            let h = Header {
                flags: 0,
                room: player / 10,
                player,
                seq: seqs[player as usize],
                tick: 0,
                kind: 1,
                len: 64,
            };
            let mut f = frame::encode_unsigned(&h, &body).expect("a frame");
            auth::sign(&mut f, None);
            chunk.extend_from_slice(&f);
        }
        stream.push(chunk);
    }
    let accepted = dispatch_all(&mut core, &stream);
    core.shutdown();
    assert_eq!(accepted, u64::from(chunks) * u64::from(per_chunk));
    println!("moves {accepted}");
}
