//! Toxiproxy, Shopify's fault-injecting TCP proxy, for chaos runs: built once from its Go module
//! (a pinned version) into `~/.cache/missive/toxiproxy`, started on a free loopback port, and
//! driven through its HTTP API (proxies, toxics, enable/disable).
//!
//! Go must be installed; when it is not, [`install`] panics saying so (nothing is skipped).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Toxiproxy release the chaos runs are made with.
pub const VERSION: &str = "v2.5.0";

/// Builds `toxiproxy-server` with `go install` unless this version is already cached; returns
/// the binary's path. Idempotent.
pub fn install() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = home.join(".cache/missive/toxiproxy").join(VERSION);
    let binary = dir.join("server");
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(&dir).expect("create the Toxiproxy cache directory");
    let status = Command::new("go")
        .args(["install", &format!("github.com/Shopify/toxiproxy/v2/cmd/server@{VERSION}")])
        .env("GOBIN", &dir)
        .env("GOFLAGS", "-mod=mod")
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("Go is needed to build Toxiproxy (apt-get install golang): {e}"));
    assert!(status.success() && binary.exists(), "go install of Toxiproxy {VERSION} failed");
    binary
}

/// A fault on one direction of a proxy's traffic. Times in milliseconds unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields are Toxiproxy's attributes, described on each variant
pub enum Toxic {
    /// Delay every chunk by `latency` ± `jitter`.
    Latency { latency: u64, jitter: u64 },
    /// At most `rate` KB/s.
    Bandwidth { rate: u64 },
    /// Cut data into pieces of `average_size` ± `size_variation` bytes, `delay_us` apart.
    Slicer { average_size: u64, size_variation: u64, delay_us: u64 },
    /// Stop forwarding data (a silent peer); with `timeout` > 0 close the connection after it.
    Timeout { timeout: u64 },
    /// Reset the connection (TCP RST) after `timeout`.
    ResetPeer { timeout: u64 },
    /// Close the connection once `bytes` have passed.
    LimitData { bytes: u64 },
}

impl Toxic {
    /// Toxiproxy's type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Slicer { .. } => "slicer",
            Toxic::Timeout { .. } => "timeout",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::LimitData { .. } => "limit_data",
        }
    }

    fn attributes(&self) -> Value {
        match *self {
            Toxic::Latency { latency, jitter } => json!({ "latency": latency, "jitter": jitter }),
            Toxic::Bandwidth { rate } => json!({ "rate": rate }),
            Toxic::Slicer { average_size, size_variation, delay_us } => {
                json!({ "average_size": average_size, "size_variation": size_variation, "delay": delay_us })
            }
            Toxic::Timeout { timeout } | Toxic::ResetPeer { timeout } => json!({ "timeout": timeout }),
            Toxic::LimitData { bytes } => json!({ "bytes": bytes }),
        }
    }
}

/// Which way a toxic acts: towards the server or towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Upstream,
    /// Server to client.
    Downstream,
}

/// A running `toxiproxy-server`, stopped when dropped.
pub struct Toxiproxy {
    child: Child,
    api: String,
    log: PathBuf,
}

impl Toxiproxy {
    /// Installs (if needed) and starts a server with its API on a free loopback port; its log
    /// goes to a file in the temporary directory ([`Toxiproxy::log_path`]).
    pub fn start() -> Toxiproxy {
        let binary = install();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("free port").port();
        let log = std::env::temp_dir().join(format!("missive-toxiproxy-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the Toxiproxy log");
        let child = Command::new(binary)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .env("LOG_LEVEL", std::env::var("TOXIPROXY_LOG_LEVEL").unwrap_or_else(|_| "warn".into()))
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start toxiproxy-server");
        let proxy = Toxiproxy { child, api: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() || !proxy.answers() {
            assert!(Instant::now() < deadline, "toxiproxy-server did not start; log at {}", proxy.log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// Where the server's log goes.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// A new proxy named `name` on a free loopback port, forwarding to `upstream`.
    pub fn proxy(&self, name: &str, upstream: SocketAddr) -> io::Result<Proxy> {
        let created = self.post("/proxies", json!({ "name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string() }))?;
        let listen = created["listen"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no listen address in {created}")))?;
        Ok(Proxy { api: self.api.clone(), name: name.to_string(), listen, upstream })
    }

    /// Whether the API answers (`/version` is plain text).
    fn answers(&self) -> bool {
        agent().get(&format!("{}/version", self.api)).call().is_ok()
    }

    fn post(&self, path: &str, body: Value) -> io::Result<Value> {
        call(agent().post(&format!("{}{path}", self.api)).send_json(body))
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One proxy of a [`Toxiproxy`] server.
#[derive(Debug, Clone)]
pub struct Proxy {
    api: String,
    name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    upstream: SocketAddr,
}

impl Proxy {
    /// Adds `toxic` under `toxic_name` on one direction, applied to every connection
    /// (toxicity 1).
    pub fn add(&self, toxic_name: &str, toxic: &Toxic, direction: Direction) -> io::Result<()> {
        let stream = match direction {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        };
        let body = json!({ "name": toxic_name, "type": toxic.kind(), "stream": stream, "toxicity": 1.0, "attributes": toxic.attributes() });
        call(agent().post(&format!("{}/proxies/{}/toxics", self.api, self.name)).send_json(body)).map(drop)
    }

    /// Deletes the proxy (cutting its connections) and creates it again, on the same address
    /// and without toxics: the way to lift toxics. Removing one instead can hang: Toxiproxy 2.5
    /// can deadlock when a toxic is removed while one of the proxy's connections is closing
    /// (Shopify/toxiproxy#558), and a proxy caught that way is freed only by deleting it.
    pub fn recreate(&self) -> io::Result<()> {
        call(agent().delete(&format!("{}/proxies/{}", self.api, self.name)).call())?;
        let body = json!({ "name": self.name, "listen": self.listen.to_string(), "upstream": self.upstream.to_string() });
        call(agent().post(&format!("{}/proxies", self.api)).send_json(body)).map(drop)
    }

    /// Disabling closes every connection and refuses new ones until enabled again.
    pub fn set_enabled(&self, enabled: bool) -> io::Result<()> {
        call(agent().post(&format!("{}/proxies/{}", self.api, self.name)).send_json(json!({ "enabled": enabled }))).map(drop)
    }
}

/// An HTTP client that hands back error responses, so their text reaches the caller, and gives
/// up on a call after 3 s (see [`Proxy::recreate`]).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(3))).build().into()
}

fn call(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> io::Result<Value> {
    let mut response = response.map_err(io::Error::other)?;
    let status = response.status();
    if status == 204 {
        return Ok(Value::Null);
    }
    if !status.is_success() {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        return Err(io::Error::other(format!("HTTP {status}: {}", text.trim())));
    }
    response.body_mut().read_json().map_err(io::Error::other)
}
