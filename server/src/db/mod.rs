//! The server's store: one dedicated thread owns the SQLite connection and runs every query.
//!
//! Jobs arrive over a bounded channel. The thread drains whatever is queued (up to
//! [`MAX_BATCH`]), runs the jobs in one transaction, each inside its own savepoint so that a
//! refused job rolls back alone, commits once (group commit), and only then runs each job's
//! completion. Completions therefore observe durable state: a send is acknowledged, and fanned out,
//! only after its commit. Because completions run on this one thread in commit order, live events
//! reach every session in cursor order.

pub mod accounts;
pub mod conversations;
pub mod messages;
pub mod schema;

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use missive_proto::v1::ErrorCode;

use crate::error::{ApiError, ApiResult};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Jobs queued before senders wait (backpressure on the sessions).
const QUEUE: usize = 8192;

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// A cheap handle to the store thread.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating and migrating) the database at `path` and starts its thread. The returned
    /// receiver fires when the thread has committed its last batch and closed the database, which
    /// happens once every `Db` handle is dropped.
    pub fn open(path: &Path) -> Result<(Db, oneshot::Receiver<()>), rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        schema::prepare(&mut conn)?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (closed_tx, closed_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("missive-db".into())
            .spawn(move || {
                run(conn, rx);
                let _ = closed_tx.send(());
            })
            .expect("spawn the store thread");
        Ok((Db { jobs }, closed_rx))
    }

    /// Runs `work` in the store thread; `done` runs there too, after the commit, with the result
    /// (a storage failure if the commit failed).
    pub async fn submit<T, W, D>(&self, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
        D: FnOnce(ApiResult<T>) + Send + 'static,
    {
        let Ok(permit) = self.jobs.reserve().await else {
            // The store thread is gone: the server is shutting down.
            done(Err(ApiError::refuse(ErrorCode::Unavailable, "server is shutting down")));
            return;
        };
        permit.send(Box::new(move |conn| {
            let result = work(conn);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                done(match result {
                    Ok(_) | Err(ApiError::Storage(_)) if !committed => {
                        Err(ApiError::refuse(ErrorCode::Internal, "storage commit failed"))
                    }
                    r => r,
                })
            });
            (ok, completion)
        }));
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

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&conn, &mut batch, &mut completions);
        for completion in completions.drain(..) {
            completion(committed);
        }
    }
}

/// Runs one batch in one transaction; returns whether it committed.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>, completions: &mut Vec<Completion>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a transaction");
        for job in batch.drain(..) {
            completions.push(job(conn).1);
        }
        return false;
    }
    for job in batch.drain(..) {
        let savepoint = conn.execute_batch("SAVEPOINT job");
        let (ok, completion) = job(conn);
        completions.push(completion);
        if savepoint.is_ok() {
            let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "savepoint failure");
            }
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "commit failed; the batch is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            false
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
