//! Which delivered receipts go out now. Pure: the engine passes the time and sends what it is
//! told to.
//!
//! Live traffic gets its receipt at once. During a catch-up the newest receipt per conversation
//! is held back and sent at most every [`RECEIPTS_DURING_CATCH_UP`] and when the catch-up ends,
//! instead of one per page: each receipt costs the server an inbox event and the sender an update
//! of every message it covers. A held-back receipt is still owed in the store, so one forgotten
//! with a lost link (see [`DeliveredReceipts::clear`]) is sent on the next link.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::transport::MessageRef;

/// How often delivered receipts go out while a catch-up is still paging.
pub const RECEIPTS_DURING_CATCH_UP: Duration = Duration::from_secs(1);

/// A receipt due for a conversation: the newest sequence number delivered and its message.
pub type Due = (u64, MessageRef);

#[derive(Debug)]
pub struct DeliveredReceipts {
    held: BTreeMap<String, Due>,
    sent_at: Instant,
}

impl DeliveredReceipts {
    pub fn new(now: Instant) -> Self {
        DeliveredReceipts { held: BTreeMap::new(), sent_at: now }
    }

    /// Notes what a stored batch delivered (`catching_up`: more pages follow) and returns the
    /// receipts to send now, the newest per conversation.
    pub fn on_stored(&mut self, delivered: Vec<(String, Due)>, catching_up: bool, now: Instant) -> Vec<(String, Due)> {
        for (conversation, due) in delivered {
            match self.held.get(&conversation) {
                Some((seq, _)) if *seq >= due.0 => {}
                _ => {
                    self.held.insert(conversation, due);
                }
            }
        }
        if self.held.is_empty() || (catching_up && now.saturating_duration_since(self.sent_at) < RECEIPTS_DURING_CATCH_UP) {
            return Vec::new();
        }
        self.sent_at = now;
        std::mem::take(&mut self.held).into_iter().collect()
    }

    /// The link is gone: forget what is held (the store still owes it).
    pub fn clear(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(seq: u64) -> Due {
        (seq, MessageRef { client_id: format!("c{seq}"), server_id: None })
    }

    #[test]
    fn live_receipts_go_at_once() {
        let t0 = Instant::now();
        let mut r = DeliveredReceipts::new(t0);
        assert_eq!(r.on_stored(vec![("a".into(), due(1))], false, t0), vec![("a".into(), due(1))]);
        assert_eq!(r.on_stored(vec![("a".into(), due(2))], false, t0), vec![("a".into(), due(2))], "no pause between live ones");
    }

    #[test]
    fn a_catch_up_sends_the_newest_per_conversation_once_a_second_and_at_its_end() {
        let t0 = Instant::now();
        let mut r = DeliveredReceipts::new(t0);
        assert!(r.on_stored(vec![("a".into(), due(500))], true, t0).is_empty(), "held during the first second");
        assert!(r.on_stored(vec![("a".into(), due(1000)), ("b".into(), due(3))], true, t0 + Duration::from_millis(400)).is_empty());
        let sent = r.on_stored(vec![("a".into(), due(1500))], true, t0 + Duration::from_millis(1100));
        assert_eq!(sent, vec![("a".into(), due(1500)), ("b".into(), due(3))], "a second on: the newest of each");
        assert!(r.on_stored(vec![("a".into(), due(2000))], true, t0 + Duration::from_millis(1500)).is_empty());
        let sent = r.on_stored(vec![("a".into(), due(2100))], false, t0 + Duration::from_millis(1600));
        assert_eq!(sent, vec![("a".into(), due(2100))], "the end of the catch-up sends what is held");
    }

    #[test]
    fn an_older_receipt_does_not_replace_a_newer_one_and_clear_forgets() {
        let t0 = Instant::now();
        let mut r = DeliveredReceipts::new(t0);
        assert!(r.on_stored(vec![("a".into(), due(9)), ("a".into(), due(4))], true, t0).is_empty());
        r.clear();
        assert!(r.on_stored(vec![], false, t0).is_empty(), "nothing held after clear");
        r.on_stored(vec![("a".into(), due(9))], true, t0);
        let sent = r.on_stored(vec![("a".into(), due(4))], false, t0);
        assert_eq!(sent, vec![("a".into(), due(9))]);
    }
}
