//! Frame codec: one protobuf envelope per WebSocket binary frame.

use prost::Message;

use crate::limits::MAX_FRAME_BYTES;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The bytes are not a valid protobuf envelope.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
}

/// Encodes an envelope into the bytes of one binary frame.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes one binary frame, refusing frames over [`MAX_FRAME_BYTES`] before parsing.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge { size: bytes.len(), max: MAX_FRAME_BYTES });
    }
    Ok(M::decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn round_trips_a_send() {
        let frame = v1::ClientFrame {
            request_id: 7,
            request: Some(v1::client_frame::Request::SendMessage(v1::SendMessage {
                client_id: "0190-abc".into(),
                conversation_id: 3,
                body: Some(v1::MessageBody {
                    kind: Some(v1::message_body::Kind::Text(v1::Text { text: "hi".into() })),
                }),
            })),
        };
        let back: v1::ClientFrame = decode(&encode(&frame)).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn refuses_oversize_before_parsing() {
        let bytes = vec![0u8; MAX_FRAME_BYTES + 1];
        match decode::<v1::ClientFrame>(&bytes) {
            Err(CodecError::TooLarge { size, max }) => {
                assert_eq!(size, MAX_FRAME_BYTES + 1);
                assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn refuses_garbage() {
        // Field 1 declared as a length-delimited value longer than the buffer.
        let err = decode::<v1::ClientFrame>(&[0x0a, 0xff, 0x01]).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    }

    #[test]
    fn invalid_utf8_in_a_string_field_is_malformed() {
        // Field 10 (hello), length 3, containing field 3 (client, string) with byte 0xff.
        let err = decode::<v1::ClientFrame>(&[0x52, 0x03, 0x1a, 0x01, 0xff]).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        // A request kind from a newer client (field 99) decodes with `request: None`.
        let mut bytes = encode(&v1::ClientFrame { request_id: 5, request: None });
        bytes.extend_from_slice(&[0x9a, 0x06, 0x00]); // field 99, length-delimited, empty
        let frame: v1::ClientFrame = decode(&bytes).unwrap();
        assert_eq!(frame.request_id, 5);
        assert!(frame.request.is_none());
    }
}
