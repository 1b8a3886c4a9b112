//! No user stalls another: reads (history, sync, lists) are served off the writer thread, one
//! connection's reads take turns with everyone else's and wait while their replies are unsent,
//! and a connection still reads its own writes, however it pipelines them.
//!
//! Assertions are on order and progress, never on wall-clock time.

mod common;

use common::*;
use missive_proto::v1::{self, client_frame::Request, reply};

/// Messages of this size fill a history page (about 240 KiB) with 14 of them.
const BODY: usize = 16 * 1024;
/// History requests the flooder pipelines: far more reply bytes (about 19 MB) than the socket
/// buffers between it and the server hold, and than its outbound queue may hold (4 MiB).
const FLOOD: usize = 80;

/// A connection whose receive buffer is small and fixed (no autotuning), so that what the
/// server can push into it without it reading is bounded by the server's send buffer.
async fn with_small_receive_buffer(url: &str) -> Client {
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut c = Client::over(Box::new(tcp), url).await;
    let hello = Request::Hello(v1::Hello { min_version: missive_proto::PROTOCOL_VERSION, max_version: missive_proto::PROTOCOL_VERSION, client: "t".into() });
    assert!(matches!(c.request(hello).await, reply::Result::Hello(_)));
    let login = Request::Login(v1::Login { username: "mallory".into(), password: PASSWORD.into(), device_id: "flood".into() });
    c.session = Some(expect_session(c.request(login).await));
    c
}

/// Mallory pipelines 80 full-size history pages and reads none of them; Bob's message to the
/// group is then stored, acknowledged and pushed to Mallory while most of her pages are still
/// unanswered. Before reads left the writer thread, Bob's send waited behind every one of her
/// pages (and her queue overflowed into a 4004 close before his message reached her).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_history_reads_does_not_hold_back_another_users_send() {
    let server = TestServer::with_users(&["mallory", "bob"]).await;
    let url = server.url();
    let mut owner = Client::login(&url, "mallory", "phone").await;
    let group = owner.group("heavy", &["bob"]).await;
    let body = "h".repeat(BODY);
    for i in 0..20 {
        owner.send_text(group.id, &format!("fill{i}"), &body).await;
    }

    let mut mallory = with_small_receive_buffer(&url).await;
    mallory.sync_all(0).await;
    let mut bob = Client::login(&url, "bob", "phone").await;

    let page = || Request::History(v1::HistoryRequest { conversation_id: group.id, before_seq: 0, limit: 500 });
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(mallory.send(page()).await);
    }
    // The flood is being served: its first page came back.
    let first = mallory.wait_reply(flood[0]).await;
    assert!(matches!(&first, reply::Result::History(h) if h.messages.len() > 1 && h.has_more), "{first:?}");

    // Mallory reads nothing more until Bob's message is acknowledged.
    let ack = bob.send_text(group.id, "honest", "not stuck").await;

    // Her stream, in order: how many of her pages came before Bob's message.
    let mut pages_before = None;
    let mut answered = 1;
    while answered < FLOOD || pages_before.is_none() {
        assert!(mallory.pump().await, "the flooder's connection closed ({:?}) after {answered} pages", mallory.closed);
        answered += flood.iter().filter(|id| mallory.take_reply(**id).is_some()).count();
        if pages_before.is_none() {
            if let Some(e) = mallory.events.iter().find(|e| matches!(&e.kind, Some(v1::event::Kind::Message(m)) if m.seq == ack.seq)) {
                assert_eq!(text_of(e), "not stuck");
                pages_before = Some(answered);
            }
        }
    }
    let pages_before = pages_before.unwrap();
    eprintln!("bob's message reached mallory after {pages_before} of her {FLOOD} pages");
    assert!(pages_before < FLOOD, "bob's send waited behind every page of the flood");
}

/// A read pipelined right behind a write sees it: reads wait for the connection's earlier
/// writes to commit, though they run on other threads.
#[tokio::test]
async fn reads_pipelined_behind_writes_see_them() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;

    let create = alice.send(Request::CreateGroup(v1::CreateGroup { title: "fresh".into(), members: vec!["bob".into()] })).await;
    let list = alice.send(Request::ListConversations(v1::ListConversations::default())).await;
    let group = expect_conversation(alice.wait_reply(create).await);
    match alice.wait_reply(list).await {
        reply::Result::Conversations(l) => assert!(l.conversations.iter().any(|c| c.id == group.id), "{l:?}"),
        other => panic!("{other:?}"),
    }

    let sends: Vec<u64> = {
        let mut ids = vec![];
        for i in 0..5 {
            ids.push(alice.send(send_text(group.id, &format!("m{i}"), &format!("text {i}"))).await);
        }
        ids
    };
    let history = alice.send(Request::History(v1::HistoryRequest { conversation_id: group.id, before_seq: 0, limit: 50 })).await;
    let sync = alice.send(Request::Sync(v1::SyncRequest { since: 0, limit: 500 })).await;
    for id in sends {
        assert!(matches!(alice.wait_reply(id).await, reply::Result::Ack(_)));
    }
    match alice.wait_reply(history).await {
        reply::Result::History(h) => {
            let texts: Vec<String> = h.messages.iter().map(message_text).collect();
            assert_eq!(texts, (0..5).rev().map(|i| format!("text {i}")).collect::<Vec<_>>());
        }
        other => panic!("{other:?}"),
    }
    match alice.wait_reply(sync).await {
        reply::Result::Sync(page) => assert_eq!(messages(&page.events).len(), 5, "{page:?}"),
        other => panic!("{other:?}"),
    }
}

/// A write pipelined behind reads is answered after them: a connection's replies come in the
/// order of its requests, though its reads run on reader threads. A reconnecting client sends
/// `Sync` and then its unacknowledged messages again; when the acknowledgements overtook the
/// sync page, a client whose connections kept being cut had its sends completed while its sync
/// never got through, and looked up to date while missing others' messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_pipelined_behind_reads_is_acknowledged_after_their_replies() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut bob = Client::login(&url, "bob", "phone").await;
    let group = bob.group("heavy", &["alice"]).await;
    let body = "h".repeat(BODY);
    // Alice's backlog: a full sync page of small messages, then history pages of large ones.
    let mut sends = vec![];
    for i in 0..600 {
        sends.push(bob.send(send_text(group.id, &format!("small{i}"), "small")).await);
    }
    for id in sends {
        assert!(matches!(bob.wait_reply(id).await, reply::Result::Ack(_)));
    }
    for i in 0..20 {
        bob.send_text(group.id, &format!("fill{i}"), &body).await;
    }

    let mut alice = Client::login(&url, "alice", "phone").await;
    // Other connections keep the reader threads busy (they read none of their replies), so that
    // alice's reads wait their turns while her send would not.
    let mut others = vec![];
    for i in 0..4 {
        others.push(Client::login(&url, "bob", &format!("reader{i}")).await);
    }
    for other in &mut others {
        for _ in 0..4 {
            other.send(Request::History(v1::HistoryRequest { conversation_id: group.id, before_seq: 0, limit: 500 })).await;
        }
    }
    let mut asked = vec![alice.send(Request::Sync(v1::SyncRequest { since: 0, limit: 500 })).await];
    for _ in 0..3 {
        asked.push(alice.send(Request::History(v1::HistoryRequest { conversation_id: group.id, before_seq: 0, limit: 500 })).await);
    }
    asked.push(alice.send(send_text(group.id, "a1", "after the reads")).await);

    let mut order = vec![];
    while order.len() < asked.len() {
        assert!(alice.pump().await, "closed: {:?}", alice.closed);
        for id in &asked {
            if let Some(reply) = alice.take_reply(*id) {
                let kind = match reply {
                    reply::Result::History(h) => {
                        assert!(h.messages.len() > 1, "{h:?}");
                        "history"
                    }
                    reply::Result::Sync(page) => {
                        assert!(page.events.len() > 100 && page.has_more, "{} events", page.events.len());
                        "sync"
                    }
                    reply::Result::Ack(_) => "ack",
                    other => panic!("{other:?}"),
                };
                order.push(kind);
            }
        }
    }
    assert_eq!(order, ["sync", "history", "history", "history", "ack"]);
}
