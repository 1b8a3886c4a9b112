//! FaultProxy against a loopback echo server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use missive_testkit::{FaultConfig, FaultProxy, cut_points};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Upper bound for any single awaited event.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Echo server: echoes until EOF (then closes) or error; reports each closed
/// connection on `closed` and counts accepted ones.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.split();
                    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
                        let _ = wr.shutdown().await;
                    }
                    drop(stream);
                    let _ = closed_tx.send(());
                });
            }
        });
        Echo { addr, accepted, closed }
    }

    async fn wait_closed(&mut self) {
        within("echo side closed", self.closed.recv()).await.unwrap();
    }
}

async fn ping(stream: &mut TcpStream, msg: &[u8]) {
    within("ping", async {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    })
    .await;
}

/// Reads until the connection ends; returns what arrived and whether it ended
/// with an error (reset) rather than EOF.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    within("client side closed", async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return (got, false),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, true),
            }
        }
    })
    .await
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Sends `data`, half-closes, and returns everything echoed back until EOF.
async fn echo_round_trip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    within("echo round trip", rd.read_to_end(&mut back)).await.unwrap();
    writer.await.unwrap();
    back
}

#[tokio::test]
async fn passes_data_intact_without_faults() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr, FaultConfig::default()).await.unwrap();
    assert_eq!(proxy.url(), format!("ws://127.0.0.1:{}", proxy.local_addr().port()));

    let data = payload(300_000);
    let back = echo_round_trip(proxy.local_addr(), data.clone()).await;
    assert!(back == data, "echoed data differs");
    echo.wait_closed().await;

    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.cuts, 0);
    assert_eq!(stats.bytes_forwarded, 2 * data.len() as u64);
    proxy.shutdown().await;
}

#[tokio::test]
async fn slicing_and_latency_keep_data_intact() {
    let echo = Echo::start().await;
    let config = FaultConfig {
        seed: 5,
        latency: Duration::from_millis(1)..Duration::from_millis(2),
        max_chunk: Some(5),
        ..FaultConfig::default()
    };
    let proxy = FaultProxy::start(echo.addr, config).await.unwrap();

    let data = payload(100);
    let started = Instant::now();
    let back = echo_round_trip(proxy.local_addr(), data.clone()).await;
    assert_eq!(back, data);
    // 20 chunks upstream, each delayed at least 1 ms.
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!(proxy.stats().cuts, 0);
}

#[tokio::test]
async fn cut_after_bytes_resets_both_sides_at_the_drawn_byte() {
    let mut echo = Echo::start().await;
    let config = FaultConfig { cut_after_bytes: Some(100..101), ..FaultConfig::default() };
    let proxy = FaultProxy::start(echo.addr, config).await.unwrap();

    // 60 bytes go up, the echo comes back: the cut falls 40 bytes into it.
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let data = payload(60);
    client.write_all(&data).await.unwrap();
    // The 40 bytes sent before the reset are still readable.
    assert_eq!(read_until_closed(&mut client).await, (data[..40].to_vec(), true));
    echo.wait_closed().await;

    let stats = proxy.stats();
    assert_eq!(stats.cuts, 1);
    assert_eq!(stats.bytes_forwarded, 100);
}

#[tokio::test]
async fn cut_all_closes_every_open_connection() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr, FaultConfig::default()).await.unwrap();

    let mut a = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.local_addr()).await.unwrap();
    ping(&mut a, b"hello a").await;
    ping(&mut b, b"hello b").await;

    proxy.cut_all();
    assert_eq!(read_until_closed(&mut a).await, (vec![], true), "expected a reset");
    assert_eq!(read_until_closed(&mut b).await, (vec![], true), "expected a reset");
    echo.wait_closed().await;
    echo.wait_closed().await;
    assert_eq!(proxy.stats().cuts, 2);

    // Later connections are unaffected.
    let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
    ping(&mut c, b"hello c").await;
    let stats = proxy.stats();
    assert_eq!((stats.connections, stats.cuts), (3, 2));
}

#[tokio::test]
async fn accepting_off_refuses_and_cuts_then_on_restores() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr, FaultConfig::default()).await.unwrap();

    let mut a = TcpStream::connect(proxy.local_addr()).await.unwrap();
    ping(&mut a, b"before").await;

    proxy.set_accepting(false);
    assert_eq!(read_until_closed(&mut a).await, (vec![], true), "expected a reset");
    echo.wait_closed().await;

    let mut b = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(read_until_closed(&mut b).await, (vec![], true), "expected a reset");
    let stats = proxy.stats();
    assert_eq!((stats.connections, stats.cuts, stats.refused), (1, 1, 1));
    assert_eq!(echo.accepted.load(SeqCst), 1, "refused connection reached upstream");

    proxy.set_accepting(true);
    let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
    ping(&mut c, b"after").await;
    assert_eq!(proxy.stats().connections, 2);
}

#[test]
fn cut_points_are_reproducible_per_seed() {
    let first = cut_points(42, 1000..1_000_000, 16);
    assert_eq!(first, cut_points(42, 1000..1_000_000, 16));
    assert_ne!(first, cut_points(43, 1000..1_000_000, 16));
    assert!(first.iter().all(|p| (1000..1_000_000).contains(p)));
    assert!(first.windows(2).any(|w| w[0] != w[1]));
    assert_eq!(cut_points(9, 7..7, 3), [7, 7, 7]);
}

#[tokio::test]
async fn proxy_cuts_at_the_drawn_points() {
    let echo = Echo::start().await;
    let range = 10..200;
    let config = FaultConfig { seed: 7, cut_after_bytes: Some(range.clone()), ..FaultConfig::default() };
    let expected = cut_points(7, range, 3);
    let proxy = FaultProxy::start(echo.addr, config.clone()).await.unwrap();

    let mut total = 0;
    for (i, point) in expected.iter().enumerate() {
        let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let _ = client.write_all(&payload(1000)).await;
        read_until_closed(&mut client).await;
        total += point;
        let stats = proxy.stats();
        assert_eq!((stats.cuts, stats.bytes_forwarded), (i as u64 + 1, total), "connection {i}");
    }

    // set_config restarts connection indices: the same points again.
    proxy.set_config(config);
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let _ = client.write_all(&payload(1000)).await;
    read_until_closed(&mut client).await;
    assert_eq!(proxy.stats().bytes_forwarded, total + expected[0]);
}

#[tokio::test]
async fn shutdown_cuts_and_stops_listening() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr, FaultConfig::default()).await.unwrap();
    let addr = proxy.local_addr();

    let mut client = TcpStream::connect(addr).await.unwrap();
    ping(&mut client, b"ping").await;
    within("shutdown", proxy.shutdown()).await;
    assert_eq!(read_until_closed(&mut client).await.0, b"");
    echo.wait_closed().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
