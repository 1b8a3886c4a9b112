//! The workload of a chaos run and its final check: who is in which conversation, which message
//! each user sends where (the `n`-th message of a user is `"<user>-<n>"`, sent to the next
//! conversation of its route in turn), and the message-by-message count of what one member's
//! store holds at the end. Pure: no I/O here.

use std::collections::HashMap;
use std::fmt;

use missive::{Message, MessageState};

/// A conversation of the plan.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Group title; `None` for a 1:1 conversation.
    pub group: Option<String>,
    /// Indices into [`Plan::users`]; the first one creates the conversation.
    pub members: Vec<usize>,
}

/// The text of the `n`-th message `user` sends.
pub fn text(user: &str, n: usize) -> String {
    format!("{user}-{n:05}")
}

/// Users, conversations and routes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub users: Vec<String>,
    pub conversations: Vec<Planned>,
    /// For each user, the conversations its messages go to in turn (empty: sends nothing).
    pub routes: Vec<Vec<usize>>,
    /// Messages each sending user sends.
    pub per_user: usize,
}

impl Plan {
    /// `names.len()` users in a ring of 1:1 conversations (each with the next), one group of
    /// everyone and one of every other user; the first `senders` users send `per_user`
    /// messages each, over their 1:1s and groups in turn.
    pub fn mesh(names: &[&str], senders: usize, per_user: usize) -> Plan {
        let n = names.len();
        let mut conversations: Vec<Planned> = (0..n).map(|i| Planned { group: None, members: vec![i, (i + 1) % n] }).collect();
        conversations.push(Planned { group: Some("everyone".into()), members: (0..n).collect() });
        conversations.push(Planned { group: Some("evens".into()), members: (0..n).step_by(2).collect() });
        let routes =
            (0..n)
                .map(|u| {
                    if u < senders { (0..conversations.len()).filter(|&c| conversations[c].members.contains(&u)).collect() } else { vec![] }
                })
                .collect();
        Plan { users: names.iter().map(|s| s.to_string()).collect(), conversations, routes, per_user }
    }

    /// How many messages `user` sends.
    pub fn sends(&self, user: usize) -> usize {
        if self.routes[user].is_empty() { 0 } else { self.per_user }
    }

    /// All messages of the run.
    pub fn total(&self) -> usize {
        (0..self.users.len()).map(|u| self.sends(u)).sum()
    }

    /// The text of `user`'s `n`-th message.
    pub fn text(&self, user: usize, n: usize) -> String {
        text(&self.users[user], n)
    }

    /// The conversation `user`'s `n`-th message goes to.
    pub fn target(&self, user: usize, n: usize) -> usize {
        let route = &self.routes[user];
        route[n % route.len()]
    }

    /// The sender and number of a text of this plan.
    pub fn parse(&self, text: &str) -> Option<(usize, usize)> {
        let (name, n) = text.rsplit_once('-')?;
        Some((self.users.iter().position(|u| u == name)?, n.parse().ok()?))
    }

    /// The messages every member of `conversation` must end up with.
    pub fn expected(&self, conversation: usize) -> Vec<(usize, usize)> {
        (0..self.users.len())
            .flat_map(|u| (0..self.sends(u)).map(move |n| (u, n)))
            .filter(|&(u, n)| self.target(u, n) == conversation)
            .collect()
    }
}

/// Message-by-message counts over every member's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Copies the plan expects (one per member and message).
    pub expected: usize,
    /// Expected copies found (each counted once).
    pub found: usize,
    /// Expected copies missing.
    pub lost: usize,
    /// Extra copies of a message already found.
    pub duplicated: usize,
    /// Messages out of their sender's order, or sequence numbers out of line.
    pub misordered: usize,
    /// Messages that belong to no plan or to another conversation.
    pub unexpected: usize,
    /// Found copies not in their final state (outgoing: delivered or read; incoming: delivered).
    pub not_final: usize,
    /// Messages still unsent in some outbox.
    pub unsent: usize,
}

impl Counts {
    /// Nothing lost, duplicated, misordered, unexpected, unfinished or unsent.
    pub fn clean(&self) -> bool {
        self.found == self.expected && self.lost + self.duplicated + self.misordered + self.unexpected + self.not_final + self.unsent == 0
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: Counts) {
        self.expected += other.expected;
        self.found += other.found;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.misordered += other.misordered;
        self.unexpected += other.unexpected;
        self.not_final += other.not_final;
        self.unsent += other.unsent;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copies {}/{}, lost {}, duplicated {}, misordered {}, unexpected {}, not final {}, unsent {}",
            self.found, self.expected, self.lost, self.duplicated, self.misordered, self.unexpected, self.not_final, self.unsent
        )
    }
}

/// Counts one member's copy of one conversation: `messages` oldest first, as listed by the
/// member's client. `dense`: the transport numbers a conversation 1, 2, 3, ... (native), so the
/// sequence numbers must be exactly that; otherwise they must only grow. Also returns a line for
/// each message not in its final state and for what is missing.
pub fn check_with_notes(plan: &Plan, member: usize, conversation: usize, messages: &[Message], dense: bool) -> (Counts, Vec<String>) {
    let mut notes = vec![];
    let expected = plan.expected(conversation);
    let mut counts = Counts { expected: expected.len(), ..Counts::default() };
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    let mut last_n: HashMap<usize, usize> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let parsed = plan.parse(&m.body.preview()).filter(|&(u, n)| n < plan.sends(u) && plan.target(u, n) == conversation);
        let Some((sender, n)) = parsed else {
            counts.unexpected += 1;
            continue;
        };
        let copies = seen.entry((sender, n)).or_default();
        *copies += 1;
        if *copies > 1 {
            counts.duplicated += 1;
            continue;
        }
        if last_n.insert(sender, n).is_some_and(|previous| previous >= n) {
            counts.misordered += 1;
        }
        let in_line = match (m.seq, i.checked_sub(1).and_then(|p| messages[p].seq)) {
            (Some(seq), _) if dense => seq == i as u64 + 1,
            (Some(seq), Some(previous)) => seq > previous,
            (Some(_), None) => true,
            (None, _) => true, // unacknowledged: counted as not final
        };
        counts.misordered += usize::from(!in_line);
        let outgoing = sender == member;
        let final_state =
            if outgoing { matches!(m.state, MessageState::Delivered | MessageState::Read) } else { m.state == MessageState::Delivered };
        counts.not_final += usize::from(m.outgoing != outgoing || !final_state);
        if m.outgoing != outgoing || !final_state {
            notes.push(format!(
                "not final: member {member} conversation {conversation} {} seq {:?} state {:?} outgoing {}",
                m.body.preview(),
                m.seq,
                m.state,
                m.outgoing
            ));
        }
    }
    counts.found = seen.len();
    counts.lost = expected.len() - counts.found;
    if counts.lost > 0 {
        let missing: Vec<String> = expected.iter().filter(|k| !seen.contains_key(k)).take(12).map(|&(u, n)| plan.text(u, n)).collect();
        notes.push(format!("lost: member {member} conversation {conversation}: {} missing, e.g. {missing:?}", counts.lost));
    }
    (counts, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive::Body;

    fn check(plan: &Plan, member: usize, conversation: usize, messages: &[Message], dense: bool) -> Counts {
        check_with_notes(plan, member, conversation, messages, dense).0
    }

    fn message(plan: &Plan, member: usize, sender: usize, n: usize, seq: u64) -> Message {
        Message {
            id: format!("{sender}-{n}"),
            conversation_id: "c".into(),
            sender: plan.users[sender].clone(),
            client_id: String::new(),
            server_id: Some(seq.to_string()),
            seq: Some(seq),
            body: Body::Text(plan.text(sender, n)),
            state: MessageState::Delivered,
            outgoing: sender == member,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn the_mesh_routes_every_message_to_a_conversation_of_its_sender() {
        let plan = Plan::mesh(&["a", "b", "c", "d", "e"], 5, 100);
        assert_eq!(plan.total(), 500);
        let all: usize = (0..plan.conversations.len()).map(|c| plan.expected(c).len()).sum();
        assert_eq!(all, 500);
        for u in 0..5 {
            for n in 0..100 {
                assert!(plan.conversations[plan.target(u, n)].members.contains(&u));
            }
        }
        assert_eq!(plan.parse("c-00042"), Some((2, 42)));
        assert_eq!(plan.parse("z-1"), None);
    }

    #[test]
    fn a_complete_store_counts_clean_and_each_fault_is_counted() {
        let plan = Plan::mesh(&["a", "b", "c"], 3, 30);
        let conversation = plan.conversations.len() - 2; // everyone
        let expected = plan.expected(conversation);
        let good: Vec<Message> = expected.iter().enumerate().map(|(i, &(u, n))| message(&plan, 1, u, n, i as u64 + 1)).collect();
        let counts = check(&plan, 1, conversation, &good, true);
        assert!(counts.clean(), "{counts}");
        let mut lost = good.clone();
        lost.remove(3);
        let counts = check(&plan, 1, conversation, &lost, false);
        assert_eq!((counts.lost, counts.misordered), (1, 0));
        let mut duplicated = good.clone();
        duplicated.push(good[0].clone());
        assert_eq!(check(&plan, 1, conversation, &duplicated, false).duplicated, 1);
        let mut swapped = good.clone();
        let later = swapped.iter().rposition(|m| m.sender == swapped[0].sender).unwrap();
        swapped.swap(0, later);
        assert!(check(&plan, 1, conversation, &swapped, false).misordered >= 1);
        let mut sent_only = good.clone();
        let mine = sent_only.iter().position(|m| m.outgoing).unwrap();
        sent_only[mine].state = MessageState::Sent;
        assert_eq!(check(&plan, 1, conversation, &sent_only, true).not_final, 1);
        assert_eq!(check(&plan, 1, 0, &good, true).unexpected, good.len(), "another conversation's messages");
    }
}
