//! SCRAM with a hostile server: server-first, newline, server-final.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| missive::fuzzing::scram(data));
