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
        Request::CreateDirect(v1::CreateDirect { peer: "bob".into() }),
        Request::CreateGroup(v1::CreateGroup { title: "g".into(), members: vec![] }),
        Request::AddMembers(v1::AddMembers { conversation_id: 1, members: vec![] }),
        Request::RemoveMembers(v1::RemoveMembers { conversation_id: 1, members: vec![] }),
        Request::ListConversations(v1::ListConversations {}),
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
        for request in forbidden {
            let e = eve.refused(request.clone()).await;
            assert_eq!(e.code(), ErrorCode::Forbidden, "{request:?}");
        }
    }
    let e = eve.refused(send_text(9_999, "e2", "nowhere")).await;
    assert_eq!(e.code(), ErrorCode::NotFound);
    // A 1:1 conversation cannot gain members, and a room join only works on rooms.
    assert_eq!(
        alice.refused(Request::AddMembers(v1::AddMembers { conversation_id: dm.id, members: vec!["eve".into()] })).await.code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(eve.refused(Request::JoinRoom(v1::JoinRoom { conversation_id: group.id })).await.code(), ErrorCode::InvalidArgument);
    // Eve's inbox holds nothing of theirs; a cursor beyond her inbox is refused.
    assert!(eve.sync_all(0).await.is_empty());
    assert_eq!(eve.refused(Request::AckCursor(v1::AckCursor { cursor: 5 })).await.code(), ErrorCode::InvalidArgument);
    // Nor can eve reuse alice's client id to learn anything: idempotency is per sender.
    let ack = match eve.request(send_text(dm.id, "secret", "x")).await {
        v1::reply::Result::Error(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(ack.code(), ErrorCode::Forbidden);
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
