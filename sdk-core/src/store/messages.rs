//! Messages and the outbox.
//!
//! Identity (DESIGN §3.9): a message from the server is recognised by its server id, unique
//! within its conversation (a unique index), so applying it twice changes nothing and raises no
//! second event (exactly once for the app). A message with a stable client id (see
//! `RemoteMessage`) is stored as `"{sender}:{client_id}"`, the same on the sender's devices and
//! every recipient's: that id recognises our own echo when the server confirms it, and a
//! sender's resend (another server id, the same client id and body) as the message already
//! shown. Any other message (no stable id, or a stable id an earlier message with another body
//! holds) is stored as `"{conversation}#{server_id}"`: never dropped for the id its sender
//! chose.

use rusqlite::{Connection, OptionalExtension, params};

use super::conversations;
use crate::error::{Error, Result};
use crate::model::{Body, ConversationKind, Message, MessageState};
use crate::transport::RemoteMessage;
use crate::wire::{decode_body, encode_body};

/// The local id of a message.
pub fn message_id(sender: &str, client_id: &str) -> String {
    format!("{sender}:{client_id}")
}

/// The local id of a message from the server whose sender's id cannot name it (none, or one
/// already taken): from what the server guarantees unique.
pub fn server_keyed_id(m: &RemoteMessage) -> String {
    format!("{}#{}", m.conversation, m.server_id)
}

/// The local id a message from the server is stored under, unless it is taken (see the module
/// header).
fn preferred_id(m: &RemoteMessage) -> String {
    if m.stable_client_id && !m.client_id.is_empty() { message_id(&m.sender, &m.client_id) } else { server_keyed_id(m) }
}

/// `receipt_flags`: no chat marker may name the message (its sender did not make it markable).
pub(crate) const NO_MARKERS: i64 = 1;
/// `receipt_flags`: a delivery receipt of its own is owed for the message, not yet confirmed sent.
pub(crate) const RECEIPT_OWED: i64 = 2;

/// The `receipt_flags` a message from the server is stored with.
fn receipt_flags(m: &RemoteMessage, me: &str) -> i64 {
    let mut flags = 0;
    if !m.receipts.markers {
        flags |= NO_MARKERS;
    }
    if m.receipts.delivery && m.sender != me {
        flags |= RECEIPT_OWED;
    }
    flags
}

/// Message columns, prefixed with `m.`, in the order `from_row_at` reads them.
pub const COLUMNS_M: &str = "m.id, m.conversation_id, m.sender, m.client_id, m.server_id, m.seq, m.body, m.state, m.failure, m.failure_retryable, m.outgoing, m.timestamp_ms";
/// The same columns unqualified.
const COLUMNS: &str =
    "id, conversation_id, sender, client_id, server_id, seq, body, state, failure, failure_retryable, outgoing, timestamp_ms";

pub(crate) fn from_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Message> {
    let body: Vec<u8> = r.get(at + 6)?;
    let state = match r.get::<_, i64>(at + 7)? {
        0 => MessageState::Pending,
        1 => MessageState::Sending,
        2 => MessageState::Sent,
        3 => MessageState::Delivered,
        4 => MessageState::Read,
        _ => MessageState::Failed { reason: r.get::<_, Option<String>>(at + 8)?.unwrap_or_default(), retryable: r.get(at + 9)? },
    };
    Ok(Message {
        id: r.get(at)?,
        conversation_id: r.get(at + 1)?,
        sender: r.get(at + 2)?,
        client_id: r.get(at + 3)?,
        server_id: r.get(at + 4)?,
        seq: r.get::<_, Option<i64>>(at + 5)?.map(|s| s as u64),
        body: decode_body(&body),
        state,
        outgoing: r.get(at + 10)?,
        timestamp_ms: r.get(at + 11)?,
    })
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<Message>> {
    let sql = format!("SELECT {COLUMNS_M} FROM messages m WHERE m.id = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row([id], |r| from_row_at(r, 0)).optional()?)
}

fn require(conn: &Connection, id: &str) -> Result<Message> {
    get(conn, id)?.ok_or_else(|| Error::NotFound(format!("message {id}")))
}

/// The outbox: our messages the server has not acknowledged (`messages_unsent`, a partial index).
pub(crate) const UNSENT: &str = "outgoing = 1 AND server_id IS NULL";

/// Commits a local echo, which puts it in the outbox. Returns the message and its creation
/// order, or `NotFound` (with nothing written) if the conversation does not exist.
pub fn insert_outgoing(conn: &Connection, me: &str, conversation: &str, client_id: &str, body: &Body, now: i64) -> Result<(Message, i64)> {
    let row = (conversation.to_owned(), client_id.to_owned(), body.clone());
    insert_outgoing_group(conn, me, vec![row], now)?.pop().expect("one outcome per row")
}

/// A send waiting to be committed: conversation, client id and body.
pub type OutgoingRow = (String, String, Body);

/// Commits the local echoes of a group of sends, which puts them in the outbox, with the effect
/// of [`insert_outgoing`] on each in turn for a fraction of the cost: multi-row inserts and one
/// update of each conversation's fields. A send to a conversation that does not exist gets
/// `NotFound` alone, with nothing written for it; any other failure fails the whole group.
pub fn insert_outgoing_group(conn: &Connection, me: &str, rows: Vec<OutgoingRow>, now: i64) -> Result<Vec<Result<(Message, i64)>>> {
    let mut known = std::collections::HashMap::<String, bool>::new();
    for (conversation, _, _) in &rows {
        if !known.contains_key(conversation) {
            let exists = conn
                .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")?
                .query_row([conversation], |_| Ok(()))
                .optional()?
                .is_some();
            known.insert(conversation.clone(), exists);
        }
    }
    let storable: Vec<&OutgoingRow> = rows.iter().filter(|(conversation, _, _)| known[conversation.as_str()]).collect();
    let mut rowids = Vec::with_capacity(storable.len());
    for range in insert_chunks(storable.len()) {
        let (size, chunk) = (range.len(), &storable[range]);
        let mut stmt = conn.prepare_cached(&insert_outgoing_sql(size))?;
        for (i, (conversation, client_id, body)) in chunk.iter().enumerate() {
            let p = i * 6 + 1;
            stmt.raw_bind_parameter(p, message_id(me, client_id))?;
            stmt.raw_bind_parameter(p + 1, conversation)?;
            stmt.raw_bind_parameter(p + 2, me)?;
            stmt.raw_bind_parameter(p + 3, client_id)?;
            stmt.raw_bind_parameter(p + 4, encode_body(body))?;
            stmt.raw_bind_parameter(p + 5, now)?;
        }
        // `OR IGNORE` spares the statement a journal; a row it skipped (a client id used twice)
        // fails the group, as a failed plain insert would.
        if stmt.raw_execute()? != size {
            return Err(Error::Storage("a client id is already in use".into()));
        }
        let last = conn.last_insert_rowid();
        rowids.extend(last - size as i64 + 1..=last);
    }
    let mut newest = std::collections::HashMap::<&str, i64>::new();
    for ((conversation, _, _), rowid) in storable.iter().zip(&rowids) {
        newest.insert(conversation, *rowid);
    }
    for (conversation, rowid) in newest {
        conversations::on_message(conn, conversation, rowid, None, false, now)?;
    }
    let mut rowids = rowids.into_iter();
    let outcomes = rows
        .into_iter()
        .map(|(conversation, client_id, body)| {
            if !known[conversation.as_str()] {
                return Err(Error::NotFound(format!("conversation {conversation}")));
            }
            let rowid = rowids.next().expect("one rowid per stored row");
            let message = Message {
                id: message_id(me, &client_id),
                conversation_id: conversation,
                sender: me.to_owned(),
                client_id,
                server_id: None,
                seq: None,
                body,
                state: MessageState::Pending,
                outgoing: true,
                timestamp_ms: now,
            };
            Ok((message, rowid))
        })
        .collect();
    Ok(outcomes)
}

fn insert_outgoing_sql(rows: usize) -> String {
    let values = vec!["(?,?,?,?,?,0,1,?)"; rows].join(",");
    format!("INSERT OR IGNORE INTO messages (id, conversation_id, sender, client_id, body, state, outgoing, timestamp_ms) VALUES {values}")
}

/// An outbox row as loaded at start.
pub struct Unsent {
    pub client_id: String,
    pub conversation: String,
    pub body: Body,
    pub order: i64,
    pub failed: bool,
}

/// The outbox in creation order.
pub fn load_outbox(conn: &Connection) -> Result<Vec<Unsent>> {
    let sql = format!(
        "SELECT client_id, conversation_id, body, rowid, state = 5 FROM messages INDEXED BY messages_unsent
         WHERE {UNSENT} ORDER BY rowid"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            let body: Vec<u8> = r.get(2)?;
            Ok(Unsent { client_id: r.get(0)?, conversation: r.get(1)?, body: decode_body(&body), order: r.get(3)?, failed: r.get(4)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The ids of the messages in the outbox, without those parked as Failed.
pub fn unsent_ids(conn: &Connection) -> Result<Vec<String>> {
    let sql = format!("SELECT id FROM messages INDEXED BY messages_unsent WHERE {UNSENT} AND state != 5");
    let mut stmt = conn.prepare_cached(&sql)?;
    let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(ids)
}

/// How many messages are in the outbox, with or without those parked as Failed.
pub fn unsent_count(conn: &Connection, include_failed: bool) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM messages INDEXED BY messages_unsent WHERE {UNSENT} AND (?1 OR state != 5)");
    Ok(conn.prepare_cached(&sql)?.query_row([include_failed], |r| r.get::<_, i64>(0))? as u64)
}

/// The server acknowledged one of our messages: it is Sent and leaves the outbox (it has a
/// server id now). A receipt may have arrived first (after a lost ack the resend's ack can come
/// after the receipts synced on reconnect): a message at or below the receipts already seen is
/// Delivered or Read at once. `None` if unknown (cancelled meanwhile), or if the server id is
/// already another message's (`OR IGNORE`: the message stays unsent, and one bad id does not
/// fail the whole inbound batch; it also spares SQLite a statement journal per ack).
pub fn apply_ack(conn: &Connection, me: &str, client_id: &str, server_id: &str, seq: u64, server_time_ms: i64) -> Result<Option<Message>> {
    let ack = Ack { client_id: client_id.to_owned(), server_id: server_id.to_owned(), seq, server_time_ms };
    Ok(apply_acks(conn, me, vec![ack])?.pop().flatten())
}

/// The server's acknowledgement of one of our messages.
pub struct Ack {
    pub client_id: String,
    pub server_id: String,
    pub seq: u64,
    pub server_time_ms: i64,
}

/// Applies acknowledgements in order, each as [`apply_ack`] describes, for less than one by
/// one: each message is read once and updated by rowid (no `RETURNING`: SQLite gathers returned
/// rows in a temporary table it opens per execution, about 25 µs), the receipts already seen
/// are read once per conversation, and each conversation's fields are written once. Per ack,
/// the acknowledged message, if any.
pub fn apply_acks(conn: &Connection, me: &str, acks: Vec<Ack>) -> Result<Vec<Option<Message>>> {
    let mut receipts = std::collections::HashMap::<String, Option<(i64, i64)>>::new();
    let mut newest = std::collections::HashMap::<String, (u64, i64, i64)>::new();
    let mut out = Vec::with_capacity(acks.len());
    for ack in acks {
        let id = message_id(me, &ack.client_id);
        let found = conn
            .prepare_cached(&format!("SELECT m.rowid, {COLUMNS_M} FROM messages m WHERE m.id = ?1"))?
            .query_row([&id], |r| Ok((r.get::<_, i64>(0)?, from_row_at(r, 1)?)))
            .optional()?;
        // Unknown (cancelled meanwhile), or confirmed already and past Sending.
        let Some((rowid, mut message)) = found else {
            out.push(None);
            continue;
        };
        let unconfirmed = matches!(message.state, MessageState::Pending | MessageState::Sending | MessageState::Failed { .. });
        if message.server_id.is_some() && !unconfirmed {
            out.push(None);
            continue;
        }
        if unconfirmed {
            message.state = state_after_ack(conn, &mut receipts, &message.conversation_id, ack.seq)?;
        }
        let changed = conn
            .prepare_cached("UPDATE OR IGNORE messages SET server_id = ?2, seq = ?3, failure = NULL, state = ?4 WHERE rowid = ?1")?
            .execute(params![rowid, ack.server_id, ack.seq as i64, message.state.code()])?;
        if changed == 0 {
            out.push(None); // the server id is already another message's
            continue;
        }
        (message.server_id, message.seq) = (Some(ack.server_id), Some(ack.seq));
        let at = ack.server_time_ms.max(message.timestamp_ms);
        let entry = newest.entry(message.conversation_id.clone()).or_insert((ack.seq, rowid, at));
        if ack.seq >= entry.0 {
            (entry.0, entry.1) = (ack.seq, rowid);
        }
        entry.2 = entry.2.max(at);
        out.push(Some(message));
    }
    for (conversation, (seq, rowid, at)) in newest {
        conversations::on_messages(conn, &conversation, rowid, seq, 0, at)?;
    }
    Ok(out)
}

/// The state an acknowledged message at `seq` takes: Read or Delivered if the peers' receipts
/// already cover it, else Sent. The receipts are read once per conversation.
fn state_after_ack(
    conn: &Connection,
    receipts: &mut std::collections::HashMap<String, Option<(i64, i64)>>,
    conversation: &str,
    seq: u64,
) -> Result<MessageState> {
    if !receipts.contains_key(conversation) {
        let seen: Option<(i64, i64)> = conn
            .prepare_cached("SELECT peer_read_seq, peer_delivered_seq FROM conversations WHERE id = ?1")?
            .query_row([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        receipts.insert(conversation.to_owned(), seen);
    }
    let seq = seq as i64;
    Ok(match receipts[conversation] {
        Some((read, _)) if seq <= read => MessageState::Read,
        Some((_, delivered)) if seq <= delivered => MessageState::Delivered,
        _ => MessageState::Sent,
    })
}

/// The server refused one of our messages. Permanent refusals park it as Failed until the app
/// acts; retryable ones leave it Pending (the outbox sends it again).
pub fn apply_refused(conn: &Connection, me: &str, client_id: &str, reason: &str, retryable: bool) -> Result<Option<Message>> {
    if retryable {
        return Ok(None);
    }
    let id = message_id(me, client_id);
    conn.prepare_cached("UPDATE messages SET state = 5, failure = ?2, failure_retryable = 0 WHERE id = ?1 AND server_id IS NULL")?
        .execute(params![id, reason])?;
    get(conn, &id)
}

/// What applying a remote message did.
pub enum Applied {
    Added(Message),
    /// Our own local echo got its server id (its ack was lost or is still on the way).
    Confirmed(Message),
}

/// Row counts of the multi-row inserts a run is split into (largest first): one statement for
/// many rows costs about two thirds of a statement per row, and a handful of sizes keeps the
/// statement cache small.
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Splits `len` rows into consecutive ranges of [`INSERT_CHUNKS`] sizes, largest first.
fn insert_chunks(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let size = INSERT_CHUNKS.into_iter().find(|&size| size <= len - at)?;
        at += size;
        Some(at - size..at)
    })
}

fn insert_remote_sql(rows: usize) -> String {
    let values = vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; rows].join(",");
    format!(
        "INSERT OR IGNORE INTO messages (id, conversation_id, sender, client_id, server_id, seq, body, state, outgoing, timestamp_ms, receipt_flags, reply_id)
         VALUES {values}"
    )
}

/// Parameters bound per row of [`insert_remote_sql`].
const REMOTE_PARAMS: usize = 12;

/// Binds one row of [`insert_remote_sql`] from parameter `at` on.
fn bind_remote(stmt: &mut rusqlite::Statement<'_>, at: usize, m: &RemoteMessage, id: &str, me: &str) -> rusqlite::Result<()> {
    let outgoing = m.sender == me;
    let state = if outgoing { MessageState::Sent } else { MessageState::Delivered };
    stmt.raw_bind_parameter(at, id)?;
    stmt.raw_bind_parameter(at + 1, &m.conversation)?;
    stmt.raw_bind_parameter(at + 2, &m.sender)?;
    stmt.raw_bind_parameter(at + 3, &m.client_id)?;
    stmt.raw_bind_parameter(at + 4, &m.server_id)?;
    stmt.raw_bind_parameter(at + 5, m.seq as i64)?;
    stmt.raw_bind_parameter(at + 6, encode_body(&m.body))?;
    stmt.raw_bind_parameter(at + 7, state.code())?;
    stmt.raw_bind_parameter(at + 8, outgoing)?;
    stmt.raw_bind_parameter(at + 9, m.server_time_ms)?;
    stmt.raw_bind_parameter(at + 10, receipt_flags(m, me))?;
    stmt.raw_bind_parameter(at + 11, &m.reply_id)
}

/// A conversation's maintained fields, summed over the new messages of a run.
struct RunTotals {
    kind_if_new: ConversationKind,
    /// The newest message: its seq and rowid.
    last: (u64, i64),
    at_ms: i64,
    incoming_seqs: Vec<u64>,
}

/// Stores messages from the server exactly once each, in order, with the effect of storing them
/// one by one, for a fraction of the cost: multi-row inserts, which the unique id and server id
/// turn into no-ops for replays, and each conversation's maintained fields written once per run.
/// A conversation not known yet is created with the kind given with its first message. Returns
/// what each message did, in order (replays did nothing and are left out).
pub fn apply_remote_run(conn: &Connection, me: &str, run: Vec<(RemoteMessage, ConversationKind)>) -> Result<Vec<Applied>> {
    let mut ids: Vec<String> = run.iter().map(|(m, _)| preferred_id(m)).collect();
    let mut stored = Vec::with_capacity(run.len());
    for range in insert_chunks(run.len()) {
        stored.extend(insert_chunk(conn, me, &run[range.clone()], &ids[range])?);
    }
    // In order: a new message, or the index of an acknowledgement of our own pending echo.
    let mut slots = Vec::with_capacity(run.len());
    let mut acks = Vec::new();
    let mut totals: std::collections::HashMap<String, RunTotals> = std::collections::HashMap::new();
    // Our echoes this run confirms, with the server id confirming each: a second message with
    // the same client id and another server id is another message.
    let mut confirming = std::collections::HashMap::<String, String>::new();
    for (i, ((m, kind), stored)) in run.into_iter().zip(stored).enumerate() {
        let rowid = match stored {
            Stored::New(rowid) => rowid,
            // Our own pending echo, confirmed by the server (transports without a separate
            // acknowledgement, XMPP, confirm this way).
            Stored::Known { server_id: None, .. } if m.sender == me && !confirming.contains_key(&m.client_id) => {
                confirming.insert(m.client_id.clone(), m.server_id.clone());
                slots.push(Err(acks.len()));
                acks.push(Ack { client_id: m.client_id, server_id: m.server_id, seq: m.seq, server_time_ms: m.server_time_ms });
                continue;
            }
            // The same confirmation twice in one run.
            Stored::Known { server_id: None, .. } if confirming.get(&m.client_id) == Some(&m.server_id) => continue,
            // A replay, or the sender's resend of a message shown already (same stable id and
            // body, another server id): nothing to do.
            Stored::Known { server_id: Some(s), conversation, body } if conversation == m.conversation && (s == m.server_id || body == encode_body(&m.body)) => continue,
            // Its sender's id names another message already (or our unsent echo elsewhere): the
            // message is stored under its server id.
            Stored::Known { .. } => match insert_server_keyed(conn, me, &m)? {
                Some(rowid) => {
                    ids[i] = server_keyed_id(&m);
                    rowid
                }
                None => continue, // stored under it before: a replay
            },
            // The server id is stored already, under another local id: a replay.
            Stored::Refused => continue,
        };
        let id = std::mem::take(&mut ids[i]);
        let outgoing = m.sender == me;
        let t = match totals.get_mut(&m.conversation) {
            Some(t) => t,
            None => totals.entry(m.conversation.clone()).or_insert(RunTotals {
                kind_if_new: kind,
                last: (m.seq, rowid),
                at_ms: m.server_time_ms,
                incoming_seqs: Vec::new(),
            }),
        };
        if m.seq >= t.last.0 {
            t.last = (m.seq, rowid);
        }
        t.at_ms = t.at_ms.max(m.server_time_ms);
        if !outgoing {
            t.incoming_seqs.push(m.seq);
        }
        slots.push(Ok(Message {
            id,
            conversation_id: m.conversation,
            sender: m.sender,
            client_id: m.client_id,
            server_id: Some(m.server_id),
            seq: Some(m.seq),
            body: m.body,
            state: if outgoing { MessageState::Sent } else { MessageState::Delivered },
            outgoing,
            timestamp_ms: m.server_time_ms,
        }));
    }
    let mut confirmed: Vec<Option<Message>> = if acks.is_empty() { vec![] } else { apply_acks(conn, me, acks)? };
    let applied = slots
        .into_iter()
        .filter_map(|slot| match slot {
            Ok(added) => Some(Applied::Added(added)),
            Err(ack) => confirmed[ack].take().map(Applied::Confirmed),
        })
        .collect();
    for (conversation, t) in totals {
        let read_seq: Option<i64> =
            conn.prepare_cached("SELECT read_seq FROM conversations WHERE id = ?1")?.query_row([&conversation], |r| r.get(0)).optional()?;
        if read_seq.is_none() {
            conversations::ensure(conn, &conversation, t.kind_if_new)?;
        }
        let read_seq = read_seq.unwrap_or(0);
        let unread = t.incoming_seqs.iter().filter(|&&seq| seq as i64 > read_seq).count() as u32;
        conversations::on_messages(conn, &conversation, t.last.1, t.last.0, unread, t.at_ms)?;
    }
    Ok(applied)
}

/// What a multi-row insert did with one row.
enum Stored {
    New(i64),
    /// Its local id is stored already: a replay, our own echo (no server id yet), a resend, or
    /// another message its sender gave the same id; with the stored message's body.
    Known { server_id: Option<String>, conversation: String, body: Vec<u8> },
    /// Not stored: its server id is stored already, under another local id.
    Refused,
}

/// One multi-row insert: what it did with each row. The rows one statement inserts take
/// consecutive rowids after the largest; only when it skipped some are the rows looked up (once
/// each) to tell which.
fn insert_chunk(conn: &Connection, me: &str, chunk: &[(RemoteMessage, ConversationKind)], ids: &[String]) -> Result<Vec<Stored>> {
    let mut stmt = conn.prepare_cached(&insert_remote_sql(chunk.len()))?;
    for (i, ((m, _), id)) in chunk.iter().zip(ids).enumerate() {
        bind_remote(&mut stmt, 1 + i * REMOTE_PARAMS, m, id, me)?;
    }
    let changed = stmt.raw_execute()?;
    let last = conn.last_insert_rowid();
    let first = last - changed as i64 + 1;
    if changed == chunk.len() {
        return Ok((first..=last).map(Stored::New).collect());
    }
    let mut claimed = std::collections::HashSet::new();
    let mut lookup = conn.prepare_cached("SELECT rowid, server_id, conversation_id, body FROM messages WHERE id = ?1")?;
    ids.iter()
        .map(|id| {
            let found: Option<(i64, Option<String>, String, Vec<u8>)> =
                lookup.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()?;
            Ok(match found {
                // A row repeated within the chunk is new only the first time.
                Some((rowid, ..)) if changed > 0 && (first..=last).contains(&rowid) && claimed.insert(rowid) => Stored::New(rowid),
                Some((_, server_id, conversation, body)) => Stored::Known { server_id, conversation, body },
                None => Stored::Refused,
            })
        })
        .collect()
}

/// Stores a message under its server-keyed id; `None` if it is there already.
fn insert_server_keyed(conn: &Connection, me: &str, m: &RemoteMessage) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(&insert_remote_sql(1))?;
    bind_remote(&mut stmt, 1, m, &server_keyed_id(m), me)?;
    Ok((stmt.raw_execute()? == 1).then(|| conn.last_insert_rowid()))
}

/// Another member's receipt: our messages up to `seq` become Delivered or Read. Only the range
/// above the previous receipt of the same kind is touched, so a stream of receipts costs time in
/// proportion to the messages they newly cover.
pub fn apply_receipt(conn: &Connection, conversation: &str, seq: u64, read: bool) -> Result<Vec<Message>> {
    let column = if read { "peer_read_seq" } else { "peer_delivered_seq" };
    let previous: Option<i64> = conn
        .prepare_cached(&format!("SELECT {column} FROM conversations WHERE id = ?1"))?
        .query_row([conversation], |r| r.get(0))
        .optional()?;
    let Some(previous) = previous else { return Ok(vec![]) };
    if seq as i64 <= previous {
        return Ok(vec![]);
    }
    conn.prepare_cached(&format!("UPDATE conversations SET {column} = ?2 WHERE id = ?1"))?.execute(params![conversation, seq as i64])?;
    let (state, target) =
        if read { (MessageState::Read, MessageState::Read.code()) } else { (MessageState::Delivered, MessageState::Delivered.code()) };
    // The rows first, then the update: an UPDATE's RETURNING collects its rows in a temporary
    // table first, which costs more than reading them again.
    const RANGE: &str = "conversation_id = ?1 AND seq > ?2 AND seq <= ?3 AND outgoing = 1 AND state >= 2 AND state < ?4";
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE {RANGE}"))?;
    let mut rows: Vec<Message> =
        stmt.query_map(params![conversation, previous, seq as i64, target], |r| from_row_at(r, 0))?.collect::<Result<_, _>>()?;
    conn.prepare_cached(&format!("UPDATE messages SET state = ?4 WHERE {RANGE}"))?.execute(params![
        conversation,
        previous,
        seq as i64,
        target
    ])?;
    for m in &mut rows {
        m.state = state.clone();
    }
    Ok(rows)
}

/// The sequence number of the message a receipt names by id, for protocols whose receipts name
/// a message rather than a position (XMPP): a server id (a marker in a room), the client id of
/// one of our messages (a peer's receipt), or the id its sender gave a message of `user` or of
/// the peer of a direct conversation (our own receipt, from another of our devices). Ids others
/// chose need not be unique: the newest such message is taken, among the newest
/// [`REFERENCE_SCAN`] of the conversation.
pub fn seq_of_reference(conn: &Connection, conversation: &str, me: &str, user: &str, reference: &str) -> Result<Option<u64>> {
    let indexed: Option<Option<i64>> = conn
        .prepare_cached("SELECT seq FROM messages WHERE conversation_id = ?1 AND (server_id = ?2 OR id = ?3) ORDER BY seq DESC LIMIT 1")?
        .query_row(params![conversation, reference, message_id(me, reference)], |r| r.get(0))
        .optional()?;
    if let Some(seq) = indexed {
        return Ok(seq.map(|s| s as u64));
    }
    let scanned: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM (SELECT seq, coalesce(reply_id, client_id) AS named, sender FROM messages
                              WHERE conversation_id = ?1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT ?5)
             WHERE named = ?2 AND sender IN (?3, ?4) LIMIT 1",
        )?
        .query_row(params![conversation, reference, user, conversation, REFERENCE_SCAN], |r| r.get(0))
        .optional()?;
    Ok(scanned.map(|s| s as u64))
}

/// How far back a receipt naming a message by the id its sender chose is looked for.
pub const REFERENCE_SCAN: i64 = 2000;

/// A receipt naming our own message before the server confirmed it (XMPP: the peer's client can
/// answer faster than our archive read confirms the send): the message is Delivered or Read
/// at once, and its confirmation later keeps that state. `None` if it is not such a message.
pub fn apply_receipt_before_ack(conn: &Connection, conversation: &str, me: &str, client_id: &str, read: bool) -> Result<Option<Message>> {
    let target = if read { MessageState::Read.code() } else { MessageState::Delivered.code() };
    let id = message_id(me, client_id);
    let sql = format!("UPDATE messages SET state = ?3 WHERE id = ?1 AND conversation_id = ?2 AND {UNSENT} AND state < ?3 AND state != 5");
    let changed = conn.prepare_cached(&sql)?.execute(params![id, conversation, target])?;
    if changed == 0 { Ok(None) } else { get(conn, &id) }
}

/// The newest message from others at or below `seq` that a chat marker may name: what a
/// marker for `seq` names, for protocols that name messages.
pub fn reference_at(conn: &Connection, conversation: &str, seq: u64) -> Result<Option<crate::transport::MessageRef>> {
    let sql = format!(
        "SELECT coalesce(reply_id, client_id), server_id FROM messages
         WHERE conversation_id = ?1 AND seq <= ?2 AND outgoing = 0 AND receipt_flags & {NO_MARKERS} = 0 ORDER BY seq DESC LIMIT 1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![conversation, seq as i64], |r| Ok(crate::transport::MessageRef { client_id: r.get(0)?, server_id: r.get(1)? }))
        .optional()?)
}

/// Messages of a conversation up to `seq`, oldest first, whose senders asked for a delivery
/// receipt of their own that is not confirmed sent yet (`messages_receipt_owed`).
pub fn owed_receipts(conn: &Connection, conversation: &str, seq: u64) -> Result<Vec<crate::transport::MessageRef>> {
    let mut stmt = conn.prepare_cached(&owed_receipts_sql())?;
    let rows = stmt.query_map(params![conversation, seq as i64], |r| {
        Ok(crate::transport::MessageRef { client_id: r.get(0)?, server_id: r.get(1)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn owed_receipts_sql() -> String {
    format!(
        "SELECT coalesce(reply_id, client_id), server_id FROM messages
         WHERE conversation_id = ?1 AND receipt_flags & {RECEIPT_OWED} != 0 AND seq <= ?2 ORDER BY seq"
    )
}

/// The server has the delivery receipts of these messages: none is owed any more.
pub fn receipts_sent(conn: &Connection, conversation: &str, sent: &[crate::transport::MessageRef]) -> Result<()> {
    let sql = format!("UPDATE messages SET receipt_flags = receipt_flags & ~{RECEIPT_OWED} WHERE conversation_id = ?1 AND server_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    for m in sent {
        if let Some(server_id) = &m.server_id {
            stmt.execute(params![conversation, server_id])?;
        }
    }
    Ok(())
}

/// Another device of ours sent the delivery receipt of the message its sender gave this id: it,
/// and every message before it (a device sends its receipts in order, and archives only the
/// newest of a batch), is not owed here any more. Only owed messages are updated
/// (`messages_receipt_owed`).
pub fn receipt_sent_elsewhere(conn: &Connection, conversation: &str, reference: &str) -> Result<()> {
    let sql = format!(
        "UPDATE messages SET receipt_flags = receipt_flags & ~{RECEIPT_OWED}
         WHERE conversation_id = ?1 AND receipt_flags & {RECEIPT_OWED} != 0 AND seq IS NOT NULL
           AND seq <= (SELECT max(seq) FROM messages WHERE conversation_id = ?1 AND outgoing = 0 AND coalesce(reply_id, client_id) = ?2)"
    );
    conn.prepare_cached(&sql)?.execute(params![conversation, reference])?;
    Ok(())
}

/// The server id of the message at `seq` in a conversation, if the cache has it.
pub fn server_id_at(conn: &Connection, conversation: &str, seq: u64) -> Result<Option<String>> {
    let id: Option<Option<String>> = conn
        .prepare_cached("SELECT server_id FROM messages WHERE conversation_id = ?1 AND seq = ?2 LIMIT 1")?
        .query_row(params![conversation, seq as i64], |r| r.get(0))
        .optional()?;
    Ok(id.flatten())
}

/// Incoming messages in (`from`, `to`] become Read.
pub(crate) fn mark_incoming_read(conn: &Connection, conversation: &str, from: u64, to: u64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE messages SET state = 4 WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3 AND outgoing = 0 AND state = 3",
    )?
    .execute(params![conversation, from as i64, to as i64])?;
    Ok(())
}

/// A page, newest first: local echoes not yet sent first (on the first page), then by sequence.
/// Two index ranges: the outbox's entries of the conversation (unsent messages have no seq), then
/// `messages_by_conversation`.
pub fn page(conn: &Connection, conversation: &str, before_seq: Option<u64>, limit: u32) -> Result<Vec<Message>> {
    let mut rows = Vec::new();
    if before_seq.is_none() {
        let mut stmt = conn.prepare_cached(&page_unsent_sql())?;
        for row in stmt.query_map(params![conversation, limit as i64], |r| from_row_at(r, 0))? {
            rows.push(row?);
        }
    }
    let rest = limit as usize - rows.len();
    if rest > 0 {
        let mut stmt = conn.prepare_cached(&page_by_seq_sql())?;
        let before = before_seq.map_or(i64::MAX, |s| s as i64);
        for row in stmt.query_map(params![conversation, before, rest as i64], |r| from_row_at(r, 0))? {
            rows.push(row?);
        }
    }
    Ok(rows)
}

/// A conversation's unsent echoes, newest first (`messages_unsent`).
fn page_unsent_sql() -> String {
    format!("SELECT {COLUMNS_M} FROM messages m WHERE m.conversation_id = ?1 AND {UNSENT} ORDER BY m.rowid DESC LIMIT ?2")
}

/// A conversation's messages below a sequence number, newest first (`messages_by_conversation`).
fn page_by_seq_sql() -> String {
    format!("SELECT {COLUMNS_M} FROM messages m WHERE m.conversation_id = ?1 AND m.seq < ?2 ORDER BY m.seq DESC, m.rowid DESC LIMIT ?3")
}

/// Fits a page of older messages fetched from the server (newest first) under what the cache
/// holds, for transports with sparse sequence numbers (XMPP), and returns what is new, newest
/// first. The page overlaps the cache (it was asked for before a cached message) and numbers
/// its messages by their stamps, which may tie (Prosody 0.12 stamps whole seconds) with what
/// sync numbered in its own order, receipts included: a message the cache holds keeps its
/// number and each new one is numbered just below its newer neighbour. New messages newer than
/// `floor` (the oldest cached message of the page the app asked for) are left out: sync brings
/// them, in its own order. If the page does not reach the floor message, only messages below
/// `floor` are taken.
pub fn stitch_older(conn: &Connection, conversation: &str, fetched: Vec<RemoteMessage>, floor: Option<u64>) -> Result<Vec<RemoteMessage>> {
    let mut lookup = conn.prepare_cached("SELECT seq FROM messages WHERE conversation_id = ?1 AND server_id = ?2")?;
    let mut cached = Vec::with_capacity(fetched.len());
    for m in &fetched {
        let seq: Option<Option<i64>> = lookup.query_row(params![conversation, m.server_id], |r| r.get(0)).optional()?;
        cached.push(seq.flatten().map(|s| s as u64));
    }
    let reaches_floor = floor.is_some_and(|floor| cached.iter().any(|&seq| seq == Some(floor)));
    let mut below_floor = floor.is_none() || !reaches_floor;
    let mut bound = u64::MAX;
    let mut out = Vec::new();
    for (mut m, cached) in fetched.into_iter().zip(cached) {
        if let Some(seq) = cached {
            bound = bound.min(seq);
            below_floor |= Some(seq) == floor;
            continue;
        }
        if !below_floor || floor.is_some_and(|floor| !reaches_floor && m.seq >= floor) {
            continue;
        }
        m.seq = m.seq.min(bound.saturating_sub(1));
        bound = m.seq;
        out.push(m);
    }
    Ok(out)
}

/// Removes a message that never reached the server (cancel).
pub fn delete_unsent(conn: &Connection, me: &str, client_id: &str) -> Result<Message> {
    let id = message_id(me, client_id);
    let message = require(conn, &id)?;
    if message.server_id.is_some() {
        return Err(Error::NotChangeable(id));
    }
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?.execute([&id])?;
    conversations::refresh_last_message(conn, &message.conversation_id)?;
    Ok(message)
}

/// Changes the body of a message that never reached the server.
pub fn edit_unsent(conn: &Connection, me: &str, client_id: &str, body: &Body) -> Result<Message> {
    let id = message_id(me, client_id);
    let changed = conn
        .prepare_cached("UPDATE messages SET body = ?2 WHERE id = ?1 AND server_id IS NULL")?
        .execute(params![id, encode_body(body)])?;
    if changed == 0 {
        return Err(Error::NotChangeable(id));
    }
    require(conn, &id)
}

/// Puts a failed message back in the queue.
pub fn retry_failed(conn: &Connection, me: &str, client_id: &str) -> Result<Message> {
    let id = message_id(me, client_id);
    conn.prepare_cached("UPDATE messages SET state = 0, failure = NULL WHERE id = ?1 AND state = 5")?.execute([&id])?;
    require(conn, &id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReceiptKind;
    use crate::store::schema;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn, 0, schema::VERSION).unwrap();
        conversations::ensure(&conn, "c", ConversationKind::Direct).unwrap();
        conn
    }

    /// After a lost ack the resend's ack can arrive after the peer's receipt (synced first on
    /// reconnect): the message must not stay at Sent.
    #[test]
    fn an_ack_after_the_peers_receipt_lands_delivered_or_read() {
        let conn = store();
        for id in ["m1", "m2", "m3"] {
            insert_outgoing(&conn, "me", "c", id, &Body::Text(id.into()), 0).unwrap();
        }
        assert!(apply_receipt(&conn, "c", 1, true).unwrap().is_empty(), "nothing acknowledged yet");
        assert!(apply_receipt(&conn, "c", 2, false).unwrap().is_empty());
        let states: Vec<MessageState> = [("m1", 1), ("m2", 2), ("m3", 3)]
            .iter()
            .map(|(id, seq)| apply_ack(&conn, "me", id, &format!("s{seq}"), *seq, 0).unwrap().unwrap().state)
            .collect();
        assert_eq!(states, [MessageState::Read, MessageState::Delivered, MessageState::Sent]);
    }

    /// The outbox is the messages without a server id: an ack takes one out, a permanent
    /// refusal keeps it (as failed), a retry makes it pending again.
    #[test]
    fn the_outbox_is_what_has_no_server_id_in_creation_order() {
        let conn = store();
        for id in ["m1", "m2", "m3"] {
            insert_outgoing(&conn, "me", "c", id, &Body::Text(id.into()), 0).unwrap();
        }
        apply_ack(&conn, "me", "m2", "s1", 1, 0).unwrap();
        apply_refused(&conn, "me", "m3", "too big", false).unwrap();
        let outbox: Vec<(String, bool)> = load_outbox(&conn).unwrap().into_iter().map(|u| (u.client_id, u.failed)).collect();
        assert_eq!(outbox, [("m1".to_string(), false), ("m3".to_string(), true)]);
        assert_eq!((unsent_count(&conn, true).unwrap(), unsent_count(&conn, false).unwrap()), (2, 1));
        retry_failed(&conn, "me", "m3").unwrap();
        assert_eq!(unsent_count(&conn, false).unwrap(), 2);
        assert!(matches!(insert_outgoing(&conn, "me", "nowhere", "m4", &Body::Text("x".into()), 0), Err(Error::NotFound(_))));
        assert_eq!(unsent_count(&conn, true).unwrap(), 2, "nothing written for a missing conversation");
    }

    /// A receipt that overtakes our own message's confirmation is kept: the confirmation lands
    /// on the receipt's state instead of Sent.
    #[test]
    fn a_receipt_before_the_confirmation_is_not_lost() {
        let conn = store();
        insert_outgoing(&conn, "me", "c", "m1", &Body::Text("m1".into()), 0).unwrap();
        let early = apply_receipt_before_ack(&conn, "c", "me", "m1", false).unwrap().expect("our unconfirmed message");
        assert_eq!(early.state, MessageState::Delivered);
        assert!(apply_receipt_before_ack(&conn, "c", "me", "unknown", false).unwrap().is_none());
        assert_eq!(apply_ack(&conn, "me", "m1", "s1", 1, 0).unwrap().unwrap().state, MessageState::Delivered);
        assert_eq!(unsent_count(&conn, true).unwrap(), 0);
    }

    fn remote(sender: &str, client_id: &str, seq: u64) -> (RemoteMessage, ConversationKind) {
        let m = RemoteMessage {
            server_id: format!("s{seq}"),
            conversation: "c".into(),
            seq,
            sender: sender.into(),
            client_id: client_id.into(),
            body: Body::Text(format!("m{seq}")),
            server_time_ms: seq as i64,
            stable_client_id: !client_id.is_empty(),
            reply_id: None,
            receipts: crate::transport::ReceiptRequest::POSITIONS,
        };
        (m, ConversationKind::Direct)
    }

    fn texts(conn: &Connection, conversation: &str) -> Vec<String> {
        page(conn, conversation, None, 100).unwrap().into_iter().rev().map(|m| m.body.preview()).collect()
    }

    /// Others' messages are recognised by their server ids, not by the ids their senders chose:
    /// three without an id and two reusing one are all stored, once each, and replays of all of
    /// them (in any order, in one run or later) add nothing.
    #[test]
    fn messages_without_ids_or_reusing_one_are_all_kept_once() {
        let conn = store();
        let run = vec![remote("you", "", 1), remote("you", "", 2), remote("you", "1", 3), remote("you", "", 4), remote("you", "1", 5)];
        let added = apply_remote_run(&conn, "me", run.clone()).unwrap();
        assert_eq!(added.len(), 5, "every message is new");
        assert_eq!(texts(&conn, "c"), ["m1", "m2", "m3", "m4", "m5"]);
        let ids: Vec<String> = page(&conn, "c", None, 10).unwrap().into_iter().rev().map(|m| m.id).collect();
        assert_eq!(ids, ["c#s1", "c#s2", "you:1", "c#s4", "c#s5"], "the sender's id where it is free, else the server's");
        let mut replay = run;
        replay.reverse();
        replay.push(remote("you", "1", 5));
        assert!(apply_remote_run(&conn, "me", replay).unwrap().is_empty(), "replays change nothing");
        assert_eq!(conversations::get(&conn, "c").unwrap().unwrap().unread_count, 5);
        // A sender's resend (a new server id, its stable id and body again) is shown once; the
        // same text under an id that is not stable (a stanza id) is another message.
        let (mut resend, kind) = remote("you", "1", 6);
        resend.body = Body::Text("m3".into());
        let (mut unstable, _) = remote("you", "1", 7);
        unstable.body = Body::Text("m3".into());
        unstable.stable_client_id = false;
        let added = apply_remote_run(&conn, "me", vec![(resend, kind), (unstable, kind)]).unwrap();
        assert!(matches!(added.as_slice(), [Applied::Added(m)] if m.seq == Some(7)), "only the unstable one is new");
    }

    /// A server id is unique within its conversation only: an account's own archive and a
    /// group's may give the same id to different messages (ejabberd's are microsecond stamps).
    #[test]
    fn the_same_server_id_in_two_conversations_is_two_messages() {
        let conn = store();
        let (mut in_group, _) = remote("you", "g1", 7);
        in_group.conversation = "group".into();
        let applied = apply_remote_run(&conn, "me", vec![remote("you", "d1", 7), (in_group, ConversationKind::Group)]).unwrap();
        assert_eq!(applied.len(), 2);
        assert_eq!((texts(&conn, "c"), texts(&conn, "group")), (vec!["m7".to_string()], vec!["m7".to_string()]));
    }

    /// Our own message from another device that reuses a client id of ours is a new message,
    /// not a confirmation of the earlier one; our pending echo is still confirmed by its id.
    #[test]
    fn our_echo_is_confirmed_by_its_id_and_a_reused_id_is_another_message() {
        let conn = store();
        insert_outgoing(&conn, "me", "c", "p1", &Body::Text("mine".into()), 0).unwrap();
        let applied = apply_remote_run(&conn, "me", vec![remote("me", "p1", 1), remote("me", "p1", 2)]).unwrap();
        assert!(matches!(&applied[0], Applied::Confirmed(m) if m.seq == Some(1)));
        assert!(matches!(&applied[1], Applied::Added(m) if m.seq == Some(2) && m.id == "c#s2"));
        assert_eq!(applied.len(), 2);
    }

    /// A delivery receipt is owed per message that asked for one (and only those), markers name
    /// only markable messages, and a receipt sent here or by another device settles it.
    #[test]
    fn receipts_follow_what_each_sender_asked_for() {
        let conn = store();
        let ask = |sender: &str, client_id: &str, seq: u64, delivery: bool, markers: bool| {
            let (mut m, kind) = remote(sender, client_id, seq);
            m.receipts = crate::transport::ReceiptRequest { delivery, markers };
            (m, kind)
        };
        let run = vec![ask("you", "a", 1, true, true), ask("you", "b", 2, false, true), ask("you", "c", 3, true, false), ask("me", "d", 4, true, true)];
        apply_remote_run(&conn, "me", run).unwrap();
        let owed = |seq| owed_receipts(&conn, "c", seq).unwrap().into_iter().map(|m| m.client_id).collect::<Vec<_>>();
        assert_eq!(owed(10), ["a", "c"], "asked for, from others");
        assert_eq!(owed(2), ["a"]);
        assert_eq!(reference_at(&conn, "c", 10).unwrap().map(|m| m.client_id).as_deref(), Some("b"), "the newest markable one");
        receipts_sent(&conn, "c", &owed_receipts(&conn, "c", 1).unwrap()).unwrap();
        assert_eq!(owed(10), ["c"]);
        apply_remote_run(&conn, "me", vec![ask("you", "e", 5, true, true), ask("you", "f", 6, true, true)]).unwrap();
        receipt_sent_elsewhere(&conn, "c", "e").unwrap();
        assert_eq!(owed(10), ["f"], "another device's receipt settles its message and those before it");
        receipt_sent_elsewhere(&conn, "c", "f").unwrap();
        assert!(owed(10).is_empty());
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", owed_receipts_sql())).unwrap();
        let mut rows = stmt.raw_query();
        let plan = rows.next().unwrap().unwrap().get::<_, String>(3).unwrap();
        assert!(plan.contains("messages_receipt_owed"), "{plan}");
    }

    /// A run stores each message once, as storing them one by one would: replays of stored
    /// messages, a repeat inside the run and our own pending echo are told apart from new
    /// messages inside one multi-row insert, and the conversation's fields add up.
    #[test]
    fn a_run_stores_each_message_once_whatever_repeats() {
        let conn = store();
        conn.execute("UPDATE conversations SET read_seq = 3", []).unwrap();
        apply_remote_run(&conn, "me", vec![remote("you", "y5", 5), remote("you", "y70", 70)]).unwrap();
        insert_outgoing(&conn, "me", "c", "p1", &Body::Text("mine".into()), 0).unwrap();
        let mut run: Vec<_> = (1..=100).map(|seq| remote("you", &format!("y{seq}"), seq)).collect();
        run[39] = remote("me", "p1", 40);
        run.insert(50, remote("you", "y10", 10));
        let applied = apply_remote_run(&conn, "me", run).unwrap();
        let added: Vec<u64> = applied.iter().filter_map(|a| if let Applied::Added(m) = a { m.seq } else { None }).collect();
        let expected: Vec<u64> = (1..=100).filter(|seq| ![5, 40, 70].contains(seq)).collect();
        assert_eq!(added, expected, "each new message once, in order");
        let confirmed: Vec<&Message> = applied.iter().filter_map(|a| if let Applied::Confirmed(m) = a { Some(m) } else { None }).collect();
        assert_eq!(confirmed.len(), 1);
        assert_eq!((confirmed[0].client_id.as_str(), confirmed[0].seq), ("p1", Some(40)));
        let rows: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 100);
        let conversation = conversations::get(&conn, "c").unwrap().unwrap();
        // Unread: messages from others above the read marker (3): 4 and 5..=100 but 40 (ours).
        assert_eq!(conversation.unread_count, 96);
        assert_eq!(conversation.last_message.unwrap().seq, Some(100));
        assert!(apply_remote_run(&conn, "me", (1..=100).map(|seq| remote("you", &format!("y{seq}"), seq)).collect()).unwrap().is_empty());
        assert_eq!(conversations::get(&conn, "c").unwrap().unwrap().unread_count, 96, "a replay counts nothing twice");
    }

    /// A message for a conversation this store does not know creates it, with the given kind.
    #[test]
    fn a_run_creates_unknown_conversations() {
        let conn = store();
        let (mut m, _) = remote("you", "y1", 1);
        m.conversation = "room".into();
        assert_eq!(apply_remote_run(&conn, "me", vec![(m, ConversationKind::Room)]).unwrap().len(), 1);
        let room = conversations::get(&conn, "room").unwrap().unwrap();
        assert_eq!((room.kind, room.unread_count), (ConversationKind::Room, 1));
    }

    /// A group of sends commits like one send after another: in order, each conversation's last
    /// message is its newest send, and a send to a missing conversation fails alone and leaves
    /// nothing behind. A client id used twice fails the whole group.
    #[test]
    fn a_group_of_sends_commits_in_order_and_fails_alone_for_a_missing_conversation() {
        let conn = store();
        conversations::ensure(&conn, "d", ConversationKind::Direct).unwrap();
        let row = |c: &str, id: &str| (c.to_string(), id.to_string(), Body::Text(id.into()));
        let rows = vec![row("c", "a1"), row("nowhere", "x1"), row("d", "b1"), row("c", "a2"), row("nowhere", "x2")];
        let outcomes = insert_outgoing_group(&conn, "me", rows, 7).unwrap();
        let ok: Vec<(&str, i64)> = outcomes.iter().flatten().map(|(m, order)| (m.client_id.as_str(), *order)).collect();
        assert_eq!(ok.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ["a1", "b1", "a2"]);
        assert!(ok.windows(2).all(|w| w[0].1 < w[1].1), "creation order follows the calls: {ok:?}");
        assert!(matches!(outcomes[1], Err(Error::NotFound(_))) && matches!(outcomes[4], Err(Error::NotFound(_))));
        let outbox: Vec<String> = load_outbox(&conn).unwrap().into_iter().map(|u| u.client_id).collect();
        assert_eq!(outbox, ["a1", "b1", "a2"], "nothing written for the missing conversation");
        let last = |c: &str| conversations::get(&conn, c).unwrap().unwrap().last_message.map(|m| m.client_id);
        assert_eq!((last("c"), last("d")), (Some("a2".to_string()), Some("b1".to_string())));
        assert!(insert_outgoing_group(&conn, "me", vec![row("c", "a3"), row("c", "a1")], 8).is_err(), "a1 is taken");
    }

    /// Acknowledgements applied together: each message gets its server id and the state the
    /// receipts already seen give it, an ack for an unknown message is ignored, and the
    /// conversation's last message is the newest acknowledged.
    #[test]
    fn acks_applied_together_land_as_one_by_one() {
        let conn = store();
        for id in ["m1", "m2", "m3"] {
            insert_outgoing(&conn, "me", "c", id, &Body::Text(id.into()), 0).unwrap();
        }
        apply_receipt(&conn, "c", 1, false).unwrap();
        let ack = |id: &str, seq: u64| Ack { client_id: id.into(), server_id: format!("s{seq}"), seq, server_time_ms: 5 };
        let acked = apply_acks(&conn, "me", vec![ack("m1", 1), ack("gone", 9), ack("m2", 2), ack("m3", 3), ack("m1", 1)]).unwrap();
        let states: Vec<Option<MessageState>> = acked.iter().map(|m| m.as_ref().map(|m| m.state.clone())).collect();
        let sent = Some(MessageState::Sent);
        assert_eq!(states, [Some(MessageState::Delivered), None, sent.clone(), sent, None], "a repeated ack changes nothing");
        assert_eq!(unsent_count(&conn, true).unwrap(), 0);
        let last = conversations::get(&conn, "c").unwrap().unwrap().last_message.unwrap();
        assert_eq!((last.client_id.as_str(), last.seq, last.server_id.as_deref()), ("m3", Some(3), Some("s3")));
    }

    /// A delivered receipt is owed from the moment the messages are stored until the server
    /// confirms it, so one lost with a connection is sent again.
    #[test]
    fn a_delivered_receipt_is_owed_until_confirmed() {
        let conn = store();
        conversations::owe_delivered(&conn, "c", 4).unwrap();
        let owed = |conn: &Connection| conversations::unsynced_receipts(conn, ReceiptKind::Delivered).unwrap();
        assert_eq!(owed(&conn), [("c".to_string(), 4)]);
        conversations::owe_delivered(&conn, "c", 7).unwrap();
        conversations::set_receipt_synced(&conn, ReceiptKind::Delivered, "c", 4).unwrap();
        assert_eq!(owed(&conn), [("c".to_string(), 7)], "an older confirmation settles nothing newer");
        conversations::set_receipt_synced(&conn, ReceiptKind::Delivered, "c", 7).unwrap();
        assert!(owed(&conn).is_empty());
    }

    /// An older page from the server overlapping the cache, with stamps that tie with the
    /// cache's numbers: cached messages keep theirs, new ones fit below their newer neighbours,
    /// and new ones newer than the floor are left to sync.
    #[test]
    fn older_pages_fit_under_the_cache() {
        let conn = store();
        // The cache holds s43 (seq 1000) and s44 (seq 1003): sync numbered receipts between.
        let mut cached = vec![remote("you", "y43", 1000), remote("you", "y44", 1003)];
        cached[0].0.server_id = "s43".into();
        cached[1].0.server_id = "s44".into();
        apply_remote_run(&conn, "me", cached).unwrap();
        let fetched = |id: &str, seq| {
            let (mut m, _) = remote("you", id, seq);
            m.server_id = format!("s{}", &id[1..]);
            m
        };
        // Newest first, numbered from 1005 down (the link's bound), stamps all 999.
        let older = vec![fetched("y44", 1004), fetched("yx", 1003), fetched("y43", 1002), fetched("y42", 999), fetched("y41", 999)];
        let new = stitch_older(&conn, "c", older, Some(1000)).unwrap();
        let got: Vec<(String, u64)> = new.iter().map(|m| (m.server_id.clone(), m.seq)).collect();
        assert_eq!(got, [("s42".to_string(), 999), ("s41".to_string(), 998)], "yx is newer than the floor: sync brings it");
        apply_remote_run(&conn, "me", new.into_iter().map(|m| (m, ConversationKind::Direct)).collect()).unwrap();
        let order: Vec<String> = page(&conn, "c", None, 10).unwrap().into_iter().rev().map(|m| m.client_id).collect();
        assert_eq!(order, ["y41", "y42", "y43", "y44"]);
        // A page that does not reach the floor: only what is below it.
        let far = vec![fetched("y9", 2000), fetched("y8", 990)];
        let got: Vec<String> = stitch_older(&conn, "c", far, Some(998)).unwrap().into_iter().map(|m| m.server_id).collect();
        assert_eq!(got, ["s8"]);
    }

    /// A page lists the unsent echoes first (newest first), then the rest by sequence, and the
    /// last message follows a cancel; both read through indexes, not the whole table.
    #[test]
    fn a_page_lists_unsent_echoes_first_then_by_sequence_through_indexes() {
        let conn = store();
        apply_remote_run(&conn, "me", (1..=4).map(|seq| remote("you", &format!("y{seq}"), seq)).collect()).unwrap();
        for id in ["p1", "p2", "p3"] {
            insert_outgoing(&conn, "me", "c", id, &Body::Text(id.into()), 0).unwrap();
        }
        apply_ack(&conn, "me", "p2", "s5", 5, 0).unwrap();
        let ids = |page: Vec<Message>| page.into_iter().map(|m| m.client_id).collect::<Vec<_>>();
        assert_eq!(ids(page(&conn, "c", None, 4).unwrap()), ["p3", "p1", "p2", "y4"]);
        assert_eq!(ids(page(&conn, "c", None, 1).unwrap()), ["p3"]);
        assert_eq!(ids(page(&conn, "c", Some(4), 10).unwrap()), ["y3", "y2", "y1"], "older pages leave unsent echoes out");
        delete_unsent(&conn, "me", "p3").unwrap();
        delete_unsent(&conn, "me", "p1").unwrap();
        let last = conversations::get(&conn, "c").unwrap().unwrap().last_message.unwrap();
        assert_eq!(last.client_id, "p2", "the newest by sequence once no echo is left");
        for sql in [
            page_unsent_sql(),
            page_by_seq_sql(),
            "SELECT server_id FROM messages WHERE conversation_id = ?1 AND seq = ?2 LIMIT 1".into(),
            "SELECT rowid FROM messages WHERE conversation_id = ?1 AND server_id = ?2".into(),
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = stmt.raw_query();
            let mut plan = String::new();
            while let Some(row) = rows.next().unwrap() {
                plan += &row.get::<_, String>(3).unwrap();
                plan += "; ";
            }
            assert!(plan.contains("USING") && !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }
}
