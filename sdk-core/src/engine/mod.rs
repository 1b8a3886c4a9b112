//! The engine: one task per client owns the live link, the timers and the state machines
//! (backoff, outbox, sync, delivered receipts). The public `Client` is a handle that talks to it
//! over a channel.
//!
//! Its loop: while disconnected, wait out the backoff (or a hint from the app) and connect with
//! the stored token; once connected, resend the outbox in order, sync from the last committed
//! cursor, then go live. Inbound traffic is applied in batches: everything already queued on the
//! link is committed in one store transaction (events and cursor together), then acknowledged,
//! then published to the app. A missing heartbeat, a closed socket or a network-lost hint drops
//! the link and the cycle starts again; a refused credential stops it (`AuthFailed`).

pub mod backoff;
pub mod connection;
mod inbound;
#[cfg(test)]
mod model_test;
pub mod outbox;
pub mod receipts;
pub mod sync;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::event::{Event, EventSender};
use crate::model::{Body, ConnectionState, Message, ReceiptKind};
use crate::store::{Store, conversations, messages, settings};
use crate::transport::{Auth, Incoming, Link, Outgoing, Request, TransportError};
use connection::{ConnectionMachine, Next};
use outbox::{ChangeError, Outbox};
use receipts::{DeliveredReceipts, ReceiptsInFlight};
use sync::{SyncState, SyncStep};

/// Most inbound items applied in one store transaction.
const MAX_INBOUND_BATCH: usize = 2048;

/// Hints from the app about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    NetworkAvailable,
    NetworkLost,
    Foreground,
    Background,
}

pub(crate) enum Command {
    Authenticate { auth: Auth, reply: oneshot::Sender<Result<String>> },
    Logout { reply: oneshot::Sender<Result<()>> },
    Enqueue(Vec<Enqueued>),
    Retry { client_id: String },
    Cancel { client_id: String, reply: oneshot::Sender<Result<Message>> },
    Edit { client_id: String, body: Body, reply: oneshot::Sender<Result<Message>> },
    Request(Request),
    Ephemeral(Outgoing),
    MarkRead { conversation: String, seq: u64 },
    Hint(Hint),
    Shutdown { reply: oneshot::Sender<()> },
}

/// A message just committed to the outbox (`Command::Enqueue`, in creation order), for the
/// engine to transmit.
pub(crate) struct Enqueued {
    pub client_id: String,
    pub conversation: String,
    pub body: Body,
    /// Creation order (the store's row order).
    pub order: i64,
}

/// What the session store says at start.
pub(crate) struct Boot {
    pub username: Option<String>,
    pub token: Option<String>,
    pub cursor: Option<String>,
    pub outbox: Vec<messages::Unsent>,
}

impl Boot {
    /// What an engine starts from: the account, its session, its sync position and its outbox.
    pub(crate) fn load(c: &rusqlite::Connection) -> crate::Result<Boot> {
        Ok(Boot {
            username: settings::get(c, settings::USERNAME)?,
            token: settings::get(c, settings::TOKEN)?,
            cursor: settings::get(c, settings::CURSOR)?,
            outbox: messages::load_outbox(c)?,
        })
    }
}

struct LiveLink {
    outgoing: mpsc::Sender<Outgoing>,
    incoming: mpsc::Receiver<Incoming>,
    last_heard: Instant,
    last_sent: Instant,
}

pub(crate) struct Engine {
    config: ClientConfig,
    store: Store,
    commands: mpsc::Receiver<Command>,
    events: EventSender,
    state: watch::Sender<ConnectionState>,
    caught_up: watch::Sender<bool>,
    me: Option<String>,
    token: Option<String>,
    connection: ConnectionMachine,
    outbox: Outbox,
    sync: SyncState,
    link: Option<LiveLink>,
    /// Delivered receipts held back during a catch-up.
    receipts: DeliveredReceipts,
    /// Receipts of single messages sent on this link, not confirmed yet.
    receipts_in_flight: ReceiptsInFlight,
    stopped: bool,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Whether a command should end the current wait (backoff sleep or connect attempt).
#[derive(PartialEq, Eq)]
enum Wake {
    Keep,
    Interrupt,
}

impl Engine {
    pub(crate) fn new(
        config: ClientConfig,
        store: Store,
        boot: Boot,
        commands: mpsc::Receiver<Command>,
        events: EventSender,
        state: watch::Sender<ConnectionState>,
        caught_up: watch::Sender<bool>,
    ) -> Self {
        let mut outbox = Outbox::new(config.send_window);
        for u in boot.outbox {
            outbox.push(u.client_id.clone(), u.conversation, u.body, u.order);
            if u.failed {
                outbox.on_refused(&u.client_id, false);
            }
        }
        let connection =
            ConnectionMachine::new(config.backoff, config.seed, boot.token.is_some(), boot.username.is_some(), std::time::Instant::now());
        Engine {
            connection,
            config,
            store,
            commands,
            events,
            state,
            caught_up,
            me: boot.username,
            token: boot.token,
            outbox,
            sync: SyncState::new(boot.cursor),
            link: None,
            receipts: DeliveredReceipts::new(std::time::Instant::now()),
            receipts_in_flight: ReceiptsInFlight::default(),
            stopped: false,
        }
    }

    /// Runs until the client stops. A panic inside the engine (a bug, or a transport whose
    /// connect panicked: it runs on this task) does not leave a dead client: the engine is
    /// rebuilt from the store, which holds everything durable (session, cursor, outbox), and
    /// reconnects. The request that was being handled fails (its caller gets `Error::Stopped`);
    /// nothing committed is lost.
    pub(crate) async fn run(mut self) {
        use futures_util::FutureExt as _;
        // A panic that comes back at once (the same bug on every connect) must not spin.
        let mut pause = Duration::from_millis(250);
        loop {
            match std::panic::AssertUnwindSafe(self.run_until_stopped()).catch_unwind().await {
                Ok(()) => return,
                Err(panic) => {
                    let what = panic_message(panic.as_ref());
                    tracing::error!(panic = %what, "the engine panicked; restarting it from the store");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    self = match self.rebuilt_from_store().await {
                        Some(engine) => engine,
                        None => return,
                    };
                }
            }
        }
    }

    async fn run_until_stopped(&mut self) {
        while !self.stopped {
            if self.link.is_some() {
                self.run_connected().await;
            } else {
                self.run_disconnected().await;
            }
        }
    }

    /// A new engine on the same channels, from what the store holds (after a panic). `None` if
    /// the store cannot be read: the client then stops.
    async fn rebuilt_from_store(self) -> Option<Engine> {
        let boot = self.store.call(Boot::load).await;
        let boot = match boot {
            Ok(boot) => boot,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the store after a panic; the client stops");
                return None;
            }
        };
        let Engine { config, store, commands, events, state, caught_up, .. } = self;
        caught_up.send_replace(false);
        Some(Engine::new(config, store, boot, commands, events, state, caught_up))
    }

    fn publish_state(&self, state: ConnectionState) {
        if *self.state.borrow() != state {
            tracing::debug!(?state, "connection state");
            self.state.send_replace(state.clone());
            let _ = self.events.send(Event::ConnectionChanged(state));
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn run_disconnected(&mut self) {
        let until = match self.connection.next(std::time::Instant::now()) {
            Next::Idle(state) => {
                self.publish_state(state);
                self.idle_until_command().await;
                return;
            }
            Next::Wait { until, state } => {
                if !matches!(*self.state.borrow(), ConnectionState::Reconnecting { .. }) {
                    self.publish_state(state);
                }
                Some(until)
            }
            Next::Connect => None,
        };
        if let Some(until) = until {
            let sleep = tokio::time::sleep_until(Instant::from_std(until));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = self.commands.recv() => {
                        if self.on_command_or_stop(command).await == Wake::Interrupt {
                            return;
                        }
                    }
                }
            }
        }
        let Some(token) = self.token.clone() else { return };
        self.publish_state(ConnectionState::Connecting);
        let connecting = self.config.transport.connect(Auth::Token { token, device: self.config.device_id.clone() });
        tokio::pin!(connecting);
        let result = loop {
            tokio::select! {
                result = &mut connecting => break result,
                command = self.commands.recv() => {
                    if self.on_command_or_stop(command).await == Wake::Interrupt {
                        return;
                    }
                }
            }
        };
        match result {
            Ok(link) => self.attach(link).await,
            Err(TransportError::Auth(message)) => {
                tracing::warn!(%message, "stored session refused");
                let state = self.connection.auth_refused(message);
                self.publish_state(state);
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect failed");
                let state = self.connection.connect_failed(std::time::Instant::now());
                self.publish_state(state);
            }
        }
    }

    async fn idle_until_command(&mut self) {
        let command = self.commands.recv().await;
        self.on_command_or_stop(command).await;
    }

    async fn on_command_or_stop(&mut self, command: Option<Command>) -> Wake {
        match command {
            Some(c) => self.on_command(c).await,
            None => {
                // Every Client handle is gone.
                self.stopped = true;
                Wake::Interrupt
            }
        }
    }

    /// A link is up: resend, resync, rejoin, then live traffic.
    async fn attach(&mut self, link: Link) {
        let now = Instant::now();
        let state = self.connection.connected(now.into_std());
        self.link = Some(LiveLink { outgoing: link.outgoing, incoming: link.incoming, last_heard: now, last_sent: now });
        self.publish_state(state);
        self.outbox.on_disconnect();
        let SyncStep::Request { since } = self.sync.on_connected() else { unreachable!("a new link always syncs first") };
        self.send_link(Outgoing::Sync { since }).await;
        self.pump_outbox().await;
        let pending = self
            .store
            .call(|c| {
                Ok((
                    conversations::active_rooms(c)?,
                    conversations::unsynced_receipts(c, ReceiptKind::Delivered)?,
                    conversations::unsynced_receipts(c, ReceiptKind::Read)?,
                ))
            })
            .await;
        if let Ok((rooms, deliveries, reads)) = pending {
            for room in rooms {
                let (reply, _) = oneshot::channel();
                self.send_link(Outgoing::Request(Request::JoinRoom { conversation: room, reply })).await;
            }
            for (conversation, seq) in deliveries {
                self.send_receipt(conversation, seq, ReceiptKind::Delivered).await;
            }
            for (conversation, seq) in reads {
                self.send_receipt(conversation, seq, ReceiptKind::Read).await;
            }
        }
    }

    fn detach(&mut self, why: &str) {
        if self.link.take().is_none() {
            return;
        }
        tracing::debug!(why, "link dropped");
        // Still owed in the store: the next link sends them.
        self.receipts.clear();
        self.receipts_in_flight.clear();
        self.caught_up.send_replace(false);
        self.outbox.on_disconnect();
        self.sync.on_disconnected();
        if !self.stopped {
            let state = self.connection.link_lost(std::time::Instant::now());
            self.publish_state(state);
        }
    }

    /// The server revoked the session: the link is dropped and, as for a refused credential,
    /// nothing reconnects until the app logs in again.
    fn revoked(&mut self, message: String) {
        if self.link.take().is_none() {
            return;
        }
        tracing::warn!(%message, "session revoked by the server");
        self.receipts.clear();
        self.caught_up.send_replace(false);
        self.outbox.on_disconnect();
        self.sync.on_disconnected();
        let state = self.connection.auth_refused(message);
        self.publish_state(state);
    }

    async fn send_link(&mut self, outgoing: Outgoing) {
        if let Some(link) = &mut self.link {
            link.last_sent = Instant::now();
            if let Err(mpsc::error::SendError(outgoing)) = link.outgoing.send(outgoing).await {
                if let Outgoing::Request(r) = outgoing {
                    r.fail(TransportError::Closed);
                }
            }
        } else if let Outgoing::Request(r) = outgoing {
            r.fail(TransportError::Closed);
        }
    }

    async fn pump_outbox(&mut self) {
        if self.link.is_none() {
            return;
        }
        while let Some(entry) = self.outbox.next_to_send() {
            let send =
                Outgoing::Send { client_id: entry.client_id.clone(), conversation: entry.conversation.clone(), body: entry.body.clone() };
            self.send_link(send).await;
        }
    }

    /// Sends a delivered (or read) receipt for messages up to `seq`; the store owes it until
    /// the server's answer, and it is sent again on every new link until then. For a transport
    /// whose receipts name messages, the store says which: the newest a marker may name, and
    /// (delivered) those whose senders asked for a receipt of their own.
    async fn send_receipt(&mut self, conversation: String, seq: u64, kind: ReceiptKind) {
        let (reply, answer) = oneshot::channel();
        let (message, receipts) = if self.config.transport.receipts_name_messages() {
            let lookup = conversation.clone();
            let named = self
                .store
                .call(move |c| {
                    let owed = if kind == ReceiptKind::Delivered { messages::owed_receipts(c, &lookup, seq)? } else { Vec::new() };
                    Ok((messages::reference_at(c, &lookup, seq)?, owed))
                })
                .await;
            let (message, owed) = named.unwrap_or_default();
            (message, self.receipts_in_flight.to_send(&conversation, owed))
        } else {
            (None, Vec::new())
        };
        let conv = conversation.clone();
        let sent = receipts.clone();
        let request = match kind {
            ReceiptKind::Read => Request::MarkRead { conversation: conv, seq, message, reply },
            ReceiptKind::Delivered => Request::MarkDelivered { conversation: conv, seq, message, receipts, reply },
        };
        self.send_link(Outgoing::Request(request)).await;
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = answer.await {
                let _ = store
                    .call(move |c| {
                        messages::receipts_sent(c, &conversation, &sent)?;
                        conversations::set_receipt_synced(c, kind, &conversation, seq)
                    })
                    .await;
            }
        });
    }

    /// Delivered receipts for what a batch stored, as [`DeliveredReceipts`] decides.
    async fn send_delivered_receipts(&mut self, delivered: Vec<(String, receipts::Due)>, catching_up: bool) {
        for (conversation, seq) in self.receipts.on_stored(delivered, catching_up, std::time::Instant::now()) {
            self.send_receipt(conversation, seq, ReceiptKind::Delivered).await;
        }
    }

    async fn run_connected(&mut self) {
        let hb = self.config.heartbeat;
        let link = self.link.as_mut().expect("connected");
        let dead_at = link.last_heard + hb.timeout;
        let ping_at = link.last_sent.max(link.last_heard) + hb.interval;
        tokio::select! {
            command = self.commands.recv() => {
                self.on_command_or_stop(command).await;
            }
            first = link.incoming.recv() => match first {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_INBOUND_BATCH {
                        match link.incoming.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    link.last_heard = Instant::now();
                    let revoked = batch.iter().find_map(|i| match i {
                        Incoming::Revoked { message } => Some(message.clone()),
                        _ => None,
                    });
                    self.apply_inbound(batch).await;
                    if let Some(message) = revoked {
                        self.revoked(message);
                    }
                }
                None => self.detach("link closed"),
            },
            _ = tokio::time::sleep_until(dead_at.min(ping_at)) => {
                if Instant::now() >= dead_at {
                    self.detach("heartbeat timeout");
                } else {
                    self.send_link(Outgoing::Ping).await;
                }
            }
        }
    }

    async fn apply_inbound(&mut self, batch: Vec<Incoming>) {
        let me = self.me.clone().unwrap_or_default();
        let applied = match self.store.call(move |c| inbound::apply_batch(c, &me, batch)).await {
            Ok(applied) => applied,
            Err(e) => {
                // Nothing was committed or acknowledged: drop the link and replay from the last
                // committed cursor.
                tracing::error!(error = %e, "cannot store inbound events");
                self.detach("store failure");
                return;
            }
        };
        for client_id in &applied.acked {
            self.outbox.on_ack(client_id);
        }
        for (client_id, retryable) in &applied.refused {
            self.outbox.on_refused(client_id, *retryable);
        }
        for event in applied.events {
            self.emit(event);
        }
        if let Some(cursor) = applied.last_cursor.clone() {
            self.send_link(Outgoing::AckCursor(cursor)).await;
        }
        if let Some((count, has_more)) = applied.page {
            match self.sync.on_page_committed(applied.page_cursor, count, has_more) {
                SyncStep::Request { since } => self.send_link(Outgoing::Sync { since }).await,
                SyncStep::Live => {
                    self.caught_up.send_replace(true);
                }
            }
            let caught_up = !has_more;
            self.emit(Event::SyncProgress { applied: self.sync.applied, caught_up });
        }
        if let Some((cursor, count)) = applied.live {
            self.sync.on_live_committed(cursor, count);
        }
        self.send_delivered_receipts(applied.delivered, matches!(applied.page, Some((_, true)))).await;
        if applied.pause_sends {
            // A retryable refusal (rate limit, server busy): give the server a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.pump_outbox().await;
    }

    async fn on_command(&mut self, command: Command) -> Wake {
        match command {
            Command::Authenticate { auth, reply } => {
                let result = self.authenticate(auth).await;
                let _ = reply.send(result);
                return Wake::Interrupt;
            }
            Command::Logout { reply } => {
                if self.link.is_some() {
                    let (tx, rx) = oneshot::channel();
                    self.send_link(Outgoing::Request(Request::Logout { reply: tx })).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
                }
                self.link = None;
                self.receipts_in_flight.clear();
                self.outbox.on_disconnect();
                self.sync.on_disconnected();
                self.token = None;
                let result = self.store.call(|c| settings::delete(c, settings::TOKEN)).await;
                let state = self.connection.logged_out();
                self.publish_state(state);
                let _ = reply.send(result);
                return Wake::Interrupt;
            }
            Command::Enqueue(enqueued) => {
                for e in enqueued {
                    self.outbox.push(e.client_id, e.conversation, e.body, e.order);
                }
                self.pump_outbox().await;
            }
            Command::Retry { client_id } => {
                let _ = self.outbox.retry(&client_id);
                self.pump_outbox().await;
            }
            Command::Cancel { client_id, reply } => {
                let result = match self.outbox.cancel(&client_id) {
                    Err(ChangeError::InFlight) => Err(Error::NotChangeable(client_id)),
                    _ => {
                        let me = self.me.clone().unwrap_or_default();
                        self.store.call(move |c| messages::delete_unsent(c, &me, &client_id)).await
                    }
                };
                if let Ok(m) = &result {
                    self.emit(Event::MessageRemoved { id: m.id.clone(), conversation_id: m.conversation_id.clone() });
                    self.emit_conversation(m.conversation_id.clone()).await;
                }
                let _ = reply.send(result);
            }
            Command::Edit { client_id, body, reply } => {
                let result = match self.outbox.edit(&client_id, body.clone()) {
                    Err(ChangeError::InFlight) => Err(Error::NotChangeable(client_id)),
                    _ => {
                        let me = self.me.clone().unwrap_or_default();
                        self.store.call(move |c| messages::edit_unsent(c, &me, &client_id, &body)).await
                    }
                };
                if let Ok(m) = &result {
                    self.emit(Event::MessageUpdated(m.clone()));
                }
                let _ = reply.send(result);
            }
            Command::Request(request) => self.send_link(Outgoing::Request(request)).await,
            Command::Ephemeral(outgoing) => {
                if self.link.is_some() {
                    self.send_link(outgoing).await;
                }
            }
            Command::MarkRead { conversation, seq } => {
                if self.link.is_some() {
                    self.send_receipt(conversation, seq, ReceiptKind::Read).await;
                }
            }
            Command::Hint(hint) => return self.on_hint(hint),
            Command::Shutdown { reply } => {
                self.stopped = true;
                self.send_link(Outgoing::Close).await;
                if let Some(mut link) = self.link.take() {
                    // Let the transport end its session cleanly (bounded): it closes the channel
                    // when done.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async { while link.incoming.recv().await.is_some() {} }).await;
                }
                let state = self.connection.stop();
                self.publish_state(state);
                let _ = reply.send(());
                return Wake::Interrupt;
            }
        }
        Wake::Keep
    }

    fn on_hint(&mut self, hint: Hint) -> Wake {
        let now = std::time::Instant::now();
        match hint {
            Hint::NetworkAvailable => {
                self.connection.network(true, now);
                Wake::Interrupt
            }
            Hint::NetworkLost => {
                self.connection.network(false, now);
                self.detach("network lost");
                Wake::Interrupt
            }
            Hint::Foreground => {
                if self.link.is_none() {
                    self.connection.foreground(now);
                    return Wake::Interrupt;
                }
                Wake::Keep
            }
            Hint::Background => Wake::Keep,
        }
    }

    async fn emit_conversation(&self, id: String) {
        if let Ok(Some(c)) = self.store.call(move |c| conversations::get(c, &id)).await {
            self.emit(Event::ConversationChanged(c));
        }
    }

    /// Register or log in on a fresh link; on success the session is stored and the link used.
    async fn authenticate(&mut self, auth: Auth) -> Result<String> {
        self.link = None;
        self.receipts_in_flight.clear();
        self.caught_up.send_replace(false);
        self.outbox.on_disconnect();
        self.sync.on_disconnected();
        self.publish_state(ConnectionState::Connecting);
        let link = match self.config.transport.connect(auth).await {
            Ok(link) => link,
            Err(e) => {
                let state = match &e {
                    TransportError::Auth(message) => self.connection.auth_refused(message.clone()),
                    _ => self.connection.connect_failed(std::time::Instant::now()),
                };
                self.publish_state(state);
                return Err(e.into());
            }
        };
        let username = link.grant.username.clone();
        if let Some(me) = &self.me {
            if *me != username {
                let state = self.connection.next(std::time::Instant::now());
                if let Next::Idle(state) | Next::Wait { state, .. } = state {
                    self.publish_state(state);
                }
                return Err(Error::InvalidArgument(format!("this store belongs to {me}; open another store for {username}")));
            }
        }
        let (name, token) = (username.clone(), link.grant.token.clone());
        self.store
            .call(move |c| {
                settings::set(c, settings::USERNAME, &name)?;
                if let Some(token) = &token {
                    settings::set(c, settings::TOKEN, token)?;
                }
                Ok(())
            })
            .await?;
        if self.me.is_none() {
            tracing::Span::current().record("user", username.as_str());
        }
        self.me = Some(username.clone());
        if link.grant.token.is_some() {
            self.token = link.grant.token.clone();
        }
        self.connection.session_started();
        self.attach(link).await;
        Ok(username)
    }
}
