//! SDK clients as a chaos run uses them: one configuration per protocol (quick reconnects and
//! heartbeats, a store file per user), conversations set up the same way over both protocols,
//! the final count of what a client's store holds, and the wait until every store is complete.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive::transport::xmpp::{XmppConfig, XmppTransport};
use missive::{BackoffConfig, Client, ClientConfig, HeartbeatConfig, Message};

use crate::plan::{Counts, Plan, check_with_notes};

/// The chaos runs' password for every account.
pub const PASSWORD: &str = "chaos monkey battery";

/// Which transport the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// WebSocket + protobuf to the reference server.
    Native,
    /// XMPP over WebSocket (RFC 7395) to a real XMPP server, on `domain`.
    Xmpp { domain: &'static str },
}

impl Protocol {
    /// The client's URL for a server (or proxy) listening at `addr`.
    pub fn url(self, addr: std::net::SocketAddr) -> String {
        match self {
            Protocol::Native => format!("ws://{addr}"),
            Protocol::Xmpp { .. } => format!("ws://{addr}/xmpp-websocket"),
        }
    }

    /// Whether sequence numbers run 1, 2, 3, ... per conversation.
    pub fn dense(self) -> bool {
        self == Protocol::Native
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Native => "native",
            Protocol::Xmpp { .. } => "xmpp",
        })
    }
}

/// A client configuration: reconnects from 20 ms up to 1 s, a heartbeat every second that gives
/// up on a silent connection after 4 s.
pub fn config(protocol: Protocol, url: &str, store: &Path, seed: u64) -> ClientConfig {
    let config = match protocol {
        Protocol::Native => ClientConfig::native(url),
        Protocol::Xmpp { domain } => ClientConfig::with_transport(Arc::new(XmppTransport::new(XmppConfig::new(url, domain)))),
    };
    config
        .store_path(store)
        .device_id("chaos")
        .backoff(BackoffConfig { base: Duration::from_millis(20), cap: Duration::from_secs(1), reset_after: Duration::from_secs(30) })
        .heartbeat(HeartbeatConfig { interval: Duration::from_secs(1), timeout: Duration::from_secs(4) })
        .seed(seed)
}

/// Creates the plan's conversations: each member of a 1:1 opens it from its side, the first
/// member of a group creates it and the others wait until they know it. Returns, per user and
/// planned conversation, the user's local conversation id (`None` where not a member).
pub async fn set_up_conversations(plan: &Plan, clients: &[Client]) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut ids = vec![vec![None; plan.conversations.len()]; plan.users.len()];
    for (c, planned) in plan.conversations.iter().enumerate() {
        match &planned.group {
            None => {
                let (a, b) = (planned.members[0], planned.members[1]);
                for (me, peer) in [(a, b), (b, a)] {
                    let conversation = clients[me].create_direct(&plan.users[peer]).await.map_err(|e| format!("create_direct: {e}"))?;
                    ids[me][c] = Some(conversation.id);
                }
            }
            Some(title) => {
                let creator = planned.members[0];
                let others: Vec<&str> = planned.members[1..].iter().map(|&m| plan.users[m].as_str()).collect();
                let group = clients[creator].create_group(title, &others).await.map_err(|e| format!("create_group: {e}"))?;
                for &m in &planned.members {
                    ids[m][c] = Some(group.id.clone());
                }
            }
        }
    }
    // Every member must know every conversation (invitations travel through the server).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (user, conversations) in ids.iter().enumerate() {
        for id in conversations.iter().flatten() {
            while clients[user].conversation(id).await.map_err(|e| e.to_string())?.is_none_or(|c| !c.active) {
                if Instant::now() > deadline {
                    return Err(format!("{} never learnt conversation {id}", plan.users[user]));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(ids)
}

/// Every message of a conversation in `client`'s store, oldest first. The store only: asking the
/// server for history (as `Client::messages` does for a short page with sparse sequence numbers)
/// would fill in what sync lost, and loaded Prosody with archive queries on every count.
pub async fn all_messages(client: &Client, conversation: &str) -> Result<Vec<Message>, String> {
    let mut out = vec![];
    let mut before = None;
    loop {
        let page = client.cached_messages(conversation, before, 500).await.map_err(|e| e.to_string())?;
        out.extend(page.messages.iter().cloned());
        if !page.has_more {
            break;
        }
        before = page.next_before_seq;
    }
    out.reverse();
    Ok(out)
}

/// The counts over one user's store: every planned conversation it is a member of, and its outbox.
pub async fn count(protocol: Protocol, plan: &Plan, user: usize, client: &Client, ids: &[Option<String>]) -> Result<Counts, String> {
    let mut counts = Counts { unsent: client.unsent_count().await.map_err(|e| e.to_string())? as usize, ..Counts::default() };
    for (c, id) in ids.iter().enumerate() {
        if let Some(id) = id {
            let messages = all_messages(client, id).await?;
            let (found, notes) = check_with_notes(plan, user, c, &messages, protocol.dense());
            counts.add(found);
            if std::env::var_os("MISSIVE_CHAOS_DEBUG").is_some() {
                notes.iter().for_each(|note| eprintln!("{note}"));
            }
        }
    }
    Ok(counts)
}

/// Counts every store once a second until all are complete or `within` has passed; returns the
/// last counts.
pub async fn converge(
    protocol: Protocol,
    plan: &Plan,
    clients: &[Client],
    ids: &[Vec<Option<String>>],
    within: Duration,
) -> Result<Counts, String> {
    let started = Instant::now();
    let deadline = started + within;
    let progress = std::env::var_os("MISSIVE_CHAOS_PROGRESS").is_some();
    loop {
        let mut counts = Counts::default();
        let mut per_user = vec![];
        for (u, client) in clients.iter().enumerate() {
            let user = count(protocol, plan, u, client, &ids[u]).await?;
            per_user.push(format!("{} {}/{}/{}", plan.users[u], user.lost, user.not_final, user.unsent));
            counts.add(user);
        }
        if progress {
            let states: Vec<String> = clients.iter().map(|c| format!("{:?}", c.connection_state())).collect();
            eprintln!(
                "converge +{:.0} s: {counts}; lost/not final/unsent by user: {}; states: {}",
                started.elapsed().as_secs_f64(),
                per_user.join(", "),
                states.join(", ")
            );
        }
        if counts.clean() || Instant::now() > deadline {
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
