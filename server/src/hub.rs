//! The hub: which sessions are online, for which user and device, which of them are live (have
//! synced to the end of their inbox), and which chat rooms each is present in. Fan-out goes
//! through here. Sending never blocks: a session whose outbound queue is full is closed as a slow
//! consumer and will catch up by syncing when it reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use missive_proto::v1::{self, server_frame::Frame};
use missive_proto::{close, codec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::accounts::UserId;
use crate::db::conversations::ConversationId;

pub type ConnId = u64;

/// What the writer half of a connection sends.
#[derive(Debug)]
pub enum Outbound {
    Frame(Bytes),
    Close(u16),
}

/// The sending side of one connection: frames go into a bounded queue drained by the writer.
#[derive(Clone)]
pub struct Peer {
    tx: mpsc::Sender<Outbound>,
    /// Cancelled to close the connection; `close_code` says why.
    pub kill: CancellationToken,
    close_code: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Peer {
    pub fn new(tx: mpsc::Sender<Outbound>) -> Self {
        Peer { tx, kill: CancellationToken::new(), close_code: Default::default() }
    }

    /// Queues a frame; closes the connection as a slow consumer if the queue is full.
    pub fn send(&self, frame: Frame) {
        let bytes = codec::encode(&v1::ServerFrame { frame: Some(frame) });
        if self.tx.try_send(Outbound::Frame(bytes.into())).is_err() {
            self.close(close::SLOW_CONSUMER);
        }
    }

    pub fn reply(&self, request_id: u64, result: v1::reply::Result) {
        self.send(Frame::Reply(v1::Reply { request_id, result: Some(result) }));
    }

    pub fn error(&self, request_id: u64, error: v1::Error) {
        self.reply(request_id, v1::reply::Result::Error(error));
    }

    /// Asks the writer to close with `code` (the first code given wins).
    pub fn close(&self, code: u16) {
        let _ = self.close_code.compare_exchange(0, code as u32, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst);
        self.kill.cancel();
    }

    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            c => Some(c as u16),
        }
    }
}

struct Session {
    user: UserId,
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

    /// Registers an authenticated session (not live until its sync reaches the inbox end).
    pub fn register(&self, conn: ConnId, user: UserId, peer: Peer) {
        let mut g = self.lock();
        g.sessions.insert(conn, Session { user, peer, live: false, rooms: HashSet::new() });
        g.by_user.entry(user).or_default().push(conn);
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

    /// Whether the user has at least one authenticated session.
    pub fn online(&self, user: UserId) -> bool {
        self.lock().by_user.contains_key(&user)
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
