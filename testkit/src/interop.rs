//! A third-party XMPP client for interoperability tests and benchmarks: `@xmpp/client` (npm)
//! driven through `testkit/interop/peer.mjs`, one JSON object per line on stdin and stdout.
//!
//! The npm packages are installed once with `npm ci` from the checked-in lock file into
//! `~/.cache/missive/xmpp-interop` (again whenever the lock file changes). Node.js must be
//! installed; when it is not, [`ThirdPartyPeer::start`] panics saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const PEER: &str = include_str!("../interop/peer.mjs");
const PACKAGE: &str = include_str!("../interop/package.json");
const LOCK: &str = include_str!("../interop/package-lock.json");

/// Installs the peer and its packages (idempotent); returns the directory holding `peer.mjs`.
pub fn install() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = home.join(".cache/missive/xmpp-interop");
    std::fs::create_dir_all(&dir).expect("create the interop cache directory");
    let lock_path = dir.join("package-lock.json");
    let fresh = std::fs::read_to_string(&lock_path).is_ok_and(|l| l == LOCK) && dir.join("node_modules/@xmpp/client").exists();
    std::fs::write(dir.join("peer.mjs"), PEER).expect("write peer.mjs");
    if !fresh {
        std::fs::write(dir.join("package.json"), PACKAGE).expect("write package.json");
        std::fs::write(&lock_path, LOCK).expect("write package-lock.json");
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("npm is needed for the interop peer (apt-get install nodejs npm): {e}"));
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}

/// A running third-party client.
pub struct ThirdPartyPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its full JID once online.
    pub jid: String,
}

/// A message the peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessage {
    /// The sender's full JID.
    pub from: String,
    /// The stanza's `id`.
    pub id: Option<String>,
    /// The `<body>` text.
    pub body: String,
    /// The XEP-0359 origin-id, if any.
    pub origin_id: Option<String>,
}

impl ThirdPartyPeer {
    /// Starts the peer (registering the account first when `register`) and waits until it is
    /// online. `mechanism` forces a SASL mechanism (`PLAIN` logs in fastest).
    pub async fn start(
        service: &str,
        domain: &str,
        username: &str,
        password: &str,
        register: bool,
        mechanism: Option<&str>,
    ) -> ThirdPartyPeer {
        Self::start_with(service, domain, username, password, register, mechanism, &[]).await
    }

    /// [`ThirdPartyPeer::start`] with more options of `peer.mjs` (e.g. `--no-receipts`).
    pub async fn start_with(
        service: &str,
        domain: &str,
        username: &str,
        password: &str,
        register: bool,
        mechanism: Option<&str>,
        options: &[&str],
    ) -> ThirdPartyPeer {
        let dir = install();
        let mut command = tokio::process::Command::new("node");
        command.arg(dir.join("peer.mjs")).args(["--service", service, "--domain", domain, "--username", username, "--password", password]);
        if register {
            command.arg("--register");
        }
        if let Some(m) = mechanism {
            command.args(["--mechanism", m]);
        }
        command.args(options);
        if std::env::var_os("MISSIVE_PEER_DEBUG").is_some() {
            command.arg("--debug");
        }
        command.current_dir(&dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("node is needed for the interop peer (apt-get install nodejs): {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut peer = ThirdPartyPeer { child, stdin, lines, jid: String::new() };
        let online = peer.next_event("online", Duration::from_secs(30)).await;
        peer.jid = online["jid"].as_str().unwrap_or_default().to_owned();
        peer
    }

    /// The operating-system process id (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write to the peer");
        self.stdin.flush().await.expect("flush to the peer");
    }

    /// The next event named `name` (others are skipped; an error event panics).
    pub async fn next_event(&mut self, name: &str, within: Duration) -> Value {
        tokio::time::timeout(within, async {
            loop {
                let line =
                    self.lines.next_line().await.expect("read the peer").unwrap_or_else(|| panic!("the peer exited waiting for {name}"));
                let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer printed {line:?}: {e}"));
                match event["event"].as_str() {
                    Some(n) if n == name => return event,
                    Some("error") => panic!("the peer reported an error waiting for {name}: {line}"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the peer did not report {name} within {within:?}"))
    }

    /// Sends a chat message with this id (also its origin-id), asking for a receipt.
    pub async fn send(&mut self, to: &str, body: &str, id: &str) {
        self.command(serde_json::json!({"cmd": "send", "to": to, "body": body, "id": id, "receipt": true})).await;
        self.next_event("sent", Duration::from_secs(10)).await;
    }

    /// The next message received.
    pub async fn next_message(&mut self, within: Duration) -> PeerMessage {
        let e = self.next_event("message", within).await;
        let text = |k: &str| e[k].as_str().map(str::to_owned);
        PeerMessage {
            from: text("from").unwrap_or_default(),
            id: text("id"),
            body: text("body").unwrap_or_default(),
            origin_id: text("origin_id"),
        }
    }

    /// Writes any stanza as it is, in one frame (e.g. a message without an id, or one reusing an
    /// id), and waits until it is written.
    pub async fn send_raw(&mut self, xml: &str) {
        self.command(serde_json::json!({"cmd": "raw", "xml": xml})).await;
        self.next_event("sent_raw", Duration::from_secs(10)).await;
    }

    /// The next event of any kind (an error event panics), or `None` if none comes `within`.
    pub async fn any_event(&mut self, within: Duration) -> Option<Value> {
        let line = tokio::time::timeout(within, self.lines.next_line()).await.ok()?.expect("read the peer")?;
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer printed {line:?}: {e}"));
        assert_ne!(event["event"].as_str(), Some("error"), "the peer reported an error: {line}");
        Some(event)
    }

    /// Sends `count` messages as fast as it can and waits until the server handled them all.
    pub async fn burst(&mut self, to: &str, count: u32, prefix: &str) {
        self.command(serde_json::json!({"cmd": "burst", "to": to, "count": count, "prefix": prefix})).await;
        self.next_event("burst_done", Duration::from_secs(600)).await;
    }

    /// Closes the stream cleanly and waits for the process to exit.
    pub async fn quit(mut self) {
        self.command(serde_json::json!({"cmd": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&Path::new("/proc").join(pid.to_string()).join("stat")).1
}

/// CPU time used so far by each thread of this process: thread id -> (thread name, time).
pub fn thread_cpu_times() -> std::collections::HashMap<String, (String, Duration)> {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    tasks.map(|t| (t.file_name().to_string_lossy().into_owned(), stat_cpu_time(&t.path().join("stat")))).collect()
}

/// The name and CPU time in a `/proc` `stat` file.
fn stat_cpu_time(path: &Path) -> (String, Duration) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The name is in parentheses (it may contain spaces); the fields follow the last ')'.
    let (name, rest) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).unwrap_or(("", ""));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    (name.to_owned(), Duration::from_secs_f64(total as f64 / clock_ticks_per_second() as f64))
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}
