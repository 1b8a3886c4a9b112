//! Property test of the two pure machines together (outbox and sync) against a model server:
//! any interleaving of sends, transmissions, acks, retryable refusals, disconnects, sync pages
//! and client crashes (state rebuilt from what the store made durable) keeps the outbox equal to
//! the durable unsent set, never puts a message on the server twice or out of creation order,
//! and, once the network behaves, delivers everything exactly once with the cursor caught up.
//!
//! The model server does what the reference server does: deduplicates by client id (a repeat
//! gets the original ack), numbers accepted messages in order, answers sync requests with pages
//! after a cursor, and, once it refused a send as retryable (rate limit), accepts on that
//! connection only the oldest refused message next, refusing the others too, so a pipelined
//! later message cannot overtake an earlier one.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;

use super::outbox::Outbox;
use super::sync::{SyncState, SyncStep};
use crate::model::Body;

#[derive(Debug, Clone)]
enum Op {
    Create,
    Transmit,
    ServerReads { refuse: bool },
    ClientReads,
    Disconnect,
    Connect,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Create),
        4 => Just(Op::Transmit),
        3 => Just(Op::ServerReads { refuse: false }),
        1 => Just(Op::ServerReads { refuse: true }),
        4 => Just(Op::ClientReads),
        1 => Just(Op::Disconnect),
        2 => Just(Op::Connect),
        1 => Just(Op::Crash),
    ]
}

enum ToServer {
    Send(String),
    Sync(Option<String>),
}

enum ToClient {
    Ack(String),
    Refused(String),
    Page { events: Vec<String>, last: Option<String>, has_more: bool },
}

const PAGE: usize = 3;

struct World {
    window: usize,
    // Client, in memory.
    outbox: Outbox,
    sync: SyncState,
    // Client, durable (the store).
    unsent: BTreeMap<i64, String>,
    cursor: Option<String>,
    received: HashMap<String, usize>,
    next_order: i64,
    // Network.
    connected: bool,
    to_server: VecDeque<ToServer>,
    to_client: VecDeque<ToClient>,
    // Server.
    log: Vec<String>,
    /// Refused sends on this connection, oldest first: only the first may be accepted next.
    held: VecDeque<String>,
}

impl World {
    fn new(window: usize) -> Self {
        World {
            window,
            outbox: Outbox::new(window),
            sync: SyncState::new(None),
            unsent: BTreeMap::new(),
            cursor: None,
            received: HashMap::new(),
            next_order: 0,
            connected: false,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            log: vec![],
            held: VecDeque::new(),
        }
    }

    fn drop_link(&mut self) {
        self.connected = false;
        self.to_server.clear();
        self.to_client.clear();
        self.held.clear(); // per connection
    }

    /// Applies one step; returns whether anything happened.
    fn step(&mut self, op: &Op) -> bool {
        match op {
            Op::Create => {
                let order = self.next_order;
                self.next_order += 1;
                let id = format!("m{order}");
                self.unsent.insert(order, id.clone());
                self.outbox.push(id, "c".into(), Body::Text(String::new()), order);
            }
            Op::Transmit => {
                if !self.connected {
                    return false;
                }
                let Some(e) = self.outbox.next_to_send() else { return false };
                self.to_server.push_back(ToServer::Send(e.client_id.clone()));
            }
            Op::ServerReads { refuse } => match self.to_server.pop_front() {
                None => return false,
                Some(ToServer::Send(id)) => {
                    let gate_open = self.held.front().is_none_or(|first| *first == id);
                    let reply = if self.log.contains(&id) {
                        ToClient::Ack(id)
                    } else if !gate_open || *refuse {
                        if !self.held.contains(&id) {
                            self.held.push_back(id.clone());
                        }
                        ToClient::Refused(id)
                    } else {
                        self.held.pop_front();
                        self.log.push(id.clone());
                        ToClient::Ack(id)
                    };
                    self.to_client.push_back(reply);
                }
                Some(ToServer::Sync(since)) => {
                    let from: usize = since.map_or(0, |s| s.parse().unwrap());
                    let to = (from + PAGE).min(self.log.len());
                    let events = self.log[from..to].to_vec();
                    let last = (to > from).then(|| to.to_string());
                    self.to_client.push_back(ToClient::Page { events, last, has_more: to < self.log.len() });
                }
            },
            Op::ClientReads => match self.to_client.pop_front() {
                None => return false,
                Some(ToClient::Ack(id)) => {
                    self.unsent.retain(|_, v| *v != id);
                    self.outbox.on_ack(&id);
                }
                Some(ToClient::Refused(id)) => self.outbox.on_refused(&id, true),
                Some(ToClient::Page { events, last, has_more }) => {
                    // Events and cursor commit together.
                    for e in &events {
                        *self.received.entry(e.clone()).or_default() += 1;
                    }
                    if let Some(last) = &last {
                        self.cursor = Some(last.clone());
                    }
                    if let SyncStep::Request { since } = self.sync.on_page_committed(last, events.len() as u64, has_more) {
                        self.to_server.push_back(ToServer::Sync(since));
                    }
                }
            },
            Op::Disconnect => {
                if !self.connected {
                    return false;
                }
                self.drop_link();
                self.outbox.on_disconnect();
                self.sync.on_disconnected();
            }
            Op::Connect => {
                if self.connected {
                    return false;
                }
                self.connected = true;
                let SyncStep::Request { since } = self.sync.on_connected() else { panic!("a new link syncs first") };
                self.to_server.push_back(ToServer::Sync(since));
            }
            Op::Crash => {
                self.drop_link();
                self.outbox = Outbox::new(self.window);
                for (order, id) in &self.unsent {
                    self.outbox.push(id.clone(), "c".into(), Body::Text(String::new()), *order);
                }
                self.sync = SyncState::new(self.cursor.clone());
            }
        }
        true
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.outbox.len(), self.unsent.len(), "the outbox mirrors the durable unsent set");
        for id in self.unsent.values() {
            prop_assert!(self.outbox.get(id).is_some(), "{} unsent but not in the outbox", id);
        }
        let orders: Vec<i64> = self.log.iter().map(|id| id[1..].parse().unwrap()).collect();
        prop_assert!(orders.windows(2).all(|w| w[0] < w[1]), "server order follows creation order: {:?}", orders);
        prop_assert!(self.received.values().all(|&n| n == 1), "an event applied twice");
        prop_assert!(self.cursor.as_ref().map_or(0, |c| c.parse::<usize>().unwrap()) <= self.log.len());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_outbox_and_cursor_consistent_and_loses_nothing(window in 1usize..6, ops in prop::collection::vec(op(), 1..300)) {
        let mut world = World::new(window);
        for op in &ops {
            world.step(op);
            world.check()?;
        }
        // The network behaves from now on: everything gets through; a last reconnect syncs what
        // was accepted after the last page (live events are not modelled).
        for _ in 0..2 {
            world.step(&Op::Disconnect);
            world.step(&Op::Connect);
            let calm = [Op::Transmit, Op::ServerReads { refuse: false }, Op::ClientReads];
            for _ in 0..100_000 {
                if !calm.iter().fold(false, |any, op| world.step(op) | any) {
                    break;
                }
                world.check()?;
            }
        }
        prop_assert!(world.unsent.is_empty(), "unsent after calm: {:?}", world.unsent);
        prop_assert_eq!(world.log.len() as i64, world.next_order, "every message on the server once");
        prop_assert_eq!(world.received.len(), world.log.len(), "every message synced back once");
        prop_assert_eq!(world.cursor.clone(), (!world.log.is_empty()).then(|| world.log.len().to_string()));
    }
}
