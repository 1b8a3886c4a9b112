//! Groups this device learns of without having created them: invitations (live, from offline
//! storage or from the archive), the account's bookmarks (XEP-0402, see `bookmarks`), and the
//! room's name when an invitation carries no title.

use super::super::stanza::*;
use super::super::xml::Element;
use super::{Flow, Incoming, LinkTask, PendingIq, bookmarks, muc};
use crate::transport::*;

impl LinkTask {
    /// An invitation to a room (or a group found in the bookmarks: `bookmarked`): follow the
    /// room (its archive is read from its start), join it, keep it in the bookmarks, and tell
    /// the engine of the group.
    pub(super) async fn on_invitation(&mut self, room: String, title: String, inviter: String, bookmarked: bool) -> Flow {
        if !self.cursor.follow(&room) {
            return Ok(());
        }
        let untitled = title.is_empty();
        if !bookmarked {
            self.bookmark(&room, &title).await?;
        }
        let kind = self.invited(&room, title, inviter.clone());
        self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await?;
        self.join(&room).await?;
        if untitled {
            self.ask_room_name(room, inviter).await?;
        }
        Ok(())
    }

    /// Keeps a group in the account's bookmarks, for its other devices.
    pub(super) async fn bookmark(&mut self, room: &str, title: &str) -> Flow {
        if !self.bookmarks_node_created {
            self.bookmarks_node_created = true;
            let id = self.new_id("bm");
            self.iqs.insert(id.clone(), PendingIq::Bookmark);
            self.send(&bookmarks::create(&id)).await?;
        }
        let id = self.new_id("bm");
        self.iqs.insert(id.clone(), PendingIq::Bookmark);
        self.send(&bookmarks::publish(&id, room, title)).await
    }

    /// Takes a group we were removed from out of the bookmarks.
    pub(super) async fn unbookmark(&mut self, room: &str) -> Flow {
        let id = self.new_id("bm");
        self.iqs.insert(id.clone(), PendingIq::Bookmark);
        self.send(&bookmarks::retract(&id, room)).await
    }

    /// Asks a room for its name (XEP-0030: the identity's name, which is the title the group
    /// was configured with).
    pub(super) async fn ask_room_name(&mut self, room: String, inviter: String) -> Flow {
        let id = self.new_id("name");
        let stanza = iq("get", &id, Some(&room), Element::new("query", NS_DISCO_INFO));
        self.iqs.insert(id, PendingIq::RoomName { room, inviter });
        self.send(&stanza).await
    }

    /// A room's name came back: the group's title.
    pub(super) async fn on_room_name(&mut self, room: String, inviter: String, answer: &Element) -> Flow {
        let name = answer
            .get_child("query", NS_DISCO_INFO)
            .and_then(|q| q.elements().find(|c| c.is("identity", NS_DISCO_INFO) && c.get_attr("category") == Some("conference")))
            .and_then(|i| i.get_attr("name"))
            .filter(|n| !n.is_empty() && *n != bare(&room).split('@').next().unwrap_or(""))
            .map(str::to_owned);
        let Some(title) = name else { return Ok(()) };
        if !self.cursor.archives.contains_key(&room) {
            return Ok(());
        }
        self.bookmark(&room, &title).await?;
        let kind = self.invited(&room, title, inviter);
        self.emit(Incoming::Live(RemoteEvent { cursor: self.cursor.encode(), kind })).await
    }

    /// We are in the group `room` (invited by `inviter`, if known): the engine's event.
    pub(super) fn invited(&self, room: &str, title: String, inviter: String) -> RemoteEventKind {
        let members = [self.me.clone(), inviter].into_iter().filter(|m| !m.is_empty()).collect();
        RemoteEventKind::Membership { conversation: muc::group(room, title, members), added: vec![self.me.clone()], removed: Vec::new() }
    }
}
