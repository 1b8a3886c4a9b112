//! The shortened chaos run, part of the test suite: `missive-chaos --quick` runs every scenario
//! (native and XMPP behind Toxiproxy with server restarts, sender processes SIGKILLed) with a
//! fixed seed unless MISSIVE_CHAOS_SEED is set, prints its counts, and exits non-zero unless
//! every count is clean. Needs Go (Toxiproxy is built from its module) and Prosody, which
//! `cargo xtask test` installs; a missing one fails the run, it is never skipped.

use std::process::Command;

#[test]
fn a_quick_chaos_run_loses_duplicates_and_reorders_nothing() {
    let seed = std::env::var("MISSIVE_CHAOS_SEED").unwrap_or_else(|_| "20261127".into());
    let output = Command::new(env!("CARGO_BIN_EXE_missive-chaos")).args(["--quick", "--seed", &seed]).output().expect("missive-chaos runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the chaos run failed: {}", output.status);
    for scenario in ["chaos native", "chaos xmpp", "chaos kills"] {
        let line =
            stdout.lines().find(|l| l.starts_with(scenario) && l.contains("copies")).unwrap_or_else(|| panic!("no counts from {scenario}"));
        assert!(line.contains("lost 0, duplicated 0, misordered 0, unexpected 0, not final 0, unsent 0"), "{line}");
    }
}
