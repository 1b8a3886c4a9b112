//! `cargo xtask fuzz [seconds]`: every cargo-fuzz (libFuzzer) target in `fuzz/` for a bounded
//! time each (default 60 s), starting from the checked-in seeds (`fuzz/seeds/<target>`) and the
//! local corpus it grows (`fuzz/corpus/<target>`, not checked in). Installs the nightly
//! toolchain and cargo-fuzz if missing. A crash stops the run with the reproducer's path
//! (`fuzz/artifacts/<target>/`), to be turned into a regression test.

use std::path::Path;
use std::process::Command;

use crate::util::{have, run, run_teed};

pub const TARGETS: &[&str] = &["proto_frames", "xmpp_frames", "scram", "stored"];

pub fn run_all(root: &Path, seconds: u64) -> Result<(), String> {
    let nightly = Command::new("rustup").args(["run", "nightly", "rustc", "--version"]).output().is_ok_and(|o| o.status.success());
    if !nightly {
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if !have("cargo-fuzz") {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = root.join("fuzz");
    let mut summary = vec![];
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        let (ok, out) = run_teed(
            Command::new("cargo")
                .current_dir(&dir)
                .args(["+nightly", "fuzz", "run", "-O", target])
                .arg(&corpus)
                .arg(dir.join("seeds").join(target))
                .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=2048"]),
        )?;
        let done = out.lines().rev().find(|l| l.starts_with("Done ")).unwrap_or("no summary").to_owned();
        if !ok {
            return Err(format!("fuzz target {target} found a crash (see fuzz/artifacts/{target}/): {done}"));
        }
        summary.push(format!("fuzz {target}: {done}, no crash"));
    }
    println!("\n== fuzz summary");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
