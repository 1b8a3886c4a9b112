//! Applying one inbound batch inside one store transaction: what it did (events to emit, acks,
//! cursors, receipts owed) is computed here and acted on by the engine after the commit.
//! Consecutive messages are stored as one run (see [`messages::apply_remote_run`]) and
//! consecutive acknowledgements are applied together (see [`messages::apply_acks`]); anything
//! else first applies what is queued before it, so effects keep their order.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;

use crate::error::Result;
use crate::event::Event;
use crate::model::{ConversationKind, ReceiptKind};
use crate::store::{conversations, messages, settings};
use crate::transport::{Incoming, RemoteEvent, RemoteEventKind, RemoteMessage};

/// What one inbound batch did, computed inside the store transaction.
#[derive(Default)]
pub(super) struct Applied {
    pub events: Vec<Event>,
    pub acked: Vec<String>,
    pub refused: Vec<(String, bool)>,
    /// The last cursor committed in this batch (to acknowledge).
    pub last_cursor: Option<String>,
    /// A sync page: (events, has_more) and its last cursor.
    pub page: Option<(u64, bool)>,
    pub page_cursor: Option<String>,
    /// Live events: the last cursor and how many.
    pub live: Option<(String, u64)>,
    /// Newest message received from others, per conversation: to send delivered receipts.
    pub delivered: Vec<(String, u64)>,
    pub pause_sends: bool,
}

/// Work in progress over one batch.
#[derive(Default)]
struct Batch {
    out: Applied,
    /// Messages not stored yet, with the kind of conversation to create if theirs is unknown.
    run: Vec<(RemoteMessage, ConversationKind)>,
    /// Acknowledgements not applied yet (only one of `run` and `acks` holds anything).
    acks: Vec<messages::Ack>,
    touched: BTreeSet<String>,
    delivered: BTreeMap<String, u64>,
}

impl Batch {
    /// Notes a conversation whose fields changed (without a new `String` when it is known).
    fn touch(&mut self, conversation: &str) {
        if !self.touched.contains(conversation) {
            self.touched.insert(conversation.to_owned());
        }
    }

    fn queue(&mut self, m: RemoteMessage, kind: ConversationKind) {
        self.touch(&m.conversation);
        self.run.push((m, kind));
    }

    /// Applies the queued acknowledgements.
    fn apply_acks(&mut self, conn: &Connection, me: &str) -> Result<()> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        let client_ids: Vec<String> = acks.iter().map(|a| a.client_id.clone()).collect();
        for (client_id, acked) in client_ids.into_iter().zip(messages::apply_acks(conn, me, acks)?) {
            if let Some(m) = acked {
                self.touch(&m.conversation_id);
                self.out.events.push(Event::MessageUpdated(m));
            }
            self.out.acked.push(client_id);
        }
        Ok(())
    }

    /// Stores the queued messages and applies the queued acknowledgements.
    fn flush(&mut self, conn: &Connection, me: &str) -> Result<()> {
        self.apply_acks(conn, me)?;
        self.store_run(conn, me)
    }

    /// Stores the queued messages.
    fn store_run(&mut self, conn: &Connection, me: &str) -> Result<()> {
        if self.run.is_empty() {
            return Ok(());
        }
        for applied in messages::apply_remote_run(conn, me, std::mem::take(&mut self.run))? {
            match applied {
                messages::Applied::Added(m) => self.out.events.push(Event::MessageAdded(m)),
                // Our own message echoed back: for transports without a separate acknowledgement
                // (XMPP), this is it.
                messages::Applied::Confirmed(m) => {
                    self.out.acked.push(m.client_id.clone());
                    self.out.events.push(Event::MessageUpdated(m));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn apply_batch(conn: &Connection, me: &str, batch: Vec<Incoming>) -> Result<Applied> {
    let mut b = Batch::default();
    for item in batch {
        match item {
            Incoming::SyncPage { events, has_more } => {
                let count = events.len() as u64;
                if let Some(last) = events.last() {
                    b.out.page_cursor = Some(last.cursor.clone());
                    b.out.last_cursor = Some(last.cursor.clone());
                }
                for e in events {
                    apply_event(conn, me, e, &mut b)?;
                }
                // One page per batch: the next is asked for only after this one commits.
                b.out.page = Some((count, has_more));
            }
            Incoming::Live(e) => {
                let cursor = e.cursor.clone();
                apply_event(conn, me, e, &mut b)?;
                let n = b.out.live.as_ref().map_or(0, |(_, n)| *n);
                b.out.live = Some((cursor.clone(), n + 1));
                b.out.last_cursor = Some(cursor);
            }
            Incoming::RoomMessage(m) => {
                b.apply_acks(conn, me)?;
                b.queue(m, ConversationKind::Room);
            }
            Incoming::Acked { client_id, server_id, seq, server_time_ms, .. } => {
                b.store_run(conn, me)?;
                b.acks.push(messages::Ack { client_id, server_id, seq, server_time_ms });
            }
            other => {
                b.flush(conn, me)?;
                apply_other(conn, me, other, &mut b)?;
            }
        }
    }
    b.flush(conn, me)?;
    let mut out = b.out;
    if let Some(cursor) = &out.last_cursor {
        settings::set(conn, settings::CURSOR, cursor)?;
    }
    for id in b.touched {
        if let Some(c) = conversations::get(conn, &id)? {
            out.events.push(Event::ConversationChanged(c));
        }
    }
    for (conversation, seq) in &b.delivered {
        conversations::owe_delivered(conn, conversation, *seq)?;
    }
    out.delivered = b.delivered.into_iter().collect();
    Ok(out)
}

/// Refusals and ephemeral events.
fn apply_other(conn: &Connection, me: &str, item: Incoming, b: &mut Batch) -> Result<()> {
    let out = &mut b.out;
    match item {
        Incoming::Refused { client_id, code, message, retryable } => {
            tracing::warn!(%client_id, %code, %message, retryable, "send refused");
            if let Some(m) = messages::apply_refused(conn, me, &client_id, &format!("{code}: {message}"), retryable)? {
                out.events.push(Event::MessageUpdated(m));
            }
            out.pause_sends |= retryable;
            out.refused.push((client_id, retryable));
        }
        Incoming::Typing { conversation, user, active } => out.events.push(Event::Typing { conversation_id: conversation, user, active }),
        Incoming::Presence { user, presence, status } => out.events.push(Event::Presence { user, presence, status }),
        // Revoked: handled by the engine once the batch is stored.
        Incoming::Pong
        | Incoming::Revoked { .. }
        | Incoming::SyncPage { .. }
        | Incoming::Live(_)
        | Incoming::RoomMessage(_)
        | Incoming::Acked { .. } => {}
    }
    Ok(())
}

/// A durable event: messages join the run; receipts and membership changes store it first.
fn apply_event(conn: &Connection, me: &str, event: RemoteEvent, b: &mut Batch) -> Result<()> {
    if let RemoteEventKind::Message(m) = event.kind {
        if m.sender != me {
            match b.delivered.get_mut(&m.conversation) {
                Some(seq) => *seq = (*seq).max(m.seq),
                None => {
                    b.delivered.insert(m.conversation.clone(), m.seq);
                }
            }
        }
        b.apply_acks(conn, me)?;
        b.queue(m, ConversationKind::Direct);
        return Ok(());
    }
    b.flush(conn, me)?;
    let (out, touched) = (&mut b.out, &mut b.touched);
    match event.kind {
        RemoteEventKind::Message(_) => unreachable!("queued above"),
        RemoteEventKind::Receipt { conversation, user, kind, seq, message } => {
            if conversation.is_empty() {
                return Ok(()); // an event kind this version does not know
            }
            if user == me && kind == ReceiptKind::Delivered {
                // Another device of ours sent this message's receipt: not owed here any more.
                if let Some(reference) = &message {
                    messages::receipt_sent_elsewhere(conn, &conversation, reference)?;
                }
            }
            let seq = match message {
                Some(reference) => match messages::seq_of_reference(conn, &conversation, me, &user, &reference)? {
                    Some(seq) => seq,
                    None => {
                        // Our own message, not confirmed yet; or one this device never saw.
                        if user != me {
                            let read = kind == ReceiptKind::Read;
                            if let Some(m) = messages::apply_receipt_before_ack(conn, &conversation, me, &reference, read)? {
                                touched.insert(conversation.clone());
                                out.events.push(Event::MessageUpdated(m));
                            }
                        }
                        return Ok(());
                    }
                },
                None => seq,
            };
            if user == me {
                if kind == ReceiptKind::Read && conversations::read_elsewhere(conn, &conversation, seq)? {
                    touched.insert(conversation.clone());
                }
            } else {
                for m in messages::apply_receipt(conn, &conversation, seq, kind == ReceiptKind::Read)? {
                    out.events.push(Event::MessageUpdated(m));
                }
            }
            out.events.push(Event::Receipt { conversation_id: conversation, user, kind, seq });
        }
        RemoteEventKind::Membership { conversation, .. } => {
            conversations::upsert(conn, me, &conversation, crate::now_ms())?;
            touched.insert(conversation.id);
        }
    }
    Ok(())
}
