//! Running commands with their output shown and captured, and small parsing helpers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs `cmd`, echoing its output line by line, and returns (success, output).
pub fn run_teed(cmd: &mut Command) -> Result<(bool, String), String> {
    eprintln!("xtask: $ {}", describe(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    out.push_str(&err_thread.join().unwrap_or_default());
    Ok((status.success(), out))
}

/// Runs `cmd` and fails with its output if it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let (ok, out) = run_teed(cmd)?;
    if ok { Ok(()) } else { Err(format!("{} failed:\n{}", describe(cmd), tail(&out, 30))) }
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The first number after `key` in `line`, e.g. `number_after("Tests run: 9, ...", "Tests run:")`.
pub fn number_after(line: &str, key: &str) -> Option<usize> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_found_after_keys() {
        assert_eq!(number_after("test result: ok. 14 passed; 2 failed;", "ok."), Some(14));
        assert_eq!(number_after("Tests run: 9, Failures: 1, Errors: 0", "Failures:"), Some(1));
        assert_eq!(number_after("nothing here", "Tests run:"), None);
    }
}
