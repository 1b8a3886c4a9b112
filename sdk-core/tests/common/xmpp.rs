//! Helpers for the tests of the XMPP transport: clients with quick reconnects against a
//! throwaway server from `missive_testkit::xmpp`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use missive::transport::xmpp::{XmppConfig, XmppTransport};
use missive::{BackoffConfig, Client, ClientConfig, HeartbeatConfig};
use missive_testkit::xmpp::DOMAIN;

use super::PASSWORD;

pub fn config(url: &str) -> ClientConfig {
    with_transport(XmppTransport::new(XmppConfig::new(url, DOMAIN)))
}

pub fn with_transport(transport: XmppTransport) -> ClientConfig {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    }
    ClientConfig::with_transport(Arc::new(transport))
        .backoff(BackoffConfig { base: Duration::from_millis(20), cap: Duration::from_millis(400), reset_after: Duration::from_secs(60) })
        .heartbeat(HeartbeatConfig { interval: Duration::from_millis(500), timeout: Duration::from_secs(3) })
        .seed(7)
}

pub async fn open(url: &str, store: Option<&Path>, device: &str) -> Client {
    let mut c = config(url).device_id(device);
    if let Some(path) = store {
        c = c.store_path(path);
    }
    Client::open(c).await.expect("client opens")
}

pub async fn registered(url: &str, name: &str, store: Option<&Path>) -> Client {
    let c = open(url, store, "phone").await;
    c.register(name, PASSWORD).await.expect("register");
    c
}

/// `name@localhost`.
pub fn jid(name: &str) -> String {
    format!("{name}@{DOMAIN}")
}

/// Runs each named scenario `async fn name(kind: ServerKind)` of a test file once per server:
/// `prosody::name`, `ejabberd::name` and `openfire::name` (the last need `OPENFIRE_HOME`;
/// `cargo xtask test` prepares it or reports them as NOT RUN).
#[macro_export]
macro_rules! against_each {
    ($($name:ident),* $(,)?) => {
        mod prosody {
            $(#[tokio::test]
            async fn $name() {
                super::$name(missive_testkit::xmpp::ServerKind::Prosody).await
            })*
        }
        mod ejabberd {
            $(#[tokio::test]
            async fn $name() {
                super::$name(missive_testkit::xmpp::ServerKind::Ejabberd).await
            })*
        }
        mod openfire {
            $(#[tokio::test]
            async fn $name() {
                super::$name(missive_testkit::xmpp::ServerKind::Openfire).await
            })*
        }
    };
}
