//! Server load benchmark (not a test): prints figures, never asserts on time.
//!
//! 1. Baseline: raw tokio-tungstenite pipelined echo of 100-byte binary frames, in this run.
//! 2. Messages per second for N concurrent clients sending text messages with acknowledgements
//!    through the reference server (the release binary, a separate process), window 256 each.
//! 3. The server's resident memory with 10,000 idle authenticated connections.
//! 4. An honest user's send-to-ack latency (p50, p99, one message at a time) alone, then during
//!    a password-hash flood (32 connections from 32 addresses looping Register of a taken name and
//!    Login with a wrong password), then during a history flood (a client pipelining 1,000
//!    `History{limit: 500}` of a group of 500 x 16 KiB messages), with the server's memory.
//! 5. Send throughput with `synchronous=FULL` (the default) against `NORMAL`, and their ratio.
//!
//! Run: `cargo bench -p missive-server --bench load`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Send-to-ack times of `count` messages sent one at a time: (p50, p99) in milliseconds.
async fn honest_latency(client: &mut Client, conversation: u64, count: usize, tag: &str) -> (f64, f64) {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        client.send_text(conversation, &format!("{tag}-{i}"), "hello").await;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        client.events.clear();
        client.ephemeral.clear();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[count / 2], times[(count * 99 / 100).min(count - 1)])
}

/// Loops until `stop`: Register of a taken name and Login with a wrong password, from `from`,
/// reconnecting whenever the server closes the connection.
async fn hash_flooder(url: String, from: std::net::IpAddr, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = Client::try_raw_from(&url, from).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let hello = Request::Hello(v1::Hello { min_version: missive_proto::PROTOCOL_VERSION, max_version: missive_proto::PROTOCOL_VERSION, client: "flood".into() });
        if c.try_send(hello).await.is_none() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let request = if n % 2 == 0 {
                Request::Register(v1::Register { username: "u0".into(), password: PASSWORD.into(), device_id: String::new() })
            } else {
                Request::Login(v1::Login { username: "u0".into(), password: format!("wrong password {n}"), device_id: String::new() })
            };
            let Some(id) = c.try_send(request).await else { break };
            let mut open = true;
            while open && c.take_reply(id).is_none() {
                open = matches!(tokio::time::timeout(Duration::from_secs(5), c.pump_quiet()).await, Ok(true));
            }
            if !open {
                break;
            }
        }
    }
}

/// Loops until `stop`: pipelines `History{limit: 500}` of `group`, up to 1,000 unanswered.
async fn history_flooder(mut c: Client, group: u64, stop: Arc<AtomicBool>) {
    let mut pending = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        while pending.len() < 1_000 {
            let Some(id) = c.try_send(Request::History(v1::HistoryRequest { conversation_id: group, before_seq: 0, limit: 500 })).await else {
                return;
            };
            pending.push_back(id);
        }
        if !matches!(tokio::time::timeout(Duration::from_secs(5), c.pump_quiet()).await, Ok(true)) {
            return;
        }
        while let Some(&id) = pending.front() {
            if c.take_reply(id).is_none() {
                break;
            }
            pending.pop_front();
        }
        c.events.clear();
    }
}

fn start_server(dir: &std::path::Path, port: u16, synchronous: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_missive-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir)
        .args(["--rate", "10000000", "--synchronous", synchronous, "--max-connections-per-address", "20000"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("server binary")
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Messages per second for 16 concurrent clients, window 256, against a fresh server.
async fn send_rate(synchronous: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = start_server(dir.path(), port, synchronous);
    wait_listening(port).await;
    let clients = 16;
    let per_client = 2_500;
    let mut set = Vec::new();
    for i in 0..clients {
        let mut c = Client::register(&url, &format!("s{i}")).await;
        if i > 0 {
            let conversation = c.direct("s0").await.id;
            set.push((c, conversation));
        }
    }
    let start = Instant::now();
    let tasks: Vec<_> = set
        .into_iter()
        .enumerate()
        .map(|(i, (mut c, conv))| tokio::spawn(async move { send_burst(&mut c, conv, per_client, 256, &format!("d{i}")).await }))
        .collect();
    let n = tasks.len();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (per_client * n) as f64 / start.elapsed().as_secs_f64();
    let _ = server.kill();
    let _ = server.wait();
    rate
}

async fn abuse(url: &str, server_pid: u32) {
    let mut honest = Client::login(url, "u1", "honest").await;
    let conversation = honest.direct("u2").await.id;
    let (p50, p99) = honest_latency(&mut honest, conversation, 300, "calm").await;
    println!("honest_send_ack: p50 {p50:.2} ms, p99 {p99:.2} ms alone (baseline); server RSS {:.1} MiB", rss_kib(server_pid) as f64 / 1024.0);

    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..32u8)
        .map(|i| tokio::spawn(hash_flooder(url.to_owned(), std::net::IpAddr::from([127, 0, 3, i + 1]), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99) = honest_latency(&mut honest, conversation, 300, "hash").await;
    let rss = rss_kib(server_pid);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "honest_send_ack_during_hash_flood: p50 {p50:.2} ms, p99 {p99:.2} ms; server RSS {:.1} MiB during, {:.1} MiB 1 s after",
        rss as f64 / 1024.0,
        rss_kib(server_pid) as f64 / 1024.0
    );

    let mut flooder = Client::login(url, "u3", "flood").await;
    let group = flooder.group("heavy", &["u4"]).await.id;
    let big = "h".repeat(16 * 1024);
    let mut ids = vec![];
    for i in 0..500 {
        ids.push(flooder.send(send_text(group, &format!("big{i}"), &big)).await);
    }
    for id in ids {
        assert!(matches!(flooder.wait_reply(id).await, reply::Result::Ack(_)));
    }
    flooder.events.clear();
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(history_flooder(flooder, group, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99) = honest_latency(&mut honest, conversation, 300, "history").await;
    let rss = rss_kib(server_pid);
    stop.store(true, Ordering::Relaxed);
    let _ = task.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "honest_send_ack_during_history_flood: p50 {p50:.2} ms, p99 {p99:.2} ms; server RSS {:.1} MiB during, {:.1} MiB 1 s after",
        rss as f64 / 1024.0,
        rss_kib(server_pid) as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    let raw = missive_testkit::baseline::raw_ws_echo(400_000, PAYLOAD).await;
    println!("raw_ws_echo: {raw:.0} frames/s ({PAYLOAD}-byte frames, pipelined, one connection)");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = start_server(dir.path(), port, "full");
    wait_listening(port).await;

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

    abuse(&url, server.id()).await;

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

    let full = send_rate("full").await;
    let normal = send_rate("normal").await;
    println!("server_send_ack_durability: {full:.0} msg/s with synchronous=FULL, {normal:.0} with NORMAL (FULL/NORMAL {:.2}; 15 clients, window 256)", full / normal);
}
