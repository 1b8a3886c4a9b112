//! Request handlers. Authentication is awaited in the read loop (it changes the connection's
//! phase). Requests that write are submitted to the store thread and answered from there after
//! the commit, in arrival order; requests that only read go to the reader pool, after the
//! connection's earlier writes have committed, so one connection can pipeline many requests and
//! still reads its own writes, while its reads never wait in front of anyone's writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_proto::v1::{self, ConversationKind, ErrorCode, client_frame::Request, reply};
use missive_proto::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, PROTOCOL_VERSION, close, validate};

use crate::Ctx;
use crate::auth;
use crate::db::accounts::{self, UserId};
use crate::db::{blocks, conversations, messages, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::hashing::Busy;
use crate::throttle::AuthThrottle;
use tokio::sync::oneshot;
use crate::hub::{ConnId, Hold, Hub, Peer};
use crate::session::{Connection, Flow, Phase};

/// Who an authenticated connection belongs to.
#[derive(Debug)]
pub struct Identity {
    pub user: UserId,
    pub name: String,
    pub device: String,
    pub conn: ConnId,
    pub token_hash: [u8; 32],
}

pub(crate) fn hello_ok(ctx: &Ctx) -> v1::HelloOk {
    let l = &ctx.config.limits;
    v1::HelloOk {
        version: PROTOCOL_VERSION,
        server: concat!("missive-server/", env!("CARGO_PKG_VERSION")).into(),
        limits: Some(v1::Limits {
            max_frame_bytes: missive_proto::MAX_FRAME_BYTES as u32,
            max_body_bytes: missive_proto::MAX_BODY_BYTES as u32,
            max_group_members: missive_proto::MAX_GROUP_MEMBERS as u32,
            max_page_size: missive_proto::MAX_PAGE_SIZE,
            requests_per_second: l.requests_per_second,
        }),
    }
}

fn device_or_default(device: String) -> ApiResult<String> {
    validate::short_text("device id", &device)?;
    Ok(if device.is_empty() { "default".into() } else { device })
}

fn check_password(password: &str) -> ApiResult<()> {
    if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::refuse(
            ErrorCode::InvalidArgument,
            format!("password must be {MIN_PASSWORD_LEN}..={MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The refusal for a job the hashing pool would not take.
fn hashing_busy(busy: Busy) -> ApiError {
    match busy {
        Busy::Server => {
            let mut e = v1::Error::new(ErrorCode::Unavailable, "too many logins at once; try again shortly");
            e.retry_after_ms = 1_000;
            ApiError::Refused(e)
        }
        Busy::Address => {
            let mut e = v1::Error::new(ErrorCode::RateLimited, "too many logins from this address at once");
            e.retry_after_ms = 1_000;
            ApiError::Refused(e)
        }
    }
}

/// The refusal for an attempt the throttle holds back for `wait`.
fn throttled(wait: Duration, what: &str) -> ApiError {
    let mut e = v1::Error::new(ErrorCode::RateLimited, format!("too many {what}; try again later"));
    e.retry_after_ms = wait.as_millis().clamp(1, u32::MAX as u128) as u32;
    ApiError::Refused(e)
}

fn bad_credentials() -> ApiError {
    ApiError::refuse(ErrorCode::BadCredentials, "wrong username or password")
}

/// What a successful Register, Login or Resume grants.
struct Granted {
    user: UserId,
    name: String,
    device: String,
    /// A new token (Register and Login).
    token: Option<String>,
    token_hash: [u8; 32],
    expires_at_ms: i64,
    latest_cursor: u64,
    /// No other session of the user was online.
    first_session: bool,
}

/// Runs the store job that grants a session (`work` gives the user, its name and the token's
/// expiry) and registers the session in the hub in that job's completion. Completions run in
/// commit order, so a revocation is never missed: a token revoked by an earlier job fails the
/// check in `work`, and one revoked by a later job finds the session registered and closes it.
async fn grant<W>(conn: &Connection, token_hash: [u8; 32], work: W) -> ApiResult<Granted>
where
    W: FnOnce(&rusqlite::Connection) -> ApiResult<(UserId, String, i64)> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let (hub, peer, conn_id) = (conn.ctx.hub.clone(), conn.peer.clone(), conn.conn_id);
    conn.ctx
        .db
        .submit(
            move |c| {
                let (user, name, expires) = work(c)?;
                Ok((user, name, expires, accounts::latest_cursor(c, user)?))
            },
            move |r| {
                let r = r.map(|(user, name, expires_at_ms, latest_cursor)| {
                    let first_session = hub.register(conn_id, user, token_hash, peer);
                    Granted { user, name, device: String::new(), token: None, token_hash, expires_at_ms, latest_cursor, first_session }
                });
                let _ = tx.send(r);
            },
        )
        .await;
    rx.await.unwrap_or_else(|_| Err(ApiError::refuse(ErrorCode::Unavailable, "store stopped")))
}

/// Register, Login or Resume. On success the connection becomes authenticated and joins the hub.
///
/// Order matters for what an attacker can make the server spend: cheap checks first (input,
/// throttles, whether the name is taken), the password hash last, in the bounded pool.
pub(crate) async fn authenticate(conn: &mut Connection, rid: u64, request: Request) -> Flow {
    let ctx = conn.ctx.clone();
    let address = conn.address;
    let ttl = ctx.config.limits.token_ttl.as_millis() as i64;
    let throttle = |f: &mut dyn FnMut(&mut AuthThrottle, Instant)| {
        let mut t = ctx.throttle.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t, Instant::now());
    };
    let result: ApiResult<Granted> = async {
        match request {
            Request::Register(r) => {
                validate::username(&r.username)?;
                check_password(&r.password)?;
                let device = device_or_default(r.device_id)?;
                let mut allowed = Ok(());
                throttle(&mut |t, now| allowed = t.check_registration(address, now));
                allowed.map_err(|wait| throttled(wait, "registrations or failures from this address"))?;
                let name = r.username.clone();
                if ctx.db.read_call(conn.conn_id, move |c| accounts::credentials(c, &name)).await?.is_some() {
                    throttle(&mut |t, now| t.address_failed(address, now));
                    return Err(ApiError::refuse(ErrorCode::UsernameTaken, "username is taken"));
                }
                let password = r.password;
                let hash = ctx.hashes.run(address, move |w| w.hash_password(&password)).await.map_err(hashing_busy)?;
                let (token, token_hash) = auth::new_token();
                let (name, dev) = (r.username.clone(), device.clone());
                let granted = grant(conn, token_hash, move |c| {
                    let now = now_ms();
                    let user = accounts::create_user(c, &name, &hash, now)?;
                    accounts::insert_token(c, user, &dev, &token_hash, now, now + ttl)?;
                    Ok((user, name, now + ttl))
                })
                .await;
                match &granted {
                    Err(_) => throttle(&mut |t, now| t.address_failed(address, now)),
                    Ok(_) => throttle(&mut |t, now| t.registered(address, now)),
                }
                let granted = granted?;
                tracing::info!(user = %r.username, device = ?device, "registered");
                Ok(Granted { token: Some(token), device, ..granted })
            }
            Request::Login(r) => {
                let device = device_or_default(r.device_id)?;
                if validate::username(&r.username).is_err() {
                    // No such account can exist; the name is not logged (it could forge lines).
                    throttle(&mut |t, now| t.address_failed(address, now));
                    tracing::debug!("login refused: malformed username");
                    return Err(bad_credentials());
                }
                let mut allowed = Ok(());
                throttle(&mut |t, now| allowed = t.check_login(&r.username, address, now));
                allowed.map_err(|wait| throttled(wait, "failed logins"))?;
                let name = r.username.clone();
                let stored = ctx.db.read_call(conn.conn_id, move |c| accounts::credentials(c, &name)).await?;
                let (user, hash) = match stored {
                    Some((user, hash)) => (Some(user), hash),
                    None => (None, auth::dummy_hash().to_owned()),
                };
                let password = r.password;
                let ok = ctx.hashes.run(address, move |w| w.verify_password(&password, &hash)).await.map_err(hashing_busy)?;
                let Some(user) = user.filter(|_| ok) else {
                    throttle(&mut |t, now| t.login_failed(&r.username, address, now));
                    tracing::info!(user = %r.username, "login refused: bad credentials");
                    return Err(bad_credentials());
                };
                throttle(&mut |t, now| t.login_succeeded(&r.username, address, now));
                let (token, token_hash) = auth::new_token();
                let (name, dev) = (r.username.clone(), device.clone());
                let granted = grant(conn, token_hash, move |c| {
                    let now = now_ms();
                    accounts::insert_token(c, user, &dev, &token_hash, now, now + ttl)?;
                    Ok((user, name, now + ttl))
                })
                .await?;
                tracing::info!(user = %r.username, device = ?device, "logged in");
                Ok(Granted { token: Some(token), device, ..granted })
            }
            Request::Resume(r) => {
                let device = device_or_default(r.device_id)?;
                let token_hash = auth::token_hash(&r.token);
                let dev = device.clone();
                let granted = grant(conn, token_hash, move |c| {
                    let now = now_ms();
                    let found = accounts::check_token(c, &token_hash, now)?;
                    accounts::touch_device(c, found.0, &dev, now)?;
                    Ok(found)
                })
                .await?;
                tracing::debug!(user = %granted.name, device = ?device, "resumed");
                Ok(Granted { device, ..granted })
            }
            _ => unreachable!("authenticate is called only for Register, Login and Resume"),
        }
    }
    .await;

    match result {
        Ok(Granted { user, name, device, token, token_hash, expires_at_ms, latest_cursor, first_session }) => {
            let identity = Arc::new(Identity { user, name: name.clone(), device, conn: conn.conn_id, token_hash });
            conn.phase = Phase::Authenticated(identity.clone());
            conn.peer.reply(
                rid,
                reply::Result::Session(v1::Session { username: name, token: token.unwrap_or_default(), expires_at_ms, latest_cursor }),
            );
            if first_session {
                broadcast_presence(&ctx, &identity, v1::PresenceState::Online, String::new(), || {});
            }
            Flow::Continue
        }
        Err(e) => {
            let error = e.into_wire();
            let bad_credentials = error.code() == ErrorCode::BadCredentials;
            conn.peer.error(rid, error);
            if let Phase::AwaitAuth { failed_logins } = &mut conn.phase {
                if bad_credentials {
                    *failed_logins += 1;
                    if *failed_logins >= ctx.config.limits.max_failed_logins {
                        return Flow::Close(close::TOO_MANY_FAILURES);
                    }
                }
            }
            Flow::Continue
        }
    }
}

/// Called once when an authenticated connection ends.
pub(crate) async fn on_disconnect(ctx: &Arc<Ctx>, identity: Arc<Identity>) {
    if ctx.hub.unregister(identity.conn) {
        broadcast_presence(ctx, &identity, v1::PresenceState::Offline, String::new(), || {});
    }
}

/// Tells the user's contacts (read on a reader thread) of a presence change, then calls `done`.
fn broadcast_presence(ctx: &Ctx, identity: &Identity, state: v1::PresenceState, status: String, done: impl FnOnce() + Send + 'static) {
    let hub = ctx.hub.clone();
    let (user, conn) = (identity.user, identity.conn);
    let event = v1::Ephemeral {
        kind: Some(v1::ephemeral::Kind::Presence(v1::PresenceEvent { user: identity.name.clone(), state: state as i32, status })),
    };
    ctx.db.read(
        conn,
        move |c| conversations::contacts(c, user),
        move |r| {
            if let Ok(users) = r {
                hub.notify_users(&users, conn, &event);
            }
            done();
        },
    );
}

/// Sends the reply for `result`, mapping success with `ok`.
fn answer<T>(peer: &Peer, rid: u64, result: ApiResult<T>, ok: impl FnOnce(T) -> reply::Result) {
    answer_holding(peer, rid, result, None, ok)
}

/// As [`answer`], releasing `hold` (a read permit) once the reply is written.
fn answer_holding<T>(peer: &Peer, rid: u64, result: ApiResult<T>, hold: Hold, ok: impl FnOnce(T) -> reply::Result) {
    match result {
        Ok(v) => peer.reply_holding(rid, ok(v), hold),
        Err(e) => peer.reply_holding(rid, reply::Result::Error(e.into_wire()), hold),
    }
}

fn fan_out(hub: &Hub, deliveries: &[messages::Delivery], origin: Option<ConnId>) {
    for d in deliveries {
        hub.deliver(d.user, &d.event, origin);
    }
}

/// A conversation id from a request (checked below 2^63 by [`check_numbers`]).
fn conversation_id(id: u64) -> i64 {
    id.min(i64::MAX as u64) as i64
}

/// Refuses numbers at or above 2^63: the store keeps ids, cursors and sequence numbers as signed
/// 64-bit integers, where they would wrap to negative values.
fn check_numbers(request: &Request) -> Result<(), v1::Error> {
    let numbers: Vec<(&str, u64)> = match request {
        Request::AddMembers(r) => vec![("conversation_id", r.conversation_id)],
        Request::RemoveMembers(r) => vec![("conversation_id", r.conversation_id)],
        Request::JoinRoom(r) => vec![("conversation_id", r.conversation_id)],
        Request::LeaveRoom(r) => vec![("conversation_id", r.conversation_id)],
        Request::SendMessage(r) => vec![("conversation_id", r.conversation_id)],
        Request::AckCursor(r) => vec![("cursor", r.cursor)],
        Request::Sync(r) => vec![("since", r.since)],
        Request::ListConversations(r) => vec![("before_id", r.before_id)],
        Request::History(r) => vec![("conversation_id", r.conversation_id), ("before_seq", r.before_seq)],
        Request::MarkDelivered(r) | Request::MarkRead(r) => vec![("conversation_id", r.conversation_id), ("seq", r.seq)],
        Request::Typing(r) => vec![("conversation_id", r.conversation_id)],
        _ => vec![],
    };
    match numbers.into_iter().find(|(_, n)| *n > i64::MAX as u64) {
        Some((name, n)) => Err(v1::Error::new(ErrorCode::InvalidArgument, format!("{name} {n} is out of range (at most 2^63 - 1)"))),
        None => Ok(()),
    }
}

/// Handles a request of an authenticated connection. Writes go to the store thread, reads to the
/// reader pool (after this connection's earlier writes, see `Connection::read`).
pub(crate) async fn dispatch(conn: &mut Connection, me: Arc<Identity>, rid: u64, request: Request) -> Flow {
    let ctx = conn.ctx.clone();
    let peer = conn.peer.clone();
    if let Err(e) = check_numbers(&request) {
        peer.error(rid, e);
        return Flow::Continue;
    }
    let hub = ctx.hub.clone();

    // Requests that change the store, answered with a conversation.
    macro_rules! conversation_change {
        ($work:expr) => {{
            let (peer, hub) = (peer.clone(), hub.clone());
            conn.write($work, move |r: ApiResult<(v1::Conversation, Vec<messages::Delivery>)>| {
                if let Ok((_, deliveries)) = &r {
                    fan_out(&hub, deliveries, None);
                }
                answer(&peer, rid, r, |(c, _)| reply::Result::Conversation(c));
            })
            .await
        }};
    }

    // Presence in a chat room is a live subscription: a connection holds a bounded number.
    let max_rooms = ctx.config.limits.max_rooms_per_connection;
    let room_limit_reached = |room: i64| {
        let (count, present) = hub.rooms_of(me.conn, room);
        (!present && count >= max_rooms)
            .then(|| v1::Error::new(ErrorCode::LimitExceeded, format!("one connection may be present in at most {max_rooms} chat rooms")))
    };

    match request {
        Request::Logout(_) | Request::LogoutAll(_) => {
            let everywhere = matches!(request, Request::LogoutAll(_));
            let (user, token_hash, conn_id) = (me.user, me.token_hash, me.conn);
            let (tx, rx) = oneshot::channel();
            conn.write(
                move |c| if everywhere { accounts::revoke_all_tokens(c, user) } else { accounts::revoke_token(c, &token_hash) },
                move |r| {
                    // In commit order with the completions that register sessions (`grant`).
                    if r.is_ok() {
                        let token = (!everywhere).then_some(&token_hash);
                        hub.close_sessions(user, token, conn_id, close::SESSION_REVOKED);
                    }
                    let _ = tx.send(r);
                },
            )
            .await;
            let r = rx.await.unwrap_or_else(|_| Err(ApiError::refuse(ErrorCode::Unavailable, "store stopped")));
            let ok = r.is_ok();
            answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {}));
            if ok {
                tracing::info!(user = %me.name, device = ?me.device, everywhere, "logged out");
                return Flow::Close(close::NORMAL);
            }
        }
        Request::CreateDirect(r) => {
            conversation_change!(move |c| conversations::create_direct(c, me.user, &me.name, &r.peer, now_ms()))
        }
        Request::CreateGroup(r) => {
            if let Err(e) = validate::short_text("title", &r.title) {
                peer.error(rid, e.into());
                return Flow::Continue;
            }
            conversation_change!(move |c| conversations::create_group(c, me.user, &me.name, &r.title, &r.members, now_ms()))
        }
        Request::AddMembers(r) => conversation_change!(move |c| conversations::add_members(
            c,
            me.user,
            &me.name,
            conversation_id(r.conversation_id),
            &r.members,
            now_ms()
        )),
        Request::RemoveMembers(r) => conversation_change!(move |c| conversations::remove_members(
            c,
            me.user,
            &me.name,
            conversation_id(r.conversation_id),
            &r.members,
            now_ms()
        )),
        Request::ListConversations(r) => {
            conn.read(
                move |c| conversations::list(c, me.user, r.before_id, r.limit),
                move |r, hold| answer_holding(&peer, rid, r, hold, reply::Result::Conversations),
            )
            .await
        }
        Request::Block(r) => {
            conn.write(move |c| blocks::block(c, me.user, &r.user), move |r| answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {})))
                .await
        }
        Request::Unblock(r) => {
            conn.write(move |c| blocks::unblock(c, me.user, &r.user), move |r| answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {})))
                .await
        }
        Request::CreateRoom(r) => {
            if let Err(e) = validate::short_text("title", &r.title) {
                peer.error(rid, e.into());
                return Flow::Continue;
            }
            if let Some(e) = room_limit_reached(0) {
                peer.error(rid, e);
                return Flow::Continue;
            }
            let conn_id = me.conn;
            conn.write(
                move |c| conversations::create_room(c, me.user, &r.title, now_ms()),
                move |r| {
                    if let Ok(room) = &r {
                        hub.enter_room(conn_id, room.id as i64);
                    }
                    answer(&peer, rid, r, reply::Result::Conversation)
                },
            )
            .await
        }
        Request::JoinRoom(r) => {
            let room = conversation_id(r.conversation_id);
            if let Some(e) = room_limit_reached(room) {
                peer.error(rid, e);
                return Flow::Continue;
            }
            let conn_id = me.conn;
            conn.write(
                move |c| conversations::join_room(c, me.user, room, now_ms()),
                move |r| {
                    if r.is_ok() {
                        hub.enter_room(conn_id, room);
                    }
                    answer(&peer, rid, r, reply::Result::Conversation)
                },
            )
            .await
        }
        Request::LeaveRoom(r) => {
            let room = conversation_id(r.conversation_id);
            let conn_id = me.conn;
            conn.write(
                move |c| conversations::leave_room(c, me.user, room),
                move |r| {
                    hub.exit_room(conn_id, room);
                    answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {}))
                },
            )
            .await
        }
        Request::SendMessage(r) => {
            if let Err(e) = validate::client_id(&r.client_id).and_then(|_| validate::body(r.body.as_ref())) {
                peer.error(rid, e.into());
                return Flow::Continue;
            }
            let outgoing = messages::Outgoing {
                client_id: r.client_id,
                conversation: conversation_id(r.conversation_id),
                body: r.body.unwrap_or_default(),
            };
            conn.queue_send(QueuedSend { rid, outgoing }).await;
        }
        Request::AckCursor(r) => {
            conn.write(
                move |c| accounts::ack_cursor(c, me.user, &me.device, r.cursor, now_ms()),
                move |r| answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {})),
            )
            .await
        }
        Request::Sync(r) => sync(conn, me, rid, r).await,
        Request::History(r) => {
            conn.read(
                move |c| messages::history(c, me.user, conversation_id(r.conversation_id), r.before_seq, r.limit),
                move |r, hold| answer_holding(&peer, rid, r, hold, reply::Result::History),
            )
            .await
        }
        Request::MarkDelivered(r) => receipt(conn, me, rid, r, v1::ReceiptKind::Delivered).await,
        Request::MarkRead(r) => receipt(conn, me, rid, r, v1::ReceiptKind::Read).await,
        Request::Typing(r) => {
            let conv = conversation_id(r.conversation_id);
            let event = v1::Ephemeral {
                kind: Some(v1::ephemeral::Kind::Typing(v1::TypingEvent {
                    conversation_id: r.conversation_id,
                    user: me.name.clone(),
                    active: r.active,
                })),
            };
            let conn_id = me.conn;
            conn.read(
                move |c| messages::typing_audience(c, me.user, conv),
                move |r, hold| {
                    if let Ok((kind, users)) = &r {
                        if *kind == ConversationKind::Room {
                            hub.notify_room(conv, conn_id, &event);
                        } else {
                            hub.notify_users(users, conn_id, &event);
                        }
                    }
                    answer_holding(&peer, rid, r, hold, |_| reply::Result::Ok(v1::Ok {}))
                },
            )
            .await
        }
        Request::SetPresence(r) => {
            if let Err(e) = validate::short_text("status", &r.status) {
                peer.error(rid, e.into());
                return Flow::Continue;
            }
            let state = v1::PresenceState::try_from(r.state).unwrap_or(v1::PresenceState::Online);
            // Counted as one of the connection's reads: a flood of presence changes waits.
            let hold = conn.read_permit().await;
            if hold.is_none() {
                return Flow::Continue;
            }
            broadcast_presence(&ctx, &me, state, r.status, move || peer.reply_holding(rid, reply::Result::Ok(v1::Ok {}), hold));
        }
        Request::Hello(_) | Request::Register(_) | Request::Login(_) | Request::Resume(_) | Request::Ping(_) => {
            unreachable!("handled by the session")
        }
    }
    Flow::Continue
}

/// A sync page, read on a reader thread. A page that reaches the end of what the reader saw is
/// not the end of the inbox yet: events may have committed since the reader's snapshot. The
/// decision is taken on the store thread, in commit order: a job reads the newest cursor and, in
/// its completion, either marks the session live and answers `has_more = false` (no event
/// committed after the snapshot: every later event is pushed live, because its completion runs
/// after this one; every earlier one is in this page or an earlier one; no gap, no race), or
/// answers `has_more = true` (events came in meanwhile: the client asks again from this page's
/// end, and its next page holds them).
async fn sync(conn: &mut Connection, me: Arc<Identity>, rid: u64, r: v1::SyncRequest) {
    let (ctx, peer, conn_id, user) = (conn.ctx.clone(), conn.peer.clone(), me.conn, me.user);
    let runtime = tokio::runtime::Handle::current();
    conn.read(
        move |c| messages::sync(c, user, r.since, r.limit),
        move |page, hold| {
            let page = match page {
                Ok(page) if !page.has_more => page,
                other => return answer_holding(&peer, rid, other, hold, reply::Result::Sync),
            };
            let end = page.next_cursor;
            let hub = ctx.hub.clone();
            runtime.spawn(async move {
                let mut page = page;
                ctx.db
                    .submit(
                        move |c| accounts::latest_cursor(c, user),
                        move |latest| {
                            let r = latest.map(|latest| {
                                if latest <= end {
                                    hub.set_live(conn_id);
                                } else {
                                    page.has_more = true;
                                }
                                page
                            });
                            answer_holding(&peer, rid, r, hold, reply::Result::Sync)
                        },
                    )
                    .await
            });
        },
    )
    .await
}

/// A send received on a connection, waiting to go to the store together with the sends that
/// follow it (see `Connection::queue_send`).
pub(crate) struct QueuedSend {
    pub rid: u64,
    pub outgoing: messages::Outgoing,
}

/// Stores a connection's queued sends as one job ([`messages::send_batch`]). After the commit,
/// per send in order: its events are fanned out, then it is acknowledged (once the sender holds
/// the ack, every live recipient session already has the event queued), or it gets its refusal.
pub(crate) async fn submit_sends(conn: &mut Connection, me: Arc<Identity>, sends: Vec<QueuedSend>) {
    let (rids, batch): (Vec<u64>, Vec<messages::Outgoing>) = sends.into_iter().map(|s| (s.rid, s.outgoing)).unzip();
    let (hub, peer, conn_id) = (conn.ctx.hub.clone(), conn.peer.clone(), me.conn);
    conn
        .write(
            move |c| messages::send_batch(c, me.user, &me.name, batch, now_ms()),
            move |r| match r {
                Ok(outcomes) => {
                    for (rid, outcome) in rids.into_iter().zip(outcomes) {
                        match outcome {
                            Ok(outcome) => {
                                fan_out(&hub, &outcome.deliveries, Some(conn_id));
                                if let Some((room, message)) = outcome.room_message {
                                    let event = v1::Ephemeral { kind: Some(v1::ephemeral::Kind::RoomMessage(message)) };
                                    hub.notify_room(room, conn_id, &event);
                                }
                                peer.reply(rid, reply::Result::Ack(outcome.ack));
                            }
                            Err(e) => peer.error(rid, e.into_wire()),
                        }
                    }
                }
                Err(e) => {
                    let error = e.into_wire();
                    for rid in rids {
                        peer.error(rid, error.clone());
                    }
                }
            },
        )
        .await
}

async fn receipt(conn: &mut Connection, me: Arc<Identity>, rid: u64, r: v1::MarkReceipt, kind: v1::ReceiptKind) {
    let (peer, hub) = (conn.peer.clone(), conn.ctx.hub.clone());
    conn.write(
        move |c| messages::receipt(c, me.user, &me.name, conversation_id(r.conversation_id), r.seq, kind, now_ms()),
        move |r| {
            if let Ok(deliveries) = &r {
                fan_out(&hub, deliveries, None);
            }
            answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {}))
        },
    )
    .await
}
