//! Seeded, fault-injecting TCP proxy for Missive integration tests.
//!
//! Owns: one loopback listener and, for every client connection accepted on
//! it, that socket plus the upstream socket opened for it, driven by one task.
//!
//! Guarantees:
//! - Reproducible faults: a connection's random draws depend only on the
//!   configured seed and the connection's index (accept order, restarting at 0
//!   on [`FaultProxy::set_config`]); [`cut_points`] gives the drawn cut points.
//! - A byte-count cut forwards exactly the drawn number of bytes (both
//!   directions summed), wherever that falls (mid-frame included), then closes.
//! - Every cut (byte count, [`FaultProxy::cut_all`], [`FaultProxy::set_accepting`],
//!   [`FaultProxy::shutdown`]) closes both sockets of the connection together,
//!   with SO_LINGER 0 so the peers see a reset rather than a clean close.
//! - Bytes are never altered, reordered or duplicated; a half-close (FIN) is
//!   passed on; a reset from one peer is passed on as a reset to the other.
//! - Bounded memory (two fixed buffers per connection) and back-pressure:
//!   nothing is read while a write or an injected delay is pending. No polling.

#![warn(missing_docs)]

pub mod baseline;
pub mod interop;
pub mod toxiproxy;
pub mod xmpp;

use std::fmt;
use std::future::pending;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Read buffer size, per direction and connection.
const BUF_SIZE: usize = 16 * 1024;

/// What faults to inject. Applies to connections opened after it is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultConfig {
    /// Seed for every random draw; same seed and same connection order give
    /// the same faults.
    pub seed: u64,
    /// Each proxied connection is reset after a random number of bytes (both
    /// directions counted), drawn uniformly in this range; `None` = never cut
    /// by byte count. An empty range means its start.
    pub cut_after_bytes: Option<Range<u64>>,
    /// Extra delay added to each forwarded chunk, drawn uniformly in this
    /// range (`Duration::ZERO..Duration::ZERO` = none).
    pub latency: Range<Duration>,
    /// Forward data in chunks of at most this many bytes (slicing), `None` =
    /// as read. `Some(0)` is treated as `Some(1)`.
    pub max_chunk: Option<usize>,
}

impl Default for FaultConfig {
    /// Seed 0, no faults: a transparent proxy.
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            cut_after_bytes: None,
            latency: Duration::ZERO..Duration::ZERO,
            max_chunk: None,
        }
    }
}

/// Counters since [`FaultProxy::start`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted and proxied (refused ones not included).
    pub connections: u64,
    /// Proxied connections the proxy closed abruptly: byte-count cuts,
    /// `cut_all`, `set_accepting(false)`, `shutdown`.
    pub cuts: u64,
    /// Bytes written to either peer, both directions summed.
    pub bytes_forwarded: u64,
    /// Client connections closed at once because accepting was off.
    pub refused: u64,
}

/// The byte-count cut points the proxy draws for connections `0..n` under
/// `seed` and `range` (exactly what [`FaultProxy`] uses).
pub fn cut_points(seed: u64, range: Range<u64>, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|index| Rng::for_connection(seed, index).in_range(&range))
        .collect()
}

/// A running proxy. Dropping it stops listening and cuts every connection;
/// [`FaultProxy::shutdown`] does the same and waits until they are closed.
pub struct FaultProxy {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards each accepted connection to
    /// `upstream` with the faults of `config`.
    pub async fn start(upstream: SocketAddr, config: FaultConfig) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            settings: Mutex::new(Settings { config, next_index: 0 }),
            accepting: AtomicBool::new(true),
            cut_epoch: watch::Sender::new(0),
            open: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Ok(FaultProxy { shared, local_addr, accept_task })
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://127.0.0.1:PORT`, for WebSocket clients.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Abruptly closes (RST) both sockets of every open proxied connection
    /// now. Connections opened afterwards are unaffected.
    pub fn cut_all(&self) {
        self.shared.cut_epoch.send_modify(|epoch| *epoch = epoch.wrapping_add(1));
    }

    /// Network up/down. When off, new client connections are accepted then
    /// reset at once, and turning it off cuts every open connection.
    pub fn set_accepting(&self, on: bool) {
        // Store before cutting: see the ordering note in `accept_loop`.
        self.shared.accepting.store(on, SeqCst);
        if !on {
            self.cut_all();
        }
    }

    /// Replaces the fault configuration for connections opened afterwards;
    /// connection indices restart at 0, so the n-th new connection gets
    /// `cut_points(config.seed, range, n + 1)[n]`.
    pub fn set_config(&self, config: FaultConfig) {
        let mut settings = lock(&self.shared.settings);
        settings.config = config;
        settings.next_index = 0;
    }

    /// Current counters.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(SeqCst),
            cuts: s.cuts.load(SeqCst),
            bytes_forwarded: s.bytes_forwarded.load(SeqCst),
            refused: s.refused.load(SeqCst),
        }
    }

    /// Stops listening, cuts every connection and waits until all are closed.
    pub async fn shutdown(mut self) {
        self.accept_task.abort();
        // Cancelled is the expected outcome; once this returns the listener
        // is closed and no connection can be spawned any more.
        let _ = (&mut self.accept_task).await;
        self.cut_all();
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut_all();
    }
}

struct Shared {
    settings: Mutex<Settings>,
    accepting: AtomicBool,
    /// Bumped by `cut_all`; every connection task watches it.
    cut_epoch: watch::Sender<u64>,
    /// Number of live connection tasks (for `shutdown`).
    open: watch::Sender<usize>,
    connections: AtomicU64,
    cuts: AtomicU64,
    bytes_forwarded: AtomicU64,
    refused: AtomicU64,
}

struct Settings {
    config: FaultConfig,
    next_index: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decrements the open-connection count when a connection task ends,
/// however it ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// Closes a socket with SO_LINGER 0, so the peer gets a reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Transient (e.g. out of descriptors): back off, don't spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Subscribe before reading `accepting`: if it still reads true, a
        // concurrent `set_accepting(false)` bumps the epoch after this
        // subscription, so the new connection is cut too.
        let cut_rx = shared.cut_epoch.subscribe();
        if !shared.accepting.load(SeqCst) {
            shared.refused.fetch_add(1, SeqCst);
            reset(client);
            continue;
        }
        let (config, index) = {
            let mut settings = lock(&shared.settings);
            let index = settings.next_index;
            settings.next_index += 1;
            (settings.config.clone(), index)
        };
        shared.connections.fetch_add(1, SeqCst);
        shared.open.send_modify(|n| *n += 1);
        let guard = OpenGuard(Arc::clone(&shared));
        tokio::spawn(proxy_connection(client, upstream, config, index, cut_rx, guard));
    }
}

/// How one direction, or the whole connection, ended.
enum End {
    /// Clean end of stream (FIN), passed on.
    Eof,
    /// The proxy decided to cut.
    Cut,
    /// A peer reset or an I/O error: passed on as a reset.
    Failed,
}

async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    config: FaultConfig,
    index: u64,
    mut cut_rx: watch::Receiver<u64>,
    guard: OpenGuard,
) {
    let shared = &*guard.0;
    let mut rng = Rng::for_connection(config.seed, index);
    // Always drawn first, so the other draws don't depend on the option.
    let cut_at = rng.in_range(config.cut_after_bytes.as_ref().unwrap_or(&(0..0)));
    let budget = Budget::new(config.cut_after_bytes.as_ref().map(|_| cut_at));
    let (up_rng, down_rng) = (Rng(rng.next_u64()), Rng(rng.next_u64()));

    let mut upstream = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(stream) => stream,
            Err(_) => return reset(client),
        },
        _ = cut_rx.changed() => {
            shared.cuts.fetch_add(1, SeqCst);
            return reset(client);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let end = if budget.exhausted() {
        End::Cut
    } else {
        let (client_rd, client_wr) = client.split();
        let (upstream_rd, upstream_wr) = upstream.split();
        let up = pump(client_rd, upstream_wr, &budget, &config, up_rng, shared);
        let down = pump(upstream_rd, client_wr, &budget, &config, down_rng, shared);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                end = &mut up, if !up_done => match end {
                    End::Eof => up_done = true,
                    other => break other,
                },
                end = &mut down, if !down_done => match end {
                    End::Eof => down_done = true,
                    other => break other,
                },
                _ = cut_rx.changed() => break End::Cut,
            }
            if up_done && down_done {
                break End::Eof;
            }
        }
    };

    match end {
        End::Eof => {} // both FINs passed on: plain close
        End::Cut | End::Failed => {
            if let End::Cut = end {
                // Counted before closing, so whoever sees the reset sees it.
                shared.cuts.fetch_add(1, SeqCst);
            }
            reset(client);
            reset(upstream);
        }
    }
}

/// Copies one direction, slicing, delaying and charging the shared budget.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    budget: &Budget,
    config: &FaultConfig,
    mut rng: Rng,
    shared: &Shared,
) -> End {
    let mut buf = vec![0u8; BUF_SIZE];
    let max_chunk = config.max_chunk.unwrap_or(usize::MAX).max(1);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                return match to.shutdown().await {
                    Ok(()) => End::Eof,
                    Err(_) => End::Failed,
                };
            }
            Ok(n) => n,
            Err(_) => return End::Failed,
        };
        for chunk in buf[..n].chunks(max_chunk) {
            let allowed = budget.reserve(chunk.len());
            if allowed == 0 {
                // The other direction holds the last bytes and will cut.
                return pending().await;
            }
            let delay = rng.duration_in(&config.latency);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if to.write_all(&chunk[..allowed]).await.is_err() {
                return End::Failed;
            }
            shared.bytes_forwarded.fetch_add(allowed as u64, SeqCst);
            if budget.complete(allowed) {
                return End::Cut;
            }
            if allowed < chunk.len() {
                return pending().await;
            }
        }
    }
}

/// Bytes a connection may still forward, shared by both directions. Bytes are
/// reserved before a write and completed after it; the cut happens when none
/// remain and none are in flight, so exactly the drawn number gets through.
struct Budget(Option<Mutex<BudgetState>>);

struct BudgetState {
    remaining: u64,
    in_flight: u64,
}

impl Budget {
    fn new(limit: Option<u64>) -> Self {
        Budget(limit.map(|remaining| Mutex::new(BudgetState { remaining, in_flight: 0 })))
    }

    /// How many of `want` bytes may be written (0 = none left).
    fn reserve(&self, want: usize) -> usize {
        let Some(state) = &self.0 else { return want };
        let mut s = lock(state);
        let take = s.remaining.min(want as u64);
        s.remaining -= take;
        s.in_flight += take;
        take as usize
    }

    /// Records `n` reserved bytes as written; true when it is time to cut.
    fn complete(&self, n: usize) -> bool {
        let Some(state) = &self.0 else { return false };
        let mut s = lock(state);
        s.in_flight -= n as u64;
        s.remaining == 0 && s.in_flight == 0
    }

    fn exhausted(&self) -> bool {
        self.0.as_ref().is_some_and(|state| {
            let s = lock(state);
            s.remaining == 0 && s.in_flight == 0
        })
    }
}

/// splitmix64: tiny, seedable, statistically fine for test faults.
struct Rng(u64);

impl Rng {
    fn for_connection(seed: u64, index: u64) -> Rng {
        // One splitmix round on the index keeps neighbouring streams unrelated.
        Rng(seed ^ Rng(index).next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (an empty range gives its start); always consumes
    /// exactly one draw.
    fn in_range(&mut self, range: &Range<u64>) -> u64 {
        let x = self.next_u64();
        let span = range.end.saturating_sub(range.start);
        range.start + ((u128::from(x) * u128::from(span)) >> 64) as u64
    }

    fn duration_in(&mut self, range: &Range<Duration>) -> Duration {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.in_range(&(nanos(range.start)..nanos(range.end))))
    }
}
