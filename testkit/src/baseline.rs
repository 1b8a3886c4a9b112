//! Raw baselines for benchmarks: what a bare tokio-tungstenite connection does on loopback, so
//! that every benchmark can print its figure as a ratio to a baseline measured in the same run.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn echo_server(pipelined: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let _ = tcp.set_nodelay(true);
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
        if pipelined {
            // forward() feeds while input is ready and flushes when it is not.
            let (tx, rx) = ws.split();
            let _ = rx.filter(|m| std::future::ready(matches!(m, Ok(Message::Binary(_))))).forward(tx).await;
        } else {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() && ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// Frames per second of a pipelined echo of `frames` binary frames of `payload` bytes.
pub async fn raw_ws_echo(frames: usize, payload: usize) -> f64 {
    let addr = echo_server(true).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}"), tcp).await.expect("handshake");
    let (mut tx, mut rx) = ws.split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..frames {
            tx.feed(Message::Binary(vec![7u8; payload].into())).await.expect("feed");
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut got = 0;
    while got < frames {
        match rx.next().await {
            Some(Ok(Message::Binary(_))) => got += 1,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = writer.await;
    got as f64 / start.elapsed().as_secs_f64()
}

/// The durations of `n` one-at-a-time round trips of a `payload`-byte binary frame.
pub async fn raw_ws_round_trips(n: usize, payload: usize) -> Vec<Duration> {
    let addr = echo_server(false).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await.expect("connect");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::Binary(vec![7u8; payload].into())).await.expect("send");
        ws.next().await.expect("reply").expect("reply");
        samples.push(t.elapsed());
    }
    samples
}
