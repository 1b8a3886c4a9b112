//! The network scenario: every client talks to the server through a Toxiproxy proxy of its own
//! while the fault schedule ([`crate::faults`]) breaks those proxies at random and the server is
//! restarted twice; then the faults stop and every member's store is counted, message by
//! message, until it is complete or the deadline passes.
//!
//! Native: the reference server as a child process, stopped with SIGTERM the first time and
//! killed with SIGKILL the second. XMPP: a throwaway Prosody, stopped gracefully both times
//! (under SIGKILL Prosody itself can lose the recipient's copy of a message it already
//! acknowledged to the sender; see the README).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use missive::Client;
use missive_testkit::toxiproxy::Toxiproxy;
use missive_testkit::xmpp::{DOMAIN, ServerKind, XmppServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clients::{self, PASSWORD, Protocol};
use crate::faults::{FaultCounts, Monkey};
use crate::plan::{Counts, Plan};
use crate::processes::ServerProcess;

/// The size and pace of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub users: usize,
    pub per_user: usize,
    /// Sends are spread over this long.
    pub sending: Duration,
    /// How long the stores may take to become complete once the faults stop.
    pub converge: Duration,
    /// This executable (the server runs as `exe serve`).
    pub exe: PathBuf,
    /// Where server data and client stores go.
    pub work: PathBuf,
}

/// What a run did and found.
pub struct Report {
    pub counts: Counts,
    pub sent: usize,
    pub faults: FaultCounts,
    pub restarts: String,
    pub seconds: f64,
}

const NAMES: [&str; 8] = ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"];

enum Backend {
    Native(ServerProcess),
    Xmpp(XmppServer),
}

impl Backend {
    async fn start(protocol: Protocol, settings: &Settings) -> Result<Backend, String> {
        Ok(match protocol {
            Protocol::Native => Backend::Native(ServerProcess::start(&settings.exe, &settings.work.join("server")).await?),
            Protocol::Xmpp { .. } => Backend::Xmpp(tokio::task::block_in_place(|| XmppServer::start(ServerKind::Prosody))),
        })
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Backend::Native(server) => server.addr,
            Backend::Xmpp(server) => server.addr(),
        }
    }

    /// Stops the server (the `nth` time: 0 gracefully, 1 with SIGKILL where that is safe),
    /// leaves it down for `down`, and starts it again. Returns what was done.
    async fn restart(&mut self, nth: usize, down: Duration) -> Result<&'static str, String> {
        match self {
            Backend::Native(server) => {
                let how = if nth == 0 {
                    server.stop().await;
                    "SIGTERM"
                } else {
                    server.kill().await;
                    "SIGKILL"
                };
                tokio::time::sleep(down).await;
                server.start_again().await?;
                Ok(how)
            }
            Backend::Xmpp(server) => {
                tokio::task::block_in_place(|| server.stop());
                tokio::time::sleep(down).await;
                tokio::task::block_in_place(|| server.start_again());
                Ok("SIGTERM")
            }
        }
    }
}

/// Runs the scenario over `protocol` and returns the final counts (clean or not).
pub async fn run(protocol: Protocol, settings: &Settings) -> Result<Report, String> {
    let started = Instant::now();
    let plan = Plan::mesh(&NAMES[..settings.users], settings.users, settings.per_user);
    let mut backend = Backend::start(protocol, settings).await?;
    let toxiproxy = tokio::task::block_in_place(Toxiproxy::start);
    let mut proxies = vec![];
    let mut clients = vec![];
    for (u, name) in plan.users.iter().enumerate() {
        let proxy = toxiproxy.proxy(name, backend.addr()).map_err(|e| format!("Toxiproxy: {e}"))?;
        let store = settings.work.join(format!("{protocol}-{name}.db"));
        let client = Client::open(clients::config(protocol, &protocol.url(proxy.listen), &store, settings.seed + u as u64))
            .await
            .map_err(|e| format!("open {name}: {e}"))?;
        client.register(name, PASSWORD).await.map_err(|e| format!("register {name}: {e}"))?;
        proxies.push(proxy);
        clients.push(client);
    }
    let ids = clients::set_up_conversations(&plan, &clients).await?;
    let monkey = Monkey::start(proxies, settings.seed);
    let pause = settings.sending / settings.per_user.max(1) as u32;
    let mut senders = vec![];
    for (u, client) in clients.iter().enumerate() {
        let (client, plan, ids) = (client.clone(), plan.clone(), ids[u].clone());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(pause);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0..plan.sends(u) {
                tick.tick().await;
                let conversation = ids[plan.target(u, n)].as_deref().expect("a member");
                client.send_text(conversation, &plan.text(u, n)).await.map_err(|e| format!("send_text: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    // Two server restarts during the sends, down for a random moment each.
    let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x5e7e);
    let mut restarts = vec![];
    for nth in 0..2 {
        tokio::time::sleep(settings.sending / 3).await;
        let down = Duration::from_millis(rng.random_range(0..1500));
        let how = backend.restart(nth, down).await?;
        restarts.push(format!("{how}, down {} ms", down.as_millis()));
    }
    for sender in senders {
        sender.await.map_err(|e| format!("sender task: {e}"))??;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let faults = tokio::task::block_in_place(|| monkey.stop())?;
    let counts = clients::converge(protocol, &plan, &clients, &ids, settings.converge).await?;
    for client in &clients {
        client.shutdown().await;
    }
    if std::env::var_os("MISSIVE_CHAOS_KEEP").is_some() {
        if let Backend::Xmpp(server) = &backend {
            println!("chaos: keeping Prosody (pid {}) running, and its data", server.pid());
        }
        std::mem::forget(backend); // left running, its directory kept, for a look
    } else {
        drop(backend);
    }
    Ok(Report { counts, sent: plan.total(), faults, restarts: restarts.join("; "), seconds: started.elapsed().as_secs_f64() })
}

/// Where the stores of a run go: a fresh directory under `parent`.
pub fn work_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the run's directory");
    dir
}

/// The domain the XMPP run uses.
pub const XMPP: Protocol = Protocol::Xmpp { domain: DOMAIN };
