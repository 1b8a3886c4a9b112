//! Server configuration: where to listen and store, optional TLS, and the limits that bound what
//! one client can cost the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of a [`crate::Server`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see `ServerHandle::local_addr`).
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (`missive.db`); created if missing.
    pub data_dir: PathBuf,
    /// Serve `wss` with this certificate and key; plain `ws` when `None`.
    pub tls: Option<TlsFiles>,
    pub limits: ServerLimits,
}

impl ServerConfig {
    /// Plain `ws` on `listen`, data in `data_dir`, default limits.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig { listen, data_dir: data_dir.into(), tls: None, limits: ServerLimits::default() }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

/// Per-connection and per-server limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Sustained requests per second one connection may send.
    pub requests_per_second: u32,
    /// Requests one connection may send in a burst above the sustained rate.
    pub burst: u32,
    /// Time from TCP accept to a successful login, register or resume.
    pub auth_timeout: Duration,
    /// A connection that sends nothing (not even a ping) for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose socket accepts no data for this long is closed.
    pub write_timeout: Duration,
    /// Frames queued for one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Lifetime of a login token.
    pub token_ttl: Duration,
    /// Failed logins allowed on one connection before it is closed.
    pub max_failed_logins: u32,
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Chat rooms one connection may be present in at once (each is a live subscription).
    pub max_rooms_per_connection: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            requests_per_second: 1_000,
            burst: 2_000,
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(10),
            outbound_queue: 8_192,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            max_failed_logins: 5,
            max_connections: 100_000,
            max_rooms_per_connection: 64,
        }
    }
}
