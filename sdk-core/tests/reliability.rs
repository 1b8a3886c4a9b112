//! The reliability contract (DESIGN.md section 3) over real sockets against the reference
//! server: each point in its own test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use missive::transport::native::NativeTransport;
use missive::transport::{Auth, BoxFuture, Incoming, Link, Outgoing, Transport, TransportError};
use missive::{Client, ConnectionState, Event, MessageState};
use missive_testkit::{FaultConfig, FaultProxy};

#[tokio::test]
async fn messages_go_pending_sent_delivered_read() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    assert!(matches!(alice_events.next().await, Some(Event::ConnectionChanged(ConnectionState::Connected))));

    let dm = alice.create_direct("bob").await.unwrap();
    let echo = alice.send_text(&dm.id, "hi bob").await.unwrap();
    assert_eq!(echo.state, MessageState::Pending);
    assert!(echo.outgoing && echo.server_id.is_none());

    let sent = wait_state(&alice, &mut alice_events, &echo.id, MessageState::Sent).await;
    assert_eq!(sent.seq, Some(1));
    let got = match wait_for(&mut bob_events, "bob's message", |e| matches!(e, Event::MessageAdded(_))).await {
        Event::MessageAdded(m) => m,
        _ => unreachable!(),
    };
    assert_eq!((got.body.preview(), got.sender.as_str(), got.id.as_str()), ("hi bob".to_string(), "alice", echo.id.as_str()));
    // Bob's client acknowledges delivery by itself; alice sees it.
    wait_state(&alice, &mut alice_events, &echo.id, MessageState::Delivered).await;
    let bob_dm = bob.conversation(&dm.id).await.unwrap().unwrap();
    assert_eq!(bob_dm.unread_count, 1);
    bob.mark_read(&dm.id).await.unwrap();
    assert_eq!(bob.conversation(&dm.id).await.unwrap().unwrap().unread_count, 0);
    wait_state(&alice, &mut alice_events, &echo.id, MessageState::Read).await;
}

#[tokio::test]
async fn wrong_password_stops_with_auth_failed() {
    let server = TestServer::start().await;
    let url = server.url();
    registered(&url, "alice").await;
    let c = open(&url, None, "phone").await;
    let err = c.login("alice", "not my password").await.unwrap_err();
    assert_eq!(err.code(), "AUTH_FAILED");
    assert!(!err.is_retryable());
    assert!(matches!(c.connection_state(), ConnectionState::AuthFailed { .. }));
    // No retry loop: the state stays AuthFailed.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(matches!(c.connection_state(), ConnectionState::AuthFailed { .. }));
    c.login("alice", PASSWORD).await.unwrap();
    assert_eq!(c.connection_state(), ConnectionState::Connected);
}

#[tokio::test]
async fn a_corrupt_store_gives_a_clear_error_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_store(&dir, "alice");
    let bytes = b"SQLite format 3\0 but then garbage ".repeat(300);
    std::fs::write(&path, &bytes).unwrap();
    let err = Client::open(config("ws://127.0.0.1:9").store_path(&path)).await.err().expect("refused");
    assert_eq!(err.code(), "CORRUPT_STORE");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn persist_before_send_survives_a_client_that_dies_offline() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = temp_store(&dir, "alice");
    let alice = logged_in_new(&url, "alice", &store).await;
    let bob = registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();

    // The network goes away; alice sends; the process "dies" right after send returns.
    let proxy = FaultProxy::start(server.addr(), FaultConfig::default()).await.unwrap();
    proxy.set_accepting(false);
    alice.network_lost().await.unwrap();
    let echo = alice.send_text(&dm.id, "written while offline").await.unwrap();
    alice.shutdown().await;
    drop(alice);

    // A new client on the same store, network back: the message goes out exactly once.
    let mut bob_events = bob.subscribe();
    let alice = Client::open(config(&url).store_path(&store)).await.unwrap();
    let mut alice_events = alice.subscribe();
    wait_state(&alice, &mut alice_events, &echo.id, MessageState::Sent).await;
    wait_present(&bob, &mut bob_events, &echo.id).await;
    assert_eq!(all_texts(&bob, &dm.id).await, vec!["written while offline"]);
}

async fn logged_in_new(url: &str, name: &str, store: &std::path::Path) -> Client {
    let c = open(url, Some(store), "phone").await;
    c.register(name, PASSWORD).await.unwrap();
    c
}

/// A transport that loses the first acknowledgement and the link with it, as when the network
/// fails right after the server committed.
struct LoseFirstAck {
    inner: NativeTransport,
    lost: Arc<AtomicBool>,
}

impl Transport for LoseFirstAck {
    fn connect(&self, auth: Auth) -> BoxFuture<Result<Link, TransportError>> {
        let connecting = self.inner.connect(auth);
        let lost = self.lost.clone();
        Box::pin(async move {
            let mut link = connecting.await?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let mut upstream = std::mem::replace(&mut link.incoming, rx);
            tokio::spawn(async move {
                while let Some(item) = upstream.recv().await {
                    if matches!(item, Incoming::Acked { .. }) && !lost.swap(true, Ordering::SeqCst) {
                        return; // drop the ack and the link
                    }
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
            Ok(link)
        })
    }
}

#[tokio::test]
async fn a_lost_ack_is_resent_with_the_same_id_and_delivered_once() {
    let server = TestServer::start().await;
    let url = server.url();
    registered(&url, "alice").await.shutdown().await;
    let bob = registered(&url, "bob").await;
    let lost = Arc::new(AtomicBool::new(false));
    let transport = Arc::new(LoseFirstAck { inner: NativeTransport::new(url.clone()), lost: lost.clone() });
    let alice = Client::open(config(&url).device_id("laptop").with_transport_of(transport)).await.unwrap();
    alice.login("alice", PASSWORD).await.unwrap();
    let dm = alice.create_direct("bob").await.unwrap();
    let mut alice_events = alice.subscribe();
    let echo = alice.send_text(&dm.id, "exactly once").await.unwrap();
    let sent = wait_state(&alice, &mut alice_events, &echo.id, MessageState::Sent).await;
    assert!(lost.load(Ordering::SeqCst), "the first ack was lost");
    assert_eq!(sent.seq, Some(1));
    // Bob has it once; a later message follows it directly.
    let mut bob_events = bob.subscribe();
    let second = alice.send_text(&dm.id, "and then this").await.unwrap();
    wait_present(&bob, &mut bob_events, &second.id).await;
    assert_eq!(all_texts(&bob, &dm.id).await, vec!["exactly once", "and then this"]);
}

/// A transport with bugs: its link task panics at the first message the engine hands it (as a
/// parser panicking on server input would), and the connect after that panics too (it runs on
/// the engine's own task).
struct Panicking {
    inner: NativeTransport,
    link_panicked: Arc<AtomicBool>,
    connect_panicked: Arc<AtomicBool>,
}

impl Transport for Panicking {
    fn connect(&self, auth: Auth) -> BoxFuture<Result<Link, TransportError>> {
        let connecting = self.inner.connect(auth);
        let (link_panicked, connect_panicked) = (self.link_panicked.clone(), self.connect_panicked.clone());
        Box::pin(async move {
            if link_panicked.load(Ordering::SeqCst) && !connect_panicked.swap(true, Ordering::SeqCst) {
                panic!("provoked: a panic in connect");
            }
            let mut link = connecting.await?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let downstream = std::mem::replace(&mut link.outgoing, tx);
            tokio::spawn(async move {
                while let Some(item) = rx.recv().await {
                    if matches!(item, Outgoing::Send { .. }) && !link_panicked.swap(true, Ordering::SeqCst) {
                        panic!("provoked: a panic in the link task");
                    }
                    if downstream.send(item).await.is_err() {
                        return;
                    }
                }
            });
            Ok(link)
        })
    }
}

/// A panic in a link task, then one in the engine's own task (a connect), is a lost link and a
/// restart, never a dead client: the message in flight is sent after the reconnect, once.
#[tokio::test]
async fn panics_in_the_link_and_the_engine_become_reconnects() {
    let server = TestServer::start().await;
    let url = server.url();
    registered(&url, "alice").await.shutdown().await;
    let bob = registered(&url, "bob").await;
    let (link_panicked, connect_panicked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let transport =
        Arc::new(Panicking { inner: NativeTransport::new(url.clone()), link_panicked: link_panicked.clone(), connect_panicked: connect_panicked.clone() });
    let alice = Client::open(config(&url).device_id("laptop").with_transport_of(transport)).await.unwrap();
    alice.login("alice", PASSWORD).await.unwrap();
    let dm = alice.create_direct("bob").await.unwrap();
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let first = alice.send_text(&dm.id, "through two panics").await.unwrap();
    wait_state(&alice, &mut alice_events, &first.id, MessageState::Sent).await;
    assert!(link_panicked.load(Ordering::SeqCst) && connect_panicked.load(Ordering::SeqCst), "both panics happened");
    let second = alice.send_text(&dm.id, "and after them").await.unwrap();
    wait_present(&bob, &mut bob_events, &second.id).await;
    assert_eq!(all_texts(&bob, &dm.id).await, vec!["through two panics", "and after them"]);
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
}

trait WithTransport {
    fn with_transport_of(self, t: Arc<dyn Transport>) -> Self;
}

impl WithTransport for missive::ClientConfig {
    fn with_transport_of(mut self, t: Arc<dyn Transport>) -> Self {
        self.transport = t;
        self
    }
}

#[tokio::test]
async fn offline_sends_go_out_in_order_after_reconnect() {
    let server = TestServer::start().await;
    let url = server.url();
    let bob = registered(&url, "bob").await;
    let proxy = FaultProxy::start(server.addr(), FaultConfig::default()).await.unwrap();
    let alice = Client::open(config(&proxy.url())).await.unwrap();
    alice.register("alice", PASSWORD).await.unwrap();
    let dm = alice.create_direct("bob").await.unwrap();

    let mut alice_events = alice.subscribe();
    proxy.set_accepting(false); // cuts the live link and refuses new ones
    wait_for(&mut alice_events, "reconnecting", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Reconnecting { .. }))).await;
    let mut ids = vec![];
    for i in 0..20 {
        ids.push(alice.send_text(&dm.id, &format!("offline {i}")).await.unwrap().id);
    }
    let pending = alice.messages(&dm.id, None, 50).await.unwrap();
    assert!(pending.messages.iter().all(|m| m.state == MessageState::Pending));
    proxy.set_accepting(true);
    alice.network_available().await.unwrap();
    wait_state(&alice, &mut alice_events, ids.last().unwrap(), MessageState::Sent).await;
    let expected: Vec<String> = (0..20).map(|i| format!("offline {i}")).collect();
    let mut bob_events = bob.subscribe();
    wait_present(&bob, &mut bob_events, ids.last().unwrap()).await;
    assert_eq!(all_texts(&bob, &dm.id).await, expected);
    assert_eq!(all_texts(&alice, &dm.id).await, expected);
}

#[tokio::test]
async fn a_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let total = 300;
    let mut last = String::new();
    let mut stopped = None;
    let mut server = Some(server);
    for i in 0..total {
        last = alice.send_text(&dm.id, &format!("m{i:03}")).await.unwrap().id;
        if i == total / 3 {
            stopped = Some(server.take().unwrap().stop().await);
        }
    }
    wait_for(&mut alice_events, "reconnecting", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Reconnecting { .. }))).await;
    let _server = TestServer::resume(stopped.unwrap()).await;
    wait_state(&alice, &mut alice_events, &last, MessageState::Sent).await;
    wait_present(&bob, &mut bob_events, &last).await;
    let expected: Vec<String> = (0..total).map(|i| format!("m{i:03}")).collect();
    assert_eq!(all_texts(&bob, &dm.id).await, expected);
    assert_eq!(all_texts(&alice, &dm.id).await, expected);
}

#[tokio::test]
async fn history_pages_from_the_server_without_gaps_or_duplicates() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    registered(&url, "bob").await.shutdown().await;
    let dm = alice.create_direct("bob").await.unwrap();
    let mut events = alice.subscribe();
    let mut last = String::new();
    for i in 0..130 {
        last = alice.send_text(&dm.id, &format!("h{i:03}")).await.unwrap().id;
    }
    wait_state(&alice, &mut events, &last, MessageState::Sent).await;
    // Bob on a new device with an empty cache: sync brings the inbox, paging must agree with it
    // and with the server's history.
    let bob = logged_in(&url, "bob", "tablet", None).await;
    eventually("bob's sync", || async { bob.message(&last).await.unwrap().is_some() }).await;
    let expected: Vec<String> = (0..130).map(|i| format!("h{i:03}")).collect();
    assert_eq!(all_texts(&bob, &dm.id).await, expected);
    // A third device that never synced this conversation pages purely from the server.
    let alice2 = logged_in(&url, "alice", "desktop", None).await;
    let conversation = alice2.create_direct("bob").await.unwrap();
    assert_eq!(paged_texts(&alice2, &conversation.id, 25).await.0, expected);
}

#[tokio::test]
async fn a_revoked_token_gives_auth_failed_and_no_retry_loop() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = temp_store(&dir, "alice");
    let alice = logged_in_new(&url, "alice", &store).await;
    alice.shutdown().await;
    drop(alice);
    // Someone revokes the stored session (as a logout on another device with the same token would).
    let token: String = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT value FROM settings WHERE key = 'session.token'", [], |r| r.get(0))
        .unwrap();
    revoke(&url, &token).await;

    let alice = Client::open(config(&url).store_path(&store)).await.unwrap();
    let state = tokio::time::timeout(WAIT, alice.wait_for_state(|s| matches!(s, ConnectionState::AuthFailed { .. }))).await.unwrap();
    assert!(matches!(state, ConnectionState::AuthFailed { .. }), "{state:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(matches!(alice.connection_state(), ConnectionState::AuthFailed { .. }), "stays failed: no retry loop");
    // The password still works and replaces the session.
    alice.login("alice", PASSWORD).await.unwrap();
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
}

/// A logout elsewhere with the same token ends the live session at once (close 4006): the client
/// goes straight to AuthFailed, without a reconnect attempt, and stays there.
#[tokio::test]
async fn a_live_session_revoked_elsewhere_goes_straight_to_auth_failed() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = temp_store(&dir, "alice");
    let alice = logged_in_new(&url, "alice", &store).await;
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
    let mut events = alice.subscribe();
    let token: String = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT value FROM settings WHERE key = 'session.token'", [], |r| r.get(0))
        .unwrap();
    revoke(&url, &token).await;
    let next = wait_for(&mut events, "a connection change", |e| matches!(e, Event::ConnectionChanged(s) if *s != ConnectionState::Connected)).await;
    assert!(matches!(next, Event::ConnectionChanged(ConnectionState::AuthFailed { .. })), "{next:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(matches!(alice.connection_state(), ConnectionState::AuthFailed { .. }), "stays failed: no retry loop");
    alice.login("alice", PASSWORD).await.unwrap();
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
}

/// Resumes with `token` over a raw connection and logs out, which revokes it on the server.
async fn revoke(url: &str, token: &str) {
    use futures_util::{SinkExt, StreamExt};
    use missive_proto::v1::{self, client_frame::Request};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let frames = [
        Request::Hello(v1::Hello { min_version: 1, max_version: 1, client: "revoker".into() }),
        Request::Resume(v1::Resume { token: token.into(), device_id: "other".into() }),
        Request::Logout(v1::Logout {}),
    ];
    for (i, request) in frames.into_iter().enumerate() {
        let bytes = missive_proto::codec::encode(&v1::ClientFrame { request_id: i as u64 + 1, request: Some(request) });
        ws.send(Ws::Binary(bytes.into())).await.unwrap();
        // Wait for this request's reply before the next one.
        loop {
            match ws.next().await {
                Some(Ok(Ws::Binary(b))) => {
                    let frame: v1::ServerFrame = missive_proto::codec::decode(&b).unwrap();
                    if let Some(v1::server_frame::Frame::Reply(r)) = frame.frame {
                        assert!(!matches!(r.result, Some(v1::reply::Result::Error(_))), "{r:?}");
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_large_offline_queue_respects_the_server_rate_limit_and_keeps_order() {
    // A server that allows 300 requests per second per connection, bursts of 300.
    let dir = tempfile::tempdir().unwrap();
    let mut config = missive_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.limits.requests_per_second = 300;
    config.limits.burst = 300;
    let server = missive_server::Server::bind(config).await.unwrap();
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();
    alice.network_lost().await.unwrap();
    let mut last = String::new();
    for i in 0..500 {
        last = alice.send_text(&dm.id, &format!("q{i:03}")).await.unwrap().id;
    }
    let mut events = alice.subscribe();
    alice.network_available().await.unwrap();
    wait_state(&alice, &mut events, &last, MessageState::Sent).await;
    let mut bob_events = bob.subscribe();
    wait_present(&bob, &mut bob_events, &last).await;
    let expected: Vec<String> = (0..500).map(|i| format!("q{i:03}")).collect();
    assert_eq!(all_texts(&bob, &dm.id).await, expected, "all delivered, in order, none refused");
    assert_eq!(alice.unsent_count().await.unwrap(), 0);
    server.shutdown().await;
}

/// Alice and a 1:1 conversation with bob, who has seen it once and gone away; the path of his
/// store, to come back with.
async fn bob_gone_away(url: &str, dir: &tempfile::TempDir) -> (Client, missive::Conversation, std::path::PathBuf) {
    let store = temp_store(dir, "bob");
    let alice = registered(url, "alice").await;
    let bob = logged_in_new(url, "bob", &store).await;
    let dm = alice.create_direct("bob").await.unwrap();
    eventually("bob has the conversation", || async { bob.conversation(&dm.id).await.unwrap().is_some() }).await;
    bob.shutdown().await;
    (alice, dm, store)
}

/// A long absence is synced page after page (the link reads the next page ahead while the
/// engine commits one); a cut in the middle of it, which loses a page read ahead, loses and
/// duplicates nothing.
#[tokio::test]
async fn a_long_absence_syncs_page_after_page_once_despite_a_cut() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (alice, dm, store) = bob_gone_away(&url, &dir).await;
    let total = 4 * missive_proto::MAX_PAGE_SIZE as usize + 123;
    let sends: Vec<_> = (0..8)
        .map(|task| {
            let (alice, conv) = (alice.clone(), dm.id.clone());
            tokio::spawn(async move {
                for i in (task..total).step_by(8) {
                    alice.send_text(&conv, &format!("m{i:04}")).await.unwrap();
                }
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    assert!(alice.flush(WAIT).await.unwrap());

    let proxy = FaultProxy::start(server.addr(), FaultConfig::default()).await.unwrap();
    let bob = Client::open(config(&proxy.url()).store_path(&store)).await.unwrap();
    let mut events = bob.subscribe();
    wait_for(&mut events, "a first page", |e| matches!(e, Event::SyncProgress { caught_up: false, .. })).await;
    proxy.cut_all();
    assert!(bob.wait_caught_up(WAIT).await, "caught up after the cut");
    let texts = all_texts(&bob, &dm.id).await;
    assert_eq!(texts.len(), total, "every message once");
    let mut sorted = texts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), total, "no duplicates");
    let last = bob.conversation(&dm.id).await.unwrap().unwrap();
    assert_eq!(last.unread_count as usize, total);
    assert_eq!(last.last_message.and_then(|m| m.seq), Some(total as u64), "sequence numbers 1..{total}");
}

/// A catch-up sends one delivered receipt per conversation when it is done (or one a second if
/// it takes longer), not one per page: each receipt costs the server an inbox event and the
/// sender an update of every message it covers. The receipt still covers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_sends_its_delivered_receipt_once_not_per_page() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (alice, dm, store) = bob_gone_away(&url, &dir).await;
    let pages = 4;
    let total = (pages - 1) * missive_proto::MAX_PAGE_SIZE as usize + 7;
    for i in 0..total {
        alice.send_text(&dm.id, &format!("m{i:04}")).await.unwrap();
    }
    assert!(alice.flush(WAIT).await.unwrap());

    let mut events = alice.subscribe();
    let bob = Client::open(config(&url).store_path(&store)).await.unwrap();
    assert!(bob.wait_caught_up(WAIT).await);
    let mut receipts = 0;
    wait_for(&mut events, "bob's receipt for the last message", |e| match e {
        Event::Receipt { user, kind: missive::ReceiptKind::Delivered, seq, .. } if user == "bob" => {
            receipts += 1;
            *seq == total as u64
        }
        _ => false,
    })
    .await;
    assert!(receipts <= 2, "{receipts} delivered receipts for a catch-up of {pages} pages");
    let last = alice.conversation(&dm.id).await.unwrap().unwrap().last_message.unwrap();
    assert_eq!(last.state, MessageState::Delivered, "the receipt covers every message");
}

/// `flush` waits for every message in the outbox, one sent while it waits included, and says
/// `false` when its time runs out first; a cancelled message stops counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_the_whole_outbox_and_times_out_offline() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let alice = Client::open(config(&url).store_path(temp_store(&dir, "alice"))).await.unwrap();
    alice.register("alice", PASSWORD).await.unwrap();
    registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();
    alice.network_lost().await.unwrap();
    for i in 0..300 {
        alice.send_text(&dm.id, &format!("m{i:03}")).await.unwrap();
    }
    let cancelled = alice.send_text(&dm.id, "never mind").await.unwrap();
    assert!(!alice.flush(std::time::Duration::from_millis(300)).await.unwrap(), "offline: the outbox cannot drain");
    assert_eq!(alice.unsent_count().await.unwrap(), 301);

    alice.cancel(&cancelled.id).await.unwrap();
    let flushing = tokio::spawn({
        let alice = alice.clone();
        async move { alice.flush(WAIT).await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let late = alice.send_text(&dm.id, "sent while flushing").await.unwrap();
    alice.network_available().await.unwrap();
    assert!(flushing.await.unwrap(), "the outbox drained");
    assert_eq!(alice.unsent_count().await.unwrap(), 0, "nothing left, the late message included");
    let late = alice.message(&late.id).await.unwrap().unwrap();
    assert!(late.server_id.is_some(), "{late:?}");
}
