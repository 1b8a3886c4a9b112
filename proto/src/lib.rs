//! `missive-proto`: the Missive wire protocol.
//!
//! Owns the protobuf schema (`proto/missive.proto`, compiled at build time without a system
//! `protoc`), the named size limits, and the codec that turns WebSocket binary frames into
//! envelopes and back. The codec rejects oversize and malformed input with a typed
//! [`CodecError`]; [`validate`] checks the semantic rules the schema cannot express (UTF-8 of
//! text bodies, body sizes, id lengths).
//!
//! ```
//! use missive_proto::{codec, v1, PROTOCOL_VERSION};
//!
//! let frame = v1::ClientFrame {
//!     request_id: 1,
//!     request: Some(v1::client_frame::Request::Hello(v1::Hello {
//!         min_version: PROTOCOL_VERSION,
//!         max_version: PROTOCOL_VERSION,
//!         client: "doc-test".into(),
//!     })),
//! };
//! let bytes = codec::encode(&frame);
//! let back: v1::ClientFrame = codec::decode(&bytes).unwrap();
//! assert_eq!(back, frame);
//! ```

pub mod codec;
pub mod limits;
pub mod validate;

pub use codec::CodecError;
pub use limits::*;
pub use validate::ValidationError;

/// Generated protobuf types of package `missive.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/missive.v1.rs"));
}

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

impl v1::Error {
    /// Builds an error with its code's default retryability.
    pub fn new(code: v1::ErrorCode, message: impl Into<String>) -> Self {
        v1::Error {
            code: code as i32,
            message: message.into(),
            retryable: code.is_retryable(),
            retry_after_ms: 0,
        }
    }
}

impl v1::ErrorCode {
    /// Whether a request that failed with this code may succeed if sent again unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            v1::ErrorCode::RateLimited | v1::ErrorCode::Internal | v1::ErrorCode::Unavailable
        )
    }
}

impl std::fmt::Display for v1::Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code().as_str_name(), self.message)
    }
}

impl std::error::Error for v1::Error {}
