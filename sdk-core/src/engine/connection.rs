//! The connection state machine: whether to connect now, wait, or stay idle, and which
//! `ConnectionState` the app sees. Pure: the caller passes the time and performs the I/O; the
//! backoff inside is seeded.
//!
//! Rules: no session, a refused credential, a lost network or a stop keep the client idle (each
//! with its own state); otherwise a failed attempt or a lost link schedules the next attempt with
//! exponential backoff and full jitter; a network-available or foreground hint makes the next
//! attempt immediate; a login resets everything.

use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffConfig};
use crate::model::{ConnectionState, DisconnectReason};

/// What to do while there is no link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing until the app acts.
    Idle(ConnectionState),
    /// Wait until `until` (or a hint), then connect.
    Wait { until: Instant, state: ConnectionState },
    Connect,
}

#[derive(Debug)]
pub struct ConnectionMachine {
    backoff: Backoff,
    has_session: bool,
    known_user: bool,
    network_up: bool,
    auth_failed: Option<String>,
    stopped: bool,
    next_attempt: Instant,
}

impl ConnectionMachine {
    pub fn new(config: BackoffConfig, seed: u64, has_session: bool, known_user: bool, now: Instant) -> Self {
        ConnectionMachine {
            backoff: Backoff::new(config, seed),
            has_session,
            known_user,
            network_up: true,
            auth_failed: None,
            stopped: false,
            next_attempt: now,
        }
    }

    fn idle_state(&self) -> Option<ConnectionState> {
        if self.stopped {
            Some(ConnectionState::Disconnected { reason: DisconnectReason::Stopped })
        } else if let Some(message) = &self.auth_failed {
            Some(ConnectionState::AuthFailed { message: message.clone() })
        } else if !self.has_session {
            let reason = if self.known_user { DisconnectReason::LoggedOut } else { DisconnectReason::NotLoggedIn };
            Some(ConnectionState::Disconnected { reason })
        } else if !self.network_up {
            Some(ConnectionState::Disconnected { reason: DisconnectReason::NetworkLost })
        } else {
            None
        }
    }

    pub fn next(&self, now: Instant) -> Next {
        if let Some(state) = self.idle_state() {
            return Next::Idle(state);
        }
        if self.next_attempt > now {
            let state = ConnectionState::Reconnecting { attempt: self.backoff.attempt(), next_in: self.next_attempt - now };
            return Next::Wait { until: self.next_attempt, state };
        }
        Next::Connect
    }

    /// A link is up.
    pub fn connected(&mut self, now: Instant) -> ConnectionState {
        self.backoff.on_connected(now);
        ConnectionState::Connected
    }

    fn schedule(&mut self, now: Instant) -> ConnectionState {
        if let Some(state) = self.idle_state() {
            return state;
        }
        let delay: Duration = self.backoff.next_delay();
        self.next_attempt = now + delay;
        ConnectionState::Reconnecting { attempt: self.backoff.attempt(), next_in: delay }
    }

    /// A connect attempt failed for a reason that may pass (network, server down).
    pub fn connect_failed(&mut self, now: Instant) -> ConnectionState {
        self.schedule(now)
    }

    /// A live link dropped.
    pub fn link_lost(&mut self, now: Instant) -> ConnectionState {
        self.backoff.on_disconnected(now);
        self.schedule(now)
    }

    /// The server refused the credentials: no retry until the app logs in again.
    pub fn auth_refused(&mut self, message: String) -> ConnectionState {
        self.auth_failed = Some(message);
        self.idle_state().expect("auth failed is idle")
    }

    /// A login or registration succeeded.
    pub fn session_started(&mut self) {
        self.has_session = true;
        self.known_user = true;
        self.auth_failed = None;
        self.network_up = true;
        self.backoff.reset();
    }

    pub fn logged_out(&mut self) -> ConnectionState {
        self.has_session = false;
        self.known_user = true;
        self.idle_state().expect("logged out is idle")
    }

    /// Network hints from the app.
    pub fn network(&mut self, up: bool, now: Instant) {
        self.network_up = up;
        if up {
            self.backoff.reset();
            self.next_attempt = now;
        }
    }

    /// The app came to the foreground: try now if waiting.
    pub fn foreground(&mut self, now: Instant) {
        self.next_attempt = now;
    }

    pub fn stop(&mut self) -> ConnectionState {
        self.stopped = true;
        self.idle_state().expect("stopped is idle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(now: Instant) -> ConnectionMachine {
        let config = BackoffConfig { base: Duration::from_millis(100), cap: Duration::from_secs(2), reset_after: Duration::from_secs(60) };
        ConnectionMachine::new(config, 7, true, true, now)
    }

    #[test]
    fn connects_at_once_then_backs_off_after_failures() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.next(t0), Next::Connect);
        let s1 = m.connect_failed(t0);
        let ConnectionState::Reconnecting { attempt: 1, next_in } = s1 else { panic!("{s1:?}") };
        assert!(next_in <= Duration::from_millis(100));
        match m.next(t0) {
            Next::Wait { until, .. } => assert_eq!(until, t0 + next_in),
            Next::Connect => assert_eq!(next_in, Duration::ZERO),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.next(t0 + Duration::from_secs(5)), Next::Connect);
        let s2 = m.connect_failed(t0);
        assert!(matches!(s2, ConnectionState::Reconnecting { attempt: 2, next_in } if next_in <= Duration::from_millis(200)));
    }

    #[test]
    fn idle_states_and_their_exits() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.network(false, t0);
        assert_eq!(m.next(t0), Next::Idle(ConnectionState::Disconnected { reason: DisconnectReason::NetworkLost }));
        assert_eq!(m.link_lost(t0), ConnectionState::Disconnected { reason: DisconnectReason::NetworkLost }, "no backoff while offline");
        m.network(true, t0);
        assert_eq!(m.next(t0), Next::Connect, "network back: at once");

        assert!(matches!(m.auth_refused("bad".into()), ConnectionState::AuthFailed { .. }));
        assert!(matches!(m.next(t0 + Duration::from_secs(3600)), Next::Idle(ConnectionState::AuthFailed { .. })), "never retries");
        m.session_started();
        assert_eq!(m.next(t0), Next::Connect);

        assert_eq!(m.logged_out(), ConnectionState::Disconnected { reason: DisconnectReason::LoggedOut });
        assert!(matches!(m.next(t0), Next::Idle(_)));
        let fresh = ConnectionMachine::new(BackoffConfig::default(), 1, false, false, t0);
        assert_eq!(fresh.next(t0), Next::Idle(ConnectionState::Disconnected { reason: DisconnectReason::NotLoggedIn }));
        m.session_started();
        assert_eq!(m.stop(), ConnectionState::Disconnected { reason: DisconnectReason::Stopped });
    }

    #[test]
    fn foreground_cuts_the_wait_and_a_stable_link_resets_backoff() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        for _ in 0..5 {
            m.connect_failed(t0);
        }
        m.connect_failed(t0);
        m.foreground(t0);
        assert_eq!(m.next(t0), Next::Connect);
        m.connected(t0);
        let s = m.link_lost(t0 + Duration::from_secs(61));
        assert!(matches!(s, ConnectionState::Reconnecting { attempt: 1, .. }), "{s:?}");
    }
}
