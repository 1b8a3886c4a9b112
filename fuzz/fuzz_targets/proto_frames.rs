//! The native protocol: any bytes as a server frame and as a client frame (the envelope and
//! every message body inside, through the server's validation), then as a stored body blob.
#![no_main]
use libfuzzer_sys::fuzz_target;
use missive_proto::{codec, v1, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = codec::decode::<v1::ServerFrame>(data) {
        let _ = codec::encode(&frame);
    }
    if let Ok(frame) = codec::decode::<v1::ClientFrame>(data) {
        if let Some(v1::client_frame::Request::SendMessage(m)) = &frame.request {
            let _ = validate::body(m.body.as_ref());
            let _ = validate::client_id(&m.client_id);
        }
        if let Some(v1::client_frame::Request::Register(r)) = &frame.request {
            let _ = validate::username(&r.username);
        }
    }
    missive::fuzzing::body_blob(data);
});
