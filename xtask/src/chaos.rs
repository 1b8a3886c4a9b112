//! `cargo xtask chaos [missive-chaos options]`: the full chaos run (`chaos/`), built in release
//! mode: the native and XMPP network scenarios behind Toxiproxy (10,000 messages each) and the
//! process kills, each printing its counts. Installs Prosody (apt) and checks Go (for
//! Toxiproxy) first. Options pass through, e.g. `--seed 42`, `--only native,kills`, `--quick`.

use std::path::Path;
use std::process::Command;

use crate::suites::ensure_xmpp_servers;
use crate::util::{have, run};

pub fn run_full(root: &Path, args: &[String]) -> Result<(), String> {
    ensure_xmpp_servers()?;
    if !have("go") {
        return Err("Go is needed to build Toxiproxy (apt-get install golang, or https://go.dev/dl/)".into());
    }
    run(Command::new("cargo").current_dir(root).args(["run", "--release", "-q", "-p", "missive-chaos", "--"]).args(args))
}
