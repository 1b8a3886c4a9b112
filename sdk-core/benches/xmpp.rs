//! XMPP benchmark: client CPU time per 10,000 messages, the SDK against a third-party client
//! (`@xmpp/client`, Node.js), both sending to the same throwaway Prosody in the same run.
//!
//! The SDK does what its contract asks: each message is committed to SQLite before `send`
//! returns, and counts as sent only once it is read back from the server's archive (XEP-0313).
//! The third-party client fires its messages and waits for one ping's answer after the last
//! (so the server has handled them all); it stores nothing. The server's own CPU time for each
//! phase is printed too. `MISSIVE_XMPP_BENCH_COUNT` changes the count (default 10,000).

use std::time::{Duration, Instant};

use missive::{Client, ClientConfig};
use missive_testkit::interop::{ThirdPartyPeer, cpu_time};
use missive_testkit::xmpp::{DOMAIN, Prosody};

const PASSWORD: &str = "bench-password";

#[tokio::main]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    }
    let count: u32 = std::env::var("MISSIVE_XMPP_BENCH_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let prosody = Prosody::start();
    let url = prosody.url();
    let server_pid = prosody.pid();

    // The recipient exists but stays offline: both senders' messages land in its archive.
    let sink = Client::open(ClientConfig::xmpp(url.as_str(), DOMAIN)).await.unwrap();
    sink.register("sink", PASSWORD).await.unwrap();
    sink.shutdown().await;

    // Third-party client first (its login is not measured).
    let mut peer = ThirdPartyPeer::start(&url, DOMAIN, "node", PASSWORD, true, Some("PLAIN")).await;
    let (peer_cpu0, server_cpu0, t0) = (cpu_time(peer.pid()), cpu_time(server_pid), Instant::now());
    peer.burst("sink@localhost", count, "node").await;
    let (peer_cpu, peer_wall, peer_server_cpu) = (cpu_time(peer.pid()) - peer_cpu0, t0.elapsed(), cpu_time(server_pid) - server_cpu0);
    peer.quit().await;

    // The SDK, in this process (Prosody and Node are other processes).
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::xmpp(url.as_str(), DOMAIN).store_path(dir.path().join("bench.db"))).await.unwrap();
    client.register("sdk", PASSWORD).await.unwrap();
    let dm = client.create_direct("sink").await.unwrap();
    assert!(client.wait_caught_up(Duration::from_secs(30)).await);
    let me = std::process::id();
    let (sdk_cpu0, server_cpu0, t0) = (cpu_time(me), cpu_time(server_pid), Instant::now());
    for i in 0..count {
        client.send_text(&dm.id, &format!("sdk {i}")).await.unwrap();
    }
    let drained = client.flush(Duration::from_secs(120)).await.unwrap();
    assert!(drained, "every message confirmed by the archive within 2 minutes ({} still unsent)", client.unsent_count().await.unwrap());
    let (sdk_cpu, sdk_wall, sdk_server_cpu) = (cpu_time(me) - sdk_cpu0, t0.elapsed(), cpu_time(server_pid) - server_cpu0);
    client.shutdown().await;

    let per = |d: Duration| d.as_secs_f64() * 10_000.0 / f64::from(count);
    println!(
        "xmpp_client_cpu: missive {:.2} s per 10000 msgs, @xmpp/client {:.2} s ({:.2} of the third-party client; {count} messages each)",
        per(sdk_cpu),
        per(peer_cpu),
        sdk_cpu.as_secs_f64() / peer_cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "xmpp_wall: missive {:.0} msg/s until archive-confirmed, @xmpp/client {:.0} msg/s until the server handled them",
        f64::from(count) / sdk_wall.as_secs_f64(),
        f64::from(count) / peer_wall.as_secs_f64()
    );
    println!(
        "xmpp_server_cpu: Prosody {:.2} s per 10000 msgs serving missive (sends and archive reads), {:.2} s serving @xmpp/client",
        per(sdk_server_cpu),
        per(peer_server_cpu)
    );
}
