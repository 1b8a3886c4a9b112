//! `cargo xtask bench`: every benchmark, in release mode on loopback, each printing its figure
//! and its ratio to a baseline measured in the same run. Benchmarks, not tests: nothing here
//! asserts on time.

use std::path::Path;
use std::process::Command;

use crate::util::{run, run_teed};

pub fn run_all(root: &Path) -> Result<(), String> {
    let mut summary = vec![];
    for (package, bench) in [("missive", "sdk"), ("missive", "xmpp"), ("missive-server", "load")] {
        let (ok, out) = run_teed(Command::new("cargo").current_dir(root).args(["bench", "-p", package, "--bench", bench]))?;
        if !ok {
            return Err(format!("cargo bench -p {package} --bench {bench} failed"));
        }
        summary.extend(out.lines().filter(|l| l.contains(": ") && !l.starts_with(' ') && !l.contains("Running")).map(str::to_owned));
    }
    // The shipped FFI library: profile.dist (size-optimised, LTO, stripped), x86_64.
    run(Command::new("cargo").current_dir(root).args(["build", "--profile", "dist", "-p", "missive-ffi"]))?;
    let size = std::fs::metadata(root.join("target/dist/libmissive_ffi.so")).map_err(|e| e.to_string())?.len();
    summary.push(format!("cdylib_size: {:.2} MB stripped, x86_64 (profile dist; target 6 MB)", size as f64 / 1e6));
    println!("\n== summary");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
