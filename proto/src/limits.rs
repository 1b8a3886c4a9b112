//! Named protocol limits. The server enforces them and announces them in `HelloOk.limits`;
//! clients use them to refuse oversize input before it reaches the network.

/// Largest WebSocket message (one envelope), in bytes.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Largest message body payload (text bytes, custom payload, thumbnail), in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most members of a group conversation, the creator included.
pub const MAX_GROUP_MEMBERS: usize = 256;
/// Most events or messages in one sync or history page.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Longest client id (a UUID string is 36 characters).
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Longest username; usernames are 1..=64 characters of `[a-z0-9._-]`.
pub const MAX_USERNAME_LEN: usize = 64;
/// Shortest accepted password at registration.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest conversation title, custom type, device id or status text.
pub const MAX_SHORT_TEXT_LEN: usize = 256;
/// Most entries in a custom body's metadata map.
pub const MAX_METADATA_ENTRIES: usize = 64;
