//! Inbound sync: where the client is in its inbox. Cursors are opaque (each transport defines
//! them); this machine never compares them, it only remembers the last one committed.
//!
//! On connect the client asks for events after its last committed cursor; pages are committed
//! (events and cursor in one transaction) and acknowledged, and the next page is asked for until
//! the server says there is no more: then the client is live. Pure: no I/O.

/// What the engine should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Ask for events after this cursor (`None`: from the beginning).
    Request { since: Option<String> },
    /// Caught up: live events follow.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    Offline,
    CatchingUp,
    Live,
}

#[derive(Debug)]
pub struct SyncState {
    committed: Option<String>,
    phase: SyncPhase,
    /// Events committed since the connection was established.
    pub applied: u64,
}

impl SyncState {
    /// Starts from the cursor stored with the last committed events.
    pub fn new(committed: Option<String>) -> Self {
        SyncState { committed, phase: SyncPhase::Offline, applied: 0 }
    }

    pub fn committed(&self) -> Option<&str> {
        self.committed.as_deref()
    }

    pub fn phase(&self) -> SyncPhase {
        self.phase
    }

    /// A link is up: ask for what was missed.
    pub fn on_connected(&mut self) -> SyncStep {
        self.phase = SyncPhase::CatchingUp;
        self.applied = 0;
        SyncStep::Request { since: self.committed.clone() }
    }

    /// A page of `count` events was committed, the last with cursor `last`.
    pub fn on_page_committed(&mut self, last: Option<String>, count: u64, has_more: bool) -> SyncStep {
        if let Some(last) = last {
            self.committed = Some(last);
        }
        self.applied += count;
        if has_more {
            SyncStep::Request { since: self.committed.clone() }
        } else {
            self.phase = SyncPhase::Live;
            SyncStep::Live
        }
    }

    /// Live events were committed.
    pub fn on_live_committed(&mut self, last: String, count: u64) {
        self.committed = Some(last);
        self.applied += count;
    }

    pub fn on_disconnected(&mut self) {
        self.phase = SyncPhase::Offline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_up_page_by_page_then_goes_live() {
        let mut s = SyncState::new(Some("5".into()));
        assert_eq!(s.on_connected(), SyncStep::Request { since: Some("5".into()) });
        assert_eq!(s.phase(), SyncPhase::CatchingUp);
        assert_eq!(s.on_page_committed(Some("9".into()), 4, true), SyncStep::Request { since: Some("9".into()) });
        assert_eq!(s.on_page_committed(None, 0, false), SyncStep::Live);
        assert_eq!(s.committed(), Some("9"));
        s.on_live_committed("10".into(), 1);
        assert_eq!(s.applied, 5);
        s.on_disconnected();
        assert_eq!(s.on_connected(), SyncStep::Request { since: Some("10".into()) }, "resumes from the last commit");
    }

    #[test]
    fn a_fresh_client_syncs_from_the_beginning() {
        let mut s = SyncState::new(None);
        assert_eq!(s.on_connected(), SyncStep::Request { since: None });
    }
}
