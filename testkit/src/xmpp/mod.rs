//! Throwaway XMPP servers for tests: a real Prosody, ejabberd or Openfire on loopback, each with
//! its own configuration, data directory and free ports, started in the foreground and killed on
//! drop; and a cluster of ejabberd nodes ([`EjabberdCluster`]).
//!
//! Prosody and ejabberd come from Debian's packages (`cargo xtask test` installs them), Openfire
//! from the unpacked home named by `OPENFIRE_HOME` ([`openfire_home`]); when one is missing,
//! [`XmppServer::start`] panics with how to get it: a test needing it never skips.
//! `MISSIVE_KEEP_XMPP=1` keeps the directory of a server whose test failed (its log is printed
//! either way).
//!
//! This file owns what every kind shares: the server process, waiting until it serves, stopping,
//! killing and restarting it, its temporary directory. Each kind's files and command line live in
//! its own module ([`prosody`], [`ejabberd`], [`openfire`]); [`raw`] is a small client to check
//! what a server does.

mod cluster;
mod ejabberd;
mod openfire;
mod prosody;
pub mod raw;

pub use cluster::EjabberdCluster;
pub use openfire::openfire_home;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The XMPP domain every throwaway server serves.
pub const DOMAIN: &str = "localhost";
/// Its MUC service.
pub const MUC_DOMAIN: &str = "conference.localhost";

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports (all held open while choosing, so none is chosen twice).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Prosody 0.12 (Lua).
    Prosody,
    /// ejabberd 23.01 (Erlang).
    Ejabberd,
    /// Openfire 5.1 (Java) with its Monitoring plugin for XEP-0313, from `OPENFIRE_HOME`.
    Openfire,
}

/// Starts throwaway Prosody servers.
pub struct Prosody;

impl Prosody {
    /// A fresh Prosody: see [`XmppServer::start`].
    pub fn start() -> XmppServer {
        XmppServer::start(ServerKind::Prosody)
    }
}

/// Starts throwaway ejabberd servers.
pub struct Ejabberd;

impl Ejabberd {
    /// A fresh ejabberd: see [`XmppServer::start`].
    pub fn start() -> XmppServer {
        XmppServer::start(ServerKind::Ejabberd)
    }
}

/// Starts throwaway Openfire servers.
pub struct Openfire;

impl Openfire {
    /// A fresh Openfire: see [`XmppServer::start`].
    pub fn start() -> XmppServer {
        XmppServer::start(ServerKind::Openfire)
    }
}

/// The SQLite driver of Lua's DBI, which Prosody's SQL storage needs (Debian's `lua-dbi-sqlite3`).
pub const LUA_DBI_SQLITE: &str = "/usr/lib/x86_64-linux-gnu/lua/5.4/dbd/sqlite3.so";

/// A running XMPP server.
pub struct XmppServer {
    kind: ServerKind,
    dir: PathBuf,
    http_port: u16,
    child: Option<Child>,
    _temp: Option<TempDir>,
    https_port: Option<u16>,
    archive_limit: u32,
    /// Prosody: archives and accounts in SQLite (false: its default file storage).
    sql: bool,
    /// How many times it was started (each start appends to `stdout.log`).
    launches: usize,
    /// Extra environment for its launcher (an ejabberd cluster node's name, cookie, epmd).
    env: Vec<(String, String)>,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("MISSIVE_KEEP_XMPP").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl XmppServer {
    /// Starts a fresh server of `kind` serving [`DOMAIN`] and [`MUC_DOMAIN`]: in-band
    /// registration open, MAM for every account and group, carbons, stream management with
    /// resumption, members-only groups allowed; XMPP over WebSocket at [`XmppServer::url`], on
    /// loopback.
    ///
    /// Prosody keeps its data in SQLite (`mod_storage_sql`), as a deployment with archives
    /// should: its default file storage loads a user's whole archive on every archive query,
    /// so with thousands of messages per account the server spends its time re-reading them.
    ///
    /// Openfire needs `OPENFIRE_HOME` (see [`openfire_home`]) and panics without it; it archives
    /// asynchronously (up to about a second after routing a message) and only messages with a
    /// body.
    pub fn start(kind: ServerKind) -> XmppServer {
        Self::start_inner(kind, None, None)
    }

    /// A Prosody on its default file storage that keeps only the newest `limit` entries of
    /// each archive (its default limit is 10,000; [`XmppServer::start`] raises it to a
    /// million).
    pub fn start_with_archive_limit(limit: u32) -> XmppServer {
        Self::start_inner(ServerKind::Prosody, None, Some(limit))
    }

    /// Like [`XmppServer::start`], also serving `wss` at [`XmppServer::wss_url`] with this
    /// certificate chain and key (PEM). Prosody only.
    pub fn start_with_tls(kind: ServerKind, cert_pem: &str, key_pem: &str) -> XmppServer {
        assert_eq!(kind, ServerKind::Prosody, "TLS is set up for Prosody only");
        Self::start_inner(kind, Some((cert_pem, key_pem)), None)
    }

    fn start_inner(kind: ServerKind, tls: Option<(&str, &str)>, archive_limit: Option<u32>) -> XmppServer {
        let mut p = Self::prepare(kind, tls, archive_limit, vec![]);
        p.launch();
        p
    }

    /// A server's directory and files, not started yet.
    fn prepare(kind: ServerKind, tls: Option<(&str, &str)>, archive_limit: Option<u32>, env: Vec<(String, String)>) -> XmppServer {
        match kind {
            ServerKind::Prosody => prosody::check_installed(),
            ServerKind::Ejabberd => ejabberd::check_installed(),
            ServerKind::Openfire => drop(openfire::home_or_panic()),
        }
        let name = match kind {
            ServerKind::Prosody => "prosody",
            ServerKind::Ejabberd => "ejabberd",
            ServerKind::Openfire => "openfire",
        };
        let dir = std::env::temp_dir().join(format!("missive-{name}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("create the server directory");
        let https_port = tls.map(|(cert, key)| {
            std::fs::create_dir_all(dir.join("certs")).expect("create the certs directory");
            std::fs::write(dir.join("certs/localhost.crt"), cert).expect("write the certificate");
            std::fs::write(dir.join("certs/localhost.key"), key).expect("write the key");
            free_port()
        });
        let p = XmppServer {
            kind,
            http_port: free_port(),
            https_port,
            archive_limit: archive_limit.unwrap_or(1_000_000),
            sql: kind == ServerKind::Prosody && archive_limit.is_none(),
            dir: dir.clone(),
            child: None,
            _temp: Some(TempDir(dir)),
            launches: 0,
            env,
        };
        match kind {
            ServerKind::Prosody => prosody::write_config(&p),
            ServerKind::Ejabberd => ejabberd::write_config(&p.dir),
            ServerKind::Openfire => openfire::prepare_instance(&p.dir, p.http_port),
        }
        p
    }

    /// `wss://localhost:<port>/xmpp-websocket` (after [`XmppServer::start_with_tls`]).
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/xmpp-websocket", self.https_port.expect("started with TLS"))
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Its WebSocket endpoint: `ws://127.0.0.1:<port>/xmpp-websocket` (Prosody, ejabberd) or
    /// `ws://127.0.0.1:<port>/ws/` (Openfire); subprotocol `xmpp`.
    pub fn url(&self) -> String {
        match self.kind {
            ServerKind::Openfire => format!("ws://127.0.0.1:{}/ws/", self.http_port),
            _ => format!("ws://127.0.0.1:{}/xmpp-websocket", self.http_port),
        }
    }

    /// The loopback address of its HTTP (WebSocket) listener, e.g. to put a proxy in front.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The operating-system process id (to read its CPU time); 0 while stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        let log = match self.kind {
            ServerKind::Prosody => std::fs::read_to_string(self.dir.join("prosody.log")).unwrap_or_default(),
            ServerKind::Ejabberd => std::fs::read_to_string(self.dir.join("instance/log/ejabberd.log")).unwrap_or_default(),
            ServerKind::Openfire => openfire::log(&self.dir),
        };
        let stdout = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        log + &stdout
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("stdout.log")).expect("open the stdout log");
        let mut command = match self.kind {
            ServerKind::Prosody => prosody::command(&self.dir),
            ServerKind::Ejabberd => ejabberd::command(&self.dir, self.http_port),
            ServerKind::Openfire => openfire::command(&self.dir),
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.kind));
        self.child = Some(child);
        let within = match self.kind {
            // A JVM loading a few hundred jars on a shared two-core machine: 5-15 s.
            ServerKind::Openfire => Duration::from_secs(120),
            // A cluster node waits for the other and joins it (copying its tables) first.
            ServerKind::Ejabberd if !self.env.is_empty() => Duration::from_secs(90),
            _ => Duration::from_secs(30),
        };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{:?} exited with {status}:\n{}", self.kind, self.log());
            }
            let serving = match self.kind {
                // The port answering is not enough: it might be another process's (a clash).
                ServerKind::Prosody => TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok(),
                // ejabberd converts its archive tables after starting: not ready before that.
                ServerKind::Ejabberd => {
                    std::fs::read_to_string(self.dir.join("stdout.log"))
                        .is_ok_and(|l| l.matches("missive-ejabberd-ready").count() > self.launches)
                        && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                }
                // Openfire keeps running when a port is taken: its log says so.
                ServerKind::Openfire => {
                    if let Some(clash) = openfire::start_failure(&self.dir) {
                        panic!("Openfire could not start ({clash}):\n{}", self.log());
                    }
                    raw::stream_features(&self.url(), Duration::from_secs(2)).is_ok()
                }
            };
            if serving {
                std::thread::sleep(Duration::from_millis(50));
                if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()) {
                    self.launches += 1;
                    return;
                }
                continue;
            }
            assert!(Instant::now() < deadline, "{:?} did not serve within {within:?}:\n{}", self.kind, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL (no goodbye to anyone) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it gracefully (SIGTERM: it closes every stream) and starts it again on the same
    /// data and port: sessions are lost, archives and accounts are kept.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts it again after [`XmppServer::stop`] or [`XmppServer::kill`], on the same data and port.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.launch();
        }
    }

    /// Stops it gracefully (SIGTERM: it closes every stream) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            // Openfire shuts its modules down one after the other: 1-3 s, longer under load.
            let within = if self.kind == ServerKind::Openfire { 30 } else { 10 };
            let deadline = Instant::now() + Duration::from_secs(within);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it with SIGKILL and starts it again on the same data and port.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Its directory (data, configuration, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for XmppServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {:?} log ({}) ---\n{}", self.kind, self.dir.display(), self.log());
        }
    }
}
