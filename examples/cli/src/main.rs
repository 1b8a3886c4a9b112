//! `missive-cli`: an interactive chat client on the Missive SDK.
//!
//! This file owns the command line, startup (open the store, resume its session or log in), the
//! prompt loop that runs each command against the client, and shutdown (a bounded wait for the
//! messages typed in this session to reach the server, then `Client::shutdown`). Parsing lives
//! in `commands`, everything printed in `display`.

mod commands;
mod display;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use missive::{Client, ClientConfig, ConnectionState, Conversation, DisconnectReason, Event, MessageState};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{Instant, timeout, timeout_at};

use commands::{Command, DEFAULT_PAGE, Input};
use display::{Current, Failure, error_line, label};

/// How long startup waits for a stored session to connect, and then for the first sync, before
/// showing the prompt anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// How long quitting waits for the messages typed in this session to reach the server.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// An interactive chat client for a Missive server.
///
/// Reads commands and messages from stdin, one per line, and prints incoming messages, message
/// states, typing and connection changes as they happen. Type /help for the commands. The end of
/// input quits, so the client can be scripted:
///
/// printf '/dm bob\nhello\n/quit\n' | missive-cli --server ws://127.0.0.1:8700 --user alice
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8700
    #[arg(long)]
    server: String,
    /// User name.
    #[arg(long)]
    user: String,
    /// Password; only needed when the store holds no session for the user.
    #[arg(long, env = "MISSIVE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Create the account instead of logging in (ignored when the store already holds a session).
    #[arg(long)]
    register: bool,
    /// Local store for messages, unsent messages and the session [default: ./USER.missive.db]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Device id reported to the server (the XMPP resource with --xmpp).
    #[arg(long, default_value = "missive-cli")]
    device: String,
    /// Speak XMPP to a standard XMPP server (Prosody, ejabberd) serving this domain, instead of
    /// the Missive protocol; --server is then its WebSocket endpoint, e.g.
    /// --server ws://127.0.0.1:5280/xmpp-websocket --xmpp localhost
    #[arg(long, value_name = "DOMAIN")]
    xmpp: Option<String>,
}

#[tokio::main]
async fn main() {
    let code = match run(Args::parse()).await {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    };
    // Exit rather than drop the runtime: tokio's stdin reader may sit in a blocking read that
    // cannot be cancelled (after Ctrl-C), and dropping the runtime would wait for it.
    std::process::exit(code)
}

/// The account the CLI signs in as, as the SDK names it: over XMPP a bare name is a JID on the
/// given domain (`alice` is `alice@localhost`).
fn account(args: &Args) -> String {
    match &args.xmpp {
        Some(domain) if !args.user.contains('@') => format!("{}@{domain}", args.user),
        _ => args.user.clone(),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let store = args.store.clone().unwrap_or_else(|| PathBuf::from(format!("{}.missive.db", args.user)));
    let config = match &args.xmpp {
        Some(domain) => ClientConfig::xmpp(args.server.as_str(), domain.as_str()),
        None => ClientConfig::native(args.server.as_str()),
    };
    let config = config.store_path(&store).device_id(args.device.as_str());
    let client = Client::open(config).await.map_err(|e| error_line(&e))?;
    let mut events = client.subscribe(); // from the start, so that it sees the first sync end
    if let Err(message) = sign_in(&client, &args, &store).await {
        client.shutdown().await;
        return Err(message);
    }
    if client.connection_state() == ConnectionState::Connected {
        // Catch up before reading commands, so that a script's /list or /open sees the server's
        // state. Bounded: an empty timeout just means the prompt starts earlier.
        let caught_up =
            async { while !matches!(events.next().await, Some(Event::SyncProgress { caught_up: true, .. }) | None) {} };
        let _ = timeout(STARTUP_WAIT, caught_up).await;
    }
    drop(events);
    let me = account(&args);
    println!("-- {me} on {} (store {}); /help for commands", args.server, store.display());
    let current = Current::default();
    let printer = tokio::spawn(display::print_events(client.clone(), me.clone(), current.clone(), client.subscribe()));
    let mut chat = Chat { client: client.clone(), me, current, older: None, more: false, sent: HashMap::new() };
    chat.prompt().await;
    chat.drain().await;
    client.shutdown().await;
    printer.abort();
    Ok(())
}

/// Resumes the stored session, or logs in / registers when the store has none (or it was
/// logged out or refused).
async fn sign_in(client: &Client, args: &Args, store: &Path) -> Result<(), String> {
    let password = || {
        args.password.as_deref().ok_or_else(|| "error: a password is needed: --password or MISSIVE_PASSWORD".to_owned())
    };
    let sdk = |e: missive::Error| error_line(&e);
    match client.username().await.map_err(sdk)? {
        None if args.register => client.register(&args.user, password()?).await.map_err(sdk),
        None => client.login(&args.user, password()?).await.map_err(sdk),
        Some(owner) if owner != account(args) => {
            Err(format!("error: the store {} belongs to {owner}; choose another with --store", store.display()))
        }
        Some(_) => {
            if args.register {
                println!("-- the store already holds a session for {}; --register ignored", args.user);
            }
            let settled = timeout(STARTUP_WAIT, client.wait_for_state(|s| *s != ConnectionState::Connecting)).await;
            match settled {
                Ok(
                    ConnectionState::Disconnected { reason: DisconnectReason::LoggedOut }
                    | ConnectionState::AuthFailed { .. },
                ) => client.login(&args.user, password()?).await.map_err(sdk),
                _ => Ok(()), // connected, or retrying in the background
            }
        }
    }
}

/// The prompt's state.
struct Chat {
    client: Client,
    me: String,
    current: Current,
    /// `/history` continues below this sequence number while `more` is true.
    older: Option<u64>,
    more: bool,
    /// Messages typed in this session: id → conversation (for the wait when quitting).
    sent: HashMap<String, String>,
}

impl Chat {
    /// Runs lines from stdin until /quit, the end of input or Ctrl-C.
    async fn prompt(&mut self) {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = tokio::signal::ctrl_c() => return,
            };
            let line = match line {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("error: cannot read input: {e}");
                    return;
                }
            };
            let result = match commands::parse(&line) {
                Ok(Input::Empty) => Ok(()),
                Ok(Input::Command(Command::Quit)) => return,
                Ok(Input::Command(command)) => self.run(command).await,
                Ok(Input::Text(text)) => self.send(&text).await,
                Err(usage) => Err(Failure::Message(usage)),
            };
            if let Err(e) = result {
                eprintln!("{e}");
            }
        }
    }

    async fn run(&mut self, command: Command) -> Result<(), Failure> {
        match command {
            Command::Help => println!("{}", commands::HELP),
            Command::List => {
                let current = self.current.lock().unwrap().clone();
                display::print_list(&self.client.conversations().await?, &self.me, current.as_deref());
            }
            Command::Open(key) => self.show(self.find(&key).await?).await?,
            Command::Dm(user) => self.show(self.client.create_direct(&user).await?).await?,
            Command::Group { title, members } => {
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                self.show(self.client.create_group(&title, &members).await?).await?;
            }
            Command::Room(title) => self.show(self.client.create_room(&title).await?).await?,
            Command::Join(id) => self.show(self.client.join_room(&id).await?).await?,
            Command::Leave(id) => {
                self.client.leave_room(&id).await?;
                let mut current = self.current.lock().unwrap();
                if current.as_deref() == Some(id.as_str()) {
                    *current = None;
                }
                println!("-- left {id}");
            }
            Command::History(n) => self.history(n).await?,
            Command::Who => {
                let c = self.find(&self.current_id()?).await?;
                println!("-- {} [{}]: {}", label(&c, &self.me), display::kind(c.kind), c.members.join(", "));
            }
            Command::State => {
                println!("{}", display::state_line(&self.client.connection_state()));
                let unsent = self.client.unsent_count().await?;
                if unsent > 0 {
                    println!("-- {unsent} message(s) waiting for the server");
                }
            }
            Command::Quit => {} // handled by the prompt
        }
        Ok(())
    }

    fn current_id(&self) -> Result<String, Failure> {
        let current = self.current.lock().unwrap().clone();
        current
            .ok_or_else(|| Failure::Message("no current conversation: /open, /dm, /group, /room or /join first".into()))
    }

    async fn send(&mut self, text: &str) -> Result<(), Failure> {
        let conversation = self.current_id()?;
        let message = self.client.send_text(&conversation, text).await?;
        self.sent.insert(message.id, conversation);
        Ok(())
    }

    /// A conversation by id, or else by its unique label.
    async fn find(&self, key: &str) -> Result<Conversation, Failure> {
        if let Some(c) = self.client.conversation(key).await? {
            return Ok(c);
        }
        let all = self.client.conversations().await?;
        let mut named = all.into_iter().filter(|c| label(c, &self.me) == key);
        match (named.next(), named.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => {
                Err(Failure::Message(format!("several conversations are called {key}; use an id from /list")))
            }
            _ => Err(Failure::Message(format!("no conversation {key} (see /list)"))),
        }
    }

    /// Makes `c` current, prints its newest page and marks it read.
    async fn show(&mut self, c: Conversation) -> Result<(), Failure> {
        *self.current.lock().unwrap() = Some(c.id.clone());
        let page = self.client.messages(&c.id, None, DEFAULT_PAGE).await?;
        println!("== {} [{}] {} ==", label(&c, &self.me), display::kind(c.kind), c.id);
        if page.messages.is_empty() {
            println!("  (no messages yet)");
        }
        display::print_messages(&page.messages);
        if page.has_more {
            println!("  (/history for older messages)");
        }
        (self.older, self.more) = (page.next_before_seq, page.has_more);
        self.client.mark_read(&c.id).await?;
        Ok(())
    }

    /// The next older page of the current conversation.
    async fn history(&mut self, n: u32) -> Result<(), Failure> {
        let id = self.current_id()?;
        if !self.more {
            println!("-- no older messages");
            return Ok(());
        }
        let page = self.client.messages(&id, self.older, n).await?;
        println!("-- {} older message(s):", page.messages.len());
        display::print_messages(&page.messages);
        if !page.has_more {
            println!("-- beginning of the conversation");
        }
        (self.older, self.more) = (page.next_before_seq.or(self.older), page.has_more);
        Ok(())
    }

    /// Waits, bounded, until the messages typed in this session have left the outbox, so that
    /// `printf '/dm bob\nhi\n/quit\n' | missive-cli ...` delivers. Offline it does not wait:
    /// the messages stay in the store and go out on the next start.
    async fn drain(&self) {
        if self.sent.is_empty() {
            return;
        }
        let mut events = self.client.subscribe(); // before the first check: no update is missed
        let deadline = Instant::now() + DRAIN_WAIT;
        let mut told = false;
        loop {
            let waiting = self.unsent().await;
            if waiting == 0 {
                return;
            }
            let online =
                matches!(self.client.connection_state(), ConnectionState::Connected | ConnectionState::Connecting);
            if !online || Instant::now() >= deadline {
                println!("-- {waiting} message(s) not sent yet; they are kept and go out on the next start");
                return;
            }
            if !told {
                println!("-- sending {waiting} message(s)…");
                told = true;
            }
            if let Ok(None) = timeout_at(deadline, events.next()).await {
                return; // the client is gone
            }
        }
    }

    /// How many of the messages typed in this session are still pending or on the wire.
    async fn unsent(&self) -> usize {
        let conversations: BTreeSet<&String> = self.sent.values().collect();
        let mut waiting = 0;
        for id in conversations {
            if let Ok(page) = self.client.messages(id, None, 100).await {
                waiting += page
                    .messages
                    .iter()
                    .filter(|m| {
                        self.sent.contains_key(&m.id)
                            && matches!(m.state, MessageState::Pending | MessageState::Sending)
                    })
                    .count();
            }
        }
        waiting
    }
}
