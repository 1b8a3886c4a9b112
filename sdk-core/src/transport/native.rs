//! The native transport: WebSocket (tokio-tungstenite, rustls with certificate verification) and
//! one protobuf envelope per binary frame, to the Missive reference server.
//!
//! `connect` negotiates the version and authenticates, then a link task owns the socket: it
//! numbers requests, matches replies to them, and turns server frames into `Incoming` events.
//! When the socket fails the task ends, pending requests get `Closed`, and the incoming channel
//! closes, which tells the engine the link is dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use missive_proto::v1::{self, ErrorCode, client_frame::Request as Req, reply::Result as Res, server_frame::Frame};
use missive_proto::{MAX_FRAME_BYTES, PROTOCOL_VERSION, codec};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::Instrument as _;

use super::tls::{self, Verification};
use super::*;
use crate::model::{ConversationKind, Presence, ReceiptKind};
use crate::wire::{body_from_proto, body_to_proto};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to a Missive reference server at `ws://` or `wss://` URL.
#[derive(Clone)]
pub struct NativeTransport {
    url: String,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl NativeTransport {
    /// A transport verifying `wss` certificates against the web PKI roots.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_verification(url, &Verification::WebPki).expect("the web PKI roots are valid")
    }

    /// A transport trusting only the given DER certificates (a private CA, a test certificate).
    pub fn with_trusted_certificates(url: impl Into<String>, certificates: &[Vec<u8>]) -> Result<Self, TransportError> {
        Self::with_verification(url, &Verification::TrustedCertificates(certificates.to_vec()))
    }

    /// A transport with explicit certificate checks: see [`Verification`].
    pub fn with_verification(url: impl Into<String>, verification: &Verification) -> Result<Self, TransportError> {
        let config = tls::client_config(verification).map_err(TransportError::Io)?;
        Ok(NativeTransport { url: url.into(), tls: Arc::new(config), connect_timeout: Duration::from_secs(10) })
    }
}

impl Transport for NativeTransport {
    fn connect(&self, auth: Auth) -> BoxFuture<Result<Link, TransportError>> {
        let this = self.clone();
        Box::pin(async move { super::within(this.connect_timeout, this.open(auth)).await })
    }
}

fn refused(e: v1::Error) -> TransportError {
    let code = e.code();
    match code {
        ErrorCode::BadCredentials | ErrorCode::TokenInvalid | ErrorCode::TokenExpired => TransportError::Auth(e.message),
        _ => TransportError::Refused { code: code.as_str_name().to_owned(), message: e.message, retryable: e.retryable },
    }
}

async fn send_frame(ws: &mut Ws, request_id: u64, request: Req) -> Result<(), TransportError> {
    let bytes = codec::encode(&v1::ClientFrame { request_id, request: Some(request) });
    ws.send(WsMessage::Binary(bytes.into())).await.map_err(|e| TransportError::Io(e.to_string()))
}

/// Waits for the reply to `request_id` during the handshake.
async fn handshake_reply(ws: &mut Ws, request_id: u64) -> Result<Res, TransportError> {
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| TransportError::Io(e.to_string()))? {
            WsMessage::Binary(bytes) => {
                let frame: v1::ServerFrame = codec::decode(&bytes).map_err(|e| TransportError::Io(e.to_string()))?;
                if let Some(Frame::Reply(r)) = frame.frame {
                    if r.request_id == request_id {
                        return r.result.ok_or_else(|| TransportError::Io("empty reply".into()));
                    }
                }
            }
            WsMessage::Close(c) => return Err(TransportError::Io(format!("closed by server: {c:?}"))),
            _ => {}
        }
    }
    Err(TransportError::Io("connection closed during the handshake".into()))
}

impl NativeTransport {
    async fn open(&self, auth: Auth) -> Result<Link, TransportError> {
        let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            self.url.as_str(),
            Some(config),
            true,
            Some(Connector::Rustls(self.tls.clone())),
        )
        .await
        .map_err(|e| TransportError::Io(e.to_string()))?;
        let hello = Req::Hello(v1::Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: concat!("missive/", env!("CARGO_PKG_VERSION")).into(),
        });
        send_frame(&mut ws, 1, hello).await?;
        let rate = match handshake_reply(&mut ws, 1).await? {
            Res::Hello(h) => h.limits.map_or(0, |l| l.requests_per_second),
            Res::Error(e) => return Err(refused(e)),
            other => return Err(TransportError::Io(format!("unexpected reply to Hello: {other:?}"))),
        };
        let request = match auth {
            Auth::Register { username, password, device } => Req::Register(v1::Register { username, password, device_id: device }),
            Auth::Login { username, password, device } => Req::Login(v1::Login { username, password, device_id: device }),
            Auth::Token { token, device } => Req::Resume(v1::Resume { token, device_id: device }),
        };
        send_frame(&mut ws, 2, request).await?;
        let grant = match handshake_reply(&mut ws, 2).await? {
            Res::Session(s) => Grant { username: s.username, token: (!s.token.is_empty()).then_some(s.token) },
            Res::Error(e) => return Err(refused(e)),
            other => return Err(TransportError::Io(format!("unexpected reply to authentication: {other:?}"))),
        };
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (in_tx, in_rx) = mpsc::channel(1024);
        let pacer = Pacer::new(rate);
        tokio::spawn(
            LinkTask { ws, next_id: 3, pending: HashMap::new(), incoming: in_tx, pacer, ahead: ReadAhead::None }
                .run(out_rx)
                .in_current_span(),
        );
        Ok(Link { grant, outgoing: out_tx, incoming: in_rx })
    }
}

/// What a request id is waiting for.
enum Pending {
    Send(String),
    /// A sync page after `since`; `ahead`: asked by the link itself (read-ahead).
    Sync {
        since: u64,
        ahead: bool,
    },
    Ping,
    /// Fire-and-forget requests (cursor acks, receipts, typing, presence).
    Quiet,
    Request(Request),
    /// A page of the conversation list, after the pages in `got` (the server pages it to stay
    /// within its frame limit).
    Conversations {
        got: Vec<RemoteConversation>,
        reply: Reply<Vec<RemoteConversation>>,
    },
}

/// Keeps the request rate under the limit the server announced in `Hello`, so that a burst (an
/// offline queue flushed at reconnect) is slowed down here instead of being refused there: a
/// refused send would be resent later, behind messages sent after it.
struct Pacer {
    /// Requests per second, with a 10% margin; `None` when the server announced no limit.
    rate: Option<f64>,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Pacer {
    fn new(announced: u32) -> Self {
        let rate = (announced > 0).then(|| f64::from(announced) * 0.9);
        Pacer { rate, tokens: rate.unwrap_or(0.0), last: tokio::time::Instant::now() }
    }

    /// How long to wait before the next request may go (and takes its token).
    fn delay(&mut self) -> Option<Duration> {
        let rate = self.rate?;
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate))
    }
}

/// Sync read-ahead: while the engine commits one page, the link already fetches the next, so
/// the server's read and the transfer overlap the client's commit instead of following it. The
/// engine still asks for each page after committing the previous one (the cursor it commits is
/// what the next request starts from); the link answers from the page read ahead when the
/// request starts where that page does, and asks the server otherwise.
enum ReadAhead {
    None,
    /// Asked for the page after `since`; `wanted`: the engine asked for it too.
    InFlight {
        since: u64,
        wanted: bool,
    },
    Ready {
        since: u64,
        page: v1::SyncPage,
    },
}

struct LinkTask {
    ws: Ws,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    incoming: mpsc::Sender<Incoming>,
    pacer: Pacer,
    ahead: ReadAhead,
}

fn id_number(id: &str) -> u64 {
    id.parse().unwrap_or(u64::MAX)
}

impl LinkTask {
    async fn run(mut self, mut outgoing: mpsc::Receiver<Outgoing>) {
        let reason = loop {
            tokio::select! {
                command = outgoing.recv() => {
                    let Some(command) = command else { break "engine closed the link".to_string() };
                    let mut written = self.write(command).await;
                    // Batch whatever else is queued into the same flush.
                    while written.is_ok() {
                        match outgoing.try_recv() {
                            Ok(command) => written = self.write(command).await,
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = written {
                        break e;
                    }
                    if let Err(e) = self.ws.flush().await {
                        break e.to_string();
                    }
                }
                frame = self.ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        if let Err(e) = self.read(&bytes).await {
                            break e;
                        }
                    }
                    Some(Ok(WsMessage::Close(c))) => {
                        if c.as_ref().is_some_and(|c| u16::from(c.code) == missive_proto::close::SESSION_REVOKED) {
                            let _ = self.emit(Incoming::Revoked { message: "session revoked: logged out elsewhere".into() }).await;
                        }
                        break format!("closed by server: {c:?}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "connection closed".to_string(),
                },
            }
        };
        tracing::debug!(%reason, "native link ended");
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Request(r) => r.fail(TransportError::Closed),
                Pending::Conversations { reply, .. } => drop(reply.send(Err(TransportError::Closed))),
                _ => {}
            }
        }
        let _ = self.ws.close(None).await;
    }

    async fn write(&mut self, command: Outgoing) -> Result<(), String> {
        if matches!(command, Outgoing::Close) {
            let _ = self.ws.close(None).await;
            return Err("closed by the app".into());
        }
        if let Outgoing::Sync { since } = command {
            return self.sync(since.map_or(0, |s| id_number(&s))).await;
        }
        if let Some(wait) = self.pacer.delay() {
            // Send what is queued, then hold this request back.
            self.ws.flush().await.map_err(|e| e.to_string())?;
            tokio::time::sleep(wait).await;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (request, pending) = match command {
            Outgoing::Send { client_id, conversation, body } => (
                Req::SendMessage(v1::SendMessage {
                    client_id: client_id.clone(),
                    conversation_id: id_number(&conversation),
                    body: Some(body_to_proto(&body)),
                }),
                Pending::Send(client_id),
            ),
            Outgoing::AckCursor(cursor) => (Req::AckCursor(v1::AckCursor { cursor: id_number(&cursor) }), Pending::Quiet),
            Outgoing::Sync { .. } => unreachable!("handled above"),
            Outgoing::Typing { conversation, active } => {
                (Req::Typing(v1::Typing { conversation_id: id_number(&conversation), active }), Pending::Quiet)
            }
            Outgoing::SetPresence { presence, status } => {
                let state = match presence {
                    Presence::Online => v1::PresenceState::Online,
                    Presence::Away => v1::PresenceState::Away,
                    Presence::Offline => v1::PresenceState::Offline,
                };
                (Req::SetPresence(v1::SetPresence { state: state as i32, status }), Pending::Quiet)
            }
            Outgoing::Ping => (Req::Ping(v1::Ping { nonce: id }), Pending::Ping),
            Outgoing::Close => unreachable!("handled above"),
            Outgoing::Request(request) => {
                let wire = match &request {
                    Request::CreateDirect { peer, .. } => Req::CreateDirect(v1::CreateDirect { peer: peer.clone() }),
                    Request::CreateGroup { title, members, .. } => {
                        Req::CreateGroup(v1::CreateGroup { title: title.clone(), members: members.clone() })
                    }
                    Request::AddMembers { conversation, members, .. } => {
                        Req::AddMembers(v1::AddMembers { conversation_id: id_number(conversation), members: members.clone() })
                    }
                    Request::RemoveMembers { conversation, members, .. } => {
                        Req::RemoveMembers(v1::RemoveMembers { conversation_id: id_number(conversation), members: members.clone() })
                    }
                    Request::ListConversations { .. } => Req::ListConversations(v1::ListConversations::default()),
                    Request::CreateRoom { title, .. } => Req::CreateRoom(v1::CreateRoom { title: title.clone() }),
                    Request::JoinRoom { conversation, .. } => Req::JoinRoom(v1::JoinRoom { conversation_id: id_number(conversation) }),
                    Request::LeaveRoom { conversation, .. } => Req::LeaveRoom(v1::LeaveRoom { conversation_id: id_number(conversation) }),
                    Request::History { conversation, before_seq, limit, .. } => Req::History(v1::HistoryRequest {
                        conversation_id: id_number(conversation),
                        before_seq: before_seq.unwrap_or(0),
                        limit: *limit,
                    }),
                    Request::MarkDelivered { conversation, seq, .. } => {
                        Req::MarkDelivered(v1::MarkReceipt { conversation_id: id_number(conversation), seq: *seq })
                    }
                    Request::MarkRead { conversation, seq, .. } => {
                        Req::MarkRead(v1::MarkReceipt { conversation_id: id_number(conversation), seq: *seq })
                    }
                    Request::Logout { .. } => Req::Logout(v1::Logout {}),
                };
                (wire, Pending::Request(request))
            }
        };
        self.feed(id, request, pending).await
    }

    async fn feed(&mut self, id: u64, request: Req, pending: Pending) -> Result<(), String> {
        self.pending.insert(id, pending);
        let bytes = codec::encode(&v1::ClientFrame { request_id: id, request: Some(request) });
        self.ws.feed(WsMessage::Binary(bytes.into())).await.map_err(|e| e.to_string())
    }

    async fn request_sync(&mut self, since: u64, ahead: bool) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        self.feed(id, Req::Sync(v1::SyncRequest { since, limit: missive_proto::MAX_PAGE_SIZE }), Pending::Sync { since, ahead }).await
    }

    /// The engine asks for the page after `since`: from the read-ahead when it starts there.
    async fn sync(&mut self, since: u64) -> Result<(), String> {
        match std::mem::replace(&mut self.ahead, ReadAhead::None) {
            ReadAhead::Ready { since: s, page } if s == since => self.deliver_page(since, page).await,
            ReadAhead::InFlight { since: s, .. } if s == since => {
                self.ahead = ReadAhead::InFlight { since, wanted: true };
                Ok(())
            }
            // Nothing read ahead, or not from there (its reply, if still coming, is dropped).
            _ => self.request_sync(since, false).await,
        }
    }

    /// Hands a page the engine asked for to it, and reads the next one ahead.
    async fn deliver_page(&mut self, since: u64, page: v1::SyncPage) -> Result<(), String> {
        if page.has_more && page.next_cursor > since {
            self.request_sync(page.next_cursor, true).await?;
            self.ws.flush().await.map_err(|e| e.to_string())?;
            self.ahead = ReadAhead::InFlight { since: page.next_cursor, wanted: false };
        }
        let events = page.events.into_iter().filter_map(convert_event).collect();
        self.emit(Incoming::SyncPage { events, has_more: page.has_more }).await
    }

    /// A sync reply: for the engine, or read ahead (kept until the engine asks, or dropped if
    /// the engine has asked for another position since).
    async fn on_sync_page(&mut self, since: u64, ahead: bool, page: v1::SyncPage) -> Result<(), String> {
        if !ahead {
            return self.deliver_page(since, page).await;
        }
        match self.ahead {
            ReadAhead::InFlight { since: s, wanted } if s == since => {
                if wanted {
                    self.ahead = ReadAhead::None;
                    self.deliver_page(since, page).await
                } else {
                    self.ahead = ReadAhead::Ready { since, page };
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// A page of the conversation list: the next one is asked for while the server has more,
    /// and the whole list answers the request.
    async fn on_conversations(
        &mut self,
        mut got: Vec<RemoteConversation>,
        reply: Reply<Vec<RemoteConversation>>,
        result: Res,
    ) -> Result<(), String> {
        let page = match result {
            Res::Conversations(page) => page,
            Res::Error(e) => return Ok(drop(reply.send(Err(refused(e))))),
            other => return Ok(drop(reply.send(Err(TransportError::Io(format!("unexpected reply: {other:?}")))))),
        };
        let more = page.has_more && page.next_before_id != 0 && !page.conversations.is_empty();
        got.extend(page.conversations.into_iter().map(convert_conversation));
        if !more {
            let _ = reply.send(Ok(got));
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        let next = Req::ListConversations(v1::ListConversations { before_id: page.next_before_id, limit: 0 });
        self.feed(id, next, Pending::Conversations { got, reply }).await?;
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    async fn emit(&self, event: Incoming) -> Result<(), String> {
        self.incoming.send(event).await.map_err(|_| "engine gone".to_string())
    }

    async fn read(&mut self, bytes: &[u8]) -> Result<(), String> {
        let frame: v1::ServerFrame = codec::decode(bytes).map_err(|e| format!("undecodable frame from server: {e}"))?;
        match frame.frame {
            Some(Frame::Reply(reply)) => self.on_reply(reply).await,
            Some(Frame::Event(event)) => match convert_event(event) {
                Some(e) => self.emit(Incoming::Live(e)).await,
                None => Ok(()),
            },
            Some(Frame::Ephemeral(e)) => match e.kind {
                Some(v1::ephemeral::Kind::Typing(t)) => {
                    self.emit(Incoming::Typing { conversation: t.conversation_id.to_string(), user: t.user, active: t.active }).await
                }
                Some(v1::ephemeral::Kind::Presence(p)) => {
                    let presence = match p.state() {
                        v1::PresenceState::Away => Presence::Away,
                        v1::PresenceState::Offline => Presence::Offline,
                        _ => Presence::Online,
                    };
                    self.emit(Incoming::Presence { user: p.user, presence, status: p.status }).await
                }
                Some(v1::ephemeral::Kind::RoomMessage(m)) => match convert_message(m) {
                    Some(m) => self.emit(Incoming::RoomMessage(m)).await,
                    None => Ok(()),
                },
                None => Ok(()), // an ephemeral kind from a newer server: ignored
            },
            None => Ok(()),
        }
    }

    async fn on_reply(&mut self, reply: v1::Reply) -> Result<(), String> {
        let Some(pending) = self.pending.remove(&reply.request_id) else {
            if let Some(Res::Error(e)) = reply.result {
                tracing::warn!(error = %e, "server error without a request");
            }
            return Ok(());
        };
        let result = reply.result.ok_or("reply without a result")?;
        match (pending, result) {
            (Pending::Send(_), Res::Ack(a)) => {
                self.emit(Incoming::Acked {
                    client_id: a.client_id,
                    server_id: a.server_id.to_string(),
                    conversation: a.conversation_id.to_string(),
                    seq: a.seq,
                    server_time_ms: a.server_time_ms,
                })
                .await
            }
            (Pending::Send(client_id), Res::Error(e)) => {
                self.emit(Incoming::Refused {
                    client_id,
                    code: e.code().as_str_name().to_owned(),
                    message: e.message,
                    retryable: e.retryable,
                })
                .await
            }
            (Pending::Sync { since, ahead }, Res::Sync(page)) => self.on_sync_page(since, ahead, page).await,
            // A refused read-ahead is forgotten: the engine's own request goes to the server.
            (Pending::Sync { since, ahead: true }, Res::Error(e)) => {
                tracing::debug!(error = %e, "sync read-ahead refused");
                match self.ahead {
                    ReadAhead::InFlight { since: s, wanted } if s == since => {
                        self.ahead = ReadAhead::None;
                        if wanted { self.request_sync(since, false).await } else { Ok(()) }
                    }
                    _ => Ok(()),
                }
            }
            (Pending::Sync { .. }, other) => Err(format!("sync failed: {other:?}")),
            (Pending::Ping, _) => self.emit(Incoming::Pong).await,
            (Pending::Quiet, Res::Error(e)) => {
                tracing::debug!(error = %e, "request refused");
                Ok(())
            }
            (Pending::Quiet, _) => Ok(()),
            (Pending::Request(Request::ListConversations { reply }), result) => self.on_conversations(Vec::new(), reply, result).await,
            (Pending::Conversations { got, reply }, result) => self.on_conversations(got, reply, result).await,
            (Pending::Request(request), result) => {
                answer(request, result);
                Ok(())
            }
            (Pending::Send(_), other) => Err(format!("unexpected reply to a send: {other:?}")),
        }
    }
}

fn kind_from_proto(kind: i32) -> ConversationKind {
    match v1::ConversationKind::try_from(kind) {
        Ok(v1::ConversationKind::Group) => ConversationKind::Group,
        Ok(v1::ConversationKind::Room) => ConversationKind::Room,
        _ => ConversationKind::Direct,
    }
}

fn convert_conversation(c: v1::Conversation) -> RemoteConversation {
    RemoteConversation {
        id: c.id.to_string(),
        kind: kind_from_proto(c.kind),
        title: c.title,
        members: c.members,
        last_seq: c.last_seq,
        read_seq: c.read_seq,
    }
}

fn convert_message(m: v1::Message) -> Option<RemoteMessage> {
    let body = m.body.and_then(body_from_proto);
    if body.is_none() {
        tracing::warn!(server_id = m.server_id, "message with a body of unknown kind; shown as unsupported");
    }
    Some(RemoteMessage {
        server_id: m.server_id.to_string(),
        conversation: m.conversation_id.to_string(),
        seq: m.seq,
        sender: m.sender,
        client_id: m.client_id,
        body: body.unwrap_or(crate::model::Body::Custom {
            kind: "missive.unsupported".into(),
            payload: vec![],
            metadata: Default::default(),
        }),
        server_time_ms: m.server_time_ms,
        // The server holds (sender, client id) unique: a resend is the same message.
        stable_client_id: true,
        reply_id: None,
        receipts: ReceiptRequest::POSITIONS,
    })
}

fn convert_event(e: v1::Event) -> Option<RemoteEvent> {
    let cursor = e.cursor.to_string();
    let kind = match e.kind {
        Some(v1::event::Kind::Message(m)) => RemoteEventKind::Message(convert_message(m)?),
        Some(v1::event::Kind::Receipt(r)) => RemoteEventKind::Receipt {
            conversation: r.conversation_id.to_string(),
            user: r.user,
            kind: if r.kind == v1::ReceiptKind::Read as i32 { ReceiptKind::Read } else { ReceiptKind::Delivered },
            seq: r.seq,
            message: None,
        },
        Some(v1::event::Kind::Membership(m)) => {
            RemoteEventKind::Membership { conversation: convert_conversation(m.conversation?), added: m.added, removed: m.removed }
        }
        // An event kind from a newer server: keep the cursor moving with a no-op.
        None => RemoteEventKind::Receipt {
            conversation: String::new(),
            user: String::new(),
            kind: ReceiptKind::Delivered,
            seq: 0,
            message: None,
        },
    };
    Some(RemoteEvent { cursor, kind })
}

fn answer(request: Request, result: Res) {
    let err = |r: Res| match r {
        Res::Error(e) => refused(e),
        other => TransportError::Io(format!("unexpected reply: {other:?}")),
    };
    match request {
        Request::CreateDirect { reply, .. }
        | Request::CreateGroup { reply, .. }
        | Request::AddMembers { reply, .. }
        | Request::RemoveMembers { reply, .. }
        | Request::CreateRoom { reply, .. }
        | Request::JoinRoom { reply, .. } => {
            let _ = reply.send(match result {
                Res::Conversation(c) => Ok(convert_conversation(c)),
                other => Err(err(other)),
            });
        }
        Request::ListConversations { reply } => {
            let _ = reply.send(match result {
                Res::Conversations(l) => Ok(l.conversations.into_iter().map(convert_conversation).collect()),
                other => Err(err(other)),
            });
        }
        Request::History { reply, .. } => {
            let _ = reply.send(match result {
                Res::History(h) => {
                    Ok(HistoryPage { messages: h.messages.into_iter().filter_map(convert_message).collect(), has_more: h.has_more })
                }
                other => Err(err(other)),
            });
        }
        Request::LeaveRoom { reply, .. }
        | Request::MarkDelivered { reply, .. }
        | Request::MarkRead { reply, .. }
        | Request::Logout { reply } => {
            let _ = reply.send(match result {
                Res::Ok(_) => Ok(()),
                other => Err(err(other)),
            });
        }
    }
}
