//! What the server must refuse: requests before the handshake or authentication, requests on
//! conversations one is not a member of, and bad input (oversize, malformed, unknown kinds,
//! invalid UTF-8, text frames, floods, silent clients). After each, the server still serves others.

mod common;

use std::time::Duration;

use common::*;
use missive_proto::v1::{self, ErrorCode, client_frame::Request};
use missive_proto::{MAX_BODY_BYTES, MAX_FRAME_BYTES, close, codec};
use tokio_tungstenite::tungstenite::Message;

/// The server still works for a well-behaved client.
async fn still_serving(url: &str) {
    let mut c = Client::login(url, "alice", "other").await;
    c.ping().await;
}

fn every_authenticated_request() -> Vec<Request> {
    vec![
        Request::Logout(v1::Logout {}),
        Request::LogoutAll(v1::LogoutAll {}),
        Request::CreateDirect(v1::CreateDirect { peer: "bob".into() }),
        Request::CreateGroup(v1::CreateGroup { title: "g".into(), members: vec![] }),
        Request::AddMembers(v1::AddMembers { conversation_id: 1, members: vec![] }),
        Request::RemoveMembers(v1::RemoveMembers { conversation_id: 1, members: vec![] }),
        Request::ListConversations(v1::ListConversations::default()),
        Request::Block(v1::Block { user: "bob".into() }),
        Request::Unblock(v1::Unblock { user: "bob".into() }),
        Request::CreateRoom(v1::CreateRoom { title: "r".into() }),
        Request::JoinRoom(v1::JoinRoom { conversation_id: 1 }),
        Request::LeaveRoom(v1::LeaveRoom { conversation_id: 1 }),
        send_text(1, "c", "hi"),
        Request::AckCursor(v1::AckCursor { cursor: 1 }),
        Request::Sync(v1::SyncRequest { since: 0, limit: 0 }),
        Request::History(v1::HistoryRequest { conversation_id: 1, before_seq: 0, limit: 0 }),
        Request::MarkDelivered(v1::MarkReceipt { conversation_id: 1, seq: 1 }),
        Request::MarkRead(v1::MarkReceipt { conversation_id: 1, seq: 1 }),
        Request::Typing(v1::Typing { conversation_id: 1, active: true }),
        Request::SetPresence(v1::SetPresence { state: 1, status: String::new() }),
    ]
}

#[tokio::test]
async fn nothing_before_hello() {
    let server = TestServer::start().await;
    let mut c = Client::raw(&server.url()).await;
    let e = c.refused(Request::Login(v1::Login { username: "a".into(), password: "b".into(), device_id: String::new() })).await;
    assert_eq!(e.code(), ErrorCode::HandshakeRequired);
    assert_eq!(c.closed_with().await, close::PROTOCOL_ERROR);
}

#[tokio::test]
async fn nothing_before_authentication() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server.url()).await;
    for request in every_authenticated_request() {
        let e = c.refused(request.clone()).await;
        assert_eq!(e.code(), ErrorCode::NotAuthenticated, "{request:?}");
        assert!(!e.retryable);
    }
    c.ping().await; // still open: the client may log in now
}

#[tokio::test]
async fn no_access_to_conversations_of_others() {
    let server = TestServer::with_users(&["alice", "bob", "eve"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let group = alice.group("g", &["bob"]).await;
    alice.send_text(dm.id, "secret", "for bob only").await;

    let mut eve = Client::login(&url, "eve", "phone").await;
    for id in [dm.id, group.id] {
        let forbidden = [
            send_text(id, "e1", "let me in"),
            Request::History(v1::HistoryRequest { conversation_id: id, before_seq: 0, limit: 10 }),
            Request::MarkRead(v1::MarkReceipt { conversation_id: id, seq: 1 }),
            Request::MarkDelivered(v1::MarkReceipt { conversation_id: id, seq: 1 }),
            Request::Typing(v1::Typing { conversation_id: id, active: true }),
            Request::AddMembers(v1::AddMembers { conversation_id: id, members: vec!["eve".into()] }),
            Request::RemoveMembers(v1::RemoveMembers { conversation_id: id, members: vec!["bob".into()] }),
        ];
        // Refused exactly as for an id that does not exist: nothing tells eve that it does.
        for request in forbidden {
            let e = eve.refused(request.clone()).await;
            let nowhere = eve.refused(with_conversation(request.clone(), 9_999)).await;
            assert_eq!(e.code(), ErrorCode::NotFound, "{request:?}");
            assert_eq!(e, nowhere, "{request:?}");
        }
        let join = |id| Request::JoinRoom(v1::JoinRoom { conversation_id: id });
        let e = eve.refused(join(id)).await;
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e, eve.refused(join(9_999)).await, "a room join tells no conversation from nothing");
    }
    // A 1:1 conversation cannot gain members.
    assert_eq!(
        alice.refused(Request::AddMembers(v1::AddMembers { conversation_id: dm.id, members: vec!["eve".into()] })).await.code(),
        ErrorCode::InvalidArgument
    );
    // Eve's inbox holds nothing of theirs; a cursor beyond her inbox is refused.
    assert!(eve.sync_all(0).await.is_empty());
    assert_eq!(eve.refused(Request::AckCursor(v1::AckCursor { cursor: 5 })).await.code(), ErrorCode::InvalidArgument);
    // Nor can eve reuse alice's client id to learn anything: idempotency is per sender.
    let ack = match eve.request(send_text(dm.id, "secret", "x")).await {
        v1::reply::Result::Error(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(ack.code(), ErrorCode::NotFound);
}

/// The same request about another conversation id.
fn with_conversation(request: Request, id: u64) -> Request {
    match request {
        Request::SendMessage(r) => Request::SendMessage(v1::SendMessage { conversation_id: id, client_id: format!("{}-x", r.client_id), ..r }),
        Request::History(r) => Request::History(v1::HistoryRequest { conversation_id: id, ..r }),
        Request::MarkRead(r) => Request::MarkRead(v1::MarkReceipt { conversation_id: id, ..r }),
        Request::MarkDelivered(r) => Request::MarkDelivered(v1::MarkReceipt { conversation_id: id, ..r }),
        Request::Typing(r) => Request::Typing(v1::Typing { conversation_id: id, ..r }),
        Request::AddMembers(r) => Request::AddMembers(v1::AddMembers { conversation_id: id, ..r }),
        Request::RemoveMembers(r) => Request::RemoveMembers(v1::RemoveMembers { conversation_id: id, ..r }),
        other => panic!("no conversation in {other:?}"),
    }
}

/// Numbers at or above 2^63 (which the store would wrap to negative ones) are refused, not
/// reinterpreted: a sync from 2^63 does not start over from the beginning.
#[tokio::test]
async fn numbers_beyond_the_signed_range_are_refused() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let mut alice = Client::login(&server.url(), "alice", "phone").await;
    let dm = alice.direct("bob").await;
    alice.send_text(dm.id, "m1", "hello").await;
    let huge = 1u64 << 63;
    let requests = [
        Request::Sync(v1::SyncRequest { since: huge, limit: 0 }),
        Request::Sync(v1::SyncRequest { since: u64::MAX, limit: 0 }),
        Request::History(v1::HistoryRequest { conversation_id: dm.id, before_seq: huge + 5, limit: 10 }),
        Request::History(v1::HistoryRequest { conversation_id: huge + dm.id, before_seq: 0, limit: 10 }),
        Request::MarkRead(v1::MarkReceipt { conversation_id: dm.id, seq: u64::MAX }),
        Request::MarkDelivered(v1::MarkReceipt { conversation_id: dm.id, seq: huge }),
        Request::AckCursor(v1::AckCursor { cursor: u64::MAX }),
        send_text(u64::MAX, "m2", "x"),
    ];
    for request in requests {
        let e = alice.refused(request.clone()).await;
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{request:?}: {e:?}");
        assert!(e.message.contains("out of range"), "{e:?}");
    }
    // Nothing was marked: bob's message count for alice is unchanged.
    let mut bob = Client::login(&server.url(), "bob", "phone").await;
    assert_eq!(messages(&bob.sync_all(0).await).len(), 1);
}

#[tokio::test]
async fn oversize_frames_close_with_1009() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    c.send_bytes(vec![0u8; MAX_FRAME_BYTES + 1]).await;
    assert_eq!(c.closed_with().await, close::MESSAGE_TOO_BIG);
    still_serving(&server.url()).await;
}

#[tokio::test]
async fn oversize_bodies_get_too_large() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let e = alice.refused(send_text(dm.id, "big", &"x".repeat(MAX_BODY_BYTES + 1))).await;
    assert_eq!(e.code(), ErrorCode::TooLarge);
    let e = alice.refused(send_text(dm.id, &"k".repeat(65), "hi")).await;
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "over-long client id");
    let e = alice.refused(Request::CreateGroup(v1::CreateGroup { title: "t".repeat(300), members: vec![] })).await;
    assert_eq!(e.code(), ErrorCode::TooLarge);
    let too_many: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    let e = alice.refused(Request::CreateGroup(v1::CreateGroup { title: "big".into(), members: too_many })).await;
    assert_eq!(e.code(), ErrorCode::LimitExceeded);
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_connection_survives_a_few() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    c.send_bytes(vec![0x0a, 0xff, 0x01]).await;
    let e = c.wait_reply(0).await;
    match e {
        v1::reply::Result::Error(e) => assert_eq!(e.code(), ErrorCode::MalformedFrame),
        other => panic!("{other:?}"),
    }
    c.ping().await;
    // A peer that keeps sending garbage is cut off.
    for _ in 0..20 {
        c.send_bytes(vec![0xff; 8]).await;
    }
    assert_eq!(c.closed_with().await, close::PROTOCOL_ERROR);
    still_serving(&server.url()).await;
}

#[tokio::test]
async fn unknown_request_and_body_kinds_are_named() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    // A request kind from a future version: field 99 of ClientFrame.
    let mut bytes = codec::encode(&v1::ClientFrame { request_id: 77, request: None });
    bytes.extend_from_slice(&[0x9a, 0x06, 0x00]);
    alice.send_bytes(bytes).await;
    match alice.wait_reply(77).await {
        v1::reply::Result::Error(e) => assert_eq!(e.code(), ErrorCode::UnknownRequest),
        other => panic!("{other:?}"),
    }
    // A body kind from a future version decodes as "no kind".
    let r =
        Request::SendMessage(v1::SendMessage { client_id: "k".into(), conversation_id: dm.id, body: Some(v1::MessageBody { kind: None }) });
    assert_eq!(alice.refused(r).await.code(), ErrorCode::UnsupportedKind);
}

#[tokio::test]
async fn invalid_utf8_text_is_refused_and_nothing_is_stored() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let body = v1::MessageBody { kind: Some(v1::message_body::Kind::Text(v1::Text { text: vec![0x68, 0xc3, 0x28].into() })) };
    let e = alice.refused(Request::SendMessage(v1::SendMessage { client_id: "u".into(), conversation_id: dm.id, body: Some(body) })).await;
    assert_eq!(e.code(), ErrorCode::InvalidUtf8);
    let mut bob = Client::login(&url, "bob", "phone").await;
    assert_eq!(messages(&bob.sync_all(0).await).len(), 0);
}

#[tokio::test]
async fn text_frames_close_with_1003() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::connect(&server.url()).await;
    c.send_message(Message::Text("{\"hello\": 1}".into())).await;
    assert_eq!(c.closed_with().await, close::UNSUPPORTED_DATA);
    still_serving(&server.url()).await;
}

#[tokio::test]
async fn floods_are_rate_limited_then_cut_off() {
    let server = TestServer::start_with(|c| {
        c.limits.requests_per_second = 20;
        c.limits.burst = 20;
        c.limits.flood_refusals = 20;
    })
    .await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let mut ids = vec![];
    for _ in 0..30 {
        ids.push(c.send(Request::Ping(v1::Ping { nonce: 1 })).await);
    }
    let mut limited = 0;
    for id in ids {
        if let v1::reply::Result::Error(e) = c.wait_reply(id).await {
            assert_eq!(e.code(), ErrorCode::RateLimited);
            assert!(e.retryable && e.retry_after_ms > 0);
            limited += 1;
        }
    }
    assert!(limited >= 5, "{limited} of 30 limited");
    // Ignoring the limit gets the connection closed.
    for _ in 0..200 {
        c.send(Request::Ping(v1::Ping { nonce: 2 })).await;
    }
    assert_eq!(c.closed_with().await, close::FLOOD);
    still_serving(&server.url()).await;
}

/// A client that keeps sending faster than its rate is cut off even when it never collects
/// many refusals in a row: refusals are counted over a window.
#[tokio::test]
async fn a_flood_interleaved_with_accepted_requests_is_cut_off() {
    let server = TestServer::start_with(|c| {
        c.limits.requests_per_second = 200;
        c.limits.burst = 2;
        c.limits.flood_refusals = 50;
        c.limits.flood_window = Duration::from_secs(60);
    })
    .await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    // Each round: wait as long as the last refusal said, then send three pings. The first
    // gets the token that came back; at most two are refused before the next round's first.
    let mut refused = 0;
    let mut wait = 10;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(wait.into())).await;
        let mut ids = vec![];
        for nonce in 0..3 {
            match c.try_send(Request::Ping(v1::Ping { nonce })).await {
                Some(id) => ids.push(id),
                None => break,
            }
        }
        let mut answered = 0;
        while answered < ids.len() && c.pump().await {
            for &id in &ids {
                match c.take_reply(id) {
                    Some(v1::reply::Result::Error(e)) => {
                        assert_eq!(e.code(), ErrorCode::RateLimited);
                        wait = e.retry_after_ms + 2; // the hint is rounded down to whole ms
                        refused += 1;
                        answered += 1;
                    }
                    Some(_) => answered += 1,
                    None => {}
                }
            }
        }
        if c.closed.is_some() {
            break;
        }
    }
    assert_eq!(c.closed, Some(close::FLOOD), "after {refused} refusals");
    assert!(refused >= 50, "{refused} refusals before the close");
    Client::login(&server.url(), "alice", "other").await;
}

/// A rate-limited send holds back the sends after it on that connection until it is sent
/// again, so a pipelined later message cannot take its place in the conversation.
#[tokio::test]
async fn a_rate_limited_send_is_not_overtaken_by_the_next() {
    let server = TestServer::start_with(|c| {
        c.limits.requests_per_second = 50;
        c.limits.burst = 3;
    })
    .await;
    Client::register(&server.url(), "alice").await;
    Client::register(&server.url(), "bob").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let dm = c.direct("bob").await;
    tokio::time::sleep(Duration::from_millis(100)).await; // a full bucket: three tokens
    c.send(Request::Ping(v1::Ping { nonce: 1 })).await;
    c.send(Request::Ping(v1::Ping { nonce: 2 })).await;
    let first = c.send(send_text(dm.id, "m1", "one")).await;
    let second = c.send(send_text(dm.id, "m2", "two")).await; // no token left
    assert!(matches!(c.wait_reply(first).await, v1::reply::Result::Ack(_)));
    assert!(matches!(c.wait_reply(second).await, v1::reply::Result::Error(e) if e.code() == ErrorCode::RateLimited));
    tokio::time::sleep(Duration::from_millis(100)).await; // tokens again
    let third = c.send(send_text(dm.id, "m3", "three")).await;
    match c.wait_reply(third).await {
        v1::reply::Result::Error(e) => assert!(e.code() == ErrorCode::RateLimited && e.retryable, "{e:?}"),
        other => panic!("m3 overtook the refused m2: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.send_text(dm.id, "m2", "two").await.seq, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.send_text(dm.id, "m3", "three").await.seq, 3);
}

#[tokio::test]
async fn silent_clients_time_out() {
    let server = TestServer::start_with(|c| {
        c.limits.auth_timeout = Duration::from_millis(300);
        c.limits.idle_timeout = Duration::from_millis(500);
    })
    .await;
    Client::register(&server.url(), "alice").await;
    let mut never_logs_in = Client::connect(&server.url()).await;
    assert_eq!(never_logs_in.closed_with().await, close::AUTH_TIMEOUT);
    let mut idle = Client::login(&server.url(), "alice", "phone").await;
    assert_eq!(idle.closed_with().await, close::IDLE_TIMEOUT);
    // A raw TCP connection that never finishes the WebSocket handshake is dropped too.
    let addr = server.handle.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "server closed the silent socket");
    still_serving(&server.url()).await;
}

#[tokio::test]
async fn a_second_authentication_on_one_connection_is_refused() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let e = c.refused(Request::Login(v1::Login { username: "alice".into(), password: PASSWORD.into(), device_id: String::new() })).await;
    assert_eq!(e.code(), ErrorCode::AlreadyAuthenticated);
}

/// Presence in a chat room is a live subscription: one connection holds a bounded number.
#[tokio::test]
async fn a_connection_is_present_in_a_bounded_number_of_chat_rooms() {
    let server = TestServer::start_with(|c| c.limits.max_rooms_per_connection = 3).await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let mut rooms = vec![];
    for i in 0..3 {
        match c.request(Request::CreateRoom(v1::CreateRoom { title: format!("room {i}") })).await {
            v1::reply::Result::Conversation(room) => rooms.push(room.id),
            other => panic!("room {i} refused: {other:?}"),
        }
    }
    let err = c.refused(Request::CreateRoom(v1::CreateRoom { title: "one too many".into() })).await;
    assert_eq!(err.code(), ErrorCode::LimitExceeded, "{err:?}");
    // Joining a room one is already in costs nothing; leaving one makes room for another.
    assert!(matches!(c.request(Request::JoinRoom(v1::JoinRoom { conversation_id: rooms[0] })).await, v1::reply::Result::Conversation(_)));
    assert!(matches!(c.request(Request::LeaveRoom(v1::LeaveRoom { conversation_id: rooms[0] })).await, v1::reply::Result::Ok(_)));
    assert!(matches!(
        c.request(Request::CreateRoom(v1::CreateRoom { title: "now it fits".into() })).await,
        v1::reply::Result::Conversation(_)
    ));
}

/// A group holds at most `MAX_GROUP_MEMBERS`, at creation and when members are added.
#[tokio::test]
async fn groups_are_limited_in_size() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let crowd: Vec<String> = (0..missive_proto::MAX_GROUP_MEMBERS).map(|i| format!("user{i}")).collect();
    let err = c.refused(Request::CreateGroup(v1::CreateGroup { title: "crowd".into(), members: crowd.clone() })).await;
    assert_eq!(err.code(), ErrorCode::LimitExceeded, "{err:?}");
    let group = c.group("small", &["bob"]).await;
    let err = c.refused(Request::AddMembers(v1::AddMembers { conversation_id: group.id, members: crowd })).await;
    assert_eq!(err.code(), ErrorCode::LimitExceeded, "{err:?}");
}

/// However many messages a history request asks for, a page holds at most `MAX_PAGE_SIZE`.
#[tokio::test]
async fn history_pages_are_capped() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let mut c = Client::login(&server.url(), "alice", "phone").await;
    let dm = c.direct("bob").await;
    let total = missive_proto::MAX_PAGE_SIZE as usize + 5;
    let mut ids = vec![];
    for i in 0..total {
        ids.push(c.send(send_text(dm.id, &format!("h{i}"), "x")).await);
    }
    for id in ids {
        assert!(matches!(c.wait_reply(id).await, v1::reply::Result::Ack(_)));
    }
    match c.request(Request::History(v1::HistoryRequest { conversation_id: dm.id, before_seq: 0, limit: 100_000 })).await {
        v1::reply::Result::History(h) => {
            assert_eq!(h.messages.len(), missive_proto::MAX_PAGE_SIZE as usize);
            assert!(h.has_more);
        }
        other => panic!("{other:?}"),
    }
}

/// Beyond `max_connections` open connections, new ones are closed at once.
#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let _a = Client::connect(&server.url()).await;
    let _b = Client::connect(&server.url()).await;
    let addr = server.handle.local_addr();
    let third = tokio_tungstenite::client_async(server.url(), tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    assert!(third.is_err(), "a third connection was served");
}

/// Beyond `max_connections_per_address` open connections from one address, new ones from it are
/// refused; other addresses are still served, and a closed connection gives its place back.
#[tokio::test]
async fn connections_beyond_the_limit_per_address_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_address = 2).await;
    let url = server.url();
    let here: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let there: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let first = Client::connect_from(&url, here).await;
    let _second = Client::connect_from(&url, here).await;
    assert!(Client::try_raw_from(&url, here).await.is_none(), "a third connection from one address was served");
    let mut elsewhere = Client::connect_from(&url, there).await;
    elsewhere.ping().await;
    drop(first);
    Client::connect_from_when_free(&url, here).await.ping().await;
}

/// A client that does not read pins at most `outbound_queue_bytes` of the server's memory: past
/// that, it is closed as a slow consumer (4004), however few frames that is.
#[tokio::test]
async fn a_client_that_does_not_read_is_closed_when_its_queue_exceeds_its_bytes() {
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue_bytes = 256 * 1024;
        c.limits.write_timeout = Duration::from_secs(60);
    })
    .await;
    let url = server.url();
    Client::register(&url, "alice").await;
    Client::register(&url, "bob").await;
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let mut bob = Client::login_live(&url, "bob", "phone").await;
    // Bob reads nothing while alice sends far more than the socket buffers hold (each message
    // is one live event for bob, 700 frames in all).
    let text = "x".repeat(60_000);
    for i in 0..700 {
        alice.send_text(dm.id, &format!("m{i}"), &text).await;
    }
    let mut received = 0;
    while bob.pump().await {
        received += bob.events.drain(..).count();
    }
    assert_eq!(bob.closed, Some(close::SLOW_CONSUMER), "after {received} events");
    assert!(received < 700, "{received} events");
    still_serving(&url).await;
}
