//! Durability over real sockets: a graceful restart and a SIGKILL of the server process in the
//! middle of a stream of pipelined messages lose nothing and duplicate nothing; TLS (wss) with
//! certificate verification.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::*;
use missive_proto::v1::{self, reply};

const STREAM: usize = 400;

/// Sends `STREAM` messages, pipelined with up to `WINDOW` unacknowledged, and calls `cut` once
/// `on_acks` acks have arrived; returns the acks received before the connection dropped.
async fn stream_until_cut(alice: &mut Client, conversation: u64, on_acks: usize, cut: impl FnOnce()) -> HashMap<String, v1::SendAck> {
    const WINDOW: usize = 20;
    let mut pending = vec![];
    let mut next = 0;
    let mut acks = HashMap::new();
    let mut cut = Some(cut);
    'stream: loop {
        while next < STREAM && next - acks.len() < WINDOW {
            match alice.try_send(send_text(conversation, &format!("c{next:04}"), &format!("message {next}"))).await {
                Some(id) => pending.push(id),
                None => break 'stream,
            }
            next += 1;
        }
        if !alice.pump().await {
            break;
        }
        pending.retain(|id| match alice.take_reply(*id) {
            Some(reply::Result::Ack(a)) => {
                acks.insert(a.client_id.clone(), a);
                false
            }
            Some(other) => panic!("send refused: {other:?}"),
            None => true,
        });
        if acks.len() >= on_acks {
            if let Some(cut) = cut.take() {
                cut();
            }
        }
        if acks.len() == STREAM {
            break;
        }
    }
    acks
}

/// Resends the whole stream with the same client ids and checks the replies against `before`.
async fn resend_all(alice: &mut Client, conversation: u64, before: &HashMap<String, v1::SendAck>) {
    for i in 0..STREAM {
        let id = format!("c{i:04}");
        let ack = alice.send_text(conversation, &id, &format!("message {i}")).await;
        if let Some(original) = before.get(&id) {
            assert!(ack.duplicate, "{id} was acknowledged before the cut, so this is a replay");
            assert_eq!((ack.server_id, ack.seq), (original.server_id, original.seq));
        }
    }
}

async fn assert_exactly_once_in_order(url: &str, conversation: u64) {
    let mut bob = Client::login(url, "bob", "phone").await;
    let texts: Vec<String> = messages(&bob.sync_all(0).await).into_iter().map(|(_, t)| t).collect();
    let expected: Vec<String> = (0..STREAM).map(|i| format!("message {i}")).collect();
    assert_eq!(texts.len(), STREAM, "no loss, no duplicate");
    assert_eq!(texts, expected, "in send order");
    let page = match bob.request(v1::client_frame::Request::History(v1::HistoryRequest { conversation_id: conversation, before_seq: 0, limit: 1 })).await {
        reply::Result::History(h) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(page.messages[0].seq, STREAM as u64);
}

#[tokio::test]
async fn graceful_restart_mid_stream_loses_nothing() {
    let server = TestServer::start_with(|c| c.limits.burst = 10_000).await;
    let url = server.url();
    Client::register(&url, "alice").await;
    Client::register(&url, "bob").await;
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let restarter = tokio::spawn(async move {
        let _ = stop_rx.await;
        server.restart().await
    });
    let acks = stream_until_cut(&mut alice, dm.id, 50, move || {
        let _ = stop_tx.send(());
    })
    .await;
    let server = restarter.await.unwrap();
    assert!(acks.len() < STREAM, "the restart cut the stream ({} acks)", acks.len());
    let url = server.url();
    let mut alice = Client::login(&url, "alice", "phone").await;
    resend_all(&mut alice, dm.id, &acks).await;
    assert_exactly_once_in_order(&url, dm.id).await;
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(data: &std::path::Path, port: u16) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_missive-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .args(["--rate", "100000"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the server binary"),
    )
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("server did not listen on {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn sigkill_of_the_server_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut process = spawn_server(dir.path(), port);
    wait_listening(port).await;
    Client::register(&url, "alice").await;
    Client::register(&url, "bob").await;
    let mut alice = Client::login(&url, "alice", "phone").await;
    let dm = alice.direct("bob").await;

    let pid = process.0.id() as i32;
    let acks = stream_until_cut(&mut alice, dm.id, 50, move || {
        // SIGKILL: no graceful shutdown, no final commit.
        sigkill(pid);
    })
    .await;
    let _ = process.0.wait();
    assert!(acks.len() < STREAM, "the kill cut the stream ({} acks)", acks.len());

    process = spawn_server(dir.path(), port);
    wait_listening(port).await;
    let mut alice = Client::login(&url, "alice", "phone").await;
    resend_all(&mut alice, dm.id, &acks).await;
    assert_exactly_once_in_order(&url, dm.id).await;
    drop(process);
}

fn sigkill(pid: i32) {
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn wss_with_a_verified_certificate_and_refusal_of_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls = Some(missive_server::TlsFiles { cert_chain: cert_path.clone(), private_key: key_path.clone() })
    })
    .await;
    assert!(server.url().starts_with("wss://"));
    let addr = server.handle.local_addr();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let trusting = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(trusting)).connect(name.clone(), tcp).await.expect("verified TLS");
    let wss = format!("wss://localhost:{}", addr.port());
    let mut c = Client::over(Box::new(tls), &wss).await;
    let hello = v1::client_frame::Request::Hello(v1::Hello { min_version: 1, max_version: 1, client: "tls".into() });
    assert!(matches!(c.request(hello).await, reply::Result::Hello(_)));
    let reg = v1::client_frame::Request::Register(v1::Register { username: "alice".into(), password: PASSWORD.into(), device_id: "d".into() });
    expect_session(c.request(reg).await);

    // A client that does not trust the certificate refuses the connection.
    let untrusting = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = tokio_rustls::TlsConnector::from(Arc::new(untrusting)).connect(name, tcp).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // Plain ws to a wss port fails the WebSocket handshake.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(tokio_tungstenite::client_async(format!("ws://{addr}"), tcp).await.is_err());
}

#[tokio::test]
async fn logs_never_contain_passwords_or_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_missive-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let process = Process(child);
    wait_listening(port).await;
    let alice = Client::register(&url, "alice").await;
    let token = alice.session.clone().unwrap().token;
    let mut c = Client::connect(&url).await;
    expect_session(c.request(v1::client_frame::Request::Resume(v1::Resume { token: token.clone(), device_id: "d".into() })).await);
    let mut wrong = Client::connect(&url).await;
    wrong.refused(v1::client_frame::Request::Login(v1::Login { username: "alice".into(), password: "wrong-password-123".into(), device_id: String::new() })).await;
    // Names and device ids from clients cannot forge log lines (newlines, escape sequences).
    let forged = "\n2030-01-01T00:00:00.000000Z  INFO forged: admin logged in\n\u{1b}[2J";
    let mut liar = Client::connect(&url).await;
    liar.refused(v1::client_frame::Request::Login(v1::Login { username: format!("eve{forged}"), password: PASSWORD.into(), device_id: String::new() })).await;
    expect_session(liar.request(v1::client_frame::Request::Login(v1::Login { username: "alice".into(), password: PASSWORD.into(), device_id: format!("d{forged}") })).await);
    drop(process);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("registered"), "debug logs were captured:\n{logs}");
    for secret in [PASSWORD, token.as_str(), "wrong-password-123"] {
        assert!(!logs.contains(secret), "a secret leaked into the logs:\n{logs}");
    }
    assert!(!logs.lines().any(|l| l.starts_with("2030-01-01")), "a client forged a log line:\n{logs}");
    assert!(!logs.contains('\u{1b}'), "a client put an escape sequence in the logs:\n{logs}");
}

/// An acknowledgement means the commit is on disk: the store runs `synchronous=FULL` unless
/// configured otherwise.
#[tokio::test]
async fn commits_are_synchronous_full_by_default_and_normal_on_request() {
    let server = TestServer::start().await;
    assert_eq!(server.handle.synchronous().await, Some(2), "synchronous=FULL");
    let normal = TestServer::start_with(|c| c.synchronous = missive_server::Synchronous::Normal).await;
    assert_eq!(normal.handle.synchronous().await, Some(1), "synchronous=NORMAL");
}

/// The binary takes its connection caps and durability from the command line.
#[tokio::test]
async fn the_binary_takes_connection_caps_and_durability_from_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_missive-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path())
            .args(["--max-connections", "3", "--max-connections-per-address", "1", "--synchronous", "normal"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the server binary"),
    );
    wait_listening(port).await;
    let here: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    // (The probe of `wait_listening` held a place until the server saw it go.)
    let mut first = Client::connect_from_when_free(&url, here).await;
    assert!(Client::try_raw_from(&url, here).await.is_none(), "one connection per address");
    let _b = Client::connect_from_when_free(&url, "127.0.0.2".parse().unwrap()).await;
    let _c = Client::connect_from_when_free(&url, "127.0.0.3".parse().unwrap()).await;
    assert!(Client::try_raw_from(&url, "127.0.0.4".parse().unwrap()).await.is_none(), "three connections in all");
    first.ping().await;
    drop(process);
    let bad = Command::new(env!("CARGO_BIN_EXE_missive-server")).args(["--synchronous", "sometimes"]).stderr(Stdio::piped()).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("full or normal"), "{}", String::from_utf8_lossy(&bad.stderr));
}
