//! The server's store: one `missive-sqlite-worker` thread owns the writing SQLite connection and
//! runs every write with group commit. Completions run after the commit, in commit order, on that
//! thread: a send is acknowledged, and fanned out, only after its commit, and live events reach
//! every session in cursor order. Requests that only read go to the reader pool instead
//! ([`readers`]), so that no read, however heavy, waits in front of a write.

pub mod accounts;
pub mod blocks;
pub mod conversations;
pub mod messages;
pub mod readers;
pub mod schema;

use std::path::Path;

use missive_proto::v1::ErrorCode;
use missive_sqlite_worker::Worker;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::config::Synchronous;
use crate::error::{ApiError, ApiResult};

/// A cheap handle to the store thread and the reader pool.
#[derive(Clone)]
pub struct Db {
    worker: Worker,
    readers: std::sync::Arc<readers::Readers>,
}

impl Db {
    /// Opens (creating and migrating) the database at `path` and starts its thread. The returned
    /// receiver fires when the thread has committed its last batch and closed the database, which
    /// happens once every `Db` handle is dropped.
    pub fn open(path: &Path, synchronous: Synchronous, read_threads: usize) -> Result<(Db, oneshot::Receiver<()>), rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        schema::prepare(&mut conn, synchronous.pragma())?;
        let readers = std::sync::Arc::new(readers::Readers::open(path, read_threads)?);
        let (worker, closed) = Worker::spawn(conn, "missive-db");
        Ok((Db { worker, readers }, closed))
    }

    /// Runs `work` on a reader thread in `key`'s turn (see [`readers`]), then `done` there with
    /// its result. `work` sees the commits that completed before it began.
    pub fn read<T, W, D>(&self, key: u64, work: W, done: D)
    where
        W: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
        D: FnOnce(ApiResult<T>) + Send + 'static,
    {
        self.readers.submit(key, move |c| done(work(c)));
    }

    /// Runs `work` on a reader thread and waits for its result.
    pub async fn read_call<T, W>(&self, key: u64, work: W) -> ApiResult<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.read(key, work, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or_else(|_| Err(ApiError::refuse(ErrorCode::Unavailable, "store stopped")))
    }

    /// Runs `work` in the store thread; `done` runs there too, after the commit, with the result
    /// (an error if the commit failed or the store is stopping).
    pub async fn submit<T, W, D>(&self, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
        D: FnOnce(ApiResult<T>) + Send + 'static,
    {
        let done = std::sync::Arc::new(std::sync::Mutex::new(Some(done)));
        let on_commit = done.clone();
        let submitted = self
            .worker
            .submit(work, move |result, committed| {
                let Some(done) = on_commit.lock().ok().and_then(|mut d| d.take()) else { return };
                done(match result {
                    Ok(_) | Err(ApiError::Storage(_)) if !committed => {
                        Err(ApiError::refuse(ErrorCode::Internal, "storage commit failed"))
                    }
                    r => r,
                })
            })
            .await;
        if submitted.is_err() {
            if let Some(done) = done.lock().ok().and_then(|mut d| d.take()) {
                done(Err(ApiError::refuse(ErrorCode::Unavailable, "server is shutting down")));
            }
        }
    }

    /// The `synchronous` setting of the store thread's connection (as SQLite reports it: 2 is
    /// `FULL`, 1 is `NORMAL`).
    pub async fn synchronous(&self) -> ApiResult<i64> {
        self.call(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)).await
    }

    /// Runs `work` in the store thread and waits for its committed result.
    pub async fn call<T, W>(&self, work: W) -> ApiResult<T>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(work, move |r| {
            let _ = tx.send(r);
        })
        .await;
        rx.await.unwrap_or_else(|_| Err(ApiError::refuse(ErrorCode::Unavailable, "store stopped")))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
