//! Client configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::backoff::BackoffConfig;
use crate::store::StoreLocation;
use crate::transport::Transport;
use crate::transport::native::NativeTransport;
use crate::transport::xmpp::{XmppConfig, XmppTransport};

/// How the client detects a dead link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// A ping is sent after this long without traffic.
    pub interval: Duration,
    /// The link is declared dead after this long without any frame from the server.
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { interval: Duration::from_secs(20), timeout: Duration::from_secs(45) }
    }
}

/// Everything a [`crate::Client`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    pub transport: Arc<dyn Transport>,
    pub store: StoreLocation,
    /// Identifies this installation to the server (one user may have several devices).
    pub device_id: String,
    pub backoff: BackoffConfig,
    pub heartbeat: HeartbeatConfig,
    /// Messages in flight at once (pipelining window).
    pub send_window: usize,
    /// Seed of the backoff jitter (tests pin it; by default it comes from the clock).
    pub seed: u64,
}

impl ClientConfig {
    /// The native transport to a reference server at `url` (`ws://` or `wss://`), an in-memory
    /// store and default settings.
    pub fn native(url: impl Into<String>) -> Self {
        Self::with_transport(Arc::new(NativeTransport::new(url)))
    }

    /// The XMPP transport to a standard XMPP server's WebSocket endpoint (RFC 7395) serving
    /// `domain`, with groups on `conference.<domain>`; see [`XmppConfig`] for more settings.
    ///
    /// ```
    /// let config = missive::ClientConfig::xmpp("wss://chat.example.com/xmpp-websocket", "example.com");
    /// ```
    pub fn xmpp(url: impl Into<String>, domain: impl Into<String>) -> Self {
        Self::with_transport(Arc::new(XmppTransport::new(XmppConfig::new(url, domain))))
    }

    pub fn with_transport(transport: Arc<dyn Transport>) -> Self {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        ClientConfig {
            transport,
            store: StoreLocation::Memory,
            device_id: "default".into(),
            backoff: BackoffConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            send_window: 256,
            seed,
        }
    }

    /// Keeps the store in a file: messages, outbox and session survive restarts.
    pub fn store_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = StoreLocation::File(path.into());
        self
    }

    pub fn device_id(mut self, device: impl Into<String>) -> Self {
        self.device_id = device.into();
        self
    }

    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn heartbeat(mut self, heartbeat: HeartbeatConfig) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}
