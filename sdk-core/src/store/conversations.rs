//! Conversations: upserted from the server's descriptions, with the last message, unread count
//! and read marker maintained on each write.

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::{self, COLUMNS_M};
use crate::error::{Error, Result};
use crate::model::{Conversation, ConversationKind, ReceiptKind};
use crate::transport::RemoteConversation;

fn kind_code(kind: ConversationKind) -> i64 {
    match kind {
        ConversationKind::Direct => 0,
        ConversationKind::Group => 1,
        ConversationKind::Room => 2,
    }
}

fn kind_from(code: i64) -> ConversationKind {
    match code {
        1 => ConversationKind::Group,
        2 => ConversationKind::Room,
        _ => ConversationKind::Direct,
    }
}

const SELECT: &str = "SELECT c.id, c.kind, c.title, c.members, c.unread, c.draft, c.active, m.rowid";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conversation> {
    let members: String = r.get(3)?;
    let last_message = match r.get::<_, Option<i64>>(7)? {
        Some(_) => Some(messages::from_row_at(r, 8)?),
        None => None,
    };
    Ok(Conversation {
        id: r.get(0)?,
        kind: kind_from(r.get(1)?),
        title: r.get(2)?,
        members: members.split('\n').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        last_message,
        unread_count: r.get::<_, i64>(4)? as u32,
        draft: r.get(5)?,
        active: r.get(6)?,
    })
}

fn query(conn: &Connection, filter: &str, params: impl rusqlite::Params) -> Result<Vec<Conversation>> {
    let sql = format!("{SELECT}, {COLUMNS_M} FROM conversations c LEFT JOIN messages m ON m.rowid = c.last_rowid {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every conversation, most recently active first.
pub fn list(conn: &Connection) -> Result<Vec<Conversation>> {
    query(conn, "ORDER BY c.last_activity_ms DESC, c.id", [])
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<Conversation>> {
    Ok(query(conn, "WHERE c.id = ?1", [id])?.pop())
}

pub fn require(conn: &Connection, id: &str) -> Result<Conversation> {
    get(conn, id)?.ok_or_else(|| Error::NotFound(format!("conversation {id}")))
}

/// Inserts or refreshes a conversation from the server's description.
pub fn upsert(conn: &Connection, me: &str, c: &RemoteConversation, now: i64) -> Result<Conversation> {
    let active = c.members.iter().any(|m| m == me);
    conn.prepare_cached(
        "INSERT INTO conversations (id, kind, title, members, last_seq, read_seq, last_activity_ms, active)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,
             title = CASE WHEN excluded.title = '' THEN title ELSE excluded.title END, members = excluded.members,
             last_seq = max(last_seq, excluded.last_seq), read_seq = max(read_seq, excluded.read_seq),
             active = excluded.active",
    )?
    .execute(params![c.id, kind_code(c.kind), c.title, c.members.join("\n"), c.last_seq as i64, c.read_seq as i64, now, active])?;
    recount_unread(conn, &c.id)?;
    require(conn, &c.id)
}

/// Makes sure a conversation row exists for a message that arrived before its description.
pub fn ensure(conn: &Connection, id: &str, kind: ConversationKind) -> Result<()> {
    conn.prepare_cached("INSERT INTO conversations (id, kind) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")?
        .execute(params![id, kind_code(kind)])?;
    Ok(())
}

/// A message was stored: maintain the last message (by rowid), activity time, sequence and
/// unread count. Returns false if the conversation is not known yet.
pub fn on_message(conn: &Connection, conversation: &str, message_rowid: i64, seq: Option<u64>, unread: bool, at_ms: i64) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE conversations SET
             last_rowid = CASE WHEN ?3 IS NULL OR ?3 >= last_seq OR last_rowid IS NULL THEN ?2 ELSE last_rowid END,
             last_seq = max(last_seq, coalesce(?3, 0)),
             last_activity_ms = max(last_activity_ms, ?5),
             unread = unread + CASE WHEN ?4 AND ?3 > read_seq THEN 1 ELSE 0 END
         WHERE id = ?1",
        )?
        .execute(params![conversation, message_rowid, seq.map(|s| s as i64), unread, at_ms])?;
    Ok(changed == 1)
}

/// New messages from the server were stored (a run of them): the last message if it is the
/// newest, activity time, sequence and `unread` more unread messages, in one write.
pub fn on_messages(conn: &Connection, conversation: &str, last_rowid: i64, last_seq: u64, unread: u32, at_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE conversations SET
             last_rowid = CASE WHEN ?3 >= last_seq OR last_rowid IS NULL THEN ?2 ELSE last_rowid END,
             last_seq = max(last_seq, ?3),
             last_activity_ms = max(last_activity_ms, ?5),
             unread = unread + ?4
         WHERE id = ?1",
    )?
    .execute(params![conversation, last_rowid, last_seq as i64, unread, at_ms])?;
    Ok(())
}

/// The server holds nothing older than the oldest message cached for the conversation (see
/// `Client::messages`).
pub fn set_history_complete(conn: &Connection, conversation: &str) -> Result<()> {
    conn.prepare_cached("UPDATE conversations SET history_complete = 1 WHERE id = ?1")?.execute([conversation])?;
    Ok(())
}

/// Recomputes the last message after a local echo was removed.
pub fn refresh_last_message(conn: &Connection, conversation: &str) -> Result<()> {
    let unsent = super::messages::UNSENT;
    conn.prepare_cached(&format!(
        "UPDATE conversations SET last_rowid = coalesce(
             (SELECT rowid FROM messages WHERE conversation_id = ?1 AND {unsent} ORDER BY rowid DESC LIMIT 1),
             (SELECT rowid FROM messages WHERE conversation_id = ?1 AND seq IS NOT NULL ORDER BY seq DESC, rowid DESC LIMIT 1))
         WHERE id = ?1"
    ))?
    .execute([conversation])?;
    Ok(())
}

fn recount_unread(conn: &Connection, conversation: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE conversations SET unread = (
             SELECT count(*) FROM messages m WHERE m.conversation_id = ?1 AND m.outgoing = 0 AND m.seq > conversations.read_seq)
         WHERE id = ?1",
    )?
    .execute([conversation])?;
    Ok(())
}

/// The app read everything: returns the new read marker if it moved.
pub fn mark_read(conn: &Connection, conversation: &str) -> Result<Option<u64>> {
    let (last, read): (i64, i64) = conn
        .prepare_cached("SELECT last_seq, read_seq FROM conversations WHERE id = ?1")?
        .query_row([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("conversation {conversation}")))?;
    if last <= read {
        return Ok(None);
    }
    conn.prepare_cached("UPDATE conversations SET read_seq = ?2, unread = 0, read_synced = 0 WHERE id = ?1")?
        .execute(params![conversation, last])?;
    messages::mark_incoming_read(conn, conversation, read as u64, last as u64)?;
    Ok(Some(last as u64))
}

/// This user read up to `seq` on another device.
pub fn read_elsewhere(conn: &Connection, conversation: &str, seq: u64) -> Result<bool> {
    let previous: Option<i64> =
        conn.prepare_cached("SELECT read_seq FROM conversations WHERE id = ?1")?.query_row([conversation], |r| r.get(0)).optional()?;
    match previous {
        Some(previous) if (previous as u64) < seq => {
            conn.prepare_cached("UPDATE conversations SET read_seq = ?2 WHERE id = ?1")?.execute(params![conversation, seq as i64])?;
            messages::mark_incoming_read(conn, conversation, previous as u64, seq)?;
            recount_unread(conn, conversation)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Messages from others up to `seq` reached this device: a delivered receipt is owed until
/// [`set_receipt_synced`] (in the same transaction as the messages).
pub fn owe_delivered(conn: &Connection, conversation: &str, seq: u64) -> Result<()> {
    conn.prepare_cached("UPDATE conversations SET delivered_seq = ?2, delivered_synced = 0 WHERE id = ?1 AND delivered_seq < ?2")?
        .execute(params![conversation, seq as i64])?;
    Ok(())
}

/// The columns holding this device's own receipt of `kind` and whether the server has it.
fn own_receipt_columns(kind: ReceiptKind) -> (&'static str, &'static str) {
    match kind {
        ReceiptKind::Delivered => ("delivered_seq", "delivered_synced"),
        ReceiptKind::Read => ("read_seq", "read_synced"),
    }
}

/// This device's receipts (delivered, or read markers) not yet confirmed by the server;
/// delivered receipts also where a message's own receipt is still owed.
pub fn unsynced_receipts(conn: &Connection, kind: ReceiptKind) -> Result<Vec<(String, u64)>> {
    let (seq, synced) = own_receipt_columns(kind);
    let owed = match kind {
        ReceiptKind::Delivered => format!(
            " OR id IN (SELECT DISTINCT conversation_id FROM messages WHERE receipt_flags & {} != 0)",
            messages::RECEIPT_OWED
        ),
        ReceiptKind::Read => String::new(),
    };
    let mut stmt = conn.prepare_cached(&format!("SELECT id, {seq} FROM conversations WHERE {synced} = 0{owed}"))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The server confirmed this device's receipt of `kind` up to `seq`.
pub fn set_receipt_synced(conn: &Connection, kind: ReceiptKind, conversation: &str, seq: u64) -> Result<()> {
    let (column, synced) = own_receipt_columns(kind);
    conn.prepare_cached(&format!("UPDATE conversations SET {synced} = 1 WHERE id = ?1 AND {column} <= ?2"))?
        .execute(params![conversation, seq as i64])?;
    Ok(())
}

pub fn set_draft(conn: &Connection, conversation: &str, draft: Option<&str>) -> Result<Conversation> {
    conn.prepare_cached("UPDATE conversations SET draft = ?2 WHERE id = ?1")?.execute(params![conversation, draft])?;
    require(conn, conversation)
}

pub fn set_active(conn: &Connection, conversation: &str, active: bool) -> Result<()> {
    conn.prepare_cached("UPDATE conversations SET active = ?2 WHERE id = ?1")?.execute(params![conversation, active])?;
    Ok(())
}

/// Chat rooms this user is in: rejoined after every reconnect.
pub fn active_rooms(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM conversations WHERE kind = 2 AND active = 1")?;
    let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(rows)
}
