//! Prosody and ejabberd as throwaway servers, checked with the raw client: in-band registration,
//! a 1:1 message delivered live and archived (XEP-0313), restarts keeping accounts and archives.

use std::time::{Duration, Instant};

use missive_testkit::xmpp::raw::{RawClient, child_text};
use missive_testkit::xmpp::{ServerKind, XmppServer};

fn chat_and_archive(kind: ServerKind) {
    let started = Instant::now();
    let mut server = XmppServer::start(kind);
    eprintln!("{kind:?} started in {:?} at {}", started.elapsed(), server.url());
    let url = server.url();
    let mut alice = RawClient::login(&url, "alice", "alice-pw", true);
    let mut bob = RawClient::login(&url, "bob", "bob-pw", true);
    alice.message("bob@localhost", "chat", "hello bob");
    bob.wait(Duration::from_secs(30), "alice's message", |e| e.starts_with("<message") && e.contains("hello bob"));
    let bodies = |c: &mut RawClient| c.mam(None).iter().filter_map(|e| child_text(e, "body")).collect::<Vec<_>>();
    assert_eq!(bodies(&mut bob), ["hello bob"], "bob's archive");
    alice.close();
    bob.close();
    // ejabberd's mnesia writes its transaction log with a delay: a SIGKILL within about a
    // second of a write loses it (an account registered 0.5 s before was gone, 1 s before kept).
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    server.kill_and_restart();
    eprintln!("{kind:?} started again after SIGKILL in {:?}", started.elapsed());
    let mut bob = RawClient::connect(&url).expect("connect");
    eprintln!("{kind:?} offers {:?}", bob.mechanisms());
    // ejabberd here stores SCRAM-SHA-256 credentials and offers only that and PLAIN.
    if bob.mechanisms().iter().any(|m| m == "SCRAM-SHA-1") {
        bob.authenticate_scram_sha1("bob", "bob-pw").expect("bob logs in with SCRAM-SHA-1");
    } else {
        bob.authenticate("bob", "bob-pw").expect("bob logs in with PLAIN");
    }
    bob.bind("again").expect("bind");
    assert_eq!(bodies(&mut bob), ["hello bob"], "bob's archive after a restart");
    bob.close();
}

#[test]
fn prosody_registers_delivers_and_archives() {
    chat_and_archive(ServerKind::Prosody);
}

#[test]
fn ejabberd_registers_delivers_and_archives() {
    chat_and_archive(ServerKind::Ejabberd);
}
