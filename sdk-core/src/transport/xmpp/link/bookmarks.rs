//! The groups of an account, kept as XEP-0402 bookmarks (PEP node `urn:xmpp:bookmarks:1`, one
//! item per room, private to the account). An invitation reaches one device, and not every
//! server archives it (Openfire's Monitoring plugin keeps only messages with a body, and
//! delivers an offline invitation to the first device that logs in): a device that never saw it
//! finds the group in the bookmarks at its sync. The SDK publishes a bookmark when it creates
//! or is invited to a group and retracts it when it learns it was removed. Stanzas only: the
//! link sends them and feeds the answers back.

use super::super::stanza::{NS_CLIENT, iq};
use super::super::xml::Element;

pub const NS_BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_DATA: &str = "jabber:x:data";

/// A group as bookmarked: the room and its title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    pub room: String,
    pub title: String,
}

/// Asks for every bookmark of the account.
pub fn fetch(id: &str) -> Element {
    iq("get", id, None, Element::new("pubsub", NS_PUBSUB).child(Element::new("items", NS_PUBSUB).attr("node", NS_BOOKMARKS)))
}

/// Creates the bookmarks node with the configuration XEP-0402 asks for: kept, room for every
/// group (1,000 items), never pushed as a last item, visible to the account only. Sent once per
/// stream before the first [`publish`]; a `conflict` answer means it exists already. (Rather
/// than publish options: Openfire 5.1 never answers a publish with options to a node that does
/// not exist yet, and refuses options that differ from an existing node's.)
pub fn create(id: &str) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", NS_DATA).attr("var", var).child(Element::new("value", NS_DATA).text(value))
    };
    let form = Element::new("x", NS_DATA)
        .attr("type", "submit")
        .child(field("FORM_TYPE", "http://jabber.org/protocol/pubsub#node_config"))
        .child(field("pubsub#persist_items", "true"))
        .child(field("pubsub#max_items", "1000"))
        .child(field("pubsub#send_last_published_item", "never"))
        .child(field("pubsub#access_model", "whitelist"));
    let pubsub = Element::new("pubsub", NS_PUBSUB)
        .child(Element::new("create", NS_PUBSUB).attr("node", NS_BOOKMARKS))
        .child(Element::new("configure", NS_PUBSUB).child(form));
    iq("set", id, None, pubsub)
}

/// Publishes (or replaces) the bookmark of `room` (the node's configuration, see [`create`],
/// keeps it private).
pub fn publish(id: &str, room: &str, title: &str) -> Element {
    let conference = Element::new("conference", NS_BOOKMARKS).attr("autojoin", "true").attr("name", title);
    let item = Element::new("item", NS_PUBSUB).attr("id", room).child(conference);
    iq("set", id, None, Element::new("pubsub", NS_PUBSUB).child(Element::new("publish", NS_PUBSUB).attr("node", NS_BOOKMARKS).child(item)))
}

/// Removes the bookmark of `room`.
pub fn retract(id: &str, room: &str) -> Element {
    let retract = Element::new("retract", NS_PUBSUB).attr("node", NS_BOOKMARKS).attr("notify", "true").child(Element::new("item", NS_PUBSUB).attr("id", room));
    iq("set", id, None, Element::new("pubsub", NS_PUBSUB).child(retract))
}

/// The groups in an answer to [`fetch`]: bookmarks of rooms on `muc_domain` to join
/// automatically (others are the user's own, from other clients: left alone). An error answer
/// (no bookmarks yet: `item-not-found`) holds none.
pub fn read(answer: &Element, muc_domain: &str) -> Vec<Bookmark> {
    if answer.get_attr("type") != Some("result") || !answer.is("iq", NS_CLIENT) {
        return Vec::new();
    }
    let Some(items) = answer.get_child("pubsub", NS_PUBSUB).and_then(|p| p.get_child("items", NS_PUBSUB)) else {
        return Vec::new();
    };
    items
        .elements()
        .filter(|i| i.is("item", NS_PUBSUB))
        .filter_map(|i| {
            let room = i.get_attr("id")?;
            let conference = i.get_child("conference", NS_BOOKMARKS)?;
            let autojoin = matches!(conference.get_attr("autojoin"), Some("true" | "1"));
            let on_our_service = room.split_once('@').is_some_and(|(node, domain)| !node.is_empty() && domain == muc_domain);
            (autojoin && on_our_service).then(|| Bookmark { room: room.to_owned(), title: conference.get_attr("name").unwrap_or("").to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_bookmark_reads_back_and_others_are_left_alone() {
        let published = publish("p1", "g1@conference.localhost", "Trip <&>");
        let xml = create("c1").to_xml();
        assert!(xml.contains("pubsub#access_model") && xml.contains("whitelist"), "{xml}");
        let item = published.get_child("pubsub", NS_PUBSUB).unwrap().get_child("publish", NS_PUBSUB).unwrap().get_child("item", NS_PUBSUB).unwrap();
        let answer = Element::parse(&format!(
            "<iq xmlns='jabber:client' type='result' id='f1'><pubsub xmlns='{NS_PUBSUB}'><items node='{NS_BOOKMARKS}'>{}\
             <item id='other@elsewhere.org'><conference xmlns='{NS_BOOKMARKS}' autojoin='true'/></item>\
             <item id='quiet@conference.localhost'><conference xmlns='{NS_BOOKMARKS}' autojoin='false'/></item>\
             <item id='@conference.localhost'><conference xmlns='{NS_BOOKMARKS}' autojoin='1'/></item>\
             </items></pubsub></iq>",
            item.to_xml()
        ))
        .unwrap();
        assert_eq!(read(&answer, "conference.localhost"), [Bookmark { room: "g1@conference.localhost".into(), title: "Trip <&>".into() }]);
        let none = Element::parse("<iq xmlns='jabber:client' type='error' id='f1'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>").unwrap();
        assert!(read(&none, "conference.localhost").is_empty());
        assert!(retract("r1", "g1@conference.localhost").to_xml().contains("g1@conference.localhost"));
    }
}
