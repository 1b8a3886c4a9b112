//! `missive`: a reliable instant-messaging client SDK.
//!
//! The app sends and observes; the SDK persists before it sends, resends until acknowledged,
//! reconnects with backoff, syncs what it missed and shows every message exactly once, in order.
//!
//! ```no_run
//! # async fn demo() -> missive::Result<()> {
//! use missive::{Client, ClientConfig, Event};
//!
//! let client = Client::open(ClientConfig::native("ws://127.0.0.1:8700").store_path("alice.db")).await?;
//! client.login("alice", "correct horse battery").await?;
//! let dm = client.create_direct("bob").await?;
//! let echo = client.send_text(&dm.id, "hi bob").await?; // committed locally: nothing loses it now
//! let mut events = client.subscribe();
//! while let Some(event) = events.next().await {
//!     if let Event::MessageUpdated(m) = event {
//!         if m.id == echo.id {
//!             println!("now {:?}", m.state);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Module map: [`client`] (the handle), [`engine`] (the task and its pure state machines:
//! [`engine::backoff`], [`engine::outbox`], [`engine::sync`]), [`store`] (SQLite), [`transport`]
//! (the protocol-neutral boundary and [`transport::native`]), [`model`], [`event`], [`error`].

pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
mod sending;
pub mod store;
pub mod transport;
mod wire;

pub use client::Client;
pub use config::{ClientConfig, HeartbeatConfig};
pub use engine::backoff::BackoffConfig;
pub use error::{Error, Result};
pub use event::{Event, EventStream};
pub use model::*;
pub use store::StoreLocation;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
