//! `cargo xtask`: the project's one entry point for everything beyond `cargo build`.
//!
//! - `cargo xtask test`: builds, generates the bindings and runs the Rust, Kotlin and Swift
//!   suites, installing what they need (idempotently, cached) and failing loudly when something
//!   cannot be had. Prints one line per suite and a final `N passed, N failed` line.
//! - `cargo xtask test rust|kotlin|swift`: one suite.
//! - `cargo xtask bindings`: (re)generate the Kotlin and Swift bindings only.
//! - `cargo xtask bench`: the benchmarks (release mode, loopback), each with its baseline.
//! - `cargo xtask fuzz [seconds]`: every fuzz target for a bounded time (default 60 s each).
//! - `cargo xtask chaos [options]`: the full chaos run (Toxiproxy faults, server restarts,
//!   process kills), printing the counts; `cargo xtask test` runs the shortened one.

mod bench;
mod bindings;
mod chaos;
mod fuzz;
mod openfire;
mod suites;
mod util;

use std::process::ExitCode;

use suites::Outcome;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = util::workspace_root();
    match args.first().map(String::as_str) {
        Some("test") => {
            let only = args.get(1).map(String::as_str);
            let mut outcomes: Vec<Outcome> = vec![];
            let wanted = |name: &str| only.is_none() || only == Some(name);
            if let Some(other) = only.filter(|o| !["rust", "kotlin", "swift"].contains(o)) {
                eprintln!("xtask: unknown suite {other:?} (rust, kotlin, swift)");
                return ExitCode::FAILURE;
            }
            if wanted("rust") {
                outcomes.push(suites::rust(&root));
            }
            if wanted("kotlin") || wanted("swift") {
                if let Err(e) = bindings::build_and_generate(&root) {
                    outcomes.push(Outcome::broken("bindings", e));
                } else {
                    if wanted("kotlin") {
                        outcomes.push(suites::kotlin(&root));
                    }
                    if wanted("swift") {
                        outcomes.push(suites::swift(&root));
                    }
                }
            }
            println!();
            for o in &outcomes {
                println!("{o}");
            }
            let passed: usize = outcomes.iter().map(|o| o.passed).sum();
            let failed: usize = outcomes.iter().map(|o| o.failed).sum();
            let broken = outcomes.iter().filter(|o| o.error.is_some()).count();
            println!("{passed} passed, {}", if broken > 0 { format!("{} failed", failed + broken) } else { format!("{failed} failed") });
            if failed > 0 || broken > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Some("bench") => match bench::run_all(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => {
            let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
            match fuzz::run_all(&root, seconds) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtask: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("chaos") => match chaos::run_full(&root, &args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        Some("bindings") => match bindings::build_and_generate(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test [rust|kotlin|swift] | cargo xtask bench | cargo xtask fuzz [seconds] | cargo xtask chaos [options] | cargo xtask bindings"
            );
            ExitCode::FAILURE
        }
    }
}
