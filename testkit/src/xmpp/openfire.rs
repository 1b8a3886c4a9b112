//! Openfire 5.1 with its Monitoring plugin (XEP-0313) as a throwaway server, from the unpacked
//! home named by `OPENFIRE_HOME`: the instance's files, its settings and ports, its command line.
//!
//! Openfire sets itself up on its first start (autosetup from `conf/openfire.xml`: embedded
//! HSQLDB, domain, admin account), generates a certificate, extracts its plugins and creates their
//! tables: about twice the work of a later start. That is done once, in a *template*: a copy of
//! the home set up on free ports and stopped, kept in `~/.cache/missive/openfire-templates/<key>`
//! (the key covers the home's jars and this file's settings, so a change builds a new one).
//! Every instance is a copy of the template (jars and resources hard-linked, or symlinked across
//! file systems; database, configuration and search indexes copied) with its own ports written
//! into its database and `conf/openfire.xml` before it starts.
//!
//! Settings are Openfire system properties ([`PROPERTIES`], [`MUC_PROPERTIES`]), kept in its
//! database: given as XML properties in the template's `openfire.xml` (autosetup copies them
//! into the database, `XMPPServer.finalSetupSteps`), and written again, with the ports and the
//! MUC service's defaults, as rows of the database's `.script` file (the text SQL HSQLDB loads
//! at start) once the template is set up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use super::{free_port, free_ports, raw};

/// Openfire system properties of every instance (names checked against the 5.1.1 and
/// Monitoring 2.8 jars), beyond the bootstrap's in-band registration.
const PROPERTIES: &[(&str, &str)] = &[
    // Nothing contacts igniterealtime.org.
    ("update.service-enabled", "false"),
    // Listeners not needed, disabled (each still gets a free port, see PORT_PROPERTIES): the
    // file-transfer proxy listened on every interface despite network.interface; direct-TLS
    // c2s; s2s (nothing federates); external components; connection managers.
    ("xmpp.proxy.enabled", "false"),
    ("xmpp.socket.ssl.active", "false"),
    ("xmpp.server.socket.active", "false"),
    ("xmpp.server.socket.ssl.active", "false"),
    ("xmpp.component.socket.active", "false"),
    ("xmpp.component.ssl.active", "false"),
    ("xmpp.multiplex.socket.active", "false"),
    ("xmpp.multiplex.ssl.active", "false"),
    // Netty waits this long (ms) for quiet on each of its event-loop groups when stopping:
    // 2 s by default, which made a graceful stop take 6 s.
    ("xmpp.socket.netty.graceful-shutdown.quiet-period", "50"),
    ("xmpp.socket.netty.graceful-shutdown.timeout", "5000"),
    // XEP-0198 with resumption (on by default); a detached session is kept 30 s (default
    // 10 min), as Prosody's and ejabberd's are in these tests.
    ("stream.management.active", "true"),
    ("xmpp.session.detach.timeout", "30000"),
    // Offline storage per user in bytes: 100 KB by default, after which messages bounce.
    ("xmpp.offline.quota", "104857600"),
    // The Monitoring plugin archives 1:1 and room messages and conversation metadata (its
    // defaults, made explicit): that is what its XEP-0313 serves.
    ("conversation.messageArchiving", "true"),
    ("conversation.roomArchiving", "true"),
    ("conversation.metadataArchiving", "true"),
];

/// Defaults of new rooms on `conference.localhost` (MUC service properties), close to the other
/// servers' in these tests: persistent (Openfire: temporary), no occupant limit (30), occupants
/// may invite (owners only) and change the subject; public and logged (archived) as by default.
/// Anyone may create rooms (Openfire's default).
const MUC_PROPERTIES: &[(&str, &str)] = &[
    ("room.persistent", "true"),
    ("room.maxUsers", "0"),
    ("room.canOccupantsInvite", "true"),
    ("room.canOccupantsChangeSubject", "true"),
    ("room.publicRoom", "true"),
    ("room.logEnabled", "true"),
];

/// HSQLDB settings in the template's database script (statements starting with the first
/// string are replaced by the second). HSQLDB writes its log every second by default
/// (`WRITE DELAY 1`): a SIGKILL lost the accounts and messages of the last second. Written at
/// each commit, everything acknowledged survives a kill, as with Prosody and ejabberd.
const DATABASE_SETTINGS: &[(&str, &str)] = &[("SET FILES WRITE DELAY ", "SET FILES WRITE DELAY FALSE")];

/// Changed whenever the way a template is built changes (the key covers the constants above).
const TEMPLATE_VERSION: u32 = 3;

/// Every listener's port property besides `httpbind.port.plain` (the WebSocket's) and the
/// admin console's (an XML property): each instance gives each a free loopback port, so that
/// parallel instances never clash even on a listener that is off.
const PORT_PROPERTIES: &[&str] = &[
    "httpbind.port.secure",
    "xmpp.socket.plain.port",
    "xmpp.socket.ssl.port",
    "xmpp.server.socket.port",
    "xmpp.server.socket.ssl.port",
    "xmpp.component.socket.port",
    "xmpp.component.ssl.port",
    "xmpp.multiplex.socket.port",
    "xmpp.multiplex.ssl.port",
    "xmpp.proxy.port",
    "xmpp.jmx.port",
];

/// A small test server that starts quickly: a small heap and the serial collector, only the
/// client JIT compiler, the JDK's class-data sharing, and no verification of the (trusted)
/// bytecode of the few hundred jars it loads. Measured on two busy cores, a start took 12.9 s
/// of CPU with the JVM's defaults and 6.1 s with these. `MISSIVE_OPENFIRE_JAVA_OPTS` adds more.
const JVM_FLAGS: &[&str] = &[
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:-BytecodeVerificationRemote",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
];

/// The unpacked Openfire home named by `OPENFIRE_HOME`, when it is one with the Monitoring
/// plugin (`lib/startup.jar`, `lib/xmppserver-*.jar`, `plugins/monitoring.jar`); None otherwise.
pub fn openfire_home() -> Option<PathBuf> {
    std::env::var_os("OPENFIRE_HOME").map(PathBuf::from).filter(|h| is_home(h))
}

fn is_home(home: &Path) -> bool {
    let server_jar = std::fs::read_dir(home.join("lib"))
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("xmppserver-")))
        .unwrap_or(false);
    home.join("lib/startup.jar").is_file()
        && server_jar
        && (home.join("plugins/monitoring.jar").is_file() || home.join("plugins/monitoring/plugin.xml").is_file())
}

const HOW: &str = "an unpacked Openfire 5.1.1 home with the Monitoring plugin, e.g. \
    ~/.cache/missive/openfire-5.1.1/openfire, which `.ci/run` unpacks from \
    ../shared/vendor/openfire-5.1.1-monitoring.tar.gz and exports; Java 17 runs it";

/// The home, or a panic saying what is missing.
pub(super) fn home_or_panic() -> PathBuf {
    match std::env::var_os("OPENFIRE_HOME") {
        None => panic!("NOT RUN: OPENFIRE_HOME is not set. Set OPENFIRE_HOME=<{HOW}>"),
        Some(h) => {
            let home = PathBuf::from(h);
            assert!(is_home(&home), "NOT RUN: OPENFIRE_HOME={} is not an Openfire home with the Monitoring plugin. Set OPENFIRE_HOME=<{HOW}>", home.display());
            std::fs::canonicalize(&home).unwrap_or(home)
        }
    }
}

/// Makes `dir` an Openfire home (a copy of the template) serving WebSocket on `http_port`.
pub(super) fn prepare_instance(dir: &Path, http_port: u16) {
    let template = template();
    let started = Instant::now();
    copy_home(&template, dir);
    let ports = Ports::choose(http_port);
    let script = dir.join("embedded-db/openfire.script");
    let sql = std::fs::read_to_string(&script).expect("read the template's database");
    std::fs::write(&script, set_properties(&sql, &ports.properties())).expect("write the database");
    let conf = dir.join("conf/openfire.xml");
    let xml = std::fs::read_to_string(&conf).expect("read conf/openfire.xml");
    std::fs::write(&conf, set_admin_port(&xml, ports.admin)).expect("write conf/openfire.xml");
    if ports.admin > 0 {
        eprintln!("openfire: admin console at http://127.0.0.1:{} (admin / admin-test)", ports.admin);
    }
    eprintln!("openfire: {} copied from the template in {:?}", dir.display(), started.elapsed());
}

/// The JVM running Openfire from `dir` in the foreground (as `bin/openfire.sh` would).
pub(super) fn command(dir: &Path) -> Command {
    let d = dir.display();
    let mut c = Command::new(java());
    c.args(JVM_FLAGS);
    if let Ok(more) = std::env::var("MISSIVE_OPENFIRE_JAVA_OPTS") {
        c.args(more.split_whitespace());
    }
    c.arg(format!("-DopenfireHome={d}"))
        .arg(format!("-Dopenfire.lib.dir={d}/lib"))
        .arg(format!("-Dlog4j.configurationFile={d}/lib/log4j2.xml"))
        .arg("-Dlog4j2.formatMsgNoLookups=true")
        .arg(format!("-Djava.security.properties={d}/resources/security/java.security"))
        .arg("-Djdk.tls.ephemeralDHKeySize=matched")
        .arg("-jar")
        .arg(dir.join("lib/startup.jar"))
        .current_dir(dir);
    c
}

/// `$JAVA_HOME/bin/java` or `java`, checked once.
fn java() -> &'static Path {
    static JAVA: OnceLock<PathBuf> = OnceLock::new();
    JAVA.get_or_init(|| {
        let java = std::env::var_os("JAVA_HOME").map(|j| PathBuf::from(j).join("bin/java")).filter(|j| j.is_file()).unwrap_or("java".into());
        assert!(
            Command::new(&java).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()),
            "Openfire needs Java 17 or later (`{}` does not run): apt-get install openjdk-17-jre-headless",
            java.display()
        );
        java
    })
}

/// Openfire's own log (`logs/openfire.log`).
pub(super) fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("logs/openfire.log")).unwrap_or_default()
}

/// Why Openfire cannot serve, from its log: it keeps running when a port is taken.
pub(super) fn start_failure(dir: &Path) -> Option<String> {
    let log = log(dir);
    let line = log.lines().find(|l| l.contains("Address already in use") || l.contains("BindException"))?;
    Some(line.to_owned())
}

/// This instance's ports.
struct Ports {
    http: u16,
    /// The admin console's, -1 (off) unless `MISSIVE_OPENFIRE_ADMIN` is set: without it,
    /// Openfire starts with a third less CPU (3.5-4.0 s instead of 5.6-5.9 s measured).
    admin: i32,
    others: Vec<u16>,
}

impl Ports {
    fn choose(http: u16) -> Ports {
        loop {
            let mut ports = free_ports(PORT_PROPERTIES.len() + 1);
            if ports.contains(&http) {
                continue;
            }
            let admin = ports.pop().expect("ports were chosen");
            let admin = if std::env::var_os("MISSIVE_OPENFIRE_ADMIN").is_some() { i32::from(admin) } else { -1 };
            return Ports { http, admin, others: ports };
        }
    }

    fn properties(&self) -> Vec<(String, String)> {
        let mut p = vec![("httpbind.port.plain".to_owned(), self.http.to_string())];
        p.extend(PORT_PROPERTIES.iter().zip(&self.others).map(|(k, v)| ((*k).to_owned(), v.to_string())));
        p
    }
}

/// The template home (built once per key, shared by processes through the cache).
fn template() -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let home = home_or_panic();
            let root = cache_dir().join("openfire-templates");
            let key = template_key(&home);
            let dir = root.join(&key);
            if !dir.join("ready").exists() {
                build_template(&home, &root, &key);
            }
            dir
        })
        .clone()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from).join(".cache/missive")
}

/// Covers the home (its path and its jars' sizes and times) and every setting in this file.
fn template_key(home: &Path) -> String {
    let mut parts = vec![home.display().to_string(), format!("{TEMPLATE_VERSION}{PROPERTIES:?}{MUC_PROPERTIES:?}{PORT_PROPERTIES:?}{DATABASE_SETTINGS:?}{:?}", bootstrap(&[], 0))];
    for sub in ["lib", "plugins"] {
        let mut jars: Vec<String> = std::fs::read_dir(home.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let modified = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
                m.is_file().then(|| format!("{}:{}:{modified}", e.file_name().to_string_lossy(), m.len()))
            })
            .collect();
        jars.sort();
        parts.extend(jars);
    }
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = parts.join("\n").bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Sets up a template: a copy of the home run once through autosetup on free ports, stopped
/// cleanly (so the database is all in its `.script`), with the MUC defaults added.
fn build_template(home: &Path, root: &Path, key: &str) {
    let started = Instant::now();
    let building = root.join(format!("{key}.building-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&building).expect("create the template directory");
    link_tree(&home.join("lib"), &building.join("lib"));
    link_tree(&home.join("resources"), &building.join("resources"));
    replace_with_copy(&building.join("resources/security"));
    let plugins = building.join("plugins");
    std::fs::create_dir_all(&plugins).expect("create plugins");
    for entry in std::fs::read_dir(home.join("plugins")).expect("read the home's plugins").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            // A plugin extracted from its jar in the home is extracted again from the jar.
            if !home.join("plugins").join(format!("{name}.jar")).exists() {
                link_tree(&path, &plugins.join(&name));
            }
        } else {
            link_file(&path, &plugins.join(&name));
        }
    }
    std::fs::create_dir_all(building.join("conf")).expect("create conf");
    for entry in std::fs::read_dir(home.join("conf")).expect("read the home's conf").flatten() {
        if entry.path().is_file() && entry.file_name() != "openfire.xml" {
            std::fs::copy(entry.path(), building.join("conf").join(entry.file_name())).expect("copy conf");
        }
    }
    let http = free_port();
    let ports = Ports::choose(http);
    std::fs::write(building.join("conf/openfire.xml"), bootstrap(&ports.properties(), -1)).expect("write the bootstrap configuration");

    let log = std::fs::File::create(building.join("stdout.log")).expect("create the template's stdout log");
    let mut child = command(&building)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start Openfire for its template: {e}"));
    let url = format!("ws://127.0.0.1:{http}/ws/");
    let logs = || format!("{}{}", self::log(&building), std::fs::read_to_string(building.join("stdout.log")).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            panic!("Openfire exited with {status} setting up its template in {}:\n{}", building.display(), logs());
        }
        if let Some(failure) = start_failure(&building) {
            let _ = child.kill();
            panic!("Openfire could not set up its template ({failure}):\n{}", logs());
        }
        if raw::stream_features(&url, Duration::from_secs(2)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Openfire did not serve {url} within 300 s setting up its template:\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let set_up = started.elapsed();
    // A clean stop checkpoints the database into openfire.script.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Openfire did not stop within 120 s after setting up its template:\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = building.join("embedded-db/openfire.script");
    let sql = std::fs::read_to_string(&script).unwrap_or_default();
    assert!(
        sql.contains(&format!("INSERT INTO OFPROPERTY VALUES('httpbind.port.plain','{http}',")),
        "autosetup did not copy the properties of openfire.xml into Openfire's database ({}):\n{}",
        script.display(),
        logs()
    );
    assert!(sql.contains("INSERT INTO OFMUCSERVICE VALUES(1,'conference',"), "no MUC service 'conference' (id 1) in {}", script.display());
    // Autosetup copies an XML property only when the database has none yet, and
    // xmpp.socket.ssl.active is written (true) before: every property is set again here.
    let properties: Vec<(String, String)> = PROPERTIES.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let sql = set_properties(&sql, &properties);
    let mut sql: String = sql
        .lines()
        .map(|l| DATABASE_SETTINGS.iter().find(|(prefix, _)| l.starts_with(prefix)).map_or(l, |(_, setting)| setting))
        .flat_map(|l| [l, "\n"])
        .collect();
    for (prefix, _) in DATABASE_SETTINGS {
        assert!(sql.lines().any(|l| l.starts_with(prefix)), "no `{prefix}` in {}", script.display());
    }
    for (name, value) in MUC_PROPERTIES {
        sql.push_str(&format!("INSERT INTO OFMUCSERVICEPROP VALUES(1,'{name}','{value}')\n"));
    }
    std::fs::write(&script, sql).expect("write the template's database");
    std::fs::write(building.join("ready"), format!("set up from {} in {set_up:?}\n", home.display())).expect("mark the template ready");
    eprintln!("openfire: template {key} set up from {} in {set_up:?} (then stopped)", home.display());

    let dir = root.join(key);
    if std::fs::rename(&building, &dir).is_err() {
        // Another process finished one first: use it.
        let _ = std::fs::remove_dir_all(&building);
        assert!(dir.join("ready").exists(), "could not move the Openfire template into {}", dir.display());
    }
    // Templates of other keys (another home, older settings) unused for a day go.
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(86_400)));
        if entry.file_name() != key && old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The bootstrap `openfire.xml`: embedded HSQLDB, autosetup of domain `localhost` with an
/// admin account, in-band registration, everything on 127.0.0.1, and `properties` (as XML
/// properties, which autosetup copies into the database).
fn bootstrap(ports: &[(String, String)], admin_port: i32) -> String {
    let mut properties: Vec<(String, String)> = PROPERTIES.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    properties.push(("register.inband".into(), "true".into()));
    properties.extend(ports.iter().cloned());
    properties.sort();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by missive-testkit: a throwaway Openfire on loopback (see testkit/src/xmpp/openfire.rs). -->
<jive>
    <adminConsole>
        <port>{admin_port}</port>
        <securePort>-1</securePort>
    </adminConsole>
    <locale>en</locale>
    <network>
        <interface>127.0.0.1</interface>
    </network>
    <connectionProvider>
        <className>org.jivesoftware.database.EmbeddedConnectionProvider</className>
    </connectionProvider>
    <autosetup>
        <run>true</run>
        <locale>en</locale>
        <xmpp>
            <domain>localhost</domain>
            <fqdn>localhost</fqdn>
            <auth>
                <anonymous>false</anonymous>
            </auth>
        </xmpp>
        <encryption>
            <algorithm>AES</algorithm>
            <key>missive-test-key</key>
        </encryption>
        <database>
            <mode>embedded</mode>
        </database>
        <admin>
            <email>admin@localhost</email>
            <password>admin-test</password>
        </admin>
    </autosetup>
{}</jive>
"#,
        nest(&properties, 1)
    )
}

/// Dotted property names as nested XML elements (`a.b=v` -> `<a><b>v</b></a>`), siblings merged.
fn nest(properties: &[(String, String)], depth: usize) -> String {
    let indent = "    ".repeat(depth);
    let mut out = String::new();
    let mut i = 0;
    while i < properties.len() {
        let (name, value) = &properties[i];
        let (head, rest) = name.split_once('.').unwrap_or((name, ""));
        let mut group = vec![];
        while i < properties.len() && properties[i].0.split_once('.').map_or(properties[i].0.as_str(), |(h, _)| h) == head {
            let (n, v) = &properties[i];
            group.push((n.split_once('.').map_or(String::new(), |(_, r)| r.to_owned()), v.clone()));
            i += 1;
        }
        if rest.is_empty() {
            assert_eq!(group.len(), 1, "property {name} is also a prefix of another");
            out.push_str(&format!("{indent}<{head}>{}</{head}>\n", raw::escape(value)));
        } else {
            assert!(group.iter().all(|(r, _)| !r.is_empty()), "property {head} is also a prefix of another");
            out.push_str(&format!("{indent}<{head}>\n{}{indent}</{head}>\n", nest(&group, depth + 1)));
        }
    }
    out
}

/// An HSQLDB script with these `ofProperty` rows set (replaced, or added at the end).
fn set_properties(script: &str, properties: &[(String, String)]) -> String {
    let row = |name: &str| format!("INSERT INTO OFPROPERTY VALUES('{}',", name.replace('\'', "''"));
    let mut out: String =
        script.lines().filter(|l| !properties.iter().any(|(n, _)| l.starts_with(&row(n)))).flat_map(|l| [l, "\n"]).collect();
    for (name, value) in properties {
        out.push_str(&format!("{}'{}',0,NULL)\n", row(name), value.replace('\'', "''")));
    }
    out
}

/// `openfire.xml` with the admin console on `port` (-1: off).
fn set_admin_port(xml: &str, port: i32) -> String {
    let section = xml.find("<adminConsole>").expect("an <adminConsole> section in openfire.xml");
    let start = section + xml[section..].find("<port>").expect("an admin console <port>") + "<port>".len();
    let end = start + xml[start..].find("</port>").expect("a closed <port>");
    format!("{}{port}{}", &xml[..start], &xml[end..])
}

/// An instance's files from the template: what Openfire only reads is linked, what it writes
/// (database, configuration, search indexes, certificates) is copied.
fn copy_home(template: &Path, dir: &Path) {
    link_tree(&template.join("lib"), &dir.join("lib"));
    link_tree(&template.join("plugins"), &dir.join("plugins"));
    link_tree(&template.join("resources"), &dir.join("resources"));
    replace_with_copy(&dir.join("resources/security"));
    for written in ["conf", "embedded-db", "monitoring"] {
        copy_tree(&template.join(written), &dir.join(written));
    }
    std::fs::create_dir_all(dir.join("logs")).expect("create logs");
}

/// `dst` as a tree of hard links to `src`'s files (symlinks when on another file system).
fn link_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())).flatten() {
        let target = dst.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            link_tree(&entry.path(), &target);
        } else {
            link_file(&entry.path(), &target);
        }
    }
}

fn link_file(src: &Path, dst: &Path) {
    if std::fs::hard_link(src, dst).is_err() {
        let real = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_owned());
        std::os::unix::fs::symlink(&real, dst).unwrap_or_else(|e| panic!("link {} to {}: {e}", dst.display(), real.display()));
    }
}

/// Replaces a linked directory by a copy of its files (Openfire writes there).
fn replace_with_copy(dir: &Path) {
    let linked = dir.with_extension("linked");
    std::fs::rename(dir, &linked).expect("move the linked directory aside");
    copy_tree(&linked, dir);
    std::fs::remove_dir_all(&linked).expect("remove the linked directory");
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    for entry in std::fs::read_dir(src).into_iter().flatten().flatten() {
        let target = dst.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy {} to {}: {e}", entry.path().display(), target.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_nest_as_xml_elements() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let xml = nest(&[p("a.b.c", "1"), p("a.b.d", "2"), p("a.e", "3"), p("f", "4")], 0);
        assert_eq!(xml, "<a>\n    <b>\n        <c>1</c>\n        <d>2</d>\n    </b>\n    <e>3</e>\n</a>\n<f>4</f>\n");
    }

    #[test]
    fn database_rows_are_replaced_or_added() {
        let script = "CREATE TABLE X\nINSERT INTO OFPROPERTY VALUES('a.port','1',0,NULL)\nINSERT INTO OFPROPERTY VALUES('a.port.x','9',0,NULL)\n";
        let out = set_properties(script, &[("a.port".into(), "2".into()), ("b".into(), "it's".into())]);
        assert_eq!(
            out,
            "CREATE TABLE X\nINSERT INTO OFPROPERTY VALUES('a.port.x','9',0,NULL)\nINSERT INTO OFPROPERTY VALUES('a.port','2',0,NULL)\nINSERT INTO OFPROPERTY VALUES('b','it''s',0,NULL)\n"
        );
    }

    #[test]
    fn the_admin_console_port_is_replaced() {
        let xml = "<jive><adminConsole><port>9090</port><securePort>-1</securePort></adminConsole><x><port>1</port></x></jive>";
        assert_eq!(set_admin_port(xml, 4242), "<jive><adminConsole><port>4242</port><securePort>-1</securePort></adminConsole><x><port>1</port></x></jive>");
    }
}
