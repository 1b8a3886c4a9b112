//! Block lists. A user who blocks another stops that other user from opening a 1:1 conversation
//! with them or sending in the one they have, from adding them to groups, and from seeing their
//! presence. Blocking changes nothing else: shared groups stay shared, past messages stay.

use missive_proto::v1::ErrorCode;
use missive_proto::validate;
use rusqlite::{Connection, OptionalExtension, params};

use super::accounts::{UserId, user_ids};
use super::conversations::ConversationId;
use crate::error::{ApiError, ApiResult};

/// The refusal of what a block forbids. It names no one: the requester learns that this user
/// does not accept it, as it would from the user.
pub fn refusal() -> ApiError {
    ApiError::refuse(ErrorCode::Forbidden, "this user does not accept that from you")
}

fn other(conn: &Connection, me: UserId, name: &str) -> ApiResult<UserId> {
    validate::username(name)?;
    let id = user_ids(conn, &[name.to_owned()])?[0];
    if id == me {
        return Err(ApiError::refuse(ErrorCode::InvalidArgument, "cannot block yourself"));
    }
    Ok(id)
}

/// `me` blocks `name` (idempotent).
pub fn block(conn: &Connection, me: UserId, name: &str) -> ApiResult<()> {
    let id = other(conn, me, name)?;
    conn.prepare_cached("INSERT INTO blocks (user_id, blocked_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?.execute([me, id])?;
    Ok(())
}

/// `me` unblocks `name` (idempotent).
pub fn unblock(conn: &Connection, me: UserId, name: &str) -> ApiResult<()> {
    let id = other(conn, me, name)?;
    conn.prepare_cached("DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2")?.execute([me, id])?;
    Ok(())
}

/// Whether `owner` has blocked `other`.
pub fn has_blocked(conn: &Connection, owner: UserId, other: UserId) -> ApiResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_id = ?2")?
        .query_row([owner, other], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Refuses if any of `users` has blocked `actor` (who wants to add them to a group).
pub fn check_none_blocked(conn: &Connection, actor: UserId, users: &[UserId]) -> ApiResult<()> {
    for &user in users {
        if has_blocked(conn, user, actor)? {
            return Err(refusal());
        }
    }
    Ok(())
}

/// Whether another member of conversation `conv` has blocked `me`.
pub fn blocked_in(conn: &Connection, conv: ConversationId, me: UserId) -> ApiResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM members m JOIN blocks b ON b.user_id = m.user_id AND b.blocked_id = ?2
             WHERE m.conversation_id = ?1 LIMIT 1",
        )?
        .query_row(params![conv, me], |_| Ok(()))
        .optional()?
        .is_some())
}
