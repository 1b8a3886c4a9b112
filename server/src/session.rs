//! One WebSocket connection: the handshake, the read loop with its timeouts, rate limit and frame
//! checks, the queue that stores a burst of pipelined sends as one job, and the writer task that
//! drains the connection's outbound queue.
//!
//! A connection moves through three phases: it must first send `Hello` (version negotiation),
//! then authenticate (`Register`, `Login` or `Resume`), then it may send everything else. Bad
//! input gets an error reply when a reply can be addressed, or a close with a code from
//! [`missive_proto::close`] otherwise; the server keeps serving everyone else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use missive_proto::v1::{self, ErrorCode, client_frame::Request, reply};
use missive_proto::{CodecError, MAX_FRAME_BYTES, PROTOCOL_VERSION, close, codec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

use crate::Ctx;
use crate::handlers::{self, Identity, QueuedSend};
use crate::error::ApiResult;
use crate::hub::{ConnId, Hold, Outbound, OutboundQueue, Peer};
use crate::ratelimit::{RefusalMeter, TokenBucket};

/// Malformed frames tolerated on one connection before it is closed.
const MAX_MALFORMED: u32 = 10;
/// Most sends of one connection stored as one job.
const MAX_SENDS_PER_JOB: usize = 128;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub(crate) enum Phase {
    AwaitHello,
    AwaitAuth { failed_logins: u32 },
    Authenticated(Arc<Identity>),
}

/// What the read loop does after a frame.
pub(crate) enum Flow {
    Continue,
    Close(u16),
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::NORMAL => "bye",
        close::GOING_AWAY => "server shutting down",
        close::PROTOCOL_ERROR => "protocol error",
        close::UNSUPPORTED_DATA => "binary frames only",
        close::MESSAGE_TOO_BIG => "frame exceeds the size limit",
        close::AUTH_TIMEOUT => "authentication timeout",
        close::IDLE_TIMEOUT => "idle timeout",
        close::FLOOD => "rate limit exceeded repeatedly",
        close::SLOW_CONSUMER => "outbound queue full",
        close::TOO_MANY_FAILURES => "too many failed logins",
        close::SESSION_REVOKED => "session revoked",
        _ => "closing",
    }
}

pub(crate) async fn serve<S>(stream: S, remote: SocketAddr, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &ctx.config.limits;
    // Small buffers: tungstenite's default 128 KiB read buffer per connection would dominate the
    // memory of many idle connections; they grow on demand up to the frame limit.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(MAX_FRAME_BYTES * 4)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let ws = match timeout(limits.auth_timeout, tokio_tungstenite::accept_async_with_config(stream, Some(ws_config))).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "websocket handshake timed out");
            return;
        }
    };
    let conn_id: ConnId = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (sink, mut frames) = ws.split();
    let (peer, queue) = Peer::new(limits.outbound_queue_bytes);
    let writer = tokio::spawn(write_loop(sink, queue, peer.clone(), limits.write_timeout));

    let mut conn = Connection {
        ctx: ctx.clone(),
        peer: peer.clone(),
        address: crate::addresses::address_key(remote.ip()),
        conn_id,
        phase: Phase::AwaitHello,
        bucket: TokenBucket::new(limits.requests_per_second, limits.burst, Instant::now()),
        refusals: RefusalMeter::new(limits.flood_refusals, limits.flood_window, Instant::now()),
        held_sends: HeldSends::default(),
        malformed: 0,
        sends: Vec::new(),
        reads: Arc::new(Semaphore::new(limits.reads_per_connection.max(1))),
        max_reads: limits.reads_per_connection.max(1) as u32,
        writes: Writes::new(),
    };
    let started = tokio::time::Instant::now();
    tracing::debug!(%remote, conn_id, "connection open");
    let code = loop {
        let deadline = match conn.phase {
            Phase::Authenticated(_) => tokio::time::Instant::now() + limits.idle_timeout,
            _ => started + limits.auth_timeout,
        };
        // Sends are queued while more frames are ready at once, then stored as one job.
        let next = if conn.sends.is_empty() {
            tokio::select! {
                _ = peer.kill.cancelled() => break None,
                _ = ctx.shutdown.cancelled() => break Some(close::GOING_AWAY),
                next = tokio::time::timeout_at(deadline, frames.next()) => next,
            }
        } else {
            match futures_util::FutureExt::now_or_never(frames.next()) {
                Some(next) => Ok(next),
                None => {
                    conn.flush_sends().await;
                    continue;
                }
            }
        };
        let message = match next {
            Err(_) => break Some(if matches!(conn.phase, Phase::Authenticated(_)) { close::IDLE_TIMEOUT } else { close::AUTH_TIMEOUT }),
            Ok(None) => break None,
            Ok(Some(Err(WsError::Capacity(e)))) => {
                tracing::debug!(conn_id, error = %e, "oversize frame");
                break Some(close::MESSAGE_TOO_BIG);
            }
            Ok(Some(Err(WsError::Protocol(_) | WsError::Utf8(_)))) => break Some(close::PROTOCOL_ERROR),
            Ok(Some(Err(_))) => break None,
            Ok(Some(Ok(message))) => message,
        };
        let flow = match message {
            Message::Binary(bytes) => conn.on_frame(&bytes).await,
            Message::Text(_) => Flow::Close(close::UNSUPPORTED_DATA),
            Message::Close(_) => break None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        };
        if let Flow::Close(code) = flow {
            break Some(code);
        }
    };
    match code {
        // Ordered after the replies already queued; falls back to an abrupt close.
        Some(code) => {
            if !peer.close_after_queued(code) {
                peer.close(code);
            }
        }
        // The peer left: stop the writer now rather than when its queue drains.
        None => peer.close(close::NORMAL),
    }
    // Sends received before the end are stored (their acks may not reach the client; it sends
    // them again and gets the same acks).
    conn.flush_sends().await;
    if let Phase::Authenticated(identity) = &conn.phase {
        handlers::on_disconnect(&ctx, identity.clone()).await;
    }
    if timeout(std::time::Duration::from_secs(2), writer).await.is_err() {
        peer.close(close::GOING_AWAY);
    }
    tracing::debug!(conn_id, ?code, "connection closed");
}

/// Most frames written before one flush.
const MAX_FRAMES_PER_FLUSH: usize = 256;

async fn write_loop<W>(mut sink: W, mut rx: OutboundQueue, peer: Peer, write_timeout: std::time::Duration)
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let code = loop {
        let next = tokio::select! {
            biased;
            _ = peer.kill.cancelled() => break peer.close_code().unwrap_or(close::GOING_AWAY),
            next = rx.recv() => next,
        };
        match next {
            Some(Outbound::Frame(bytes, hold)) => {
                // Whatever else is queued goes out with it in one flush: one write for a burst of
                // acks or events instead of one per frame. Holds are released after the flush.
                let mut closing = None;
                let mut holds = vec![hold];
                let burst = async {
                    sink.feed(Message::Binary(bytes)).await?;
                    for _ in 1..MAX_FRAMES_PER_FLUSH {
                        match rx.try_recv() {
                            Some(Outbound::Frame(bytes, hold)) => {
                                holds.push(hold);
                                sink.feed(Message::Binary(bytes)).await?
                            }
                            Some(Outbound::Close(code)) => {
                                closing = Some(code);
                                break;
                            }
                            None => break,
                        }
                    }
                    sink.flush().await
                };
                let written = timeout(write_timeout, burst).await;
                drop(holds);
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => break close::SLOW_CONSUMER,
                }
                if let Some(code) = closing {
                    break code;
                }
            }
            Some(Outbound::Close(code)) => break code,
            None => return,
        }
    };
    // What is still queued is dropped now; the close frame follows what the socket already took,
    // if the peer reads it within the write timeout.
    drop(rx);
    let frame = CloseFrame { code: code.into(), reason: close_reason(code).into() };
    let _ = timeout(write_timeout, sink.send(Message::Close(Some(frame)))).await;
    let _ = timeout(std::time::Duration::from_secs(1), sink.close()).await;
}

/// A connection's writes in flight. Their completions run in commit order, so the number of the
/// last completed one says whether every write submitted before a read has committed.
pub(crate) struct Writes {
    submitted: u64,
    completed: Arc<watch::Sender<u64>>,
    seen: watch::Receiver<u64>,
}

impl Writes {
    fn new() -> Self {
        let (tx, rx) = watch::channel(0);
        Writes { submitted: 0, completed: Arc::new(tx), seen: rx }
    }

    /// Numbers the next write; the returned function is called in its completion.
    fn track(&mut self) -> impl FnOnce() + Send + 'static {
        self.submitted += 1;
        let (n, completed) = (self.submitted, self.completed.clone());
        move || {
            completed.send_replace(n);
        }
    }

    /// Returns once every write submitted so far has completed.
    async fn settled(&mut self) {
        let target = self.submitted;
        let _ = self.seen.wait_for(|done| *done >= target).await;
    }
}

pub(crate) struct Connection {
    pub ctx: Arc<Ctx>,
    pub peer: Peer,
    /// The client's address, as per-address limits count it.
    pub address: IpAddr,
    pub conn_id: ConnId,
    pub phase: Phase,
    bucket: TokenBucket,
    /// Rate-limit refusals within the flood window: too many close the connection (4003).
    refusals: RefusalMeter,
    held_sends: HeldSends,
    malformed: u32,
    /// Sends received and not yet submitted to the store, in arrival order.
    sends: Vec<QueuedSend>,
    /// Reads queued, running or with their reply unsent (`ServerLimits::reads_per_connection`).
    reads: Arc<Semaphore>,
    /// The permits of `reads`: all of them free means no read of this connection is unanswered.
    max_reads: u32,
    /// Writes in flight, for read-your-writes.
    writes: Writes,
}

/// Keeps a connection's messages in order across rate-limit refusals: once a send is refused,
/// only the oldest refused message may be accepted next, and the sends after it are refused too
/// (retryable), so a pipelined later message cannot overtake an earlier one. The client sends
/// again oldest first. A refused message that never comes again (cancelled by the app) stops
/// holding the others after `SEND_HOLD`.
#[derive(Default)]
struct HeldSends {
    refused: std::collections::VecDeque<String>,
    since: Option<Instant>,
}

const SEND_HOLD: std::time::Duration = std::time::Duration::from_secs(5);
/// More refused messages than any client window: the client is not resending; forget them.
const MAX_HELD: usize = 4096;

impl HeldSends {
    fn refuse(&mut self, client_id: &str, now: Instant) {
        if self.refused.len() >= MAX_HELD {
            self.refused.clear();
        }
        if !self.refused.iter().any(|c| c == client_id) {
            self.refused.push_back(client_id.to_owned());
        }
        self.since.get_or_insert(now);
    }

    /// Whether `client_id` may be accepted now (the oldest refused one, or none held).
    fn admit(&mut self, client_id: &str, now: Instant) -> bool {
        if self.since.is_some_and(|since| now >= since + SEND_HOLD) {
            self.refused.clear();
        }
        match self.refused.front() {
            None => {
                self.since = None;
                true
            }
            Some(first) if first == client_id => {
                self.refused.pop_front();
                self.since = (!self.refused.is_empty()).then_some(now);
                true
            }
            Some(_) => {
                self.refuse(client_id, now);
                false
            }
        }
    }
}

impl Connection {
    /// Queues an authenticated send; a full queue is submitted at once.
    pub(crate) async fn queue_send(&mut self, send: QueuedSend) {
        self.sends.push(send);
        if self.sends.len() >= MAX_SENDS_PER_JOB {
            self.flush_sends().await;
        }
    }

    /// Submits the queued sends to the store as one job.
    async fn flush_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let sends = std::mem::take(&mut self.sends);
        if let Phase::Authenticated(me) = &self.phase {
            let me = me.clone();
            handlers::submit_sends(self, me, sends).await;
        }
    }

    /// Submits a write to the store thread; `done` runs there after the commit. Counted in
    /// [`Writes`], so that this connection's later reads see it.
    ///
    /// A write is submitted only once this connection's earlier reads are answered (their
    /// replies written, or dropped with a closing connection): as when every request went through
    /// the store thread, a connection's replies come in the order of its requests, and a write's
    /// reply never overtakes the reply of a read asked before it. Without this, a reconnecting
    /// client's pipelined resends (`Sync`, then `SendMessage`s) were acknowledged while its sync
    /// page still waited for a reader, so under repeated cuts its sends completed while its sync
    /// never got through: the client looked up to date (its own messages acknowledged as the
    /// newest of each conversation) while whole ranges of others' messages were still missing.
    /// Reads still run off the store thread, in their connection's turn; only this connection's
    /// next write waits for them.
    pub(crate) async fn write<T, W, D>(&mut self, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce(&rusqlite::Connection) -> ApiResult<T> + Send + 'static,
        D: FnOnce(ApiResult<T>) + Send + 'static,
    {
        self.reads_answered().await;
        let written = self.writes.track();
        self.ctx
            .db
            .submit(work, move |r| {
                written();
                done(r)
            })
            .await
    }

    /// Returns once no read of this connection is unanswered (every read permit is free), or the
    /// connection is closing.
    async fn reads_answered(&self) {
        tokio::select! {
            all = self.reads.acquire_many(self.max_reads) => drop(all),
            _ = self.peer.kill.cancelled() => {}
        }
    }

    /// A read permit: one of `reads_per_connection`, held until the read's reply is written.
    /// `None` if the connection closes while it waits.
    pub(crate) async fn read_permit(&mut self) -> Hold {
        tokio::select! {
            permit = self.reads.clone().acquire_owned() => permit.ok(),
            _ = self.peer.kill.cancelled() => None,
        }
    }

    /// Submits a read to the reader pool in this connection's turn, once it holds a read permit
    /// and its earlier writes have completed (so that it sees them: read-your-writes). `done`
    /// runs on a reader thread with the result and the permit to release with the reply. While
    /// the connection has `reads_per_connection` reads unanswered, this waits, and the
    /// connection's next requests wait behind it.
    pub(crate) async fn read<T, W, D>(&mut self, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce(&rusqlite::Connection) -> ApiResult<T> + Send + 'static,
        D: FnOnce(ApiResult<T>, Hold) + Send + 'static,
    {
        let Some(permit) = self.read_permit().await else { return };
        tokio::select! {
            _ = self.writes.settled() => {}
            _ = self.peer.kill.cancelled() => return,
        }
        self.ctx.db.read(self.conn_id, work, move |r| done(r, Some(permit)));
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> Flow {
        let frame: v1::ClientFrame = match codec::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.malformed += 1;
                let code = match e {
                    CodecError::TooLarge { .. } => ErrorCode::TooLarge,
                    CodecError::Malformed(_) => ErrorCode::MalformedFrame,
                };
                self.peer.error(0, v1::Error::new(code, e.to_string()));
                return if self.malformed > MAX_MALFORMED { Flow::Close(close::PROTOCOL_ERROR) } else { Flow::Continue };
            }
        };
        // Requests are stored in arrival order: the sends queued before this one go first.
        if !matches!(frame.request, Some(Request::SendMessage(_))) {
            self.flush_sends().await;
        }
        let rid = frame.request_id;
        let now = Instant::now();
        let sending = match &frame.request {
            Some(Request::SendMessage(m)) => Some(m.client_id.as_str()),
            _ => None,
        };
        if let Err(wait) = self.bucket.try_take(now) {
            if self.refusals.refused(now) {
                return Flow::Close(close::FLOOD);
            }
            if let Some(client_id) = sending {
                self.held_sends.refuse(client_id, now);
            }
            let mut error = v1::Error::new(ErrorCode::RateLimited, "too many requests; slow down");
            error.retry_after_ms = wait.as_millis().max(1) as u32;
            self.peer.error(rid, error);
            return Flow::Continue;
        }
        if let Some(client_id) = sending {
            if !self.held_sends.admit(client_id, now) {
                let mut error = v1::Error::new(ErrorCode::RateLimited, "an earlier message was refused; send it first");
                error.retry_after_ms = 1;
                self.peer.error(rid, error);
                return Flow::Continue;
            }
        }
        let Some(request) = frame.request else {
            self.peer.error(rid, v1::Error::new(ErrorCode::UnknownRequest, "unknown request kind"));
            return Flow::Continue;
        };
        match (&mut self.phase, request) {
            (_, Request::Ping(p)) => {
                self.peer.reply(rid, reply::Result::Pong(v1::Pong { nonce: p.nonce, server_time_ms: crate::db::now_ms() }));
                Flow::Continue
            }
            (Phase::AwaitHello, Request::Hello(hello)) => {
                if hello.min_version <= PROTOCOL_VERSION && PROTOCOL_VERSION <= hello.max_version {
                    self.peer.reply(rid, reply::Result::Hello(handlers::hello_ok(&self.ctx)));
                    self.phase = Phase::AwaitAuth { failed_logins: 0 };
                    Flow::Continue
                } else {
                    let msg =
                        format!("client speaks versions {}..={}, server speaks {PROTOCOL_VERSION}", hello.min_version, hello.max_version);
                    self.peer.error(rid, v1::Error::new(ErrorCode::UnsupportedVersion, msg));
                    Flow::Close(close::PROTOCOL_ERROR)
                }
            }
            (Phase::AwaitHello, _) => {
                self.peer.error(rid, v1::Error::new(ErrorCode::HandshakeRequired, "send Hello first"));
                Flow::Close(close::PROTOCOL_ERROR)
            }
            (_, Request::Hello(_)) => {
                self.peer.error(rid, v1::Error::new(ErrorCode::InvalidArgument, "Hello was already sent"));
                Flow::Continue
            }
            (Phase::AwaitAuth { .. }, request @ (Request::Register(_) | Request::Login(_) | Request::Resume(_))) => {
                handlers::authenticate(self, rid, request).await
            }
            (Phase::AwaitAuth { .. }, _) => {
                self.peer.error(rid, v1::Error::new(ErrorCode::NotAuthenticated, "log in first"));
                Flow::Continue
            }
            (Phase::Authenticated(_), Request::Register(_) | Request::Login(_) | Request::Resume(_)) => {
                self.peer.error(rid, v1::Error::new(ErrorCode::AlreadyAuthenticated, "this connection is already authenticated"));
                Flow::Continue
            }
            (Phase::Authenticated(identity), request) => {
                let identity = identity.clone();
                handlers::dispatch(self, identity, rid, request).await
            }
        }
    }
}
