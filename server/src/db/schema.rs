//! Schema and migrations. The version lives in `PRAGMA user_version`; each migration runs in one
//! transaction, so a crash mid-migration leaves the previous version intact.

use rusqlite::Connection;

/// Migrations in order; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_cursor   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tokens (
    token_hash    BLOB PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    device_id     TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE devices (
    user_id       INTEGER NOT NULL REFERENCES users(id),
    device_id     TEXT NOT NULL,
    acked_cursor  INTEGER NOT NULL DEFAULT 0,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          INTEGER NOT NULL,
    title         TEXT NOT NULL,
    created_by    INTEGER NOT NULL REFERENCES users(id),
    created_at_ms INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    direct_key    TEXT UNIQUE
);
CREATE TABLE members (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    user_id         INTEGER NOT NULL REFERENCES users(id),
    role            INTEGER NOT NULL,
    joined_at_ms    INTEGER NOT NULL,
    delivered_seq   INTEGER NOT NULL DEFAULT 0,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id);
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    seq             INTEGER NOT NULL,
    sender_id       INTEGER NOT NULL REFERENCES users(id),
    client_id       TEXT NOT NULL,
    body            BLOB NOT NULL,
    server_time_ms  INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_id)
);
CREATE TABLE inbox (
    user_id    INTEGER NOT NULL,
    cursor     INTEGER NOT NULL,
    message_id INTEGER REFERENCES messages(id),
    event      BLOB,
    PRIMARY KEY (user_id, cursor)
) WITHOUT ROWID;
"#,
    // 2: "log out all devices" finds a user's tokens without a scan.
    r#"
CREATE INDEX tokens_by_user ON tokens(user_id);
"#,
    // 3: an event for many users (a membership change, a receipt) is stored once and each
    // inbox row refers to it, instead of a copy per member.
    r#"
CREATE TABLE shared_events (
    id    INTEGER PRIMARY KEY,
    event BLOB NOT NULL
);
ALTER TABLE inbox ADD COLUMN shared_event_id INTEGER REFERENCES shared_events(id);
"#,
    // 4: block lists: `user_id` has blocked `blocked_id`.
    r#"
CREATE TABLE blocks (
    user_id    INTEGER NOT NULL REFERENCES users(id),
    blocked_id INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks(blocked_id);
"#,
    // 5: presence consent: a member's presence reaches the others of a conversation once the
    // member has engaged in it (created it, added someone to it, or sent a message in it).
    r#"
ALTER TABLE members ADD COLUMN engaged INTEGER NOT NULL DEFAULT 0;
UPDATE members SET engaged = 1
 WHERE user_id = (SELECT created_by FROM conversations c WHERE c.id = members.conversation_id)
    OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = members.conversation_id AND m.sender_id = members.user_id);
"#,
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Sets the connection pragmas (`synchronous` is `FULL` or `NORMAL`) and migrates to [`VERSION`].
/// A database from a newer build is refused rather than touched.
pub fn prepare(conn: &mut Connection, synchronous: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("database schema version {current} is newer than this server ({VERSION})")),
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_fresh_database_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        prepare(&mut conn, "FULL").unwrap();
        prepare(&mut conn, "FULL").unwrap();
        let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, VERSION);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1).unwrap();
        let err = prepare(&mut conn, "FULL").unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
