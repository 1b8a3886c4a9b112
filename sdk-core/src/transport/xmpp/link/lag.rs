//! Live messages an archive does not show yet. A live message is only a cue to read its
//! archive; a server that archives after routing (Openfire's Monitoring plugin, in batches up
//! to about a second later) can answer that read complete without it. Until the archive shows
//! each message cued, it is read again after a growing pause, a bounded number of times. Pure:
//! the link passes the time and reads what it is told to. Per link: a new one syncs every
//! archive from its cursor anyway.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// The first pause before reading an archive again; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(3);
/// Reads again per cue at most (100 ms … 3 s: about 13 s in all); after that the message waits
/// for the next cue or the next sync, as before.
pub const MAX_TRIES: u32 = 8;

#[derive(Debug, Default)]
struct Awaited {
    /// Ids (origin-id or stanza id) of live messages not in the archive yet.
    ids: HashSet<String>,
    /// Live messages without an id: any new message in the archive answers them.
    anonymous: bool,
    tries: u32,
    due: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ArchiveLag {
    awaited: BTreeMap<String, Awaited>,
    /// Archives read again because of lag, and cues given up on (for the stats).
    pub re_reads: u32,
    pub given_up: u32,
}

impl ArchiveLag {
    /// A live message for `archive` arrived: the archive should show it.
    pub fn expect(&mut self, archive: &str, id: &str) {
        let a = self.awaited.entry(archive.to_owned()).or_default();
        if id.is_empty() {
            a.anonymous = true;
        } else {
            a.ids.insert(id.to_owned());
        }
        a.tries = 0;
    }

    /// A page of `archive` was read holding messages with these ids.
    pub fn seen<'a>(&mut self, archive: &str, ids: impl IntoIterator<Item = &'a str>) {
        let Some(a) = self.awaited.get_mut(archive) else { return };
        for id in ids {
            a.anonymous = false;
            a.ids.remove(id);
        }
        if a.ids.is_empty() && !a.anonymous {
            self.awaited.remove(archive);
        }
    }

    /// A read of `archive` reached its end: if messages cued are still missing, when to read
    /// again (`None`: nothing missing, or given up).
    pub fn after_read(&mut self, archive: &str, now: Instant) -> Option<Instant> {
        let a = self.awaited.get_mut(archive)?;
        if a.tries >= MAX_TRIES {
            self.awaited.remove(archive);
            self.given_up += 1;
            return None;
        }
        let delay = FIRST_DELAY.saturating_mul(1 << a.tries.min(16)).min(MAX_DELAY);
        a.tries += 1;
        let due = now + delay;
        a.due = Some(due);
        Some(due)
    }

    /// When the next read is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.awaited.values().filter_map(|a| a.due).min()
    }

    /// The archives whose read is due at `now` (each returned once per scheduling).
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (archive, a) in &mut self.awaited {
            if a.due.is_some_and(|d| d <= now) {
                a.due = None;
                due.push(archive.clone());
            }
        }
        self.re_reads += due.len() as u32;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_missing_from_the_archive_is_read_again_with_growing_pauses_until_it_shows() {
        let t0 = Instant::now();
        let mut lag = ArchiveLag::default();
        lag.expect("", "m1");
        lag.seen("", ["other"]);
        let first = lag.after_read("", t0).expect("m1 not shown yet");
        assert_eq!(first, t0 + FIRST_DELAY);
        assert_eq!(lag.next_due(), Some(first));
        assert!(lag.take_due(t0).is_empty(), "not due yet");
        assert_eq!(lag.take_due(first), [""]);
        assert!(lag.take_due(first).is_empty(), "once per scheduling");
        assert_eq!(lag.after_read("", first), Some(first + FIRST_DELAY * 2), "the pause doubles");
        lag.seen("", ["m1"]);
        assert_eq!(lag.after_read("", first), None, "shown: nothing more to wait for");
        assert_eq!((lag.re_reads, lag.given_up), (1, 0));
    }

    #[test]
    fn it_gives_up_after_a_bounded_number_of_reads() {
        let mut now = Instant::now();
        let mut lag = ArchiveLag::default();
        lag.expect("room@muc", "m1");
        let mut pauses = Vec::new();
        while let Some(due) = lag.after_read("room@muc", now) {
            pauses.push(due - now);
            now = due;
            assert_eq!(lag.take_due(now), ["room@muc"]);
        }
        assert_eq!(pauses.len() as u32, MAX_TRIES);
        assert_eq!(*pauses.last().unwrap(), MAX_DELAY);
        assert_eq!((lag.re_reads, lag.given_up), (MAX_TRIES, 1));
        assert_eq!(lag.next_due(), None);
    }

    #[test]
    fn a_message_without_an_id_is_answered_by_any_new_message() {
        let t0 = Instant::now();
        let mut lag = ArchiveLag::default();
        lag.expect("", "");
        lag.seen("", []);
        assert!(lag.after_read("", t0).is_some(), "nothing new in the archive yet");
        lag.seen("", ["whatever"]);
        assert_eq!(lag.after_read("", t0), None);
    }
}
