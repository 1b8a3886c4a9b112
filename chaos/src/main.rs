//! `missive-chaos`: breaks things the way users do and counts every message afterwards.
//!
//! - `network` over the native protocol: six SDK clients, each behind its own Toxiproxy proxy
//!   (latency, bandwidth limits, slicing, silent peers, resets, proxy down), 1:1 and group
//!   traffic, the reference server restarted twice (SIGTERM, then SIGKILL).
//! - the same `network` scenario over XMPP against Prosody.
//! - `kills`: sending client processes killed with SIGKILL mid-burst and restarted on their
//!   store, the reference server killed with SIGKILL twice.
//!
//! Each scenario prints its counts; the exit status is non-zero unless every count is clean.
//! `--quick` is the shortened run of the test suite; `cargo xtask chaos` runs the full one.
//! The same executable also plays the child processes (`serve`, `send`).

mod clients;
mod faults;
mod kills;
mod network;
mod plan;
mod processes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(about = "Chaos runs for the Missive SDK: faults, restarts, kills, and a count of every message")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// The shortened run (about a tenth of the messages).
    #[arg(long)]
    quick: bool,
    /// Seed for every random choice; printed, so a run can be replayed.
    #[arg(long, env = "MISSIVE_CHAOS_SEED")]
    seed: Option<u64>,
    /// Run only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Native,
    Xmpp,
    Kills,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// (child process) The reference server.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        data: PathBuf,
    },
    /// (child process) A sending client.
    #[command(hide = true)]
    Send {
        #[arg(long)]
        url: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        store: PathBuf,
        #[arg(long, value_delimiter = ',')]
        route: Vec<String>,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        pause_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.role {
            Some(Role::Serve { listen, data }) => serve(listen, data).await,
            Some(Role::Send { url, user, store, route, count, seed, pause_ms }) => {
                kills::sender_main(processes::SenderArgs { url, user, store, route, count, seed, pause_ms }).await
            }
            None => run(cli.quick, cli.seed, &cli.only).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("missive-chaos: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, data: PathBuf) -> Result<(), String> {
    let server = missive_server::Server::bind(missive_server::ServerConfig::new(listen, data)).await.map_err(|e| e.to_string())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    term.recv().await;
    server.shutdown().await;
    Ok(())
}

async fn run(quick: bool, seed: Option<u64>, only: &[Scenario]) -> Result<(), String> {
    let seed = seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    println!(
        "chaos: seed {seed} (--seed {seed} or MISSIVE_CHAOS_SEED={seed} replays the choices){}",
        if quick { ", quick run" } else { "" }
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new().prefix("missive-chaos-").tempdir().map_err(|e| e.to_string())?;
    if std::env::var_os("MISSIVE_CHAOS_KEEP").is_some() {
        println!("chaos: keeping stores and server data in {}", work.path().display());
    }
    let wanted = |s: Scenario| only.is_empty() || only.contains(&s);
    let mut failures = vec![];
    for (scenario, protocol) in [(Scenario::Native, clients::Protocol::Native), (Scenario::Xmpp, network::XMPP)] {
        if !wanted(scenario) {
            continue;
        }
        let settings = network::Settings {
            seed,
            users: 6,
            per_user: if quick { 60 } else { 1667 },
            sending: Duration::from_secs(if quick { 10 } else { 60 }),
            converge: Duration::from_secs(if quick { 60 } else { 180 }),
            exe: exe.clone(),
            work: network::work_dir(work.path(), &protocol.to_string()),
        };
        let report = network::run(protocol, &settings).await.map_err(|e| format!("{protocol} network scenario: {e}"))?;
        println!(
            "chaos {protocol:<6}: {} clients sent {} messages; {}; in {:.0} s",
            settings.users, report.sent, report.counts, report.seconds
        );
        println!("chaos {protocol:<6}: faults: {}; server restarts: {}", report.faults, report.restarts);
        if !report.counts.clean() {
            failures.push(protocol.to_string());
        }
    }
    if wanted(Scenario::Kills) {
        let settings = kills::Settings {
            seed,
            per_sender: if quick { 200 } else { 1000 },
            pause_ms: if quick { 15 } else { 10 },
            kills_per_sender: if quick { 3 } else { 8 },
            converge: Duration::from_secs(if quick { 60 } else { 120 }),
            exe,
            work: network::work_dir(work.path(), "kills"),
        };
        let report = kills::run(&settings).await.map_err(|e| format!("kills scenario: {e}"))?;
        println!(
            "chaos kills : 3 sender processes sent {} messages; {}; {} client SIGKILLs, {} server SIGKILLs; in {:.0} s",
            report.sent, report.counts, report.client_kills, report.server_kills, report.seconds
        );
        if !report.counts.clean() {
            failures.push("kills".into());
        }
    }
    if std::env::var_os("MISSIVE_CHAOS_KEEP").is_some() {
        let _ = work.keep();
    }
    if failures.is_empty() {
        println!("chaos: every message delivered exactly once, in order, in its final state");
        Ok(())
    } else {
        Err(format!("counts not clean in: {}", failures.join(", ")))
    }
}
