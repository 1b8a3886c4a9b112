//! Semantic validation of what the schema cannot express: UTF-8 text, sizes, ids.

use crate::limits::*;
use crate::v1::{self, message_body::Kind};

/// A request field that breaks a protocol rule. `code()` maps it to the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("message body has no known kind")]
    UnknownKind,
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("{what} is {size} bytes, over the limit of {max}")]
    TooLarge { what: &'static str, size: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
}

impl ValidationError {
    /// The wire error code for this failure.
    pub fn code(&self) -> v1::ErrorCode {
        match self {
            ValidationError::UnknownKind => v1::ErrorCode::UnsupportedKind,
            ValidationError::InvalidUtf8 => v1::ErrorCode::InvalidUtf8,
            ValidationError::TooLarge { .. } => v1::ErrorCode::TooLarge,
            ValidationError::Invalid(_) => v1::ErrorCode::InvalidArgument,
        }
    }
}

impl From<ValidationError> for v1::Error {
    fn from(e: ValidationError) -> Self {
        v1::Error::new(e.code(), e.to_string())
    }
}

fn check_len(what: &'static str, size: usize, max: usize) -> Result<(), ValidationError> {
    if size > max { Err(ValidationError::TooLarge { what, size, max }) } else { Ok(()) }
}

/// Checks a message body: a known kind, UTF-8 text, sizes within [`MAX_BODY_BYTES`].
pub fn body(body: Option<&v1::MessageBody>) -> Result<(), ValidationError> {
    let kind = body.and_then(|b| b.kind.as_ref()).ok_or(ValidationError::UnknownKind)?;
    match kind {
        Kind::Text(t) => {
            check_len("text", t.text.len(), MAX_BODY_BYTES)?;
            if t.text.is_empty() {
                return Err(ValidationError::Invalid("text is empty".into()));
            }
            std::str::from_utf8(&t.text).map_err(|_| ValidationError::InvalidUtf8)?;
        }
        Kind::Image(m) | Kind::Video(m) | Kind::File(m) => {
            if m.url.is_empty() {
                return Err(ValidationError::Invalid("media url is empty".into()));
            }
            check_len("media url", m.url.len(), MAX_BODY_BYTES)?;
            check_len("thumbnail", m.thumbnail.len(), MAX_BODY_BYTES)?;
            check_len("caption", m.caption.len(), MAX_BODY_BYTES)?;
            check_len("media name", m.name.len(), MAX_SHORT_TEXT_LEN)?;
            check_len("mime type", m.mime_type.len(), MAX_SHORT_TEXT_LEN)?;
        }
        Kind::Custom(c) => {
            if c.r#type.is_empty() {
                return Err(ValidationError::Invalid("custom type is empty".into()));
            }
            check_len("custom type", c.r#type.len(), MAX_SHORT_TEXT_LEN)?;
            check_len("custom payload", c.payload.len(), MAX_BODY_BYTES)?;
            check_len("metadata entries", c.metadata.len(), MAX_METADATA_ENTRIES)?;
            let meta: usize = c.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
            check_len("metadata", meta, MAX_BODY_BYTES)?;
        }
    }
    Ok(())
}

/// Checks a client id: 1..=[`MAX_CLIENT_ID_LEN`] printable ASCII characters.
pub fn client_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::Invalid(format!(
            "client id must be 1..={MAX_CLIENT_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Checks a username: 1..=[`MAX_USERNAME_LEN`] characters of `[a-z0-9._-]`.
pub fn username(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Invalid(format!(
            "username must be 1..={MAX_USERNAME_LEN} characters of a-z, 0-9, '.', '_' or '-'"
        )))
    }
}

/// Checks a short free text (title, device id, status).
pub fn short_text(what: &'static str, text: &str) -> Result<(), ValidationError> {
    check_len(what, text.len(), MAX_SHORT_TEXT_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> v1::MessageBody {
        v1::MessageBody { kind: Some(Kind::Text(v1::Text { text: bytes.to_vec().into() })) }
    }

    #[test]
    fn text_rules() {
        assert_eq!(body(Some(&text("héllo".as_bytes()))), Ok(()));
        assert_eq!(body(Some(&text(&[0x68, 0xff]))), Err(ValidationError::InvalidUtf8));
        assert!(matches!(body(Some(&text(b""))), Err(ValidationError::Invalid(_))));
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        assert!(matches!(body(Some(&text(&big))), Err(ValidationError::TooLarge { .. })));
    }

    #[test]
    fn missing_kind_is_unknown() {
        assert_eq!(body(None), Err(ValidationError::UnknownKind));
        assert_eq!(body(Some(&v1::MessageBody { kind: None })), Err(ValidationError::UnknownKind));
        assert_eq!(ValidationError::UnknownKind.code(), v1::ErrorCode::UnsupportedKind);
    }

    #[test]
    fn ids_and_names() {
        assert!(client_id("0191a3b0-7c1e-7000-8000-000000000001").is_ok());
        assert!(client_id("").is_err());
        assert!(client_id("has space").is_err());
        assert!(client_id(&"x".repeat(MAX_CLIENT_ID_LEN + 1)).is_err());
        assert!(username("alice.b-1_x").is_ok());
        assert!(username("Alice").is_err());
        assert!(username("").is_err());
        assert!(username("a/b").is_err());
    }
}
