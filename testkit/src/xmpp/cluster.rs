//! Two ejabberd nodes clustered on loopback: one XMPP service ([`DOMAIN`](super::DOMAIN)) served
//! over WebSocket by both, so that a client can fail over from one to the other.
//!
//! Each node is an ordinary throwaway ejabberd ([`XmppServer`], `testkit/ejabberd/run.sh`) with
//! Erlang distribution on: its own node name (`ejN_<epmd port>@localhost`), data directory,
//! WebSocket port and distribution port, a cookie shared by the two, and a private epmd on a
//! free loopback port that the cluster runs (so no system epmd on 4369 is used or started, and
//! clusters side by side never see each other). The second node, once started, joins the first
//! with `ejabberd_admin:join_cluster` (what `ejabberdctl join_cluster` calls): its database is
//! replaced by a replica of the first's, every table copied with the storage type it has there
//! (accounts, rosters, sessions, archives, offline messages; routes and sessions are shared, so a
//! message reaches a user connected to the other node).
//!
//! A node killed with [`EjabberdCluster::kill`] (SIGKILL) and started again with
//! [`EjabberdCluster::start_again`] rejoins by itself: its schema names the other node, and
//! mnesia loads every table from the running member, catching up with what was written while it
//! was down.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ServerKind, XmppServer, free_ports};

/// Two clustered ejabberd nodes; both are killed (and their private epmd stopped) on drop.
pub struct EjabberdCluster {
    nodes: Vec<XmppServer>,
    names: Vec<String>,
    cookie: String,
    epmd_port: u16,
    epmd: Child,
}

impl EjabberdCluster {
    /// Starts two nodes side by side, the second joining the first, and returns once both serve
    /// WebSocket at [`EjabberdCluster::urls`] as one cluster (both nodes running every table).
    /// Panics (with the nodes' logs) when that fails.
    pub fn start() -> EjabberdCluster {
        super::ejabberd::check_installed();
        let ports = free_ports(3);
        let (epmd_port, dist) = (ports[0], [ports[1], ports[2]]);
        let epmd = start_epmd(epmd_port);
        let names: Vec<String> = (1..=2).map(|i| format!("ej{i}_{epmd_port}@localhost")).collect();
        let cookie = format!("missive{:016x}", random());
        let mut nodes: Vec<XmppServer> = (0..2)
            .map(|i| {
                let mut env = vec![
                    ("EJ_NODE".to_owned(), names[i].clone()),
                    ("EJ_EPMD_PORT".to_owned(), epmd_port.to_string()),
                    ("EJ_LISTEN_PORT".to_owned(), dist[i].to_string()),
                    ("EJ_COOKIE".to_owned(), cookie.clone()),
                ];
                if i == 1 {
                    env.push(("EJ_JOIN".to_owned(), names[0].clone()));
                }
                XmppServer::prepare(ServerKind::Ejabberd, None, None, env)
            })
            .collect();
        // Side by side: the second waits in run.sh until ejabberd runs on the first.
        std::thread::scope(|s| {
            for node in &mut nodes {
                s.spawn(move || node.launch());
            }
        });
        // Only the first start joins: a member started again catches up by itself.
        nodes[1].env.retain(|(k, _)| k != "EJ_JOIN");
        let cluster = EjabberdCluster { nodes, names, cookie, epmd_port, epmd };
        for i in 0..2 {
            let members = cluster.running_nodes(i).unwrap_or_else(|e| panic!("node {}: {e}", i + 1));
            assert_eq!(members, cluster.names, "node {} does not see both nodes running: {members:?}", i + 1);
        }
        cluster
    }

    /// Both nodes' WebSocket endpoints (`ws://127.0.0.1:<port>/xmpp-websocket`), first node first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(XmppServer::url).collect()
    }

    /// Node `i`'s WebSocket endpoint (`i` is 0 or 1).
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Node `i`'s WebSocket listener address, e.g. to put a proxy in front.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr()
    }

    /// Node `i` as a server (its pid, log, ...). Use [`EjabberdCluster::kill`] and
    /// [`EjabberdCluster::start_again`] rather than its own stop and start.
    pub fn node(&self, i: usize) -> &XmppServer {
        &self.nodes[i]
    }

    /// Node `i`'s Erlang node name, e.g. `ej1_40123@localhost`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Kills node `i` with SIGKILL (no goodbye to its clients nor to the other node) and waits
    /// for it to be gone, and for the other node to run without it (until then, the other node
    /// may still route to sessions on the dead one: seen under load). The other node keeps
    /// serving.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        let other = 1 - i;
        let alone = vec![self.names[other].clone()];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.running_nodes(other) {
                Ok(members) if members == alone => return,
                Ok(members) => assert!(Instant::now() < deadline, "node {} still runs with {members:?}", other + 1),
                Err(e) => assert!(Instant::now() < deadline, "node {}: {e}", other + 1),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts node `i` again after [`EjabberdCluster::kill`], on its data and ports, and returns
    /// once it serves as a member of the cluster again (both nodes running every table).
    pub fn start_again(&mut self, i: usize) {
        self.nodes[i].start_again();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.running_nodes(i) {
                Ok(members) if members == self.names => return,
                Ok(members) => assert!(Instant::now() < deadline, "node {} restarted but runs with {members:?} only", i + 1),
                Err(e) => assert!(Instant::now() < deadline, "node {}: {e}", i + 1),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The nodes node `i` runs its database with (mnesia's `running_db_nodes`), sorted: both
    /// names when clustered. Asked over Erlang distribution from a hidden node (about a second).
    pub fn running_nodes(&self, i: usize) -> Result<Vec<String>, String> {
        let expr = format!(
            "io:format(\"missive-running ~w~n\", [rpc:call('{}', mnesia, system_info, [running_db_nodes], 10000)]), halt().",
            self.names[i]
        );
        let probe = format!("probe{:08x}_{}@localhost", random() as u32, self.epmd_port);
        let out = Command::new("/usr/bin/erl")
            .args(["-noinput", "-hidden", "-sname", &probe, "-setcookie", &self.cookie, "-start_epmd", "false"])
            .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
            .args(["-eval", &expr])
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_INETRC", self.nodes[i].dir.join("instance/inetrc"))
            .env("HOME", self.nodes[i].dir.join("instance"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run erl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("missive-running "))
            .ok_or_else(|| format!("no answer from {}: {text}{}", self.names[i], String::from_utf8_lossy(&out.stderr)))?;
        let Some(list) = line.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            return Err(format!("{} answered {line}", self.names[i]));
        };
        let mut nodes: Vec<String> = list.split(',').filter(|n| !n.is_empty()).map(|n| n.trim_matches('\'').to_owned()).collect();
        nodes.sort();
        Ok(nodes)
    }
}

impl Drop for EjabberdCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}

/// A private epmd on 127.0.0.1:`port`, in the foreground (the cluster's child), once it listens.
fn start_epmd(port: u16) -> Child {
    let mut epmd = Command::new("epmd")
        .args(["-address", "127.0.0.1", "-port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start epmd (Erlang's, installed with ejabberd): {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = epmd.try_wait().ok().flatten() {
            panic!("epmd on port {port} exited with {status}");
        }
        assert!(Instant::now() < deadline, "epmd did not listen on 127.0.0.1:{port} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    epmd
}

/// Randomness enough for a cookie and a probe's name (std's per-process random hasher keys).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish()
}
