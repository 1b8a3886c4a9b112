//! What the app observes: one stream of events. A subscription starts with the current
//! connection state, then changes follow; there is no gap between "load" and "listen".

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::broadcast;

use crate::model::{ConnectionState, Conversation, Message, Presence, ReceiptKind};

/// The client's event channel. Events travel in `Arc`s: an `Event` is 440 bytes and the channel
/// keeps 4,096 slots, so with events inline the channel alone held 1.8 MiB resident.
#[derive(Clone)]
pub(crate) struct EventSender(broadcast::Sender<Arc<Event>>);

impl EventSender {
    pub(crate) fn new(capacity: usize) -> Self {
        EventSender(broadcast::channel(capacity).0)
    }

    /// Publishes to every subscriber (none: dropped).
    pub(crate) fn send(&self, event: Event) -> Result<usize, broadcast::error::SendError<Arc<Event>>> {
        self.0.send(Arc::new(event))
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.0.subscribe()
    }
}

/// An event for the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ConnectionChanged(ConnectionState),
    /// A message appeared (sent from here or elsewhere, or received), exactly once per message.
    MessageAdded(Message),
    /// A message changed: its state, server id or body.
    MessageUpdated(Message),
    /// A local echo was cancelled.
    MessageRemoved { id: String, conversation_id: String },
    /// A conversation was created, renamed, changed members, or its unread count or draft
    /// changed.
    ConversationChanged(Conversation),
    /// A member's receipt.
    Receipt { conversation_id: String, user: String, kind: ReceiptKind, seq: u64 },
    Typing { conversation_id: String, user: String, active: bool },
    Presence { user: String, presence: Presence, status: String },
    /// Catch-up after a (re)connect: `caught_up` is true once the client is live.
    SyncProgress { applied: u64, caught_up: bool },
    /// This subscriber fell behind and missed `missed` events: reload from the store.
    Lagged { missed: u64 },
}

/// A subscription: a `Stream` of [`Event`]s, starting with the current connection state.
pub struct EventStream {
    first: Option<Event>,
    /// The last connection state delivered, to skip a repeat right after the snapshot.
    last_state: Option<ConnectionState>,
    inner: tokio_stream_shim::BroadcastStream,
}

impl EventStream {
    pub(crate) fn new(current: ConnectionState, rx: broadcast::Receiver<Arc<Event>>) -> Self {
        EventStream { first: Some(Event::ConnectionChanged(current)), last_state: None, inner: tokio_stream_shim::BroadcastStream::new(rx) }
    }

    /// The next event, or `None` when the client is gone.
    pub async fn next(&mut self) -> Option<Event> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(first) = self.first.take() {
            if let Event::ConnectionChanged(s) = &first {
                self.last_state = Some(s.clone());
            }
            return Poll::Ready(Some(first));
        }
        loop {
            let next = futures_util::ready!(Pin::new(&mut self.inner).poll_next(cx));
            if let Some(Event::ConnectionChanged(s)) = &next {
                if self.last_state.as_ref() == Some(s) {
                    continue;
                }
                self.last_state = Some(s.clone());
            }
            return Poll::Ready(next);
        }
    }
}

/// A `Stream` over a broadcast receiver (the same idea as tokio-stream's `BroadcastStream`,
/// without the extra dependency).
mod tokio_stream_shim {
    use super::*;
    use futures_util::future::BoxFuture;

    type Recv = BoxFuture<'static, (Result<Arc<Event>, broadcast::error::RecvError>, broadcast::Receiver<Arc<Event>>)>;

    pub struct BroadcastStream {
        fut: Recv,
    }

    async fn recv(
        mut rx: broadcast::Receiver<Arc<Event>>,
    ) -> (Result<Arc<Event>, broadcast::error::RecvError>, broadcast::Receiver<Arc<Event>>) {
        let r = rx.recv().await;
        (r, rx)
    }

    impl BroadcastStream {
        pub fn new(rx: broadcast::Receiver<Arc<Event>>) -> Self {
            BroadcastStream { fut: Box::pin(recv(rx)) }
        }
    }

    impl Stream for BroadcastStream {
        type Item = Event;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
            let (result, rx) = futures_util::ready!(self.fut.as_mut().poll(cx));
            self.fut = Box::pin(recv(rx));
            match result {
                Ok(event) => Poll::Ready(Some(Arc::unwrap_or_clone(event))),
                Err(broadcast::error::RecvError::Lagged(missed)) => Poll::Ready(Some(Event::Lagged { missed })),
                Err(broadcast::error::RecvError::Closed) => Poll::Ready(None),
            }
        }
    }
}
