//! The outbox: messages committed locally and not yet acknowledged, in creation order.
//!
//! Pure: it decides what to put on the wire next and how acknowledgements, refusals and
//! disconnects change that; the engine does the I/O and the store keeps the durable copy.
//! Guarantees: at most `window` messages are in flight; messages are transmitted in creation
//! order, and after a disconnect every unacknowledged message is transmitted again in that same
//! order (the server's idempotency makes a repeat harmless); an acknowledgement is matched by
//! client id; a permanently refused message stays until the app retries, edits or cancels it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Body, ConversationId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    Queued,
    InFlight,
    /// Refused permanently; waits for the app.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub client_id: String,
    pub conversation: ConversationId,
    pub body: Body,
    /// Creation order (the store's row order).
    pub order: i64,
    pub state: EntryState,
    pub attempts: u32,
}

/// Why an entry cannot be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    NotFound,
    InFlight,
}

/// Every operation is O(log n) in the number of unsent messages (an offline client may hold
/// tens of thousands).
#[derive(Debug)]
pub struct Outbox {
    entries: BTreeMap<i64, Entry>,
    by_id: HashMap<String, i64>,
    queued: BTreeSet<i64>,
    in_flight: BTreeSet<i64>,
    window: usize,
}

impl Outbox {
    pub fn new(window: usize) -> Self {
        Outbox { entries: BTreeMap::new(), by_id: HashMap::new(), queued: BTreeSet::new(), in_flight: BTreeSet::new(), window: window.max(1) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn get(&self, client_id: &str) -> Option<&Entry> {
        self.entries.get(self.by_id.get(client_id)?)
    }

    fn set_state(&mut self, order: i64, state: EntryState) {
        let Some(entry) = self.entries.get_mut(&order) else { return };
        match entry.state {
            EntryState::Queued => self.queued.remove(&order),
            EntryState::InFlight => self.in_flight.remove(&order),
            EntryState::Failed => false,
        };
        match state {
            EntryState::Queued => self.queued.insert(order),
            EntryState::InFlight => self.in_flight.insert(order),
            EntryState::Failed => false,
        };
        entry.state = state;
    }

    /// Adds a committed message, keeping creation order. A known client id is ignored.
    pub fn push(&mut self, client_id: String, conversation: ConversationId, body: Body, order: i64) {
        if self.by_id.contains_key(&client_id) || self.entries.contains_key(&order) {
            return;
        }
        self.by_id.insert(client_id.clone(), order);
        self.entries.insert(order, Entry { client_id, conversation, body, order, state: EntryState::Queued, attempts: 0 });
        self.queued.insert(order);
    }

    /// The next message to transmit, if the window allows; marks it in flight.
    pub fn next_to_send(&mut self) -> Option<&Entry> {
        if self.in_flight.len() >= self.window {
            return None;
        }
        let order = *self.queued.first()?;
        self.set_state(order, EntryState::InFlight);
        let entry = self.entries.get_mut(&order)?;
        entry.attempts += 1;
        Some(entry)
    }

    /// The server acknowledged `client_id`: it leaves the outbox. Unknown ids are ignored
    /// (an ack of a replay after restart, or of a cancelled message).
    pub fn on_ack(&mut self, client_id: &str) -> Option<Entry> {
        let order = self.by_id.remove(client_id)?;
        self.queued.remove(&order);
        self.in_flight.remove(&order);
        self.entries.remove(&order)
    }

    /// The server refused `client_id`. Retryable: back in the queue at its place; permanent:
    /// parked as failed.
    pub fn on_refused(&mut self, client_id: &str, retryable: bool) {
        if let Some(&order) = self.by_id.get(client_id) {
            self.set_state(order, if retryable { EntryState::Queued } else { EntryState::Failed });
        }
    }

    /// The link dropped: everything in flight is queued again, order kept.
    pub fn on_disconnect(&mut self) {
        for order in std::mem::take(&mut self.in_flight) {
            if let Some(e) = self.entries.get_mut(&order) {
                e.state = EntryState::Queued;
                self.queued.insert(order);
            }
        }
    }

    fn order_of(&self, client_id: &str) -> Result<i64, ChangeError> {
        self.by_id.get(client_id).copied().ok_or(ChangeError::NotFound)
    }

    /// The app retries a failed message.
    pub fn retry(&mut self, client_id: &str) -> Result<(), ChangeError> {
        let order = self.order_of(client_id)?;
        if self.entries[&order].state == EntryState::Failed {
            self.set_state(order, EntryState::Queued);
        }
        Ok(())
    }

    /// The app edits a message that is not on the wire.
    pub fn edit(&mut self, client_id: &str, body: Body) -> Result<(), ChangeError> {
        let order = self.order_of(client_id)?;
        let e = self.entries.get_mut(&order).ok_or(ChangeError::NotFound)?;
        if e.state == EntryState::InFlight {
            return Err(ChangeError::InFlight);
        }
        e.body = body;
        Ok(())
    }

    /// The app cancels a message that is not on the wire.
    pub fn cancel(&mut self, client_id: &str) -> Result<Entry, ChangeError> {
        let order = self.order_of(client_id)?;
        if self.entries[&order].state == EntryState::InFlight {
            return Err(ChangeError::InFlight);
        }
        self.on_ack(client_id).ok_or(ChangeError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(n: usize, window: usize) -> Outbox {
        let mut o = Outbox::new(window);
        for i in 0..n {
            o.push(format!("m{i}"), "c".into(), Body::Text(format!("{i}")), i as i64);
        }
        o
    }

    fn drain(o: &mut Outbox) -> Vec<String> {
        let mut out = vec![];
        while let Some(e) = o.next_to_send() {
            out.push(e.client_id.clone());
        }
        out
    }

    #[test]
    fn sends_in_order_within_the_window() {
        let mut o = outbox(5, 2);
        assert_eq!(drain(&mut o), vec!["m0", "m1"]);
        assert!(o.on_ack("m0").is_some());
        assert_eq!(drain(&mut o), vec!["m2"]);
        assert_eq!(o.in_flight(), 2);
    }

    #[test]
    fn a_disconnect_resends_everything_unacknowledged_in_order() {
        let mut o = outbox(4, 10);
        drain(&mut o);
        o.on_ack("m1"); // acks may arrive for any in-flight message
        o.on_disconnect();
        assert_eq!(o.in_flight(), 0);
        assert_eq!(drain(&mut o), vec!["m0", "m2", "m3"]);
        assert_eq!(o.get("m0").unwrap().attempts, 2);
    }

    #[test]
    fn out_of_order_pushes_are_placed_by_creation_order() {
        let mut o = Outbox::new(10);
        o.push("b".into(), "c".into(), Body::Text("b".into()), 2);
        o.push("a".into(), "c".into(), Body::Text("a".into()), 1);
        o.push("c".into(), "c".into(), Body::Text("c".into()), 3);
        o.push("a".into(), "c".into(), Body::Text("dup".into()), 1);
        assert_eq!(drain(&mut o), vec!["a", "b", "c"]);
    }

    #[test]
    fn refusals_and_app_changes() {
        let mut o = outbox(3, 10);
        drain(&mut o);
        o.on_refused("m0", false);
        o.on_refused("m1", true);
        assert_eq!(o.get("m0").unwrap().state, EntryState::Failed);
        assert_eq!(drain(&mut o), vec!["m1"], "retryable goes again; failed waits");
        assert_eq!(o.cancel("m2"), Err(ChangeError::InFlight));
        assert_eq!(o.edit("m0", Body::Text("fixed".into())), Ok(()));
        o.retry("m0").unwrap();
        assert_eq!(drain(&mut o), vec!["m0"]);
        assert_eq!(o.get("m0").unwrap().body, Body::Text("fixed".into()));
        o.on_disconnect();
        assert_eq!(o.cancel("m2").unwrap().client_id, "m2");
        assert_eq!(o.cancel("zz"), Err(ChangeError::NotFound));
        assert!(o.on_ack("unknown").is_none());
    }

    /// Any interleaving of sends, acks, refusals and disconnects keeps the counts consistent and
    /// acknowledges every message exactly once (seeded random walk).
    #[test]
    fn random_interleavings_keep_the_outbox_consistent() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = 40;
            let mut o = outbox(n, 1 + rng.random_range(0..8));
            let mut acked = std::collections::HashSet::new();
            let mut wire: Vec<String> = vec![];
            for _ in 0..10_000 {
                match rng.random_range(0..10) {
                    0..=3 => {
                        if let Some(e) = o.next_to_send() {
                            wire.push(e.client_id.clone());
                        }
                    }
                    4..=7 if !wire.is_empty() => {
                        let id = wire.remove(rng.random_range(0..wire.len()));
                        if o.on_ack(&id).is_some() {
                            assert!(acked.insert(id), "acknowledged twice");
                        }
                    }
                    8 => {
                        o.on_disconnect();
                        wire.clear();
                    }
                    _ => {}
                }
                let in_flight = (0..n).filter(|i| o.get(&format!("m{i}")).is_some_and(|e| e.state == EntryState::InFlight)).count();
                assert_eq!(in_flight, o.in_flight());
                assert_eq!(acked.len() + o.len(), n);
            }
        }
    }
}
