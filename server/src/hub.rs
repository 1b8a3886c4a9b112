//! The hub: which sessions are online, for which user and device, which of them are live (have
//! synced to the end of their inbox), and which chat rooms each is present in. Fan-out goes
//! through here. Sending never blocks: a session whose outbound queue holds more than its bound
//! in bytes is closed as a slow consumer (4004), its queue is dropped at once, and it catches up
//! by syncing when it reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use missive_proto::v1::{self, server_frame::Frame};
use missive_proto::{close, codec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::accounts::UserId;
use crate::db::conversations::ConversationId;

pub type ConnId = u64;

/// Something released once the frame it travels with is written to the socket (a read permit:
/// a connection's reads wait while their replies are unsent).
pub type Hold = Option<tokio::sync::OwnedSemaphorePermit>;

/// What the writer half of a connection sends.
#[derive(Debug)]
pub enum Outbound {
    Frame(Bytes, Hold),
    /// Sent after the frames queued before it; the connection then closes with this code.
    Close(u16),
}

/// The sending side of one connection: frames go into a queue drained by the writer, bounded in
/// bytes (the writer subtracts what it takes out).
#[derive(Clone)]
pub struct Peer {
    tx: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// Cancelled to close the connection; `close_code` says why.
    pub kill: CancellationToken,
    close_code: Arc<AtomicU32>,
}

/// The receiving side of a connection's queue, for its writer.
pub struct OutboundQueue {
    rx: mpsc::UnboundedReceiver<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl OutboundQueue {
    /// The next item; `None` once every `Peer` is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        self.taken(&item);
        item
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok();
        self.taken(&item);
        item
    }

    fn taken(&self, item: &Option<Outbound>) {
        if let Some(Outbound::Frame(bytes, _)) = item {
            self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
    }
}

impl Peer {
    /// A connection's queue, closing it as a slow consumer beyond `max_queued` bytes.
    pub fn new(max_queued: usize) -> (Self, OutboundQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let peer = Peer { tx, queued: queued.clone(), max_queued, kill: CancellationToken::new(), close_code: Default::default() };
        (peer, OutboundQueue { rx, queued })
    }

    /// Queues a frame; closes the connection as a slow consumer if its queue would exceed the
    /// bound (a frame alone in the queue always fits).
    pub fn send(&self, frame: Frame) {
        self.send_holding(frame, None)
    }

    /// As `send`, with `hold` released once the frame is written (or dropped).
    pub fn send_holding(&self, frame: Frame, hold: Hold) {
        if self.kill.is_cancelled() {
            return;
        }
        let bytes = Bytes::from(codec::encode(&v1::ServerFrame { frame: Some(frame) }));
        let len = bytes.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_queued {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.close(close::SLOW_CONSUMER);
            return;
        }
        if self.tx.send(Outbound::Frame(bytes, hold)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// A reply that releases `hold` once written.
    pub fn reply_holding(&self, request_id: u64, result: v1::reply::Result, hold: Hold) {
        self.send_holding(Frame::Reply(v1::Reply { request_id, result: Some(result) }), hold);
    }

    /// Queues a close after the frames already queued; false if the writer is gone.
    pub fn close_after_queued(&self, code: u16) -> bool {
        self.tx.send(Outbound::Close(code)).is_ok()
    }


    pub fn reply(&self, request_id: u64, result: v1::reply::Result) {
        self.send(Frame::Reply(v1::Reply { request_id, result: Some(result) }));
    }

    pub fn error(&self, request_id: u64, error: v1::Error) {
        self.reply(request_id, v1::reply::Result::Error(error));
    }

    /// Asks the writer to close with `code` (the first code given wins).
    pub fn close(&self, code: u16) {
        let _ = self.close_code.compare_exchange(0, code as u32, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }

    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c as u16),
        }
    }
}

struct Session {
    user: UserId,
    /// The hash of the token the session authenticated with (revocation closes it).
    token: [u8; 32],
    peer: Peer,
    live: bool,
    rooms: HashSet<ConversationId>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<ConnId, Session>,
    by_user: HashMap<UserId, Vec<ConnId>>,
    rooms: HashMap<ConversationId, HashSet<ConnId>>,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an authenticated session (not live until its sync reaches the inbox end);
    /// returns true when it is the user's first.
    pub fn register(&self, conn: ConnId, user: UserId, token: [u8; 32], peer: Peer) -> bool {
        let mut g = self.lock();
        g.sessions.insert(conn, Session { user, token, peer, live: false, rooms: HashSet::new() });
        let conns = g.by_user.entry(user).or_default();
        conns.push(conn);
        conns.len() == 1
    }

    /// Closes every session of `user` that authenticated with `token` (every session of the
    /// user when `None`), except `except`, with `code`.
    pub fn close_sessions(&self, user: UserId, token: Option<&[u8; 32]>, except: ConnId, code: u16) -> usize {
        let g = self.lock();
        let mut closed = 0;
        for conn in g.by_user.get(&user).into_iter().flatten() {
            let s = &g.sessions[conn];
            if *conn != except && token.is_none_or(|t| *t == s.token) {
                s.peer.close(code);
                closed += 1;
            }
        }
        closed
    }

    /// Removes a session; returns true when it was the user's last one.
    pub fn unregister(&self, conn: ConnId) -> bool {
        let mut g = self.lock();
        let Some(s) = g.sessions.remove(&conn) else { return false };
        for room in &s.rooms {
            if let Some(set) = g.rooms.get_mut(room) {
                set.remove(&conn);
                if set.is_empty() {
                    g.rooms.remove(room);
                }
            }
        }
        let conns = g.by_user.entry(s.user).or_default();
        conns.retain(|&c| c != conn);
        let last = conns.is_empty();
        if last {
            g.by_user.remove(&s.user);
        }
        last
    }

    pub fn set_live(&self, conn: ConnId) {
        if let Some(s) = self.lock().sessions.get_mut(&conn) {
            s.live = true;
        }
    }

    /// Pushes a durable event to the live sessions of its user, except the connection `origin`
    /// (a sender's own connection learns of its message from the acknowledgement).
    pub fn deliver(&self, user: UserId, event: &v1::Event, origin: Option<ConnId>) {
        let g = self.lock();
        for conn in g.by_user.get(&user).into_iter().flatten() {
            let s = &g.sessions[conn];
            if s.live && origin != Some(*conn) {
                s.peer.send(Frame::Event(event.clone()));
            }
        }
    }

    /// Pushes an ephemeral event to every session of `users`, except the connection `except`.
    pub fn notify_users(&self, users: &[UserId], except: ConnId, event: &v1::Ephemeral) {
        let g = self.lock();
        for user in users {
            for conn in g.by_user.get(user).into_iter().flatten() {
                if *conn != except {
                    g.sessions[conn].peer.send(Frame::Ephemeral(event.clone()));
                }
            }
        }
    }

    /// Pushes an ephemeral event to every session present in a room, except `except`.
    pub fn notify_room(&self, room: ConversationId, except: ConnId, event: &v1::Ephemeral) {
        let g = self.lock();
        for conn in g.rooms.get(&room).into_iter().flatten() {
            if *conn != except {
                g.sessions[conn].peer.send(Frame::Ephemeral(event.clone()));
            }
        }
    }

    /// How many chat rooms `conn` is present in, and whether `room` is one of them.
    pub fn rooms_of(&self, conn: ConnId, room: ConversationId) -> (usize, bool) {
        let g = self.lock();
        g.sessions.get(&conn).map_or((0, false), |s| (s.rooms.len(), s.rooms.contains(&room)))
    }

    pub fn enter_room(&self, conn: ConnId, room: ConversationId) {
        let mut g = self.lock();
        if let Some(s) = g.sessions.get_mut(&conn) {
            s.rooms.insert(room);
            g.rooms.entry(room).or_default().insert(conn);
        }
    }

    pub fn exit_room(&self, conn: ConnId, room: ConversationId) {
        let mut g = self.lock();
        if let Some(s) = g.sessions.get_mut(&conn) {
            s.rooms.remove(&room);
        }
        if let Some(set) = g.rooms.get_mut(&room) {
            set.remove(&conn);
        }
    }

    /// Closes every session with `code` (server shutdown).
    pub fn close_all(&self, code: u16) {
        for s in self.lock().sessions.values() {
            s.peer.close(code);
        }
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }
}
