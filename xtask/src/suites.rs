//! The three suites. Each returns its counts; a suite that cannot run (a toolchain that cannot
//! be installed, a build that fails) is reported as broken, never skipped.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{have, number_after, run, run_teed, tail};

pub struct Outcome {
    pub name: &'static str,
    pub passed: usize,
    pub failed: usize,
    pub seconds: f64,
    pub error: Option<String>,
    /// Tests of the suite that could not run here, and how to enable them (never counted as
    /// passed).
    pub not_run: Option<String>,
}

impl Outcome {
    pub fn broken(name: &'static str, error: String) -> Self {
        Outcome { name, passed: 0, failed: 0, seconds: 0.0, error: Some(error), not_run: None }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            None => {
                write!(f, "suite {:<7} {} passed, {} failed ({:.0} s)", self.name, self.passed, self.failed, self.seconds)?;
                match &self.not_run {
                    Some(what) => write!(f, "; NOT RUN: {what}"),
                    None => Ok(()),
                }
            }
            Some(e) => write!(f, "suite {:<7} BROKEN: {}", self.name, tail(e, 8)),
        }
    }
}

/// `cargo test --workspace`; counts come from libtest's `test result:` lines.
pub fn rust(root: &Path) -> Outcome {
    let started = Instant::now();
    if let Err(e) = ensure_xmpp_servers() {
        return Outcome::broken("rust", e);
    }
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root).args(["test", "--workspace", "--exclude", "xtask", "--no-fail-fast"]);
    let not_run = match crate::openfire::home(root) {
        Ok(Some(home)) => {
            cargo.env("OPENFIRE_HOME", home);
            None
        }
        Ok(None) => {
            cargo.args(["--", "--skip", "openfire::"]);
            Some(format!("the Openfire tests (openfire::*): {}", crate::openfire::HOW_TO_ENABLE))
        }
        Err(e) => return Outcome::broken("rust", e),
    };
    let result = run_teed(&mut cargo);
    let (ok, out) = match result {
        Ok(r) => r,
        Err(e) => return Outcome::broken("rust", e),
    };
    let (mut passed, mut failed) = (0, 0);
    for line in out.lines().filter(|l| l.starts_with("test result:")) {
        passed += number_after(line, "ok.").or_else(|| number_after(line, "FAILED.")).unwrap_or(0);
        failed += number_after(line, "passed;").unwrap_or(0);
    }
    if !ok && failed == 0 {
        return Outcome::broken("rust", format!("cargo test failed before running:\n{}", tail(&out, 20)));
    }
    Outcome { name: "rust", passed, failed, seconds: started.elapsed().as_secs_f64(), error: None, not_run }
}

/// The XMPP transport's tests start real servers: Debian's Prosody (with its SQLite driver) and
/// ejabberd. Installing the packages must not start their system services, so a `policy-rc.d`
/// refusing service starts is in place for the install (and removed after, if we put it there).
pub fn ensure_xmpp_servers() -> Result<(), String> {
    // Prosody keeps its data in SQLite in the tests (testkit's `LUA_DBI_SQLITE`).
    let needed = [
        ("prosody", "/usr/bin/prosody"),
        ("lua-dbi-sqlite3", "/usr/lib/x86_64-linux-gnu/lua/5.4/dbd/sqlite3.so"),
        ("ejabberd", "/usr/sbin/ejabberdctl"),
    ];
    let missing: Vec<&str> = needed.into_iter().filter(|(_, file)| !Path::new(file).exists()).map(|(p, _)| p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} with apt-get (for the XMPP transport's tests)", missing.join(" and "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
        run(Command::new("chmod").args(["+x", "/usr/sbin/policy-rc.d"]))?;
    }
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let result = install().or_else(|_| run(Command::new("apt-get").arg("update")).and_then(|()| install()));
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    // Should a package have started a system instance despite the policy, it is not ours to
    // keep running (the tests start their own on free ports).
    let _ = Command::new("pkill").args(["-f", "/usr/bin/prosody -D"]).status();
    let _ = Command::new("pkill").args(["-u", "ejabberd"]).status();
    Ok(())
}

fn ensure_maven() -> Result<(), String> {
    if have("mvn") && have("java") {
        return Ok(());
    }
    eprintln!("xtask: installing Maven and a JDK with apt-get");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "maven", "openjdk-17-jdk-headless"]))
}

/// The Maven project: compiles the generated Kotlin and the idiomatic layer, runs JUnit 5 against
/// the real server binary, and packages the jar with the native library.
pub fn kotlin(root: &Path) -> Outcome {
    let started = Instant::now();
    if let Err(e) = ensure_maven() {
        return Outcome::broken("kotlin", e);
    }
    let server = root.join("target/debug/missive-server");
    let project = root.join("bindings/kotlin");
    let _ = std::fs::remove_dir_all(project.join("target/surefire-reports"));
    let result = run_teed(
        Command::new("mvn")
            .current_dir(&project)
            .args(["-B", "--no-transfer-progress", "package"])
            .arg(format!("-Dmissive.server.bin={}", server.display())),
    );
    let (ok, out) = match result {
        Ok(r) => r,
        Err(e) => return Outcome::broken("kotlin", e),
    };
    // Surefire's summary: "Tests run: 9, Failures: 0, Errors: 0, Skipped: 0"
    let summary = out.lines().filter(|l| l.contains("Tests run:") && !l.contains(" -- in ")).last();
    let Some(line) = summary else {
        return Outcome::broken("kotlin", format!("no test summary from Maven:\n{}", tail(&out, 30)));
    };
    let run_count = number_after(line, "Tests run:").unwrap_or(0);
    let failed = number_after(line, "Failures:").unwrap_or(0) + number_after(line, "Errors:").unwrap_or(0);
    let skipped = number_after(line, "Skipped:").unwrap_or(0);
    if run_count == 0 || skipped > 0 {
        return Outcome::broken("kotlin", format!("{run_count} tests ran, {skipped} skipped: every test must run"));
    }
    if !ok && failed == 0 {
        return Outcome::broken("kotlin", format!("Maven failed:\n{}", tail(&out, 30)));
    }
    Outcome { name: "kotlin", passed: run_count - failed - skipped, failed, seconds: started.elapsed().as_secs_f64(), error: None, not_run: None }
}

/// The SwiftPM package, on the Swift toolchain of a Debian trixie root (see scripts/swift-env.sh).
pub fn swift(root: &Path) -> Outcome {
    let started = Instant::now();
    let env_script = root.join("scripts/swift-env.sh");
    if let Err(e) = run(Command::new("bash").arg(&env_script).arg("setup")) {
        return Outcome::broken("swift", e);
    }
    let target = root.join("target/debug");
    let result = run_teed(
        Command::new("bash")
            .arg(&env_script)
            .arg("run")
            .arg(root)
            .args(["--", "env"])
            .arg(format!("MISSIVE_SERVER_BIN={}", target.join("missive-server").display()))
            .arg(format!("MISSIVE_LIB_DIR={}", target.display()))
            .args(["swift", "test", "--disable-swift-testing", "--package-path"])
            .arg(root.join("bindings/swift")),
    );
    let (ok, out) = match result {
        Ok(r) => r,
        Err(e) => return Outcome::broken("swift", e),
    };
    // XCTest: "Executed 10 tests, with 0 failures (0 unexpected) in ..."
    let Some(line) = out.lines().filter(|l| l.contains("Executed") && l.contains("tests")).last() else {
        return Outcome::broken("swift", format!("no XCTest summary:\n{}", tail(&out, 30)));
    };
    let executed = number_after(line, "Executed").unwrap_or(0);
    let failed = number_after(line, "with").unwrap_or(0);
    if executed == 0 {
        return Outcome::broken("swift", "no Swift test ran".into());
    }
    if !ok && failed == 0 {
        return Outcome::broken("swift", format!("swift test failed:\n{}", tail(&out, 30)));
    }
    Outcome { name: "swift", passed: executed - failed, failed, seconds: started.elapsed().as_secs_f64(), error: None, not_run: None }
}
