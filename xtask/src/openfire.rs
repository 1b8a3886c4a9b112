//! Openfire for the tests: the Openfire tests (`openfire::` in sdk-core's XMPP suites and
//! testkit's `tests/openfire.rs`) need an unpacked Openfire home with the Monitoring plugin
//! (XEP-0313), named by `OPENFIRE_HOME`. Unless one is given, the vendored tarball beside the
//! project (`../shared/vendor/openfire-5.1.1-monitoring.tar.gz`) is unpacked once into
//! `~/.cache/missive/openfire-5.1.1` (again only when the tarball changes). Without either, the
//! Openfire tests are reported as NOT RUN, with how to enable them, never as passed.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARBALL: &str = "openfire-5.1.1-monitoring.tar.gz";

/// How to run the Openfire tests when neither `OPENFIRE_HOME` nor the tarball is there.
pub const HOW_TO_ENABLE: &str = "set OPENFIRE_HOME to an unpacked Openfire 5.1.x home with the Monitoring plugin \
(https://www.igniterealtime.org/downloads/, plugin 'Monitoring Service'), or put openfire-5.1.1-monitoring.tar.gz in ../shared/vendor";

/// The Openfire home to test against, if there is one.
pub fn home(root: &Path) -> Result<Option<PathBuf>, String> {
    if let Some(home) = std::env::var_os("OPENFIRE_HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        if !home.join("lib/startup.jar").exists() {
            return Err(format!("OPENFIRE_HOME={} holds no lib/startup.jar: not an Openfire home", home.display()));
        }
        return Ok(Some(home));
    }
    let Some(tarball) = [root.join("../shared/vendor").join(TARBALL), PathBuf::from("/work/shared/vendor").join(TARBALL)]
        .into_iter()
        .find(|t| t.is_file())
    else {
        return Ok(None);
    };
    let home_dir = std::env::var_os("HOME").map(PathBuf::from).ok_or("HOME is not set")?;
    let cache = home_dir.join(".cache/missive/openfire-5.1.1");
    let meta = std::fs::metadata(&tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let stamp = format!("{} {}", meta.len(), modified);
    let home = cache.join("openfire");
    let current = std::fs::read_to_string(cache.join(".unpacked")).unwrap_or_default();
    if current.trim() != stamp || !home.join("lib/startup.jar").exists() {
        eprintln!("xtask: unpacking {} into {}", tarball.display(), cache.display());
        // Unpacked beside the cache and moved into place: a run cut short leaves no half home.
        let partial = cache.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        crate::util::run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&partial))?;
        std::fs::write(partial.join(".unpacked"), &stamp).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::rename(&partial, &cache).map_err(|e| format!("{} -> {}: {e}", partial.display(), cache.display()))?;
    }
    Ok(Some(home))
}
