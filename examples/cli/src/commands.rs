//! The prompt language: turns one input line into an [`Input`] (a command, text to send, or
//! nothing). Pure, no I/O: every command and its bad input is unit-tested here.

/// Messages shown by `/open` and by `/history` without a count.
pub const DEFAULT_PAGE: u32 = 20;
/// The largest page `/history N` accepts (the server's page limit).
pub const MAX_PAGE: u32 = 500;

pub const HELP: &str = "\
commands:
  /help                  this help
  /list                  conversations, unread counts and last messages
  /open ID|TITLE         make it current, mark it read, show the last 20 messages
  /dm USER               open or create the 1:1 with USER and make it current
  /group TITLE USER...   create a group (quote a TITLE with spaces: \"our team\")
  /room TITLE            create a chat room
  /join ID               join a chat room
  /leave ID              leave a chat room
  /history [N]           N older messages of the current conversation (default 20)
  /who                   members of the current conversation
  /state                 connection state
  /quit                  leave (also at end of input)
anything else is sent to the current conversation; start with // to send a leading /";

/// What one line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A blank line.
    Empty,
    /// Text to send to the current conversation.
    Text(String),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    List,
    Open(String),
    Dm(String),
    Group { title: String, members: Vec<String> },
    Room(String),
    Join(String),
    Leave(String),
    History(u32),
    Who,
    State,
    Quit,
}

/// Parses one line. The error is a message for the user (usually the command's usage).
pub fn parse(line: &str) -> Result<Input, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Input::Empty);
    }
    if let Some(escaped) = line.strip_prefix("//") {
        return Ok(Input::Text(format!("/{escaped}")));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Text(line.to_owned()));
    };
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = split_args(args)?;
    let usage = |u: &str| Err(format!("usage: {u}"));
    let command = match (name.to_ascii_lowercase().as_str(), args.as_slice()) {
        ("help" | "h" | "?", []) => Command::Help,
        ("list" | "ls", []) => Command::List,
        ("open", words) if !words.is_empty() => Command::Open(words.join(" ")), // a title may have spaces
        ("open", _) => return usage("/open ID"),
        ("dm", [user]) => Command::Dm(user.clone()),
        ("dm", _) => return usage("/dm USER"),
        ("group", [title, members @ ..]) if !members.is_empty() => {
            Command::Group { title: title.clone(), members: members.to_vec() }
        }
        ("group", _) => return usage("/group TITLE USER..."),
        ("room", words) if !words.is_empty() => Command::Room(words.join(" ")),
        ("room", _) => return usage("/room TITLE"),
        ("join", [id]) => Command::Join(id.clone()),
        ("join", _) => return usage("/join ID"),
        ("leave", [id]) => Command::Leave(id.clone()),
        ("leave", _) => return usage("/leave ID"),
        ("history", []) => Command::History(DEFAULT_PAGE),
        ("history", [n]) => match n.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Command::History(n),
            _ => return Err(format!("usage: /history [N] with N from 1 to {MAX_PAGE}")),
        },
        ("history", _) => return usage("/history [N]"),
        ("who", []) => Command::Who,
        ("state", []) => Command::State,
        ("quit" | "exit" | "q", []) => Command::Quit,
        ("help" | "h" | "?" | "list" | "ls" | "who" | "state" | "quit" | "exit" | "q", _) => {
            return Err(format!("/{name} takes no arguments"));
        }
        ("", _) => return Err("empty command (try /help)".into()),
        _ => return Err(format!("unknown command /{name} (try /help)")),
    };
    Ok(Input::Command(command))
}

/// Splits on whitespace; a double-quoted part is one argument (`"our team"`).
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut quoted = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                quoted.push(c);
            }
            if !closed {
                return Err("unterminated quote".into());
            }
            if quoted.trim().is_empty() {
                return Err("empty quoted argument".into());
            }
            args.push(quoted);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            args.push(word);
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line) {
            Ok(Input::Command(c)) => c,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        parse(line).expect_err(line)
    }

    #[test]
    fn text_and_blank_lines() {
        assert_eq!(parse(""), Ok(Input::Empty));
        assert_eq!(parse("   \r"), Ok(Input::Empty));
        assert_eq!(parse("hello there \r"), Ok(Input::Text("hello there".into())));
        assert_eq!(parse("//slash at start"), Ok(Input::Text("/slash at start".into())));
        assert_eq!(parse("a /dm in the middle"), Ok(Input::Text("a /dm in the middle".into())));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(cmd("/help"), Command::Help);
        assert_eq!(cmd("/list"), Command::List);
        assert_eq!(cmd("  /LIST  "), Command::List);
        assert_eq!(cmd("/who"), Command::Who);
        assert_eq!(cmd("/state"), Command::State);
        assert_eq!(cmd("/quit"), Command::Quit);
        assert_eq!(cmd("/exit"), Command::Quit);
        assert!(err("/quit now").contains("no arguments"));
        assert!(err("/list all").contains("no arguments"));
    }

    #[test]
    fn commands_with_one_id() {
        assert_eq!(cmd("/open c-42"), Command::Open("c-42".into()));
        assert_eq!(cmd("/open our  team"), Command::Open("our team".into()));
        assert_eq!(cmd("/open \"our  team\""), Command::Open("our  team".into()));
        assert_eq!(cmd("/dm bob"), Command::Dm("bob".into()));
        assert_eq!(cmd("/join r1"), Command::Join("r1".into()));
        assert_eq!(cmd("/leave r1"), Command::Leave("r1".into()));
        assert_eq!(err("/open"), "usage: /open ID");
        assert_eq!(err("/dm"), "usage: /dm USER");
        assert_eq!(err("/dm bob carol"), "usage: /dm USER");
        assert_eq!(err("/join"), "usage: /join ID");
        assert_eq!(err("/leave a b"), "usage: /leave ID");
    }

    #[test]
    fn group_and_room_titles() {
        let group = |title: &str, members: &[&str]| Command::Group {
            title: title.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        assert_eq!(cmd("/group team bob carol"), group("team", &["bob", "carol"]));
        assert_eq!(cmd("/group \"our team\" bob"), group("our team", &["bob"]));
        assert_eq!(err("/group team"), "usage: /group TITLE USER...");
        assert_eq!(err("/group"), "usage: /group TITLE USER...");
        assert_eq!(err("/group \"our team bob"), "unterminated quote");
        assert_eq!(err("/group \"\" bob"), "empty quoted argument");
        assert_eq!(cmd("/room lobby"), Command::Room("lobby".into()));
        assert_eq!(cmd("/room rust   talk"), Command::Room("rust talk".into()));
        assert_eq!(cmd("/room \"rust talk\""), Command::Room("rust talk".into()));
        assert_eq!(err("/room"), "usage: /room TITLE");
    }

    #[test]
    fn history_counts() {
        assert_eq!(cmd("/history"), Command::History(DEFAULT_PAGE));
        assert_eq!(cmd("/history 5"), Command::History(5));
        assert_eq!(cmd("/history 500"), Command::History(500));
        for bad in ["/history 0", "/history -3", "/history ten", "/history 501"] {
            assert!(err(bad).starts_with("usage: /history"), "{bad}");
        }
        assert_eq!(err("/history 5 6"), "usage: /history [N]");
    }

    #[test]
    fn unknown_and_empty_commands() {
        assert_eq!(err("/frobnicate"), "unknown command /frobnicate (try /help)");
        assert_eq!(err("/"), "empty command (try /help)");
        assert_eq!(err("/ bob"), "empty command (try /help)");
    }
}
