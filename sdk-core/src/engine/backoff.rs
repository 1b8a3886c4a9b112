//! Reconnect backoff: exponential with full jitter (a delay drawn uniformly from zero to
//! `min(cap, base * 2^attempt)`), reset after a connection stayed up for `reset_after`.
//! Pure: no clock and no I/O inside; the randomness is seeded.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub cap: Duration,
    /// A connection that lived this long resets the attempt count.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { base: Duration::from_millis(250), cap: Duration::from_secs(30), reset_after: Duration::from_secs(60) }
    }
}

/// The backoff state machine.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    connected_at: Option<Instant>,
    rng: StdRng,
}

impl Backoff {
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff { config, attempt: 0, connected_at: None, rng: StdRng::seed_from_u64(seed) }
    }

    /// Attempts made since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.config.base.saturating_mul(factor).min(self.config.cap)
    }

    /// Counts an attempt and returns how long to wait before it.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { self.rng.random_range(0..=nanos) })
    }

    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// A connection ended: if it was stable for `reset_after`, start over from the base delay.
    pub fn on_disconnected(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= self.config.reset_after {
                self.attempt = 0;
            }
        }
    }

    /// Start over (network came back, app came to the foreground, new login).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig { base: Duration::from_millis(100), cap: Duration::from_secs(2), reset_after: Duration::from_secs(60) }
    }

    #[test]
    fn ceilings_grow_exponentially_up_to_the_cap() {
        let mut b = Backoff::new(config(), 1);
        let mut ceilings = vec![];
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2));
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn full_jitter_spreads_delays_and_is_seeded() {
        let draw = |seed| {
            let mut b = Backoff::new(config(), seed);
            (0..6).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7), "same seed, same delays");
        assert_ne!(draw(7), draw(8));
        // Over many draws at the cap, delays cover the whole range [0, cap].
        let mut b = Backoff::new(config(), 3);
        for _ in 0..10 {
            b.next_delay();
        }
        let samples: Vec<Duration> = (0..2000).map(|_| b.next_delay()).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(1800)));
    }

    #[test]
    fn a_stable_connection_resets_the_attempts_a_flapping_one_does_not() {
        let t0 = Instant::now();
        let mut b = Backoff::new(config(), 1);
        for _ in 0..4 {
            b.next_delay();
        }
        b.on_connected(t0);
        b.on_disconnected(t0 + Duration::from_secs(5));
        assert_eq!(b.attempt(), 4, "5 s is not stable");
        b.on_connected(t0);
        b.on_disconnected(t0 + Duration::from_secs(61));
        assert_eq!(b.attempt(), 0);
        b.next_delay();
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
