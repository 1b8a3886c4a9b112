//! The XMPP transport against what third-party clients really send, on real servers (Prosody
//! and ejabberd): a peer built on `@xmpp/client` (`missive_testkit::interop`) writes raw
//! stanzas: messages without an id or reusing one, receipts asked for or not, markable or not,
//! and a room joined under a nickname of its own. Nothing may be lost, and the SDK must answer
//! as each XEP says, message by message.

mod common;

use std::collections::BTreeSet;

use common::xmpp::{jid, open, registered};
use common::{WAIT, all_texts, eventually, wait_for};
use missive::Event;
use missive_testkit::interop::ThirdPartyPeer;
use missive_testkit::xmpp::{DOMAIN, ServerKind, XmppServer};

async fn peer(url: &str, name: &str, options: &[&str]) -> ThirdPartyPeer {
    ThirdPartyPeer::start_with(url, DOMAIN, name, &format!("{name}-password"), true, Some("PLAIN"), options).await
}

/// `<message>` from the peer to `to`, with the given attributes and children.
fn raw(to: &str, attrs: &str, children: &str) -> String {
    format!("<message xmlns='jabber:client' to='{to}' type='chat' {attrs}>{children}</message>")
}

/// Finding 1: messages without an `id` (optional, RFC 6120 §8.1.3), or reusing one, are each
/// stored once: live, and again on a new device that syncs the archive (no second copy, none
/// dropped).
async fn messages_without_ids_or_reusing_one_are_all_kept(kind: ServerKind) {
    let server = XmppServer::start(kind);
    let url = server.url();
    let alice = registered(&url, "alice", None).await;
    let mut carol = peer(&url, "carol", &[]).await;
    let alice_jid = jid("alice");
    for (i, attrs) in ["", "", "id='1'", "", "id='1'"].into_iter().enumerate() {
        carol.send_raw(&raw(&alice_jid, attrs, &format!("<body>n{i}</body>"))).await;
    }
    let expected: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    eventually("alice has the five messages", || async {
        alice.conversation(&jid("carol")).await.unwrap().is_some() && all_texts(&alice, &jid("carol")).await == expected
    })
    .await;
    // Nothing shows twice after more traffic and a second device's full sync.
    carol.send_raw(&raw(&alice_jid, "id='1'", "<body>n5</body>")).await;
    let mut expected = expected;
    expected.push("n5".into());
    eventually("alice has the sixth", || async { all_texts(&alice, &jid("carol")).await == expected }).await;
    let tablet = open(&url, None, "tablet").await;
    tablet.login("alice", common::PASSWORD).await.unwrap();
    assert!(tablet.wait_caught_up(WAIT).await);
    assert_eq!(all_texts(&tablet, &jid("carol")).await, expected);
    assert_eq!(all_texts(&alice, &jid("carol")).await, expected);
    carol.quit().await;
}

/// Finding 2: XEP-0184 receipts are per message: every message that asked for one gets its own
/// (50 sent back to back, arriving together), none goes to a message that did not ask, and a
/// XEP-0333 marker names only a markable message.
async fn receipts_and_markers_follow_each_senders_request(kind: ServerKind) {
    let server = XmppServer::start(kind);
    let url = server.url();
    let alice = registered(&url, "alice", None).await;
    let mut carol = peer(&url, "carol", &["--no-receipts"]).await;
    let alice_jid = jid("alice");
    let asked: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    for id in &asked {
        let children = "<body>please confirm</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>";
        carol.send_raw(&raw(&alice_jid, &format!("id='{id}'"), children)).await;
    }
    carol.send_raw(&raw(&alice_jid, "id='quiet'", "<body>no receipt asked, not markable</body>")).await;
    carol.send_raw(&raw(&alice_jid, "id='last'", "<body>last</body><request xmlns='urn:xmpp:receipts'/>")).await;
    let mut receipts = BTreeSet::new();
    while !receipts.contains("last") {
        let event = carol.next_event("receipt", WAIT).await;
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        assert_ne!(id, "quiet", "a receipt for a message that asked for none");
        assert!(receipts.insert(id.clone()), "a second receipt for {id}");
    }
    receipts.remove("last");
    let asked: BTreeSet<String> = asked.into_iter().collect();
    let missing: Vec<_> = asked.difference(&receipts).collect();
    let unasked: Vec<_> = receipts.difference(&asked).collect();
    assert!(missing.is_empty() && unasked.is_empty(), "one receipt per message that asked: missing {missing:?}, not asked {unasked:?}");
    // Read: the marker names the newest markable message, not the newer ones that are not.
    alice.mark_read(&jid("carol")).await.unwrap();
    let marker = carol.next_event("marker", WAIT).await;
    assert_eq!((marker["kind"].as_str(), marker["id"].as_str()), (Some("displayed"), Some("r49")), "{marker}");
    carol.quit().await;
}

/// Finding 3: in a non-anonymous group, a third-party member under a nickname of its own is
/// shown by its real JID, as the room reveals it.
async fn group_senders_are_shown_by_their_real_jids(kind: ServerKind) {
    let server = XmppServer::start(kind);
    let url = server.url();
    let alice = registered(&url, "alice", None).await;
    let mut carol = peer(&url, "carol", &[]).await;
    let mut events = alice.subscribe();
    let group = alice.create_group("Trip", &["carol"]).await.unwrap();
    let room = group.id.clone();
    carol
        .send_raw(&format!(
            "<presence xmlns='jabber:client' to='{room}/Caro'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
        ))
        .await;
    // Joined once the room sends carol's own presence back (status 110).
    loop {
        let presence = carol.next_event("presence", WAIT).await;
        let own = presence["codes"].as_array().is_some_and(|c| c.iter().any(|c| c == "110"));
        if own && presence["from"].as_str().is_some_and(|f| f.starts_with(&room)) {
            break;
        }
    }
    carol.send_raw(&format!("<message xmlns='jabber:client' to='{room}' type='groupchat' id='g1'><body>hi from Caro</body></message>")).await;
    let got = wait_for(&mut events, "carol's group message", |e| matches!(e, Event::MessageAdded(m) if m.conversation_id == room)).await;
    let Event::MessageAdded(got) = got else { unreachable!() };
    assert_eq!(got.body.preview(), "hi from Caro");
    assert_eq!(got.sender, jid("carol"), "the real JID, not the nickname Caro");
    carol.quit().await;
}

crate::against_each!(
    messages_without_ids_or_reusing_one_are_all_kept,
    receipts_and_markers_follow_each_senders_request,
    group_senders_are_shown_by_their_real_jids,
);
