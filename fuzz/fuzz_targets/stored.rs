//! Strings the SDK stores and reads back: the XMPP cursor (must round-trip), session tokens,
//! credentials, archive timestamps.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| missive::fuzzing::stored_strings(data));
