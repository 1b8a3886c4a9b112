//! The XMPP link task: owns the socket of one authenticated stream.
//!
//! Durable events come only from archives (XEP-0313): at a sync the engine's cursor says where
//! each archive was left; afterwards every live message, carbon, or acknowledgement of our own
//! message is a cue to read the archive it landed in from that point on ("notify, then fetch").
//! One query per archive is in flight at a time; a cue during a query asks for another round.
//!
//! Sends wait until the sync has read every archive to its end: a message whose client id (its
//! XEP-0359 origin-id) shows up there, or that the server acknowledged on an earlier stream
//! (XEP-0198), is not sent again, so a failed resume cannot duplicate it. Stream management
//! acknowledgements are requested after every burst and answered when the server asks.

mod bookmarks;
mod groups;
mod history;
mod lag;
mod muc;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::archive::{self, Cursor};
use super::stanza::*;
use super::xml::Element;
use super::{Shared, SmCounters, SmSession, Ws, XmppConfig};
use history::HistoryRead;
use crate::model::{Body, ConversationKind, Presence, ReceiptKind};
use crate::transport::*;

/// Entries asked for per archive query.
const PAGE: u32 = 250;
/// How long after a stanza goes out an acknowledgement is asked for, at the latest...
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(5);
/// ...or as soon as this many stanzas are unacknowledged.
const ACK_EVERY: usize = 200;
/// A server may acknowledge a message (XEP-0198 counts it on arrival) before it is archived: the
/// own archive is read again after this, then after twice as long, up to `POLL_MAX`, until
/// every acknowledged message has shown up there.
const POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(20);
const POLL_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The stream session this link runs on.
pub(super) struct Session {
    /// XEP-0198 id, when the server allows resumption.
    pub id: Option<String>,
    pub full_jid: String,
    pub counters: SmCounters,
}

/// What an iq id is waiting for.
enum PendingIq {
    Query,
    History(HistoryRead),
    Ping,
    /// A step of a room operation.
    Muc(String),
    /// The account's bookmarks (XEP-0402), asked for at the first sync.
    Bookmarks,
    /// A bookmark published or retracted (the answer only tells whether the server keeps them).
    Bookmark,
    /// The name of a room we were invited to without one (Openfire drops the invitation's
    /// reason): the room and who invited us.
    RoomName { room: String, inviter: String },
}

/// A running archive query.
struct Query {
    archive: String,
    /// For sync pages; live reads answer with `Incoming::Live`.
    sync: bool,
    /// The newest entries of an archive never read before (then it is read forward from them).
    tail: bool,
    results: Vec<Element>,
    /// For a tail read in several pages (going back while the entries hold too few messages:
    /// receipts are archived too): the newer pages already read, oldest first.
    newer: Vec<Element>,
    /// Pages of a tail read so far.
    pages: u32,
}

impl Query {
    fn new(archive: String, sync: bool, tail: bool) -> Query {
        Query { archive, sync, tail, results: Vec::new(), newer: Vec::new(), pages: 1 }
    }
}

/// A device's first read of an archive goes back at most this many pages to find
/// `initial_sync_limit` messages among the entries; a history request as many to find its
/// `limit`.
const TAIL_PAGES: u32 = 8;

enum Phase {
    /// Waiting for the engine's first `Sync`.
    Start,
    /// Reading archives up to their ends; `done` lists the archives read to the end.
    Syncing {
        done: BTreeSet<String>,
    },
    Live,
}

pub(super) struct LinkTask {
    ws: Ws,
    incoming: mpsc::Sender<Incoming>,
    me: String,
    config: XmppConfig,
    shared: Arc<Mutex<Shared>>,
    session: Session,
    resumed_h: Option<u32>,
    /// Random per link: after an XEP-0198 resume the server sends again what the previous link
    /// did not acknowledge, archive results of its queries included; with ids counted from 1 on
    /// every link, those were taken for the new link's queries and moved its position past
    /// entries it never read.
    id_tag: u32,
    next_id: u64,
    iqs: HashMap<String, PendingIq>,
    queries: HashMap<String, Query>,
    /// Archives with a query in flight.
    reading: HashSet<String>,
    /// Archives cued while being read: read again after.
    cued: BTreeSet<String>,
    cursor: Cursor,
    phase: Phase,
    held: Vec<(String, String, Body)>,
    /// Our client ids seen in an archive on this link.
    seen: HashSet<String>,
    /// Rooms joined on this link.
    joined: HashSet<String>,
    /// Chat rooms (live only, not followed in the cursor).
    rooms: HashSet<String>,
    /// Real bare JIDs of room occupants, by occupant JID (`room/nick`), from their presence.
    occupants: HashMap<String, String>,
    /// Room operations waiting for the server, by room.
    muc_tasks: HashMap<String, muc::MucTask>,
    /// The last sequence number given to a chat-room message.
    room_seq: u64,
    /// The URL this stream was opened on.
    url: String,
    /// An `<r/>` is out, not yet answered.
    ack_requested: bool,
    /// When to send the next `<r/>`.
    ack_due: Option<tokio::time::Instant>,
    /// When to read the own archive again for messages acknowledged but not seen there yet.
    poll_due: Option<tokio::time::Instant>,
    /// How long the next such wait is (doubles while nothing new shows up).
    poll_delay: std::time::Duration,
    /// How many acknowledged messages were still unseen at the last read.
    unseen: usize,
    /// The own archive was read again for acknowledged messages it lacks.
    re_read_for_unseen: bool,
    /// Receipts and markers answered once the server acknowledges their stanza (XEP-0198): the
    /// stanza number and the engine's reply. Dropped with the link, so the engine sends them
    /// again on the next one.
    confirm_on_ack: VecDeque<(u32, Reply<()>)>,
    /// Live messages their archive does not show yet (read again until it does).
    lag: lag::ArchiveLag,
    /// Messages that came before the engine's first sync (offline storage delivers at the
    /// first presence): taken once the cursor is loaded.
    early: Vec<Element>,
    /// The bookmarks node was created (or found to exist) on this stream.
    bookmarks_node_created: bool,
}

/// Messages kept before the first sync at most (past it they are left to the archive).
const MAX_EARLY: usize = 1000;

type Flow = Result<(), String>;

impl LinkTask {
    pub(super) fn new(
        ws: Ws,
        incoming: mpsc::Sender<Incoming>,
        me: String,
        session: Session,
        config: XmppConfig,
        shared: Arc<Mutex<Shared>>,
        resumed_h: Option<u32>,
        url: String,
    ) -> Self {
        LinkTask {
            ws,
            incoming,
            me,
            config,
            shared,
            session,
            resumed_h,
            id_tag: rand::random(),
            next_id: 0,
            iqs: HashMap::new(),
            queries: HashMap::new(),
            reading: HashSet::new(),
            cued: BTreeSet::new(),
            cursor: Cursor::default(),
            phase: Phase::Start,
            held: Vec::new(),
            seen: HashSet::new(),
            joined: HashSet::new(),
            rooms: HashSet::new(),
            occupants: HashMap::new(),
            muc_tasks: HashMap::new(),
            room_seq: 0,
            url,
            ack_requested: false,
            ack_due: None,
            poll_due: None,
            poll_delay: POLL_FIRST,
            unseen: 0,
            re_read_for_unseen: false,
            confirm_on_ack: VecDeque::new(),
            lag: lag::ArchiveLag::default(),
            early: Vec::new(),
            bookmarks_node_created: false,
        }
    }

    pub(super) async fn run(mut self, mut outgoing: mpsc::Receiver<Outgoing>) {
        if let Some(h) = self.resumed_h.take() {
            // What the old stream sent after `h` never arrived: the engine sends it again, and
            // the numbering goes on from what the server counted.
            self.on_server_ack(h);
            self.session.counters.unacked.clear();
            self.session.counters.sent = h;
        }
        let mut first = self.send(&Element::new("presence", NS_CLIENT)).await;
        if first.is_ok() {
            first = self.flush().await;
        }
        let reason = match first {
            Err(e) => e,
            Ok(()) => loop {
                let ack_due = self.ack_due;
                let poll_due = self.poll_due;
                let lag_due = self.lag.next_due();
                let step = tokio::select! {
                    _ = tokio::time::sleep_until(lag_due.unwrap_or_else(tokio::time::Instant::now)), if lag_due.is_some() => {
                        match self.read_lagging_archives().await {
                            Ok(()) => self.flush().await,
                            e => e,
                        }
                    }
                    _ = tokio::time::sleep_until(poll_due.unwrap_or_else(tokio::time::Instant::now)), if poll_due.is_some() => {
                        self.poll_due = None;
                        match self.read_archive(archive::OWN.to_owned(), false).await {
                            Ok(()) => self.flush().await,
                            e => e,
                        }
                    }
                    _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)), if ack_due.is_some() => {
                        match self.request_ack().await {
                            Ok(()) => self.flush().await,
                            e => e,
                        }
                    }
                    command = outgoing.recv() => match command {
                        None => Err("engine closed the link".to_owned()),
                        Some(command) => {
                            let mut r = self.on_command(command).await;
                            while r.is_ok() {
                                match outgoing.try_recv() {
                                    Ok(command) => r = self.on_command(command).await,
                                    Err(_) => break,
                                }
                            }
                            match r {
                                Ok(()) => self.end_burst().await,
                                e => e,
                            }
                        }
                    },
                    frame = self.ws.next() => match frame {
                        None => Err("connection closed".to_owned()),
                        Some(Err(e)) => Err(e.to_string()),
                        Some(Ok(WsMessage::Text(text))) => match Element::parse(&text) {
                            Ok(e) => match self.on_element(e).await {
                                Ok(()) => self.flush().await,
                                e => e,
                            },
                            Err(e) => Err(format!("from the server: {e}")),
                        },
                        Some(Ok(WsMessage::Close(c))) => Err(format!("closed by server: {c:?}")),
                        Some(Ok(WsMessage::Binary(_))) => Err("binary frame on an XMPP stream".to_owned()),
                        Some(Ok(_)) => Ok(()),
                    },
                };
                if let Err(e) = step {
                    break e;
                }
            },
        };
        tracing::debug!(%reason, "XMPP link ended");
        self.end();
    }

    /// Keeps what a later stream needs: the resumable session and the acknowledged ids.
    fn end(self) {
        let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = self.session.id {
            shared.session = Some(SmSession { id, jid: self.session.full_jid, counters: self.session.counters });
        }
        for (_, pending) in self.iqs {
            if let PendingIq::History(HistoryRead { reply, .. }) = pending {
                let _ = reply.send(Err(TransportError::Closed));
            }
        }
    }

    fn sm(&self) -> bool {
        self.session.id.is_some()
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:08x}.{}", self.id_tag, self.next_id)
    }

    /// Queues an element (flushed by `flush`); stanzas are counted for stream management.
    async fn send(&mut self, e: &Element) -> Flow {
        self.send_tracked(e, None).await
    }

    async fn send_tracked(&mut self, e: &Element, client_id: Option<String>) -> Flow {
        if self.sm() && matches!(e.name.as_str(), "message" | "presence" | "iq") && e.ns == NS_CLIENT {
            let c = &mut self.session.counters;
            c.sent = c.sent.wrapping_add(1);
            c.unacked.push_back((c.sent, client_id));
        }
        self.ws.feed(WsMessage::Text(e.to_xml().into())).await.map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Flow {
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    /// After a burst of commands: make sure an acknowledgement will be asked for.
    async fn end_burst(&mut self) -> Flow {
        self.schedule_ack_request();
        if self.session.counters.unacked.len() >= ACK_EVERY && !self.ack_requested {
            self.request_ack().await?;
        }
        self.flush().await
    }

    /// One `<r/>` at a time, a moment after the first unacknowledged stanza: under load one
    /// acknowledgement (and one archive read) covers many messages.
    fn schedule_ack_request(&mut self) {
        if self.sm() && !self.ack_requested && self.ack_due.is_none() && !self.session.counters.unacked.is_empty() {
            self.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
        }
    }

    async fn request_ack(&mut self) -> Flow {
        self.ack_due = None;
        self.ack_requested = true;
        self.ws.feed(WsMessage::Text(Element::new("r", NS_SM).to_xml().into())).await.map_err(|e| e.to_string())
    }

    fn is_room(&self, jid: &str) -> bool {
        domain(jid) == self.config.muc_domain
    }

    async fn emit(&mut self, item: Incoming) -> Flow {
        self.incoming.send(item).await.map_err(|_| "engine gone".to_owned())
    }

    async fn on_command(&mut self, command: Outgoing) -> Flow {
        match command {
            Outgoing::Send { client_id, conversation, body } => {
                if matches!(self.phase, Phase::Live) {
                    self.send_message(client_id, conversation, body).await?;
                } else {
                    self.held.push((client_id, conversation, body));
                }
            }
            Outgoing::AckCursor(_) => {}
            Outgoing::Sync { since } => self.on_sync(since).await?,
            Outgoing::Typing { conversation, active } => {
                let room = self.is_room(&conversation);
                self.send(&chat_state(&conversation, room, active)).await?;
            }
            Outgoing::SetPresence { presence, status } => {
                let mut p = Element::new("presence", NS_CLIENT);
                match presence {
                    Presence::Online => {}
                    Presence::Away => p = p.child(Element::new("show", NS_CLIENT).text("away")),
                    Presence::Offline => p.set_attr("type", "unavailable"),
                }
                if !status.is_empty() {
                    p = p.child(Element::new("status", NS_CLIENT).text(status));
                }
                self.send(&p).await?;
            }
            Outgoing::Ping => {
                let id = self.new_id("ping");
                self.iqs.insert(id.clone(), PendingIq::Ping);
                let domain = self.config.domain.clone();
                self.send(&iq("get", &id, Some(&domain), Element::new("ping", NS_PING))).await?;
            }
            Outgoing::Request(request) => self.on_request(request).await?,
            Outgoing::Close => {
                // A clean end: the server ends the session (no resumption) and tells contacts.
                // RFC 7395: wait (briefly) for its <close/>, or a server that sees the socket
                // go first may keep the session waiting for a resumption instead.
                if self.sm() {
                    let h = self.session.counters.inbound.to_string();
                    self.ws
                        .feed(WsMessage::Text(Element::new("a", NS_SM).attr("h", h).to_xml().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                self.session.id = None;
                self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).session = None;
                self.ws.feed(WsMessage::Text(close().to_xml().into())).await.map_err(|e| e.to_string())?;
                self.flush().await?;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    while let Some(Ok(frame)) = self.ws.next().await {
                        if let WsMessage::Text(t) = &frame {
                            if Element::parse(t).is_ok_and(|e| e.is("close", NS_FRAMING)) {
                                break;
                            }
                        }
                        if matches!(frame, WsMessage::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                let _ = self.ws.close(None).await;
                return Err("closed by the app".into());
            }
        }
        Ok(())
    }

    async fn send_message(&mut self, client_id: String, conversation: String, body: Body) -> Flow {
        let already = self.seen.contains(&client_id) || self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.contains(&client_id);
        if already {
            tracing::debug!(%client_id, "not resent: the server has it");
            return Ok(());
        }
        let room = self.is_room(&conversation);
        let stanza = message(&conversation, room, &client_id, &body);
        self.send_tracked(&stanza, Some(client_id)).await
    }

    async fn on_request(&mut self, request: Request) -> Flow {
        match request {
            Request::CreateDirect { peer, reply } => {
                let peer = to_bare_jid(&peer, &self.config.domain);
                // Presence between the two: ask for theirs (they grant it, see `on_presence`).
                self.send(&Element::new("presence", NS_CLIENT).attr("to", &peer).attr("type", "subscribe")).await?;
                let _ = reply.send(Ok(RemoteConversation {
                    id: peer.clone(),
                    kind: ConversationKind::Direct,
                    title: String::new(),
                    members: vec![self.me.clone(), peer],
                    last_seq: 0,
                    read_seq: 0,
                }));
            }
            Request::ListConversations { reply } => {
                let _ = reply.send(Ok(Vec::new()));
            }
            Request::History { conversation, before_seq, before_id, limit, reply } => {
                self.start_history(conversation, before_seq, before_id, limit, reply).await?;
            }
            Request::MarkDelivered { conversation, message: reference, receipts, reply, .. } => {
                if self.is_room(&conversation) {
                    // In a group, a XEP-0333 marker naming the newest markable message by the
                    // room's id for it (no XEP-0184 receipts in rooms).
                    if let Some(m) = reference {
                        let id = m.server_id.as_deref().unwrap_or(&m.client_id);
                        self.send(&marker(&conversation, true, ReceiptKind::Delivered, id)).await?;
                    }
                } else {
                    // XEP-0184: one receipt per message that asked for one, echoing its id; the
                    // newest archived (see `delivery_receipt`).
                    let newest = receipts.len().saturating_sub(1);
                    for (i, m) in receipts.iter().enumerate() {
                        self.send(&delivery_receipt(&conversation, &m.client_id, i == newest)).await?;
                    }
                }
                self.confirm_once_acknowledged(reply);
            }
            Request::MarkRead { conversation, message: reference, reply, .. } => {
                if let Some(m) = reference {
                    let room = self.is_room(&conversation);
                    let id = if room { m.server_id.unwrap_or(m.client_id) } else { m.client_id };
                    self.send(&marker(&conversation, room, ReceiptKind::Read, &id)).await?;
                }
                self.confirm_once_acknowledged(reply);
            }
            Request::Logout { reply } => {
                self.session.id = None;
                self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).session = None;
                self.ws.feed(WsMessage::Text(close().to_xml().into())).await.map_err(|e| e.to_string())?;
                self.flush().await?;
                let _ = reply.send(Ok(()));
                return Err("logged out".into());
            }
            other => self.on_muc_request(other).await?,
        }
        Ok(())
    }

    /// The engine asks for the events after `since`: read the next archive not yet at its end.
    async fn on_sync(&mut self, since: Option<String>) -> Flow {
        let mut cursor = since.as_deref().and_then(Cursor::decode).unwrap_or_default();
        cursor.follow(archive::OWN);
        self.cursor = cursor;
        if matches!(self.phase, Phase::Start) {
            self.phase = Phase::Syncing { done: BTreeSet::new() };
            let rooms: Vec<String> = self.cursor.archives.keys().filter(|k| !k.is_empty()).cloned().collect();
            for room in rooms {
                self.join(&room).await?;
            }
            // Groups whose invitation this device never saw (see `bookmarks`).
            let id = self.new_id("bm");
            self.iqs.insert(id.clone(), PendingIq::Bookmarks);
            self.send(&bookmarks::fetch(&id)).await?;
            for e in std::mem::take(&mut self.early) {
                Box::pin(self.on_message(e)).await?;
            }
        }
        self.next_sync_read().await
    }

    /// Reads the next archive of the sync, or ends the sync when all are read.
    async fn next_sync_read(&mut self) -> Flow {
        let Phase::Syncing { done } = &self.phase else {
            return Ok(());
        };
        let next = self.cursor.archives.keys().find(|a| !done.contains(*a)).cloned();
        match next {
            Some(archive) => self.read_archive(archive, true).await,
            None => {
                self.emit(Incoming::SyncPage { events: Vec::new(), has_more: false }).await?;
                self.go_live().await
            }
        }
    }

    async fn go_live(&mut self) -> Flow {
        self.phase = Phase::Live;
        for (client_id, conversation, body) in std::mem::take(&mut self.held) {
            self.send_message(client_id, conversation, body).await?;
        }
        for archive in std::mem::take(&mut self.cued) {
            self.read_archive(archive, false).await?;
        }
        Ok(())
    }

    async fn join(&mut self, room: &str) -> Flow {
        if !self.joined.insert(room.to_owned()) {
            return Ok(());
        }
        let nick = format!("{room}/{}", self.me);
        let presence = Element::new("presence", NS_CLIENT)
            .attr("to", nick)
            .child(Element::new("x", NS_MUC).child(Element::new("history", NS_MUC).attr("maxstanzas", "0")));
        self.send(&presence).await
    }

    /// After reading the own archive to its end: if messages the server acknowledged are still
    /// missing there, read it again a little later. Long after their acknowledgement and still
    /// not after our position: first read the archive again from our last entry's time (the
    /// server may have trimmed it under us: Prosody keeps 10,000 entries per account by
    /// default); if they are still not there, the server lost them (acknowledged, then stopped
    /// before archiving): the outbox sends them again.
    async fn poll_for_acknowledged(&mut self) -> Flow {
        let unseen = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.len();
        tracing::trace!(unseen, delay = ?self.poll_delay, "acknowledged messages not yet in the archive");
        if unseen > 0 && unseen >= self.unseen && self.poll_delay >= POLL_MAX {
            if self.re_read_for_unseen {
                tracing::warn!(unseen, "acknowledged messages never reached the archive; sending them again");
                let lost: Vec<String> = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.drain().collect();
                for client_id in lost {
                    let message = "acknowledged by the server but never archived".to_owned();
                    self.emit(Incoming::Refused { client_id, code: "NOT_ARCHIVED".into(), message, retryable: true }).await?;
                }
                self.re_read_for_unseen = false;
                self.poll_delay = POLL_FIRST;
                self.unseen = 0;
                return Ok(());
            }
            tracing::warn!(
                unseen,
                "acknowledged messages are not in the archive after our position; reading it again from our last entry's time"
            );
            self.re_anchor(archive::OWN);
            self.re_read_for_unseen = true;
            self.poll_delay = POLL_FIRST;
        }
        if unseen == 0 {
            self.poll_delay = POLL_FIRST;
        } else {
            // Progress since the last read: start again from the shortest wait.
            self.poll_delay = if unseen < self.unseen { POLL_FIRST } else { (self.poll_delay * 2).min(POLL_MAX) };
            self.poll_due = Some(tokio::time::Instant::now() + self.poll_delay);
        }
        if unseen < self.unseen || unseen == 0 {
            self.re_read_for_unseen = false;
        }
        self.unseen = unseen;
        Ok(())
    }

    /// Reads again the archives that did not show a live message yet (see [`lag`]).
    async fn read_lagging_archives(&mut self) -> Flow {
        let due = self.lag.take_due(tokio::time::Instant::now());
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.archive_lag_re_reads += due.len() as u32;
        for archive in due {
            self.read_archive(archive, false).await?;
        }
        Ok(())
    }

    /// Forgets the archive id we were at in `archive` but not its time: the next read takes
    /// every entry archived since our last one (from a second before it), so nothing is skipped;
    /// what is read twice is recognised by its message id.
    fn re_anchor(&mut self, archive: &str) {
        if let Some(p) = self.cursor.archives.get_mut(archive) {
            p.after = None;
        }
    }

    /// Whether a first read of an archive should go back another page: its entries so far hold
    /// fewer messages than asked for, and the archive has older ones.
    fn tail_needs_more(&self, query: &Query, fin_iq: &Element) -> bool {
        let complete = fin_iq.get_child("fin", NS_MAM).and_then(|f| f.get_attr("complete")) == Some("true");
        if complete || query.results.is_empty() || query.pages >= TAIL_PAGES {
            return false;
        }
        let room = (!query.archive.is_empty()).then_some(query.archive.as_str());
        let messages = query
            .results
            .iter()
            .chain(&query.newer)
            .filter(|r| matches!(read_archived(r, room, &self.me), Some(ArchivedEntry { what: Archived::Message { .. }, .. })))
            .count();
        messages < self.config.initial_sync_limit as usize
    }

    /// Reads the page of an archive before the oldest entry a first read has so far.
    async fn read_older_tail_page(&mut self, mut query: Query) -> Flow {
        let Some(oldest) = query.results.first().and_then(|r| r.get_attr("id")).map(str::to_owned) else {
            return Ok(());
        };
        let mut newer = std::mem::take(&mut query.results);
        newer.append(&mut query.newer);
        let id = self.new_id("mam");
        let to = (!query.archive.is_empty()).then_some(query.archive.clone());
        let stanza = mam_query_newest(&id, &id, to.as_deref(), None, None, Some(&oldest), self.config.initial_sync_limit.clamp(1, PAGE));
        tracing::trace!(archive = %query.archive, pages = query.pages, "a first read goes back another page");
        self.queries.insert(id.clone(), Query { newer, pages: query.pages + 1, ..query });
        self.iqs.insert(id, PendingIq::Query);
        self.send(&stanza).await
    }

    /// Starts reading `archive` from the cursor on.
    async fn read_archive(&mut self, archive: String, sync: bool) -> Flow {
        if !archive.is_empty() && !self.cursor.archives.contains_key(&archive) {
            // A group we left or were removed from (a cue or a re-read from before): its
            // archive is not ours to read any more.
            return Ok(());
        }
        if !sync && !matches!(self.phase, Phase::Live) {
            self.cued.insert(archive);
            return Ok(());
        }
        if self.reading.contains(&archive) {
            self.cued.insert(archive);
            return Ok(());
        }
        let id = self.new_id("mam");
        let position = self.cursor.archives.get(&archive);
        let after = position.and_then(|p| p.after.clone());
        // Re-anchored (no archive id, but a time): every entry from a second before it on.
        let start =
            position.filter(|p| p.after.is_none() && p.last_seq > 0).map(|p| archive::format_stamp(p.last_seq.saturating_sub(1_000_000)));
        let to = (!archive.is_empty()).then_some(archive.as_str());
        // An archive never read: only its newest entries; older ones come as history on demand.
        let limit = self.config.initial_sync_limit;
        let tail = after.is_none() && start.is_none() && limit > 0;
        let stanza = if tail {
            mam_query_newest(&id, &id, to, None, None, None, limit)
        } else {
            mam_query(&id, &id, to, after.as_deref(), start.as_deref(), PAGE)
        };
        self.reading.insert(archive.clone());
        tracing::trace!(%archive, ?after, tail, sync, "reading an archive");
        self.queries.insert(id.clone(), Query::new(archive, sync, tail));
        self.iqs.insert(id, PendingIq::Query);
        self.send(&stanza).await
    }

    async fn on_element(&mut self, e: Element) -> Flow {
        if e.ns == NS_CLIENT && matches!(e.name.as_str(), "message" | "presence" | "iq") && self.sm() {
            self.session.counters.inbound = self.session.counters.inbound.wrapping_add(1);
        }
        match (e.name.as_str(), e.ns.as_str()) {
            ("message", NS_CLIENT) => self.on_message(e).await,
            ("iq", NS_CLIENT) => self.on_iq(e).await,
            ("presence", NS_CLIENT) => self.on_presence(e).await,
            ("r", NS_SM) => {
                let h = self.session.counters.inbound.to_string();
                self.ws.feed(WsMessage::Text(Element::new("a", NS_SM).attr("h", h).to_xml().into())).await.map_err(|e| e.to_string())
            }
            ("a", NS_SM) => {
                let h = e.get_attr("h").and_then(|h| h.parse().ok()).ok_or("<a/> without h")?;
                self.ack_requested = false;
                let chat = self.on_server_ack(h);
                tracing::trace!(h, unacked = self.session.counters.unacked.len(), chat, "acknowledged by the server");
                self.schedule_ack_request();
                if chat {
                    self.read_archive(archive::OWN.to_owned(), false).await?;
                }
                Ok(())
            }
            ("error", NS_STREAMS) => Err(format!("stream error: {} {}", error_condition(&e), error_text(&e))),
            ("close", NS_FRAMING) => match e.get_attr("see-other-uri") {
                Some(to) if super::redirect_allowed(&self.url, to) => {
                    self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redirect = Some(to.to_owned());
                    Err(format!("the server sends us to {to}"))
                }
                Some(to) => Err(format!("the server closed the stream; ignoring its redirect to {to}")),
                None => Err("the server closed the stream".into()),
            },
            (name, ns) => {
                tracing::debug!(name, ns, "ignoring an unknown element");
                Ok(())
            }
        }
    }

    /// Answers `reply` once the server has acknowledged the last stanza sent; at once without
    /// stream management.
    fn confirm_once_acknowledged(&mut self, reply: Reply<()>) {
        if self.sm() && !self.session.counters.unacked.is_empty() {
            self.confirm_on_ack.push_back((self.session.counters.sent, reply));
        } else {
            let _ = reply.send(Ok(()));
        }
    }

    /// The server acknowledged our stanzas up to `h`; returns whether a 1:1 message was among
    /// them (its archive then has news for us).
    fn on_server_ack(&mut self, h: u32) -> bool {
        // Wrapping comparison: `n` is at or before `h`.
        let covered = |n: u32| h.wrapping_sub(n) <= u32::MAX / 2;
        while self.confirm_on_ack.front().is_some_and(|(n, _)| covered(*n)) {
            let (_, reply) = self.confirm_on_ack.pop_front().expect("front exists");
            let _ = reply.send(Ok(()));
        }
        let mut chat = false;
        let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((n, _)) = self.session.counters.unacked.front() {
            // Wrapping comparison: `n` is at or before `h`.
            if h.wrapping_sub(*n) > u32::MAX / 2 {
                break;
            }
            let (_, client_id) = self.session.counters.unacked.pop_front().expect("front exists");
            if let Some(client_id) = client_id {
                if !self.seen.contains(&client_id) {
                    shared.server_has.insert(client_id);
                }
                chat = true;
            }
        }
        chat
    }

    async fn on_message(&mut self, e: Element) -> Flow {
        if let Some(result) = e.get_child("result", NS_MAM) {
            if let Some(q) = result.get_attr("queryid").and_then(|id| self.queries.get_mut(id)) {
                q.results.push(result.clone());
            }
            return Ok(());
        }
        let from = e.get_attr("from").unwrap_or("").to_owned();
        let kind = e.get_attr("type").unwrap_or("normal");
        if kind == "error" {
            let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
            tracing::debug!(%from, %condition, "message bounced");
            return match e.get_attr("id") {
                Some(client_id) if self.is_room(&from) => {
                    self.on_room_bounce(bare(&from).to_owned(), client_id.to_owned(), condition).await
                }
                _ => Ok(()),
            };
        }
        if matches!(self.phase, Phase::Start) {
            // The cursor is not loaded until the engine's first sync: what these mean is
            // worked out then (the engine asks at once).
            if self.early.len() < MAX_EARLY {
                self.early.push(e);
            }
            return Ok(());
        }
        if bare(&from) == self.me && (e.get_child("sent", NS_CARBONS).is_some() || e.get_child("received", NS_CARBONS).is_some()) {
            return self.read_archive(archive::OWN.to_owned(), false).await;
        }
        if let Archived::Invite { room, title, inviter } = classify(&e, None, &self.me) {
            // Acted on as it comes (live, or stored offline and delivered at login): not every
            // server archives it (Openfire's Monitoring plugin keeps only messages with a
            // body). Where it is archived (in our own archive), reading it again is a no-op.
            self.on_invitation(room, title, inviter, false).await?;
            return self.read_archive(archive::OWN.to_owned(), false).await;
        }
        let room = kind == "groupchat" || self.is_room(&from);
        let archive = if room { bare(&from).to_owned() } else { archive::OWN.to_owned() };
        if room && self.rooms.contains(&archive) {
            return self.on_chat_room_message(&e, archive).await;
        }
        let meaning = classify(&e, room.then_some(archive.as_str()), &self.me);
        match meaning {
            Archived::Nothing => {
                if let Some(active) = read_chat_state(&e) {
                    let (conversation, user) = if room {
                        (archive, resource(&from).unwrap_or("").to_owned())
                    } else {
                        (bare(&from).to_owned(), bare(&from).to_owned())
                    };
                    if user != self.me && !user.is_empty() {
                        self.emit(Incoming::Typing { conversation, user, active }).await?;
                    }
                }
                Ok(())
            }
            _ if room && !self.cursor.archives.contains_key(&archive) => Ok(()),
            Archived::Message { client_id, .. } => {
                self.lag.expect(&archive, &client_id);
                self.read_archive(archive, false).await
            }
            Archived::Receipt { conversation, user, kind, id } => {
                // Other clients' receipts are not always archived (ejabberd keeps bodiless
                // messages only with a store hint, Openfire's Monitoring plugin none): take it
                // live as well, during a sync too; applying it twice is harmless, receipts only
                // move forward.
                let kind = RemoteEventKind::Receipt { conversation, user, kind, seq: 0, message: Some(id) };
                self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await?;
                self.read_archive(archive, false).await
            }
            _ => self.read_archive(archive, false).await,
        }
    }

    async fn on_presence(&mut self, e: Element) -> Flow {
        let from = e.get_attr("from").unwrap_or("");
        if self.is_room(from) {
            return self.on_room_presence(&e).await;
        }
        if from.is_empty() || bare(from) == self.me {
            return Ok(());
        }
        let presence = match e.get_attr("type") {
            None => match e.get_child("show", NS_CLIENT).map(Element::text_content).as_deref() {
                Some("away" | "xa" | "dnd") => Presence::Away,
                _ => Presence::Online,
            },
            Some("unavailable") => Presence::Offline,
            Some("subscribe") => {
                // Presence is shared with whoever asks on the same service, both ways (as chat
                // SDKs show who is online); a stricter policy would ask the app first.
                let peer = bare(from).to_owned();
                self.send(&Element::new("presence", NS_CLIENT).attr("to", &peer).attr("type", "subscribed")).await?;
                return self.send(&Element::new("presence", NS_CLIENT).attr("to", &peer).attr("type", "subscribe")).await;
            }
            Some(_) => return Ok(()),
        };
        let status = e.get_child("status", NS_CLIENT).map(Element::text_content).unwrap_or_default();
        self.emit(Incoming::Presence { user: bare(from).to_owned(), presence, status }).await
    }

    async fn on_iq(&mut self, e: Element) -> Flow {
        let id = e.get_attr("id").unwrap_or("").to_owned();
        let kind = e.get_attr("type").unwrap_or("");
        if kind == "get" || kind == "set" {
            // RFC 6120: every request gets an answer; we serve ping and accept roster pushes
            // (RFC 6121: only from our own account).
            let to = e.get_attr("from").map(str::to_owned);
            let roster_push =
                kind == "set" && e.get_child("query", "jabber:iq:roster").is_some() && to.as_deref().is_none_or(|f| f == self.me);
            let answer = if e.get_child("ping", NS_PING).is_some() || roster_push {
                Element::new("iq", NS_CLIENT).attr("type", "result").attr("id", &id)
            } else {
                Element::new("iq", NS_CLIENT)
                    .attr("type", "error")
                    .attr("id", &id)
                    .child(Element::new("error", NS_CLIENT).attr("type", "cancel").child(Element::new("service-unavailable", NS_STANZAS)))
            };
            let answer = match to {
                Some(to) => answer.attr("to", to),
                None => answer,
            };
            return self.send(&answer).await;
        }
        let Some(pending) = self.iqs.remove(&id) else {
            return Ok(());
        };
        match pending {
            PendingIq::Ping => self.emit(Incoming::Pong).await,
            PendingIq::Muc(room) => self.on_muc_iq(&room, &e).await,
            PendingIq::RoomName { room, inviter } => self.on_room_name(room, inviter, &e).await,
            PendingIq::Bookmarks => {
                for b in bookmarks::read(&e, &self.config.muc_domain) {
                    if !self.cursor.archives.contains_key(&b.room) {
                        tracing::debug!(room = %b.room, "a group found in the bookmarks");
                        self.on_invitation(b.room, b.title, String::new(), true).await?;
                    }
                }
                Ok(())
            }
            PendingIq::Bookmark => {
                let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
                if kind != "result" && condition != "conflict" {
                    tracing::debug!(%condition, "the server did not take a bookmark");
                }
                Ok(())
            }
            PendingIq::Query => self.on_query_done(&id, &e).await,
            PendingIq::History(read) => {
                let results = self.queries.remove(&id).map(|q| q.results).unwrap_or_default();
                if kind != "result" {
                    let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
                    let _ = read.reply.send(Err(TransportError::Refused {
                        code: condition,
                        message: "history query refused".into(),
                        retryable: false,
                    }));
                    return Ok(());
                }
                let complete = e.get_child("fin", NS_MAM).and_then(|f| f.get_attr("complete")) == Some("true");
                self.on_history_page(read, results, complete).await
            }
        }
    }

    /// An archive query ended: turn its results into events.
    async fn on_query_done(&mut self, id: &str, fin_iq: &Element) -> Flow {
        let Some(mut query) = self.queries.remove(id) else {
            return Ok(());
        };
        if query.tail && fin_iq.get_attr("type") == Some("result") && self.tail_needs_more(&query, fin_iq) {
            return self.read_older_tail_page(query).await;
        }
        query.results.append(&mut query.newer);
        self.reading.remove(&query.archive);
        if !query.archive.is_empty() && !self.cursor.archives.contains_key(&query.archive) {
            // Removed from the group while the read was under way: what it found is not ours.
            return if query.sync { self.next_sync_read().await } else { Ok(()) };
        }
        if fin_iq.get_attr("type") != Some("result") {
            let condition = fin_iq.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
            if condition == "item-not-found" && !query.tail {
                // Our position is gone (the server trimmed the archive): read again from our last
                // entry's time.
                tracing::warn!(archive = %query.archive, "our position in the archive is gone; reading it again from our last entry's time");
                self.re_anchor(&query.archive);
                return self.read_archive(query.archive, query.sync).await;
            }
            if query.archive.is_empty() {
                return Err(format!("the server refused to read the archive: {condition}"));
            }
            // A group we can no longer read (removed while offline, destroyed): leave it.
            tracing::warn!(room = %query.archive, %condition, "cannot read a group archive; leaving it");
            self.cursor.archives.remove(&query.archive);
            self.unbookmark(&query.archive).await?;
            let kind = RemoteEventKind::Membership {
                conversation: muc::group(&query.archive, String::new(), Vec::new()),
                added: Vec::new(),
                removed: vec![self.me.clone()],
            };
            let event = RemoteEvent { cursor: self.cursor.encode(), kind };
            if !query.sync {
                return self.emit(Incoming::Live(event)).await;
            }
            let remaining = match &self.phase {
                Phase::Syncing { done } => self.cursor.archives.keys().any(|a| !done.contains(a)),
                _ => false,
            };
            self.emit(Incoming::SyncPage { events: vec![event], has_more: remaining }).await?;
            return if remaining { Ok(()) } else { self.go_live().await };
        }
        // The newest entries reach the end of the archive by definition.
        let complete =
            query.tail || fin_iq.get_child("fin", NS_MAM).and_then(|f| f.get_attr("complete")) == Some("true") || query.results.is_empty();
        let room = (!query.archive.is_empty()).then_some(query.archive.clone());
        let mut events = Vec::new();
        let mut invited = Vec::new();
        let mut untitled = Vec::new();
        let mut bookmarked = Vec::new();
        let mut message_ids = Vec::new();
        for result in &query.results {
            let Some(entry) = read_archived(result, room.as_deref(), &self.me) else {
                tracing::warn!("skipping a malformed archive result");
                continue;
            };
            let seq = self.cursor.advance(&query.archive, &entry.archive_id, entry.stamp_us);
            let kind = match entry.what {
                // Notices a room sends to us directly (ejabberd tells owners of affiliation
                // changes), archived in our own archive: not messages of the group.
                Archived::Message { conversation, .. } if query.archive.is_empty() && self.is_room(&conversation) => None,
                Archived::Message { conversation, sender, client_id, stable_client_id, reply_id, body, receipts } => {
                    message_ids.push(client_id.clone());
                    let sender = match &room {
                        Some(room) => self.occupant(room, sender),
                        None => sender,
                    };
                    if sender == self.me {
                        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.remove(&client_id);
                        self.seen.insert(client_id.clone());
                    }
                    Some(RemoteEventKind::Message(RemoteMessage {
                        server_id: entry.archive_id,
                        conversation,
                        seq,
                        sender,
                        client_id,
                        stable_client_id,
                        reply_id,
                        body,
                        server_time_ms: (entry.stamp_us / 1000) as i64,
                        receipts,
                    }))
                }
                Archived::Receipt { conversation, user, kind, id } => {
                    Some(RemoteEventKind::Receipt { conversation, user, kind, seq: 0, message: Some(id) })
                }
                Archived::Invite { room, title, inviter } => {
                    if self.cursor.follow(&room) {
                        if title.is_empty() {
                            untitled.push((room.clone(), inviter.clone()));
                        }
                        bookmarked.push((room.clone(), title.clone()));
                        invited.push(room.clone());
                        Some(self.invited(&room, title, inviter))
                    } else {
                        None
                    }
                }
                Archived::Nothing => None,
            };
            // Entries that mean nothing still move the cursor: a no-op event carries it.
            let kind = kind.unwrap_or(RemoteEventKind::Receipt {
                conversation: String::new(),
                user: String::new(),
                kind: ReceiptKind::Delivered,
                seq: 0,
                message: None,
            });
            events.push(RemoteEvent { cursor: self.cursor.encode(), kind });
        }
        // Keep only the last no-op: the rest carry nothing.
        let last = events.len().saturating_sub(1);
        let events: Vec<RemoteEvent> = events
            .into_iter()
            .enumerate()
            .filter(|(i, e)| *i == last || !matches!(&e.kind, RemoteEventKind::Receipt { conversation, .. } if conversation.is_empty()))
            .map(|(_, e)| e)
            .collect();
        for room in invited {
            self.join(&room).await?;
        }
        // (Answered after this page's events are out: the title follows the group.)
        for (room, inviter) in untitled {
            self.ask_room_name(room, inviter).await?;
        }
        for (room, title) in bookmarked {
            self.bookmark(&room, &title).await?;
        }
        self.lag.seen(&query.archive, message_ids.iter().map(String::as_str));
        let read_to_end = complete && !self.cued.contains(&query.archive);
        if read_to_end {
            let given_up = self.lag.given_up;
            self.lag.after_read(&query.archive, tokio::time::Instant::now());
            if self.lag.given_up > given_up {
                tracing::debug!(archive = %query.archive, "a live message never showed in its archive");
                self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.archive_lag_given_up += 1;
            }
        }
        if query.sync {
            if complete {
                if let Phase::Syncing { done } = &mut self.phase {
                    done.insert(query.archive.clone());
                }
            }
            let remaining = match &self.phase {
                Phase::Syncing { done } => self.cursor.archives.keys().any(|a| !done.contains(a)),
                _ => false,
            };
            if events.is_empty() {
                // Nothing to commit: go straight on.
                return self.next_sync_read().await;
            }
            self.emit(Incoming::SyncPage { events, has_more: remaining || !complete }).await?;
            if !remaining && complete {
                self.go_live().await?;
            }
        } else {
            for event in events {
                self.emit(Incoming::Live(event)).await?;
            }
            if !complete || self.cued.remove(&query.archive) {
                self.read_archive(query.archive, false).await?;
            } else if query.archive.is_empty() {
                self.poll_for_acknowledged().await?;
            }
        }
        Ok(())
    }
}
