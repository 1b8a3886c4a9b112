//! Entry points for the fuzz targets (`fuzz/`, cargo fuzz): every decoder that reads bytes from
//! the network or the disk, reachable from outside the crate without making the decoders public
//! API. Each must return (an error is fine) for any input, never panic or hang.

use crate::transport::xmpp;

/// One XMPP WebSocket frame as the link reads it: parse, then classify as a message stanza,
/// an archive result, a chat state and an error condition.
pub fn xmpp_frame(data: &[u8]) {
    xmpp::fuzz_frame(data);
}

/// A SCRAM server-first then server-final message, for both hashes.
pub fn scram(data: &[u8]) {
    xmpp::fuzz_scram(data);
}

/// Stored strings: the XMPP cursor and session token.
pub fn stored_strings(data: &[u8]) {
    xmpp::fuzz_stored(data);
}

/// A message body blob as kept in the store (protobuf).
pub fn body_blob(data: &[u8]) {
    let _ = crate::wire::decode_body(data);
}
