//! The one error type of the SDK. Every error has a stable code (`Error::code`) and says whether
//! retrying the same call may succeed (`Error::is_retryable`).

/// An SDK error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The local database could not be opened or read (corrupt, not a database, newer schema).
    /// Nothing was deleted: the file is left as it was for inspection or recovery.
    #[error("local store at {path} is unusable: {message}")]
    CorruptStore { path: String, message: String },
    /// A local storage operation failed.
    #[error("local storage failure: {0}")]
    Storage(String),
    /// The server refused the credentials; the client stops reconnecting.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// There is no session: register or log in first.
    #[error("not logged in")]
    NotLoggedIn,
    /// The call needs a live connection and there is none now.
    #[error("offline")]
    Offline,
    /// The server refused the request.
    #[error("refused by the server ({code}): {message}")]
    Refused { code: String, message: String, retryable: bool },
    /// A network or protocol failure.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The call is not valid here.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The message is already on the wire or sent and can no longer be cancelled or edited.
    #[error("message {0} can no longer be changed")]
    NotChangeable(String),
    /// The client was shut down.
    #[error("client stopped")]
    Stopped,
}

impl Error {
    /// A stable, documented code for each kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::CorruptStore { .. } => "CORRUPT_STORE",
            Error::Storage(_) => "STORAGE",
            Error::AuthFailed(_) => "AUTH_FAILED",
            Error::NotLoggedIn => "NOT_LOGGED_IN",
            Error::Offline => "OFFLINE",
            Error::Refused { .. } => "REFUSED",
            Error::Transport(_) => "TRANSPORT",
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::NotChangeable(_) => "NOT_CHANGEABLE",
            Error::Stopped => "STOPPED",
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Offline | Error::Transport(_) | Error::Storage(_) => true,
            Error::Refused { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
