//! What others can do to a user without consent: lists of conversations that anyone can grow
//! come in pages within the frame limit, a block list stops unwanted 1:1 conversations, group
//! adds and presence, and opening a conversation with someone does not show their presence.

mod common;

use common::*;
use missive_proto::v1::{self, ErrorCode, client_frame::Request, reply};

fn name(i: usize) -> String {
    format!("{i:02}{}", "n".repeat(missive_proto::MAX_USERNAME_LEN - 2))
}

fn list(before_id: u64) -> Request {
    Request::ListConversations(v1::ListConversations { before_id, limit: 0 })
}

/// Mallory adds Alice to 120 groups of 40 long-named members: one list of them all would be
/// about 330 KiB, over the 256 KiB frame limit (the test client refuses such a frame, as the SDK
/// does). The list comes in pages, each within the limit, newest first, with nothing lost or
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_lists_come_in_pages_within_the_frame_limit() {
    let server = TestServer::start().await;
    let url = server.url();
    let names: Vec<String> = (0..40).map(name).collect();
    for n in &names {
        Client::register(&url, n).await;
    }
    let (alice, mallory) = (&names[0], &names[1]);
    let mut m = Client::login(&url, mallory, "phone").await;
    let mut ids = vec![];
    for g in 0..120 {
        ids.push(m.send(Request::CreateGroup(v1::CreateGroup { title: format!("spam {g}"), members: names.clone() })).await);
    }
    let mut created = vec![];
    for id in ids {
        created.push(expect_conversation(m.wait_reply(id).await).id);
    }

    let mut a = Client::login(&url, alice, "phone").await;
    let (mut seen, mut pages, mut before) = (vec![], 0, 0);
    loop {
        let page = match a.request(list(before)).await {
            reply::Result::Conversations(l) => l,
            other => panic!("{other:?}"),
        };
        pages += 1;
        assert!(!page.conversations.is_empty());
        seen.extend(page.conversations.iter().map(|c| c.id));
        if !page.has_more {
            break;
        }
        before = page.next_before_id;
    }
    created.reverse();
    assert_eq!(seen, created, "every group once, newest first");
    assert!(pages >= 2, "{pages} pages");
}

/// Alice blocks Mallory: Mallory can no longer open a 1:1 conversation with her, send in the one
/// they had, add her to a group (new or existing), or see her presence. Others are unaffected,
/// and unblocking restores it.
#[tokio::test]
async fn a_blocked_user_cannot_write_add_or_watch() {
    let server = TestServer::with_users(&["alice", "mallory", "bob"]).await;
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    let mut mallory = Client::login_live(&url, "mallory", "phone").await;
    let dm = mallory.direct("alice").await;
    let group = mallory.group("g", &["bob"]).await;
    mallory.send_text(dm.id, "m1", "hi").await;

    let block = |user: &str| Request::Block(v1::Block { user: user.into() });
    assert!(matches!(alice.request(block("mallory")).await, reply::Result::Ok(_)));
    assert!(matches!(alice.request(block("mallory")).await, reply::Result::Ok(_)), "idempotent");
    assert_eq!(alice.refused(block("alice")).await.code(), ErrorCode::InvalidArgument);
    assert_eq!(alice.refused(block("nobody")).await.code(), ErrorCode::NotFound);
    assert_eq!(alice.refused(block("Bad\nName")).await.code(), ErrorCode::InvalidArgument);

    let forbidden = [
        Request::CreateDirect(v1::CreateDirect { peer: "alice".into() }),
        send_text(dm.id, "m2", "still there?"),
        Request::CreateGroup(v1::CreateGroup { title: "trap".into(), members: vec!["bob".into(), "alice".into()] }),
        Request::AddMembers(v1::AddMembers { conversation_id: group.id, members: vec!["alice".into()] }),
    ];
    for request in forbidden {
        assert_eq!(mallory.refused(request.clone()).await.code(), ErrorCode::Forbidden, "{request:?}");
    }
    // Nothing of it reached Alice.
    alice.assert_quiet().await;
    // Bob is not affected: he and Alice talk, and he sees her presence; Mallory does not.
    let mut bob = Client::login(&url, "bob", "phone").await;
    let bob_dm = bob.direct("alice").await;
    bob.send_text(bob_dm.id, "b1", "hello").await;
    alice.send_text(bob_dm.id, "a1", "hello bob").await;
    let away = v1::SetPresence { state: v1::PresenceState::Away as i32, status: "out".into() };
    assert!(matches!(alice.request(Request::SetPresence(away)).await, reply::Result::Ok(_)));
    loop {
        if let Some(v1::ephemeral::Kind::Presence(p)) = bob.next_ephemeral().await.kind {
            if p.user == "alice" {
                assert_eq!(p.status, "out");
                break;
            }
        }
    }
    mallory.ping().await;
    assert!(
        !mallory.ephemeral.iter().any(|e| matches!(&e.kind, Some(v1::ephemeral::Kind::Presence(p)) if p.user == "alice")),
        "{:?}",
        mallory.ephemeral
    );

    assert!(matches!(alice.request(Request::Unblock(v1::Unblock { user: "mallory".into() })).await, reply::Result::Ok(_)));
    mallory.send_text(dm.id, "m3", "sorry").await;
    expect_conversation(mallory.request(Request::AddMembers(v1::AddMembers { conversation_id: group.id, members: vec!["alice".into()] })).await);
}

fn presence_of<'a>(c: &'a Client, user: &str) -> Vec<&'a v1::PresenceEvent> {
    c.ephemeral
        .iter()
        .filter_map(|e| match &e.kind {
            Some(v1::ephemeral::Kind::Presence(p)) if p.user == user => Some(p),
            _ => None,
        })
        .collect()
}

/// Mallory opens a 1:1 conversation with Alice and adds her to a group: Alice's presence (coming
/// online, going away) is not shown to Mallory until Alice writes to her. Mallory's own presence
/// reaches Alice from the start: opening the conversation was Mallory's consent.
#[tokio::test]
async fn opening_a_conversation_with_someone_does_not_show_their_presence() {
    let server = TestServer::with_users(&["alice", "mallory", "bob"]).await;
    let url = server.url();
    let mut mallory = Client::login_live(&url, "mallory", "phone").await;
    let dm = mallory.direct("alice").await;
    mallory.group("watch", &["alice", "bob"]).await;

    let mut alice = Client::login_live(&url, "alice", "phone").await;
    let away = |status: &str| Request::SetPresence(v1::SetPresence { state: v1::PresenceState::Away as i32, status: status.into() });
    assert!(matches!(alice.request(away("busy")).await, reply::Result::Ok(_)));
    mallory.ping().await;
    assert!(presence_of(&mallory, "alice").is_empty(), "{:?}", mallory.ephemeral);

    assert!(matches!(mallory.request(away("lurking")).await, reply::Result::Ok(_)));
    alice.ping().await;
    assert_eq!(presence_of(&alice, "mallory").iter().map(|p| p.status.as_str()).collect::<Vec<_>>(), ["lurking"]);

    // Alice writes back: now Mallory sees her presence.
    alice.send_text(dm.id, "a1", "who are you?").await;
    assert!(matches!(alice.request(away("at lunch")).await, reply::Result::Ok(_)));
    mallory.ping().await;
    assert_eq!(presence_of(&mallory, "alice").iter().map(|p| p.status.as_str()).collect::<Vec<_>>(), ["at lunch"]);
}
