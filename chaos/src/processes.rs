//! Child processes of a chaos run, all this same executable in another role: the reference
//! server (`serve`), stopped gracefully or killed with SIGKILL and started again on its data
//! directory and port; and sending clients (`send`), killed with SIGKILL mid-burst and started
//! again on their store.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A free loopback port (bound once and released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Sends `signal` to `child` and waits for it to end.
pub async fn signal_and_wait(child: &mut Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        unsafe { libc::kill(pid as i32, signal) };
    }
    let _ = child.wait().await;
}

/// The reference server as a child process.
pub struct ServerProcess {
    exe: PathBuf,
    data: PathBuf,
    /// Where it listens, the same across restarts.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts it on a free port with its database in `data`, and waits until it listens.
    pub async fn start(exe: &Path, data: &Path) -> Result<ServerProcess, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut server = ServerProcess { exe: exe.to_path_buf(), data: data.to_path_buf(), addr, child: None };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts it again (after a stop or kill) on the same port and data directory.
    pub async fn start_again(&mut self) -> Result<(), String> {
        let child = Command::new(&self.exe)
            .args(["serve", "--listen", &self.addr.to_string(), "--data"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if Instant::now() > deadline {
                return Err("the server did not listen within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// SIGTERM (it closes every connection and its database) and wait.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, libc::SIGTERM).await;
        }
    }

    /// SIGKILL: no goodbye, no final write.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, libc::SIGKILL).await;
        }
    }
}

/// What a sender needs to know.
#[derive(Debug, Clone)]
pub struct SenderArgs {
    pub url: String,
    pub user: String,
    pub store: PathBuf,
    /// Local ids of the conversations its messages go to in turn.
    pub route: Vec<String>,
    pub count: usize,
    pub seed: u64,
    /// Pause between two sends.
    pub pause_ms: u64,
}

/// Starts a sending client as a child process (`exe send ...`); returns it and its output
/// lines: `sent <n>` after each message it commits, `done` once its outbox is empty.
pub fn start_sender(exe: &Path, args: &SenderArgs) -> Result<(Child, Lines<BufReader<ChildStdout>>), String> {
    let mut child = Command::new(exe)
        .arg("send")
        .args(["--url", &args.url, "--user", &args.user, "--count", &args.count.to_string(), "--seed", &args.seed.to_string()])
        .args(["--pause-ms", &args.pause_ms.to_string(), "--route", &args.route.join(","), "--store"])
        .arg(&args.store)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a sender: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    Ok((child, BufReader::new(stdout).lines()))
}
