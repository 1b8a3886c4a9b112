//! `missive-server` binary: runs the reference server until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use missive_server::{Server, ServerConfig, Synchronous, TlsFiles};

/// The Missive reference server: accounts, conversations, groups, chat rooms and durable
/// messages over WebSocket + protobuf, stored in SQLite.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Directory for the database (created if missing).
    #[arg(long, default_value = "missive-data")]
    data: PathBuf,
    /// PEM certificate chain; with --tls-key serves wss instead of ws.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Sustained requests per second allowed per connection (bursts of twice as many).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Open connections beyond which new ones are refused.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Open connections from one IP address (an IPv6 /64) beyond which new ones are refused.
    #[arg(long, default_value_t = 1_000)]
    max_connections_per_address: usize,
    /// `full`: a message is acknowledged once its commit is on disk (survives a power cut);
    /// `normal`: once it is in the write-ahead log (survives a process kill, not a power cut).
    #[arg(long, default_value = "full")]
    synchronous: Synchronous,
    /// Threads hashing passwords (argon2id, 19 MiB each); default: half the cores.
    #[arg(long)]
    hash_threads: Option<usize>,
}

/// A parent may start us with SIGTERM or SIGINT blocked (some runtimes spawn children from
/// threads that block signals); a blocked signal would never reach the shutdown handler.
fn unblock_shutdown_signals() {
    // SAFETY: plain libc calls on a local, initialised signal set; no memory is shared.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

fn main() -> std::process::ExitCode {
    unblock_shutdown_signals();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(run())
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // Colours only on a terminal: a log file holds no escape sequences but what a client sent.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = ServerConfig::new(args.listen, args.data);
    config.limits.requests_per_second = args.rate;
    config.limits.burst = args.rate.saturating_mul(2);
    config.limits.max_connections = args.max_connections;
    config.limits.max_connections_per_address = args.max_connections_per_address;
    config.synchronous = args.synchronous;
    if let Some(threads) = args.hash_threads {
        config.limits.auth.hash_threads = threads.max(1);
    }
    if let (Some(cert_chain), Some(private_key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsFiles { cert_chain, private_key });
    }
    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("missive-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("missive-server listening on {}", server.url());
    shutdown_signal().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
