//! ejabberd 23.01 (Debian's package) as a throwaway server: `testkit/ejabberd/run.sh` and its
//! configuration template, written into the server's directory, and the command running them.

use std::path::Path;
use std::process::Command;

const RUN: &str = include_str!("../../ejabberd/run.sh");
const CONFIG: &str = include_str!("../../ejabberd/ejabberd.yml.template");

pub(super) fn check_installed() {
    assert!(
        Path::new("/usr/sbin/ejabberdctl").exists(),
        "ejabberd is not installed: run `cargo xtask test` (it installs Debian's ejabberd) or `apt-get install ejabberd`"
    );
}

pub(super) fn write_config(dir: &Path) {
    std::fs::write(dir.join("run.sh"), RUN).expect("write run.sh");
    std::fs::write(dir.join("ejabberd.yml.template"), CONFIG).expect("write the ejabberd config");
}

/// run.sh execs the Erlang VM: the child is the server itself. Its data is in `<dir>/instance`.
pub(super) fn command(dir: &Path, http_port: u16) -> Command {
    let mut c = Command::new("bash");
    c.arg(dir.join("run.sh")).arg(dir.join("instance")).arg(http_port.to_string());
    c.env("EJ_TEMPLATE", dir.join("ejabberd.yml.template"));
    c.env("EJ_LOGLEVEL", std::env::var("EJABBERD_LOG_LEVEL").unwrap_or_else(|_| "warning".into()));
    c
}
