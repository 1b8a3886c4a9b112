//! Test helpers: an embedded server on a loopback port with temporary storage, and a raw protocol
//! client over a real WebSocket that speaks the frames directly (no SDK).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use missive_proto::v1::{self, client_frame::Request, reply, server_frame::Frame};
use missive_proto::{PROTOCOL_VERSION, codec};
use missive_server::{Server, ServerConfig, ServerHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const PASSWORD: &str = "correct horse battery";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with these users already registered (password `PASSWORD`).
    pub async fn with_users(names: &[&str]) -> Self {
        let server = Self::start().await;
        for name in names {
            Client::register(&server.url(), name).await;
        }
        server
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
        configure(&mut config);
        let handle = Server::bind(config).await.expect("server starts");
        TestServer { handle, dir }
    }

    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// Graceful stop, then a new server on the same data directory.
    pub async fn restart(self) -> Self {
        let TestServer { handle, dir } = self;
        handle.shutdown().await;
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
        let handle = Server::bind(config).await.expect("server restarts");
        TestServer { handle, dir }
    }
}

type Ws = WebSocketStream<Box<dyn Io>>;
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw protocol client.
pub struct Client {
    ws: Ws,
    next_id: u64,
    replies: HashMap<u64, reply::Result>,
    pub events: VecDeque<v1::Event>,
    pub ephemeral: VecDeque<v1::Ephemeral>,
    pub closed: Option<u16>,
    pub session: Option<v1::Session>,
}

impl Client {
    /// Connects without sending anything.
    pub async fn raw(url: &str) -> Self {
        let host = url.trim_start_matches("ws://");
        let tcp = tokio::net::TcpStream::connect(host).await.expect("tcp connect");
        Self::over(Box::new(tcp), url).await
    }

    /// Connects from a chosen local address (any of 127.0.0.0/8 reaches a loopback server), so
    /// that a test can play several client addresses. Without sending anything.
    pub async fn raw_from(url: &str, from: std::net::IpAddr) -> Self {
        Self::try_raw_from(url, from).await.expect("websocket handshake")
    }

    /// As `raw_from`, `None` when the server refuses the connection.
    pub async fn try_raw_from(url: &str, from: std::net::IpAddr) -> Option<Self> {
        let host = url.trim_start_matches("ws://");
        let addr: std::net::SocketAddr = host.parse().expect("a loopback test url");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).expect("bind a loopback source address");
        let tcp = socket.connect(addr).await.ok()?;
        let (ws, _) = tokio_tungstenite::client_async(url, Box::new(tcp) as Box<dyn Io>).await.ok()?;
        Some(Client { ws, next_id: 1, replies: HashMap::new(), events: VecDeque::new(), ephemeral: VecDeque::new(), closed: None, session: None })
    }

    /// As `connect_from`, retrying while the server refuses: it frees a closed connection's
    /// place once it has seen the close, which a client cannot await.
    pub async fn connect_from_when_free(url: &str, from: std::net::IpAddr) -> Self {
        for _ in 0..500 {
            if let Some(mut c) = Self::try_raw_from(url, from).await {
                c.hello().await;
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server kept refusing connections from {from}");
    }

    /// Connects from `from` and negotiates the version.
    pub async fn connect_from(url: &str, from: std::net::IpAddr) -> Self {
        let mut c = Self::raw_from(url, from).await;
        c.hello().await;
        c
    }

    async fn hello(&mut self) {
        let hello = Request::Hello(v1::Hello { min_version: PROTOCOL_VERSION, max_version: PROTOCOL_VERSION, client: "test".into() });
        match self.request(hello).await {
            reply::Result::Hello(h) => assert_eq!(h.version, PROTOCOL_VERSION),
            other => panic!("hello refused: {other:?}"),
        }
    }

    pub async fn over(io: Box<dyn Io>, url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::client_async(url, io).await.expect("websocket handshake");
        Client { ws, next_id: 1, replies: HashMap::new(), events: VecDeque::new(), ephemeral: VecDeque::new(), closed: None, session: None }
    }

    /// Connects and negotiates the version.
    pub async fn connect(url: &str) -> Self {
        let mut c = Self::raw(url).await;
        c.hello().await;
        c
    }

    pub async fn register(url: &str, name: &str) -> Self {
        Self::register_device(url, name, "phone").await
    }

    pub async fn register_device(url: &str, name: &str, device: &str) -> Self {
        let mut c = Self::connect(url).await;
        let r = c.request(Request::Register(v1::Register { username: name.into(), password: PASSWORD.into(), device_id: device.into() })).await;
        c.session = Some(expect_session(r));
        c
    }

    pub async fn login(url: &str, name: &str, device: &str) -> Self {
        let mut c = Self::connect(url).await;
        let r = c.request(Request::Login(v1::Login { username: name.into(), password: PASSWORD.into(), device_id: device.into() })).await;
        c.session = Some(expect_session(r));
        c
    }

    /// Logs in and syncs to the end of the inbox, so events arrive live.
    pub async fn login_live(url: &str, name: &str, device: &str) -> Self {
        let mut c = Self::login(url, name, device).await;
        c.sync_all(0).await;
        c
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a request; `None` when the connection is gone.
    pub async fn try_send(&mut self, request: Request) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = codec::encode(&v1::ClientFrame { request_id: id, request: Some(request) });
        self.ws.send(Message::Binary(bytes.into())).await.ok().map(|_| id)
    }

    /// Sends a request and returns its id without waiting.
    pub async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_bytes(codec::encode(&v1::ClientFrame { request_id: id, request: Some(request) })).await;
        id
    }

    /// Reads one frame into the buffers; false when the connection closed.
    pub async fn pump(&mut self) -> bool {
        match tokio::time::timeout(WAIT, self.ws.next()).await.expect("no frame within the wait") {
            Some(Ok(Message::Binary(bytes))) => {
                let frame: v1::ServerFrame = codec::decode(&bytes).expect("server frame decodes");
                match frame.frame.expect("frame kind") {
                    Frame::Reply(r) => {
                        self.replies.insert(r.request_id, r.result.expect("reply result"));
                    }
                    Frame::Event(e) => self.events.push_back(e),
                    Frame::Ephemeral(e) => self.ephemeral.push_back(e),
                }
                true
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                false
            }
            Some(Ok(_)) => true,
            Some(Err(_)) | None => {
                self.closed.get_or_insert(1006);
                false
            }
        }
    }

    /// As `pump`, for load generators: frames that do not decode are skipped, not a panic.
    pub async fn pump_quiet(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                if let Ok(v1::ServerFrame { frame: Some(Frame::Reply(r)) }) = codec::decode::<v1::ServerFrame>(&bytes) {
                    if let Some(result) = r.result {
                        self.replies.insert(r.request_id, result);
                    }
                }
                true
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
            Some(Ok(_)) => true,
        }
    }

    /// The reply to `id` if it has arrived.
    pub fn take_reply(&mut self, id: u64) -> Option<reply::Result> {
        self.replies.remove(&id)
    }

    pub async fn wait_reply(&mut self, id: u64) -> reply::Result {
        loop {
            if let Some(r) = self.replies.remove(&id) {
                return r;
            }
            assert!(self.pump().await, "connection closed ({:?}) before reply {id}", self.closed);
        }
    }

    pub async fn request(&mut self, request: Request) -> reply::Result {
        let id = self.send(request).await;
        self.wait_reply(id).await
    }

    /// The error of a request that must fail.
    pub async fn refused(&mut self, request: Request) -> v1::Error {
        match self.request(request).await {
            reply::Result::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub async fn next_event(&mut self) -> v1::Event {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            assert!(self.pump().await, "connection closed ({:?}) while waiting for an event", self.closed);
        }
    }

    pub async fn next_ephemeral(&mut self) -> v1::Ephemeral {
        loop {
            if let Some(e) = self.ephemeral.pop_front() {
                return e;
            }
            assert!(self.pump().await, "connection closed while waiting for an ephemeral event");
        }
    }

    /// Waits for the server to close the connection and returns the close code.
    pub async fn closed_with(&mut self) -> u16 {
        while self.pump().await {}
        self.closed.unwrap()
    }

    /// No event and no ephemeral event other than presence is pending (a ping round trip first
    /// flushes what the server already queued for this connection).
    pub async fn assert_quiet(&mut self) {
        self.ping().await;
        self.ephemeral.retain(|e| !matches!(e.kind, Some(v1::ephemeral::Kind::Presence(_))));
        assert!(self.events.is_empty(), "unexpected events: {:?}", self.events);
        assert!(self.ephemeral.is_empty(), "unexpected ephemeral events: {:?}", self.ephemeral);
    }

    pub async fn ping(&mut self) {
        match self.request(Request::Ping(v1::Ping { nonce: 42 })).await {
            reply::Result::Pong(p) => assert_eq!(p.nonce, 42),
            other => panic!("expected pong, got {other:?}"),
        }
    }

    /// Pages through the inbox from `since` until `has_more` is false; returns the events.
    pub async fn sync_all(&mut self, since: u64) -> Vec<v1::Event> {
        let mut out = vec![];
        let mut since = since;
        loop {
            match self.request(Request::Sync(v1::SyncRequest { since, limit: 50 })).await {
                reply::Result::Sync(page) => {
                    since = page.next_cursor;
                    out.extend(page.events);
                    if !page.has_more {
                        return out;
                    }
                }
                other => panic!("sync failed: {other:?}"),
            }
        }
    }

    pub async fn direct(&mut self, peer: &str) -> v1::Conversation {
        expect_conversation(self.request(Request::CreateDirect(v1::CreateDirect { peer: peer.into() })).await)
    }

    pub async fn group(&mut self, title: &str, members: &[&str]) -> v1::Conversation {
        let members = members.iter().map(|m| m.to_string()).collect();
        expect_conversation(self.request(Request::CreateGroup(v1::CreateGroup { title: title.into(), members })).await)
    }

    pub async fn send_text(&mut self, conversation_id: u64, client_id: &str, text: &str) -> v1::SendAck {
        match self.request(send_text(conversation_id, client_id, text)).await {
            reply::Result::Ack(a) => a,
            other => panic!("send refused: {other:?}"),
        }
    }
}

pub fn send_text(conversation_id: u64, client_id: &str, text: &str) -> Request {
    Request::SendMessage(v1::SendMessage { client_id: client_id.into(), conversation_id, body: Some(text_body(text)) })
}

pub fn text_body(text: &str) -> v1::MessageBody {
    v1::MessageBody { kind: Some(v1::message_body::Kind::Text(v1::Text { text: text.as_bytes().to_vec().into() })) }
}

pub fn expect_session(r: reply::Result) -> v1::Session {
    match r {
        reply::Result::Session(s) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

pub fn expect_conversation(r: reply::Result) -> v1::Conversation {
    match r {
        reply::Result::Conversation(c) => c,
        other => panic!("expected a conversation, got {other:?}"),
    }
}

/// The text of a message event, or panics.
pub fn text_of(event: &v1::Event) -> String {
    match &event.kind {
        Some(v1::event::Kind::Message(m)) => message_text(m),
        other => panic!("expected a message event, got {other:?}"),
    }
}

pub fn message_text(m: &v1::Message) -> String {
    match m.body.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(v1::message_body::Kind::Text(t)) => String::from_utf8(t.text.to_vec()).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    }
}

/// Message events only, as (sender, text).
pub fn messages(events: &[v1::Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(v1::event::Kind::Message(m)) => Some((m.sender.clone(), message_text(m))),
            _ => None,
        })
        .collect()
}
