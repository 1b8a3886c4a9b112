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

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn register(name: &str, password: &str) -> Request {
    Request::Register(v1::Register { username: name.into(), password: password.into(), device_id: "phone".into() })
}

/// Guessing by reconnecting gets no further than guessing on one connection: failures count per
/// account and address across connections, and once they are used up even the right password
/// waits (it could be the guesser's next try). The wait is announced, and ends.
#[tokio::test]
async fn password_guesses_are_throttled_per_account_and_address_across_connections() {
    let server = TestServer::start_with(|c| {
        c.limits.auth.pair_free_failures = 3;
        c.limits.auth.backoff_base = std::time::Duration::from_millis(300);
    })
    .await;
    let url = server.url();
    Client::register(&url, "alice").await;
    for guess in 0..3 {
        let mut c = Client::connect_from(&url, ip("127.0.0.1")).await;
        assert_eq!(c.refused(login("alice", &format!("guess-{guess}"))).await.code(), ErrorCode::BadCredentials);
    }
    let mut c = Client::connect_from(&url, ip("127.0.0.1")).await;
    let held = c.refused(login("alice", PASSWORD)).await;
    assert_eq!(held.code(), ErrorCode::RateLimited, "{held:?}");
    assert!(held.retryable && held.retry_after_ms > 0 && held.retry_after_ms <= 300, "{held:?}");
    // Another address is not held by these failures.
    let mut elsewhere = Client::connect_from(&url, ip("127.0.0.2")).await;
    expect_session(elsewhere.request(login("alice", PASSWORD)).await);
    // After the announced wait, the right password works from the first address too.
    tokio::time::sleep(std::time::Duration::from_millis(held.retry_after_ms.into())).await;
    expect_session(c.request(login("alice", PASSWORD)).await);
}

/// Many addresses guessing one account slow down logins from new addresses, not from an address
/// the account used before: the owner is not locked out.
#[tokio::test]
async fn many_addresses_guessing_one_account_do_not_lock_its_owner_out() {
    let server = TestServer::start_with(|c| c.limits.auth.account_free_failures = 4).await;
    let url = server.url();
    Client::register(&url, "alice").await;
    let mut owner = Client::connect_from(&url, ip("127.0.0.1")).await;
    expect_session(owner.request(login("alice", PASSWORD)).await);
    for n in 2..6 {
        let mut guesser = Client::connect_from(&url, ip(&format!("127.0.0.{n}"))).await;
        assert_eq!(guesser.refused(login("alice", "a-wrong-guess")).await.code(), ErrorCode::BadCredentials);
    }
    let mut stranger = Client::connect_from(&url, ip("127.0.0.9")).await;
    let held = stranger.refused(login("alice", PASSWORD)).await;
    assert_eq!(held.code(), ErrorCode::RateLimited, "{held:?}");
    assert!(held.retry_after_ms <= 60_000);
    let mut owner = Client::connect_from(&url, ip("127.0.0.1")).await;
    expect_session(owner.request(login("alice", PASSWORD)).await);
}

/// Registering a taken name is refused before any password hash, and counts as a failure of the
/// address: a flood of them is throttled. Other addresses can still register.
#[tokio::test]
async fn taken_names_are_refused_cheaply_and_count_as_failures_of_the_address() {
    let server = TestServer::start_with(|c| c.limits.auth.address_free_failures = 5).await;
    let url = server.url();
    Client::register(&url, "alice").await;
    let mut flood = Client::connect_from(&url, ip("127.0.0.2")).await;
    for _ in 0..5 {
        assert_eq!(flood.refused(register("alice", PASSWORD)).await.code(), ErrorCode::UsernameTaken);
    }
    let held = flood.refused(register("alice", PASSWORD)).await;
    assert_eq!(held.code(), ErrorCode::RateLimited, "{held:?}");
    assert!(held.retryable && held.retry_after_ms > 0);
    let held = flood.refused(register("newcomer", PASSWORD)).await;
    assert_eq!(held.code(), ErrorCode::RateLimited, "its registrations wait too");
    let mut other = Client::connect_from(&url, ip("127.0.0.3")).await;
    expect_session(other.request(register("newcomer", PASSWORD)).await);
}

/// One address registers a bounded number of accounts in a burst.
#[tokio::test]
async fn registrations_per_address_are_limited() {
    let server = TestServer::start_with(|c| c.limits.auth.registration_burst = 2).await;
    let url = server.url();
    let mut c = Client::connect_from(&url, ip("127.0.0.2")).await;
    expect_session(c.request(register("one", PASSWORD)).await);
    let mut c = Client::connect_from(&url, ip("127.0.0.2")).await;
    expect_session(c.request(register("two", PASSWORD)).await);
    let mut c = Client::connect_from(&url, ip("127.0.0.2")).await;
    let held = c.refused(register("three", PASSWORD)).await;
    assert_eq!(held.code(), ErrorCode::RateLimited, "{held:?}");
    let mut c = Client::connect_from(&url, ip("127.0.0.3")).await;
    expect_session(c.request(register("three", PASSWORD)).await);
}

/// At most `hash_threads` password hashes run and `hash_queue` wait; more logins at once are
/// refused at once as retryable, and the server goes on serving.
#[tokio::test]
async fn password_hashing_runs_in_a_bounded_pool() {
    let server = TestServer::start_with(|c| {
        c.limits.auth.hash_threads = 1;
        c.limits.auth.hash_queue = 2;
    })
    .await;
    let url = server.url();
    Client::register(&url, "alice").await;
    // Sixteen clients from sixteen addresses, connected first, then all log in at once.
    let mut clients = vec![];
    for n in 0..16 {
        clients.push(Client::connect_from(&url, ip(&format!("127.0.1.{n}"))).await);
    }
    let mut ids = vec![];
    for c in &mut clients {
        ids.push(c.send(login("alice", "not the password")).await);
    }
    let (mut refused, mut unavailable) = (0, 0);
    for (c, id) in clients.iter_mut().zip(ids) {
        match c.wait_reply(id).await {
            reply::Result::Error(e) if e.code() == ErrorCode::BadCredentials => refused += 1,
            reply::Result::Error(e) if e.code() == ErrorCode::Unavailable => {
                assert!(e.retryable && e.retry_after_ms > 0, "{e:?}");
                unavailable += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(unavailable > 0, "{refused} hashed, none refused");
    assert!(refused >= 1);
    let mut c = Client::connect_from(&url, ip("127.0.0.1")).await;
    expect_session(c.request(login("alice", PASSWORD)).await);
}

/// Refusing a taken name costs the server no password hash: the server's CPU time for ten such
/// refusals stays far below one hash's (measured on the server process, not the wall clock).
#[tokio::test]
async fn a_taken_name_costs_no_password_hash() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_missive-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap() // utime + stime, in ticks
    };
    let mut c = None;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            c = Some(Client::connect_from_when_free(&url, ip("127.0.0.2")).await);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut c = c.expect("the server listens");
    // Reference: five registrations, five hashes.
    let before = cpu();
    for n in 0..5 {
        expect_session(c.request(register(&format!("user{n}"), PASSWORD)).await);
        c = Client::connect_from(&url, ip("127.0.0.2")).await;
    }
    let five_hashes = cpu() - before;
    let before = cpu();
    for n in 0..10 {
        assert_eq!(c.refused(register(&format!("user{}", n % 5), PASSWORD)).await.code(), ErrorCode::UsernameTaken);
    }
    let ten_refusals = cpu() - before;
    let _ = child.kill();
    let _ = child.wait();
    assert!(five_hashes >= 5, "five hashes took {five_hashes} ticks: too fast to compare against");
    assert!(ten_refusals * 2 < five_hashes, "ten refusals cost {ten_refusals} ticks of CPU, five hashes {five_hashes}");
}

fn resume(token: &str, device: &str) -> Request {
    Request::Resume(v1::Resume { token: token.into(), device_id: device.into() })
}

/// Logout revokes the token and ends at once every other live session resumed with it (close
/// 4006); sessions of other tokens go on.
#[tokio::test]
async fn logout_ends_every_session_of_its_token() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut alice = Client::register(&url, "alice").await;
    let token = alice.session.as_ref().unwrap().token.clone();
    let mut same_token = Client::connect(&url).await;
    expect_session(same_token.request(resume(&token, "phone")).await);
    let mut laptop = Client::login(&url, "alice", "laptop").await;
    assert!(matches!(alice.request(Request::Logout(v1::Logout {})).await, reply::Result::Ok(_)));
    assert_eq!(alice.closed_with().await, close::NORMAL);
    assert_eq!(same_token.closed_with().await, close::SESSION_REVOKED);
    laptop.ping().await;
    let mut again = Client::connect(&url).await;
    assert_eq!(again.refused(resume(&token, "phone")).await.code(), ErrorCode::TokenInvalid);
}

/// "Log out all devices" revokes every token of the user and ends every other session of the
/// user; other users are not touched.
#[tokio::test]
async fn logout_all_ends_every_session_of_the_user() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut phone = Client::register(&url, "alice").await;
    let mut laptop = Client::login(&url, "alice", "laptop").await;
    let laptop_token = laptop.session.as_ref().unwrap().token.clone();
    let mut tablet = Client::connect(&url).await;
    expect_session(tablet.request(resume(&laptop_token, "tablet")).await);
    let mut bob = Client::register(&url, "bob").await;
    assert!(matches!(phone.request(Request::LogoutAll(v1::LogoutAll {})).await, reply::Result::Ok(_)));
    assert_eq!(phone.closed_with().await, close::NORMAL);
    assert_eq!(laptop.closed_with().await, close::SESSION_REVOKED);
    assert_eq!(tablet.closed_with().await, close::SESSION_REVOKED);
    bob.ping().await;
    let mut again = Client::connect(&url).await;
    assert_eq!(again.refused(resume(&laptop_token, "laptop")).await.code(), ErrorCode::TokenInvalid);
    expect_session(again.request(login("alice", PASSWORD)).await);
}
