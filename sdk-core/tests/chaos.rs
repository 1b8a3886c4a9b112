//! No loss, no duplicate, order kept, while a seeded fault-injecting TCP proxy between the
//! clients and the server cuts connections at random points (mid-frame included) and slices
//! traffic into small chunks. Three clients send 2,000 messages at once over 1:1 and group
//! conversations. Set MISSIVE_CHAOS_SEED to replay a run.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use missive::{Client, MessageState};
use missive_testkit::{FaultConfig, FaultProxy};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const TOTAL: usize = 2_000;

async fn all_messages(client: &Client, conversation: &str) -> Vec<missive::Message> {
    let mut out = vec![];
    let mut before = None;
    loop {
        let page = client.messages(conversation, before, 500).await.expect("page");
        out.extend(page.messages.iter().cloned());
        if !page.has_more {
            break;
        }
        before = page.next_before_seq;
    }
    out.reverse();
    out
}

/// How many messages of a conversation the client's store holds (no server request).
async fn cached_count(client: &Client, conversation: &str) -> usize {
    let (mut count, mut before) = (0, None);
    loop {
        let page = client.cached_messages(conversation, before, 500).await.expect("cached page");
        count += page.messages.len();
        if !page.has_more || page.messages.is_empty() {
            return count;
        }
        before = page.next_before_seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_no_duplicate_order_kept_under_random_cuts() {
    let seed: u64 = std::env::var("MISSIVE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261127);
    println!("chaos seed {seed} (MISSIVE_CHAOS_SEED={seed} replays it)");
    let server = TestServer::start().await;
    let url = server.url();
    // Accounts and conversations are set up directly; all traffic afterwards goes through the proxy.
    let direct: Vec<Client> = futures_util::future::join_all(USERS.iter().map(|u| registered(&url, u))).await;
    let ab = direct[0].create_direct("bob").await.unwrap().id;
    let bc = direct[1].create_direct("carol").await.unwrap().id;
    let group = direct[0].create_group("all", &["bob", "carol"]).await.unwrap().id;
    for c in &direct {
        c.shutdown().await;
    }
    let proxy = FaultProxy::start(
        server.addr(),
        FaultConfig { seed, cut_after_bytes: Some(3_000..60_000), latency: Duration::ZERO..Duration::from_micros(300), max_chunk: Some(700) },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut clients = vec![];
    for u in USERS {
        clients.push(logged_in(&proxy.url(), u, "chaos", Some(&temp_store(&dir, u))).await);
    }
    // Each client first learns its conversations by syncing (through the proxy, cuts included).
    for (i, client) in clients.iter().enumerate() {
        for conv in [&ab, &bc, &group] {
            let member = match i { 0 => conv != &bc, 1 => true, _ => conv != &ab };
            while member && client.conversation(conv).await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Who sends where: alice -> ab, group; bob -> ab, bc, group; carol -> bc, group.
    let routes: [&[&String]; 3] = [&[&ab, &group], &[&ab, &bc, &group], &[&bc, &group]];
    let per_user = TOTAL / USERS.len() + 1;
    let started = Instant::now();
    let mut senders = vec![];
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let targets: Vec<String> = routes[i].iter().map(|s| s.to_string()).collect();
        let name = USERS[i];
        senders.push(tokio::spawn(async move {
            for n in 0..per_user {
                let conv = &targets[n % targets.len()];
                client.send_text(conv, &format!("{name}-{n:04}")).await.expect("send commits locally");
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let sent = per_user * USERS.len();
    // Wait until every outbox is empty and every member holds every message.
    let members: HashMap<&String, Vec<usize>> = [(&ab, vec![0, 1]), (&bc, vec![1, 2]), (&group, vec![0, 1, 2])].into_iter().collect();
    let expected_in = |conv: &String| -> usize {
        (0..USERS.len()).map(|u| (0..per_user).filter(|n| routes[u].get(n % routes[u].len()) == Some(&conv)).count()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let mut done = true;
        for c in &clients {
            done &= c.unsent_count().await.unwrap() == 0;
        }
        for (conv, who) in &members {
            for &u in who {
                // The newest message alone is not enough: a client's own acknowledged sends can
                // be its newest while it still catches up on the others' (seen with the server's
                // reads off the writer thread): every message must be in its store.
                done &= clients[u].conversation(conv).await.unwrap().and_then(|c| c.last_message).and_then(|m| m.seq) == Some(expected_in(conv) as u64)
                    && cached_count(&clients[u], conv).await >= expected_in(conv);
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not converged after 150 s; proxy stats {:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    // Check message by message, in every member's store.
    let (mut delivered, mut lost, mut duplicated, mut misordered, mut wrong_state) = (0usize, 0usize, 0usize, 0usize, 0usize);
    for (conv, who) in &members {
        let expected = expected_in(conv);
        for &u in who {
            let messages = all_messages(&clients[u], conv).await;
            let mut seen: HashMap<String, usize> = HashMap::new();
            for m in &messages {
                *seen.entry(m.body.preview()).or_default() += 1;
                let ok = if m.outgoing { matches!(m.state, MessageState::Sent | MessageState::Delivered | MessageState::Read) } else { m.state == MessageState::Delivered };
                wrong_state += usize::from(!ok);
            }
            duplicated += seen.values().filter(|&&n| n > 1).map(|n| n - 1).sum::<usize>();
            lost += expected.saturating_sub(seen.len());
            delivered += seen.len();
            // Each sender's messages appear in the order they were sent, under increasing seqs.
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq.expect("acknowledged")).collect();
            misordered += seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
            for sender in USERS {
                let texts: Vec<String> = messages.iter().filter(|m| m.sender == sender).map(|m| m.body.preview()).collect();
                let mut sorted = texts.clone();
                sorted.sort();
                misordered += usize::from(texts != sorted);
            }
        }
    }
    let stats = proxy.stats();
    println!(
        "chaos: sent {sent}, stored copies {delivered}, lost {lost}, duplicated {duplicated}, misordered {misordered}, wrong state {wrong_state}; \
         proxy connections {} cuts {}; {:.1} s",
        stats.connections,
        stats.cuts,
        elapsed.as_secs_f64()
    );
    assert!(stats.cuts >= 5, "the proxy must actually cut connections ({stats:?})");
    assert_eq!((lost, duplicated, misordered, wrong_state), (0, 0, 0, 0));
}
