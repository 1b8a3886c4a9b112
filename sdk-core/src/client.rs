//! The public handle: cheap to clone, every call goes to the store (reads, the local echo) or to
//! the engine task (network). Sending commits the local echo and its outbox row in one
//! transaction before returning; the engine transmits afterwards.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::ClientConfig;
use crate::engine::{Boot, Command, Engine, Hint};
use crate::error::{Error, Result};
use crate::event::{Event, EventSender, EventStream};
use crate::model::{Body, ConnectionState, Conversation, Message, MessageId, MessagePage, MessageState, Presence};
use crate::sending::SendQueue;
use crate::store::{Store, conversations, messages, settings};
use crate::transport::{Auth, Outgoing, RemoteConversation, Reply, Request, TransportError};

/// A Missive client. See the crate documentation for an example.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    store: Store,
    events: EventSender,
    state: watch::Receiver<ConnectionState>,
    caught_up: watch::Receiver<bool>,
    device: String,
    /// Whether the transport numbers each conversation 1, 2, 3, ... (see `Transport`).
    dense_sequences: bool,
    /// The store's user once known: a store belongs to one user for good (logging in as another
    /// is refused), so sends need not read it from the store each time.
    me: std::sync::OnceLock<String>,
    sends: SendQueue,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.try_send(Command::Shutdown { reply });
    }
}

impl Client {
    /// Opens the store and starts the engine on the current tokio runtime. If the store holds a
    /// session, the client reconnects with it at once, without asking for the password.
    ///
    /// ```no_run
    /// # async fn f() -> missive::Result<()> {
    /// use missive::{Client, ClientConfig};
    /// let client = Client::open(ClientConfig::native("wss://chat.example.com").store_path("me.db").device_id("phone")).await?;
    /// if !client.has_session().await? {
    ///     client.login("alice", "correct horse battery").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn open(config: ClientConfig) -> Result<Client> {
        let store = Store::open(&config.store)?;
        let boot = store.call(Boot::load).await?;
        let (commands, rx) = mpsc::channel(1024);
        let events = EventSender::new(4096);
        let initial = ConnectionState::Connecting;
        let (state_tx, state) = watch::channel(initial);
        let (caught_up_tx, caught_up) = watch::channel(false);
        let device = config.device_id.clone();
        let dense_sequences = config.transport.dense_sequences();
        // The engine's and its links' log lines name the user, so that several clients in one
        // process can be told apart (filled in at login for a fresh store).
        let span = tracing::info_span!("missive", user = tracing::field::Empty);
        if let Some(user) = &boot.username {
            span.record("user", user.as_str());
        }
        let engine = Engine::new(config, store.clone(), boot, rx, events.clone(), state_tx, caught_up_tx);
        tokio::spawn(tracing::Instrument::instrument(engine.run(), span));
        let sends = SendQueue::start(store.clone(), commands.clone(), events.clone());
        Ok(Client {
            inner: Arc::new(Inner { commands, store, events, state, caught_up, device, dense_sequences, me: Default::default(), sends }),
        })
    }

    async fn command(&self, command: Command) -> Result<()> {
        self.inner.commands.send(command).await.map_err(|_| Error::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.command(make(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Creates an account and logs in. The session is stored for later starts.
    pub async fn register(&self, username: &str, password: &str) -> Result<()> {
        let auth = Auth::Register { username: username.into(), password: password.into(), device: self.inner.device.clone() };
        self.ask(|reply| Command::Authenticate { auth, reply }).await.map(|_| ())
    }

    /// Logs in. A wrong password gives `Error::AuthFailed` and the state `AuthFailed`.
    pub async fn login(&self, username: &str, password: &str) -> Result<()> {
        let auth = Auth::Login { username: username.into(), password: password.into(), device: self.inner.device.clone() };
        self.ask(|reply| Command::Authenticate { auth, reply }).await.map(|_| ())
    }

    /// Revokes the session on the server (when reachable) and forgets it locally. Unsent messages
    /// stay in the store and are sent after the next login of the same user.
    pub async fn logout(&self) -> Result<()> {
        self.ask(|reply| Command::Logout { reply }).await
    }

    /// The logged-in user, if any.
    pub async fn username(&self) -> Result<Option<String>> {
        self.inner.store.call(|c| settings::get(c, settings::USERNAME)).await
    }

    async fn me(&self) -> Result<String> {
        if let Some(me) = self.inner.me.get() {
            return Ok(me.clone());
        }
        let me = self.username().await?.ok_or(Error::NotLoggedIn)?;
        Ok(self.inner.me.get_or_init(|| me).clone())
    }

    /// The current connection state.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// Waits until the connection state satisfies `pred`, and returns it.
    pub async fn wait_for_state(&self, pred: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
        let mut rx = self.inner.state.clone();
        let state = rx.wait_for(|s| pred(s)).await.map(|s| s.clone());
        state.unwrap_or_else(|_| self.connection_state())
    }

    /// All events from now on, starting with the current connection state.
    ///
    /// ```no_run
    /// # async fn f(client: missive::Client) {
    /// use missive::{ConnectionState, Event};
    /// let mut events = client.subscribe();
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Event::ConnectionChanged(ConnectionState::Reconnecting { attempt, next_in }) => println!("retry {attempt} in {next_in:?}"),
    ///         Event::MessageAdded(m) if !m.outgoing => println!("{}: {}", m.sender, m.body.preview()),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> EventStream {
        let rx = self.inner.events.subscribe();
        EventStream::new(self.connection_state(), rx)
    }

    /// Whether a session is stored (the client connects by itself without a password).
    pub async fn has_session(&self) -> Result<bool> {
        self.inner.store.call(|c| Ok(settings::get(c, settings::TOKEN)?.is_some())).await
    }

    /// Whether the client is connected and has synced everything it missed.
    pub fn is_caught_up(&self) -> bool {
        *self.inner.caught_up.borrow()
    }

    /// Waits until connected and caught up, at most `timeout`; returns whether it happened.
    pub async fn wait_caught_up(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.caught_up.clone();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await, Ok(Ok(_)))
    }

    /// Waits until every message sent so far is acknowledged (or failed permanently), at most
    /// `timeout`; returns whether the outbox drained. Use before a planned exit.
    ///
    /// Reads the outbox from the store, then follows the events until each of those messages
    /// has left it (acknowledged, failed or cancelled), then reads the store again: a message
    /// sent meanwhile is waited for too. O(1) per event, so flushing a large outbox does not
    /// rescan it after every acknowledgement.
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<bool> {
        let mut events = self.inner.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribed before the read: an event for a message read here is not missed.
            let ids = self.inner.store.call(messages::unsent_ids).await?;
            if ids.is_empty() {
                return Ok(true);
            }
            let mut waiting: std::collections::HashSet<String> = ids.into_iter().collect();
            while !waiting.is_empty() {
                let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(false),
                    // Events were missed: read the outbox again.
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Ok(event)) => event,
                };
                match &*event {
                    Event::MessageUpdated(m) if m.server_id.is_some() || matches!(m.state, MessageState::Failed { .. }) => {
                        waiting.remove(&m.id);
                    }
                    Event::MessageRemoved { id, .. } => {
                        waiting.remove(id);
                    }
                    _ => {}
                }
            }
        }
    }

    // ---- conversations -------------------------------------------------------------------

    /// Conversations from the local cache, most recently active first, with last message and
    /// unread count.
    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        self.inner.store.call(conversations::list).await
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let id = id.to_owned();
        self.inner.store.call(move |c| conversations::get(c, &id)).await
    }

    async fn remote<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Request(make(tx))).await?;
        match rx.await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(TransportError::Closed.into()),
        }
    }

    async fn store_conversation(&self, remote: RemoteConversation) -> Result<Conversation> {
        let me = self.me().await?;
        let conversation = self.inner.store.call(move |c| conversations::upsert(c, &me, &remote, crate::now_ms())).await?;
        let _ = self.inner.events.send(Event::ConversationChanged(conversation.clone()));
        Ok(conversation)
    }

    /// Opens (or finds) the 1:1 conversation with `peer`. Needs a connection.
    pub async fn create_direct(&self, peer: &str) -> Result<Conversation> {
        let peer = peer.to_owned();
        let remote = self.remote(|reply| Request::CreateDirect { peer, reply }).await?;
        self.store_conversation(remote).await
    }

    /// Creates a group with this user as owner. Needs a connection.
    pub async fn create_group(&self, title: &str, members: &[&str]) -> Result<Conversation> {
        let (title, members) = (title.to_owned(), members.iter().map(|m| m.to_string()).collect());
        let remote = self.remote(|reply| Request::CreateGroup { title, members, reply }).await?;
        self.store_conversation(remote).await
    }

    pub async fn add_members(&self, conversation: &str, members: &[&str]) -> Result<Conversation> {
        let (conversation, members) = (conversation.to_owned(), members.iter().map(|m| m.to_string()).collect());
        let remote = self.remote(|reply| Request::AddMembers { conversation, members, reply }).await?;
        self.store_conversation(remote).await
    }

    pub async fn remove_members(&self, conversation: &str, members: &[&str]) -> Result<Conversation> {
        let (conversation, members) = (conversation.to_owned(), members.iter().map(|m| m.to_string()).collect());
        let remote = self.remote(|reply| Request::RemoveMembers { conversation, members, reply }).await?;
        self.store_conversation(remote).await
    }

    /// Creates a chat room and joins it.
    pub async fn create_room(&self, title: &str) -> Result<Conversation> {
        let title = title.to_owned();
        let remote = self.remote(|reply| Request::CreateRoom { title, reply }).await?;
        self.store_conversation(remote).await
    }

    /// Joins a chat room; the client rejoins it after every reconnect until `leave_room`.
    pub async fn join_room(&self, room: &str) -> Result<Conversation> {
        let conversation = room.to_owned();
        let remote = self.remote(|reply| Request::JoinRoom { conversation, reply }).await?;
        self.store_conversation(remote).await
    }

    pub async fn leave_room(&self, room: &str) -> Result<()> {
        let conversation = room.to_owned();
        self.remote(|reply| Request::LeaveRoom { conversation: conversation.clone(), reply }).await?;
        self.inner.store.call(move |c| conversations::set_active(c, &conversation, false)).await
    }

    /// Marks everything in the conversation read: the unread count drops to zero at once, and the
    /// read receipt reaches the server now or after the next reconnect.
    pub async fn mark_read(&self, conversation: &str) -> Result<()> {
        let id = conversation.to_owned();
        let moved = self.inner.store.call(move |c| Ok((conversations::mark_read(c, &id)?, conversations::get(c, &id)?))).await?;
        if let (Some(seq), Some(c)) = moved {
            let _ = self.inner.events.send(Event::ConversationChanged(c));
            self.command(Command::MarkRead { conversation: conversation.to_owned(), seq }).await?;
        }
        Ok(())
    }

    /// Saves (or clears) the draft of a conversation.
    pub async fn set_draft(&self, conversation: &str, draft: Option<&str>) -> Result<Conversation> {
        let (id, draft) = (conversation.to_owned(), draft.map(str::to_owned));
        let c = self.inner.store.call(move |c| conversations::set_draft(c, &id, draft.as_deref())).await?;
        let _ = self.inner.events.send(Event::ConversationChanged(c.clone()));
        Ok(c)
    }

    // ---- messages ------------------------------------------------------------------------

    /// Sends a message. Returns the local echo (state `Pending`) once it is committed to the
    /// outbox; from then on nothing loses it, not even a process kill. Concurrent calls share one
    /// commit (group commit), so many sends in flight cost little more than one.
    ///
    /// ```no_run
    /// # async fn f(client: missive::Client, conversation: &str) -> missive::Result<()> {
    /// use missive::Body;
    /// let poll = Body::Custom { kind: "poll".into(), payload: br#"{"q":"lunch?"}"#.to_vec(), metadata: Default::default() };
    /// let echo = client.send(conversation, poll).await?;
    /// assert_eq!(echo.state, missive::MessageState::Pending);
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, conversation: &str, body: Body) -> Result<Message> {
        validate_body(&body)?;
        let client_id = uuid::Uuid::now_v7().to_string();
        let me = self.me().await?;
        self.inner.sends.send(me, conversation.to_owned(), client_id, body).await
    }

    /// One message from the local store.
    pub async fn message(&self, id: &MessageId) -> Result<Option<Message>> {
        let id = id.clone();
        self.inner.store.call(move |c| messages::get(c, &id)).await
    }

    /// Messages committed locally and not yet acknowledged by the server (failed ones included).
    pub async fn unsent_count(&self) -> Result<u64> {
        self.inner.store.call(|c| messages::unsent_count(c, true)).await
    }

    /// Sends a text message.
    pub async fn send_text(&self, conversation: &str, text: &str) -> Result<Message> {
        self.send(conversation, Body::Text(text.to_owned())).await
    }

    async fn own_client_id(&self, id: &str) -> Result<String> {
        let me = self.me().await?;
        match id.split_once(':') {
            Some((sender, client_id)) if sender == me => Ok(client_id.to_owned()),
            _ => Err(Error::InvalidArgument(format!("{id} is not a message of {me}"))),
        }
    }

    /// Sends a failed message again.
    pub async fn retry(&self, id: &MessageId) -> Result<Message> {
        let client_id = self.own_client_id(id).await?;
        let me = self.me().await?;
        let cid = client_id.clone();
        let m = self.inner.store.call(move |c| messages::retry_failed(c, &me, &cid)).await?;
        let _ = self.inner.events.send(Event::MessageUpdated(m.clone()));
        self.command(Command::Retry { client_id }).await?;
        Ok(m)
    }

    /// Cancels a message that is not on the wire yet.
    pub async fn cancel(&self, id: &MessageId) -> Result<Message> {
        let client_id = self.own_client_id(id).await?;
        self.ask(|reply| Command::Cancel { client_id, reply }).await
    }

    /// Changes the body of a message that is not on the wire yet.
    pub async fn edit(&self, id: &MessageId, body: Body) -> Result<Message> {
        validate_body(&body)?;
        let client_id = self.own_client_id(id).await?;
        self.ask(|reply| Command::Edit { client_id, body, reply }).await
    }

    /// A page of messages, newest first, before `before_seq` (`None`: the newest, local echoes
    /// included). Served from the cache; when the cache has a gap or runs short, the missing
    /// page is fetched from the server and stitched in (no duplicates, no gaps).
    ///
    /// ```no_run
    /// # async fn f(client: missive::Client, conversation: &str) -> missive::Result<()> {
    /// let mut before = None;
    /// loop {
    ///     let page = client.messages(conversation, before, 50).await?;
    ///     for m in &page.messages {
    ///         println!("{} {}: {}", m.seq.unwrap_or(0), m.sender, m.body.preview());
    ///     }
    ///     if !page.has_more { break; }
    ///     before = page.next_before_seq;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn messages(&self, conversation: &str, before_seq: Option<u64>, limit: u32) -> Result<MessagePage> {
        let limit = limit.clamp(1, missive_proto::MAX_PAGE_SIZE);
        let conv = self.conversation(conversation).await?.ok_or_else(|| Error::NotFound(format!("conversation {conversation}")))?;
        let id = conversation.to_owned();
        let load = move |store: Store, id: String| async move {
            store
                .call(move |c| {
                    let page = messages::page(c, &id, before_seq, limit)?;
                    let (last_seq, history_complete): (i64, bool) =
                        c.query_row("SELECT last_seq, history_complete FROM conversations WHERE id = ?1", [&id], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    Ok((page, last_seq as u64, history_complete))
                })
                .await
        };
        let (mut page, last_seq, history_complete) = load(self.inner.store.clone(), id.clone()).await?;
        let before_id = match before_seq {
            Some(seq) => {
                let id = id.clone();
                self.inner.store.call(move |c| messages::server_id_at(c, &id, seq)).await?
            }
            None => None,
        };
        let dense = self.inner.dense_sequences;
        // With sparse sequence numbers, a full page from the cache is trusted, a short one is
        // completed from the server, which also tells whether anything older exists, unless the
        // server said so before: then the cache holds the conversation's oldest message.
        let mut server_has_more = false;
        let complete = if dense { complete(&page, before_seq, last_seq, limit) } else { page.len() >= limit as usize || history_complete };
        if !complete {
            let request_id = id.clone();
            let fetched = self.remote(|reply| Request::History { conversation: request_id, before_seq, before_id, limit, reply }).await;
            match fetched {
                Ok(history) => {
                    server_has_more = history.has_more;
                    let me = self.me().await?;
                    let conversation_id = id.clone();
                    // Only what is older than the cache's oldest message: newer ones the cache
                    // lacks are still on their way through sync, which numbers them in its own
                    // order; taken from history too they could tie with or overtake synced ones.
                    let oldest_cached = if dense { None } else { page.iter().filter_map(|m| m.seq).min() };
                    self.inner
                        .store
                        .call(move |c| {
                            let older = if dense {
                                history.messages
                            } else {
                                messages::stitch_older(c, &conversation_id, history.messages, oldest_cached)?
                            };
                            // History, not delivery: no receipt is owed for what is paged back.
                            let older = older.into_iter().map(|mut m| {
                                m.receipts.delivery = false;
                                (m, conv.kind)
                            });
                            messages::apply_remote_run(c, &me, older.collect())?;
                            if !server_has_more {
                                conversations::set_history_complete(c, &conversation_id)?;
                            }
                            Ok(())
                        })
                        .await?;
                    page = load(self.inner.store.clone(), id).await?.0;
                }
                Err(e) if e.is_retryable() => {} // offline: serve what the cache has
                Err(e) => return Err(e),
            }
        }
        let lowest = page.iter().filter_map(|m| m.seq).min();
        let has_more =
            if dense { lowest.is_some_and(|s| s > 1) } else { lowest.is_some() && (page.len() >= limit as usize || server_has_more) };
        Ok(MessagePage { has_more, next_before_seq: lowest, messages: page })
    }

    /// A page of messages from the local store only, never the network: what this device holds,
    /// newest first (pending echoes first of all), e.g. to draw a conversation at once while
    /// offline. `has_more` says whether the store holds older ones; the server may hold older
    /// ones still, which [`Client::messages`] fetches.
    pub async fn cached_messages(&self, conversation: &str, before_seq: Option<u64>, limit: u32) -> Result<MessagePage> {
        let limit = limit.clamp(1, missive_proto::MAX_PAGE_SIZE);
        let id = conversation.to_owned();
        let mut page = self
            .inner
            .store
            .call(move |c| {
                conversations::get(c, &id)?.ok_or_else(|| Error::NotFound(format!("conversation {id}")))?;
                messages::page(c, &id, before_seq, limit + 1)
            })
            .await?;
        let older = page.len() > limit as usize;
        page.truncate(limit as usize);
        let lowest = page.iter().filter_map(|m| m.seq).min();
        Ok(MessagePage { has_more: older && lowest.is_some(), next_before_seq: lowest, messages: page })
    }

    /// Tells the members that this user is (or stopped) typing.
    pub async fn set_typing(&self, conversation: &str, active: bool) -> Result<()> {
        self.command(Command::Ephemeral(Outgoing::Typing { conversation: conversation.to_owned(), active })).await
    }

    pub async fn set_presence(&self, presence: Presence, status: &str) -> Result<()> {
        self.command(Command::Ephemeral(Outgoing::SetPresence { presence, status: status.to_owned() })).await
    }

    // ---- hints from the app ---------------------------------------------------------------

    /// The OS reports connectivity: reconnect now, backoff reset.
    pub async fn network_available(&self) -> Result<()> {
        self.command(Command::Hint(Hint::NetworkAvailable)).await
    }

    /// The OS reports no connectivity: drop the link and wait for `network_available`.
    pub async fn network_lost(&self) -> Result<()> {
        self.command(Command::Hint(Hint::NetworkLost)).await
    }

    /// The app came to the foreground: reconnect now if disconnected.
    pub async fn foreground(&self) -> Result<()> {
        self.command(Command::Hint(Hint::Foreground)).await
    }

    pub async fn background(&self) -> Result<()> {
        self.command(Command::Hint(Hint::Background)).await
    }

    /// Stops the engine and closes the link. Pending messages stay in the store.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Whether a cached page is contiguous from the top (`before_seq - 1`, or the newest) down to
/// `limit` messages or to the first message of the conversation.
fn complete(page: &[Message], before_seq: Option<u64>, last_seq: u64, limit: u32) -> bool {
    let acked: Vec<u64> = page.iter().filter_map(|m| m.seq).collect();
    let top = before_seq.map_or(last_seq, |b| b.saturating_sub(1));
    let contiguous = acked.iter().enumerate().all(|(i, s)| top.checked_sub(i as u64) == Some(*s));
    let reaches_start = acked.last().map_or(top == 0, |s| *s == 1);
    contiguous && (page.len() >= limit as usize || reaches_start)
}

fn validate_body(body: &Body) -> Result<()> {
    let proto = crate::wire::body_to_proto(body);
    missive_proto::validate::body(Some(&proto)).map_err(|e| Error::InvalidArgument(e.to_string()))
}
