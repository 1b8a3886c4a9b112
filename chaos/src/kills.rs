//! The process-kill scenario: three sending clients run as processes of their own and are
//! killed with SIGKILL at random moments during their burst (seeded), then started again on the
//! same store; the reference server is killed with SIGKILL twice and started again on its data
//! directory. Two more users stay online in this process and receive. At the end every store,
//! the killed senders' included, is counted message by message.
//!
//! A sender resumes from its own store: a message whose `send` call committed before the kill is
//! in the outbox and goes out after the restart; one that had not committed is sent again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use missive::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::clients::{self, PASSWORD, Protocol};
use crate::plan::{Counts, Plan};
use crate::processes::{SenderArgs, ServerProcess, signal_and_wait, start_sender};

/// The size of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub per_sender: usize,
    /// Pause between two sends of one sender.
    pub pause_ms: u64,
    /// SIGKILLs per sender.
    pub kills_per_sender: usize,
    pub converge: Duration,
    pub exe: PathBuf,
    pub work: PathBuf,
}

/// What a run did and found.
pub struct Report {
    pub counts: Counts,
    pub sent: usize,
    pub client_kills: usize,
    pub server_kills: usize,
    pub seconds: f64,
}

const NAMES: [&str; 5] = ["kim", "lou", "max", "ned", "oli"];
const SENDERS: usize = 3;

enum Line {
    Sent(usize, usize),
    Done(usize),
}

/// Runs the scenario and returns the final counts (clean or not).
pub async fn run(settings: &Settings) -> Result<Report, String> {
    let started = Instant::now();
    let plan = Plan::mesh(&NAMES, SENDERS, settings.per_sender);
    let mut server = ServerProcess::start(&settings.exe, &settings.work.join("server")).await?;
    let url = Protocol::Native.url(server.addr);
    let store = |u: usize| settings.work.join(format!("{}.db", plan.users[u]));
    let mut clients = vec![];
    for (u, name) in plan.users.iter().enumerate() {
        let client =
            Client::open(clients::config(Protocol::Native, &url, &store(u), settings.seed + u as u64)).await.map_err(|e| e.to_string())?;
        client.register(name, PASSWORD).await.map_err(|e| format!("register {name}: {e}"))?;
        clients.push(client);
    }
    let ids = clients::set_up_conversations(&plan, &clients).await?;
    // The senders' stores now belong to their processes.
    for client in clients.drain(..SENDERS) {
        client.shutdown().await;
    }
    let args: Vec<SenderArgs> = (0..SENDERS)
        .map(|u| SenderArgs {
            url: url.clone(),
            user: plan.users[u].clone(),
            store: store(u),
            route: plan.routes[u].iter().map(|&c| ids[u][c].clone().expect("a member")).collect(),
            count: settings.per_sender,
            seed: settings.seed + u as u64,
            pause_ms: settings.pause_ms,
        })
        .collect();
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let mut processes = vec![];
    for (u, a) in args.iter().enumerate() {
        processes.push(Some(spawn(&settings.exe, a, u, &lines_tx)?));
    }
    let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x4b11);
    let mut kills_left = vec![settings.kills_per_sender; SENDERS];
    let mut progress = vec![0usize; SENDERS];
    let mut done = vec![false; SENDERS];
    let (mut client_kills, mut server_kills) = (0, 0);
    let deadline = Instant::now() + settings.converge + Duration::from_secs(120);
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(100..600));
    while done.iter().any(|d| !d) {
        if Instant::now() > deadline {
            return Err(format!("senders not done in time: progress {progress:?}, done {done:?}"));
        }
        match tokio::time::timeout(Duration::from_millis(50), lines.recv()).await {
            Ok(Some(Line::Sent(u, n))) => progress[u] = progress[u].max(n + 1),
            Ok(Some(Line::Done(u))) => done[u] = true,
            _ => {}
        }
        if Instant::now() < next_kill {
            continue;
        }
        next_kill = Instant::now() + Duration::from_millis(rng.random_range(100..600));
        // The server goes down (SIGKILL) when the senders are a third and two thirds through.
        let through = progress.iter().sum::<usize>() * 3 / (SENDERS * settings.per_sender).max(1);
        if server_kills < 2 && through > server_kills {
            server.kill().await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
            server.start_again().await?;
            server_kills += 1;
            continue;
        }
        let candidates: Vec<usize> = (0..SENDERS).filter(|&u| !done[u] && kills_left[u] > 0 && progress[u] < settings.per_sender).collect();
        if candidates.is_empty() {
            continue;
        }
        let u = candidates[rng.random_range(0..candidates.len())];
        if let Some(mut process) = processes[u].take() {
            signal_and_wait(&mut process, libc::SIGKILL).await;
        }
        kills_left[u] -= 1;
        client_kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        processes[u] = Some(spawn(&settings.exe, &args[u], u, &lines_tx)?);
    }
    for process in processes.iter_mut().flatten() {
        let status = process.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("a sender ended with {status}"));
        }
    }
    // Reopen the senders' stores here (they reconnect with their saved session) and count.
    let mut all = vec![];
    for u in 0..SENDERS {
        all.push(
            Client::open(clients::config(Protocol::Native, &url, &store(u), settings.seed + u as u64)).await.map_err(|e| e.to_string())?,
        );
    }
    all.extend(clients);
    let counts = clients::converge(Protocol::Native, &plan, &all, &ids, settings.converge).await?;
    for client in &all {
        client.shutdown().await;
    }
    server.stop().await;
    Ok(Report { counts, sent: plan.total(), client_kills, server_kills, seconds: started.elapsed().as_secs_f64() })
}

/// Starts sender `u` and forwards its progress lines.
fn spawn(exe: &std::path::Path, args: &SenderArgs, u: usize, tx: &mpsc::UnboundedSender<Line>) -> Result<tokio::process::Child, String> {
    let (process, mut lines) = start_sender(exe, args)?;
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed = match line.split_once(' ') {
                Some(("sent", n)) => n.parse().ok().map(|n| Line::Sent(u, n)),
                _ if line == "done" => Some(Line::Done(u)),
                _ => None,
            };
            if let Some(l) = parsed {
                let _ = tx.send(l);
            }
        }
    });
    Ok(process)
}

/// The `send` role: log in (once), resume after the last message of ours the store holds, send
/// the rest one by one, wait until the outbox is empty, print `done`.
pub async fn sender_main(args: SenderArgs) -> Result<(), String> {
    let client =
        Client::open(clients::config(Protocol::Native, &args.url, &args.store, args.seed)).await.map_err(|e| format!("open: {e}"))?;
    if !client.has_session().await.map_err(|e| e.to_string())? {
        client.login(&args.user, PASSWORD).await.map_err(|e| format!("login: {e}"))?;
    }
    let mut next = 0;
    for conversation in &args.route {
        for m in clients::all_messages(&client, conversation).await? {
            let text = m.body.preview();
            if let Some(n) = text.strip_prefix(&format!("{}-", args.user)).and_then(|n| n.parse::<usize>().ok()).filter(|_| m.outgoing) {
                next = next.max(n + 1);
            }
        }
    }
    for n in next..args.count {
        let conversation = &args.route[n % args.route.len()];
        client.send_text(conversation, &crate::plan::text(&args.user, n)).await.map_err(|e| format!("send_text: {e}"))?;
        println!("sent {n}");
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    while client.unsent_count().await.map_err(|e| e.to_string())? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("done");
    client.shutdown().await;
    Ok(())
}
