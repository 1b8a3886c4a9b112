//! The one error type of the bindings: a stable code, a message and whether a retry can help.
//! Kotlin sees `MissiveException.Failed`, Swift `MissiveError.failed`.

/// Stable error codes (the core's `Error::code`, plus `Internal` for a caught panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ErrorCode {
    CorruptStore,
    Storage,
    AuthFailed,
    NotLoggedIn,
    Offline,
    Refused,
    Transport,
    InvalidArgument,
    NotFound,
    NotChangeable,
    Stopped,
    /// A bug inside the SDK (a panic, caught at the boundary).
    Internal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum MissiveError {
    /// `detail` is the human-readable text (named so because Kotlin exceptions own `message`).
    #[error("{code:?}: {detail}")]
    Failed { code: ErrorCode, detail: String, retryable: bool },
}

impl MissiveError {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        MissiveError::Failed { code: ErrorCode::Internal, detail: message.into(), retryable: false }
    }
}

impl From<missive::Error> for MissiveError {
    fn from(e: missive::Error) -> Self {
        use missive::Error as E;
        let code = match &e {
            E::CorruptStore { .. } => ErrorCode::CorruptStore,
            E::Storage(_) => ErrorCode::Storage,
            E::AuthFailed(_) => ErrorCode::AuthFailed,
            E::NotLoggedIn => ErrorCode::NotLoggedIn,
            E::Offline => ErrorCode::Offline,
            E::Refused { .. } => ErrorCode::Refused,
            E::Transport(_) => ErrorCode::Transport,
            E::InvalidArgument(_) => ErrorCode::InvalidArgument,
            E::NotFound(_) => ErrorCode::NotFound,
            E::NotChangeable(_) => ErrorCode::NotChangeable,
            E::Stopped => ErrorCode::Stopped,
        };
        MissiveError::Failed { code, retryable: e.is_retryable(), detail: e.to_string() }
    }
}
