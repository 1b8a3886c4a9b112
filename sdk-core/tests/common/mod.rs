//! Test support: the reference server embedded on a loopback port with temporary storage, and
//! clients with fast reconnect settings.
#![allow(dead_code)]

pub mod xmpp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use missive::{BackoffConfig, Client, ClientConfig, Event, EventStream, HeartbeatConfig, Message, MessageState};
use missive_server::{Server, ServerConfig, ServerHandle};

pub const PASSWORD: &str = "correct horse battery";
pub const WAIT: Duration = Duration::from_secs(30);

pub struct TestServer {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on(tempfile::tempdir().unwrap(), 0).await
    }

    async fn start_on(dir: tempfile::TempDir, port: u16) -> Self {
        let mut config = ServerConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), dir.path());
        config.limits.requests_per_second = 100_000;
        config.limits.burst = 100_000;
        let handle = Server::bind(config).await.expect("server starts");
        let port = handle.local_addr().port();
        TestServer { handle, dir, port }
    }

    pub fn url(&self) -> String {
        self.handle.url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle.local_addr()
    }

    /// Stops the server (gracefully) and returns what is needed to start it again.
    pub async fn stop(self) -> (tempfile::TempDir, u16) {
        let TestServer { handle, dir, port } = self;
        handle.shutdown().await;
        (dir, port)
    }

    /// Starts again on the same port and data directory.
    pub async fn resume((dir, port): (tempfile::TempDir, u16)) -> Self {
        Self::start_on(dir, port).await
    }
}

/// Settings for tests: quick reconnects and heartbeats.
pub fn config(url: &str) -> ClientConfig {
    ClientConfig::native(url)
        .backoff(BackoffConfig { base: Duration::from_millis(20), cap: Duration::from_millis(400), reset_after: Duration::from_secs(60) })
        .heartbeat(HeartbeatConfig { interval: Duration::from_millis(500), timeout: Duration::from_secs(3) })
        .seed(42)
}

pub async fn open(url: &str, store: Option<&Path>, device: &str) -> Client {
    let mut c = config(url).device_id(device);
    if let Some(path) = store {
        c = c.store_path(path);
    }
    Client::open(c).await.expect("client opens")
}

/// A registered, connected client with an in-memory store.
pub async fn registered(url: &str, name: &str) -> Client {
    let c = open(url, None, "phone").await;
    c.register(name, PASSWORD).await.expect("register");
    c
}

pub async fn logged_in(url: &str, name: &str, device: &str, store: Option<&Path>) -> Client {
    let c = open(url, store, device).await;
    c.login(name, PASSWORD).await.expect("login");
    c
}

/// Waits (bounded) for an event matching `pred`.
pub async fn wait_for(events: &mut EventStream, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.next().await.expect("event stream open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn rank(s: &MessageState) -> u8 {
    match s {
        MessageState::Pending => 0,
        MessageState::Sending => 1,
        MessageState::Sent => 2,
        MessageState::Delivered => 3,
        MessageState::Read => 4,
        MessageState::Failed { .. } => 9,
    }
}

/// Waits until the message with `id` reaches `state` (or further): the store is checked first,
/// then the events (subscribe before calling, so nothing falls in between).
pub async fn wait_state(client: &Client, events: &mut EventStream, id: &str, state: MessageState) -> Message {
    if let Some(m) = client.message(&id.to_string()).await.unwrap() {
        if rank(&m.state) >= rank(&state) {
            return m;
        }
    }
    match wait_for(events, &format!("{id} to be {state:?}"), |e| matches!(e, Event::MessageUpdated(m) if m.id == id && rank(&m.state) >= rank(&state))).await {
        Event::MessageUpdated(m) => m,
        _ => unreachable!(),
    }
}

/// Waits until the message with `id` is in `client`'s store.
pub async fn wait_present(client: &Client, events: &mut EventStream, id: &str) -> Message {
    if let Some(m) = client.message(&id.to_string()).await.unwrap() {
        return m;
    }
    match wait_for(events, &format!("{id} to arrive"), |e| matches!(e, Event::MessageAdded(m) if m.id == id)).await {
        Event::MessageAdded(m) => m,
        _ => unreachable!(),
    }
}

/// Polls `check` until it holds (bounded); for conditions no single event announces.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + WAIT;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Texts of every message in a conversation, oldest first, paging through the client's API.
pub async fn all_texts(client: &Client, conversation: &str) -> Vec<String> {
    paged_texts(client, conversation, 200).await.0
}

/// Every message's text, oldest first, read through `Client::messages` in pages of `size` from
/// the newest back; and how many pages that took.
pub async fn paged_texts(client: &Client, conversation: &str, size: u32) -> (Vec<String>, usize) {
    let (mut out, mut before, mut pages) = (vec![], None, 0);
    loop {
        let page = client.messages(conversation, before, size).await.expect("page");
        pages += 1;
        out.extend(page.messages.iter().map(|m| m.body.preview()));
        if !page.has_more {
            break;
        }
        before = page.next_before_seq;
    }
    out.reverse();
    (out, pages)
}

pub fn temp_store(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.db"))
}
