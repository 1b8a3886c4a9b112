//! Accounts over real sockets: register, login, wrong password, tokens, logout, versions.

mod common;

use common::*;
use missive_proto::close;
use missive_proto::v1::{self, ErrorCode, client_frame::Request, reply};

fn login(name: &str, password: &str) -> Request {
    Request::Login(v1::Login { username: name.into(), password: password.into(), device_id: "phone".into() })
}

#[tokio::test]
async fn register_then_login_then_resume_with_the_token() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.url(), "alice").await;
    let token = alice.session.as_ref().unwrap().token.clone();
    assert!(token.len() >= 43, "a real random token");
    drop(alice);

    let again = Client::login(&server.url(), "alice", "laptop").await;
    let s = again.session.unwrap();
    assert_eq!(s.username, "alice");
    assert_ne!(s.token, token, "each login gets its own token");

    let mut resumed = Client::connect(&server.url()).await;
    let s = expect_session(resumed.request(Request::Resume(v1::Resume { token, device_id: "phone".into() })).await);
    assert_eq!(s.username, "alice");
    assert!(s.token.is_empty(), "resume does not hand out a new token");
    resumed.ping().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused_alike() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::connect(&server.url()).await;
    let wrong = c.refused(login("alice", "not the password")).await;
    assert_eq!(wrong.code(), ErrorCode::BadCredentials);
    assert!(!wrong.retryable, "a wrong password must not be retried");
    let unknown = c.refused(login("nobody", PASSWORD)).await;
    assert_eq!(unknown.code(), ErrorCode::BadCredentials);
    assert_eq!(wrong.message, unknown.message, "no hint whether the user exists");
    // Still usable after failures: the right password works on the same connection.
    expect_session(c.request(login("alice", PASSWORD)).await);
}

#[tokio::test]
async fn too_many_failed_logins_close_the_connection() {
    let server = TestServer::start_with(|c| c.limits.max_failed_logins = 3).await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::connect(&server.url()).await;
    for _ in 0..3 {
        c.send(login("alice", "guess-guess")).await;
    }
    assert_eq!(c.closed_with().await, close::TOO_MANY_FAILURES);
}

#[tokio::test]
async fn registration_rules() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    let mut c = Client::connect(&server.url()).await;
    let reg = |name: &str, pw: &str| Request::Register(v1::Register { username: name.into(), password: pw.into(), device_id: String::new() });
    assert_eq!(c.refused(reg("alice", PASSWORD)).await.code(), ErrorCode::UsernameTaken);
    assert_eq!(c.refused(reg("Bad Name", PASSWORD)).await.code(), ErrorCode::InvalidArgument);
    assert_eq!(c.refused(reg("bob", "short")).await.code(), ErrorCode::InvalidArgument);
    expect_session(c.request(reg("bob", PASSWORD)).await);
}

#[tokio::test]
async fn logout_revokes_the_token() {
    let server = TestServer::start().await;
    let mut alice = Client::register(&server.url(), "alice").await;
    let token = alice.session.as_ref().unwrap().token.clone();
    assert!(matches!(alice.request(Request::Logout(v1::Logout {})).await, reply::Result::Ok(_)));
    assert_eq!(alice.closed_with().await, close::NORMAL);

    let mut c = Client::connect(&server.url()).await;
    let e = c.refused(Request::Resume(v1::Resume { token, device_id: "phone".into() })).await;
    assert_eq!(e.code(), ErrorCode::TokenInvalid);
    assert!(!e.retryable);
    let e = c.refused(Request::Resume(v1::Resume { token: "made-up".into(), device_id: "x".into() })).await;
    assert_eq!(e.code(), ErrorCode::TokenInvalid);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = TestServer::start_with(|c| c.limits.token_ttl = std::time::Duration::from_millis(1)).await;
    let alice = Client::register(&server.url(), "alice").await;
    let token = alice.session.unwrap().token;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut c = Client::connect(&server.url()).await;
    let e = c.refused(Request::Resume(v1::Resume { token, device_id: "phone".into() })).await;
    assert_eq!(e.code(), ErrorCode::TokenExpired);
}

#[tokio::test]
async fn unsupported_versions_are_refused_with_a_clear_error() {
    let server = TestServer::start().await;
    let mut c = Client::raw(&server.url()).await;
    let e = c.refused(Request::Hello(v1::Hello { min_version: 7, max_version: 9, client: "future".into() })).await;
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
    assert!(e.message.contains("7..=9"), "{}", e.message);
    assert_eq!(c.closed_with().await, close::PROTOCOL_ERROR);
}

#[tokio::test]
async fn passwords_are_stored_only_as_salted_hashes() {
    let server = TestServer::start().await;
    Client::register(&server.url(), "alice").await;
    Client::register(&server.url(), "bob").await;
    let db = rusqlite::Connection::open(server.dir.path().join("missive.db")).unwrap();
    let hashes: Vec<String> =
        db.prepare("SELECT password_hash FROM users").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(hashes.len(), 2);
    for h in &hashes {
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(PASSWORD));
    }
    assert_ne!(hashes[0], hashes[1], "same password, different salts");
}
