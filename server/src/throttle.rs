//! Throttling of password guessing and registration, across connections. Pure: the caller passes
//! the time, so every rule is tested without sleeping.
//!
//! Failures are counted under three keys, each with its own free allowance, after which every
//! further attempt waits `backoff_base`, doubled per further failure:
//! - **account and address**: `pair_free_failures` wrong passwords for one account from one
//!   address, then waits up to `backoff_max`. This is what stops a guesser.
//! - **address**: `address_free_failures` failures of any kind from one address (wrong
//!   passwords for any account, unknown users, registrations of taken names), then waits up to
//!   `backoff_max`: one host trying many accounts.
//! - **account**: `account_free_failures` wrong passwords for one account from addresses that
//!   are not trusted for it, then attempts from untrusted addresses wait up to
//!   `account_backoff_max`: many hosts guessing one account.
//!
//! An address from which an account logged in successfully is trusted for that account for
//! `trust_for`: the account-wide wait does not apply to it (its own account-and-address count
//! still does). So an attacker cannot lock the real user out: from an address it used before the
//! user is never held by others' failures, and from a new, clean address it gets a try at least
//! every `account_backoff_max`. Attempts refused while waiting are not counted (they cost the
//! server nothing but the refusal), so hammering does not extend a wait. A success clears the
//! account-and-address count; counts are forgotten after `forget_after` without a failure.
//!
//! Registrations are limited per address with a token bucket (`registration_burst`, then one per
//! `registration_interval`). Every table holds at most `throttle_entries` keys: expired entries
//! go first, then the least recently used.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AuthLimits;

/// Most trusted addresses remembered per account.
const TRUSTED_PER_ACCOUNT: usize = 16;

/// Failures under one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long an attempt at `now` must still wait, if at all: after `free` failures (at least
    /// one), `base` after the last one, doubled per failure beyond `free`, at most `max`.
    fn wait(&self, now: Instant, free: u32, base: Duration, max: Duration) -> Option<Duration> {
        let free = free.max(1);
        if self.count < free {
            return None;
        }
        let doublings = (self.count - free).min(30);
        let delay = base.saturating_mul(1u32 << doublings).min(max);
        let until = self.last + delay;
        (now < until).then(|| until - now)
    }
}

/// A map with a bound on its keys, evicting expired then least recently touched entries.
struct Table<K, V> {
    entries: HashMap<K, (V, Instant)>,
    max: usize,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    fn new(max: usize, ttl: Duration) -> Self {
        Table { entries: HashMap::new(), max: max.max(1), ttl }
    }

    /// The live value under `key` (an expired one is dropped).
    fn get(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        let expired = self.entries.get(key).is_some_and(|(_, touched)| now.saturating_duration_since(*touched) > self.ttl);
        if expired {
            self.entries.remove(key);
        }
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    /// The value under `key`, created with `make` if absent, marked as touched at `now`.
    fn touch(&mut self, key: &K, now: Instant, make: impl FnOnce() -> V) -> &mut V {
        if self.get(key, now).is_none() && self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, touched)| now.saturating_duration_since(*touched) <= ttl);
            if self.entries.len() >= self.max {
                if let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, touched))| *touched).map(|(k, _)| k.clone()) {
                    self.entries.remove(&oldest);
                }
            }
        }
        let entry = self.entries.entry(key.clone()).or_insert_with(|| (make(), now));
        entry.1 = now;
        &mut entry.0
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

/// Registrations per address: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The throttle state of a server.
pub struct AuthThrottle {
    limits: AuthLimits,
    pairs: Table<(String, IpAddr), Failures>,
    addresses: Table<IpAddr, Failures>,
    accounts: Table<String, Failures>,
    trusted: Table<String, Vec<(IpAddr, Instant)>>,
    registrations: Table<IpAddr, Bucket>,
}

fn failed(table_entry: &mut Failures, now: Instant) {
    table_entry.count = table_entry.count.saturating_add(1);
    table_entry.last = now;
}

impl AuthThrottle {
    pub fn new(limits: AuthLimits) -> Self {
        let (max, forget) = (limits.throttle_entries, limits.forget_after);
        let refill = limits.registration_interval.saturating_mul(limits.registration_burst.max(1));
        AuthThrottle {
            pairs: Table::new(max, forget),
            addresses: Table::new(max, forget),
            accounts: Table::new(max, forget),
            trusted: Table::new(max, limits.trust_for),
            registrations: Table::new(max, refill.max(forget)),
            limits,
        }
    }

    fn is_trusted(&mut self, account: &str, address: IpAddr, now: Instant) -> bool {
        let trust_for = self.limits.trust_for;
        self.trusted
            .get(&account.to_owned(), now)
            .is_some_and(|list| list.iter().any(|(a, at)| *a == address && now.saturating_duration_since(*at) <= trust_for))
    }

    fn address_wait(&mut self, address: IpAddr, now: Instant) -> Option<Duration> {
        let l = &self.limits;
        let (free, base, max) = (l.address_free_failures, l.backoff_base, l.backoff_max);
        self.addresses.get(&address, now).and_then(|f| f.wait(now, free, base, max))
    }

    /// Whether a login for `account` from `address` may be tried now, or how long it must wait.
    pub fn check_login(&mut self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let l = self.limits.clone();
        let pair = self.pairs.get(&(account.to_owned(), address), now).and_then(|f| f.wait(now, l.pair_free_failures, l.backoff_base, l.backoff_max));
        let by_address = self.address_wait(address, now);
        let by_account = if self.is_trusted(account, address, now) {
            None
        } else {
            self.accounts.get(&account.to_owned(), now).and_then(|f| f.wait(now, l.account_free_failures, l.backoff_base, l.account_backoff_max))
        };
        match [pair, by_address, by_account].into_iter().flatten().max() {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// A wrong password (or unknown user) for `account` from `address`.
    pub fn login_failed(&mut self, account: &str, address: IpAddr, now: Instant) {
        let fresh = || Failures { count: 0, last: now };
        failed(self.pairs.touch(&(account.to_owned(), address), now, fresh), now);
        failed(self.addresses.touch(&address, now, fresh), now);
        if !self.is_trusted(account, address, now) {
            failed(self.accounts.touch(&account.to_owned(), now, fresh), now);
        }
    }

    /// A successful login: the account-and-address count is cleared and the address trusted.
    pub fn login_succeeded(&mut self, account: &str, address: IpAddr, now: Instant) {
        self.pairs.remove(&(account.to_owned(), address));
        let trusted = self.trusted.touch(&account.to_owned(), now, Vec::new);
        trusted.retain(|(a, _)| *a != address);
        if trusted.len() >= TRUSTED_PER_ACCOUNT {
            trusted.remove(0);
        }
        trusted.push((address, now));
    }

    /// Whether `address` may register now, or how long it must wait.
    pub fn check_registration(&mut self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.address_wait(address, now) {
            return Err(wait);
        }
        let (burst, interval) = (self.limits.registration_burst.max(1) as f64, self.limits.registration_interval);
        match self.registrations.get(&address, now) {
            Some(bucket) => {
                let tokens = refill(bucket, burst, interval, now);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(interval.mul_f64(1.0 - tokens))
                }
            }
            None => Ok(()),
        }
    }

    /// A failure that concerns no account (a registration of a taken name, a login with a
    /// malformed name): it counts for the address only.
    pub fn address_failed(&mut self, address: IpAddr, now: Instant) {
        failed(self.addresses.touch(&address, now, || Failures { count: 0, last: now }), now);
    }

    /// An account was registered from `address`: it takes a token.
    pub fn registered(&mut self, address: IpAddr, now: Instant) {
        let (burst, interval) = (self.limits.registration_burst.max(1) as f64, self.limits.registration_interval);
        let bucket = self.registrations.touch(&address, now, || Bucket { tokens: burst, last: now });
        let tokens = refill(bucket, burst, interval, now);
        *bucket = Bucket { tokens: (tokens - 1.0).max(0.0), last: now };
    }
}

/// The tokens a bucket holds at `now`.
fn refill(bucket: &Bucket, burst: f64, interval: Duration, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
    (bucket.tokens + elapsed / interval.as_secs_f64().max(1e-9)).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthLimits {
        AuthLimits {
            pair_free_failures: 3,
            address_free_failures: 10,
            account_free_failures: 20,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            account_backoff_max: Duration::from_secs(8),
            forget_after: Duration::from_secs(3600),
            trust_for: Duration::from_secs(86_400),
            registration_burst: 2,
            registration_interval: Duration::from_secs(10),
            throttle_entries: 1_000,
            ..AuthLimits::default()
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_guesser_waits_longer_after_each_failure_from_its_address() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(limits());
        for _ in 0..3 {
            assert_eq!(t.check_login("alice", ip(1), t0), Ok(()));
            t.login_failed("alice", ip(1), t0);
        }
        // Free failures used: 1 s, then 2 s, then 4 s...
        assert_eq!(t.check_login("alice", ip(1), t0), Err(S));
        t.login_failed("alice", ip(1), t0 + S);
        assert_eq!(t.check_login("alice", ip(1), t0 + S), Err(2 * S));
        assert_eq!(t.check_login("alice", ip(1), t0 + 3 * S), Ok(()));
        t.login_failed("alice", ip(1), t0 + 3 * S);
        assert_eq!(t.check_login("alice", ip(1), t0 + 3 * S), Err(4 * S));
        // Another address is not held by this one's failures (under the account's allowance).
        assert_eq!(t.check_login("alice", ip(2), t0 + 3 * S), Ok(()));
        // Capped at backoff_max.
        let mut now = t0 + 3 * S;
        for _ in 0..20 {
            now += 120 * S;
            t.login_failed("alice", ip(1), now);
        }
        assert_eq!(t.check_login("alice", ip(1), now), Err(60 * S));
        // Past the account's allowance, other untrusted addresses wait too, less long.
        assert_eq!(t.check_login("alice", ip(2), now), Err(8 * S));
        // Forgotten after an hour without failures.
        assert_eq!(t.check_login("alice", ip(1), now + 3601 * S), Ok(()));
    }

    #[test]
    fn refused_attempts_do_not_extend_the_wait_and_a_success_clears_it() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(limits());
        for _ in 0..3 {
            t.login_failed("alice", ip(1), t0);
        }
        for ms in 0..1_000 {
            let now = t0 + Duration::from_millis(ms);
            assert!(t.check_login("alice", ip(1), now).is_err());
        }
        assert_eq!(t.check_login("alice", ip(1), t0 + S), Ok(()), "hammering did not extend the wait");
        t.login_succeeded("alice", ip(1), t0 + S);
        assert_eq!(t.check_login("alice", ip(1), t0 + S), Ok(()));
        t.login_failed("alice", ip(1), t0 + S);
        assert_eq!(t.check_login("alice", ip(1), t0 + S), Ok(()), "the count started again");
    }

    #[test]
    fn one_address_trying_many_accounts_is_held() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(limits());
        for i in 0..10 {
            t.login_failed(&format!("user{i}"), ip(1), t0);
        }
        assert_eq!(t.check_login("someone-else", ip(1), t0), Err(S));
        assert_eq!(t.check_registration(ip(1), t0), Err(S), "registrations from it wait too");
        assert_eq!(t.check_login("someone-else", ip(2), t0), Ok(()));
        // Taken names count as the address's failures.
        for _ in 0..11 {
            t.address_failed(ip(3), t0);
        }
        assert_eq!(t.check_registration(ip(3), t0), Err(2 * S));
    }

    /// Many addresses guessing one account slow down everyone but the addresses the account
    /// used; a clean address still gets a try at least every `account_backoff_max`.
    #[test]
    fn many_addresses_guessing_one_account_cannot_lock_its_owner_out() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(limits());
        t.login_succeeded("alice", ip(1000), t0);
        let mut now = t0;
        for i in 0..200 {
            now += Duration::from_millis(100);
            if t.check_login("alice", ip(i), now).is_ok() {
                t.login_failed("alice", ip(i), now);
            }
        }
        // Past the account's allowance: a new address waits, capped at 8 s.
        let wait = t.check_login("alice", ip(5_000), now).unwrap_err();
        assert!(wait <= 8 * S, "{wait:?}");
        assert_eq!(t.check_login("alice", ip(5_000), now + 8 * S), Ok(()), "a clean address gets its try");
        // The owner's usual address is not held at all.
        assert_eq!(t.check_login("alice", ip(1000), now), Ok(()));
        // Its failures from there do not count for the account (only for itself).
        t.login_failed("alice", ip(1000), now);
        assert_eq!(t.check_login("alice", ip(1000), now), Ok(()));
    }

    #[test]
    fn registrations_per_address_are_a_bucket() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(limits());
        assert_eq!(t.check_registration(ip(1), t0), Ok(()));
        t.registered(ip(1), t0);
        t.registered(ip(1), t0);
        assert_eq!(t.check_registration(ip(1), t0), Err(10 * S));
        assert_eq!(t.check_registration(ip(1), t0 + 5 * S), Err(5 * S));
        assert_eq!(t.check_registration(ip(1), t0 + 10 * S), Ok(()));
        assert_eq!(t.check_registration(ip(2), t0), Ok(()));
    }

    #[test]
    fn tables_stay_bounded() {
        let t0 = Instant::now();
        let mut t = AuthThrottle::new(AuthLimits { throttle_entries: 50, ..limits() });
        for i in 0..10_000 {
            t.login_failed(&format!("user{i}"), ip(i), t0 + Duration::from_millis(i.into()));
        }
        assert!(t.pairs.entries.len() <= 50 && t.addresses.entries.len() <= 50 && t.accounts.entries.len() <= 50);
        // The newest entries are kept.
        let last = t0 + Duration::from_millis(9_999);
        for _ in 0..2 {
            t.login_failed("user9999", ip(9_999), last);
        }
        assert_eq!(t.check_login("user9999", ip(9_999), last), Err(S));
    }
}
