//! One XMPP WebSocket frame through the parser and every stanza reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| missive::fuzzing::xmpp_frame(data));
