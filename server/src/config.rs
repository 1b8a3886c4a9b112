//! Server configuration: where to listen and store, optional TLS, how durable a commit is, and
//! the limits that bound what one client (or one address) can cost the server. Every limit has a
//! default suited to a small deployment; the README's server section lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of a [`crate::Server`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see `ServerHandle::local_addr`).
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (`missive.db`); created if missing.
    pub data_dir: PathBuf,
    /// Serve `wss` with this certificate and key; plain `ws` when `None`.
    pub tls: Option<TlsFiles>,
    /// How durable a commit is before the server acknowledges it.
    pub synchronous: Synchronous,
    pub limits: ServerLimits,
}

impl ServerConfig {
    /// Plain `ws` on `listen`, data in `data_dir`, `synchronous=FULL`, default limits.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig { listen, data_dir: data_dir.into(), tls: None, synchronous: Synchronous::Full, limits: ServerLimits::default() }
    }
}

/// SQLite's `synchronous` setting for the server's database (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is on disk (fsync of the log) before it is acknowledged: an acknowledged
    /// message survives a process kill, an OS crash and a power cut.
    #[default]
    Full,
    /// The log is synced only at checkpoints: an acknowledged message survives a process kill,
    /// but the last commits may be lost in an OS crash or a power cut.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

impl std::str::FromStr for Synchronous {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            other => Err(format!("synchronous must be full or normal, not {other:?}")),
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

/// Per-connection, per-address and per-server limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Sustained requests per second one connection may send.
    pub requests_per_second: u32,
    /// Requests one connection may send in a burst above the sustained rate.
    pub burst: u32,
    /// A connection refused for its rate more than this many times within `flood_window` is
    /// closed (4003).
    pub flood_refusals: u32,
    /// See `flood_refusals`.
    pub flood_window: Duration,
    /// Time from TCP accept to a successful login, register or resume.
    pub auth_timeout: Duration,
    /// A connection that sends nothing (not even a ping) for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose socket accepts no data for this long is closed (4004).
    pub write_timeout: Duration,
    /// Bytes of frames queued for one connection beyond which it is closed as a slow consumer
    /// (4004). Replies to reads never fill it: a connection's reads wait while their replies
    /// are unsent (see `reads_per_connection`).
    pub outbound_queue_bytes: usize,
    /// Reads (sync, history, lists, presence and typing audiences) of one connection queued,
    /// running or with a reply not yet written to its socket; further reads wait, and the
    /// connection's other requests behind them. A write waits until the connection's earlier
    /// reads are answered, so that its reply never overtakes theirs.
    pub reads_per_connection: usize,
    /// Threads serving reads from read-only database connections.
    pub read_threads: usize,
    /// Lifetime of a login token.
    pub token_ttl: Duration,
    /// Failed logins allowed on one connection before it is closed (4005).
    pub max_failed_logins: u32,
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Open connections from one IP address beyond which new ones from it are refused.
    pub max_connections_per_address: usize,
    /// Chat rooms one connection may be present in at once (each is a live subscription).
    pub max_rooms_per_connection: usize,
    /// Password hashing and login throttling.
    pub auth: AuthLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            requests_per_second: 1_000,
            burst: 2_000,
            flood_refusals: 1_000,
            flood_window: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(10),
            outbound_queue_bytes: 4 * 1024 * 1024,
            reads_per_connection: 4,
            read_threads: 2,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            max_failed_logins: 5,
            max_connections: 100_000,
            max_connections_per_address: 1_000,
            max_rooms_per_connection: 64,
            auth: AuthLimits::default(),
        }
    }
}

/// Password hashing (argon2id: about 19 MiB and tens of milliseconds of one core per hash) and
/// the throttles on password guessing and registration. See `throttle` for the rules.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Threads hashing passwords; at most this many hashes run at once (each holds 19 MiB).
    pub hash_threads: usize,
    /// Hashes waiting for a thread beyond which a login or registration is refused
    /// (`UNAVAILABLE`, retryable).
    pub hash_queue: usize,
    /// Hashes queued or running for one IP address beyond which its next login or registration
    /// is refused (`RATE_LIMITED`, retryable).
    pub hashes_per_address: usize,
    /// Failed logins for one account from one address before each next attempt from there
    /// waits (exponential backoff from `backoff_base` to `backoff_max`).
    pub pair_free_failures: u32,
    /// Failures (wrong passwords, unknown users, taken names) from one address, any account,
    /// before its next attempts wait.
    pub address_free_failures: u32,
    /// Failed logins for one account from addresses it never logged in from, before further
    /// attempts from such addresses wait (from `backoff_base` to `account_backoff_max`).
    pub account_free_failures: u32,
    /// First wait once failures exceed the free ones; doubled per further failure.
    pub backoff_base: Duration,
    /// Longest wait for an account and address, or an address.
    pub backoff_max: Duration,
    /// Longest wait for an account from unknown addresses: a correct password from a clean
    /// address gets a try at least this often.
    pub account_backoff_max: Duration,
    /// Failures are forgotten after this long without a new one.
    pub forget_after: Duration,
    /// How long an address from which an account logged in stays trusted for that account.
    pub trust_for: Duration,
    /// Accounts one address may register in a burst...
    pub registration_burst: u32,
    /// ...then one per this interval.
    pub registration_interval: Duration,
    /// Entries each throttle table holds at most (oldest evicted first).
    pub throttle_entries: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        AuthLimits {
            hash_threads: cores.div_ceil(2),
            hash_queue: 32,
            hashes_per_address: 4,
            pair_free_failures: 5,
            address_free_failures: 20,
            account_free_failures: 100,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(15 * 60),
            account_backoff_max: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            trust_for: Duration::from_secs(30 * 24 * 3600),
            registration_burst: 100,
            registration_interval: Duration::from_secs(36),
            throttle_entries: 100_000,
        }
    }
}
