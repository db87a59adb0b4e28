//! Per-player rate limits: a token bucket per member of a rate-limited room, checked
//! synchronously (a refused frame spends nothing) — by `dispatch`, in an array beside the
//! JavaScript thread's member table (whose slots hold the index), and by native ingress, in the shard worker's room (one bucket per
//! path).

/// A room's per-player rate limit: `per_second` tokens a second, at most `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// A player's token bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    /// [`crate::clock::now_ns`] of the last refill.
    at: u64,
}

impl Default for Bucket {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Bucket {
    /// No tokens, never refilled (a placeholder).
    pub(crate) const ZERO: Self = Self { tokens: 0.0, at: 0 };

    pub(crate) fn full(rate: Option<RateLimit>) -> Self {
        Self {
            tokens: rate.map_or(0.0, |r| r.burst),
            at: crate::clock::now_ns(),
        }
    }

    /// Refills for the time elapsed until `now` ([`crate::clock::now_ns`]); whether a token
    /// is available.
    pub(crate) fn ready(&mut self, rate: RateLimit, now: u64) -> bool {
        #[expect(
            clippy::cast_precision_loss,
            reason = "nanoseconds to seconds; exact below 104 days between two frames"
        )]
        let elapsed = now.saturating_sub(self.at) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = self.at.max(now);
        self.tokens >= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_spends_and_refills() {
        let rate = RateLimit {
            per_second: 1000.0,
            burst: 2.0,
        };
        let mut b = Bucket::full(Some(rate));
        let t = b.at;
        assert!(b.ready(rate, t));
        b.tokens -= 1.0;
        assert!(b.ready(rate, t));
        b.tokens -= 1.0;
        assert!(!b.ready(rate, t), "burst spent");
        assert!(b.ready(rate, t + 1_000_000), "1 ms refills one token");
        assert!(
            b.ready(rate, t + 10_000_000_000) && b.tokens <= 2.0,
            "never above the burst"
        );
    }
}
