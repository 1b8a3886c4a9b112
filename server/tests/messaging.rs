//! Messaging over real sockets: 1:1 and groups among three users, several devices, idempotent
//! resend, sync after a disconnect, history paging, receipts, typing, presence, chat rooms.

mod common;

use common::*;
use missive_proto::v1::{self, client_frame::Request, ephemeral, event, reply};

#[tokio::test]
async fn one_to_one_and_group_among_three_users() {
    let server = TestServer::with_users(&["alice", "bob", "carol"]).await;
    let url = server.url();
    let mut alice = Client::login_live(&url, "alice", "phone").await;
    let mut bob = Client::login_live(&url, "bob", "phone").await;
    let mut carol = Client::login_live(&url, "carol", "phone").await;

    let dm = alice.direct("bob").await;
    assert_eq!(dm.kind, v1::ConversationKind::Direct as i32);
    assert_eq!(alice.direct("bob").await.id, dm.id, "1:1 conversations are not duplicated");
    let group = alice.group("trip", &["bob", "carol"]).await;
    assert_eq!(group.members.len(), 3);

    let a1 = alice.send_text(dm.id, "a-1", "hi bob").await;
    let a2 = alice.send_text(group.id, "a-2", "hi all").await;
    let b1 = bob.send_text(group.id, "b-1", "hello").await;
    assert_eq!((a1.seq, a2.seq, b1.seq), (1, 1, 2), "per-conversation sequence numbers");
    assert!(!a1.duplicate);

    // Bob, live: membership of the dm, of the group, then the two messages to him. His own
    // message is not echoed to the connection that sent it (the ack says it all)...
    let mut bob_events = vec![];
    for _ in 0..4 {
        bob_events.push(bob.next_event().await);
    }
    bob.assert_quiet().await;
    assert_eq!(messages(&bob_events), vec![("alice".into(), "hi bob".into()), ("alice".into(), "hi all".into())]);
    // ...but it is in his inbox, for his other devices: cursors are contiguous.
    let inbox = bob.sync_all(0).await;
    let cursors: Vec<u64> = inbox.iter().map(|e| e.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[1] == w[0] + 1), "contiguous cursors {cursors:?}");
    assert_eq!(
        messages(&inbox),
        vec![("alice".into(), "hi bob".into()), ("alice".into(), "hi all".into()), ("bob".into(), "hello".into())]
    );
    // Carol sees the group, not the dm.
    let mut carol_events = vec![];
    for _ in 0..3 {
        carol_events.push(carol.next_event().await);
    }
    assert!(matches!(carol_events[0].kind, Some(event::Kind::Membership(_))));
    assert_eq!(messages(&carol_events), vec![("alice".into(), "hi all".into()), ("bob".into(), "hello".into())]);
    carol.assert_quiet().await;

    let list = match carol.request(Request::ListConversations(v1::ListConversations::default())).await {
        reply::Result::Conversations(l) => l.conversations,
        other => panic!("{other:?}"),
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].last_seq, 2);
}

#[tokio::test]
async fn every_device_of_a_user_gets_the_message() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice_phone = Client::login_live(&url, "alice", "phone").await;
    let mut alice_laptop = Client::login_live(&url, "alice", "laptop").await;
    let mut bob_phone = Client::login_live(&url, "bob", "phone").await;
    let mut bob_tablet = Client::login_live(&url, "bob", "tablet").await;
    let dm = alice_phone.direct("bob").await;
    for c in [&mut alice_phone, &mut alice_laptop, &mut bob_phone, &mut bob_tablet] {
        assert!(matches!(c.next_event().await.kind, Some(event::Kind::Membership(_))));
    }
    alice_phone.send_text(dm.id, "m1", "to both of your devices").await;
    for c in [&mut bob_phone, &mut bob_tablet, &mut alice_laptop] {
        let e = c.next_event().await;
        assert_eq!(text_of(&e), "to both of your devices");
    }
    alice_phone.assert_quiet().await; // the sending connection has the ack instead
}

#[tokio::test]
async fn a_resend_gets_the_original_ack_and_fans_out_nothing() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut bob = Client::login_live(&url, "bob", "phone").await;
    let dm = alice.direct("bob").await;
    bob.next_event().await; // membership

    let first = alice.send_text(dm.id, "same-id", "once").await;
    let again = alice.send_text(dm.id, "same-id", "once").await;
    assert!(again.duplicate);
    assert_eq!((again.server_id, again.seq, again.server_time_ms), (first.server_id, first.seq, first.server_time_ms));

    // A resend after reconnecting (the ack was lost) is still a replay.
    drop(alice);
    let mut alice = Client::login(&url, "alice", "phone").await;
    let third = alice.send_text(dm.id, "same-id", "once").await;
    assert!(third.duplicate);
    assert_eq!(third.server_id, first.server_id);

    assert_eq!(text_of(&bob.next_event().await), "once");
    bob.assert_quiet().await;
    let history = match bob.request(Request::History(v1::HistoryRequest { conversation_id: dm.id, before_seq: 0, limit: 10 })).await {
        reply::Result::History(h) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(history.messages.len(), 1);
}

#[tokio::test]
async fn sync_after_a_disconnect_returns_exactly_the_missed_events_in_order() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut bob = Client::login_live(&url, "bob", "phone").await;
    let dm = alice.direct("bob").await;
    alice.send_text(dm.id, "m0", "before").await;
    bob.next_event().await;
    let seen = bob.next_event().await;
    assert_eq!(text_of(&seen), "before");
    bob.request(Request::AckCursor(v1::AckCursor { cursor: seen.cursor })).await;
    drop(bob);

    for i in 1..=120 {
        alice.send_text(dm.id, &format!("m{i}"), &format!("missed {i}")).await;
    }
    let mut bob = Client::login(&url, "bob", "phone").await;
    assert_eq!(bob.session.as_ref().unwrap().latest_cursor, seen.cursor + 120);
    let missed = bob.sync_all(seen.cursor).await;
    let texts: Vec<String> = missed.iter().map(text_of).collect();
    let expected: Vec<String> = (1..=120).map(|i| format!("missed {i}")).collect();
    assert_eq!(texts, expected);
    // Now live: the next message arrives without asking.
    alice.send_text(dm.id, "m121", "live again").await;
    assert_eq!(text_of(&bob.next_event().await), "live again");
}

#[tokio::test]
async fn a_session_is_not_live_before_it_syncs() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let dm = alice.direct("bob").await;
    alice.send_text(dm.id, "x", "queued").await;
    bob.assert_quiet().await;
    let events = bob.sync_all(0).await;
    assert_eq!(messages(&events), vec![("alice".into(), "queued".into())]);
}

#[tokio::test]
async fn history_pages_newest_first_without_gaps_or_duplicates() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    for i in 1..=25 {
        alice.send_text(dm.id, &format!("h{i}"), &format!("{i}")).await;
    }
    let mut bob = Client::login(&url, "bob", "phone").await;
    let mut seqs = vec![];
    let mut before = 0;
    loop {
        let page = match bob.request(Request::History(v1::HistoryRequest { conversation_id: dm.id, before_seq: before, limit: 10 })).await {
            reply::Result::History(h) => h,
            other => panic!("{other:?}"),
        };
        seqs.extend(page.messages.iter().map(|m| m.seq));
        before = page.messages.last().map_or(0, |m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<u64>>());
}

#[tokio::test]
async fn receipts_reach_the_sender_and_never_go_backwards() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login_live(&url, "alice", "phone").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let dm = alice.direct("bob").await;
    alice.next_event().await; // membership
    for i in 1..=3 {
        alice.send_text(dm.id, &format!("r{i}"), "msg").await;
    }
    let mark = |seq| v1::MarkReceipt { conversation_id: dm.id, seq };
    assert!(matches!(bob.request(Request::MarkDelivered(mark(3))).await, reply::Result::Ok(_)));
    assert!(matches!(bob.request(Request::MarkRead(mark(2))).await, reply::Result::Ok(_)));
    assert!(matches!(bob.request(Request::MarkRead(mark(1))).await, reply::Result::Ok(_))); // no-op
    let receipts: Vec<(i32, u64, String)> = [alice.next_event().await, alice.next_event().await]
        .into_iter()
        .map(|e| match e.kind {
            Some(event::Kind::Receipt(r)) => (r.kind, r.seq, r.user),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(receipts, vec![(v1::ReceiptKind::Delivered as i32, 3, "bob".into()), (v1::ReceiptKind::Read as i32, 2, "bob".into())]);
    alice.assert_quiet().await;
    let list = match bob.request(Request::ListConversations(v1::ListConversations::default())).await {
        reply::Result::Conversations(l) => l.conversations,
        other => panic!("{other:?}"),
    };
    assert_eq!((list[0].delivered_seq, list[0].read_seq, list[0].last_seq), (3, 2, 3));
}

/// Messages cross: bob answers (seq 3) before alice's 1 and 2 reach him. His receipt for them,
/// sent afterwards, must still reach alice: sending moves none of the sender's receipts.
#[tokio::test]
async fn a_receipt_for_messages_that_crossed_ones_own_answer_still_reaches_the_sender() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login_live(&url, "alice", "phone").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let dm = alice.direct("bob").await;
    alice.next_event().await; // membership
    for i in 1..=2 {
        alice.send_text(dm.id, &format!("a{i}"), "msg").await;
    }
    let answer = bob.send_text(dm.id, "b1", "answer").await;
    assert_eq!(answer.seq, 3);
    alice.next_event().await; // bob's answer
    let mark = v1::MarkReceipt { conversation_id: dm.id, seq: 2 };
    assert!(matches!(bob.request(Request::MarkDelivered(mark)).await, reply::Result::Ok(_)));
    match alice.next_event().await.kind {
        Some(event::Kind::Receipt(r)) => assert_eq!((r.kind, r.seq, r.user.as_str()), (v1::ReceiptKind::Delivered as i32, 2, "bob")),
        other => panic!("expected bob's receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn typing_and_presence_reach_members_only() {
    let server = TestServer::with_users(&["alice", "bob", "eve"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let mut eve = Client::login(&url, "eve", "phone").await;
    // Bob writes back: from now on his presence reaches alice (see consent.rs), not eve.
    bob.send_text(dm.id, "b0", "hi alice").await;
    alice.request(Request::Typing(v1::Typing { conversation_id: dm.id, active: true })).await;
    match bob.next_ephemeral().await.kind {
        Some(ephemeral::Kind::Typing(t)) => assert_eq!((t.user.as_str(), t.active, t.conversation_id), ("alice", true, dm.id)),
        other => panic!("{other:?}"),
    }
    bob.request(Request::SetPresence(v1::SetPresence { state: v1::PresenceState::Away as i32, status: "lunch".into() })).await;
    match alice.next_ephemeral().await.kind {
        Some(ephemeral::Kind::Presence(p)) => assert_eq!((p.state, p.status.as_str()), (v1::PresenceState::Away as i32, "lunch")),
        other => panic!("{other:?}"),
    }
    drop(bob);
    match alice.next_ephemeral().await.kind {
        Some(ephemeral::Kind::Presence(p)) => assert_eq!((p.user.as_str(), p.state), ("bob", v1::PresenceState::Offline as i32)),
        other => panic!("{other:?}"),
    }
    eve.assert_quiet().await;
    // Typing is ephemeral: nothing of it is in the inbox.
    let mut bob = Client::login(&url, "bob", "phone").await;
    let events = bob.sync_all(0).await;
    assert_eq!(events.len(), 2, "only the membership event and bob's message: {events:?}");
}

#[tokio::test]
async fn chat_rooms_reach_the_members_present() {
    let server = TestServer::with_users(&["alice", "bob", "carol"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let mut carol = Client::login(&url, "carol", "phone").await;
    let room = expect_conversation(alice.request(Request::CreateRoom(v1::CreateRoom { title: "lobby".into() })).await);
    assert_eq!(room.kind, v1::ConversationKind::Room as i32);
    let joined = expect_conversation(bob.request(Request::JoinRoom(v1::JoinRoom { conversation_id: room.id })).await);
    assert_eq!(joined.members, vec!["alice".to_string(), "bob".to_string()]);

    // Carol has not joined: she cannot post, and hears nothing.
    let e = carol.refused(send_text(room.id, "c1", "let me in")).await;
    assert_eq!(e.code(), v1::ErrorCode::NotFound);

    alice.send_text(room.id, "a1", "welcome").await;
    match bob.next_ephemeral().await.kind {
        Some(ephemeral::Kind::RoomMessage(m)) => assert_eq!((m.sender.as_str(), message_text(&m).as_str()), ("alice", "welcome")),
        other => panic!("{other:?}"),
    }
    carol.assert_quiet().await;

    assert!(matches!(bob.request(Request::LeaveRoom(v1::LeaveRoom { conversation_id: room.id })).await, reply::Result::Ok(_)));
    alice.send_text(room.id, "a2", "bye bob").await;
    bob.assert_quiet().await;
    let e = bob.refused(Request::History(v1::HistoryRequest { conversation_id: room.id, before_seq: 0, limit: 10 })).await;
    assert_eq!(e.code(), v1::ErrorCode::NotFound);

    // Rooms keep history for members; room messages are not in the inbox.
    expect_conversation(carol.request(Request::JoinRoom(v1::JoinRoom { conversation_id: room.id })).await);
    let history = match carol.request(Request::History(v1::HistoryRequest { conversation_id: room.id, before_seq: 0, limit: 10 })).await {
        reply::Result::History(h) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(history.messages.iter().map(message_text).collect::<Vec<_>>(), vec!["bye bob", "welcome"]);
    assert!(carol.sync_all(0).await.is_empty());
}

#[tokio::test]
async fn group_membership_changes() {
    let server = TestServer::with_users(&["alice", "bob", "carol"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut bob = Client::login(&url, "bob", "phone").await;
    let g = alice.group("team", &["bob"]).await;
    let add = |names: &[&str]| {
        Request::AddMembers(v1::AddMembers { conversation_id: g.id, members: names.iter().map(|s| s.to_string()).collect() })
    };
    let remove = |names: &[&str]| {
        Request::RemoveMembers(v1::RemoveMembers { conversation_id: g.id, members: names.iter().map(|s| s.to_string()).collect() })
    };
    let after = expect_conversation(bob.request(add(&["carol"])).await);
    assert_eq!(after.members.len(), 3);
    assert_eq!(bob.refused(remove(&["carol"])).await.code(), v1::ErrorCode::Forbidden, "only the owner removes others");
    assert_eq!(bob.refused(add(&["zed"])).await.code(), v1::ErrorCode::NotFound);
    expect_conversation(alice.request(remove(&["carol"])).await);
    expect_conversation(bob.request(remove(&["bob"])).await); // leaving is allowed
    let e = bob.refused(send_text(g.id, "late", "am I still here?")).await;
    assert_eq!(e.code(), v1::ErrorCode::NotFound);
    // Carol learned that she was added and then removed.
    let mut carol = Client::login(&url, "carol", "phone").await;
    let changes: Vec<(Vec<String>, Vec<String>)> = carol
        .sync_all(0)
        .await
        .into_iter()
        .map(|e| match e.kind {
            Some(event::Kind::Membership(m)) => (m.added, m.removed),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changes, vec![(vec!["carol".to_string()], vec![]), (vec![], vec!["carol".to_string()])]);
}

#[tokio::test]
async fn media_and_custom_bodies_round_trip() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let image = v1::MessageBody {
        kind: Some(v1::message_body::Kind::Image(v1::Media {
            url: "https://cdn.example/p.jpg".into(),
            mime_type: "image/jpeg".into(),
            size_bytes: 123_456,
            width: 640,
            height: 480,
            ..Default::default()
        })),
    };
    let custom = v1::MessageBody {
        kind: Some(v1::message_body::Kind::Custom(v1::Custom {
            r#type: "poll".into(),
            payload: b"{\"q\":\"lunch?\"}".to_vec().into(),
            metadata: [("version".to_string(), "2".to_string())].into(),
        })),
    };
    for (id, body) in [("img", image.clone()), ("cus", custom.clone())] {
        let r =
            alice.request(Request::SendMessage(v1::SendMessage { client_id: id.into(), conversation_id: dm.id, body: Some(body) })).await;
        assert!(matches!(r, reply::Result::Ack(_)), "{r:?}");
    }
    let mut bob = Client::login(&url, "bob", "phone").await;
    let bodies: Vec<v1::MessageBody> = bob
        .sync_all(0)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(event::Kind::Message(m)) => m.body,
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![image, custom]);
}

#[tokio::test]
async fn pages_of_large_messages_stay_within_one_frame() {
    let server = TestServer::with_users(&["alice", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;
    let big = "b".repeat(missive_proto::MAX_BODY_BYTES);
    for i in 0..12 {
        alice.send_text(dm.id, &format!("big{i}"), &big).await;
    }
    // 12 x 64 KiB does not fit in one 256 KiB frame: the pages must split, and nothing is lost.
    let mut bob = Client::login(&url, "bob", "phone").await;
    let mut since = 0;
    let mut pages = 0;
    let mut messages_seen = 0;
    loop {
        let page = match bob.request(Request::Sync(v1::SyncRequest { since, limit: 500 })).await {
            reply::Result::Sync(p) => p,
            other => panic!("{other:?}"),
        };
        pages += 1;
        messages_seen += messages(&page.events).len();
        since = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(messages_seen, 12);
    assert!(pages >= 4, "{pages} pages");
    let history = match bob.request(Request::History(v1::HistoryRequest { conversation_id: dm.id, before_seq: 0, limit: 500 })).await {
        reply::Result::History(h) => h,
        other => panic!("{other:?}"),
    };
    assert!(history.has_more && history.messages.len() < 12);
}
