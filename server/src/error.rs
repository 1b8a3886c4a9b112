//! The server's error type: a refusal sent to the client as a wire `Error`, or a storage failure
//! that is logged and reported as a retryable `INTERNAL` error (its details never reach clients).

use missive_proto::v1::{self, ErrorCode};

#[derive(Debug)]
pub enum ApiError {
    /// A refusal with a stable code, sent to the client as is.
    Refused(v1::Error),
    /// A storage failure.
    Storage(rusqlite::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Refused(v1::Error::new(code, message))
    }

    /// The one refusal for a conversation that does not exist and for one the requester is not
    /// a member of: telling them apart would let anyone probe which ids exist.
    pub fn no_such_conversation() -> Self {
        Self::refuse(ErrorCode::NotFound, "no such conversation")
    }

    pub fn into_wire(self) -> v1::Error {
        match self {
            ApiError::Refused(e) => e,
            ApiError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                v1::Error::new(ErrorCode::Internal, "storage failure")
            }
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Storage(e)
    }
}

impl From<missive_proto::ValidationError> for ApiError {
    fn from(e: missive_proto::ValidationError) -> Self {
        ApiError::Refused(e.into())
    }
}
