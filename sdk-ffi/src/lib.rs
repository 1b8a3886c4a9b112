//! `missive-ffi`: the Missive SDK for Kotlin and Swift, through uniffi proc-macros.
//!
//! Thin wrappers over `missive::Client`: every call runs on the SDK's own tokio runtime (a
//! process-wide multi-thread runtime created on first use), so the foreign side may poll the
//! returned futures from any executor (Kotlin coroutines, Swift concurrency). A panic inside the
//! SDK is caught at the boundary and becomes `MissiveError::Failed { code: Internal }`; it never
//! unwinds into the host. Listeners are called from an SDK task, never while a lock is held.

mod error;
mod logging;
mod types;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use error::{ErrorCode, MissiveError};
pub use logging::{LogLevel, LogSink, set_log_sink};
pub use types::*;

uniffi::setup_scaffolding!();

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("missive")
            .enable_all()
            .build()
            .expect("the SDK runtime starts")
    })
}

/// Runs `fut` on the SDK runtime; a panic becomes an `Internal` error.
async fn on_runtime<T, F>(fut: F) -> Result<T, MissiveError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, MissiveError>> + Send + 'static,
{
    match runtime().spawn(fut).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%what, "panic inside the SDK, reported as an Internal error");
            Err(MissiveError::internal(format!("internal error: {what}")))
        }
        Err(_) => Err(MissiveError::internal("the SDK task was cancelled")),
    }
}

/// Receives events; implemented in Kotlin or Swift.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: ClientEvent);
}

/// A live subscription: events stop after `cancel()` or when it is released.
#[derive(uniffi::Object)]
pub struct Subscription {
    task: tokio::task::AbortHandle,
    state: Arc<SubscriptionState>,
}

/// Shared between the handle and the delivering task. `delivering` holds the id of the thread
/// inside the listener (0: none), so that `cancel` can wait for a delivery in progress without a
/// lock around the callback (and without waiting for itself when called from the listener).
#[derive(Default)]
struct SubscriptionState {
    cancelled: std::sync::atomic::AtomicBool,
    delivering: std::sync::atomic::AtomicU64,
}

fn thread_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TAG.with(|t| *t)
}

impl SubscriptionState {
    /// Delivers unless cancelled; returns false once cancelled.
    fn deliver(&self, f: impl FnOnce()) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.delivering.store(thread_tag(), SeqCst);
        let go = !self.cancelled.load(SeqCst);
        if go {
            f();
        }
        self.delivering.store(0, SeqCst);
        go
    }

    fn cancel(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.cancelled.store(true, SeqCst);
        let me = thread_tag();
        loop {
            let d = self.delivering.load(SeqCst);
            if d == 0 || d == me {
                return;
            }
            std::thread::yield_now();
        }
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops the events: once this returns, the listener is not called again (a delivery in
    /// progress on another thread is waited for).
    pub fn cancel(&self) {
        self.state.cancel();
        self.task.abort();
    }

    pub fn is_active(&self) -> bool {
        !self.state.cancelled.load(std::sync::atomic::Ordering::SeqCst) && !self.task.is_finished()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A Missive client.
#[derive(uniffi::Object)]
pub struct MissiveClient {
    inner: missive::Client,
}

fn config(settings: ClientSettings) -> Result<missive::ClientConfig, MissiveError> {
    use missive::transport::tls::Verification;
    let verification = if settings.insecure_development_only {
        Verification::InsecureDevelopmentOnly
    } else if !settings.certificate_pins_sha256.is_empty() {
        let pins = settings
            .certificate_pins_sha256
            .iter()
            .map(|p| <[u8; 32]>::try_from(p.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| missive::Error::InvalidArgument("a certificate pin is a 32-byte SHA-256".into()))?;
        Verification::PinnedSha256(pins)
    } else if !settings.trusted_certificates.is_empty() {
        Verification::TrustedCertificates(settings.trusted_certificates)
    } else {
        Verification::WebPki
    };
    let transport: Arc<dyn missive::transport::Transport> = match settings.xmpp_domain {
        Some(domain) => {
            use missive::transport::xmpp::{XmppConfig, XmppTransport};
            Arc::new(XmppTransport::with_verification(XmppConfig::new(settings.server_url, domain), &verification).map_err(missive::Error::from)?)
        }
        None => Arc::new(
            missive::transport::native::NativeTransport::with_verification(settings.server_url, &verification).map_err(missive::Error::from)?,
        ),
    };
    let mut config = missive::ClientConfig::with_transport(transport)
        .device_id(settings.device_id)
        .backoff(missive::BackoffConfig {
            base: Duration::from_millis(settings.backoff_base_ms),
            cap: Duration::from_millis(settings.backoff_cap_ms),
            reset_after: Duration::from_secs(60),
        })
        .heartbeat(missive::HeartbeatConfig {
            interval: Duration::from_millis(settings.heartbeat_interval_ms),
            timeout: Duration::from_millis(settings.heartbeat_timeout_ms),
        });
    if let Some(path) = settings.store_path {
        config = config.store_path(path);
    }
    Ok(config)
}

#[uniffi::export]
impl MissiveClient {
    /// Opens the store and starts the client; resumes a stored session by itself.
    #[uniffi::constructor]
    pub async fn open(settings: ClientSettings) -> Result<Arc<MissiveClient>, MissiveError> {
        on_runtime(async move {
            let inner = missive::Client::open(config(settings)?).await?;
            Ok(Arc::new(MissiveClient { inner }))
        })
        .await
    }

    pub async fn register(&self, username: String, password: String) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.register(&username, &password).await?) }).await
    }

    pub async fn login(&self, username: String, password: String) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.login(&username, &password).await?) }).await
    }

    pub async fn logout(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.logout().await?) }).await
    }

    pub async fn username(&self) -> Result<Option<String>, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.username().await?) }).await
    }

    pub async fn has_session(&self) -> Result<bool, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.has_session().await?) }).await
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().into()
    }

    pub fn is_caught_up(&self) -> bool {
        self.inner.is_caught_up()
    }

    /// Calls `listener` with the current connection state, then with every event, from an SDK
    /// task, until the subscription is cancelled or released.
    pub fn subscribe(&self, listener: Arc<dyn EventListener>) -> Arc<Subscription> {
        let mut events = self.inner.subscribe();
        let state = Arc::new(SubscriptionState::default());
        let shared = state.clone();
        let task = runtime().spawn(async move {
            while let Some(event) = events.next().await {
                let listener = listener.clone();
                let delivered = shared.deliver(|| {
                    // A throwing listener must not end the subscription or unwind into the SDK.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || listener.on_event(event.into()))).is_err() {
                        tracing::warn!("an event listener failed; the subscription goes on");
                    }
                });
                if !delivered {
                    return;
                }
            }
        });
        Arc::new(Subscription { task: task.abort_handle(), state })
    }

    pub async fn conversations(&self) -> Result<Vec<Conversation>, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.conversations().await?.into_iter().map(Into::into).collect()) }).await
    }

    pub async fn conversation(&self, id: String) -> Result<Option<Conversation>, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.conversation(&id).await?.map(Into::into)) }).await
    }

    pub async fn create_direct(&self, peer: String) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.create_direct(&peer).await?.into()) }).await
    }

    pub async fn create_group(&self, title: String, members: Vec<String>) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            Ok(c.create_group(&title, &members).await?.into())
        })
        .await
    }

    pub async fn add_members(&self, conversation: String, members: Vec<String>) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            Ok(c.add_members(&conversation, &members).await?.into())
        })
        .await
    }

    pub async fn remove_members(&self, conversation: String, members: Vec<String>) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            Ok(c.remove_members(&conversation, &members).await?.into())
        })
        .await
    }

    pub async fn create_room(&self, title: String) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.create_room(&title).await?.into()) }).await
    }

    pub async fn join_room(&self, room: String) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.join_room(&room).await?.into()) }).await
    }

    pub async fn leave_room(&self, room: String) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.leave_room(&room).await?) }).await
    }

    /// Commits the local echo and its outbox row, then returns it (state `Pending`).
    pub async fn send(&self, conversation: String, body: MessageBody) -> Result<Message, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.send(&conversation, body.into()).await?.into()) }).await
    }

    pub async fn send_text(&self, conversation: String, text: String) -> Result<Message, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.send_text(&conversation, &text).await?.into()) }).await
    }

    pub async fn retry(&self, message_id: String) -> Result<Message, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.retry(&message_id).await?.into()) }).await
    }

    pub async fn cancel(&self, message_id: String) -> Result<Message, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.cancel(&message_id).await?.into()) }).await
    }

    pub async fn edit(&self, message_id: String, body: MessageBody) -> Result<Message, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.edit(&message_id, body.into()).await?.into()) }).await
    }

    pub async fn message(&self, message_id: String) -> Result<Option<Message>, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.message(&message_id).await?.map(Into::into)) }).await
    }

    /// A page, newest first; cache first, then the server for what the cache lacks.
    pub async fn messages(&self, conversation: String, before_seq: Option<u64>, limit: u32) -> Result<MessagePage, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.messages(&conversation, before_seq, limit).await?.into()) }).await
    }

    /// A page from the local store only, never the network (e.g. to draw a conversation offline).
    pub async fn cached_messages(&self, conversation: String, before_seq: Option<u64>, limit: u32) -> Result<MessagePage, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.cached_messages(&conversation, before_seq, limit).await?.into()) }).await
    }

    pub async fn mark_read(&self, conversation: String) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.mark_read(&conversation).await?) }).await
    }

    pub async fn set_draft(&self, conversation: String, draft: Option<String>) -> Result<Conversation, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.set_draft(&conversation, draft.as_deref()).await?.into()) }).await
    }

    pub async fn set_typing(&self, conversation: String, active: bool) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.set_typing(&conversation, active).await?) }).await
    }

    pub async fn set_presence(&self, presence: Presence, status: String) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.set_presence(presence.into(), &status).await?) }).await
    }

    pub async fn unsent_count(&self) -> Result<u64, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.unsent_count().await?) }).await
    }

    /// Waits until every message is acknowledged or failed, at most `timeout_ms`.
    pub async fn flush(&self, timeout_ms: u64) -> Result<bool, MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.flush(Duration::from_millis(timeout_ms)).await?) }).await
    }

    pub async fn network_available(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.network_available().await?) }).await
    }

    pub async fn network_lost(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.network_lost().await?) }).await
    }

    pub async fn foreground(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.foreground().await?) }).await
    }

    pub async fn background(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move { Ok(c.background().await?) }).await
    }

    /// Stops the client; unsent messages stay in the store.
    pub async fn shutdown(&self) -> Result<(), MissiveError> {
        let c = self.inner.clone();
        on_runtime(async move {
            c.shutdown().await;
            Ok(())
        })
        .await
    }
}

/// For the bindings' tests: panics inside the SDK runtime, which must come back as an
/// `Internal` error and leave the host process running.
#[uniffi::export]
pub async fn debug_provoke_panic(message: String) -> Result<(), MissiveError> {
    on_runtime(async move { panic!("{message}") }).await
}

/// The version of the SDK.
#[uniffi::export]
pub fn sdk_version() -> String {
    env!("CARGO_PKG_VERSION").into()
}
