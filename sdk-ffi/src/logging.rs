//! Log records go to a sink supplied by the host (Logcat, os_log, a JVM logger). The SDK never
//! logs passwords or tokens, so the sink can forward everything it receives.

use std::sync::{Arc, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Implemented by the host.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    fn log(&self, level: LogLevel, target: String, message: String);
}

struct Installed {
    sink: Arc<dyn LogSink>,
    max: LogLevel,
}

fn slot() -> &'static RwLock<Option<Installed>> {
    static SLOT: OnceLock<RwLock<Option<Installed>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

/// Sends the SDK's log records at `max_level` and above to `sink` (replacing any earlier sink).
#[uniffi::export]
pub fn set_log_sink(sink: Arc<dyn LogSink>, max_level: LogLevel) {
    static SUBSCRIBER: OnceLock<()> = OnceLock::new();
    SUBSCRIBER.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(SinkLayer);
        // Fails only if the host process installed a global subscriber itself; keep theirs.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    if let Ok(mut s) = slot().write() {
        *s = Some(Installed { sink, max: max_level });
    }
}

struct SinkLayer;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!("{}={value:?}", field.name()));
        }
    }
}

fn level(l: &tracing::Level) -> LogLevel {
    match *l {
        tracing::Level::ERROR => LogLevel::Error,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::INFO => LogLevel::Info,
        tracing::Level::DEBUG => LogLevel::Debug,
        tracing::Level::TRACE => LogLevel::Trace,
    }
}

impl<S: tracing::Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = level(event.metadata().level());
        // Clone the sink out so that it is called without holding the lock.
        let sink = match slot().read() {
            Ok(s) => match s.as_ref() {
                Some(i) if level <= i.max => i.sink.clone(),
                _ => return,
            },
            Err(_) => return,
        };
        let mut message = Message(String::new());
        event.record(&mut message);
        sink.log(level, event.metadata().target().to_owned(), message.0);
    }
}
