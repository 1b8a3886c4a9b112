//! Groups and chat rooms over XEP-0045 (MUC), for the link task.
//!
//! A group is a persistent, members-only, non-anonymous room with its own archive (MUC MAM).
//! Creating one takes several round trips (join, configure, affiliate, invite), run here as a
//! small state machine driven by the server's answers. Members are told by a mediated
//! invitation, which lands in their own archive, so they learn of the group at their next sync
//! even if they were offline; the group's title travels as the invitation's reason (or, where a server
//! drops the reason, as Openfire does, as the room's name, asked for by disco#info). Every
//! occupant joins with its bare JID as nickname, so senders are recognisable in the archive.
//!
//! A chat room is an open, persistent room whose messages are live only (not synced), as with
//! the native transport.

use super::*;

const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DATA: &str = "jabber:x:data";
/// Occupants whose real JIDs are remembered at most (a huge room must not grow this forever).
const MAX_OCCUPANTS_NOTED: usize = 10_000;

/// What a pending room operation does next.
pub(super) enum MucStep {
    /// Waiting for our own presence in the room.
    Join,
    /// Waiting for the configuration form to be accepted.
    Configure,
    /// Waiting for the affiliation change to be accepted.
    Affiliate,
}

pub(super) enum MucGoal {
    CreateGroup { members: Vec<String>, reply: Reply<RemoteConversation> },
    CreateRoom { reply: Reply<RemoteConversation> },
    JoinRoom { reply: Reply<RemoteConversation> },
    AddMembers { members: Vec<String>, reply: Reply<RemoteConversation> },
    RemoveMembers { members: Vec<String>, reply: Reply<RemoteConversation> },
}

pub(super) struct MucTask {
    pub room: String,
    pub title: String,
    pub goal: MucGoal,
    pub step: MucStep,
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", NS_DATA).attr("var", var).child(Element::new("value", NS_DATA).text(value))
}

fn refused(code: &str, message: String) -> TransportError {
    TransportError::Refused { code: code.into(), message, retryable: false }
}

impl MucGoal {
    fn fail(self, error: TransportError) {
        match self {
            MucGoal::CreateGroup { reply, .. }
            | MucGoal::CreateRoom { reply }
            | MucGoal::JoinRoom { reply }
            | MucGoal::AddMembers { reply, .. }
            | MucGoal::RemoveMembers { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

impl LinkTask {
    fn new_room_jid(&self, prefix: &str) -> String {
        format!("{prefix}{}@{}", uuid::Uuid::now_v7().simple(), self.config.muc_domain)
    }

    fn members_jids(&self, members: Vec<String>) -> Vec<String> {
        members.into_iter().map(|m| to_bare_jid(&m, &self.config.domain)).collect()
    }

    pub(super) async fn on_muc_request(&mut self, request: Request) -> Flow {
        match request {
            Request::CreateGroup { title, members, reply } => {
                let room = self.new_room_jid("g");
                let members = self.members_jids(members);
                self.start_muc(MucTask { room, title, goal: MucGoal::CreateGroup { members, reply }, step: MucStep::Join }).await
            }
            Request::CreateRoom { title, reply } => {
                let room = self.new_room_jid("r");
                self.start_muc(MucTask { room, title, goal: MucGoal::CreateRoom { reply }, step: MucStep::Join }).await
            }
            Request::JoinRoom { conversation, reply } => {
                self.joined.remove(&conversation);
                let task = MucTask { room: conversation, title: String::new(), goal: MucGoal::JoinRoom { reply }, step: MucStep::Join };
                self.start_muc(task).await
            }
            Request::LeaveRoom { conversation, reply } => {
                self.rooms.remove(&conversation);
                self.joined.remove(&conversation);
                let to = format!("{conversation}/{}", self.me);
                self.send(&Element::new("presence", NS_CLIENT).attr("to", to).attr("type", "unavailable")).await?;
                let _ = reply.send(Ok(()));
                Ok(())
            }
            Request::AddMembers { conversation, members, reply } => {
                let members = self.members_jids(members);
                let task = MucTask {
                    room: conversation,
                    title: String::new(),
                    goal: MucGoal::AddMembers { members, reply },
                    step: MucStep::Affiliate,
                };
                self.affiliate(task).await
            }
            Request::RemoveMembers { conversation, members, reply } => {
                let members = self.members_jids(members);
                let task = MucTask {
                    room: conversation,
                    title: String::new(),
                    goal: MucGoal::RemoveMembers { members, reply },
                    step: MucStep::Affiliate,
                };
                self.affiliate(task).await
            }
            other => {
                other.fail(refused("UNSUPPORTED", "not a room request".into()));
                Ok(())
            }
        }
    }

    async fn start_muc(&mut self, task: MucTask) -> Flow {
        let room = task.room.clone();
        self.muc_tasks.insert(room.clone(), task);
        self.joined.remove(&room);
        self.join(&room).await
    }

    /// A room refused one of our messages. `not-acceptable` means we are not (or no longer) in
    /// it, e.g. after the server restarted the room: join again, and the outbox sends the
    /// message again after the join. Anything else is a refusal for good.
    pub(super) async fn on_room_bounce(&mut self, room: String, client_id: String, condition: String) -> Flow {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.remove(&client_id);
        let retryable = condition == "not-acceptable";
        if retryable {
            self.joined.remove(&room);
            self.join(&room).await?;
        }
        self.emit(Incoming::Refused { client_id, code: "ROOM_REFUSED".into(), message: format!("{room}: {condition}"), retryable }).await
    }

    /// The real JID behind an occupant's nickname (`room/nick`), as the room's presence revealed
    /// it; the nickname itself when the room keeps it hidden.
    pub(super) fn occupant(&self, room: &str, sender: String) -> String {
        match self.occupants.get(&format!("{room}/{sender}")) {
            Some(jid) => jid.clone(),
            None => sender,
        }
    }

    /// Notes who is behind a nickname: a non-anonymous room tells every occupant in the
    /// occupant's presence (`<item jid='…'/>`).
    fn note_occupant(&mut self, e: &Element, from: &str) {
        if e.get_attr("type") == Some("unavailable") {
            self.occupants.remove(from);
            return;
        }
        let jid = e.get_child("x", NS_MUC_USER).and_then(|x| x.get_child("item", NS_MUC_USER)).and_then(|i| i.get_attr("jid"));
        if let Some(jid) = jid {
            if self.occupants.len() < MAX_OCCUPANTS_NOTED || self.occupants.contains_key(from) {
                self.occupants.insert(from.to_owned(), bare(jid).to_owned());
            }
        }
    }

    /// Our own presence in a room (status 110), or an error joining it.
    pub(super) async fn on_room_presence(&mut self, e: &Element) -> Flow {
        let from = e.get_attr("from").unwrap_or("");
        if e.get_attr("type") != Some("error") && resource(from).is_some() {
            self.note_occupant(e, from);
        }
        let room = bare(from).to_owned();
        if e.get_attr("type") == Some("error") {
            if let Some(task) = self.muc_tasks.remove(&room) {
                let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
                self.joined.remove(&room);
                task.goal.fail(refused(
                    if condition == "item-not-found" { "NOT_FOUND" } else { "FORBIDDEN" },
                    format!("joining {room}: {condition}"),
                ));
            } else if self.cursor.archives.contains_key(&room) {
                // A group we follow refuses us as a member (removed while this device was away,
                // and a sync followed it again from an old invitation or a bookmark): leave it.
                let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
                if condition == "registration-required" || condition == "forbidden" {
                    tracing::debug!(%room, %condition, "a group refuses us: leaving it");
                    return self.left_group(room).await;
                }
            }
            return Ok(());
        }
        let statuses: Vec<&str> = e
            .get_child("x", NS_MUC_USER)
            .map(|x| x.elements().filter(|s| s.name == "status").filter_map(|s| s.get_attr("code")).collect())
            .unwrap_or_default();
        let own = statuses.contains(&"110") || resource(from) == Some(self.me.as_str());
        if !own {
            return Ok(());
        }
        if e.get_attr("type") == Some("unavailable") {
            self.joined.remove(&room);
            // Removed from a group (321: affiliation change, 301: banned, 322: members only) or
            // the room destroyed. Otherwise (332: the server shuts down, 307: kicked, 333: a
            // technical problem) we are only out of the room, and join it again on the next link
            // or when a message bounces.
            let removed = ["301", "321", "322"].iter().any(|code| statuses.contains(code))
                || e.get_child("x", NS_MUC_USER).is_some_and(|x| x.get_child("destroy", NS_MUC_USER).is_some());
            if removed && self.cursor.archives.remove(&room).is_some() {
                self.unbookmark(&room).await?;
                let kind = RemoteEventKind::Membership {
                    conversation: group(&room, String::new(), Vec::new()),
                    added: Vec::new(),
                    removed: vec![self.me.clone()],
                };
                self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await?;
            }
            return Ok(());
        }
        let Some(task) = self.muc_tasks.remove(&room) else {
            // In a group we follow, the join is confirmed: read its archive now. A message the
            // room handled before our join reached no live copy to us, and a read made before
            // the join (at the invitation, at sync) may have come too early to see it.
            if self.cursor.archives.contains_key(&room) {
                // In as no member (ejabberd lets a removed member join again; the sync followed
                // the group from an old invitation or bookmark): it is not our group any more.
                let affiliation = e.get_child("x", NS_MUC_USER).and_then(|x| x.get_child("item", NS_MUC_USER)).and_then(|i| i.get_attr("affiliation"));
                if matches!(affiliation, Some("none" | "outcast")) {
                    tracing::debug!(%room, "in a group as no member: leaving it");
                    self.send(&Element::new("presence", NS_CLIENT).attr("to", from).attr("type", "unavailable")).await?;
                    return self.left_group(room).await;
                }
                return self.read_archive(room, false).await;
            }
            return Ok(());
        };
        match task.goal {
            MucGoal::JoinRoom { reply } => {
                self.rooms.insert(room.clone());
                let _ = reply.send(Ok(chat_room(&room, task.title, &self.me)));
                Ok(())
            }
            _ => self.configure(task).await,
        }
    }

    /// We are no member of a group we followed: stop following it, take it out of the
    /// bookmarks, and tell the engine.
    async fn left_group(&mut self, room: String) -> Flow {
        self.joined.remove(&room);
        if self.cursor.archives.remove(&room).is_none() {
            return Ok(());
        }
        self.unbookmark(&room).await?;
        let kind = RemoteEventKind::Membership { conversation: group(&room, String::new(), Vec::new()), added: Vec::new(), removed: vec![self.me.clone()] };
        self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await
    }

    async fn configure(&mut self, mut task: MucTask) -> Flow {
        let group = matches!(task.goal, MucGoal::CreateGroup { .. });
        let form = Element::new("x", NS_DATA)
            .attr("type", "submit")
            .child(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"))
            .child(field("muc#roomconfig_roomname", &task.title))
            .child(field("muc#roomconfig_persistentroom", "1"))
            .child(field("muc#roomconfig_membersonly", if group { "1" } else { "0" }))
            .child(field("muc#roomconfig_publicroom", if group { "0" } else { "1" }))
            .child(field("muc#roomconfig_whois", "anyone"));
        let id = self.new_id("muc");
        let room = task.room.clone();
        task.step = MucStep::Configure;
        self.iqs.insert(id.clone(), PendingIq::Muc(room.clone()));
        self.muc_tasks.insert(room.clone(), task);
        self.send(&iq("set", &id, Some(&room), Element::new("query", NS_MUC_OWNER).child(form))).await
    }

    async fn affiliate(&mut self, mut task: MucTask) -> Flow {
        let (members, affiliation) = match &task.goal {
            MucGoal::CreateGroup { members, .. } | MucGoal::AddMembers { members, .. } => (members.clone(), "member"),
            MucGoal::RemoveMembers { members, .. } => (members.clone(), "none"),
            _ => (Vec::new(), "member"),
        };
        if members.is_empty() {
            return self.finish_muc(task).await;
        }
        let mut query = Element::new("query", NS_MUC_ADMIN);
        for m in &members {
            query = query.child(Element::new("item", NS_MUC_ADMIN).attr("affiliation", affiliation).attr("jid", m));
        }
        let id = self.new_id("muc");
        let room = task.room.clone();
        task.step = MucStep::Affiliate;
        self.iqs.insert(id.clone(), PendingIq::Muc(room.clone()));
        self.muc_tasks.insert(room.clone(), task);
        self.send(&iq("set", &id, Some(&room), query)).await
    }

    /// The answer to a configuration or affiliation request.
    pub(super) async fn on_muc_iq(&mut self, room: &str, e: &Element) -> Flow {
        let Some(task) = self.muc_tasks.remove(room) else { return Ok(()) };
        if e.get_attr("type") != Some("result") {
            let condition = e.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
            let code = match condition.as_str() {
                "forbidden" | "not-allowed" => "FORBIDDEN",
                "item-not-found" => "NOT_FOUND",
                _ => "REFUSED",
            };
            task.goal.fail(refused(code, format!("{room}: {condition}")));
            return Ok(());
        }
        match task.step {
            MucStep::Configure => self.affiliate(task).await,
            _ => self.finish_muc(task).await,
        }
    }

    async fn finish_muc(&mut self, task: MucTask) -> Flow {
        let room = task.room;
        match task.goal {
            MucGoal::CreateRoom { reply } => {
                self.rooms.insert(room.clone());
                let _ = reply.send(Ok(chat_room(&room, task.title, &self.me)));
            }
            MucGoal::CreateGroup { members, reply } => {
                self.invite(&room, &task.title, &members).await?;
                self.cursor.follow(&room);
                self.bookmark(&room, &task.title).await?;
                let mut all = vec![self.me.clone()];
                all.extend(members);
                let conversation = group(&room, task.title, all);
                let _ = reply.send(Ok(conversation.clone()));
                // The cursor now follows the group's archive: commit it with the membership.
                let kind = RemoteEventKind::Membership { conversation, added: Vec::new(), removed: Vec::new() };
                self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await?;
            }
            MucGoal::AddMembers { members, reply } => {
                self.invite(&room, &task.title, &members).await?;
                let mut all = vec![self.me.clone()];
                all.extend(members);
                let _ = reply.send(Ok(group(&room, task.title, all)));
            }
            MucGoal::RemoveMembers { reply, .. } => {
                let _ = reply.send(Ok(group(&room, task.title, vec![self.me.clone()])));
            }
            MucGoal::JoinRoom { reply } => {
                let _ = reply.send(Ok(chat_room(&room, task.title, &self.me)));
            }
        }
        Ok(())
    }

    async fn invite(&mut self, room: &str, title: &str, members: &[String]) -> Flow {
        for m in members {
            let invite = Element::new("invite", NS_MUC_USER).attr("to", m).child(Element::new("reason", NS_MUC_USER).text(title));
            self.send(&Element::new("message", NS_CLIENT).attr("to", room).child(Element::new("x", NS_MUC_USER).child(invite))).await?;
        }
        Ok(())
    }
}

impl LinkTask {
    /// A message in a chat room: live only, handed over as it comes.
    pub(super) async fn on_chat_room_message(&mut self, e: &Element, room: String) -> Flow {
        match classify(e, Some(&room), &self.me) {
            Archived::Message { conversation, sender, client_id, stable_client_id, reply_id, body, receipts } => {
                let sender = self.occupant(&room, sender);
                let server_id = e
                    .elements()
                    .find(|s| s.is("stanza-id", NS_SID) && s.get_attr("by") == Some(room.as_str()))
                    .and_then(|s| s.get_attr("id"))
                    .map_or_else(|| format!("{room}/{client_id}"), str::to_owned);
                let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
                // Live only, so the order of arrival is the order.
                self.room_seq = now_us.max(self.room_seq + 1);
                let m = RemoteMessage {
                    server_id,
                    conversation,
                    seq: self.room_seq,
                    sender,
                    client_id,
                    stable_client_id,
                    reply_id,
                    body,
                    server_time_ms: (now_us / 1000) as i64,
                    receipts,
                };
                self.emit(Incoming::RoomMessage(m)).await
            }
            Archived::Nothing => match read_chat_state(e) {
                Some(active) => {
                    let user = resource(e.get_attr("from").unwrap_or("")).unwrap_or("").to_owned();
                    if user.is_empty() || user == self.me {
                        return Ok(());
                    }
                    self.emit(Incoming::Typing { conversation: room, user, active }).await
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

pub(super) fn group(room: &str, title: String, members: Vec<String>) -> RemoteConversation {
    RemoteConversation { id: room.to_owned(), kind: ConversationKind::Group, title, members, last_seq: 0, read_seq: 0 }
}

fn chat_room(room: &str, title: String, me: &str) -> RemoteConversation {
    RemoteConversation { id: room.to_owned(), kind: ConversationKind::Room, title, members: vec![me.to_owned()], last_seq: 0, read_seq: 0 }
}
