//! Per-connection request limits, pure (the caller passes the time, so they are tested without
//! sleeping): a token bucket for the request rate, and a meter of the refusals it causes, which
//! tells when a connection keeps sending past its limit (a flood, closed with 4003).

use std::time::{Duration, Instant};

/// `rate` requests per second on average, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket { rate: rate_per_second.max(1) as f64, burst, tokens: burst, last: now }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Counts refusals in a sliding window (a leaky bucket: each refusal adds one, the level drains
/// at `limit` per `window`). A client that honours `retry_after_ms` collects a few refusals; one
/// that keeps sending past its rate collects them faster than they drain, even when every other
/// request gets through, and is told to go.
#[derive(Debug, Clone)]
pub struct RefusalMeter {
    limit: f64,
    drain_per_second: f64,
    level: f64,
    last: Instant,
}

impl RefusalMeter {
    pub fn new(limit: u32, window: Duration, now: Instant) -> Self {
        let limit = limit.max(1) as f64;
        RefusalMeter { limit, drain_per_second: limit / window.as_secs_f64().max(0.001), level: 0.0, last: now }
    }

    /// Records a refusal; true when the refusals within the window exceed the limit.
    pub fn refused(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.level = (self.level - elapsed * self.drain_per_second).max(0.0) + 1.0;
        self.level > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }

    /// A client sending twice its rate gets every other request through: refusals never come
    /// many in a row, but they add up within the window.
    #[test]
    fn refusals_interleaved_with_successes_still_add_up() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 1, t0);
        let mut meter = RefusalMeter::new(50, Duration::from_secs(10), t0);
        let mut closed_at = None;
        for i in 0..1_000u64 {
            // Two requests every 10 ms: one token refills in between.
            let now = t0 + Duration::from_millis(10 * i);
            assert!(bucket.try_take(now).is_ok(), "the first of each pair passes");
            if bucket.try_take(now).is_err() && meter.refused(now) {
                closed_at = Some(i);
                break;
            }
        }
        // 50 refusals drain in 10 s, 5 per second; this client adds 100 per second.
        let at = closed_at.expect("the flood is detected");
        assert!((50..60).contains(&at), "after {at} refusals");
    }

    #[test]
    fn refusals_spread_over_time_drain() {
        let t0 = Instant::now();
        let mut meter = RefusalMeter::new(3, Duration::from_secs(3), t0);
        // One refusal per second stays at the drain rate: never more than the limit.
        for i in 0..100 {
            assert!(!meter.refused(t0 + Duration::from_secs(i)), "refusal {i}");
        }
        // Four at once exceed it.
        let later = t0 + Duration::from_secs(1_000);
        assert!(!meter.refused(later));
        assert!(!meter.refused(later));
        assert!(!meter.refused(later));
        assert!(meter.refused(later));
    }
}
