//! Users, tokens and devices.

use missive_proto::v1::ErrorCode;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{ApiError, ApiResult};

pub type UserId = i64;

/// Creates a user; `UsernameTaken` when the name exists.
pub fn create_user(conn: &Connection, name: &str, password_hash: &str, now: i64) -> ApiResult<UserId> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO users (name, password_hash, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, password_hash, now])?;
    if inserted == 0 {
        return Err(ApiError::refuse(ErrorCode::UsernameTaken, "username is taken"));
    }
    Ok(conn.last_insert_rowid())
}

/// The id and password hash of a user, if it exists.
pub fn credentials(conn: &Connection, name: &str) -> ApiResult<Option<(UserId, String)>> {
    Ok(conn
        .prepare_cached("SELECT id, password_hash FROM users WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Resolves user names to ids; `NotFound` names the first unknown one.
pub fn user_ids(conn: &Connection, names: &[String]) -> ApiResult<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM users WHERE name = ?1")?;
    names
        .iter()
        .map(|name| {
            stmt.query_row([name], |r| r.get(0))
                .optional()?
                .ok_or_else(|| ApiError::refuse(ErrorCode::NotFound, format!("no user named {name:?}")))
        })
        .collect()
}

/// Stores a token (by its hash) and records the device.
pub fn insert_token(
    conn: &Connection,
    user: UserId,
    device: &str,
    token_hash: &[u8; 32],
    now: i64,
    expires_at: i64,
) -> ApiResult<()> {
    conn.prepare_cached(
        "INSERT INTO tokens (token_hash, user_id, device_id, created_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![&token_hash[..], user, device, now, expires_at])?;
    touch_device(conn, user, device, now)
}

pub fn touch_device(conn: &Connection, user: UserId, device: &str, now: i64) -> ApiResult<()> {
    conn.prepare_cached(
        "INSERT INTO devices (user_id, device_id, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
    )?
    .execute(params![user, device, now])?;
    Ok(())
}

/// The user a token belongs to: `TokenInvalid` if unknown or revoked, `TokenExpired` if expired.
pub fn check_token(conn: &Connection, token_hash: &[u8; 32], now: i64) -> ApiResult<(UserId, String, i64)> {
    let row: Option<(UserId, String, i64, bool)> = conn
        .prepare_cached(
            "SELECT t.user_id, u.name, t.expires_at_ms, t.revoked
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1",
        )?
        .query_row([&token_hash[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    match row {
        None | Some((_, _, _, true)) => Err(ApiError::refuse(ErrorCode::TokenInvalid, "token is unknown or revoked")),
        Some((_, _, expires, _)) if expires <= now => {
            Err(ApiError::refuse(ErrorCode::TokenExpired, "token has expired; log in again"))
        }
        Some((user, name, expires, false)) => Ok((user, name, expires)),
    }
}

pub fn revoke_token(conn: &Connection, token_hash: &[u8; 32]) -> ApiResult<()> {
    conn.prepare_cached("UPDATE tokens SET revoked = 1 WHERE token_hash = ?1")?.execute([&token_hash[..]])?;
    Ok(())
}

/// Revokes every token of a user.
pub fn revoke_all_tokens(conn: &Connection, user: UserId) -> ApiResult<()> {
    conn.prepare_cached("UPDATE tokens SET revoked = 1 WHERE user_id = ?1 AND revoked = 0")?.execute([user])?;
    Ok(())
}

/// The newest cursor of a user's inbox.
pub fn latest_cursor(conn: &Connection, user: UserId) -> ApiResult<u64> {
    Ok(conn
        .prepare_cached("SELECT last_cursor FROM users WHERE id = ?1")?
        .query_row([user], |r| r.get::<_, i64>(0))? as u64)
}

/// Records a device's cumulative cursor acknowledgement (never moves backwards).
pub fn ack_cursor(conn: &Connection, user: UserId, device: &str, cursor: u64, now: i64) -> ApiResult<()> {
    if cursor > latest_cursor(conn, user)? {
        return Err(ApiError::refuse(ErrorCode::InvalidArgument, "cursor is beyond the newest event"));
    }
    conn.prepare_cached(
        "INSERT INTO devices (user_id, device_id, acked_cursor, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE
         SET acked_cursor = max(acked_cursor, excluded.acked_cursor), last_seen_ms = excluded.last_seen_ms",
    )?
    .execute(params![user, device, cursor as i64, now])?;
    Ok(())
}
