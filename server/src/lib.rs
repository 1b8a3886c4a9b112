//! `missive-server`: the Missive reference server.
//!
//! A small, real server so the SDK runs out of the box, embedded in tests and the demo or run as
//! a binary: accounts with argon2 password hashes, bearer tokens, 1:1 conversations, groups, chat
//! rooms, durable messages with per-conversation sequence numbers and per-user inbox cursors in
//! SQLite, sync, history, receipts, typing and presence, over WebSocket (optionally TLS) with one
//! protobuf envelope per binary frame (see `missive-proto`).
//!
//! Its guarantees: a message is acknowledged only after its commit; a resend with the same
//! (sender, client id) gets the original acknowledgement and fans out nothing; every request
//! after authentication is authorised against conversation membership; limits on frame size,
//! request rate, timeouts and queue length bound what one client can cost.
//!
//! Module map: `session` (one connection), `handlers` (requests), `hub` (online sessions and
//! fan-out), `db` (the store thread and its tables), `auth` (passwords, tokens), `ratelimit`,
//! `tls`, `config`.
//!
//! ```no_run
//! # async fn run() -> Result<(), missive_server::ServerError> {
//! use missive_server::{Server, ServerConfig};
//!
//! let server = Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/missive-data")).await?;
//! println!("listening on {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod addresses;
mod auth;
mod config;
mod db;
mod error;
mod fair;
mod handlers;
mod hashing;
mod hub;
mod ratelimit;
mod session;
mod throttle;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{AuthLimits, ServerConfig, ServerLimits, Synchronous, TlsFiles};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot open the data directory or database: {0}")]
    Storage(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// State shared by every connection.
pub(crate) struct Ctx {
    pub config: ServerConfig,
    pub db: db::Db,
    pub hub: Arc<hub::Hub>,
    pub shutdown: CancellationToken,
    /// Password hashing, bounded (see `hashing`).
    pub hashes: hashing::HashPool,
    /// Login and registration throttles across connections (see `throttle`).
    pub throttle: std::sync::Mutex<throttle::AuthThrottle>,
}

/// The reference server.
pub struct Server;

impl Server {
    /// Opens the database, binds the listener and starts serving in the background.
    pub async fn bind(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose().map_err(ServerError::Tls)?;
        let (db, db_closed) = db::Db::open(&config.data_dir.join("missive.db"), config.synchronous, config.limits.read_threads)
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let listener = TcpListener::bind(config.listen).await.map_err(ServerError::Listen)?;
        let local_addr = listener.local_addr().map_err(ServerError::Listen)?;
        let shutdown = CancellationToken::new();
        let hub = Arc::new(hub::Hub::default());
        let tracker = TaskTracker::new();
        let auth = &config.limits.auth;
        let hashes = hashing::HashPool::start(auth.hash_threads, auth.hash_queue, auth.hashes_per_address);
        let throttle = std::sync::Mutex::new(throttle::AuthThrottle::new(auth.clone()));
        let ctx = Arc::new(Ctx { config, db, hub: hub.clone(), shutdown: shutdown.clone(), hashes, throttle });
        let secure = tls.is_some();
        tracing::info!(%local_addr, tls = secure, "missive-server listening");
        let store = ctx.db.clone();
        let accept = tokio::spawn(accept_loop(listener, ctx, tls, tracker.clone()));
        Ok(ServerHandle { local_addr, secure, shutdown, accept, tracker, hub, db: Some(store), db_closed })
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, tls: Option<tokio_rustls::TlsAcceptor>, tracker: TaskTracker) {
    let slots = addresses::AddressSlots::new(ctx.config.limits.max_connections_per_address);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if tracker.len() >= ctx.config.limits.max_connections {
            tracing::warn!(%remote, "connection refused: too many connections");
            continue;
        }
        let Some(slot) = slots.try_take(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: too many connections from this address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match tls {
                None => session::serve(tcp, remote, ctx).await,
                Some(acceptor) => match tokio::time::timeout(ctx.config.limits.auth_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => session::serve(stream, remote, ctx).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    secure: bool,
    shutdown: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
    tracker: TaskTracker,
    hub: Arc<hub::Hub>,
    /// A handle to the store (dropped at shutdown so that the store thread can end).
    db: Option<db::Db>,
    db_closed: oneshot::Receiver<()>,
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://addr` or `wss://addr`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.secure { "wss" } else { "ws" }, self.local_addr)
    }

    /// Authenticated connections currently open.
    pub fn session_count(&self) -> usize {
        self.hub.session_count()
    }

    /// The database's `synchronous` setting in effect, as SQLite reports it on the store
    /// thread's connection: 2 for `FULL`, 1 for `NORMAL`.
    pub async fn synchronous(&self) -> Option<i64> {
        self.db.as_ref()?.synchronous().await.ok()
    }

    /// Stops accepting, closes every connection with 1001 (going away), waits for in-flight
    /// requests to be answered and the last batch to commit, then closes the database.
    pub async fn shutdown(mut self) {
        drop(self.db.take());
        self.shutdown.cancel();
        self.hub.close_all(missive_proto::close::GOING_AWAY);
        let _ = self.accept.await;
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await.is_err() {
            tracing::warn!("connections still open after 10 s; closing the store anyway");
        }
        let _ = self.db_closed.await;
        tracing::info!("missive-server stopped");
    }
}
