//! Conversations (1:1, groups, chat rooms) and their members. A change to a 1:1 or group
//! conversation produces one `MembershipChange` event, stored once and referred to from the inbox
//! of every member concerned.

use missive_proto::MAX_GROUP_MEMBERS;
use missive_proto::v1::{self, ConversationKind, ErrorCode};
use rusqlite::{Connection, OptionalExtension, params};

use super::accounts::{UserId, user_ids};
use super::blocks;
use super::messages::{Delivery, PAGE_BYTES, append_shared_event, page_size};
use prost::Message as _;
use crate::error::{ApiError, ApiResult};

pub type ConversationId = i64;

const ROLE_MEMBER: i64 = 0;
const ROLE_OWNER: i64 = 1;

/// What a member's request needs to know about a conversation, read with the membership check.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    pub kind: ConversationKind,
    pub role: i64,
    /// The conversation's last sequence number.
    pub last_seq: i64,
}

/// The conversation as seen by its member `user`; `NotFound` if the conversation does not exist
/// or the user is not a member (one refusal for both, so that ids cannot be probed).
pub fn require_member(conn: &Connection, conv: ConversationId, user: UserId) -> ApiResult<Membership> {
    // One statement for both checks: this runs on every batch of sends.
    let found: Option<(i32, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT c.kind, c.last_seq, m.role FROM conversations c
             LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = ?2 WHERE c.id = ?1",
        )?
        .query_row([conv, user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (kind, last_seq, role) = found.ok_or_else(ApiError::no_such_conversation)?;
    let kind = ConversationKind::try_from(kind).map_err(|_| ApiError::no_such_conversation())?;
    let role = role.ok_or_else(ApiError::no_such_conversation)?;
    Ok(Membership { kind, role, last_seq })
}

fn kind_of(conn: &Connection, conv: ConversationId) -> ApiResult<Option<ConversationKind>> {
    let kind: Option<i32> =
        conn.prepare_cached("SELECT kind FROM conversations WHERE id = ?1")?.query_row([conv], |r| r.get(0)).optional()?;
    Ok(kind.and_then(|k| ConversationKind::try_from(k).ok()))
}

/// Member ids of a conversation.
pub fn member_ids(conn: &Connection, conv: ConversationId) -> ApiResult<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM members WHERE conversation_id = ?1")?;
    let ids = stmt.query_map([conv], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(ids)
}

/// A conversation as `viewer` sees it (members, and the viewer's own receipts).
pub fn snapshot(conn: &Connection, conv: ConversationId, viewer: UserId) -> ApiResult<v1::Conversation> {
    let mut c = conn
        .prepare_cached(
            "SELECT c.id, c.kind, c.title, c.last_seq, c.created_at_ms, u.name,
                    coalesce(m.delivered_seq, 0), coalesce(m.read_seq, 0)
             FROM conversations c JOIN users u ON u.id = c.created_by
             LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = ?2
             WHERE c.id = ?1",
        )?
        .query_row([conv, viewer], |r| {
            Ok(v1::Conversation {
                id: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                title: r.get(2)?,
                members: vec![],
                last_seq: r.get::<_, i64>(3)? as u64,
                delivered_seq: r.get::<_, i64>(6)? as u64,
                read_seq: r.get::<_, i64>(7)? as u64,
                created_at_ms: r.get(4)?,
                created_by: r.get(5)?,
            })
        })?;
    let mut stmt = conn.prepare_cached(
        "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = ?1 ORDER BY m.joined_at_ms, u.name",
    )?;
    c.members = stmt.query_map([conv], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(c)
}

/// A page of the conversations `user` is a member of, most recently created (highest id) first:
/// those with an id below `before` (0: from the newest), at most `limit` and as many as fit in
/// one frame (a conversation alone always fits: at most 256 members of 64-byte names).
pub fn list(conn: &Connection, user: UserId, before: u64, limit: u32) -> ApiResult<v1::ConversationList> {
    let limit = page_size(limit) as usize;
    let before = if before == 0 { i64::MAX } else { before as i64 };
    let ids: Vec<ConversationId> = conn
        .prepare_cached(
            "SELECT conversation_id FROM members WHERE user_id = ?1 AND conversation_id < ?2
             ORDER BY conversation_id DESC LIMIT ?3",
        )?
        .query_map(params![user, before, limit as i64 + 1], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut conversations = Vec::new();
    let mut bytes = 0;
    let mut has_more = ids.len() > limit;
    for &id in ids.iter().take(limit) {
        let c = snapshot(conn, id, user)?;
        bytes += c.encoded_len() + 8;
        if bytes > PAGE_BYTES && !conversations.is_empty() {
            has_more = true;
            break;
        }
        conversations.push(c);
    }
    let next_before_id = conversations.last().map_or(0, |c| c.id);
    Ok(v1::ConversationList { conversations, has_more, next_before_id })
}

fn insert_conversation(
    conn: &Connection,
    kind: ConversationKind,
    title: &str,
    by: UserId,
    direct_key: Option<&str>,
    now: i64,
) -> ApiResult<ConversationId> {
    conn.prepare_cached("INSERT INTO conversations (kind, title, created_by, created_at_ms, direct_key) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![kind as i32, title, by, now, direct_key])?;
    Ok(conn.last_insert_rowid())
}

/// `user` acted in conversation `conv` (created it, added members, sent a message): from now on
/// its presence reaches the other members (see [`contacts`]).
pub fn engage(conn: &Connection, conv: ConversationId, user: UserId) -> ApiResult<()> {
    conn.prepare_cached("UPDATE members SET engaged = 1 WHERE conversation_id = ?1 AND user_id = ?2 AND engaged = 0")?
        .execute([conv, user])?;
    Ok(())
}

fn insert_member(conn: &Connection, conv: ConversationId, user: UserId, role: i64, now: i64) -> ApiResult<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO members (conversation_id, user_id, role, joined_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![conv, user, role, now])?;
    Ok(n == 1)
}

/// Appends one membership change, stored once, to the inbox of each of `recipients`: the delta
/// (`added`, `removed`, `by`) and the conversation after it, members included (a member just
/// added learns the others from it). The snapshot is nobody's in particular: its receipts are 0,
/// which a client merges as "no news" (receipts never go backwards).
fn announce(
    conn: &Connection,
    conv: ConversationId,
    recipients: &[UserId],
    added: Vec<String>,
    removed: Vec<String>,
    by: &str,
) -> ApiResult<Vec<Delivery>> {
    const NOBODY: UserId = 0;
    let kind = v1::event::Kind::Membership(v1::MembershipChange {
        conversation: Some(snapshot(conn, conv, NOBODY)?),
        added,
        removed,
        by: by.to_owned(),
    });
    append_shared_event(conn, recipients, kind)
}

/// Finds or creates the 1:1 conversation between `me` and `peer`.
pub fn create_direct(conn: &Connection, me: UserId, me_name: &str, peer: &str, now: i64) -> ApiResult<(v1::Conversation, Vec<Delivery>)> {
    let peer_id = user_ids(conn, &[peer.to_owned()])?[0];
    if peer_id == me {
        return Err(ApiError::refuse(ErrorCode::InvalidArgument, "cannot open a 1:1 conversation with yourself"));
    }
    if blocks::has_blocked(conn, peer_id, me)? {
        return Err(blocks::refusal());
    }
    let key = format!("{}:{}", me.min(peer_id), me.max(peer_id));
    let existing: Option<ConversationId> =
        conn.prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?.query_row([&key], |r| r.get(0)).optional()?;
    if let Some(id) = existing {
        return Ok((snapshot(conn, id, me)?, vec![]));
    }
    let id = insert_conversation(conn, ConversationKind::Direct, "", me, Some(&key), now)?;
    insert_member(conn, id, me, ROLE_OWNER, now)?;
    engage(conn, id, me)?;
    insert_member(conn, id, peer_id, ROLE_OWNER, now)?;
    let deliveries = announce(conn, id, &[me, peer_id], vec![me_name.to_owned(), peer.to_owned()], vec![], me_name)?;
    Ok((snapshot(conn, id, me)?, deliveries))
}

fn dedup(names: &[String], without: &str) -> Vec<String> {
    let mut out: Vec<String> = names.iter().filter(|n| n.as_str() != without).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// Creates a group with `me` as owner.
pub fn create_group(
    conn: &Connection,
    me: UserId,
    me_name: &str,
    title: &str,
    members: &[String],
    now: i64,
) -> ApiResult<(v1::Conversation, Vec<Delivery>)> {
    let others = dedup(members, me_name);
    if others.len() + 1 > MAX_GROUP_MEMBERS {
        return Err(ApiError::refuse(ErrorCode::LimitExceeded, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    let ids = user_ids(conn, &others)?;
    blocks::check_none_blocked(conn, me, &ids)?;
    let id = insert_conversation(conn, ConversationKind::Group, title, me, None, now)?;
    insert_member(conn, id, me, ROLE_OWNER, now)?;
    engage(conn, id, me)?;
    for &user in &ids {
        insert_member(conn, id, user, ROLE_MEMBER, now)?;
    }
    let mut all = vec![me];
    all.extend(&ids);
    let mut added = vec![me_name.to_owned()];
    added.extend(others);
    let deliveries = announce(conn, id, &all, added, vec![], me_name)?;
    Ok((snapshot(conn, id, me)?, deliveries))
}

fn require_group(conn: &Connection, conv: ConversationId, me: UserId) -> ApiResult<i64> {
    let Membership { kind, role, .. } = require_member(conn, conv, me)?;
    if kind != ConversationKind::Group {
        return Err(ApiError::refuse(ErrorCode::InvalidArgument, "members can be changed only in groups"));
    }
    Ok(role)
}

/// Adds members to a group; any member may add.
pub fn add_members(
    conn: &Connection,
    me: UserId,
    me_name: &str,
    conv: ConversationId,
    names: &[String],
    now: i64,
) -> ApiResult<(v1::Conversation, Vec<Delivery>)> {
    require_group(conn, conv, me)?;
    let names = dedup(names, me_name);
    if names.len() + 1 > MAX_GROUP_MEMBERS {
        // More than could ever fit: refused before any name is looked up.
        return Err(ApiError::refuse(ErrorCode::LimitExceeded, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    let ids = user_ids(conn, &names)?;
    blocks::check_none_blocked(conn, me, &ids)?;
    engage(conn, conv, me)?;
    let mut added = vec![];
    for (user, name) in ids.into_iter().zip(names) {
        if insert_member(conn, conv, user, ROLE_MEMBER, now)? {
            added.push(name);
        }
    }
    let members = member_ids(conn, conv)?;
    if members.len() > MAX_GROUP_MEMBERS {
        return Err(ApiError::refuse(ErrorCode::LimitExceeded, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    let deliveries = if added.is_empty() { vec![] } else { announce(conn, conv, &members, added, vec![], me_name)? };
    Ok((snapshot(conn, conv, me)?, deliveries))
}

/// Removes members from a group: anyone may remove themselves, only the owner may remove others.
pub fn remove_members(
    conn: &Connection,
    me: UserId,
    me_name: &str,
    conv: ConversationId,
    names: &[String],
    _now: i64,
) -> ApiResult<(v1::Conversation, Vec<Delivery>)> {
    let role = require_group(conn, conv, me)?;
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    if role != ROLE_OWNER && names.iter().any(|n| n != me_name) {
        return Err(ApiError::refuse(ErrorCode::Forbidden, "only the owner can remove other members"));
    }
    let ids = user_ids(conn, &names)?;
    let before = member_ids(conn, conv)?;
    let mut removed = vec![];
    for (user, name) in ids.iter().zip(&names) {
        let n = conn.prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")?.execute([conv, *user])?;
        if n == 1 {
            removed.push(name.clone());
        }
    }
    // Everyone who was a member hears of it, the removed included.
    let deliveries = if removed.is_empty() { vec![] } else { announce(conn, conv, &before, vec![], removed, me_name)? };
    Ok((snapshot(conn, conv, me)?, deliveries))
}

/// Creates a chat room; the creator joins it.
pub fn create_room(conn: &Connection, me: UserId, title: &str, now: i64) -> ApiResult<v1::Conversation> {
    let id = insert_conversation(conn, ConversationKind::Room, title, me, None, now)?;
    insert_member(conn, id, me, ROLE_OWNER, now)?;
    snapshot(conn, id, me)
}

/// Joins a chat room (idempotent). Rooms are public to every authenticated user; any other id,
/// of a conversation or of nothing, gets the same `NotFound`.
pub fn join_room(conn: &Connection, me: UserId, conv: ConversationId, now: i64) -> ApiResult<v1::Conversation> {
    if kind_of(conn, conv)? != Some(ConversationKind::Room) {
        return Err(ApiError::refuse(ErrorCode::NotFound, "no such chat room"));
    }
    insert_member(conn, conv, me, ROLE_MEMBER, now)?;
    snapshot(conn, conv, me)
}

/// Leaves a chat room.
pub fn leave_room(conn: &Connection, me: UserId, conv: ConversationId) -> ApiResult<()> {
    if require_member(conn, conv, me)?.kind != ConversationKind::Room {
        return Err(ApiError::refuse(ErrorCode::InvalidArgument, "not a chat room"));
    }
    conn.prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2")?.execute([conv, me])?;
    Ok(())
}

/// The audience of `me`'s presence changes: users who share a 1:1 or group conversation in which
/// `me` has engaged (created it, added members, or sent a message: consent by acting, as a reply
/// approves a subscription in RFC 6121), less those `me` has blocked. Opening a 1:1 conversation
/// with someone, or adding them to a group, therefore shows the opener's presence to them, not
/// theirs to the opener, until they write back.
pub fn contacts(conn: &Connection, me: UserId) -> ApiResult<Vec<UserId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT m2.user_id FROM members m1
         JOIN conversations c ON c.id = m1.conversation_id
         JOIN members m2 ON m2.conversation_id = m1.conversation_id
         WHERE m1.user_id = ?1 AND m1.engaged = 1 AND c.kind != ?2 AND m2.user_id != ?1
           AND m2.user_id NOT IN (SELECT blocked_id FROM blocks WHERE user_id = ?1)",
    )?;
    let ids = stmt.query_map(params![me, ConversationKind::Room as i32], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(ids)
}
