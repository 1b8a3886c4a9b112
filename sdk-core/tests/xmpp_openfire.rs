//! What Openfire (5.1 with its Monitoring plugin, XEP-0313) does differently from Prosody and
//! ejabberd, each case a finding of issue 16: it archives after routing, in batches, so a live
//! message is often not in the archive yet when the cue to read it arrives (finding 6); it
//! archives only messages with a body, so invitations, receipts and markers reach a client live
//! or from offline storage only (finding 7). The scenario suite runs on Openfire too
//! (`openfire::` in xmpp.rs and xmpp_interop.rs); these are the cases it does not cover.
//!
//! Needs `OPENFIRE_HOME` (`cargo xtask test` prepares it, or reports these as NOT RUN).

mod common;

mod openfire {
    use super::common::xmpp::{jid, open, registered, with_transport};
    use super::common::{PASSWORD, WAIT, eventually, wait_present, wait_state};
    use missive::transport::xmpp::{XmppConfig, XmppTransport};
    use missive::{Client, MessageState};
    use missive_testkit::interop::ThirdPartyPeer;
    use missive_testkit::xmpp::{DOMAIN, ServerKind, XmppServer};

    /// Finding 6: single messages from a third-party client, each with nothing after it to
    /// cue another read, are all shown (and each at once, not at the next event): the archive
    /// is read again until it has them.
    #[tokio::test]
    async fn live_messages_show_although_the_archive_lags() {
        let server = XmppServer::start(ServerKind::Openfire);
        let url = server.url();
        let transport = XmppTransport::new(XmppConfig::new(&url, DOMAIN));
        let alice = Client::open(with_transport(transport.clone()).device_id("phone")).await.unwrap();
        alice.register("alice", PASSWORD).await.unwrap();
        assert!(alice.wait_caught_up(WAIT).await);
        let mut carol = ThirdPartyPeer::start_with(&url, DOMAIN, "carol", "carol-password", true, Some("PLAIN"), &[]).await;
        for i in 0..5 {
            let body = format!("lonely {i}");
            carol.send_raw(&format!("<message xmlns='jabber:client' to='{}' type='chat' id='l{i}'><body>{body}</body></message>", jid("alice"))).await;
            eventually(&format!("alice shows {body:?}"), || async {
                match alice.messages(&jid("carol"), None, 10).await {
                    Ok(page) => page.messages.iter().any(|m| m.body == missive::Body::Text(body.clone())),
                    Err(_) => false, // the conversation is not there yet
                }
            })
            .await;
        }
        let stats = transport.stats();
        eprintln!("archive lag: {stats:?}");
        assert!(stats.archive_lag_re_reads > 0, "Openfire's archive lagged at least once in five: {stats:?}");
        assert_eq!(stats.archive_lag_given_up, 0, "{stats:?}");
        carol.quit().await;
    }

    /// Finding 7: a member offline when invited learns of the group from the invitation
    /// Openfire stores offline (it is never archived), with the group's title (Openfire drops
    /// the invitation's reason: the room's name is asked for); and a read marker sent while
    /// the sender was offline (not archived either) still turns its message Read.
    #[tokio::test]
    async fn invitations_and_markers_that_are_never_archived() {
        let server = XmppServer::start(ServerKind::Openfire);
        let url = server.url();
        let dir = tempfile::tempdir().unwrap();
        let bob_store = dir.path().join("bob.db");
        let bob = registered(&url, "bob", Some(&bob_store)).await;
        bob.shutdown().await;
        drop(bob);
        let alice_store = dir.path().join("alice.db");
        let alice = registered(&url, "alice", Some(&alice_store)).await;
        let group = alice.create_group("Openfire trip", &["bob"]).await.unwrap();
        let hello = alice.send_text(&group.id, "hello group").await.unwrap();
        let dm = alice.create_direct("bob").await.unwrap();
        let direct = alice.send_text(&dm.id, "read me").await.unwrap();
        assert!(alice.flush(WAIT).await.unwrap());
        let bob = open(&url, Some(&bob_store), "phone").await;
        let mut bob_events = bob.subscribe();
        wait_present(&bob, &mut bob_events, &hello.id).await;
        let g = bob.conversation(&group.id).await.unwrap().expect("bob has the group");
        assert!(g.active);
        assert_eq!(g.title, "Openfire trip");
        wait_present(&bob, &mut bob_events, &direct.id).await;
        // Alice goes offline; bob reads; alice comes back.
        alice.shutdown().await;
        drop(alice);
        bob.mark_read(&jid("alice")).await.unwrap();
        assert!(bob.flush(WAIT).await.unwrap());
        let alice = open(&url, Some(&alice_store), "phone").await;
        let mut alice_events = alice.subscribe();
        assert!(alice.wait_caught_up(WAIT).await);
        wait_state(&alice, &mut alice_events, &direct.id, MessageState::Read).await;
    }
}
