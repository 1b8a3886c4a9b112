//! The SDK's features over real sockets: groups, several devices, typing and presence, chat
//! rooms, cancel/edit/retry, drafts, session resume, logout, network hints, dead-link detection.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use missive::{Body, ConnectionState, ConversationKind, DisconnectReason, Event, MessageState, Presence};

#[tokio::test]
async fn a_group_of_three_with_conversation_list_and_unread_counts() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let carol = registered(&url, "carol").await;
    let mut carol_events = carol.subscribe();
    let group = alice.create_group("trip", &["bob", "carol"]).await.unwrap();
    assert_eq!(group.kind, ConversationKind::Group);
    assert_eq!(group.members.len(), 3);
    wait_for(&mut carol_events, "the group", |e| matches!(e, Event::ConversationChanged(c) if c.id == group.id)).await;
    let mut bob_events = bob.subscribe();
    let a = alice.send_text(&group.id, "one").await.unwrap();
    let b = bob.send_text(&group.id, "two").await.unwrap();
    wait_for(&mut carol_events, "two", |e| matches!(e, Event::MessageAdded(m) if m.id == b.id)).await;
    wait_for(&mut bob_events, "one", |e| matches!(e, Event::MessageAdded(m) if m.id == a.id)).await;
    let list = carol.conversations().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].unread_count, 2);
    assert_eq!(list[0].last_message.as_ref().unwrap().body, Body::Text("two".into()));
    assert_eq!(all_texts(&carol, &group.id).await, vec!["one", "two"]);
    carol.mark_read(&group.id).await.unwrap();
    assert_eq!(carol.conversations().await.unwrap()[0].unread_count, 0);
    // Membership changes reach the members.
    alice.remove_members(&group.id, &["carol"]).await.unwrap();
    wait_for(&mut carol_events, "removal", |e| matches!(e, Event::ConversationChanged(c) if c.id == group.id && !c.active)).await;
}

#[tokio::test]
async fn every_device_of_a_user_sees_sent_messages_and_read_state() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice_phone = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let alice_laptop = logged_in(&url, "alice", "laptop", None).await;
    let mut laptop_events = alice_laptop.subscribe();
    let mut phone_events = alice_phone.subscribe();
    let dm = alice_phone.create_direct("bob").await.unwrap();
    let sent = alice_phone.send_text(&dm.id, "from my phone").await.unwrap();
    let copy = match wait_for(&mut laptop_events, "the phone's message", |e| matches!(e, Event::MessageAdded(m) if m.id == sent.id)).await {
        Event::MessageAdded(m) => m,
        _ => unreachable!(),
    };
    assert!(copy.outgoing);
    assert_eq!(copy.state, MessageState::Sent);
    let reply = bob.send_text(&dm.id, "hello both").await.unwrap();
    wait_for(&mut laptop_events, "bob's reply", |e| matches!(e, Event::MessageAdded(m) if m.id == reply.id)).await;
    assert_eq!(alice_laptop.conversation(&dm.id).await.unwrap().unwrap().unread_count, 1);
    // Reading on the phone clears the laptop's unread count.
    wait_for(&mut phone_events, "reply on the phone", |e| matches!(e, Event::ConversationChanged(c) if c.unread_count == 1)).await;
    alice_phone.mark_read(&dm.id).await.unwrap();
    wait_for(&mut laptop_events, "read elsewhere", |e| matches!(e, Event::ConversationChanged(c) if c.id == dm.id && c.unread_count == 0)).await;
}

#[tokio::test]
async fn typing_and_presence() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let mut bob_events = bob.subscribe();
    let dm = alice.create_direct("bob").await.unwrap();
    wait_for(&mut bob_events, "the dm", |e| matches!(e, Event::ConversationChanged(c) if c.id == dm.id)).await;
    alice.set_typing(&dm.id, true).await.unwrap();
    wait_for(&mut bob_events, "typing", |e| matches!(e, Event::Typing { user, active: true, .. } if user == "alice")).await;
    alice.set_presence(Presence::Away, "in a meeting").await.unwrap();
    wait_for(&mut bob_events, "presence", |e| matches!(e, Event::Presence { user, presence: Presence::Away, status } if user == "alice" && status == "in a meeting")).await;
}

#[tokio::test]
async fn chat_rooms_and_rejoin_after_reconnect() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let room = alice.create_room("lobby").await.unwrap();
    assert_eq!(room.kind, ConversationKind::Room);
    bob.join_room(&room.id).await.unwrap();
    let mut bob_events = bob.subscribe();
    let m = alice.send_text(&room.id, "welcome").await.unwrap();
    wait_for(&mut bob_events, "room message", |e| matches!(e, Event::MessageAdded(x) if x.id == m.id)).await;
    // Bob's link drops; after reconnecting he is present in the room again.
    bob.network_lost().await.unwrap();
    bob.network_available().await.unwrap();
    wait_for(&mut bob_events, "reconnected", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Connected))).await;
    let mut seen = false;
    for i in 0..50 {
        let m = alice.send_text(&room.id, &format!("again {i}")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                if let Some(Event::MessageAdded(x)) = bob_events.next().await {
                    if x.id == m.id {
                        return;
                    }
                }
            }
        })
        .await;
        if got.is_ok() {
            seen = true;
            break;
        }
    }
    assert!(seen, "bob is present in the room after reconnecting");
    bob.leave_room(&room.id).await.unwrap();
}

#[tokio::test]
async fn cancel_edit_and_retry() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    let bob = registered(&url, "bob").await;
    let carol = registered(&url, "carol").await;
    let dm = alice.create_direct("bob").await.unwrap();
    let mut events = alice.subscribe();
    alice.network_lost().await.unwrap();
    let keep = alice.send_text(&dm.id, "typo hree").await.unwrap();
    let drop_me = alice.send_text(&dm.id, "never mind").await.unwrap();
    let edited = alice.edit(&keep.id, Body::Text("typo here".into())).await.unwrap();
    assert_eq!(edited.body, Body::Text("typo here".into()));
    alice.cancel(&drop_me.id).await.unwrap();
    wait_for(&mut events, "removed", |e| matches!(e, Event::MessageRemoved { id, .. } if *id == drop_me.id)).await;
    alice.network_available().await.unwrap();
    let sent = wait_state(&alice, &mut events, &keep.id, MessageState::Sent).await;
    assert_eq!(alice.edit(&keep.id, Body::Text("too late".into())).await.unwrap_err().code(), "NOT_CHANGEABLE");
    assert_eq!(sent.body, Body::Text("typo here".into()));
    let mut bob_events = bob.subscribe();
    wait_present(&bob, &mut bob_events, &keep.id).await;
    assert_eq!(all_texts(&bob, &dm.id).await, vec!["typo here"]);

    // A permanent refusal: carol is removed from a group and then sends to it (the server answers
    // NOT_FOUND, as for a conversation that does not exist).
    let mut carol_events = carol.subscribe();
    let group = alice.create_group("g", &["carol"]).await.unwrap();
    wait_for(&mut carol_events, "group", |e| matches!(e, Event::ConversationChanged(c) if c.id == group.id)).await;
    alice.remove_members(&group.id, &["carol"]).await.unwrap();
    wait_for(&mut carol_events, "removed", |e| matches!(e, Event::ConversationChanged(c) if c.id == group.id && !c.active)).await;
    let refused = carol.send_text(&group.id, "am I still here?").await.unwrap();
    let failed = wait_state(&carol, &mut carol_events, &refused.id, MessageState::Failed { reason: String::new(), retryable: false }).await;
    match failed.state {
        MessageState::Failed { reason, retryable } => {
            assert!(reason.contains("NOT_FOUND"), "{reason}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(carol.unsent_count().await.unwrap(), 1, "a failed message waits for the app");
    carol.retry(&refused.id).await.unwrap();
    wait_state(&carol, &mut carol_events, &refused.id, MessageState::Failed { reason: String::new(), retryable: false }).await;
    carol.cancel(&refused.id).await.unwrap();
    assert_eq!(carol.unsent_count().await.unwrap(), 0);
}

#[tokio::test]
async fn drafts_and_session_resume_without_the_password() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = temp_store(&dir, "alice");
    let alice = open(&url, Some(&store), "phone").await;
    alice.register("alice", PASSWORD).await.unwrap();
    registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();
    alice.set_draft(&dm.id, Some("half a thought")).await.unwrap();
    alice.shutdown().await;
    drop(alice);

    let again = open(&url, Some(&store), "phone").await;
    let state = tokio::time::timeout(WAIT, again.wait_for_state(|s| *s == ConnectionState::Connected)).await.unwrap();
    assert_eq!(state, ConnectionState::Connected);
    assert_eq!(again.username().await.unwrap().as_deref(), Some("alice"));
    assert_eq!(again.conversation(&dm.id).await.unwrap().unwrap().draft.as_deref(), Some("half a thought"));
    // Logout revokes the session: the next start has nothing to resume.
    again.logout().await.unwrap();
    assert_eq!(again.connection_state(), ConnectionState::Disconnected { reason: DisconnectReason::LoggedOut });
    again.shutdown().await;
    drop(again);
    let third = open(&url, Some(&store), "phone").await;
    let state = tokio::time::timeout(WAIT, third.wait_for_state(|s| matches!(s, ConnectionState::Disconnected { .. }))).await.unwrap();
    assert_eq!(state, ConnectionState::Disconnected { reason: DisconnectReason::LoggedOut });
    // A store belongs to one user.
    registered(&url, "carol").await;
    assert_eq!(third.login("carol", PASSWORD).await.unwrap_err().code(), "INVALID_ARGUMENT");
    third.login("alice", PASSWORD).await.unwrap();
}

#[tokio::test]
async fn network_hints_drive_the_connection() {
    let server = TestServer::start().await;
    let alice = registered(&server.url(), "alice").await;
    let mut events = alice.subscribe();
    alice.network_lost().await.unwrap();
    wait_for(&mut events, "offline", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Disconnected { reason: DisconnectReason::NetworkLost }))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alice.connection_state(), ConnectionState::Disconnected { reason: DisconnectReason::NetworkLost }, "no retries while offline");
    alice.network_available().await.unwrap();
    wait_for(&mut events, "online", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Connected))).await;
    // Calls that need the server say so while offline.
    alice.network_lost().await.unwrap();
    let err = alice.create_direct("nobody").await.unwrap_err();
    assert_eq!(err.code(), "OFFLINE");
    assert!(err.is_retryable());
}

/// A TCP relay that can freeze: it keeps the connection open but forwards nothing, like a dead
/// NAT mapping. Only heartbeats can notice.
async fn freezable_relay(upstream: std::net::SocketAddr) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let pipe = |mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, flag: Arc<AtomicBool>| async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if flag.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let a = tokio::spawn(pipe(cr, sw, flag.clone()));
                let _ = pipe(sr, cw, flag).await;
                a.abort();
            });
        }
    });
    (url, frozen)
}

#[tokio::test]
async fn heartbeats_detect_a_silent_dead_link() {
    let server = TestServer::start().await;
    registered(&server.url(), "alice").await.shutdown().await;
    let (url, frozen) = freezable_relay(server.addr()).await;
    let alice = logged_in(&url, "alice", "phone", None).await;
    let mut events = alice.subscribe();
    frozen.store(true, Ordering::SeqCst);
    // Heartbeat timeout is 3 s in the test configuration.
    let started = std::time::Instant::now();
    wait_for(&mut events, "dead link noticed", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Reconnecting { .. }))).await;
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the timeout");
    frozen.store(false, Ordering::SeqCst);
    wait_for(&mut events, "reconnected", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Connected))).await;
}

/// `cached_messages` pages through what the store holds, newest first, offline too, and says
/// whether older ones are stored; an unknown conversation is `NOT_FOUND`.
#[tokio::test]
async fn cached_messages_page_through_the_store_offline() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = registered(&url, "alice").await;
    registered(&url, "bob").await;
    let dm = alice.create_direct("bob").await.unwrap();
    for i in 1..=7 {
        alice.send_text(&dm.id, &format!("m{i}")).await.unwrap();
    }
    assert!(alice.flush(WAIT).await.unwrap());
    alice.network_lost().await.unwrap();
    let pending = alice.send_text(&dm.id, "pending").await.unwrap();

    let mut pages = vec![];
    let mut before = None;
    loop {
        let page = alice.cached_messages(&dm.id, before, 3).await.unwrap();
        pages.push((page.messages.iter().map(|m| m.body.preview()).collect::<Vec<_>>(), page.has_more));
        if !page.has_more {
            break;
        }
        before = page.next_before_seq;
    }
    let expected = vec![
        (vec!["pending".to_string(), "m7".into(), "m6".into()], true),
        (vec!["m5".into(), "m4".into(), "m3".into()], true),
        (vec!["m2".into(), "m1".into()], false),
    ];
    assert_eq!(pages, expected);
    assert!(alice.cached_messages(&dm.id, None, 500).await.unwrap().messages.iter().any(|m| m.id == pending.id));
    let err = alice.cached_messages("no-such-conversation", None, 10).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND");
}
