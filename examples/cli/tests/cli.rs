//! End-to-end tests of the `missive-cli` binary: a reference server runs in-process, the real
//! binary is driven over stdin, and what reached the server is checked through the SDK.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use missive::{Body, Client, ClientConfig, ConversationKind, Event};
use missive_server::{Server, ServerConfig, ServerHandle};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::timeout;

/// Upper bound for anything awaited here; the tests normally take well under a second.
const BOUND: Duration = Duration::from_secs(30);

async fn start_server(dir: &Path) -> ServerHandle {
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("server"));
    Server::bind(config).await.expect("server starts")
}

async fn sdk_client(url: &str, store: &Path) -> Client {
    Client::open(ClientConfig::native(url).store_path(store)).await.expect("client opens")
}

/// Runs the CLI with `args` (and `MISSIVE_PASSWORD` when given), writes `input` to its stdin,
/// closes it, and waits (bounded) for the exit.
async fn cli(args: &[&str], password: Option<&str>, input: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_missive-cli"));
    command.args(args).env_remove("MISSIVE_PASSWORD").kill_on_drop(true);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(password) = password {
        command.env("MISSIVE_PASSWORD", password);
    }
    let mut child = command.spawn().expect("missive-cli starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input.as_bytes()).await.expect("input written"); // small: fits the pipe
    drop(stdin);
    timeout(BOUND, child.wait_with_output()).await.expect("missive-cli exits in time").expect("missive-cli output")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_typed_in_the_cli_reaches_bob() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let url = server.url();
    let bob = sdk_client(&url, &dir.path().join("bob.db")).await;
    bob.register("bob", "bob-password").await.expect("bob registers");
    let mut events = bob.subscribe();

    let alice_store = dir.path().join("alice.db");
    let alice_store = alice_store.to_str().unwrap();
    let args = ["--server", url.as_str(), "--user", "alice", "--store", alice_store];
    let register: Vec<&str> = args.iter().copied().chain(["--register"]).collect();
    let out = cli(&register, Some("alice-password"), "/dm bob\nhello from the cli\n/quit\n").await;
    assert!(out.status.success(), "{}", show(&out));

    let received = timeout(BOUND, async {
        loop {
            match events.next().await.expect("bob's client is running") {
                Event::MessageAdded(m) if !m.outgoing => break m,
                _ => {}
            }
        }
    })
    .await
    .expect("bob receives a message");
    assert_eq!(received.sender, "alice");
    assert_eq!(received.body, Body::Text("hello from the cli".into()));
    let conversation = bob.conversation(&received.conversation_id).await.unwrap().expect("conversation cached");
    assert_eq!(conversation.kind, ConversationKind::Direct);
    let mut members = conversation.members.clone();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    let page = bob.messages(&received.conversation_id, None, 50).await.unwrap();
    let texts: Vec<(String, Body)> = page.messages.iter().map(|m| (m.sender.clone(), m.body.clone())).collect();
    assert_eq!(texts, [("alice".to_owned(), Body::Text("hello from the cli".into()))], "exactly the one message");

    // A second start resumes the stored session (no password given, so no login is possible),
    // opens the conversation by its name and shows the history; errors do not end the session.
    let out = cli(&args, None, "text with nothing open\n/open bob\n/bogus\n/quit\n").await;
    assert!(out.status.success(), "{}", show(&out));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("== bob [dm]"), "{}", show(&out));
    assert!(stdout.contains("alice: hello from the cli"), "{}", show(&out));
    assert!(stderr.contains("no current conversation"), "{}", show(&out));
    assert!(stderr.contains("unknown command /bogus"), "{}", show(&out));

    bob.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_non_zero_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let url = server.url();
    let alice = sdk_client(&url, &dir.path().join("alice-sdk.db")).await;
    alice.register("alice", "alice-password").await.expect("alice registers");
    alice.shutdown().await;

    let store = dir.path().join("alice-cli.db");
    let args = [
        "--server",
        url.as_str(),
        "--user",
        "alice",
        "--password",
        "not-alices-password",
        "--store",
        store.to_str().unwrap(),
    ];
    let out = cli(&args, None, "/list\n/quit\n").await;
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTH_FAILED") && stderr.contains("authentication failed"), "{}", show(&out));

    server.shutdown().await;
}

#[tokio::test]
async fn help_documents_the_options() {
    let out = cli(&["--help"], None, "").await;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for option in ["--server", "--user", "--password", "MISSIVE_PASSWORD", "--register", "--store", "--device", "--xmpp"] {
        assert!(stdout.contains(option), "{option} missing from --help:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_xmpp_the_cli_talks_to_a_real_prosody() {
    let prosody = missive_testkit::xmpp::Prosody::start();
    let url = prosody.url();
    let dir = tempfile::tempdir().unwrap();
    let bob = Client::open(ClientConfig::xmpp(url.as_str(), "localhost").store_path(dir.path().join("bob.db"))).await.unwrap();
    bob.register("bob", "bob-password").await.expect("bob registers on Prosody");
    let mut events = bob.subscribe();
    let store = dir.path().join("alice.db");
    let args = ["--server", url.as_str(), "--xmpp", "localhost", "--user", "alice", "--store", store.to_str().unwrap(), "--register"];
    let out = cli(&args, Some("alice-password"), "/dm bob\nhello over xmpp\n/quit\n").await;
    assert!(out.status.success(), "{}", show(&out));
    let received = timeout(BOUND, async {
        loop {
            match events.next().await.expect("bob's client is running") {
                Event::MessageAdded(m) if !m.outgoing => break m,
                _ => {}
            }
        }
    })
    .await
    .expect("bob receives a message");
    assert_eq!(received.sender, "alice@localhost");
    assert_eq!(received.body, Body::Text("hello over xmpp".into()));
    // A second start on the same store, as `--user alice` (the store knows alice@localhost),
    // resumes the session; the 1:1 conversation is labelled with bob alone.
    let again = ["--server", url.as_str(), "--xmpp", "localhost", "--user", "alice", "--store", store.to_str().unwrap()];
    let out = cli(&again, None, "/list\n/quit\n").await;
    let shown = show(&out);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("belongs to"), "{shown}");
    assert!(shown.contains("bob@localhost  bob@localhost [dm]"), "labelled with the peer alone: {shown}");
    bob.shutdown().await;
}
