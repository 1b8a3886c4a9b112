//! Openfire with its Monitoring plugin as a throwaway server: accounts, 1:1 and room messages
//! and their archives (XEP-0313), stream resumption, restarts, instances side by side.
//!
//! These need `OPENFIRE_HOME` (an unpacked Openfire home with the Monitoring plugin; `.ci/run`
//! sets it): without it each fails with "NOT RUN: OPENFIRE_HOME is not set" and how to set it,
//! never passes.

/// In a module of its own: `cargo xtask test` skips `openfire::` when no Openfire is there.
mod openfire {
    use std::time::{Duration, Instant};

    use missive_testkit::xmpp::raw::{RawClient, attr};
    use missive_testkit::xmpp::{MUC_DOMAIN, Openfire, XmppServer};

    /// The Monitoring plugin archives in batches after routing: a message shows up in the archive
    /// up to about a second later.
    fn archived(client: &mut RawClient, archive: Option<&str>, body: &str) -> (Vec<String>, Duration) {
        let started = Instant::now();
        loop {
            let entries = client.mam(archive);
            if entries.iter().any(|e| e.contains(body)) {
                return (entries, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{body:?} not in the archive of {archive:?} after 30 s: {entries:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start() -> XmppServer {
        let started = Instant::now();
        let server = Openfire::start();
        eprintln!("Openfire started in {:?} at {}", started.elapsed(), server.url());
        server
    }

    #[test]
    fn accounts_chat_rooms_and_archives() {
        let mut server = start();
        let url = server.url();

        let probe = RawClient::connect(&url).expect("connect");
        let mechanisms = probe.mechanisms();
        eprintln!("SASL mechanisms over ws://: {mechanisms:?}");
        assert!(mechanisms.iter().any(|m| m == "PLAIN"), "PLAIN over loopback ws: {mechanisms:?}");
        assert!(probe.features.contains("iq-register"), "in-band registration advertised: {}", probe.features);
        probe.close();

        let mut alice = RawClient::login(&url, "alice", "alice-pw", true);
        eprintln!("features after authentication: {}", alice.features);
        assert!(alice.features.contains("urn:xmpp:sm:3"), "stream management: {}", alice.features);
        let mut bob = RawClient::login(&url, "bob", "bob-pw", true);
        let disco = alice.iq("get", Some("localhost"), "<query xmlns='http://jabber.org/protocol/disco#info'/>");
        for feature in ["urn:xmpp:carbons:2", "urn:xmpp:mam:2"] {
            assert!(disco.contains(feature), "{feature} on the server or account: {disco}");
        }
        let account = alice.iq("get", Some("alice@localhost"), "<query xmlns='http://jabber.org/protocol/disco#info'/>");
        assert!(account.contains("urn:xmpp:mam:2"), "MAM on the account: {account}");

        // 1:1: delivered live, then in the recipient's archive (and the sender's).
        alice.message("bob@localhost", "chat", "hello bob");
        let live = bob.wait(Duration::from_secs(30), "alice's message", |e| e.starts_with("<message") && e.contains("hello bob"));
        assert_eq!(attr(&live, "from").as_deref(), Some(alice.jid.as_str()));
        eprintln!("1:1 message as received: {live}");
        let (entries, delay) = archived(&mut bob, None, "hello bob");
        eprintln!("1:1 message archived after {delay:?}; archive entry: {}", entries.last().expect("an entry"));
        let entry = entries.iter().find(|e| e.contains("hello bob")).expect("the entry");
        assert!(entry.contains("<result") && entry.contains("<delay"), "a MAM result with its stamp: {entry}");
        let (_, delay) = archived(&mut alice, None, "hello bob");
        eprintln!("...and in the sender's archive after {delay:?}");

        // A room: created by joining, configured members-only and persistent.
        let room = format!("g1@{MUC_DOMAIN}");
        alice.send(&format!("<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
        let joined = alice.wait(Duration::from_secs(30), "the room's self-presence", |e| e.starts_with("<presence") && e.contains("status code") && e.contains("110"));
        assert!(joined.contains("201"), "a new room (status 201): {joined}");
        let form = alice.iq("get", Some(&room), "<query xmlns='http://jabber.org/protocol/muc#owner'/>");
        for field in ["muc#roomconfig_membersonly", "muc#roomconfig_persistentroom"] {
            assert!(form.contains(field), "{field} in the configuration form: {form}");
        }
        eprintln!("room configuration form: {form}");
        let submit = alice.iq(
            "set",
            Some(&room),
            "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_membersonly'><value>1</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             </x></query>",
        );
        assert_eq!(attr(&submit, "type").as_deref(), Some("result"), "configuration accepted: {submit}");
        let info = alice.iq("get", Some(&room), "<query xmlns='http://jabber.org/protocol/disco#info'/>");
        for feature in ["muc_membersonly", "muc_persistent", "urn:xmpp:mam:2"] {
            assert!(info.contains(feature), "{feature} on the room: {info}");
        }

        // Members only: bob is refused until he is a member.
        bob.send(&format!("<presence to='{room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
        let refused = bob.wait(Duration::from_secs(30), "a refusal", |e| e.starts_with("<presence") && attr(e, "type").as_deref() == Some("error"));
        assert!(refused.contains("registration-required"), "a non-member is refused: {refused}");
        let member = alice.iq("set", Some(&room), "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='bob@localhost'/></query>");
        assert_eq!(attr(&member, "type").as_deref(), Some("result"), "bob made a member: {member}");
        bob.send(&format!("<presence to='{room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
        bob.wait(Duration::from_secs(30), "bob in the room", |e| e.starts_with("<presence") && e.contains("110"));

        alice.message(&room, "groupchat", "hello room");
        let live = bob.wait(Duration::from_secs(30), "the room message", |e| e.starts_with("<message") && e.contains("hello room"));
        eprintln!("room message as received: {live}");
        let (entries, delay) = archived(&mut bob, Some(&room), "hello room");
        eprintln!("room message archived after {delay:?}; archive entry: {}", entries.last().expect("an entry"));

        // A restart keeps accounts, archives and the room.
        alice.close();
        bob.close();
        let started = Instant::now();
        server.restart();
        eprintln!("Openfire restarted (stop and start) in {:?}", started.elapsed());
        // SCRAM-SHA-1 (Openfire's strongest SCRAM: no SCRAM-SHA-256) for an account registered in-band.
        let mut bob = RawClient::connect(&url).expect("connect");
        bob.authenticate_scram_sha1("bob", "bob-pw").expect("bob logs in with SCRAM-SHA-1");
        bob.bind("scram").expect("bind");
        let (_, _) = archived(&mut bob, None, "hello bob");
        let (_, _) = archived(&mut bob, Some(&room), "hello room");
        let info = bob.iq("get", Some(&room), "<query xmlns='http://jabber.org/protocol/disco#info'/>");
        assert!(info.contains("muc_membersonly") && info.contains("muc_persistent"), "the room after a restart: {info}");
        bob.close();

        // Killed and started again: still there.
        server.kill();
        let started = Instant::now();
        server.start_again();
        eprintln!("Openfire started again after SIGKILL in {:?}", started.elapsed());
        let mut bob = RawClient::login(&url, "bob", "bob-pw", false);
        let (_, _) = archived(&mut bob, None, "hello bob");
        bob.close();
    }

    #[test]
    fn stream_management_resumes_a_dropped_session() {
        let server = start();
        let url = server.url();
        let mut carol = RawClient::login(&url, "carol", "carol-pw", true);
        let mut dave = RawClient::login(&url, "dave", "dave-pw", true);
        carol.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
        let enabled = carol.wait(Duration::from_secs(30), "<enabled/>", |e| e.starts_with("<enabled"));
        eprintln!("SM enabled: {enabled}");
        let previd = attr(&enabled, "id").expect("a resumption id");
        carol.drop_connection();
        // Sent while carol is away: held for her session.
        dave.message("carol@localhost", "chat", "while you were away");
        std::thread::sleep(Duration::from_millis(300));
        let mut again = RawClient::connect(&url).expect("connect");
        again.authenticate("carol", "carol-pw").expect("authenticate");
        again.send(&format!("<resume xmlns='urn:xmpp:sm:3' h='0' previd='{previd}'/>"));
        let answer = again.wait(Duration::from_secs(30), "<resumed/> or <failed/>", |e| e.starts_with("<resumed") || e.starts_with("<failed"));
        eprintln!("resumption: {answer}");
        assert!(answer.starts_with("<resumed"), "the session resumes: {answer}");
        again.wait(Duration::from_secs(30), "the message sent while away", |e| e.starts_with("<message") && e.contains("while you were away"));
    }

    #[test]
    fn two_instances_run_side_by_side() {
        let (mut a, b) = std::thread::scope(|s| {
            let a = s.spawn(start);
            let b = s.spawn(start);
            (a.join().expect("first"), b.join().expect("second"))
        });
        assert_ne!(a.addr(), b.addr());
        // Separate databases: the same account name registers on both.
        let mut on_a = RawClient::login(&a.url(), "erin", "on-a", true);
        let mut on_b = RawClient::connect(&b.url()).expect("connect to the second");
        on_b.register("erin", "on-b").expect("erin is new on the second");
        on_b.authenticate("erin", "on-b").expect("erin logs in on the second");
        on_b.close();
        a.kill();
        let mut on_b = RawClient::login(&b.url(), "erin", "on-b", false);
        on_b.message("erin@localhost", "chat", "to myself");
        on_a = {
            drop(on_a);
            a.start_again();
            RawClient::login(&a.url(), "erin", "on-a", false)
        };
        on_a.close();
        on_b.close();
    }

}
