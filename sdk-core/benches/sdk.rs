//! SDK benchmarks (not tests): each prints its figure and its ratio to a baseline measured in the
//! same run, on loopback, in release mode. Run through `cargo xtask bench`.
//!
//! - send_ack: one client sending 100-byte texts with acknowledgements through the SDK (durable
//!   outbox in a file store) and the reference server, vs a raw pipelined tokio-tungstenite echo.
//! - latency: send call to the recipient's event at 1,000 msg/s, p50/p99, vs a raw WebSocket
//!   round trip.
//! - cold_start: open a store holding 1,000,000 messages in 1,000 conversations, load the
//!   conversation list and the newest 50 messages of one, vs the same queries in raw rusqlite.
//! - replay: reconnect after 100,000 missed messages and apply them into the store until caught
//!   up, vs raw batched rusqlite inserts.
//! - idle memory: resident memory of a process with one idle connected client, vs an empty tokio
//!   process.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use missive::{Client, ClientConfig, Event, MessageState};
use missive_server::{Server, ServerConfig, ServerHandle};

const PASSWORD: &str = "bench-password-1";
const PAYLOAD: usize = 100;

async fn server(dir: &Path) -> ServerHandle {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    config.limits.requests_per_second = 10_000_000;
    config.limits.burst = 10_000_000;
    Server::bind(config).await.unwrap()
}

async fn client(url: &str, store: Option<&Path>, name: &str, register: bool) -> Client {
    let mut config = ClientConfig::native(url).device_id("bench");
    config.send_window = std::env::var("MISSIVE_WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(config.send_window);
    if let Some(p) = store {
        config = config.store_path(p);
    }
    let c = Client::open(config).await.unwrap();
    if register { c.register(name, PASSWORD).await.unwrap() } else { c.login(name, PASSWORD).await.unwrap() }
    c
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Local commits only (the client is offline): the cost of persist-before-send by itself.
async fn local_commits(url: &str, dir: &Path) -> f64 {
    let c = client(url, Some(&dir.join("solo.db")), "solo", true).await;
    let _peer = client(url, None, "peer", true).await;
    let dm = c.create_direct("peer").await.unwrap();
    c.network_lost().await.unwrap();
    let n = 50_000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (c, conv) = (c.clone(), dm.id.clone());
            tokio::spawn(async move {
                for _ in 0..n / 32 {
                    c.send_text(&conv, &"z".repeat(PAYLOAD)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (n / 32 * 32) as f64 / start.elapsed().as_secs_f64();
    c.shutdown().await;
    rate
}

async fn send_ack(url: &str, dir: &Path, raw: f64) {
    let offline = local_commits(url, dir).await;
    println!("send_local: {offline:.0} msg/s committed locally with no network (32 concurrent send calls)");
    let alice = client(url, Some(&dir.join("alice.db")), "alice", true).await;
    // The recipient is offline: the figure is the sender's path (SDK + server), not a receiver's.
    client(url, None, "bob", true).await.shutdown().await;
    let dm = alice.create_direct("bob").await.unwrap();
    let n = 50_000;
    let text = "x".repeat(PAYLOAD);
    let senders = std::env::var("MISSIVE_SENDERS").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let threads0 = missive_testkit::interop::thread_cpu_times();
    let (start, cpu0) = (Instant::now(), missive_testkit::interop::cpu_time(std::process::id()));
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (alice, conv, text) = (alice.clone(), dm.id.clone(), text.clone());
            tokio::spawn(async move {
                for _ in 0..n / senders {
                    alice.send_text(&conv, &text).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let committed = start.elapsed();
    assert!(alice.flush(Duration::from_secs(300)).await.unwrap(), "every message acknowledged");
    let total = start.elapsed();
    let cpu = missive_testkit::interop::cpu_time(std::process::id()) - cpu0;
    let by_thread = thread_cpu_since(&threads0);
    let sent = (n / senders * senders) as f64;
    let rate = sent / total.as_secs_f64();
    println!(
        "send_ack: {rate:.0} msg/s ({:.3} of raw echo {raw:.0} frames/s); local commits alone {:.0} msg/s; {senders} concurrent send calls, file store; CPU {:.1} µs per message, {:.2} cores busy (client and server)",
        rate / raw,
        sent / committed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / sent,
        cpu.as_secs_f64() / total.as_secs_f64()
    );
    let per = |name: &str| by_thread.get(name).map_or(0.0, |d| d.as_secs_f64() * 1e6 / sent);
    println!(
        "send_ack_cpu: per message, SDK store thread {:.1} µs, server store thread {:.1} µs, async tasks of both {:.1} µs",
        per("missive-store"),
        per("missive-db"),
        per("tokio-rt-worker")
    );
    alice.shutdown().await;
}

async fn latency(url: &str, raw: (Duration, Duration)) {
    let alice = client(url, None, "carol", true).await;
    let bob = client(url, None, "dave", true).await;
    let dm = alice.create_direct("dave").await.unwrap();
    let mut events = bob.subscribe();
    while bob.conversation(&dm.id).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = 3_000;
    let mut samples = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..n {
        tick.tick().await;
        let t = Instant::now();
        let m = alice.send_text(&dm.id, &format!("{i:0>100}")).await.unwrap();
        loop {
            match events.next().await {
                Some(Event::MessageAdded(got)) if got.id == m.id => break,
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    println!(
        "latency: p50 {:.0} us, p99 {:.0} us send-to-recipient-event at 1000 msg/s (raw ws round trip p50 {:.0} us, p99 {:.0} us; p99 ratio {:.1}x)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        raw.0.as_secs_f64() * 1e6,
        raw.1.as_secs_f64() * 1e6,
        p99.as_secs_f64() / raw.1.as_secs_f64()
    );
    alice.shutdown().await;
    bob.shutdown().await;
}

/// Fills a store through the SDK's own schema: 1,000 conversations, 1,000,000 messages.
fn fill_store(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut conv = tx.prepare("INSERT INTO conversations (id, kind, title, members, last_seq, read_seq, last_rowid, last_activity_ms) VALUES (?1, 0, '', 'me\nyou', 1000, 1000, ?2, ?3)").unwrap();
        let mut msg = tx
            .prepare("INSERT INTO messages (id, conversation_id, sender, client_id, server_id, seq, body, state, outgoing, timestamp_ms) VALUES (?1, ?2, 'you', ?3, ?4, ?5, ?6, 3, 0, ?7)")
            .unwrap();
        let body = vec![0x0a, 0x05, 0x0a, 0x03, b'h', b'e', b'y'];
        for c in 0..1_000i64 {
            for s in 1..=1_000i64 {
                let cid = format!("c{c}m{s}");
                msg.execute(rusqlite::params![format!("you:{cid}"), c.to_string(), cid, format!("{}", c * 1000 + s), s, body, s]).unwrap();
            }
            conv.execute(rusqlite::params![c.to_string(), tx.last_insert_rowid(), c]).unwrap();
        }
    }
    tx.commit().unwrap();
}

async fn cold_start(dir: &Path) {
    let path = dir.join("big.db");
    let c = Client::open(ClientConfig::native("ws://127.0.0.1:9").store_path(&path)).await.unwrap();
    c.shutdown().await;
    drop(c);
    let t = Instant::now();
    fill_store(&path);
    let filled = t.elapsed();
    // Baseline: the same two queries in raw rusqlite on a fresh connection (the page through the
    // by-conversation index, which holds the messages that have a sequence number).
    let t = Instant::now();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut list = conn
            .prepare("SELECT c.id, m.body FROM conversations c LEFT JOIN messages m ON m.rowid = c.last_rowid ORDER BY c.last_activity_ms DESC")
            .unwrap();
        let n = list.query_map([], |r| r.get::<_, String>(0)).unwrap().count();
        assert_eq!(n, 1_000);
        let mut page = conn.prepare("SELECT id, body FROM messages WHERE conversation_id = ?1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 50").unwrap();
        assert_eq!(page.query_map(["500"], |r| r.get::<_, String>(0)).unwrap().count(), 50);
    }
    let raw = t.elapsed();
    let t = Instant::now();
    let c = Client::open(ClientConfig::native("ws://127.0.0.1:9").store_path(&path)).await.unwrap();
    let opened = t.elapsed();
    let list = c.conversations().await.unwrap();
    let listed = t.elapsed();
    let page = c.messages("500", None, 50).await.unwrap();
    let sdk = t.elapsed();
    println!("cold_start detail: open {:.2} ms, list {:.2} ms, page {:.2} ms", opened.as_secs_f64() * 1e3, (listed - opened).as_secs_f64() * 1e3, (sdk - listed).as_secs_f64() * 1e3);
    assert_eq!((list.len(), page.messages.len()), (1_000, 50));
    println!(
        "cold_start: {:.2} ms to open a 1,000,000-message store and load 1,000 conversations + 50 messages (raw rusqlite {:.2} ms; {:.1}x); fill took {:.1} s",
        sdk.as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3,
        sdk.as_secs_f64() / raw.as_secs_f64(),
        filled.as_secs_f64()
    );
    c.shutdown().await;
}

fn raw_inserts(dir: &Path, n: usize) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE m (id TEXT PRIMARY KEY, c TEXT, seq INTEGER, body BLOB)").unwrap();
    let t = Instant::now();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut stmt = tx.prepare("INSERT INTO m VALUES (?1, ?2, ?3, ?4)").unwrap();
        for i in 0..n {
            stmt.execute(rusqlite::params![format!("you:{i}"), "1", i as i64, vec![7u8; PAYLOAD]]).unwrap();
        }
    }
    tx.commit().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

async fn replay(url: &str, dir: &Path) {
    let n = 100_000;
    let raw = raw_inserts(dir, n);
    let sender = client(url, None, "erin", true).await;
    let receiver = client(url, Some(&dir.join("frank.db")), "frank", true).await;
    let dm = sender.create_direct("frank").await.unwrap();
    while receiver.conversation(&dm.id).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    receiver.shutdown().await;
    drop(receiver);
    let text = "y".repeat(PAYLOAD);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (s, conv, text) = (sender.clone(), dm.id.clone(), text.clone());
            tokio::spawn(async move {
                for _ in 0..n / 32 {
                    s.send_text(&conv, &text).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(sender.flush(Duration::from_secs(300)).await.unwrap());
    let missed = (n / 32 * 32) as f64;
    let t = Instant::now();
    let receiver = Client::open(ClientConfig::native(url).device_id("bench").store_path(dir.join("frank.db"))).await.unwrap();
    assert!(receiver.wait_caught_up(Duration::from_secs(600)).await, "caught up");
    let elapsed = t.elapsed();
    let last = receiver.conversation(&dm.id).await.unwrap().unwrap().last_message.unwrap();
    assert_eq!(last.seq, Some(missed as u64));
    assert_eq!(last.state, MessageState::Delivered);
    let rate = missed / elapsed.as_secs_f64();
    println!("replay: {rate:.0} msg/s applying {missed} missed messages after reconnect ({:.3} of raw batched rusqlite inserts {raw:.0} rows/s)", rate / raw);
    receiver.shutdown().await;
    sender.shutdown().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// Runs this executable in a helper mode and reads its resident memory once it says "ready".
fn child_rss(args: &[&str]) -> u64 {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if args.iter().any(|a| a == "--empty-tokio") {
        return runtime.block_on(async {
            println!("ready");
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
    }
    if let Some(i) = args.iter().position(|a| a == "--idle-client") {
        let url = args[i + 1].clone();
        return runtime.block_on(async move {
            let c = client(&url, None, "idle", false).await;
            assert!(c.wait_caught_up(Duration::from_secs(30)).await);
            println!("ready");
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
    }
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir.path().join("server")).await;
        let url = server.url();
        // MISSIVE_BENCH=send_ack,latency,... runs a subset (for profiling).
        let only = std::env::var("MISSIVE_BENCH").unwrap_or_default();
        let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
        if wanted("send_ack") {
            let raw = missive_testkit::baseline::raw_ws_echo(400_000, PAYLOAD).await;
            send_ack(&url, dir.path(), raw).await;
        }
        if wanted("latency") {
            let raw_rt = percentiles(missive_testkit::baseline::raw_ws_round_trips(3_000, PAYLOAD).await);
            latency(&url, raw_rt).await;
        }
        if wanted("cold_start") {
            cold_start(dir.path()).await;
        }
        if wanted("replay") {
            replay(&url, dir.path()).await;
        }
        if !wanted("idle_memory") {
            server.shutdown().await;
            return;
        }
        client(&url, None, "idle", true).await.shutdown().await;
        let base = child_rss(&["--empty-tokio"]);
        let idle = child_rss(&["--idle-client", &url]);
        println!(
            "idle_memory: {:.1} MiB resident with one idle connected client ({:.1} MiB for an empty tokio process; {:.1} MiB more)",
            idle as f64 / 1024.0,
            base as f64 / 1024.0,
            idle.saturating_sub(base) as f64 / 1024.0
        );
        server.shutdown().await;
    });
}

/// CPU time per thread name since `before` (threads that ended meanwhile are not counted).
fn thread_cpu_since(before: &HashMap<String, (String, Duration)>) -> HashMap<String, Duration> {
    let mut out = HashMap::<String, Duration>::new();
    for (id, (name, spent)) in missive_testkit::interop::thread_cpu_times() {
        *out.entry(name).or_default() += spent.saturating_sub(before.get(&id).map_or(Duration::ZERO, |b| b.1));
    }
    out
}
