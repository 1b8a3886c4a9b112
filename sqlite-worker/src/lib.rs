//! A dedicated thread that owns one SQLite connection and runs every job sent to it, with group
//! commit.
//!
//! Jobs arrive over a bounded channel (backpressure on the callers). The thread drains what is
//! queued (up to [`MAX_BATCH`] jobs), runs them in one transaction, each inside its own savepoint
//! so that a failing job rolls back alone, commits once, and only then runs each job's
//! completion with the job's result and whether the commit succeeded. Completions therefore see
//! durable state, and they run in commit order on this one thread. A job alone in its batch runs
//! without a savepoint: the transaction is its savepoint.
//!
//! For a database file in WAL mode, checkpoints run on a second connection in a background
//! thread (passive: they never block the writer), instead of inside a commit of the writer
//! thread where SQLite's automatic checkpoint would stall the jobs behind it. A passive
//! checkpoint cannot catch up with a writer that never pauses, and SQLite restarts the log only
//! once it has caught up, so past [`WAL_BACKSTOP_FRAMES`] the writer copies the log itself
//! between two batches. The log file is cut back to [`WAL_SIZE_LIMIT`] when it restarts: a
//! burst of writes does not leave a log of a hundred megabytes behind.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let conn = rusqlite::Connection::open_in_memory().unwrap();
//! conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
//! let (worker, _closed) = missive_sqlite_worker::Worker::spawn(conn, "doc");
//! let n: Result<i64, rusqlite::Error> = worker
//!     .call(|c| {
//!         c.execute("INSERT INTO t VALUES (1)", [])?;
//!         c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
//!     })
//!     .await
//!     .unwrap();
//! assert_eq!(n.unwrap(), 1);
//! # });
//! ```

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Log frames (pages) that wake the background checkpointer (about 8 MiB of 4 KiB pages; twice
/// SQLite's default: a page that a burst rewrites in every commit is copied once per checkpoint).
const CHECKPOINT_FRAMES: i32 = 2000;
/// Log frames past which the writer checkpoints itself (about 32 MiB).
pub const WAL_BACKSTOP_FRAMES: i32 = 8000;
/// Size the log file is cut back to when it restarts (`PRAGMA journal_size_limit`); above the
/// log's usual size, so that it is not cut and grown again on every cycle.
pub const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// Jobs queued before submitters wait.
const QUEUE: usize = 8192;

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// The worker thread has stopped; the job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// A cheap, clonable handle to the worker thread.
#[derive(Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread. The receiver fires once the thread has committed its last batch and
    /// dropped the connection, which happens when every `Worker` handle is gone.
    pub fn spawn(conn: Connection, name: &str) -> (Worker, oneshot::Receiver<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (closed_tx, closed_rx) = oneshot::channel();
        let checkpointer = Checkpointer::start(&conn, name);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                run(&conn, rx, checkpointer.as_ref());
                drop(checkpointer);
                drop(conn);
                let _ = closed_tx.send(());
            })
            .expect("spawn the SQLite worker thread");
        (Worker { jobs }, closed_rx)
    }

    /// Runs `work` on the worker thread; `done` runs there too after the commit, with the result
    /// and whether the batch committed. `Err(Stopped)` (and `done` never runs) if the thread is
    /// gone.
    pub async fn submit<T, E, W, D>(&self, work: W, done: D) -> Result<(), Stopped>
    where
        T: Send + 'static,
        E: Send + 'static,
        W: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        D: FnOnce(Result<T, E>, bool) + Send + 'static,
    {
        let permit = self.jobs.reserve().await.map_err(|_| Stopped)?;
        permit.send(Box::new(move |conn| {
            let result = work(conn);
            let ok = result.is_ok();
            (ok, Box::new(move |committed| done(result, committed)))
        }));
        Ok(())
    }

    /// Runs `work` and waits for its result. A result whose batch failed to commit is returned as
    /// `Err(Stopped)` too: the caller cannot rely on it.
    pub async fn call<T, E, W>(&self, work: W) -> Result<Result<T, E>, Stopped>
    where
        T: Send + 'static,
        E: Send + 'static,
        W: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(work, move |r, committed| {
            let _ = tx.send(if committed { Some(r) } else { None });
        })
        .await?;
        rx.await.ok().flatten().ok_or(Stopped)
    }
}

/// Runs passive checkpoints on its own connection when the writer says the WAL has grown.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
}

thread_local! {
    /// Frames in the log after the last commit on this thread (set by SQLite's WAL hook, which
    /// runs on the committing thread: the worker's).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

impl Checkpointer {
    /// Takes over checkpoints for a WAL database file; `None` (SQLite's automatic checkpoints
    /// stay on) for in-memory or non-WAL databases.
    fn start(conn: &Connection, name: &str) -> Option<Checkpointer> {
        let path = conn.path().filter(|p| !p.is_empty())?.to_owned();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        let reader = Connection::open(&path).ok()?;
        reader.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).ok()?;
        // Turning automatic checkpoints off clears the WAL hook: set it after.
        conn.pragma_update(None, "wal_autocheckpoint", 0).ok()?;
        conn.wal_hook(Some(note_wal_frames));
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name(format!("{name}-checkpoint"))
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = reader.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpoint failed");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { wake })
    }

    /// Called by the writer after each commit.
    fn committed(&self, conn: &Connection) {
        let frames = WAL_FRAMES.with(|f| f.get());
        if frames >= WAL_BACKSTOP_FRAMES {
            // Busy (nothing copied) if the background checkpoint is running: tried again after
            // the next commit.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "checkpoint failed");
            }
        } else if frames >= CHECKPOINT_FRAMES {
            let _ = self.wake.try_send(());
        }
    }
}

fn run(conn: &Connection, mut rx: mpsc::Receiver<Job>, checkpointer: Option<&Checkpointer>) {
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
        let committed = run_batch(conn, &mut batch, &mut completions);
        for completion in completions.drain(..) {
            completion(committed);
        }
        // After the completions: a checkpoint by the writer delays the next batch, not this one.
        if let Some(c) = checkpointer {
            c.committed(conn);
        }
    }
}

/// Runs one batch in one transaction; returns whether it committed.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>, completions: &mut Vec<Completion>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a transaction");
        completions.extend(batch.drain(..).map(|job| job(conn).1));
        return false;
    }
    // A job alone in its transaction needs no savepoint (which copies every page the job
    // changes first): if it fails, the transaction is rolled back instead.
    if batch.len() == 1 {
        let job = batch.pop().expect("one job");
        let (ok, completion) = job(conn);
        completions.push(completion);
        if !ok {
            return match conn.execute_batch("ROLLBACK") {
                // Nothing of the failed job remains, as when its savepoint is rolled back.
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot roll back a failed job");
                    false
                }
            };
        }
    }
    // Cached statements: these run once per job, so parsing them each time would show.
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    for job in batch.drain(..) {
        let savepoint = exec("SAVEPOINT job");
        let (ok, completion) = job(conn);
        completions.push(completion);
        if savepoint.is_ok() {
            let end = if ok { exec("RELEASE job") } else { exec("ROLLBACK TO job").and_then(|_| exec("RELEASE job")) };
            if let Err(e) = end {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)").unwrap();
        Worker::spawn(conn, "test").0
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone() {
        let w = worker();
        let mut results = vec![];
        for x in [1, 1, 2] {
            let (tx, rx) = oneshot::channel();
            w.submit(
                move |c| c.execute("INSERT INTO t VALUES (?1)", [x]),
                move |r: Result<usize, rusqlite::Error>, committed| {
                    let _ = tx.send((r.is_ok(), committed));
                },
            )
            .await
            .unwrap();
            results.push(rx);
        }
        let mut outcomes = vec![];
        for rx in results {
            outcomes.push(rx.await.unwrap());
        }
        assert_eq!(outcomes, vec![(true, true), (false, true), (true, true)]);
        let n: i64 = w.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))).await.unwrap().unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn a_failing_job_alone_in_its_transaction_leaves_nothing_and_gets_its_error() {
        let w = worker();
        let result = w
            .call(|c| {
                c.execute("INSERT INTO t VALUES (1)", [])?;
                c.execute("INSERT INTO t VALUES (2)", [])?;
                c.execute("INSERT INTO t VALUES (1)", [])
            })
            .await;
        assert!(matches!(result, Ok(Err(rusqlite::Error::SqliteFailure(..)))), "{result:?}");
        let n: i64 = w.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))).await.unwrap().unwrap();
        assert_eq!(n, 0, "the rows it wrote before failing are gone");
        w.call(|c| c.execute("INSERT INTO t VALUES (1)", [])).await.unwrap().unwrap();
    }

    /// A writer that never pauses still gets its log checkpointed and restarted, and the log
    /// file is cut back once it restarts: a burst does not leave a huge file behind.
    #[tokio::test]
    async fn the_log_stays_bounded_under_a_writer_that_never_pauses() {
        let dir = std::env::temp_dir().join(format!("missive-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal.db");
        let wal = dir.join("wal.db-wal");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE big (x BLOB)").unwrap();
        let (w, closed) = Worker::spawn(conn, "wal-test");
        // 40,000 pages of rows (about 160 MiB) in 2,000 commits, four jobs queued at all times
        // so that the writer never waits.
        let mut largest = 0;
        let mut queued = std::collections::VecDeque::new();
        for i in 0..2_000 {
            let (tx, rx) = oneshot::channel();
            let work = |c: &Connection| {
                c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) INSERT INTO big SELECT zeroblob(4000) FROM n", [])
            };
            w.submit(work, move |r: Result<usize, rusqlite::Error>, ok| {
                let _ = tx.send(r.is_ok() && ok);
            })
            .await
            .unwrap();
            queued.push_back(rx);
            if queued.len() >= 4 {
                assert!(queued.pop_front().unwrap().await.unwrap());
            }
            if i % 10 == 0 {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            }
        }
        for rx in queued {
            assert!(rx.await.unwrap());
        }
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        let frame = 4096 + 24;
        assert!(largest < 2 * WAL_BACKSTOP_FRAMES as u64 * frame, "the log reached {largest} bytes");
        // Once the writer pauses, the log restarts and is cut back.
        let mut size = u64::MAX;
        for _ in 0..500 {
            w.call(|c| c.execute("INSERT INTO big VALUES (x'00')", [])).await.unwrap().unwrap();
            size = std::fs::metadata(&wal).unwrap().len();
            if size <= WAL_SIZE_LIMIT as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(size <= WAL_SIZE_LIMIT as u64, "the log stayed at {size} bytes");
        drop(w);
        closed.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn completions_run_in_submission_order() {
        let w = worker();
        let order = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let mut last = None;
        for i in 0..100 {
            let order = order.clone();
            let (tx, rx) = oneshot::channel();
            w.submit(
                move |_| Ok::<_, ()>(i),
                move |r, _| {
                    order.lock().unwrap().push(r.unwrap());
                    let _ = tx.send(());
                },
            )
            .await
            .unwrap();
            last = Some(rx);
        }
        last.unwrap().await.unwrap();
        assert_eq!(*order.lock().unwrap(), (0..100).collect::<Vec<_>>());
    }
}
