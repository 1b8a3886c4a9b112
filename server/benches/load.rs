//! Server load benchmark (not a test): prints figures, never asserts on time.
//!
//! 1. Baseline: raw tokio-tungstenite pipelined echo of 100-byte binary frames, in this run.
//! 2. Messages per second for N concurrent clients sending text messages with acknowledgements
//!    through the reference server (the release binary, a separate process), window 256 each.
//! 3. The server's resident memory with 10,000 idle authenticated connections.
//!
//! Run: `cargo bench -p missive-server --bench load`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{StreamExt, stream};
use missive_proto::v1::{self, client_frame::Request, reply};

const PAYLOAD: usize = 100;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One client sends `count` messages to `conversation` with up to `window` unacknowledged.
async fn send_burst(client: &mut Client, conversation: u64, count: usize, window: usize, tag: &str) {
    let text = "x".repeat(PAYLOAD);
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0;
    while sent < count || !pending.is_empty() {
        while sent < count && pending.len() < window {
            pending.push_back(client.send(send_text(conversation, &format!("{tag}-{sent}"), &text)).await);
            sent += 1;
        }
        assert!(client.pump().await, "connection lost");
        while let Some(&id) = pending.front() {
            match client.take_reply(id) {
                Some(reply::Result::Ack(_)) => {
                    pending.pop_front();
                }
                Some(other) => panic!("send refused: {other:?}"),
                None => break,
            }
        }
        client.events.clear();
    }
}

#[tokio::main]
async fn main() {
    let raw = missive_testkit::baseline::raw_ws_echo(400_000, PAYLOAD).await;
    println!("raw_ws_echo: {raw:.0} frames/s ({PAYLOAD}-byte frames, pipelined, one connection)");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_missive-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .args(["--rate", "10000000"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("server binary");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let max_clients = 16;
    for i in 0..=max_clients {
        Client::register(&url, &format!("u{i}")).await;
    }
    for clients in [1usize, 4, 16] {
        let total = 40_000;
        let per_client = total / clients;
        let mut set = Vec::new();
        for i in 0..clients {
            let mut c = Client::login(&url, &format!("u{i}"), &format!("bench{clients}")).await;
            let peer = format!("u{}", (i + 1) % (max_clients + 1));
            let conversation = c.direct(&peer).await.id;
            set.push((c, conversation));
        }
        let start = Instant::now();
        let tasks: Vec<_> = set
            .into_iter()
            .enumerate()
            .map(|(i, (mut c, conv))| tokio::spawn(async move { send_burst(&mut c, conv, per_client, 256, &format!("r{clients}-{i}")).await }))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rate = (per_client * clients) as f64 / start.elapsed().as_secs_f64();
        println!(
            "server_send_ack: {rate:.0} msg/s with {clients} concurrent clients ({:.3} of raw echo)",
            rate / raw
        );
    }

    // 10,000 idle authenticated connections (Hello + Resume with one token).
    let token = Client::login(&url, "u0", "idle").await.session.unwrap().token;
    let before = rss_kib(server.id());
    let start = Instant::now();
    let idle: Vec<Client> = stream::iter(0..10_000)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            async move {
                let mut c = Client::connect(&url).await;
                let r = c.request(Request::Resume(v1::Resume { token, device_id: format!("idle-{i}") })).await;
                expect_session(r);
                c
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(server.id());
    println!(
        "server_idle_rss: {:.1} MiB with {} idle authenticated connections ({:.1} MiB before; {:.1} KiB per connection; opened in {:.1} s)",
        after as f64 / 1024.0,
        idle.len(),
        before as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / idle.len() as f64,
        opened.as_secs_f64()
    );
    drop(idle);
    let _ = server.kill();
    let _ = server.wait();
}
