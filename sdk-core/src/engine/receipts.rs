//! Which delivered receipts go out now, and which receipts of single messages are already on
//! their way. Pure: the engine passes the time and sends what it is told to.
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

/// A receipt due for a conversation: the newest sequence number delivered.
pub type Due = u64;

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
                Some(seq) if *seq >= due => {}
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

/// Receipts of single messages (XMPP: XEP-0184) sent on the current link and not yet
/// confirmed: the store still owes them until the server has them, so each new delivered
/// receipt would otherwise send them again. Forgotten with the link (the next one sends what is
/// still owed); pruned to what the store still owes at each use, so it never outgrows that.
#[derive(Debug, Default)]
pub struct ReceiptsInFlight {
    sent: BTreeMap<String, std::collections::HashSet<String>>,
}

impl ReceiptsInFlight {
    /// Of the receipts `owed` in a conversation (all of them, as the store lists them), those
    /// not sent yet on this link, which are noted as sent.
    pub fn to_send(&mut self, conversation: &str, owed: Vec<MessageRef>) -> Vec<MessageRef> {
        let key = |m: &MessageRef| m.server_id.clone().unwrap_or_else(|| m.client_id.clone());
        let sent = self.sent.entry(conversation.to_owned()).or_default();
        let still_owed: std::collections::HashSet<String> = owed.iter().map(key).collect();
        sent.retain(|k| still_owed.contains(k));
        owed.into_iter().filter(|m| sent.insert(key(m))).collect()
    }

    /// The link is gone: what was sent on it may not have arrived.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_in_flight_go_once_per_link_until_confirmed() {
        let r = |id: &str| MessageRef { client_id: format!("c{id}"), server_id: Some(id.into()) };
        let ids = |v: Vec<MessageRef>| v.into_iter().map(|m| m.server_id.unwrap()).collect::<Vec<_>>();
        let mut f = ReceiptsInFlight::default();
        assert_eq!(ids(f.to_send("a", vec![r("1"), r("2")])), ["1", "2"]);
        assert_eq!(ids(f.to_send("a", vec![r("1"), r("2"), r("3")])), ["3"], "1 and 2 are on their way");
        assert_eq!(ids(f.to_send("b", vec![r("1")])), ["1"], "per conversation");
        // 1 and 2 confirmed (no longer owed), 4 new; then 1 owed again (it cannot be, but if the
        // store says so, it is sent).
        assert_eq!(ids(f.to_send("a", vec![r("3"), r("4")])), ["4"]);
        assert_eq!(ids(f.to_send("a", vec![r("1"), r("3"), r("4")])), ["1"]);
        f.clear();
        assert_eq!(ids(f.to_send("a", vec![r("3")])), ["3"], "a new link sends what is still owed");
    }

    fn due(seq: u64) -> Due {
        seq
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
