//! The local store: SQLite through rusqlite, owned by one `missive-sqlite-worker` thread (group
//! commit: concurrent writes share one transaction and one fsync).
//!
//! Tables: `conversations` (with unread counts and the last message maintained on every write,
//! not recomputed on read), `messages` (unique id `"{sender}:{client_id}"` and unique server id:
//! a replay is a no-op; the outbox is our messages without a server id, found through a partial
//! index, so a local echo and its place in the outbox are one row), `settings` (session, sync
//! cursor). A corrupt or newer database is refused with `Error::CorruptStore` and left untouched.

pub mod conversations;
pub mod messages;
pub(crate) mod schema;
pub mod settings;

use std::path::{Path, PathBuf};

use missive_sqlite_worker::Worker;
use rusqlite::Connection;

use crate::error::{Error, Result};

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    File(PathBuf),
    /// Nothing survives the process: for tests and throwaway clients.
    Memory,
}

/// A handle to the store thread.
#[derive(Clone)]
pub struct Store {
    worker: Worker,
}

impl Store {
    /// Opens (creating and migrating) the store.
    pub fn open(location: &StoreLocation) -> Result<Store> {
        let (mut conn, path) = match location {
            StoreLocation::File(path) => (Connection::open(path).map_err(|e| corrupt(path, e))?, Some(path)),
            StoreLocation::Memory => (Connection::open_in_memory()?, None),
        };
        schema::prepare(&mut conn).map_err(|e| match path {
            Some(p) => corrupt(p, e),
            None => Error::from(e),
        })?;
        let (worker, _closed) = Worker::spawn(conn, "missive-store");
        Ok(Store { worker })
    }

    /// Runs `work` in one transaction on the store thread and returns its committed result.
    pub async fn call<T, W>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        match self.worker.call(work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Storage("the store could not commit or has stopped".into())),
        }
    }
}

fn corrupt(path: &Path, e: rusqlite::Error) -> Error {
    Error::CorruptStore { path: path.display().to_string(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_corrupt_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let garbage = b"this is not a database, but it holds someone's data".repeat(200);
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(&StoreLocation::File(path.clone())).err().expect("refused");
        assert_eq!(err.code(), "CORRUPT_STORE");
        assert!(err.to_string().contains("store.db"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "nothing deleted or rewritten");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::VERSION + 5).unwrap();
        drop(conn);
        let err = Store::open(&StoreLocation::File(path)).err().expect("refused");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    /// Every migration from every older version keeps the data, the outbox above all.
    #[test]
    fn migrations_from_every_older_version_keep_unsent_messages() {
        for start in 1..schema::VERSION {
            let mut conn = Connection::open_in_memory().unwrap();
            schema::migrate(&mut conn, 0, start).unwrap();
            conn.execute_batch(
                "INSERT INTO conversations (id, kind) VALUES ('c', 0);
                 INSERT INTO messages (rowid, id, conversation_id, sender, client_id, body, state, outgoing, timestamp_ms)
                 VALUES (1, 'me:x', 'c', 'me', 'x', x'', 0, 1, 0);
                 INSERT INTO messages (rowid, id, conversation_id, sender, client_id, server_id, seq, body, state, outgoing, timestamp_ms)
                 VALUES (2, 'you:y', 'c', 'you', 'y', 's7', 7, x'', 2, 0, 0);",
            )
            .unwrap();
            if start < 5 {
                conn.execute_batch("INSERT INTO outbox (client_id, message_rowid) VALUES ('x', 1)").unwrap();
            }
            let last = if start < 6 { "UPDATE conversations SET last_message = 'me:x'" } else { "UPDATE conversations SET last_rowid = 1" };
            conn.execute_batch(last).unwrap();
            schema::migrate(&mut conn, start, schema::VERSION).unwrap();
            let unsent = messages::load_outbox(&conn).unwrap();
            assert_eq!(unsent.iter().map(|u| u.client_id.as_str()).collect::<Vec<_>>(), ["x"], "from version {start}");
            let listed = conversations::list(&conn).unwrap();
            let last = listed[0].last_message.as_ref().map(|m| m.id.as_str());
            assert_eq!(last, Some("me:x"), "the last message survives the migration from version {start}");
            let page: Vec<(String, Option<String>)> =
                messages::page(&conn, "c", None, 10).unwrap().into_iter().map(|m| (m.id, m.server_id)).collect();
            assert_eq!(page, [("me:x".into(), None), ("you:y".into(), Some("s7".into()))], "from version {start}");
            let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(v, schema::VERSION);
        }
    }
}
