//! Transports: the boundary between the protocol-neutral engine and a wire protocol.
//!
//! A [`Transport`] opens an authenticated [`Link`]: two channels, [`Outgoing`] commands from the
//! engine and [`Incoming`] events to it. The link is dead when its incoming channel ends; the
//! engine then reconnects with backoff. Cursors, conversation ids and server ids are opaque
//! strings, so a new backend (XMPP, a hosted provider, one written in Kotlin or Swift) is added
//! by implementing this module's types, without touching the engine.

pub mod native;
pub mod tls;
pub mod xmpp;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::model::{Body, ConversationId, ConversationKind, Presence, ReceiptKind};

/// How to authenticate a new link.
#[derive(Clone)]
pub enum Auth {
    Register { username: String, password: String, device: String },
    Login { username: String, password: String, device: String },
    Token { token: String, device: String },
}

impl std::fmt::Debug for Auth {
    // Never prints secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Register { username, device, .. } => write!(f, "Register({username}, {device})"),
            Auth::Login { username, device, .. } => write!(f, "Login({username}, {device})"),
            Auth::Token { device, .. } => write!(f, "Token({device})"),
        }
    }
}

/// What authentication granted.
#[derive(Clone)]
pub struct Grant {
    pub username: String,
    /// A new token to store for resuming (after register and login).
    pub token: Option<String>,
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Credentials or token refused: do not retry with them.
    #[error("{0}")]
    Auth(String),
    /// The server refused a request.
    #[error("{code}: {message}")]
    Refused { code: String, message: String, retryable: bool },
    /// Network or protocol failure: retry on a new link.
    #[error("{0}")]
    Io(String),
    /// The link closed before an answer.
    #[error("link closed")]
    Closed,
}

impl From<TransportError> for crate::Error {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Auth(m) => crate::Error::AuthFailed(m),
            TransportError::Refused { code, message, retryable } => crate::Error::Refused { code, message, retryable },
            TransportError::Io(m) => crate::Error::Transport(m),
            TransportError::Closed => crate::Error::Offline,
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, TransportError>>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A conversation as the server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: String,
    pub members: Vec<String>,
    pub last_seq: u64,
    pub read_seq: u64,
}

/// A message as the server stored it.
///
/// Identity: `server_id` is what the server guarantees unique, within the conversation (an
/// XMPP archive id is unique in its archive, and a conversation lives in one archive); the
/// store recognises messages by it. `client_id` is the id the sender chose; only a stable one
/// (`stable_client_id`: the native protocol's client ids, XMPP's XEP-0359 origin-ids) names
/// one message for good, so that a sender's resend (a new archive entry for the same message)
/// is shown once. A stanza id names nothing for good: a third-party XMPP client may send none,
/// or reuse one.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMessage {
    pub server_id: String,
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: String,
    pub client_id: String,
    pub body: Body,
    pub server_time_ms: i64,
    /// Whether `client_id` is the sender's stable id for this message (see above).
    pub stable_client_id: bool,
    /// The id receipts and markers of this message must echo, when it is not `client_id`
    /// (XEP-0184 and XEP-0333 echo the stanza id, which a sender may set apart from its
    /// origin-id).
    pub reply_id: Option<String>,
    /// What the sender asked its recipients to send back.
    pub receipts: ReceiptRequest,
}

/// What the sender of a message asked its recipients for. XMPP receipts follow the sender's
/// request, message by message (XEP-0184 `<request/>`, XEP-0333 `<markable/>`); the native
/// protocol's receipts are positions covering every message ([`ReceiptRequest::POSITIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptRequest {
    /// A delivery receipt for this message alone (XEP-0184).
    pub delivery: bool,
    /// Chat markers (received, displayed) may name this message (XEP-0333).
    pub markers: bool,
}

impl ReceiptRequest {
    /// Cumulative receipts by position only: no receipt per message, any message may be named.
    pub const POSITIONS: ReceiptRequest = ReceiptRequest { delivery: false, markers: true };
}

/// A durable inbound event.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteEventKind {
    Message(RemoteMessage),
    /// Messages up to `seq` reached `user`. A protocol whose receipts name a message instead
    /// (XMPP markers) gives `seq: 0` and `message`, the server or client id; the engine finds
    /// its position in the store.
    Receipt {
        conversation: ConversationId,
        user: String,
        kind: ReceiptKind,
        seq: u64,
        message: Option<String>,
    },
    Membership {
        conversation: RemoteConversation,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEvent {
    /// Opaque; acknowledged after commit and passed back as `since` after a disconnect.
    pub cursor: String,
    pub kind: RemoteEventKind,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub messages: Vec<RemoteMessage>,
    pub has_more: bool,
}

/// A message a receipt names, for protocols whose receipts name messages (XMPP): the id its
/// sender's receipts echo (`RemoteMessage::reply_id`, else its client id) and the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub client_id: String,
    pub server_id: Option<String>,
}

/// Requests that get exactly one answer.
pub enum Request {
    CreateDirect {
        peer: String,
        reply: Reply<RemoteConversation>,
    },
    CreateGroup {
        title: String,
        members: Vec<String>,
        reply: Reply<RemoteConversation>,
    },
    AddMembers {
        conversation: ConversationId,
        members: Vec<String>,
        reply: Reply<RemoteConversation>,
    },
    RemoveMembers {
        conversation: ConversationId,
        members: Vec<String>,
        reply: Reply<RemoteConversation>,
    },
    ListConversations {
        reply: Reply<Vec<RemoteConversation>>,
    },
    CreateRoom {
        title: String,
        reply: Reply<RemoteConversation>,
    },
    JoinRoom {
        conversation: ConversationId,
        reply: Reply<RemoteConversation>,
    },
    LeaveRoom {
        conversation: ConversationId,
        reply: Reply<()>,
    },
    /// Messages before `before_seq`, newest first; `before_id` is the server id of the message
    /// at `before_seq` when the cache has it (XMPP pages by archive id, not by number).
    History {
        conversation: ConversationId,
        before_seq: Option<u64>,
        before_id: Option<String>,
        limit: u32,
        reply: Reply<HistoryPage>,
    },
    /// Messages from others up to `seq` reached this device; answered once the server has it,
    /// so the engine can send it again after a reconnect until it is. `message` is the newest of
    /// them that markers may name; `receipts` are those whose senders asked for a receipt of
    /// their own (each gets one, for protocols with receipts per message).
    MarkDelivered {
        conversation: ConversationId,
        seq: u64,
        message: Option<MessageRef>,
        receipts: Vec<MessageRef>,
        reply: Reply<()>,
    },
    MarkRead {
        conversation: ConversationId,
        seq: u64,
        message: Option<MessageRef>,
        reply: Reply<()>,
    },
    Logout {
        reply: Reply<()>,
    },
}

impl Request {
    /// Answers the request with `error` (used when it cannot be sent).
    pub fn fail(self, error: TransportError) {
        match self {
            Request::CreateDirect { reply, .. }
            | Request::CreateGroup { reply, .. }
            | Request::AddMembers { reply, .. }
            | Request::RemoveMembers { reply, .. }
            | Request::CreateRoom { reply, .. }
            | Request::JoinRoom { reply, .. } => drop(reply.send(Err(error))),
            Request::ListConversations { reply } => drop(reply.send(Err(error))),
            Request::History { reply, .. } => drop(reply.send(Err(error))),
            Request::LeaveRoom { reply, .. }
            | Request::MarkDelivered { reply, .. }
            | Request::MarkRead { reply, .. }
            | Request::Logout { reply } => drop(reply.send(Err(error))),
        }
    }
}

/// From the engine to the transport.
pub enum Outgoing {
    Send {
        client_id: String,
        conversation: ConversationId,
        body: Body,
    },
    /// Everything up to this cursor is committed locally.
    AckCursor(String),
    /// Events after `since`; answered with `Incoming::SyncPage`.
    Sync {
        since: Option<String>,
    },
    Typing {
        conversation: ConversationId,
        active: bool,
    },
    SetPresence {
        presence: Presence,
        status: String,
    },
    Ping,
    Request(Request),
    /// The app is shutting down: end the session cleanly (the server may tell others we left).
    Close,
}

/// From the transport to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Acked {
        client_id: String,
        server_id: String,
        conversation: ConversationId,
        seq: u64,
        server_time_ms: i64,
    },
    Refused {
        client_id: String,
        code: String,
        message: String,
        retryable: bool,
    },
    SyncPage {
        events: Vec<RemoteEvent>,
        has_more: bool,
    },
    Live(RemoteEvent),
    /// A chat-room message (not in the inbox).
    RoomMessage(RemoteMessage),
    Typing {
        conversation: ConversationId,
        user: String,
        active: bool,
    },
    Presence {
        user: String,
        presence: Presence,
        status: String,
    },
    Pong,
    /// The server ended the session because its credentials were revoked (a logout of the same
    /// session elsewhere, or of all devices): the link is closing, and reconnecting with the
    /// same credentials would be refused. The engine treats it as an authentication failure.
    Revoked { message: String },
}

/// A live, authenticated connection.
pub struct Link {
    pub grant: Grant,
    pub outgoing: mpsc::Sender<Outgoing>,
    pub incoming: mpsc::Receiver<Incoming>,
}

/// Bounds a transport's connect (handshake included): a server that accepts and then says
/// nothing must not hold the engine.
pub(crate) async fn within(
    timeout: std::time::Duration,
    connect: impl Future<Output = Result<Link, TransportError>>,
) -> Result<Link, TransportError> {
    tokio::time::timeout(timeout, connect).await.unwrap_or_else(|_| Err(TransportError::Io("connect timed out".into())))
}

/// A way to reach a server.
pub trait Transport: Send + Sync + 'static {
    /// Connects and authenticates.
    fn connect(&self, auth: Auth) -> BoxFuture<Result<Link, TransportError>>;

    /// Whether each conversation's messages are numbered 1, 2, 3, ... without gaps (the native
    /// server), so the cache can tell from the numbers alone that a page of history is
    /// complete. Transports with sparse numbers (XMPP archive times) say `false`.
    fn dense_sequences(&self) -> bool {
        true
    }

    /// Whether receipts name messages (XMPP: XEP-0184 receipts per message, XEP-0333 markers
    /// naming one), so that the engine looks up which messages a receipt names and which asked
    /// for one. The native protocol's receipts are positions: `false`.
    fn receipts_name_messages(&self) -> bool {
        false
    }
}
