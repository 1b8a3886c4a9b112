//! The server's store: one `missive-sqlite-worker` thread owns the SQLite connection and runs
//! every query with group commit. Completions run after the commit, in commit order, on that
//! thread: a send is acknowledged, and fanned out, only after its commit, and live events reach
//! every session in cursor order.

pub mod accounts;
pub mod conversations;
pub mod messages;
pub mod schema;

use std::path::Path;

use missive_proto::v1::ErrorCode;
use missive_sqlite_worker::Worker;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};

/// A cheap handle to the store thread.
#[derive(Clone)]
pub struct Db {
    worker: Worker,
}

impl Db {
    /// Opens (creating and migrating) the database at `path` and starts its thread. The returned
    /// receiver fires when the thread has committed its last batch and closed the database, which
    /// happens once every `Db` handle is dropped.
    pub fn open(path: &Path) -> Result<(Db, oneshot::Receiver<()>), rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        schema::prepare(&mut conn)?;
        let (worker, closed) = Worker::spawn(conn, "missive-db");
        Ok((Db { worker }, closed))
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
