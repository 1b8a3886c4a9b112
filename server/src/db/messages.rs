//! Messages, the per-user inbox (cursors), sync, history and receipts.
//!
//! Every durable event for a user is a row of `inbox` under a cursor that grows by exactly one per
//! event of that user (`users.last_cursor`). Sending a message assigns the next per-conversation
//! sequence number and appends one inbox row per member; (sender, client id) is unique, so a
//! resend returns the original acknowledgement and appends nothing. Other events for several
//! users (receipts, membership changes) are stored once and referred to by each inbox row.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use missive_proto::v1::{self, ConversationKind};
use missive_proto::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};

use super::accounts::UserId;
use super::blocks;
use super::conversations::{ConversationId, Membership, member_ids, require_member};
use crate::error::{ApiError, ApiResult};

/// A durable event for one user, to push to that user's live sessions after the commit.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user: UserId,
    pub event: v1::Event,
}

/// What a send produced.
pub struct SendOutcome {
    pub ack: v1::SendAck,
    /// Inbox events to fan out (1:1 and groups).
    pub deliveries: Vec<Delivery>,
    /// For chat rooms: the message to fan out to the sessions present.
    pub room_message: Option<(ConversationId, v1::Message)>,
}

/// Moves a user's inbox cursor on by one and returns it. An update then a read, not one
/// statement with `RETURNING`: SQLite gathers returned rows in a temporary table it opens on
/// every execution, which costs more than the update itself.
fn next_cursor(conn: &Connection, user: UserId) -> ApiResult<u64> {
    conn.prepare_cached("UPDATE users SET last_cursor = last_cursor + 1 WHERE id = ?1")?.execute([user])?;
    Ok(conn.prepare_cached("SELECT last_cursor FROM users WHERE id = ?1")?.query_row([user], |r| r.get::<_, i64>(0))? as u64)
}

/// Appends one non-message event (a receipt, a membership change) to the inbox of each of
/// `users`. The event is stored once (`shared_events`); each inbox row refers to it under that
/// user's next cursor. What one change writes is thus its event plus a small row per user, not a
/// copy of the event per user.
pub fn append_shared_event(conn: &Connection, users: &[UserId], kind: v1::event::Kind) -> ApiResult<Vec<Delivery>> {
    let event = v1::Event { cursor: 0, kind: Some(kind) };
    conn.prepare_cached("INSERT INTO shared_events (event) VALUES (?1)")?.execute([event.encode_to_vec()])?;
    let shared = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached("INSERT INTO inbox (user_id, cursor, shared_event_id) VALUES (?1, ?2, ?3)")?;
    let mut deliveries = Vec::with_capacity(users.len());
    for &user in users {
        let cursor = next_cursor(conn, user)?;
        insert.execute(params![user, cursor as i64, shared])?;
        deliveries.push(Delivery { user, event: v1::Event { cursor, kind: event.kind.clone() } });
    }
    Ok(deliveries)
}

/// One message of a batch of sends.
pub struct Outgoing {
    pub client_id: String,
    pub conversation: ConversationId,
    pub body: v1::MessageBody,
}

/// What a batch has learnt about a conversation it sends to: read once per batch, the sequence
/// number kept in memory and written back once at the end.
struct Target {
    kind: ConversationKind,
    last_seq: i64,
    /// The members, read when the first message goes to their inboxes (never for rooms).
    members: Option<Vec<UserId>>,
}

/// Stores a batch of one sender's messages in order, each once per (sender, client id), and
/// appends each to its members' inboxes, for less than one by one: each conversation's kind,
/// membership, sequence number and members are read once per batch, each member's cursor is
/// read once and written once, and a conversation's sequence number is written once. Per message, its outcome: a refusal (not a member, no such
/// conversation) is that message's alone and writes nothing for it; a storage failure fails the
/// whole batch (the caller's transaction rolls it back).
pub fn send_batch(conn: &Connection, me: UserId, me_name: &str, batch: Vec<Outgoing>, now: i64) -> ApiResult<Vec<ApiResult<SendOutcome>>> {
    let mut targets = HashMap::<ConversationId, Result<Target, v1::Error>>::new();
    let mut cursors = HashMap::<UserId, i64>::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for Outgoing { client_id, conversation: conv, body } in batch {
        if let Some(ack) = original_ack(conn, me, &client_id)? {
            outcomes.push(Ok(SendOutcome { ack, deliveries: vec![], room_message: None }));
            continue;
        }
        let target = match targets.entry(conv) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(match target(conn, conv, me) {
                Ok(t) => Ok(t),
                Err(ApiError::Refused(refusal)) => Err(refusal),
                Err(storage) => return Err(storage),
            }),
        };
        let target = match target {
            Ok(t) => t,
            Err(refusal) => {
                outcomes.push(Err(ApiError::Refused(refusal.clone())));
                continue;
            }
        };
        target.last_seq += 1;
        let seq = target.last_seq;
        conn.prepare_cached(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_id, body, server_time_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![conv, seq, me, client_id, body.encode_to_vec(), now])?;
        let id = conn.last_insert_rowid();
        // Sending does not move the sender's receipts: messages of others may still be on their
        // way to it (they cross), and a silent jump would swallow its real receipt for them later.
        let message = v1::Message {
            server_id: id as u64,
            conversation_id: conv as u64,
            seq: seq as u64,
            sender: me_name.to_owned(),
            client_id: client_id.clone(),
            body: Some(body),
            server_time_ms: now,
        };
        let ack = v1::SendAck {
            client_id,
            server_id: id as u64,
            conversation_id: conv as u64,
            seq: seq as u64,
            server_time_ms: now,
            duplicate: false,
        };
        if target.kind == ConversationKind::Room {
            outcomes.push(Ok(SendOutcome { ack, deliveries: vec![], room_message: Some((conv, message)) }));
            continue;
        }
        let members = match &target.members {
            Some(m) => m,
            None => target.members.insert(members_and_cursors(conn, conv, &mut cursors)?),
        };
        // Per member: its cursor moves on by one and an inbox row is written under it
        // (single-row statements: a statement writing several rows needs a statement journal).
        let mut insert = conn.prepare_cached("INSERT INTO inbox (user_id, cursor, message_id) VALUES (?1, ?2, ?3)")?;
        let mut deliveries = Vec::with_capacity(members.len());
        for &user in members {
            let cursor = cursors.get_mut(&user).expect("every member's cursor is read");
            *cursor += 1;
            insert.execute(params![user, *cursor, id])?;
            deliveries.push(Delivery {
                user,
                event: v1::Event { cursor: *cursor as u64, kind: Some(v1::event::Kind::Message(message.clone())) },
            });
        }
        outcomes.push(Ok(SendOutcome { ack, deliveries, room_message: None }));
    }
    let mut set_seq = conn.prepare_cached("UPDATE conversations SET last_seq = ?2 WHERE id = ?1")?;
    for (conv, target) in &targets {
        if let Ok(t) = target {
            set_seq.execute(params![conv, t.last_seq])?;
        }
    }
    let mut set_cursor = conn.prepare_cached("UPDATE users SET last_cursor = ?2 WHERE id = ?1")?;
    for (user, cursor) in cursors {
        set_cursor.execute(params![user, cursor])?;
    }
    Ok(outcomes)
}

/// The acknowledgement of `client_id` if `me` sent it already (a resend).
fn original_ack(conn: &Connection, me: UserId, client_id: &str) -> ApiResult<Option<v1::SendAck>> {
    let original: Option<(i64, i64, i64, i64)> = conn
        .prepare_cached("SELECT id, conversation_id, seq, server_time_ms FROM messages WHERE sender_id = ?1 AND client_id = ?2")?
        .query_row(params![me, client_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(original.map(|(id, conversation_id, seq, server_time_ms)| v1::SendAck {
        client_id: client_id.to_owned(),
        server_id: id as u64,
        conversation_id: conversation_id as u64,
        seq: seq as u64,
        server_time_ms,
        duplicate: true,
    }))
}

/// A conversation `me` may send to: a member, and in a 1:1 conversation not blocked by the peer.
fn target(conn: &Connection, conv: ConversationId, me: UserId) -> ApiResult<Target> {
    let m = require_member(conn, conv, me)?;
    if m.kind == ConversationKind::Direct && blocks::blocked_in(conn, conv, me)? {
        return Err(blocks::refusal());
    }
    if m.kind != ConversationKind::Room {
        super::conversations::engage(conn, conv, me)?;
    }
    Ok(Target { kind: m.kind, last_seq: m.last_seq, members: None })
}

/// The members of a conversation, in one statement with their cursors; a cursor the batch
/// already holds (a member of two conversations) is newer than the stored one and stays.
fn members_and_cursors(conn: &Connection, conv: ConversationId, cursors: &mut HashMap<UserId, i64>) -> ApiResult<Vec<UserId>> {
    let mut stmt = conn
        .prepare_cached("SELECT m.user_id, u.last_cursor FROM members m JOIN users u ON u.id = m.user_id WHERE m.conversation_id = ?1")?;
    let rows = stmt.query_map([conv], |r| Ok((r.get::<_, UserId>(0)?, r.get::<_, i64>(1)?)))?;
    let mut members = vec![];
    for row in rows {
        let (user, stored) = row?;
        cursors.entry(user).or_insert(stored);
        members.push(user);
    }
    Ok(members)
}

/// Bytes a page may fill, leaving room for the envelope around it.
pub(crate) const PAGE_BYTES: usize = missive_proto::MAX_FRAME_BYTES - 16 * 1024;

/// What an event or message adds to a page besides its stored bytes (body, client id, event
/// blob), at most: numbers, the sender's name and the protobuf framing.
const ITEM_OVERHEAD: usize = missive_proto::MAX_USERNAME_LEN + 64;

/// How many of the leading items (by their stored sizes) fit in one page: at least one (a body
/// is far smaller than a frame), and whether the page was cut short for size.
fn fit(sizes: impl IntoIterator<Item = usize>) -> (usize, bool) {
    let mut total = 0;
    let mut count = 0;
    for size in sizes {
        total += size + ITEM_OVERHEAD;
        if total > PAGE_BYTES && count > 0 {
            return (count, true);
        }
        count += 1;
    }
    (count, false)
}

/// Keeps the longest prefix that fits in one frame (at least one item). A safety net behind
/// [`fit`], whose sizes are upper bounds. Returns whether anything was cut.
fn truncate_to_frame<M: prost::Message>(items: &mut Vec<M>) -> bool {
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        total += item.encoded_len() + 8;
        if total > PAGE_BYTES && i > 0 {
            items.truncate(i);
            return true;
        }
    }
    false
}

pub(crate) fn page_size(limit: u32) -> u32 {
    if limit == 0 { DEFAULT_PAGE_SIZE } else { limit.min(MAX_PAGE_SIZE) }
}

fn message_from_row(r: &rusqlite::Row<'_>, base: usize) -> rusqlite::Result<v1::Message> {
    let body: Vec<u8> = r.get(base + 5)?;
    Ok(v1::Message {
        server_id: r.get::<_, i64>(base)? as u64,
        conversation_id: r.get::<_, i64>(base + 1)? as u64,
        seq: r.get::<_, i64>(base + 2)? as u64,
        sender: r.get(base + 3)?,
        client_id: r.get(base + 4)?,
        body: v1::MessageBody::decode(body.as_slice()).ok(),
        server_time_ms: r.get(base + 6)?,
    })
}

/// Events of `me` with cursor > `since`, oldest first, as many as fit in one frame. Read in two
/// steps: the stored sizes of up to `limit` events first (SQLite takes a blob's length from its
/// record, without reading the blob), then the events that fit, whole.
pub fn sync(conn: &Connection, me: UserId, since: u64, limit: u32) -> ApiResult<v1::SyncPage> {
    let limit = page_size(limit) as usize;
    let sizes: Vec<(i64, usize)> = conn
        .prepare_cached(
            "SELECT i.cursor, coalesce(length(i.event), length(s.event), 0) + coalesce(length(m.body) + length(m.client_id), 0)
             FROM inbox i LEFT JOIN messages m ON m.id = i.message_id LEFT JOIN shared_events s ON s.id = i.shared_event_id
             WHERE i.user_id = ?1 AND i.cursor > ?2 ORDER BY i.cursor LIMIT ?3",
        )?
        .query_map(params![me, since as i64, limit as i64 + 1], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
        .collect::<Result<_, _>>()?;
    let (count, cut) = fit(sizes.iter().take(limit).map(|(_, size)| *size));
    let mut has_more = sizes.len() > limit || cut;
    let Some(&(last, _)) = sizes.get(count.wrapping_sub(1)) else {
        return Ok(v1::SyncPage { events: vec![], has_more: false, next_cursor: since });
    };
    let mut stmt = conn.prepare_cached(
        "SELECT i.cursor, coalesce(i.event, s.event), m.id, m.conversation_id, m.seq, u.name, m.client_id, m.body, m.server_time_ms
         FROM inbox i
         LEFT JOIN messages m ON m.id = i.message_id
         LEFT JOIN users u ON u.id = m.sender_id
         LEFT JOIN shared_events s ON s.id = i.shared_event_id
         WHERE i.user_id = ?1 AND i.cursor > ?2 AND i.cursor <= ?3 ORDER BY i.cursor",
    )?;
    let mut events = stmt
        .query_map(params![me, since as i64, last], |r| {
            let cursor = r.get::<_, i64>(0)? as u64;
            let blob: Option<Vec<u8>> = r.get(1)?;
            let event = match blob {
                // A shared event is stored without the cursor, which is each user's own.
                Some(blob) => v1::Event { cursor, kind: v1::Event::decode(blob.as_slice()).ok().and_then(|e| e.kind) },
                None => v1::Event { cursor, kind: Some(v1::event::Kind::Message(message_from_row(r, 2)?)) },
            };
            Ok(event)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    has_more |= truncate_to_frame(&mut events);
    let next_cursor = events.last().map_or(since, |e| e.cursor);
    Ok(v1::SyncPage { events, has_more, next_cursor })
}

/// Messages of a conversation with seq < `before` (0: from the newest), newest first, as many as
/// fit in one frame: their sizes first, then the messages that fit, whole (as for [`sync`]).
pub fn history(conn: &Connection, me: UserId, conv: ConversationId, before: u64, limit: u32) -> ApiResult<v1::HistoryPage> {
    require_member(conn, conv, me)?;
    let limit = page_size(limit) as usize;
    let before = if before == 0 { i64::MAX } else { before as i64 };
    let sizes: Vec<(i64, usize)> = conn
        .prepare_cached(
            "SELECT seq, length(body) + length(client_id) FROM messages
             WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )?
        .query_map(params![conv, before, limit as i64 + 1], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
        .collect::<Result<_, _>>()?;
    let (count, cut) = fit(sizes.iter().take(limit).map(|(_, size)| *size));
    let mut has_more = sizes.len() > limit || cut;
    let Some(&(oldest, _)) = sizes.get(count.wrapping_sub(1)) else {
        return Ok(v1::HistoryPage { messages: vec![], has_more: false });
    };
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.conversation_id, m.seq, u.name, m.client_id, m.body, m.server_time_ms
         FROM messages m JOIN users u ON u.id = m.sender_id
         WHERE m.conversation_id = ?1 AND m.seq < ?2 AND m.seq >= ?3 ORDER BY m.seq DESC",
    )?;
    let mut messages = stmt.query_map(params![conv, before, oldest], |r| message_from_row(r, 0))?.collect::<Result<Vec<_>, _>>()?;
    has_more |= truncate_to_frame(&mut messages);
    Ok(v1::HistoryPage { messages, has_more })
}

/// Records a delivered or read receipt up to `seq` and tells every member (the user's own other
/// devices included). Receipts never move backwards; a receipt that changes nothing is a no-op.
pub fn receipt(
    conn: &Connection,
    me: UserId,
    me_name: &str,
    conv: ConversationId,
    seq: u64,
    kind: v1::ReceiptKind,
    now: i64,
) -> ApiResult<Vec<Delivery>> {
    let Membership { kind: conv_kind, last_seq, .. } = require_member(conn, conv, me)?;
    let seq = (seq as i64).min(last_seq);
    let sql = match kind {
        v1::ReceiptKind::Read => {
            "UPDATE members SET read_seq = ?3, delivered_seq = max(delivered_seq, ?3)
             WHERE conversation_id = ?1 AND user_id = ?2 AND read_seq < ?3"
        }
        _ => {
            "UPDATE members SET delivered_seq = ?3
             WHERE conversation_id = ?1 AND user_id = ?2 AND delivered_seq < ?3"
        }
    };
    let changed = conn.prepare_cached(sql)?.execute(params![conv, me, seq])?;
    if changed == 0 || conv_kind == ConversationKind::Room {
        return Ok(vec![]);
    }
    let receipt = v1::Receipt { conversation_id: conv as u64, user: me_name.to_owned(), kind: kind as i32, seq: seq as u64, at_ms: now };
    append_shared_event(conn, &member_ids(conn, conv)?, v1::event::Kind::Receipt(receipt))
}

/// Checks membership and returns who should see a typing notification (everyone but `me`).
pub fn typing_audience(conn: &Connection, me: UserId, conv: ConversationId) -> ApiResult<(ConversationKind, Vec<UserId>)> {
    let kind = require_member(conn, conv, me)?.kind;
    let others = member_ids(conn, conv)?.into_iter().filter(|&u| u != me).collect();
    Ok((kind, others))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{accounts, conversations, schema};

    fn text(t: &str) -> v1::MessageBody {
        v1::MessageBody { kind: Some(v1::message_body::Kind::Text(v1::Text { text: t.as_bytes().to_vec().into() })) }
    }

    fn send(client_id: &str, conversation: ConversationId) -> Outgoing {
        Outgoing { client_id: client_id.into(), conversation, body: text(client_id) }
    }

    fn cursor(conn: &Connection, user: UserId) -> i64 {
        conn.query_row("SELECT last_cursor FROM users WHERE id = ?1", [user], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_batch_lands_as_sends_one_by_one_and_refusals_stay_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::prepare(&mut conn, "FULL").unwrap();
        let [ann, ben, cat] = ["ann", "ben", "cat"].map(|n| accounts::create_user(&conn, n, "hash", 1).unwrap());
        let ann_ben = conversations::create_direct(&conn, ann, "ann", "ben", 1).unwrap().0.id as i64;
        let ann_cat = conversations::create_direct(&conn, ann, "ann", "cat", 1).unwrap().0.id as i64;
        let ben_cat = conversations::create_direct(&conn, ben, "ben", "cat", 1).unwrap().0.id as i64;
        let before = [ann, ben, cat].map(|u| cursor(&conn, u));

        let batch = vec![send("a1", ann_ben), send("a2", ann_cat), send("x", ben_cat), send("a3", ann_ben), send("a1", ann_ben)];
        let outcomes = send_batch(&conn, ann, "ann", batch, 5).unwrap();
        let acks: Vec<_> = outcomes.iter().map(|o| o.as_ref().ok().map(|o| (o.ack.seq, o.ack.duplicate))).collect();
        assert_eq!(acks, vec![Some((1, false)), Some((1, false)), None, Some((2, false)), Some((1, true))]);
        let refusal = outcomes[2].as_ref().err().map(|e| format!("{e:?}")).unwrap();
        assert!(refusal.contains("no such conversation"), "{refusal}");
        let first = outcomes[0].as_ref().ok().unwrap();
        assert_eq!(outcomes[4].as_ref().ok().unwrap().ack.server_id, first.ack.server_id, "a resend gets the original ack");

        // Each member's cursor moved on by one per message it received, and the events carry them.
        assert_eq!([ann, ben, cat].map(|u| cursor(&conn, u)), [before[0] + 3, before[1] + 2, before[2] + 1]);
        let ann_cursors: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .flat_map(|o| o.deliveries.iter().filter(|d| d.user == ann).map(|d| d.event.cursor))
            .collect();
        let first_cursor = before[0] as u64;
        assert_eq!(ann_cursors, vec![first_cursor + 1, first_cursor + 2, first_cursor + 3]);
        let inbox: i64 = conn.query_row("SELECT count(*) FROM inbox WHERE message_id IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(inbox, 6, "two inbox rows per stored message, none for the refused one or the resend");

        // The sequence numbers were written back: the next batch goes on from them.
        let next = send_batch(&conn, ann, "ann", vec![send("a4", ann_ben), send("a5", ann_cat)], 6).unwrap();
        let seqs: Vec<u64> = next.iter().map(|o| o.as_ref().ok().unwrap().ack.seq).collect();
        assert_eq!(seqs, vec![3, 2]);
        let unknown = send_batch(&conn, ann, "ann", vec![send("a6", 999)], 7).unwrap();
        assert!(format!("{:?}", unknown[0].as_ref().err().unwrap()).contains("no such conversation"));
    }
}
