//! Builds the FFI library, the server binary (the bindings' tests run it) and the bindgen, then
//! generates the Kotlin and Swift bindings into the places the Maven and SwiftPM projects read.

use std::path::Path;
use std::process::Command;

use crate::util::run;

pub fn build_and_generate(root: &Path) -> Result<(), String> {
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "-p",
        "missive-ffi",
        "-p",
        "missive-server",
        "-p",
        "missive-uniffi-bindgen",
    ]))?;
    let target = root.join("target/debug");
    let library = target.join("libmissive_ffi.so");
    let bindgen = target.join("uniffi-bindgen");
    let kotlin_out = root.join("bindings/kotlin/target/generated-sources/uniffi");
    let swift_tmp = root.join("target/uniffi-swift");
    for dir in [&kotlin_out, &swift_tmp] {
        let _ = std::fs::remove_dir_all(dir);
    }
    for (language, out) in [("kotlin", &kotlin_out), ("swift", &swift_tmp)] {
        run(Command::new(&bindgen).current_dir(root.join("sdk-ffi")).args(["generate", "--library"]).arg(&library).args([
            "--language",
            language,
            "--no-format",
            "--out-dir",
        ]).arg(out))?;
    }
    // Kotlin: the library travels in the jar under linux-x86-64/ (JNA's resource prefix).
    let native = root.join("bindings/kotlin/target/native/linux-x86-64");
    std::fs::create_dir_all(&native).map_err(|e| e.to_string())?;
    let staged = native.join("libmissive_ffi.so");
    std::fs::copy(&library, &staged).map_err(|e| format!("staging the library: {e}"))?;
    // The debug build carries ~140 MB of debug info; the jar does not need it.
    run(Command::new("strip").arg("--strip-debug").arg(&staged))?;
    // Swift: generated sources and the C header of the system-library target.
    let swift = root.join("bindings/swift/Sources");
    std::fs::create_dir_all(swift.join("Missive/Generated")).map_err(|e| e.to_string())?;
    copy(&swift_tmp.join("Missive.swift"), &swift.join("Missive/Generated/Missive.swift"))?;
    copy(&swift_tmp.join("MissiveFFI.h"), &swift.join("MissiveFFI/MissiveFFI.h"))?;
    Ok(())
}

/// Copies only when the content changed, so SwiftPM and Maven see unchanged files as unchanged.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    let new = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        std::fs::write(to, new).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(())
}
