//! The records and enums Kotlin and Swift see, and their conversions from the core's model.
//! Durations cross as milliseconds; ids as strings.

use std::collections::HashMap;

use missive as core;

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ConversationKind {
    Direct,
    Group,
    Room,
}

#[derive(Debug, Clone, PartialEq, Default, uniffi::Record)]
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

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum MessageBody {
    Text { text: String },
    Image { media: Media },
    Video { media: Media },
    File { media: Media },
    Custom { kind: String, payload: Vec<u8>, metadata: HashMap<String, String> },
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum MessageState {
    Pending,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed { reason: String, retryable: bool },
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub sender: String,
    pub client_id: String,
    pub server_id: Option<String>,
    pub seq: Option<u64>,
    pub body: MessageBody,
    pub state: MessageState,
    pub outgoing: bool,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Conversation {
    pub id: String,
    pub kind: ConversationKind,
    pub title: String,
    pub members: Vec<String>,
    pub last_message: Option<Message>,
    pub unread_count: u32,
    pub draft: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub next_before_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum DisconnectReason {
    NotLoggedIn,
    LoggedOut,
    NetworkLost,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ConnectionState {
    Disconnected { reason: DisconnectReason },
    Connecting,
    Connected,
    Reconnecting { attempt: u32, next_in_ms: u64 },
    AuthFailed { message: String },
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// One event for the app (see the core's `Event`).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ClientEvent {
    ConnectionChanged { state: ConnectionState },
    MessageAdded { message: Message },
    MessageUpdated { message: Message },
    MessageRemoved { id: String, conversation_id: String },
    ConversationChanged { conversation: Conversation },
    Receipt { conversation_id: String, user: String, kind: ReceiptKind, seq: u64 },
    Typing { conversation_id: String, user: String, active: bool },
    PresenceChanged { user: String, presence: Presence, status: String },
    SyncProgress { applied: u64, caught_up: bool },
    Lagged { missed: u64 },
}

/// How to build a client.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientSettings {
    /// `ws://` or `wss://` URL of a Missive reference server, or with `xmpp_domain` the
    /// WebSocket endpoint (RFC 7395) of an XMPP server.
    pub server_url: String,
    /// Speak XMPP to a standard XMPP server (Prosody, ejabberd, ...) serving this domain, with
    /// groups on `conference.<domain>`; `None` speaks the Missive protocol.
    pub xmpp_domain: Option<String>,
    /// SQLite file for messages, outbox and session; `None` keeps everything in memory.
    pub store_path: Option<String>,
    pub device_id: String,
    /// Extra trusted certificates (DER) for `wss` to a private CA; empty uses the web PKI.
    pub trusted_certificates: Vec<Vec<u8>>,
    /// SHA-256 fingerprints (32 bytes each) of pinned leaf certificates; when set, only these
    /// are accepted.
    pub certificate_pins_sha256: Vec<Vec<u8>>,
    /// Turns certificate verification off. Development against a loopback server only.
    pub insecure_development_only: bool,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
}

/// Default settings for `server_url`: in-memory store, device "default", backoff 250 ms..30 s,
/// heartbeat every 20 s with a 45 s timeout.
#[uniffi::export]
pub fn default_settings(server_url: String) -> ClientSettings {
    ClientSettings {
        server_url,
        xmpp_domain: None,
        store_path: None,
        device_id: "default".into(),
        trusted_certificates: vec![],
        certificate_pins_sha256: vec![],
        insecure_development_only: false,
        backoff_base_ms: 250,
        backoff_cap_ms: 30_000,
        heartbeat_interval_ms: 20_000,
        heartbeat_timeout_ms: 45_000,
    }
}

impl From<core::ConversationKind> for ConversationKind {
    fn from(k: core::ConversationKind) -> Self {
        match k {
            core::ConversationKind::Direct => ConversationKind::Direct,
            core::ConversationKind::Group => ConversationKind::Group,
            core::ConversationKind::Room => ConversationKind::Room,
        }
    }
}

impl From<core::Media> for Media {
    fn from(m: core::Media) -> Self {
        Media {
            url: m.url,
            mime_type: m.mime_type,
            size_bytes: m.size_bytes,
            name: m.name,
            width: m.width,
            height: m.height,
            duration_ms: m.duration_ms,
            thumbnail: m.thumbnail,
            caption: m.caption,
        }
    }
}

impl From<Media> for core::Media {
    fn from(m: Media) -> Self {
        core::Media {
            url: m.url,
            mime_type: m.mime_type,
            size_bytes: m.size_bytes,
            name: m.name,
            width: m.width,
            height: m.height,
            duration_ms: m.duration_ms,
            thumbnail: m.thumbnail,
            caption: m.caption,
        }
    }
}

impl From<core::Body> for MessageBody {
    fn from(b: core::Body) -> Self {
        match b {
            core::Body::Text(text) => MessageBody::Text { text },
            core::Body::Image(m) => MessageBody::Image { media: m.into() },
            core::Body::Video(m) => MessageBody::Video { media: m.into() },
            core::Body::File(m) => MessageBody::File { media: m.into() },
            core::Body::Custom { kind, payload, metadata } => MessageBody::Custom { kind, payload, metadata: metadata.into_iter().collect() },
        }
    }
}

impl From<MessageBody> for core::Body {
    fn from(b: MessageBody) -> Self {
        match b {
            MessageBody::Text { text } => core::Body::Text(text),
            MessageBody::Image { media } => core::Body::Image(media.into()),
            MessageBody::Video { media } => core::Body::Video(media.into()),
            MessageBody::File { media } => core::Body::File(media.into()),
            MessageBody::Custom { kind, payload, metadata } => core::Body::Custom { kind, payload, metadata: metadata.into_iter().collect() },
        }
    }
}

impl From<core::MessageState> for MessageState {
    fn from(s: core::MessageState) -> Self {
        match s {
            core::MessageState::Pending => MessageState::Pending,
            core::MessageState::Sending => MessageState::Sending,
            core::MessageState::Sent => MessageState::Sent,
            core::MessageState::Delivered => MessageState::Delivered,
            core::MessageState::Read => MessageState::Read,
            core::MessageState::Failed { reason, retryable } => MessageState::Failed { reason, retryable },
        }
    }
}

impl From<core::Message> for Message {
    fn from(m: core::Message) -> Self {
        Message {
            id: m.id,
            conversation_id: m.conversation_id,
            sender: m.sender,
            client_id: m.client_id,
            server_id: m.server_id,
            seq: m.seq,
            body: m.body.into(),
            state: m.state.into(),
            outgoing: m.outgoing,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

impl From<core::Conversation> for Conversation {
    fn from(c: core::Conversation) -> Self {
        Conversation {
            id: c.id,
            kind: c.kind.into(),
            title: c.title,
            members: c.members,
            last_message: c.last_message.map(Into::into),
            unread_count: c.unread_count,
            draft: c.draft,
            active: c.active,
        }
    }
}

impl From<core::MessagePage> for MessagePage {
    fn from(p: core::MessagePage) -> Self {
        MessagePage { messages: p.messages.into_iter().map(Into::into).collect(), has_more: p.has_more, next_before_seq: p.next_before_seq }
    }
}

impl From<core::ConnectionState> for ConnectionState {
    fn from(s: core::ConnectionState) -> Self {
        match s {
            core::ConnectionState::Disconnected { reason } => ConnectionState::Disconnected {
                reason: match reason {
                    core::DisconnectReason::NotLoggedIn => DisconnectReason::NotLoggedIn,
                    core::DisconnectReason::LoggedOut => DisconnectReason::LoggedOut,
                    core::DisconnectReason::NetworkLost => DisconnectReason::NetworkLost,
                    core::DisconnectReason::Stopped => DisconnectReason::Stopped,
                },
            },
            core::ConnectionState::Connecting => ConnectionState::Connecting,
            core::ConnectionState::Connected => ConnectionState::Connected,
            core::ConnectionState::Reconnecting { attempt, next_in } => {
                ConnectionState::Reconnecting { attempt, next_in_ms: next_in.as_millis() as u64 }
            }
            core::ConnectionState::AuthFailed { message } => ConnectionState::AuthFailed { message },
        }
    }
}

fn receipt_kind(k: core::ReceiptKind) -> ReceiptKind {
    match k {
        core::ReceiptKind::Delivered => ReceiptKind::Delivered,
        core::ReceiptKind::Read => ReceiptKind::Read,
    }
}

impl From<core::Presence> for Presence {
    fn from(p: core::Presence) -> Self {
        match p {
            core::Presence::Online => Presence::Online,
            core::Presence::Away => Presence::Away,
            core::Presence::Offline => Presence::Offline,
        }
    }
}

impl From<Presence> for core::Presence {
    fn from(p: Presence) -> Self {
        match p {
            Presence::Online => core::Presence::Online,
            Presence::Away => core::Presence::Away,
            Presence::Offline => core::Presence::Offline,
        }
    }
}

impl From<core::Event> for ClientEvent {
    fn from(e: core::Event) -> Self {
        match e {
            core::Event::ConnectionChanged(state) => ClientEvent::ConnectionChanged { state: state.into() },
            core::Event::MessageAdded(m) => ClientEvent::MessageAdded { message: m.into() },
            core::Event::MessageUpdated(m) => ClientEvent::MessageUpdated { message: m.into() },
            core::Event::MessageRemoved { id, conversation_id } => ClientEvent::MessageRemoved { id, conversation_id },
            core::Event::ConversationChanged(c) => ClientEvent::ConversationChanged { conversation: c.into() },
            core::Event::Receipt { conversation_id, user, kind, seq } => {
                ClientEvent::Receipt { conversation_id, user, kind: receipt_kind(kind), seq }
            }
            core::Event::Typing { conversation_id, user, active } => ClientEvent::Typing { conversation_id, user, active },
            core::Event::Presence { user, presence, status } => ClientEvent::PresenceChanged { user, presence: presence.into(), status },
            core::Event::SyncProgress { applied, caught_up } => ClientEvent::SyncProgress { applied, caught_up },
            core::Event::Lagged { missed } => ClientEvent::Lagged { missed },
        }
    }
}
