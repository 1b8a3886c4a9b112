//! The data the app sees: conversations, messages and their states, bodies, connection states.
//! Ids are opaque strings so that one model serves every transport (native ids, XMPP JIDs).

use std::collections::BTreeMap;
use std::time::Duration;

/// A conversation id: opaque, assigned by the server.
pub type ConversationId = String;

/// A message id, unique in the local store: `"{sender}:{client_id}"`.
pub type MessageId = String;

/// What kind of conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    /// One to one.
    Direct,
    /// A group with a member list.
    Group,
    /// A chat room: open to join, messages reach the members present.
    Room,
}

/// A conversation as cached locally.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: String,
    pub members: Vec<String>,
    /// The newest message, pending local echoes included.
    pub last_message: Option<Message>,
    /// Messages from others newer than this user's read marker.
    pub unread_count: u32,
    pub draft: Option<String>,
    /// False once this user left or was removed.
    pub active: bool,
}

impl Conversation {
    /// A name to show: the title, or for a 1:1 the other member.
    pub fn display_name(&self, me: &str) -> String {
        if !self.title.is_empty() {
            return self.title.clone();
        }
        let others: Vec<&str> = self.members.iter().map(String::as_str).filter(|m| *m != me).collect();
        if others.is_empty() { self.id.clone() } else { others.join(", ") }
    }
}

/// Media attached to an image, video or file message (the bytes live elsewhere, at `url`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Media {
    pub url: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub duration_ms: u32,
    pub thumbnail: Vec<u8>,
    pub caption: String,
}

/// A message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Text(String),
    Image(Media),
    Video(Media),
    File(Media),
    /// An app-defined payload, e.g. a poll or a location.
    Custom { kind: String, payload: Vec<u8>, metadata: BTreeMap<String, String> },
}

impl Body {
    /// A short text for previews and logs.
    pub fn preview(&self) -> String {
        match self {
            Body::Text(t) => t.clone(),
            Body::Image(m) => format!("[image] {}", m.caption),
            Body::Video(m) => format!("[video] {}", m.caption),
            Body::File(m) => format!("[file] {}", m.name),
            Body::Custom { kind, .. } => format!("[{kind}]"),
        }
    }
}

/// Where a message is in its life. Outgoing messages move Pending → Sending → Sent → Delivered →
/// Read, or to Failed; incoming messages are Delivered, then Read once the app marks them read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Committed locally, waiting to be sent.
    Pending,
    /// On the wire, not yet acknowledged.
    Sending,
    /// Acknowledged by the server after its commit.
    Sent,
    Delivered,
    Read,
    /// Refused. `retryable` failures are retried automatically; others wait for the app to retry,
    /// edit or cancel.
    Failed { reason: String, retryable: bool },
}

impl MessageState {
    pub(crate) fn code(&self) -> i64 {
        match self {
            MessageState::Pending => 0,
            MessageState::Sending => 1,
            MessageState::Sent => 2,
            MessageState::Delivered => 3,
            MessageState::Read => 4,
            MessageState::Failed { .. } => 5,
        }
    }
}

/// A message as cached locally.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: String,
    /// The sender's idempotency key (a UUIDv7 for messages sent by this SDK).
    pub client_id: String,
    /// Assigned by the server; `None` until acknowledged.
    pub server_id: Option<String>,
    /// Per-conversation order assigned by the server; `None` until acknowledged.
    pub seq: Option<u64>,
    pub body: Body,
    pub state: MessageState,
    /// True when sent by this user (from this or another device).
    pub outgoing: bool,
    /// Local creation time for outgoing messages, server time otherwise (ms since the epoch).
    pub timestamp_ms: i64,
}

/// Why the client is disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// No session yet: register or log in.
    NotLoggedIn,
    LoggedOut,
    /// The app said the network is gone; reconnects when it says it is back.
    NetworkLost,
    /// The client was shut down.
    Stopped,
}

/// The connection state the app observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Disconnected { reason: DisconnectReason },
    Connecting,
    /// Authenticated and live (sync may still be catching up; see `Event::SyncProgress`).
    Connected,
    /// Waiting before reconnect attempt `attempt`.
    Reconnecting { attempt: u32, next_in: Duration },
    /// Credentials were refused; no retry until the app logs in again.
    AuthFailed { message: String },
}

/// Receipt kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// Presence states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// One page of a conversation's messages, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Older messages exist (in the cache or on the server).
    pub has_more: bool,
    /// Pass as `before_seq` to get the next (older) page.
    pub next_before_seq: Option<u64>,
}
