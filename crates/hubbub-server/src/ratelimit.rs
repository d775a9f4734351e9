//! Publish rate limits: token buckets per client (token or IP) and one for the
//! whole hub. A refused request learns how long to wait (`Retry-After`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets beyond this many trigger a purge of full (idle) ones, so a flood of
/// distinct clients cannot grow the map without bound.
const PURGE_AT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<u64, Bucket>>,
    hasher: RandomState,
}

impl RateLimiter {
    /// `rate` per second with bursts of `burst`; `Err(wait)` when over.
    pub fn check(
        &self,
        key: impl Hash,
        rate: f64,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let key = self.hasher.hash_one(key);
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PURGE_AT {
            buckets.retain(|_, b| {
                b.refill(rate, burst, now);
                b.tokens < burst
            });
        }
        buckets
            .entry(key)
            .or_insert(Bucket {
                tokens: burst,
                last: now,
            })
            .take(rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("a", 2.0, 3, t0).is_ok());
        }
        let wait = rl.check("a", 2.0, 3, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(rl.check("b", 2.0, 3, t0).is_ok(), "keys are independent");
        assert!(
            rl.check("a", 2.0, 3, t0 + Duration::from_millis(500))
                .is_ok()
        );
    }
}
