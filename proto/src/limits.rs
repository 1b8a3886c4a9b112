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

/// WebSocket close codes the server uses, with the reason text it sends alongside.
pub mod close {
    /// Logout or an orderly close.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The first request was not `Hello`, or the peer broke the protocol repeatedly.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: the protocol uses binary frames only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame over `MAX_FRAME_BYTES`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal server failure.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// No successful authentication within the allowed time.
    pub const AUTH_TIMEOUT: u16 = 4001;
    /// No frame (not even a ping) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The peer kept sending past its rate limit.
    pub const FLOOD: u16 = 4003;
    /// The peer does not read fast enough: its outbound queue is full.
    pub const SLOW_CONSUMER: u16 = 4004;
    /// Too many failed logins on one connection.
    pub const TOO_MANY_FAILURES: u16 = 4005;
    /// The session's token was revoked (a logout elsewhere): authenticate again; resuming with
    /// the same token will be refused.
    pub const SESSION_REVOKED: u16 = 4006;
}
