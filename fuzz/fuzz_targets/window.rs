//! Replay window (`window::ReplayWindow`) against a set-based model ([`WindowModel`]).
//!
//! The input is a program of sequence numbers, each chosen relative to the current top
//! (to reach the window's edges: `top - 127`, `top - 128`, `top + 128`, wrap-around near
//! `u32::MAX`) or absolute. Properties, after every step:
//! - `accept` agrees with the model: same outcome, same refusal (`Duplicate` for a number
//!   already accepted inside the window, `TooOld` for 0 or `<= top - 128`);
//! - `check` predicts `accept` and changes nothing;
//! - `top()` is the highest number accepted;
//! - a copy of the window taken before a step is unaffected by it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use move_dispatcher::window::{self, Refusal, ReplayWindow};
use move_dispatcher_fuzz::{Input, ModelRefusal, WindowModel};

fuzz_target!(|data: &[u8]| {
    assert_eq!(window::WIDTH, WindowModel::WIDTH);
    let mut input = Input::new(data);
    let mut w = ReplayWindow::new();
    assert_eq!(w, ReplayWindow::default());
    let mut m = WindowModel::default();
    // Optionally start near the top of the u32 range.
    if input.bool() {
        let start = u32::MAX - u32::from(input.u16());
        step(&mut w, &mut m, start);
    }
    while !input.is_empty() {
        let op = input.u8();
        let top = m.top;
        let arg = u32::from(op >> 3);
        let seq = match op & 7 {
            0 => top.wrapping_add(1 + arg),
            1 => top.wrapping_sub(arg),
            // The window edges: top - 127 (oldest inside), top - 128 (too old), +- a little.
            2 => top.wrapping_sub(window::WIDTH - 1).wrapping_add(arg % 3),
            3 => top.wrapping_sub(window::WIDTH).wrapping_sub(arg % 3),
            4 => top.wrapping_add(u32::from(input.u16())),
            5 => top.wrapping_sub(u32::from(input.u8())),
            6 => input.u32(),
            _ => [
                0,
                1,
                u32::MAX,
                u32::MAX - 1,
                window::WIDTH,
                window::WIDTH + 1,
                2,
                3,
            ][arg as usize % 8],
        };
        step(&mut w, &mut m, seq);
    }
});

fn step(w: &mut ReplayWindow, m: &mut WindowModel, seq: u32) {
    let before = *w;
    let predicted = w.check(seq);
    assert_eq!(*w, before, "check changed the window");
    let expect = m.check(seq);
    assert_eq!(
        predicted.is_ok(),
        expect.is_ok(),
        "check({seq}) top {}",
        m.top
    );
    let got = w.accept(seq);
    assert_eq!(got, predicted, "accept({seq}) disagrees with check");
    let want = m.accept(seq);
    match (got, want) {
        (Ok(()), Ok(())) => {}
        (Err(Refusal::Duplicate), Err(ModelRefusal::Duplicate))
        | (Err(Refusal::TooOld), Err(ModelRefusal::TooOld)) => {
            assert_eq!(*w, before, "a refused number changed the window");
        }
        (g, e) => panic!("accept({seq}) = {g:?}, model {e:?} (top {})", before.top()),
    }
    assert_eq!(w.top(), m.top);
    assert!(m.seen_len() <= window::WIDTH as usize);
    // A copy is independent (the window is a value).
    let mut copy = before;
    let _ = copy.accept(seq);
    assert_eq!(copy, *w);
}
