//! Output: how conversations, messages, states and errors look on the terminal (pure functions,
//! unit-tested), and the task that prints live events while the prompt reads input.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use missive::{
    Client, ConnectionState, Conversation, ConversationKind, DisconnectReason, Event, EventStream, Message,
    MessageState,
};

/// The conversation the prompt sends to, shared with the event printer (which marks incoming
/// messages of it read).
pub type Current = Arc<Mutex<Option<String>>>;

/// A human name for a conversation: its title, or for an untitled 1:1 the other member.
pub fn label(conversation: &Conversation, me: &str) -> String {
    if !conversation.title.is_empty() {
        return conversation.title.clone();
    }
    let others: Vec<&str> = conversation.members.iter().map(String::as_str).filter(|m| *m != me).collect();
    if others.is_empty() { conversation.id.clone() } else { others.join(", ") }
}

pub fn kind(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "dm",
        ConversationKind::Group => "group",
        ConversationKind::Room => "room",
    }
}

/// At most `max` characters of `text` on one line, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

/// `-- connected`, `-- reconnecting (attempt 3, in 1.2s)`, ...
pub fn state_line(state: &ConnectionState) -> String {
    let text = match state {
        ConnectionState::Connected => "connected".to_owned(),
        ConnectionState::Connecting => "connecting…".to_owned(),
        ConnectionState::Reconnecting { attempt, next_in } => {
            format!("reconnecting (attempt {attempt}, in {:.1}s)", next_in.as_secs_f64())
        }
        ConnectionState::AuthFailed { message } => format!("authentication failed: {message}"),
        ConnectionState::Disconnected { reason } => match reason {
            DisconnectReason::NotLoggedIn => "disconnected: not logged in".to_owned(),
            DisconnectReason::LoggedOut => "disconnected: logged out".to_owned(),
            DisconnectReason::NetworkLost => "disconnected: network lost".to_owned(),
            DisconnectReason::Stopped => "stopped".to_owned(),
        },
    };
    format!("-- {text}")
}

/// The mark printed when an own message changes state; `None` for the in-between states.
pub fn state_mark(state: &MessageState) -> Option<String> {
    match state {
        MessageState::Pending | MessageState::Sending => None,
        MessageState::Sent => Some("✓ sent".into()),
        MessageState::Delivered => Some("✓✓ delivered".into()),
        MessageState::Read => Some("✓✓ read".into()),
        MessageState::Failed { reason, retryable: true } => Some(format!("✗ failed: {reason} (will retry)")),
        MessageState::Failed { reason, .. } => Some(format!("✗ failed: {reason}")),
    }
}

/// One message in a listing: `alice: hi  ✓✓` (own messages carry a short state mark).
pub fn message_line(m: &Message) -> String {
    let text = m.body.preview();
    if !m.outgoing {
        return format!("  {}: {text}", m.sender);
    }
    let mark = match &m.state {
        MessageState::Pending | MessageState::Sending => "…",
        MessageState::Sent => "✓",
        MessageState::Delivered => "✓✓",
        MessageState::Read => "✓✓ read",
        MessageState::Failed { .. } => "✗ failed",
    };
    format!("  {}: {text}  {mark}", m.sender)
}

/// The `/list` output.
pub fn print_list(all: &[Conversation], me: &str, current: Option<&str>) {
    if all.is_empty() {
        println!("-- no conversations yet: /dm, /group, /room or /join");
    }
    for c in all {
        println!("{}", list_line(c, me, current == Some(c.id.as_str())));
    }
}

/// One row of `/list`.
pub fn list_line(c: &Conversation, me: &str, current: bool) -> String {
    let unread = if c.unread_count > 0 { format!("  ({} unread)", c.unread_count) } else { String::new() };
    let last = match &c.last_message {
        Some(m) => format!("  — {}: {}", m.sender, shorten(&m.body.preview(), 40)),
        None => String::new(),
    };
    let gone = if c.active { "" } else { " (left)" };
    let marker = if current { '*' } else { ' ' };
    format!("{marker} {}  {} [{}]{gone}{unread}{last}", c.id, label(c, me), kind(c.kind))
}

/// A page (newest first) printed oldest first, as a chat reads.
pub fn print_messages(newest_first: &[Message]) {
    for m in newest_first.iter().rev() {
        println!("{}", message_line(m));
    }
}

pub fn error_line(e: &missive::Error) -> String {
    format!("error [{}]: {e}", e.code())
}

/// Why a command did nothing.
pub enum Failure {
    Sdk(missive::Error),
    Message(String),
}

impl From<missive::Error> for Failure {
    fn from(e: missive::Error) -> Self {
        Failure::Sdk(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Sdk(e) => f.write_str(&error_line(e)),
            Failure::Message(m) => write!(f, "error: {m}"),
        }
    }
}

/// Prints events until the client goes away: incoming messages, own message states, typing,
/// connection changes and sync completion. Incoming messages of the current conversation are
/// marked read (the user is looking at it).
pub async fn print_events(client: Client, me: String, current: Current, mut events: EventStream) {
    let mut marks: HashMap<String, String> = HashMap::new(); // last mark printed per own message
    let mut last_state = None; // a subscription may repeat the current state once
    while let Some(event) = events.next().await {
        match event {
            // `connecting…` between reconnect attempts is noise: /state shows it.
            Event::ConnectionChanged(ConnectionState::Connecting) => {}
            Event::ConnectionChanged(state) if last_state.as_ref() != Some(&state) => {
                println!("{}", state_line(&state));
                last_state = Some(state);
            }
            Event::SyncProgress { applied, caught_up: true } => println!("-- up to date ({applied} events synced)"),
            // An own local echo is what the user just typed: only its state changes are shown.
            Event::MessageAdded(m) if m.outgoing && matches!(m.state, MessageState::Pending) => {}
            Event::MessageAdded(m) => {
                let name = conversation_name(&client, &m.conversation_id, &me).await;
                println!("[{name}] {}: {}", m.sender, m.body.preview());
                let is_current = current.lock().unwrap().as_deref() == Some(m.conversation_id.as_str());
                if is_current && !m.outgoing {
                    if let Err(e) = client.mark_read(&m.conversation_id).await {
                        eprintln!("{}", error_line(&e));
                    }
                }
            }
            Event::MessageUpdated(m) if m.outgoing => {
                if let Some(mark) = state_mark(&m.state) {
                    if marks.get(&m.id) != Some(&mark) {
                        println!("  {mark}: {}", shorten(&m.body.preview(), 30));
                        marks.insert(m.id, mark);
                    }
                }
            }
            Event::Typing { conversation_id, user, active: true } if user != me => {
                let name = conversation_name(&client, &conversation_id, &me).await;
                println!("[{name}] {user} is typing…");
            }
            Event::Lagged { missed } => println!("-- {missed} events missed; /list and /open show the current state"),
            _ => {}
        }
    }
}

async fn conversation_name(client: &Client, id: &str, me: &str) -> String {
    match client.conversation(id).await {
        Ok(Some(c)) => label(&c, me),
        _ => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conversation(title: &str, members: &[&str]) -> Conversation {
        Conversation {
            id: "c1".into(),
            kind: ConversationKind::Direct,
            title: title.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            last_message: None,
            unread_count: 0,
            draft: None,
            active: true,
        }
    }

    #[test]
    fn labels_prefer_the_title_then_the_other_member() {
        assert_eq!(label(&conversation("team", &["alice", "bob"]), "alice"), "team");
        assert_eq!(label(&conversation("", &["alice", "bob"]), "alice"), "bob");
        assert_eq!(label(&conversation("", &["alice"]), "alice"), "c1");
    }

    #[test]
    fn states_read_short() {
        let reconnecting = ConnectionState::Reconnecting { attempt: 3, next_in: Duration::from_millis(1200) };
        assert_eq!(state_line(&reconnecting), "-- reconnecting (attempt 3, in 1.2s)");
        assert_eq!(state_line(&ConnectionState::Connected), "-- connected");
        assert_eq!(state_mark(&MessageState::Sending), None);
        assert_eq!(state_mark(&MessageState::Delivered).as_deref(), Some("✓✓ delivered"));
        let failed = MessageState::Failed { reason: "too long".into(), retryable: false };
        assert_eq!(state_mark(&failed).as_deref(), Some("✗ failed: too long"));
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("héllo", 5), "héllo");
        assert_eq!(shorten("héllo wörld", 6), "héllo…");
        assert_eq!(shorten("a\nb", 5), "a b");
    }
}
