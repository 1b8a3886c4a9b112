//! Scale-out: the SDK on a two-node ejabberd cluster (`EjabberdCluster`: two Erlang nodes on
//! loopback joined with `join_cluster`), each client given both endpoints
//! (`XmppConfig::with_fallbacks`). A node is killed (SIGKILL) mid-conversation, then the other:
//! clients fail over to the node that is up, and every message arrives once, in order.

mod common;

use std::time::Instant;

use common::xmpp::with_transport;
use common::{PASSWORD, WAIT, all_texts, wait_present};
use missive::Client;
use missive::transport::xmpp::{XmppConfig, XmppTransport};
use missive_testkit::xmpp::{DOMAIN, EjabberdCluster};

async fn client(urls: &[String], transport: &XmppTransport, name: &str, register: bool) -> Client {
    let c = Client::open(with_transport(transport.clone()).device_id("phone")).await.unwrap();
    if register {
        c.register(name, PASSWORD).await.unwrap_or_else(|e| panic!("{name} on {urls:?}: {e:?}"));
    }
    c
}

#[tokio::test]
async fn clients_fail_over_between_cluster_nodes_without_loss_duplicates_or_reordering() {
    let started = Instant::now();
    let mut cluster = EjabberdCluster::start();
    eprintln!("cluster started in {:?}", started.elapsed());
    let urls = cluster.urls();
    // Both start on node 0 (the first endpoint); node 1 is their fallback.
    let transports: Vec<XmppTransport> =
        (0..2).map(|_| XmppTransport::new(XmppConfig::new(&urls[0], DOMAIN).with_fallbacks([urls[1].clone()]))).collect();
    let alice = client(&urls, &transports[0], "alice", true).await;
    let bob = client(&urls, &transports[1], "bob", true).await;
    let mut bob_events = bob.subscribe();
    let mut alice_events = alice.subscribe();
    let dm = alice.create_direct("bob").await.unwrap();
    let alice_jid = format!("alice@{DOMAIN}");
    let mut expected = Vec::new();
    let mut last_from_alice = None;
    for round in 0..3 {
        for i in 0..20 {
            let text = format!("a{round}-{i}");
            last_from_alice = Some(alice.send_text(&dm.id, &text).await.unwrap().id);
            expected.push(text);
            if i == 9 {
                // Round 0: node 0 dies under both clients; round 1: it is back, and node 1 dies
                // (the clients, now on node 1, go back to node 0); round 2: all up again.
                match round {
                    0 => cluster.kill(0),
                    1 => {
                        cluster.start_again(0);
                        cluster.kill(1);
                    }
                    _ => cluster.start_again(1),
                }
            }
        }
        // Bob answers once he has alice's round: the conversation's order is then known.
        wait_present(&bob, &mut bob_events, last_from_alice.as_ref().unwrap()).await;
        let text = format!("b{round}");
        let answer = bob.send_text(&alice_jid, &text).await.unwrap();
        expected.push(text);
        wait_present(&alice, &mut alice_events, &answer.id).await;
    }
    assert!(alice.flush(WAIT).await.unwrap() && bob.flush(WAIT).await.unwrap(), "both outboxes drain");
    assert!(alice.wait_caught_up(WAIT).await && bob.wait_caught_up(WAIT).await);
    assert_eq!(all_texts(&alice, &dm.id).await, expected, "alice: every message once, in order");
    assert_eq!(all_texts(&bob, &alice_jid).await, expected, "bob: every message once, in order");
    for (name, t) in ["alice", "bob"].iter().zip(&transports) {
        let stats = t.stats();
        eprintln!("{name}: {stats:?}");
        assert!(stats.streams >= 3, "{name} connected again after each node died: {stats:?}");
    }
}
