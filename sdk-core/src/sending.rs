//! Group commit for send calls. Concurrent `Client::send` calls are committed together: one
//! store job (one savepoint, one trip to the store thread) for every send waiting when a group
//! was last submitted, and one command to the engine for the whole group. Up to [`IN_FLIGHT`]
//! groups are submitted at once (the store thread commits queued jobs together); they are
//! answered and handed to the engine in the order they were submitted.
//!
//! Each call still returns only once its own message is committed, and a call naming a
//! conversation that does not exist gets `NotFound` alone (that check writes nothing). Any other
//! failure undoes the whole group and every call in it gets the error: none of them committed.

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Command, Enqueued};
use crate::error::{Error, Result};
use crate::event::{Event, EventSender};
use crate::model::{Body, Message};
use crate::store::{Store, messages};

/// Most sends committed as one store job.
const MAX_GROUP: usize = 512;
/// Groups submitted to the store and not yet answered. With one, concurrent senders settle
/// into two cohorts that take turns, and each group pays a commit of its own.
const IN_FLIGHT: usize = 2;

struct Waiting {
    me: String,
    conversation: String,
    client_id: String,
    body: Body,
    reply: oneshot::Sender<Result<Message>>,
}

/// The entry point for send calls; a task behind it commits them in groups.
pub(crate) struct SendQueue {
    waiting: mpsc::UnboundedSender<Waiting>,
}

impl SendQueue {
    /// Starts the group-commit task on the current runtime. It ends when the queue is dropped.
    pub(crate) fn start(store: Store, commands: mpsc::Sender<Command>, events: EventSender) -> SendQueue {
        let (waiting, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, store, commands, events));
        SendQueue { waiting }
    }

    /// Commits a local echo (which puts it in the outbox), publishes it and hands it to the
    /// engine. Returns once it is committed.
    pub(crate) async fn send(&self, me: String, conversation: String, client_id: String, body: Body) -> Result<Message> {
        let (reply, answer) = oneshot::channel();
        self.waiting.send(Waiting { me, conversation, client_id, body, reply }).map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Waiting>, store: Store, commands: mpsc::Sender<Command>, events: EventSender) {
    // Groups submitted to the store, oldest first. The store thread runs jobs in order, so they
    // finish in this order; with the next group queued behind the one committing, the store
    // thread commits both at once when it can.
    let mut committing = FuturesOrdered::new();
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut open = true;
    while open || !committing.is_empty() {
        tokio::select! {
            biased;
            Some((replies, committed)) = committing.next(), if !committing.is_empty() => {
                deliver(replies, committed, &commands, &events).await;
            }
            received = rx.recv_many(&mut group, MAX_GROUP), if open && committing.len() < IN_FLIGHT => {
                if received == 0 {
                    open = false;
                    continue;
                }
                let mut replies = Vec::with_capacity(group.len());
                let mut rows = Vec::with_capacity(group.len());
                for w in group.drain(..) {
                    replies.push(w.reply);
                    rows.push((w.me, w.conversation, w.client_id, w.body));
                }
                let store = store.clone();
                committing.push_back(async move { (replies, store.call(move |c| insert_group(c, rows)).await) });
            }
        }
    }
}

/// Publishes a committed group, hands it to the engine and answers its send calls.
async fn deliver(
    replies: Vec<oneshot::Sender<Result<Message>>>,
    committed: Result<Vec<Result<(Message, i64)>>>,
    commands: &mpsc::Sender<Command>,
    events: &EventSender,
) {
    let outcomes = match committed {
        Ok(outcomes) => outcomes,
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut enqueued = Vec::with_capacity(outcomes.len());
    for (message, order) in outcomes.iter().flatten() {
        let _ = events.send(Event::MessageAdded(message.clone()));
        enqueued.push(Enqueued {
            client_id: message.client_id.clone(),
            conversation: message.conversation_id.clone(),
            body: message.body.clone(),
            order: *order,
        });
    }
    let engine_alive = enqueued.is_empty() || commands.send(Command::Enqueue(enqueued)).await.is_ok();
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let result = match outcome {
            Ok(_) if !engine_alive => Err(Error::Stopped),
            other => other.map(|(m, _)| m),
        };
        let _ = reply.send(result);
    }
}

/// One store job for a group: per send its message and creation order, or `NotFound` for a
/// missing conversation (found before writing). Any other error fails the job, which rolls the
/// whole group back.
fn insert_group(conn: &rusqlite::Connection, rows: Vec<(String, String, String, Body)>) -> Result<Vec<Result<(Message, i64)>>> {
    let now = crate::now_ms();
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while let Some((me, conversation, client_id, body)) = rows.next() {
        // The sends of one user (a store has one) are inserted together.
        let mut same_user = vec![(conversation, client_id, body)];
        while let Some((_, conversation, client_id, body)) = rows.next_if(|(next, ..)| *next == me) {
            same_user.push((conversation, client_id, body));
        }
        outcomes.extend(messages::insert_outgoing_group(conn, &me, same_user, now)?);
    }
    Ok(outcomes)
}
