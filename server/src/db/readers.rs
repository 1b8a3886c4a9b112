//! The reader pool: a few threads, each with its own connection to the database (read-only by
//! `PRAGMA query_only`), serve the requests that only read (sync, history, conversation lists,
//! typing and presence audiences, the taken-name check). WAL lets them read while the writer
//! thread commits, so a heavy reader delays other readers a little and writers not at all.
//!
//! Jobs are queued per key (a connection) in a [`FairQueue`]: keys take turns and one key runs
//! one job at a time, so a connection that pipelines a thousand history requests holds one
//! reader thread at a time, and everyone else's reads get their turn in between. How many reads
//! one connection may have queued at all is bounded by the connection (its read permits).
//!
//! Each job runs in its own read transaction: it sees one snapshot, the commits before it began.
//! A reader therefore never sees a write that is not yet acknowledged, and a connection that
//! wants to read its own writes waits for their completions before it submits the read (see
//! `session::Writes`).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;

use crate::fair::FairQueue;

type Job = Box<dyn FnOnce(&Connection) + Send>;

struct Shared {
    queue: Mutex<(FairQueue<u64, Job>, bool)>,
    wake: Condvar,
}

/// The pool; its threads stop when it is dropped (after the jobs already queued).
pub struct Readers {
    shared: Arc<Shared>,
}

impl Readers {
    /// Opens `threads` connections to the database at `path` (already created and migrated)
    /// and starts a thread for each.
    pub fn open(path: &Path, threads: usize) -> rusqlite::Result<Readers> {
        let shared = Arc::new(Shared { queue: Mutex::new((FairQueue::new(1), false)), wake: Condvar::new() });
        for i in 0..threads.max(1) {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "query_only", true)?;
            conn.set_prepared_statement_cache_capacity(64);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("missive-db-read-{i}"))
                .spawn(move || run(&shared, &conn))
                .expect("spawn a database reader thread");
        }
        Ok(Readers { shared })
    }

    /// Queues `job` in `key`'s lane; it runs on a reader thread inside a read transaction.
    pub fn submit(&self, key: u64, job: impl FnOnce(&Connection) + Send + 'static) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.0.push(key, Box::new(job));
        drop(q);
        self.shared.wake.notify_one();
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.shared.wake.notify_all();
    }
}

fn run(shared: &Shared, conn: &Connection) {
    let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some((key, job)) = q.0.pop() {
            drop(q);
            // A read transaction: every statement of the job sees the same snapshot.
            let began = conn.execute_batch("BEGIN");
            // A panicking job loses its answer (its permit is released), not the thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
            if began.is_ok() {
                let _ = conn.execute_batch("COMMIT");
            }
            q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.0.done(&key);
            continue;
        }
        if q.1 {
            return;
        }
        q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}
