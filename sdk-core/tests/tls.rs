//! wss from the SDK: certificate verification is on by default (an unknown certificate is
//! refused: the client never talks to a server it cannot verify), and a client that trusts the
//! server's certificate connects and sends.

mod common;

use std::sync::Arc;

use common::*;
use missive::transport::native::NativeTransport;
use missive::transport::tls::{Verification, certificate_sha256};
use missive::{Client, ClientConfig, ConnectionState, MessageState};
use missive_server::{Server, ServerConfig, TlsFiles};

async fn trusting(url: &str, der: &[u8]) -> Client {
    with(url, Verification::TrustedCertificates(vec![der.to_vec()])).await
}

async fn with(url: &str, verification: Verification) -> Client {
    let transport = NativeTransport::with_verification(url, &verification).unwrap();
    let mut config = ClientConfig::with_transport(Arc::new(transport));
    config.heartbeat = common::config(url).heartbeat;
    Client::open(config).await.unwrap()
}

#[tokio::test]
async fn wss_verifies_certificates_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    config.tls = Some(TlsFiles { cert_chain: cert_path, private_key: key_path });
    let server = Server::bind(config).await.unwrap();
    let url = format!("wss://localhost:{}", server.local_addr().port());

    // Default verification (web PKI roots): the self-signed certificate is refused.
    let untrusting = open(&url, None, "phone").await;
    let err = untrusting.register("alice", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), "TRANSPORT");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    assert!(!matches!(untrusting.connection_state(), ConnectionState::Connected));

    // Trusting exactly this certificate: register, open a conversation and send over TLS.
    let der = cert.cert.der().to_vec();
    let alice = trusting(&url, &der).await;
    alice.register("alice", PASSWORD).await.unwrap();
    let bob = trusting(&url, &der).await;
    bob.register("bob", PASSWORD).await.unwrap();
    let dm = alice.create_direct("bob").await.unwrap();
    let mut events = alice.subscribe();
    let m = alice.send_text(&dm.id, "over tls").await.unwrap();
    wait_state(&alice, &mut events, &m.id, MessageState::Sent).await;
    let mut bob_events = bob.subscribe();
    wait_present(&bob, &mut bob_events, &m.id).await;
    // Pinning: the right leaf fingerprint connects, a wrong one is refused.
    let pinned = with(&url, Verification::PinnedSha256(vec![certificate_sha256(&der)])).await;
    pinned.login("alice", PASSWORD).await.unwrap();
    let wrong_pin = with(&url, Verification::PinnedSha256(vec![[7u8; 32]])).await;
    assert_eq!(wrong_pin.login("alice", PASSWORD).await.unwrap_err().code(), "TRANSPORT");
    // The explicit development opt-out accepts the unknown certificate.
    let insecure = with(&url, Verification::InsecureDevelopmentOnly).await;
    insecure.login("bob", PASSWORD).await.unwrap();
    for c in [&alice, &bob, &untrusting, &pinned, &wrong_pin, &insecure] {
        c.shutdown().await;
    }
    server.shutdown().await;
}
