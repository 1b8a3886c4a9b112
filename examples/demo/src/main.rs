//! The Missive demo: starts the reference server in-process on a loopback port with temporary
//! storage and plays alice, bob and carol: a 1:1 chat, a group, typing, an offline queue, a
//! server restart with visible reconnects and backoff, and read receipts. It prints a transcript
//! with message states and timings, then checks every message in every recipient's store and
//! ends with one summary line: sent, delivered, lost, duplicated.
//!
//! `-- --xmpp` plays the same script over the XMPP transport against a throwaway Prosody on
//! loopback (Debian's `prosody` must be installed), `-- --xmpp openfire` against a throwaway
//! Openfire (`OPENFIRE_HOME`: an unpacked Openfire with the Monitoring plugin; `cargo xtask test`
//! unpacks the vendored one into `~/.cache/missive/openfire-5.1.1/openfire`);
//! `-- --xmpp <ws-url> --domain <domain>` against
//! an existing XMPP server with open registration (names get a random suffix; the outage scene
//! is skipped, the server not being ours to stop).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use missive::{BackoffConfig, Client, ClientConfig, ConnectionState, Event, EventStream, MessageState};
use missive_server::{Server, ServerConfig, ServerHandle};
use missive_testkit::xmpp::{Openfire, Prosody, XmppServer, openfire_home};

const PASSWORD: &str = "demo-password-1";
const WAIT: Duration = Duration::from_secs(30);

/// Where the demo's server is and how to reach it.
enum Backend {
    Native {
        server: Option<ServerHandle>,
        dir: std::path::PathBuf,
        port: u16,
    },
    /// A throwaway Prosody (`prosody` is `Some`) or an existing XMPP server.
    Xmpp {
        prosody: Option<XmppServer>,
        url: String,
        domain: String,
        suffix: String,
    },
}

impl Backend {
    async fn from_args(dir: &Path) -> Backend {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            None => {
                let server_dir = dir.join("server");
                let server = start_server(&server_dir, 0).await;
                let port = server.local_addr().port();
                Backend::Native { server: Some(server), dir: server_dir, port }
            }
            Some("--xmpp") => match (args.get(1), args.get(2).map(String::as_str), args.get(3)) {
                (None, _, _) => {
                    if !Path::new("/usr/bin/prosody").exists() {
                        eprintln!("--xmpp needs Prosody: `apt-get install prosody` (or `cargo xtask test`, which installs it)");
                        std::process::exit(2);
                    }
                    let prosody = Prosody::start();
                    let url = prosody.url();
                    Backend::Xmpp { prosody: Some(prosody), url, domain: "localhost".into(), suffix: String::new() }
                }
                (Some(kind), None, _) if kind == "openfire" => {
                    if openfire_home().is_none() {
                        eprintln!("--xmpp openfire needs OPENFIRE_HOME: an unpacked Openfire 5.1 with its Monitoring plugin");
                        std::process::exit(2);
                    }
                    let openfire = Openfire::start();
                    let url = openfire.url();
                    Backend::Xmpp { prosody: Some(openfire), url, domain: "localhost".into(), suffix: String::new() }
                }
                (Some(url), Some("--domain"), Some(domain)) => {
                    let suffix = format!("-{:04x}", std::process::id() % 0x10000);
                    Backend::Xmpp { prosody: None, url: url.clone(), domain: domain.clone(), suffix }
                }
                _ => usage(),
            },
            Some(_) => usage(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::Native { port, .. } => format!("reference server on ws://127.0.0.1:{port}"),
            Backend::Xmpp { prosody: Some(server), url, .. } => format!("XMPP transport, throwaway {:?} at {url}", server.kind()),
            Backend::Xmpp { url, domain, .. } => format!("XMPP transport, {domain} at {url}"),
        }
    }

    fn config(&self) -> ClientConfig {
        match self {
            Backend::Native { port, .. } => ClientConfig::native(format!("ws://127.0.0.1:{port}")),
            Backend::Xmpp { url, domain, .. } => ClientConfig::xmpp(url.as_str(), domain.as_str()),
        }
    }

    /// The account name of a demo person.
    fn account(&self, name: &str) -> String {
        match self {
            Backend::Native { .. } => name.to_owned(),
            Backend::Xmpp { suffix, .. } => format!("{name}{suffix}"),
        }
    }

    /// Stops the server, if it is ours; returns whether it did.
    async fn stop(&mut self) -> bool {
        match self {
            Backend::Native { server, .. } => {
                if let Some(s) = server.take() {
                    s.shutdown().await;
                }
                true
            }
            Backend::Xmpp { prosody: Some(p), .. } => {
                p.stop();
                true
            }
            Backend::Xmpp { .. } => false,
        }
    }

    async fn start_again(&mut self) {
        match self {
            Backend::Native { server, dir, port } => *server = Some(start_server(dir, *port).await),
            Backend::Xmpp { prosody: Some(p), .. } => p.start_again(),
            Backend::Xmpp { .. } => {}
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: missive-demo [--xmpp [openfire | <ws-url> --domain <domain>]]");
    std::process::exit(2)
}

struct Person {
    name: &'static str,
    client: Client,
    events: EventStream,
}

/// What the demo sent, to check at the end: (sender, text, message id, recipients).
struct Ledger {
    sent: Vec<(String, String, String, Vec<&'static str>)>,
}

fn elapsed(start: Instant) -> String {
    format!("[{:>7.3}s]", start.elapsed().as_secs_f64())
}

async fn start_server(dir: &Path, port: u16) -> ServerHandle {
    let config = ServerConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), dir);
    Server::bind(config).await.expect("the reference server starts")
}

async fn person(name: &'static str, backend: &Backend, dir: &Path) -> Person {
    let config = backend.config().store_path(dir.join(format!("{name}.db"))).device_id("demo").backoff(BackoffConfig {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
    let client = Client::open(config).await.expect("store opens");
    client.register(&backend.account(name), PASSWORD).await.expect("register");
    let events = client.subscribe();
    Person { name, client, events }
}

/// Waits for an event matching `pred`, bounded.
async fn wait(events: &mut EventStream, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    match tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    {
        Ok(e) => e,
        Err(_) => panic!("demo stalled waiting for {what}"),
    }
}

fn rank(s: &MessageState) -> u8 {
    match s {
        MessageState::Pending => 0,
        MessageState::Sending => 1,
        MessageState::Sent => 2,
        MessageState::Delivered => 3,
        MessageState::Read => 4,
        MessageState::Failed { .. } => 9,
    }
}

/// Sends and follows the message to `until`, printing each state with its time since the send.
async fn say(
    start: Instant,
    from: &mut Person,
    to: &str,
    conversation: &str,
    text: &str,
    until: MessageState,
    ledger: &mut Ledger,
    recipients: Vec<&'static str>,
) -> String {
    let t0 = Instant::now();
    let echo = from.client.send_text(conversation, text).await.expect("send");
    let mut trail = vec![format!("Pending {:.1} ms", t0.elapsed().as_secs_f64() * 1e3)];
    let mut reached = 0;
    while reached < rank(&until) {
        let e = wait(&mut from.events, "a state change", |e| matches!(e, Event::MessageUpdated(m) if m.id == echo.id)).await;
        if let Event::MessageUpdated(m) = e {
            if rank(&m.state) > reached {
                reached = rank(&m.state);
                trail.push(format!("{:?} {:.1} ms", m.state, t0.elapsed().as_secs_f64() * 1e3));
            }
        }
    }
    println!("{} {:<6}-> {:<6} {:<34} {}", elapsed(start), from.name, to, format!("{text:?}"), trail.join(" → "));
    ledger.sent.push((from.name.to_string(), text.to_string(), echo.id.clone(), recipients));
    echo.id
}

/// Waits until `who` has received the message `id`, and prints it.
async fn hear(start: Instant, who: &mut Person, id: &str) {
    let e = wait(&mut who.events, "an incoming message", |e| matches!(e, Event::MessageAdded(m) if m.id == id)).await;
    if let Event::MessageAdded(m) = e {
        println!("{} {:<6}<- {:<6} {:?}", elapsed(start), who.name, m.sender, m.body.preview());
    }
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut backend = Backend::from_args(dir.path()).await;
    println!("Missive demo: {}, temporary storage in {}", backend.describe(), dir.path().display());
    let mut alice = person("alice", &backend, dir.path()).await;
    let mut bob = person("bob", &backend, dir.path()).await;
    let mut carol = person("carol", &backend, dir.path()).await;
    let mut ledger = Ledger { sent: vec![] };
    println!("{} alice, bob and carol registered and connected", elapsed(start));

    println!("\n== 1:1 chat");
    // Each side names the chat by the other (the same id on the native server; the peer's JID
    // over XMPP).
    let dm = alice.client.create_direct(&backend.account("bob")).await.expect("dm").id;
    let dm_bob = bob.client.create_direct(&backend.account("alice")).await.expect("dm").id;
    let id = say(start, &mut alice, "bob", &dm, "Hi Bob! Lunch today?", MessageState::Delivered, &mut ledger, vec!["bob"]).await;
    hear(start, &mut bob, &id).await;
    let id =
        say(start, &mut bob, "alice", &dm_bob, "Sure, 12:30 at the usual place", MessageState::Delivered, &mut ledger, vec!["alice"]).await;
    hear(start, &mut alice, &id).await;

    println!("\n== Group");
    let members = [backend.account("bob"), backend.account("carol")];
    let group = alice.client.create_group("Weekend trip", &[members[0].as_str(), members[1].as_str()]).await.expect("group").id;
    wait(&mut carol.events, "the group", |e| matches!(e, Event::ConversationChanged(c) if c.id == group)).await;
    wait(&mut bob.events, "the group", |e| matches!(e, Event::ConversationChanged(c) if c.id == group)).await;
    let id =
        say(start, &mut alice, "group", &group, "Who is in for the mountains?", MessageState::Delivered, &mut ledger, vec!["bob", "carol"])
            .await;
    hear(start, &mut carol, &id).await;
    hear(start, &mut bob, &id).await;
    let id = say(start, &mut carol, "group", &group, "Me! I'll bring the tent", MessageState::Delivered, &mut ledger, vec!["alice", "bob"])
        .await;
    hear(start, &mut alice, &id).await;

    println!("\n== Typing");
    bob.client.set_typing(&group, true).await.expect("typing");
    if let Event::Typing { user, .. } = wait(&mut alice.events, "typing", |e| matches!(e, Event::Typing { active: true, .. })).await {
        println!("{} alice sees: {user} is typing…", elapsed(start));
    }
    let id = say(start, &mut bob, "group", &group, "Count me in too", MessageState::Sent, &mut ledger, vec!["alice", "carol"]).await;
    hear(start, &mut alice, &id).await;

    println!("\n== Offline queue: bob loses the network, alice keeps writing");
    bob.client.network_lost().await.expect("hint");
    wait(&mut bob.events, "bob offline", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Disconnected { .. }))).await;
    println!("{} bob is offline", elapsed(start));
    let mut queued = vec![];
    for i in 1..=5 {
        queued.push(
            say(start, &mut alice, "bob", &dm, &format!("While you were away #{i}"), MessageState::Sent, &mut ledger, vec!["bob"]).await,
        );
    }
    bob.client.network_available().await.expect("hint");
    for id in &queued {
        hear(start, &mut bob, id).await;
    }
    println!("{} bob is back and received exactly the {} queued messages", elapsed(start), queued.len());

    println!("\n== Server restart: the server stops while alice is sending");
    if backend.stop().await {
        println!("{} server stopped", elapsed(start));
        let mut pending = vec![];
        for i in 1..=3 {
            let text = format!("Sent during the outage #{i}");
            let echo = alice.client.send_text(&dm, &text).await.expect("send commits locally");
            println!(
                "{} {:<6}-> {:<6} {:<34} {:?} (committed locally)",
                elapsed(start),
                "alice",
                "bob",
                format!("{:?}", echo.body.preview()),
                echo.state
            );
            ledger.sent.push(("alice".into(), text, echo.id.clone(), vec!["bob"]));
            pending.push(echo.id);
        }
        let mut attempts = 0;
        while attempts < 4 {
            if let Event::ConnectionChanged(ConnectionState::Reconnecting { attempt, next_in }) =
                wait(&mut alice.events, "reconnecting", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Reconnecting { .. })))
                    .await
            {
                println!(
                    "{} alice: reconnecting, attempt {attempt}, next try in {} ms (exponential backoff, full jitter)",
                    elapsed(start),
                    next_in.as_millis()
                );
                attempts = attempt;
            }
        }
        backend.start_again().await;
        println!("{} server restarted on the same port and data directory", elapsed(start));
        wait(&mut alice.events, "connected", |e| matches!(e, Event::ConnectionChanged(ConnectionState::Connected))).await;
        println!("{} alice reconnected", elapsed(start));
        let mut states: HashMap<String, MessageState> = HashMap::new();
        while pending.iter().any(|id| states.get(id).is_none_or(|s| rank(s) < 2)) {
            if let Event::MessageUpdated(m) =
                wait(&mut alice.events, "the outage messages to be sent", |e| matches!(e, Event::MessageUpdated(_))).await
            {
                states.insert(m.id.clone(), m.state);
            }
        }
        println!("{} alice's 3 outage messages are Sent", elapsed(start));
        for id in &pending {
            hear(start, &mut bob, id).await;
        }
    } else {
        println!("(skipped: the server is not ours to stop)");
    }

    println!("\n== Read receipts");
    bob.client.mark_read(&dm_bob).await.expect("mark read");
    let last = ledger.sent.iter().rev().find(|s| s.0 == "alice" && s.3 == ["bob"]).map(|s| s.2.clone()).unwrap();
    wait(&mut alice.events, "read receipt", |e| matches!(e, Event::MessageUpdated(m) if m.id == last && m.state == MessageState::Read))
        .await;
    println!("{} bob read the conversation; alice sees her messages as Read", elapsed(start));
    for c in alice.client.conversations().await.expect("list") {
        println!(
            "{}   alice's list: {:<14} unread {}  last: {:?}",
            elapsed(start),
            if c.title.is_empty() { c.members.join(" & ") } else { c.title.clone() },
            c.unread_count,
            c.last_message.map(|m| m.body.preview()).unwrap_or_default()
        );
    }

    // Check every sent message in every recipient's store, message by message: present under
    // its id, and its text exactly once in the recipient's conversation.
    let people: HashMap<&str, &Client> = [("alice", &alice.client), ("bob", &bob.client), ("carol", &carol.client)].into_iter().collect();
    let (mut delivered, mut lost, mut duplicated) = (0, 0, 0);
    for (_, text, id, recipients) in &ledger.sent {
        for r in recipients {
            let Some(copy) = people[r].message(id).await.expect("lookup") else {
                lost += 1;
                continue;
            };
            let page = people[r].messages(&copy.conversation_id, None, 500).await.expect("page");
            match page.messages.iter().filter(|m| m.body.preview() == *text).count() {
                0 => lost += 1,
                1 => delivered += 1,
                n => duplicated += n - 1,
            }
        }
    }
    let copies: usize = ledger.sent.iter().map(|s| s.3.len()).sum();
    println!(
        "\nSummary: sent {}, delivered {delivered} of {copies} copies, lost {lost}, duplicated {duplicated} ({:.2} s)",
        ledger.sent.len(),
        start.elapsed().as_secs_f64()
    );
    for p in [&alice, &bob, &carol] {
        p.client.shutdown().await;
    }
    backend.stop().await;
    if lost > 0 || duplicated > 0 {
        std::process::exit(1);
    }
}
