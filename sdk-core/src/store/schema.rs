//! The local schema and its migrations. The version lives in `PRAGMA user_version`; each
//! migration runs in one transaction and never drops unsent messages (the outbox).

use rusqlite::Connection;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1
    r#"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    kind             INTEGER NOT NULL,
    title            TEXT NOT NULL DEFAULT '',
    members          TEXT NOT NULL DEFAULT '',
    last_seq         INTEGER NOT NULL DEFAULT 0,
    read_seq         INTEGER NOT NULL DEFAULT 0,
    unread           INTEGER NOT NULL DEFAULT 0,
    last_message     TEXT,
    last_activity_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    rowid           INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    sender          TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    server_id       TEXT UNIQUE,
    seq             INTEGER,
    body            BLOB NOT NULL,
    state           INTEGER NOT NULL,
    failure         TEXT,
    outgoing        INTEGER NOT NULL,
    timestamp_ms    INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);
CREATE TABLE outbox (
    client_id     TEXT PRIMARY KEY,
    message_rowid INTEGER NOT NULL UNIQUE REFERENCES messages (rowid) ON DELETE CASCADE,
    failed        INTEGER NOT NULL DEFAULT 0
);
"#,
    // v2: drafts, membership state, and read markers waiting to reach the server.
    r#"
ALTER TABLE conversations ADD COLUMN draft TEXT;
ALTER TABLE conversations ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
ALTER TABLE conversations ADD COLUMN read_synced INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN failure_retryable INTEGER NOT NULL DEFAULT 0;
"#,
    // v3: the highest delivered and read receipts seen from other members, so that a receipt
    // updates only the messages it newly covers instead of rescanning the conversation.
    r#"
ALTER TABLE conversations ADD COLUMN peer_delivered_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN peer_read_seq INTEGER NOT NULL DEFAULT 0;
"#,
    // v4: the delivered receipt this device owes, kept until the server confirms it (a receipt
    // lost with a dropped connection would leave the sender's message at Sent for good).
    r#"
ALTER TABLE conversations ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN delivered_synced INTEGER NOT NULL DEFAULT 1;
"#,
    // v5: the outbox is the set of our messages without a server id (Failed ones: state 5),
    // found through a partial index instead of a table of its own. A send writes one index entry
    // instead of a row and two index entries (and a foreign-key check), an ack deletes one.
    // Every unsent message of v4 is in the outbox of v5: it had no server id.
    r#"
CREATE INDEX messages_unsent ON messages (outgoing) WHERE outgoing = 1 AND server_id IS NULL;
DROP TABLE outbox;
"#,
    // v6: a conversation names its last message by rowid instead of by id, so that loading the
    // conversation list reads each last message straight from the table, not through the id
    // index first (about half the pages read on a cold start).
    r#"
ALTER TABLE conversations ADD COLUMN last_rowid INTEGER;
UPDATE conversations SET last_rowid = (SELECT rowid FROM messages WHERE id = conversations.last_message);
ALTER TABLE conversations DROP COLUMN last_message;
"#,
    // v7: the indexes that order and identify messages leave out the unsent ones (no server id
    // and no seq, the only rows without them), which the outbox index finds per conversation
    // instead. A send writes two index entries instead of four, and its ack adds two and deletes
    // one instead of moving two and deleting one. A query of a conversation's messages must name
    // `seq` (or the outbox's condition) to read through an index. The server id's uniqueness was
    // a column constraint, so the table is rebuilt (rowids kept: conversations name their last
    // message by rowid).
    r#"
CREATE TABLE messages_v7 (
    rowid             INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    conversation_id   TEXT NOT NULL,
    sender            TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    server_id         TEXT,
    seq               INTEGER,
    body              BLOB NOT NULL,
    state             INTEGER NOT NULL,
    failure           TEXT,
    outgoing          INTEGER NOT NULL,
    timestamp_ms      INTEGER NOT NULL,
    failure_retryable INTEGER NOT NULL DEFAULT 0
);
INSERT INTO messages_v7 (rowid, id, conversation_id, sender, client_id, server_id, seq, body, state, failure, outgoing, timestamp_ms, failure_retryable)
    SELECT rowid, id, conversation_id, sender, client_id, server_id, seq, body, state, failure, outgoing, timestamp_ms, failure_retryable
    FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_v7 RENAME TO messages;
CREATE UNIQUE INDEX messages_by_server_id ON messages (server_id) WHERE server_id IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX messages_unsent ON messages (conversation_id) WHERE outgoing = 1 AND server_id IS NULL;
"#,
    // v8: the server said it holds nothing older than the oldest message cached here, so a short
    // page of a conversation with sparse sequence numbers (XMPP) is served from the cache alone
    // instead of asking the server's archive again on every call.
    r#"
ALTER TABLE conversations ADD COLUMN history_complete INTEGER NOT NULL DEFAULT 0;
"#,
    // v9: a server id is unique within its conversation, not across the store (an XMPP archive
    // id is unique in its archive: ejabberd's are microsecond stamps, which an account's own
    // archive and a group's can share). And what each message's sender asked for, as
    // `receipt_flags`: 1 = no chat markers may name it (XMPP: not `<markable/>`), 2 = a delivery
    // receipt of its own is owed and not yet confirmed sent (XMPP: XEP-0184 `<request/>`),
    // found per conversation through a partial index. Rows of v8 keep 0: markable, nothing owed,
    // as receipts worked before. `reply_id`: the id receipts and markers of a message echo when
    // it is not its client id (XMPP: a stanza id set apart from the origin-id).
    r#"
DROP INDEX messages_by_server_id;
CREATE UNIQUE INDEX messages_by_server_id ON messages (conversation_id, server_id) WHERE server_id IS NOT NULL;
ALTER TABLE messages ADD COLUMN receipt_flags INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_id TEXT;
CREATE INDEX messages_receipt_owed ON messages (conversation_id, seq) WHERE receipt_flags & 2 != 0;
"#,
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Pragmas, then every pending migration, each in its own transaction.
pub(crate) fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The first statement that reads the file: fails with NOTADB on a corrupt file.
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    if current > VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("schema version {current} is newer than this SDK's {VERSION}")),
        ));
    }
    migrate(conn, current, VERSION)
}

pub(crate) fn migrate(conn: &mut Connection, from: u32, to: u32) -> rusqlite::Result<()> {
    for version in from..to {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    // A full integrity check is too slow for every start; this catches a damaged schema.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}
