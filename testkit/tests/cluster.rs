//! A two-node ejabberd cluster on loopback ([`EjabberdCluster`]): one service on two WebSocket
//! endpoints; a node killed with SIGKILL leaves the other serving, and rejoins when started
//! again, with what was written meanwhile.

use std::time::{Duration, Instant};

use missive_testkit::xmpp::EjabberdCluster;
use missive_testkit::xmpp::raw::{RawClient, attr};

fn received(client: &mut RawClient, body: &str) -> String {
    client.wait(Duration::from_secs(30), body, |e| e.starts_with("<message") && e.contains(body))
}

/// Logs in (no registration) binding `resource`, so that a user can be on both nodes at once.
fn login_as(url: &str, user: &str, password: &str, resource: &str) -> RawClient {
    let mut c = RawClient::connect(url).unwrap_or_else(|e| panic!("{user} on {url}: {e}"));
    c.authenticate(user, password).unwrap_or_else(|e| panic!("{user} on {url}: {e}"));
    c.bind(resource).unwrap_or_else(|e| panic!("{user} on {url}: {e}"));
    c.send("<presence/>");
    c
}

/// The bodies in `client`'s own archive, oldest first.
fn archived_bodies(client: &mut RawClient) -> Vec<String> {
    client.mam(None).iter().filter_map(|e| missive_testkit::xmpp::raw::child_text(e, "body")).collect()
}

#[test]
fn a_node_killed_leaves_the_other_serving_and_rejoins() {
    let started = Instant::now();
    let mut cluster = EjabberdCluster::start();
    eprintln!("cluster of {} and {} started in {:?} at {:?}", cluster.node_name(0), cluster.node_name(1), started.elapsed(), cluster.urls());
    let [url1, url2] = [cluster.url(0), cluster.url(1)];
    assert_ne!(url1, url2);

    // alice on node 1, bob on node 2: accounts registered on either node exist on both.
    let mut alice = RawClient::login(&url1, "alice", "alice-pw", true);
    let mut bob = RawClient::login(&url2, "bob", "bob-pw", true);
    alice.message("bob@localhost", "chat", "one: across nodes");
    let live = received(&mut bob, "one: across nodes");
    assert_eq!(attr(&live, "from").as_deref(), Some(alice.jid.as_str()));
    bob.message("alice@localhost", "chat", "two: and back");
    received(&mut alice, "two: and back");

    // Node 1 killed: its clients lose their connection, node 2 keeps serving everyone.
    cluster.kill(0);
    let end = alice.try_wait(Duration::from_secs(10), |_| false).expect_err("nothing is expected");
    assert!(!end.starts_with("nothing within"), "alice's stream on node 1 ends at once: {end}");
    let mut alice = RawClient::login(&url2, "alice", "alice-pw", false);
    alice.message("bob@localhost", "chat", "three: node 1 is down");
    received(&mut bob, "three: node 1 is down");
    // Written while node 1 is down: a new account and archive entries.
    let mut carol = RawClient::login(&url2, "carol", "carol-pw", true);
    carol.message("bob@localhost", "chat", "four: from a new account");
    received(&mut bob, "four: from a new account");
    assert!(RawClient::connect(&url1).is_err(), "node 1 is down");

    // Node 1 started again: it rejoins, with what was written meanwhile, and serves again.
    let started = Instant::now();
    cluster.start_again(0);
    eprintln!("node 1 started again and rejoined in {:?}", started.elapsed());
    let mut carol_on_1 = login_as(&url1, "carol", "carol-pw", "on-1");
    carol.close();
    carol_on_1.message("bob@localhost", "chat", "five: node 1 is back");
    received(&mut bob, "five: node 1 is back");
    bob.message(&carol_on_1.jid.clone(), "chat", "six: to node 1");
    received(&mut carol_on_1, "six: to node 1");
    let mut bob_on_1 = login_as(&url1, "bob", "bob-pw", "on-1");
    let bodies = archived_bodies(&mut bob_on_1);
    let expected = ["one: across nodes", "two: and back", "three: node 1 is down", "four: from a new account", "five: node 1 is back", "six: to node 1"];
    assert_eq!(bodies, expected, "bob's archive read on node 1");
    assert_eq!(archived_bodies(&mut bob), expected, "bob's archive read on node 2");

    // And the other way round: node 2 killed, node 1 serves.
    cluster.kill(1);
    let mut alice = login_as(&url1, "alice", "alice-pw", "on-1");
    bob_on_1.message("alice@localhost", "chat", "seven: node 2 is down");
    received(&mut alice, "seven: node 2 is down");
    let started = Instant::now();
    cluster.start_again(1);
    eprintln!("node 2 started again and rejoined in {:?}", started.elapsed());
    let mut alice_on_2 = login_as(&url2, "alice", "alice-pw", "on-2");
    assert!(archived_bodies(&mut alice_on_2).iter().any(|b| b == "seven: node 2 is down"), "node 2 caught up");
    alice_on_2.close();
    alice.close();
    bob_on_1.close();
    carol_on_1.close();
}

#[test]
fn two_clusters_run_side_by_side() {
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(EjabberdCluster::start);
        let b = s.spawn(EjabberdCluster::start);
        (a.join().expect("first cluster"), b.join().expect("second cluster"))
    });
    eprintln!("two clusters started side by side in {:?}", started.elapsed());
    let mut urls = a.urls();
    urls.extend(b.urls());
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 4, "four distinct endpoints: {urls:?}");
    // Separate services: the same account name registers on each cluster.
    for cluster in [&a, &b] {
        let mut c = RawClient::connect(&cluster.url(1)).expect("connect");
        c.register("dave", "pw").expect("dave is new on this cluster");
        c.close();
    }
}
