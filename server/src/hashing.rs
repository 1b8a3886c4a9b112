//! The password-hashing pool: a fixed number of threads hash and verify passwords (argon2id,
//! about 19 MiB and tens of milliseconds of one core each), so that however many clients log in
//! or register at once, at most `hash_threads` hashes run and hold memory.
//!
//! Jobs wait in one queue of at most `hash_queue` jobs; beyond it a job is refused at once
//! ([`Busy::Server`]: the client is told to come back later). One address may have at most
//! `hashes_per_address` jobs queued or running ([`Busy::Address`]), so that one host cannot fill
//! the queue for everyone. Each thread keeps its scratch memory while jobs keep coming and gives
//! it back to the system after [`IDLE_RELEASE`] without one. The threads run at a lower priority
//! (nice 10 on Linux) than the rest of the server: a burst of logins slows logins, not messages.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::auth::Workspace;

/// How long a hashing thread keeps its scratch memory without a job.
pub const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The queue is full.
    Server,
    /// The address has as many jobs queued or running as it may.
    Address,
}

type Job = Box<dyn FnOnce(&mut Workspace) + Send>;

struct Queued {
    address: IpAddr,
    job: Job,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Queued>,
    per_address: HashMap<IpAddr, usize>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    max_queued: usize,
    per_address: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool; its threads stop when it is dropped.
pub struct HashPool {
    shared: Arc<Shared>,
}

impl HashPool {
    /// Starts `threads` hashing threads.
    pub fn start(threads: usize, max_queued: usize, per_address: usize) -> Self {
        let shared = Arc::new(Shared { state: Mutex::default(), wake: Condvar::new(), max_queued, per_address: per_address.max(1) });
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("missive-hash-{i}"))
                .spawn(move || run(&shared))
                .expect("spawn a password-hashing thread");
        }
        HashPool { shared }
    }

    /// Runs `work` on a hashing thread for a client at `address`, or refuses it at once.
    pub async fn run<T: Send + 'static>(&self, address: IpAddr, work: impl FnOnce(&mut Workspace) -> T + Send + 'static) -> Result<T, Busy> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.jobs.len() >= self.shared.max_queued {
                return Err(Busy::Server);
            }
            let count = state.per_address.entry(address).or_insert(0);
            if *count >= self.shared.per_address {
                return Err(Busy::Address);
            }
            *count += 1;
            let job: Job = Box::new(move |w| {
                let _ = tx.send(work(w));
            });
            state.jobs.push_back(Queued { address, job });
        }
        self.shared.wake.notify_one();
        rx.await.map_err(|_| Busy::Server)
    }

    /// Jobs queued and not yet started.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.shared.lock().jobs.len()
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain libc calls on the calling thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

fn run(shared: &Shared) {
    lower_priority();
    let mut workspace = Workspace::default();
    let mut state = shared.lock();
    loop {
        if let Some(Queued { address, job }) = state.jobs.pop_front() {
            drop(state);
            job(&mut workspace);
            state = shared.lock();
            if let Some(count) = state.per_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    state.per_address.remove(&address);
                }
            }
            continue;
        }
        if state.stopping {
            return;
        }
        if workspace.holds_memory() {
            let (next, waited) = shared.wake.wait_timeout(state, IDLE_RELEASE).unwrap_or_else(|e| e.into_inner());
            state = next;
            if waited.timed_out() && state.jobs.is_empty() {
                workspace.release();
            }
        } else {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_the_queue_and_per_address() {
        let pool = HashPool::start(1, 2, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Hold the only thread until released.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let pool = Arc::new(pool);
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(a, move |_| {
                    let _ = started_tx.send(());
                    let _ = hold.recv();
                })
                .await
            })
        };
        started.await.unwrap();
        // `a` has one running: one more may wait, a third is refused for its address.
        let queued_a = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(a, |_| 1).await })
        };
        while pool.queued() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(a, |_| 2).await, Err(Busy::Address));
        let queued_b = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(b, |_| 3).await })
        };
        while pool.queued() < 2 {
            tokio::task::yield_now().await;
        }
        // The queue holds two: anyone else is refused.
        assert_eq!(pool.run("10.0.0.3".parse().unwrap(), |_| 4).await, Err(Busy::Server));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(queued_a.await.unwrap(), Ok(1));
        assert_eq!(queued_b.await.unwrap(), Ok(3));
        // Everything ran: the address may queue again.
        assert_eq!(pool.run(a, |_| 5).await, Ok(5));
    }
}
