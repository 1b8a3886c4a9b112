//! Conversions between the model and the protobuf types of `missive-proto`. The store also keeps
//! bodies as encoded `MessageBody` blobs, so one schema serves the wire and the disk.

use missive_proto::v1;
use prost::Message as _;

use crate::model::{Body, Media};

fn media_to_proto(m: &Media) -> v1::Media {
    v1::Media {
        url: m.url.clone(),
        mime_type: m.mime_type.clone(),
        size_bytes: m.size_bytes,
        name: m.name.clone(),
        width: m.width,
        height: m.height,
        duration_ms: m.duration_ms,
        thumbnail: m.thumbnail.clone().into(),
        caption: m.caption.clone(),
    }
}

fn media_from_proto(m: v1::Media) -> Media {
    Media {
        url: m.url,
        mime_type: m.mime_type,
        size_bytes: m.size_bytes,
        name: m.name,
        width: m.width,
        height: m.height,
        duration_ms: m.duration_ms,
        thumbnail: m.thumbnail.to_vec(),
        caption: m.caption,
    }
}

pub fn body_to_proto(body: &Body) -> v1::MessageBody {
    use v1::message_body::Kind;
    let kind = match body {
        Body::Text(t) => Kind::Text(v1::Text { text: t.clone().into_bytes().into() }),
        Body::Image(m) => Kind::Image(media_to_proto(m)),
        Body::Video(m) => Kind::Video(media_to_proto(m)),
        Body::File(m) => Kind::File(media_to_proto(m)),
        Body::Custom { kind, payload, metadata } => Kind::Custom(v1::Custom {
            r#type: kind.clone(),
            payload: payload.clone().into(),
            metadata: metadata.clone().into_iter().collect(),
        }),
    };
    v1::MessageBody { kind: Some(kind) }
}

/// `None` for a body of a kind this version does not know, or text that is not UTF-8.
pub fn body_from_proto(body: v1::MessageBody) -> Option<Body> {
    use v1::message_body::Kind;
    Some(match body.kind? {
        Kind::Text(t) => Body::Text(String::from_utf8(t.text.to_vec()).ok()?),
        Kind::Image(m) => Body::Image(media_from_proto(m)),
        Kind::Video(m) => Body::Video(media_from_proto(m)),
        Kind::File(m) => Body::File(media_from_proto(m)),
        Kind::Custom(c) => Body::Custom { kind: c.r#type, payload: c.payload.to_vec(), metadata: c.metadata.into_iter().collect() },
    })
}

pub fn encode_body(body: &Body) -> Vec<u8> {
    body_to_proto(body).encode_to_vec()
}

/// Decodes a stored body; a damaged blob becomes an explicit placeholder, never a panic.
pub fn decode_body(bytes: &[u8]) -> Body {
    v1::MessageBody::decode(bytes)
        .ok()
        .and_then(body_from_proto)
        .unwrap_or_else(|| Body::Custom { kind: "missive.unreadable".into(), payload: bytes.to_vec(), metadata: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_damage_is_contained() {
        let bodies = [
            Body::Text("héllo".into()),
            Body::Image(Media { url: "u".into(), width: 3, ..Default::default() }),
            Body::Custom { kind: "poll".into(), payload: vec![1, 2], metadata: [("a".to_string(), "b".to_string())].into() },
        ];
        for b in bodies {
            assert_eq!(decode_body(&encode_body(&b)), b);
        }
        match decode_body(&[0xff, 0xff, 0xff]) {
            Body::Custom { kind, .. } => assert_eq!(kind, "missive.unreadable"),
            other => panic!("{other:?}"),
        }
    }
}
