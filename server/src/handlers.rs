//! Request handlers. Authentication is awaited in the read loop (it changes the connection's
//! phase); every other request is submitted to the store thread and answered from there after the
//! commit, so one connection can pipeline many requests and they are processed in arrival order.

use std::sync::Arc;

use missive_proto::v1::{self, ConversationKind, ErrorCode, client_frame::Request, reply};
use missive_proto::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, PROTOCOL_VERSION, close, validate};

use crate::Ctx;
use crate::auth;
use crate::db::accounts::{self, UserId};
use crate::db::{conversations, messages, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::hub::{ConnId, Hub, Peer};
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::refuse(ErrorCode::Internal, "password hashing failed"))
}

/// Register, Login or Resume. On success the connection becomes authenticated and joins the hub.
pub(crate) async fn authenticate(conn: &mut Connection, rid: u64, request: Request) -> Flow {
    let ctx = conn.ctx.clone();
    let ttl = ctx.config.limits.token_ttl.as_millis() as i64;
    let result: ApiResult<(UserId, String, String, Option<String>, [u8; 32], i64)> = async {
        match request {
            Request::Register(r) => {
                validate::username(&r.username)?;
                check_password(&r.password)?;
                let device = device_or_default(r.device_id)?;
                let hash = blocking(move || auth::hash_password(&r.password)).await?;
                let (token, token_hash) = auth::new_token();
                let (name, dev) = (r.username.clone(), device.clone());
                let (user, expires) = ctx
                    .db
                    .call(move |c| {
                        let now = now_ms();
                        let user = accounts::create_user(c, &name, &hash, now)?;
                        accounts::insert_token(c, user, &dev, &token_hash, now, now + ttl)?;
                        Ok((user, now + ttl))
                    })
                    .await?;
                tracing::info!(user = %r.username, device = %device, "registered");
                Ok((user, r.username, device, Some(token), token_hash, expires))
            }
            Request::Login(r) => {
                let device = device_or_default(r.device_id)?;
                let name = r.username.clone();
                let stored = ctx.db.call(move |c| accounts::credentials(c, &name)).await?;
                let (user, hash) = match stored {
                    Some((user, hash)) => (Some(user), hash),
                    None => (None, auth::dummy_hash().to_owned()),
                };
                let password = r.password;
                let ok = blocking(move || auth::verify_password(&password, &hash)).await?;
                let Some(user) = user.filter(|_| ok) else {
                    tracing::info!(user = %r.username, "login refused: bad credentials");
                    return Err(ApiError::refuse(ErrorCode::BadCredentials, "wrong username or password"));
                };
                let (token, token_hash) = auth::new_token();
                let dev = device.clone();
                let expires = ctx
                    .db
                    .call(move |c| {
                        let now = now_ms();
                        accounts::insert_token(c, user, &dev, &token_hash, now, now + ttl)?;
                        Ok(now + ttl)
                    })
                    .await?;
                tracing::info!(user = %r.username, device = %device, "logged in");
                Ok((user, r.username, device, Some(token), token_hash, expires))
            }
            Request::Resume(r) => {
                let device = device_or_default(r.device_id)?;
                let token_hash = auth::token_hash(&r.token);
                let dev = device.clone();
                let (user, name, expires) = ctx
                    .db
                    .call(move |c| {
                        let now = now_ms();
                        let found = accounts::check_token(c, &token_hash, now)?;
                        accounts::touch_device(c, found.0, &dev, now)?;
                        Ok(found)
                    })
                    .await?;
                tracing::debug!(user = %name, device = %device, "resumed");
                Ok((user, name, device, None, token_hash, expires))
            }
            _ => unreachable!("authenticate is called only for Register, Login and Resume"),
        }
    }
    .await;

    match result {
        Ok((user, name, device, token, token_hash, expires_at_ms)) => {
            let latest_cursor = match ctx.db.call(move |c| accounts::latest_cursor(c, user)).await {
                Ok(c) => c,
                Err(e) => {
                    conn.peer.error(rid, e.into_wire());
                    return Flow::Continue;
                }
            };
            let identity = Arc::new(Identity { user, name: name.clone(), device, conn: conn.conn_id, token_hash });
            let first_session = !ctx.hub.online(user);
            ctx.hub.register(conn.conn_id, user, conn.peer.clone());
            conn.phase = Phase::Authenticated(identity.clone());
            conn.peer.reply(
                rid,
                reply::Result::Session(v1::Session { username: name, token: token.unwrap_or_default(), expires_at_ms, latest_cursor }),
            );
            if first_session {
                broadcast_presence(&ctx, &identity, v1::PresenceState::Online, String::new()).await;
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
        broadcast_presence(ctx, &identity, v1::PresenceState::Offline, String::new()).await;
    }
}

async fn broadcast_presence(ctx: &Ctx, identity: &Identity, state: v1::PresenceState, status: String) {
    let hub = ctx.hub.clone();
    let (user, conn) = (identity.user, identity.conn);
    let event = v1::Ephemeral {
        kind: Some(v1::ephemeral::Kind::Presence(v1::PresenceEvent { user: identity.name.clone(), state: state as i32, status })),
    };
    ctx.db
        .submit(
            move |c| conversations::contacts(c, user),
            move |r| {
                if let Ok(users) = r {
                    hub.notify_users(&users, conn, &event);
                }
            },
        )
        .await;
}

/// Sends the reply for `result`, mapping success with `ok`.
fn answer<T>(peer: &Peer, rid: u64, result: ApiResult<T>, ok: impl FnOnce(T) -> reply::Result) {
    match result {
        Ok(v) => peer.reply(rid, ok(v)),
        Err(e) => peer.error(rid, e.into_wire()),
    }
}

fn fan_out(hub: &Hub, deliveries: &[messages::Delivery], origin: Option<ConnId>) {
    for d in deliveries {
        hub.deliver(d.user, &d.event, origin);
    }
}

fn conversation_id(id: u64) -> i64 {
    id.min(i64::MAX as u64) as i64
}

/// Handles a request of an authenticated connection.
pub(crate) async fn dispatch(conn: &mut Connection, me: Arc<Identity>, rid: u64, request: Request) -> Flow {
    let ctx = conn.ctx.clone();
    let peer = conn.peer.clone();
    let hub = ctx.hub.clone();
    let db = &ctx.db;

    // Requests that only change or read the store, answered with a conversation.
    macro_rules! conversation_change {
        ($work:expr) => {{
            let (peer, hub) = (peer.clone(), hub.clone());
            db.submit($work, move |r: ApiResult<(v1::Conversation, Vec<messages::Delivery>)>| {
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
        Request::Logout(_) => {
            let token_hash = me.token_hash;
            let r = db.call(move |c| accounts::revoke_token(c, &token_hash)).await;
            let ok = r.is_ok();
            answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {}));
            if ok {
                tracing::info!(user = %me.name, device = %me.device, "logged out");
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
        Request::ListConversations(_) => {
            db.submit(
                move |c| conversations::list(c, me.user),
                move |r| answer(&peer, rid, r, |conversations| reply::Result::Conversations(v1::ConversationList { conversations })),
            )
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
            db.submit(
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
            db.submit(
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
            db.submit(
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
            db.submit(
                move |c| accounts::ack_cursor(c, me.user, &me.device, r.cursor, now_ms()),
                move |r| answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {})),
            )
            .await
        }
        Request::Sync(r) => {
            let conn_id = me.conn;
            db.submit(
                move |c| messages::sync(c, me.user, r.since, r.limit),
                move |r| {
                    // Runs on the store thread after the commit: every later event is pushed live,
                    // every earlier one is in this page or an earlier one. No gap, no race.
                    if let Ok(page) = &r {
                        if !page.has_more {
                            hub.set_live(conn_id);
                        }
                    }
                    answer(&peer, rid, r, reply::Result::Sync)
                },
            )
            .await
        }
        Request::History(r) => {
            db.submit(
                move |c| messages::history(c, me.user, conversation_id(r.conversation_id), r.before_seq, r.limit),
                move |r| answer(&peer, rid, r, reply::Result::History),
            )
            .await
        }
        Request::MarkDelivered(r) => receipt(db, &peer, &hub, me, rid, r, v1::ReceiptKind::Delivered).await,
        Request::MarkRead(r) => receipt(db, &peer, &hub, me, rid, r, v1::ReceiptKind::Read).await,
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
            db.submit(
                move |c| messages::typing_audience(c, me.user, conv),
                move |r| {
                    if let Ok((kind, users)) = &r {
                        if *kind == ConversationKind::Room {
                            hub.notify_room(conv, conn_id, &event);
                        } else {
                            hub.notify_users(users, conn_id, &event);
                        }
                    }
                    answer(&peer, rid, r, |_| reply::Result::Ok(v1::Ok {}))
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
            broadcast_presence(&ctx, &me, state, r.status).await;
            peer.reply(rid, reply::Result::Ok(v1::Ok {}));
        }
        Request::Hello(_) | Request::Register(_) | Request::Login(_) | Request::Resume(_) | Request::Ping(_) => {
            unreachable!("handled by the session")
        }
    }
    Flow::Continue
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
pub(crate) async fn submit_sends(ctx: &Ctx, peer: &Peer, me: Arc<Identity>, sends: Vec<QueuedSend>) {
    let (rids, batch): (Vec<u64>, Vec<messages::Outgoing>) = sends.into_iter().map(|s| (s.rid, s.outgoing)).unzip();
    let (hub, peer, conn_id) = (ctx.hub.clone(), peer.clone(), me.conn);
    ctx.db
        .submit(
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

async fn receipt(db: &crate::db::Db, peer: &Peer, hub: &Arc<Hub>, me: Arc<Identity>, rid: u64, r: v1::MarkReceipt, kind: v1::ReceiptKind) {
    let (peer, hub) = (peer.clone(), hub.clone());
    db.submit(
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
