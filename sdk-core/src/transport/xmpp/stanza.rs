//! Stanzas: building what the SDK sends and reading what archives and servers send back. Pure.
//!
//! Message bodies: text travels as `<body>`; any other body (image, video, file, custom) as a
//! `<body>` fallback text that any XMPP client shows, plus the SDK's protobuf body in a
//! `<payload xmlns='urn:missive:body:1'>` element that Missive clients decode.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message as _;

use super::xml::Element;
use crate::model::{Body, ReceiptKind};
use crate::transport::ReceiptRequest;
use crate::wire::{body_from_proto, body_to_proto};

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_SM: &str = "urn:xmpp:sm:3";
pub const NS_REGISTER: &str = "jabber:iq:register";
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_PAYLOAD: &str = "urn:missive:body:1";

/// `user@domain/resource` → `user@domain`.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

/// The resource part, if any.
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

pub fn domain(jid: &str) -> &str {
    let b = bare(jid);
    b.split_once('@').map_or(b, |(_, d)| d)
}

/// A username becomes a bare JID on `domain` unless it already is one.
pub fn to_bare_jid(user: &str, domain: &str) -> String {
    if user.contains('@') { user.to_owned() } else { format!("{user}@{domain}") }
}

pub fn open(domain: &str) -> Element {
    Element::new("open", NS_FRAMING).attr("to", domain).attr("version", "1.0")
}

pub fn close() -> Element {
    Element::new("close", NS_FRAMING)
}

pub fn iq(kind: &str, id: &str, to: Option<&str>, payload: Element) -> Element {
    let mut e = Element::new("iq", NS_CLIENT).attr("type", kind).attr("id", id);
    if let Some(to) = to {
        e.set_attr("to", to);
    }
    e.child(payload)
}

/// The elements carrying a body: `<body>` and, for anything but text, the SDK's payload.
pub fn body_elements(body: &Body) -> Vec<Element> {
    match body {
        Body::Text(t) => vec![Element::new("body", NS_CLIENT).text(t.clone())],
        other => vec![
            Element::new("body", NS_CLIENT).text(other.preview()),
            Element::new("payload", NS_PAYLOAD).text(B64.encode(body_to_proto(other).encode_to_vec())),
        ],
    }
}

/// The body of a message: the SDK payload when present and readable, else the `<body>` text.
pub fn read_body(message: &Element) -> Option<Body> {
    if let Some(p) = message.get_child("payload", NS_PAYLOAD) {
        let decoded = B64
            .decode(p.text_content().trim())
            .ok()
            .and_then(|bytes| missive_proto::v1::MessageBody::decode(bytes.as_slice()).ok())
            .and_then(body_from_proto);
        if decoded.is_some() {
            return decoded;
        }
    }
    message.get_child("body", NS_CLIENT).map(|b| Body::Text(b.text_content()))
}

/// A chat or group message carrying `client_id` as both its id and its XEP-0359 origin-id.
pub fn message(to: &str, groupchat: bool, client_id: &str, body: &Body) -> Element {
    let mut m =
        Element::new("message", NS_CLIENT).attr("to", to).attr("type", if groupchat { "groupchat" } else { "chat" }).attr("id", client_id);
    for e in body_elements(body) {
        m = m.child(e);
    }
    m = m.child(Element::new("origin-id", NS_SID).attr("id", client_id)).child(Element::new("markable", NS_MARKERS));
    if !groupchat {
        m = m.child(Element::new("request", NS_RECEIPTS));
    }
    m
}

/// A XEP-0333 marker (`received` or `displayed`) for the message `id`.
pub fn marker(to: &str, groupchat: bool, kind: ReceiptKind, id: &str) -> Element {
    let name = match kind {
        ReceiptKind::Delivered => "received",
        ReceiptKind::Read => "displayed",
    };
    Element::new("message", NS_CLIENT)
        .attr("to", to)
        .attr("type", if groupchat { "groupchat" } else { "chat" })
        .attr("id", uuid::Uuid::now_v7().to_string())
        .child(Element::new(name, NS_MARKERS).attr("id", id))
        .child(Element::new("store", NS_HINTS))
}

/// A XEP-0184 receipt for the message `id` of `to`. `archived`: kept in the archives (so that
/// the sender learns of it even if offline now, and our other devices that it is sent:
/// ejabberd keeps bodiless messages only when asked); else only delivered, live or from
/// offline storage (XEP-0334 `no-permanent-store`). Of a batch, only the newest is archived:
/// receipts are cumulative to the SDK, and one archive entry per message received would halve
/// what an archive of bounded size holds.
pub fn delivery_receipt(to: &str, id: &str, archived: bool) -> Element {
    let hint = if archived { "store" } else { "no-permanent-store" };
    Element::new("message", NS_CLIENT)
        .attr("to", to)
        .attr("type", "chat")
        .attr("id", uuid::Uuid::now_v7().to_string())
        .child(Element::new("received", NS_RECEIPTS).attr("id", id))
        .child(Element::new(hint, NS_HINTS))
}

/// A XEP-0085 chat state, never archived.
pub fn chat_state(to: &str, groupchat: bool, active: bool) -> Element {
    Element::new("message", NS_CLIENT)
        .attr("to", to)
        .attr("type", if groupchat { "groupchat" } else { "chat" })
        .child(Element::new(if active { "composing" } else { "paused" }, NS_CHATSTATES))
        .child(Element::new("no-store", NS_HINTS))
}

/// The XEP-0313 data form filtering a query: one field per `(name, value)` given.
fn mam_filter(fields: &[(&str, Option<&str>)]) -> Element {
    const DATA: &str = "jabber:x:data";
    let field = |var: &str, value: &str| Element::new("field", DATA).attr("var", var).child(Element::new("value", DATA).text(value));
    let form = Element::new("x", DATA).attr("type", "submit").child(field("FORM_TYPE", NS_MAM).attr("type", "hidden"));
    fields.iter().filter_map(|(name, value)| value.map(|v| field(name, v))).fold(form, Element::child)
}

/// A XEP-0313 query for up to `max` entries after `after` (from the start when `None`), archived
/// at or after `start` (an XEP-0082 time) when given, oldest first.
pub fn mam_query(id: &str, query_id: &str, archive: Option<&str>, after: Option<&str>, start: Option<&str>, max: u32) -> Element {
    let mut set = Element::new("set", NS_RSM).child(Element::new("max", NS_RSM).text(max.to_string()));
    if let Some(after) = after {
        set = set.child(Element::new("after", NS_RSM).text(after));
    }
    let mut query = Element::new("query", NS_MAM).attr("queryid", query_id);
    if start.is_some() {
        query = query.child(mam_filter(&[("start", start)]));
    }
    iq("set", id, archive, query.child(set))
}

/// A XEP-0313 query for the newest `max` entries, with `with` (a 1:1 peer), archived at or
/// before `end` (an XEP-0082 time), and before the archive id `before`, each when given.
pub fn mam_query_newest(
    id: &str,
    query_id: &str,
    archive: Option<&str>,
    with: Option<&str>,
    end: Option<&str>,
    before: Option<&str>,
    max: u32,
) -> Element {
    let form = mam_filter(&[("with", with), ("end", end)]);
    let before = match before {
        Some(id) => Element::new("before", NS_RSM).text(id),
        None => Element::new("before", NS_RSM),
    };
    let set = Element::new("set", NS_RSM).child(Element::new("max", NS_RSM).text(max.to_string())).child(before);
    iq("set", id, archive, Element::new("query", NS_MAM).attr("queryid", query_id).child(form).child(set))
}

/// One entry of an archive, read from a `<result>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEntry {
    pub archive_id: String,
    pub stamp_us: u64,
    pub what: Archived,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Archived {
    Message {
        conversation: String,
        sender: String,
        client_id: String,
        /// `client_id` is an XEP-0359 origin-id, stable for the message.
        stable_client_id: bool,
        /// The stanza id, when it is not `client_id`.
        reply_id: Option<String>,
        body: Body,
        receipts: ReceiptRequest,
    },
    /// A marker or receipt from `user` about message `id`.
    Receipt {
        conversation: String,
        user: String,
        kind: ReceiptKind,
        id: String,
    },
    /// An invitation into a group, with its title (the invitation's reason) and who sent it.
    Invite {
        room: String,
        title: String,
        inviter: String,
    },
    /// Anything else (errors, states, unknown extensions): read past.
    Nothing,
}

/// Reads a MAM `<result>` (the child of the wrapping `<message>`); `archive` is the room JID for
/// a room archive, `None` for the account's own. `None` if it is not a well-formed result.
pub fn read_archived(result: &Element, archive: Option<&str>, me: &str) -> Option<ArchivedEntry> {
    let archive_id = result.get_attr("id")?.to_owned();
    let forwarded = result.get_child("forwarded", NS_FORWARD)?;
    let stamp_us = super::archive::parse_stamp(forwarded.get_child("delay", NS_DELAY)?.get_attr("stamp")?)?;
    let inner = forwarded.get_child("message", NS_CLIENT)?;
    Some(ArchivedEntry { archive_id, stamp_us, what: classify(inner, archive, me) })
}

/// Who sent a room message: the real JID the room reveals (a non-anonymous room adds
/// `<x xmlns='…muc#user'><item jid='…'/></x>` to what it archives; the last one is the room's,
/// appended after anything the sender put there), else the occupant's nickname (the SDK joins
/// with its bare JID as nickname, so its own members are recognised either way).
fn room_sender(m: &Element, from: &str) -> String {
    let revealed = m
        .elements()
        .filter(|x| x.is("x", NS_MUC_USER))
        .filter_map(|x| x.get_child("item", NS_MUC_USER)?.get_attr("jid"))
        .last()
        .map(|jid| bare(jid).to_owned());
    revealed.unwrap_or_else(|| resource(from).unwrap_or("").to_owned())
}

/// What a message stanza means to the SDK. For a room message `room` is the room's JID and the
/// sender is the occupant's real JID when the room reveals it, else its nickname.
pub fn classify(m: &Element, room: Option<&str>, me: &str) -> Archived {
    if m.get_attr("type") == Some("error") {
        return Archived::Nothing;
    }
    let from = m.get_attr("from").unwrap_or(me);
    let (conversation, sender) = match room {
        Some(room) => (room.to_owned(), room_sender(m, from)),
        None => {
            let sender = bare(from).to_owned();
            let peer = if sender == me { m.get_attr("to").map(bare).unwrap_or("").to_owned() } else { sender.clone() };
            (peer, sender)
        }
    };
    if conversation.is_empty() {
        return Archived::Nothing;
    }
    if let Some(invite) = m.get_child("x", NS_MUC_USER).and_then(|x| x.get_child("invite", NS_MUC_USER)) {
        // Ours to a room (archived as sent) is not an invitation to us.
        if bare(from) == me || invite.get_attr("to").is_some() {
            return Archived::Nothing;
        }
        return Archived::Invite {
            room: bare(from).to_owned(),
            title: invite.get_child("reason", NS_MUC_USER).map(Element::text_content).unwrap_or_default(),
            inviter: invite.get_attr("from").map(bare).unwrap_or("").to_owned(),
        };
    }
    // XEP-0249 direct invitation (ejabberd sends one beside the mediated one).
    if let Some(x) = m.get_child("x", "jabber:x:conference") {
        if let Some(room) = x.get_attr("jid").filter(|_| bare(from) != me) {
            return Archived::Invite {
                room: bare(room).to_owned(),
                title: x.get_attr("reason").unwrap_or("").to_owned(),
                inviter: bare(from).to_owned(),
            };
        }
        return Archived::Nothing;
    }
    if let Some(body) = read_body(m) {
        // The origin-id (XEP-0359) is the sender's stable id for the message: it recognises
        // resends. The stanza id is what receipts and markers echo (XEP-0184, XEP-0333); unique
        // or not, it names no message for good (the archive id does).
        let origin_id = m.get_child("origin-id", NS_SID).and_then(|o| o.get_attr("id")).filter(|id| !id.is_empty());
        let stanza_id = m.get_attr("id");
        let client_id = origin_id.or(stanza_id);
        let reply_id = stanza_id.filter(|id| Some(*id) != client_id).map(str::to_owned);
        let groupchat = m.get_attr("type") == Some("groupchat");
        let receipts = ReceiptRequest {
            // A receipt echoes the message's id; none is sent in a room (XEP-0184 §5.3).
            delivery: m.get_child("request", NS_RECEIPTS).is_some() && stanza_id.is_some() && !groupchat,
            markers: m.get_child("markable", NS_MARKERS).is_some(),
        };
        return Archived::Message {
            conversation,
            sender,
            client_id: client_id.unwrap_or("").to_owned(),
            stable_client_id: origin_id.is_some(),
            reply_id,
            body,
            receipts,
        };
    }
    for (name, ns, kind) in [
        ("displayed", NS_MARKERS, ReceiptKind::Read),
        ("received", NS_MARKERS, ReceiptKind::Delivered),
        ("received", NS_RECEIPTS, ReceiptKind::Delivered),
    ] {
        if let Some(id) = m.get_child(name, ns).and_then(|e| e.get_attr("id")) {
            return Archived::Receipt { conversation, user: sender, kind, id: id.to_owned() };
        }
    }
    Archived::Nothing
}

/// A chat state in a live message: `Some(active)`.
pub fn read_chat_state(m: &Element) -> Option<bool> {
    m.elements().find(|e| e.ns == NS_CHATSTATES).map(|e| e.name == "composing")
}

/// The condition of a stanza or stream error (`not-authorized`, `conflict`, ...).
pub fn error_condition(error: &Element) -> String {
    error.elements().find(|e| e.name != "text").map_or_else(|| "undefined-condition".to_owned(), |e| e.name.clone())
}

/// The human text of an error, if any.
pub fn error_text(error: &Element) -> String {
    error.elements().find(|e| e.name == "text").map(Element::text_content).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Media;

    const ME: &str = "bob@localhost";

    #[test]
    fn reads_a_prosody_archive_result() {
        // From shared/reference/xmpp/prosody-13.0.1.txt, scenario 5.
        let frame = r#"<message xmlns='jabber:client' to='bob@localhost/raw'><result queryid='q1' xmlns='urn:xmpp:mam:2' id='06b08e15-399d-705c-ac2a-eb9b2ea85c50'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2026-11-27T01:48:03.600808Z'/><message id='raw-1' to='bob@localhost' from='alice@localhost/raw' xmlns='jabber:client' xml:lang='en' type='chat'><body>hello bob (raw RFC7395)</body><request xmlns='urn:xmpp:receipts'/></message></forwarded></result></message>"#;
        let e = Element::parse(frame).unwrap();
        let entry = read_archived(e.get_child("result", NS_MAM).unwrap(), None, ME).unwrap();
        assert_eq!(entry.archive_id, "06b08e15-399d-705c-ac2a-eb9b2ea85c50");
        assert_eq!(entry.stamp_us, 1_795_744_083_600_808);
        assert_eq!(
            entry.what,
            Archived::Message {
                conversation: "alice@localhost".into(),
                sender: "alice@localhost".into(),
                client_id: "raw-1".into(),
                stable_client_id: false,
                reply_id: None,
                body: Body::Text("hello bob (raw RFC7395)".into()),
                receipts: ReceiptRequest { delivery: true, markers: false },
            }
        );
    }

    #[test]
    fn own_messages_belong_to_the_peer_conversation_and_bounces_are_skipped() {
        let own = Element::parse("<message xmlns='jabber:client' to='alice@localhost' type='chat' id='x'><body>hi</body><origin-id xmlns='urn:xmpp:sid:0' id='c1'/></message>").unwrap();
        assert_eq!(
            classify(&own, None, ME),
            Archived::Message {
                conversation: "alice@localhost".into(),
                sender: ME.into(),
                client_id: "c1".into(),
                stable_client_id: true,
                reply_id: Some("x".into()),
                body: Body::Text("hi".into()),
                receipts: ReceiptRequest { delivery: false, markers: false },
            }
        );
        let bounce =
            Element::parse("<message xmlns='jabber:client' type='error' from='alice@localhost'><body>hi</body></message>").unwrap();
        assert_eq!(classify(&bounce, None, ME), Archived::Nothing);
        let marker = Element::parse(
            "<message xmlns='jabber:client' from='alice@localhost/x'><displayed xmlns='urn:xmpp:chat-markers:0' id='c1'/></message>",
        )
        .unwrap();
        assert_eq!(
            classify(&marker, None, ME),
            Archived::Receipt {
                conversation: "alice@localhost".into(),
                user: "alice@localhost".into(),
                kind: ReceiptKind::Read,
                id: "c1".into()
            }
        );
        let room = Element::parse(
            "<message xmlns='jabber:client' type='groupchat' from='g@conference.localhost/alice@localhost'><body>yo</body></message>",
        )
        .unwrap();
        assert!(
            matches!(classify(&room, Some("g@conference.localhost"), ME), Archived::Message { sender, .. } if sender == "alice@localhost")
        );
    }

    /// The origin-id is a message's stable id; the stanza id, what receipts echo, is kept apart
    /// when it differs; a receipt is owed only when asked for, with an id to echo, outside rooms.
    #[test]
    fn ids_and_receipt_requests_follow_the_xeps() {
        let parse = |xml: &str| classify(&Element::parse(xml).unwrap(), None, ME);
        let from_alice = parse("<message xmlns='jabber:client' from='alice@localhost/x' id='s1' type='chat'><body>a</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>");
        assert!(
            matches!(&from_alice, Archived::Message { client_id, stable_client_id: true, reply_id: Some(r), receipts: ReceiptRequest { delivery: true, markers: true }, .. } if client_id == "o1" && r == "s1"),
            "{from_alice:?}"
        );
        let stanza_id_only = parse("<message xmlns='jabber:client' from='alice@localhost/x' id='1' type='chat'><body>a</body></message>");
        assert!(matches!(&stanza_id_only, Archived::Message { client_id, stable_client_id: false, reply_id: None, .. } if client_id == "1"), "{stanza_id_only:?}");
        let no_id = parse("<message xmlns='jabber:client' from='alice@localhost/x' type='chat'><body>a</body><request xmlns='urn:xmpp:receipts'/></message>");
        assert!(matches!(&no_id, Archived::Message { client_id, receipts: ReceiptRequest { delivery: false, markers: false }, .. } if client_id.is_empty()), "{no_id:?}");
        let in_room = classify(
            &Element::parse("<message xmlns='jabber:client' from='g@conference.localhost/al' id='s2' type='groupchat'><body>a</body><request xmlns='urn:xmpp:receipts'/></message>").unwrap(),
            Some("g@conference.localhost"),
            ME,
        );
        assert!(matches!(&in_room, Archived::Message { receipts: ReceiptRequest { delivery: false, .. }, .. }), "{in_room:?}");
    }

    /// A non-anonymous room reveals its occupants' real JIDs in what it archives: the sender is
    /// the real JID, not the nickname; the room's own item (appended last) wins over one the
    /// sender slipped into its message.
    #[test]
    fn room_senders_are_real_jids_when_the_room_reveals_them() {
        let room = Some("g@conference.localhost");
        let revealed = Element::parse("<message xmlns='jabber:client' from='g@conference.localhost/bob' type='groupchat' id='1'><body>hi</body><x xmlns='http://jabber.org/protocol/muc#user'><item jid='mallory@localhost/x'/></x><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant' jid='bob@localhost'/></x></message>").unwrap();
        assert!(matches!(classify(&revealed, room, ME), Archived::Message { sender, .. } if sender == "bob@localhost"));
        let anonymous = Element::parse("<message xmlns='jabber:client' from='g@conference.localhost/bob' type='groupchat' id='1'><body>hi</body></message>").unwrap();
        assert!(matches!(classify(&anonymous, room, ME), Archived::Message { sender, .. } if sender == "bob"));
    }

    #[test]
    fn invitations_to_us_are_read_and_ours_to_others_skipped() {
        let invite = Element::parse("<message xmlns='jabber:client' from='g@conference.localhost' to='bob@localhost'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@localhost/phone'><reason>trip</reason></invite></x></message>").unwrap();
        assert_eq!(
            classify(&invite, None, ME),
            Archived::Invite { room: "g@conference.localhost".into(), title: "trip".into(), inviter: "alice@localhost".into() }
        );
        let sent = Element::parse("<message xmlns='jabber:client' from='bob@localhost/phone' to='g@conference.localhost'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='carol@localhost'/></x></message>").unwrap();
        assert_eq!(classify(&sent, None, ME), Archived::Nothing, "our own invitation, archived as sent");
        let direct = Element::parse("<message xmlns='jabber:client' from='alice@localhost/phone' to='bob@localhost'><body>join us</body><x xmlns='jabber:x:conference' jid='g@conference.localhost' reason='trip'/></message>").unwrap();
        assert_eq!(
            classify(&direct, None, ME),
            Archived::Invite { room: "g@conference.localhost".into(), title: "trip".into(), inviter: "alice@localhost".into() },
            "XEP-0249, with a body for other clients"
        );
    }

    #[test]
    fn rich_bodies_survive_and_degrade_to_text_for_other_clients() {
        let image = Body::Image(Media { url: "https://x/y.png".into(), caption: "cat".into(), ..Default::default() });
        let m = message("alice@localhost", false, "c2", &image);
        let parsed = Element::parse(&m.to_xml()).unwrap();
        assert_eq!(read_body(&parsed), Some(image));
        assert_eq!(parsed.get_child("body", NS_CLIENT).unwrap().text_content(), "[image] cat");
        // A corrupt payload falls back to the text.
        let broken =
            Element::parse("<message xmlns='jabber:client'><body>t</body><payload xmlns='urn:missive:body:1'>!!</payload></message>")
                .unwrap();
        assert_eq!(read_body(&broken), Some(Body::Text("t".into())));
    }
}
