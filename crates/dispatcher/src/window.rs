//! Anti-replay sliding window, as in `IPsec` (RFC 4303 §3.4.3) and DTLS.
//!
//! Tracks the highest sequence number accepted (`top`) and a bitmap of the
//! [`WIDTH`] sequence numbers ending at `top`. A sequence number is accepted once;
//! duplicates and numbers at or below `top - WIDTH` are refused, so reordered or
//! redundant transports still work.

/// Window width, in sequence numbers.
pub const WIDTH: u32 = 128;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Already accepted.
    Duplicate,
    /// At or below `top - WIDTH`: too old to tell.
    TooOld,
}

/// The window of one (room, player).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted; 0 before the first.
    top: u32,
    /// Bit `i` set: `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self { top: 0, seen: 0 }
    }

    /// Highest sequence number accepted so far (0 if none).
    pub fn top(&self) -> u32 {
        self.top
    }

    /// Whether `seq` would be accepted, without recording it.
    pub fn check(&self, seq: u32) -> Result<(), Refusal> {
        if seq > self.top {
            return Ok(());
        }
        let age = self.top - seq;
        if age >= WIDTH || seq == 0 {
            return Err(Refusal::TooOld);
        }
        if self.seen & (1u128 << age) != 0 {
            Err(Refusal::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Accepts `seq` once: records it and returns `Ok`, or refuses it.
    pub fn accept(&mut self, seq: u32) -> Result<(), Refusal> {
        self.check(seq)?;
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WIDTH {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
        } else {
            self.seen |= 1u128 << (self.top - seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_reordered_duplicate_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(5), Ok(()));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(3), Err(Refusal::Duplicate));
        assert_eq!(w.accept(5), Err(Refusal::Duplicate));
        assert_eq!(w.accept(200), Ok(()));
        // 200 - 127 = 73 is the oldest still inside the window; 72 is too old.
        assert_eq!(w.accept(73), Ok(()));
        assert_eq!(w.accept(72), Err(Refusal::TooOld));
        assert_eq!(w.accept(73), Err(Refusal::Duplicate));
        assert_eq!(w.accept(u32::MAX), Ok(()));
        assert_eq!(w.accept(u32::MAX), Err(Refusal::Duplicate));
        assert_eq!(w.accept(u32::MAX - 127), Ok(()));
        assert_eq!(w.accept(u32::MAX - 128), Err(Refusal::TooOld));
    }

    #[test]
    fn seq_zero_is_never_accepted() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Err(Refusal::TooOld));
        w.accept(10).unwrap();
        assert_eq!(w.accept(0), Err(Refusal::TooOld));
    }

    /// Property: the window agrees with a set-based model on random sequences whose
    /// values cluster around the top (to reach the window's edges often).
    #[test]
    fn prop_agrees_with_a_set_model() {
        let mut rng = crate::testutil::Rng::new(7);
        for _ in 0..200 {
            let mut w = ReplayWindow::new();
            let mut accepted = BTreeSet::new();
            let mut top = 0u32;
            for _ in 0..2_000 {
                let seq = match rng.below(6) {
                    0 => top.saturating_add(1 + rng.below(3) as u32),
                    1 => top.saturating_add(rng.below(300) as u32),
                    2 => top.saturating_sub(WIDTH - 1 + rng.below(3) as u32),
                    3 => top.saturating_sub(rng.below(u64::from(WIDTH) + 8) as u32),
                    4 => rng.next() as u32,
                    _ => top,
                };
                let model_ok =
                    seq != 0 && !accepted.contains(&seq) && (seq > top || top - seq < WIDTH);
                let got = w.accept(seq);
                assert_eq!(got.is_ok(), model_ok, "seq {seq} top {top}");
                if model_ok {
                    accepted.insert(seq);
                    top = top.max(seq);
                }
                assert_eq!(w.top(), top);
            }
        }
    }
}
