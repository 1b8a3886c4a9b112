//! Bad input from an XMPP server: a scripted fake server (a real WebSocket listener on loopback)
//! completes the handshake, then misbehaves: malformed XML, unknown elements and requests, a
//! stream error, a frame cut off mid-stanza, invalid UTF-8, an oversized frame, a redirect.
//! Each case must end in a clear error or be ignored safely, never a panic, and a message
//! written before the fault must reach the next stream: nothing is lost.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PASSWORD, WAIT, eventually};
use futures_util::{SinkExt, StreamExt};
use missive::transport::xmpp::{XmppConfig, XmppTransport};
use missive::{BackoffConfig, Client, ClientConfig, ConnectionState, Error, HeartbeatConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Ws = WebSocketStream<TcpStream>;

const OPEN: &str = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='s1' version='1.0'/>";
const PRE_AUTH: &str = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
const POST_AUTH: &str = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>";

/// What the fake does once a stream is up (after the first sync answer).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Behaves: answers pings and MAM queries, records messages.
    None,
    MalformedXml,
    UnknownThings,
    StreamErrorConflict,
    CutMidFrame,
    InvalidUtf8,
    Oversized,
    /// During the handshake: a broken `<open>`.
    MalformedHandshake,
    /// During the handshake: `<close see-other-uri>` to the given port.
    Redirect(u16),
    /// Resumes the XEP-0198 session of the previous connection and, once the client asks for
    /// its archive, replays what the previous stream left unacknowledged: the results and end
    /// of that stream's archive queries.
    ResumeWithStaleResults,
    /// Behaves, then drops the socket once the client sent a message.
    DropAfterMessage,
    /// Serves an archive entry whose `<delay stamp>` holds a multi-byte character where the time
    /// zone's colon should be (found by fuzzing: it panicked the link), then a good one.
    HostileStamp,
    /// Serves the same archive id in the account's archive (a 1:1 message) and in a group's (a
    /// group message), as ejabberd can (its ids are microsecond stamps).
    CollidingIds,
}

/// A XEP-0313 result of the query `query` with archive id `id`, stamped `stamp`.
fn archived(query: &str, id: &str, stamp: &str, inner: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='alice@localhost/phone'><result xmlns='urn:xmpp:mam:2' queryid='{query}' id='{id}'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/>{inner}</forwarded></result></message>"
    )
}

/// What a scripted archive holds for a fault, by archive (`None`: the account's own), once.
fn scripted_archive(fault: Fault, query: &str, room: Option<&str>) -> Vec<String> {
    match (fault, room) {
        (Fault::HostileStamp, None) => vec![
            archived(query, "h1", "2026-11-27T01:48:01.6-+\u{23c}03", "<message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost' type='chat' id='b1'><body>badly stamped</body></message>"),
            archived(query, "h2", "2026-11-27T01:48:02Z", "<message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost' type='chat' id='b2'><body>after the bad stamp</body></message>"),
        ],
        (Fault::CollidingIds, None) => vec![
            archived(query, "41", "2026-11-27T01:48:01.000001Z", "<message xmlns='jabber:client' from='g@conference.localhost' to='alice@localhost'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='bob@localhost/x'><reason>Trip</reason></invite></x></message>"),
            archived(query, "42", "2026-11-27T01:48:01.000042Z", "<message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost' type='chat' id='d1'><body>direct 42</body></message>"),
        ],
        (Fault::CollidingIds, Some(_)) => vec![
            archived(query, "42", "2026-11-27T01:48:01.000042Z", "<message xmlns='jabber:client' from='g@conference.localhost/bob@localhost' type='groupchat' id='g1'><body>group 42</body></message>"),
        ],
        _ => vec![],
    }
}

#[derive(Default)]
struct Seen {
    connections: usize,
    /// (connection number, frame) for every frame the client sent.
    frames: Vec<(usize, String)>,
}

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    /// Connection `i` gets `faults[i]` (the last one repeats).
    async fn start(faults: Vec<Fault>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let n = {
                    let mut s = shared.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                let fault = faults[(n - 1).min(faults.len() - 1)];
                let seen = shared.clone();
                tokio::spawn(async move {
                    let callback = |_req: &Request, mut resp: Response| {
                        resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
                        Ok(resp)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                        let _ = serve(ws, n, fault, seen).await;
                    }
                });
            }
        });
        Fake { addr, seen }
    }

    fn url(&self) -> String {
        format!("ws://{}/xmpp-websocket", self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    fn frames_on(&self, connection: usize) -> Vec<String> {
        self.seen.lock().unwrap().frames.iter().filter(|(n, _)| *n == connection).map(|(_, f)| f.clone()).collect()
    }

    fn all_frames(&self) -> Vec<String> {
        self.seen.lock().unwrap().frames.iter().map(|(_, f)| f.clone()).collect()
    }
}

async fn recv(ws: &mut Ws, n: usize, seen: &Arc<Mutex<Seen>>) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                seen.lock().unwrap().frames.push((n, t.to_string()));
                return Some(t.to_string());
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn send(ws: &mut Ws, xml: &str) -> Option<()> {
    ws.send(Message::Text(xml.to_owned().into())).await.ok()
}

/// The `id='...'` of a frame.
fn id_of(frame: &str) -> String {
    let start = frame.find(" id='").map(|i| i + 5).unwrap_or(0);
    frame[start..].split('\'').next().unwrap_or("").to_owned()
}

async fn serve(mut ws: Ws, n: usize, fault: Fault, seen: Arc<Mutex<Seen>>) -> Option<()> {
    recv(&mut ws, n, &seen).await?; // <open>
    match fault {
        Fault::MalformedHandshake => {
            send(&mut ws, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost'").await?;
            return recv(&mut ws, n, &seen).await.map(|_| ());
        }
        Fault::Redirect(port) => {
            let close =
                format!("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='ws://127.0.0.1:{port}/xmpp-websocket'/>");
            send(&mut ws, &close).await?;
            return recv(&mut ws, n, &seen).await.map(|_| ());
        }
        _ => {}
    }
    send(&mut ws, OPEN).await?;
    send(&mut ws, PRE_AUTH).await?;
    let auth = recv(&mut ws, n, &seen).await?;
    assert!(auth.contains("mechanism='PLAIN'"), "{auth}");
    send(&mut ws, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>").await?;
    recv(&mut ws, n, &seen).await?; // <open> again
    send(&mut ws, OPEN).await?;
    send(&mut ws, POST_AUTH).await?;
    loop {
        let frame = recv(&mut ws, n, &seen).await?;
        if frame.starts_with("<resume") && fault == Fault::ResumeWithStaleResults {
            send(&mut ws, "<resumed xmlns='urn:xmpp:sm:3' previd='sm1' h='0'/>").await?;
            break;
        } else if frame.starts_with("<resume") {
            send(&mut ws, "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>").await?;
        } else if frame.contains("id='bind'") {
            send(&mut ws, "<iq type='result' id='bind' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@localhost/phone</jid></bind></iq>").await?;
        } else if frame.starts_with("<enable") {
            send(&mut ws, "<enabled xmlns='urn:xmpp:sm:3' id='sm1' resume='true'/>").await?;
        } else if frame.contains("id='carbons'") {
            send(&mut ws, "<iq type='result' id='carbons' xmlns='jabber:client'/>").await?;
            break;
        }
    }
    let mut faulted = false;
    let mut scripted = std::collections::HashSet::new();
    loop {
        let frame = recv(&mut ws, n, &seen).await?;
        if frame.starts_with("<iq") && frame.contains("urn:xmpp:mam:2") {
            let id = id_of(&frame);
            let room = frame.contains("to='g@conference.localhost'").then_some("g@conference.localhost");
            if scripted.insert(room) {
                for result in scripted_archive(fault, &id, room) {
                    send(&mut ws, &result).await?;
                }
            }
            if fault == Fault::ResumeWithStaleResults && !faulted {
                faulted = true;
                let earlier: Vec<String> = seen
                    .lock()
                    .unwrap()
                    .frames
                    .iter()
                    .filter(|(c, f)| *c == n - 1 && f.starts_with("<iq") && f.contains("urn:xmpp:mam:2"))
                    .map(|(_, f)| id_of(f))
                    .collect();
                for old in earlier {
                    send(&mut ws, &format!("<message xmlns='jabber:client' to='alice@localhost/phone'><result xmlns='urn:xmpp:mam:2' queryid='{old}' id='stale-entry'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2026-11-27T08:00:00Z'/><message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost' type='chat' id='stale1'><body>from the old stream</body></message></forwarded></result></message>")).await?;
                    send(
                        &mut ws,
                        &format!("<iq type='result' id='{old}' xmlns='jabber:client'><fin xmlns='urn:xmpp:mam:2' complete='true'/></iq>"),
                    )
                    .await?;
                }
            }
            send(&mut ws, &format!("<iq type='result' id='{id}' xmlns='jabber:client'><fin xmlns='urn:xmpp:mam:2' complete='true'/></iq>"))
                .await?;
        } else if frame.starts_with("<iq") && frame.contains("urn:xmpp:ping") {
            let id = id_of(&frame);
            send(&mut ws, &format!("<iq type='result' id='{id}' xmlns='jabber:client'/>")).await?;
        } else if frame.starts_with("<r ") {
            send(&mut ws, "<a xmlns='urn:xmpp:sm:3' h='0'/>").await?;
        }
        // Misbehave once the client has sent a message (so something is at stake).
        if faulted || !frame.starts_with("<message") || !frame.contains("<body>") {
            continue;
        }
        faulted = true;
        match fault {
            Fault::None
            | Fault::MalformedHandshake
            | Fault::Redirect(_)
            | Fault::ResumeWithStaleResults
            | Fault::HostileStamp
            | Fault::CollidingIds => {}
            Fault::DropAfterMessage => return None,
            Fault::MalformedXml => send(&mut ws, "<message xmlns='jabber:client'><body>unclosed</message>").await?,
            Fault::UnknownThings => {
                send(&mut ws, "<foo xmlns='urn:example:unknown'><bar/></foo>").await?;
                send(&mut ws, "<message xmlns='jabber:client' from='bob@localhost/x' type='chat'><thing xmlns='urn:example:y'/></message>")
                    .await?;
                send(&mut ws, "<message xmlns='jabber:client' from='bob@localhost/x' type='error' id='zz'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>").await?;
                send(&mut ws, "<iq xmlns='jabber:client' type='get' id='q1' from='localhost'><query xmlns='jabber:iq:version'/></iq>")
                    .await?;
                send(&mut ws, "<iq xmlns='jabber:client' type='result' id='never-asked'/>").await?;
                send(&mut ws, "<presence xmlns='jabber:client' from='bob@localhost/x' type='probe-of-the-future'/>").await?;
            }
            Fault::StreamErrorConflict => {
                send(&mut ws, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text></stream:error>").await?;
                send(&mut ws, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>").await?;
            }
            Fault::CutMidFrame => {
                // A text frame announcing 100 bytes, 40 of them sent, then the socket closes.
                let tcp = ws.get_mut();
                let mut raw = vec![0x81u8, 100];
                raw.extend_from_slice(&b"<message xmlns='jabber:client'><body>cut".repeat(1)[..40]);
                tcp.write_all(&raw).await.ok()?;
                tcp.shutdown().await.ok()?;
                return None;
            }
            Fault::InvalidUtf8 => {
                let tcp = ws.get_mut();
                let payload = b"<message xmlns='jabber:client'><body>\xff\xfe</body></message>";
                let mut raw = vec![0x81u8, payload.len() as u8];
                raw.extend_from_slice(payload);
                tcp.write_all(&raw).await.ok()?;
            }
            Fault::Oversized => {
                let body = "x".repeat(300 * 1024);
                send(&mut ws, &format!("<message xmlns='jabber:client'><body>{body}</body></message>")).await?;
            }
        }
    }
}

fn client_config(url: &str) -> ClientConfig {
    ClientConfig::with_transport(Arc::new(XmppTransport::new(XmppConfig::new(url, "localhost"))))
        .backoff(BackoffConfig { base: Duration::from_millis(20), cap: Duration::from_millis(200), reset_after: Duration::from_secs(60) })
        .heartbeat(HeartbeatConfig { interval: Duration::from_millis(500), timeout: Duration::from_secs(3) })
        .device_id("phone")
}

/// Logs in, writes a message, and checks that after the fault the client is on a new stream
/// and the message went out again on it.
async fn survives(fault: Fault) -> Fake {
    let fake = Fake::start(vec![fault, Fault::None]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.login("alice", PASSWORD).await.unwrap();
    let dm = client.create_direct("bob").await.unwrap();
    let sent = client.send_text(&dm.id, "keep me").await.unwrap();
    eventually(&format!("a second stream after {fault:?}"), || async { fake.connections() >= 2 }).await;
    client.wait_for_state(|s| *s == ConnectionState::Connected).await;
    eventually("the message again on the new stream", || async {
        fake.frames_on(2).iter().any(|f| f.contains(&sent.client_id) && f.contains("keep me"))
    })
    .await;
    fake
}

#[tokio::test]
async fn malformed_xml_on_a_live_stream_drops_the_link_and_loses_nothing() {
    survives(Fault::MalformedXml).await;
}

#[tokio::test]
async fn a_stream_error_drops_the_link_and_loses_nothing() {
    survives(Fault::StreamErrorConflict).await;
}

#[tokio::test]
async fn a_frame_cut_off_mid_stanza_drops_the_link_and_loses_nothing() {
    survives(Fault::CutMidFrame).await;
}

#[tokio::test]
async fn invalid_utf8_drops_the_link_and_loses_nothing() {
    survives(Fault::InvalidUtf8).await;
}

#[tokio::test]
async fn an_oversized_frame_drops_the_link_and_loses_nothing() {
    survives(Fault::Oversized).await;
}

/// After a resume the server replays what the previous stream left unacknowledged, archive
/// results of that stream's queries included. They must not be taken for the new stream's
/// queries (which once moved the position past entries never read: found by the chaos run).
#[tokio::test]
async fn a_resumed_stream_ignores_the_previous_streams_archive_results() {
    let fake = Fake::start(vec![Fault::DropAfterMessage, Fault::ResumeWithStaleResults]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.login("alice", PASSWORD).await.unwrap();
    let dm = client.create_direct("bob").await.unwrap();
    client.send_text(&dm.id, "before the cut").await.unwrap();
    eventually("a resumed second stream", || async { fake.frames_on(2).iter().any(|f| f.starts_with("<resume")) }).await;
    client.wait_for_state(|s| *s == ConnectionState::Connected).await;
    let after = client.send_text(&dm.id, "after the resume").await.unwrap();
    eventually("the message on the resumed stream", || async { fake.frames_on(2).iter().any(|f| f.contains(&after.client_id)) }).await;
    let bob = client.conversation("bob@localhost").await.unwrap().unwrap();
    let texts: Vec<String> = client.messages(&bob.id, None, 50).await.unwrap().messages.iter().map(|m| m.body.preview()).collect();
    assert!(!texts.iter().any(|t| t == "from the old stream"), "a result of the previous stream's query was taken: {texts:?}");
}

#[tokio::test]
async fn unknown_elements_and_requests_are_ignored_or_refused_politely() {
    let fake = Fake::start(vec![Fault::UnknownThings]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.login("alice", PASSWORD).await.unwrap();
    let dm = client.create_direct("bob").await.unwrap();
    client.send_text(&dm.id, "hello").await.unwrap();
    // RFC 6120: an unknown request gets an error answer, not silence.
    eventually("the error answer to an unknown iq", || async {
        fake.all_frames()
            .iter()
            .any(|f| f.starts_with("<iq") && f.contains("id='q1'") && f.contains("type='error'") && f.contains("service-unavailable"))
    })
    .await;
    // The stream stays up: still one connection after more traffic.
    client.send_text(&dm.id, "still here").await.unwrap();
    eventually("the second message", || async { fake.all_frames().iter().any(|f| f.contains("still here")) }).await;
    assert_eq!(fake.connections(), 1);
    assert_eq!(client.connection_state(), ConnectionState::Connected);
}

/// A stamp the fuzzer found (a multi-byte character in the time zone) once panicked the link,
/// which died and came back to the same entry: the entry is skipped, the next one is stored, and
/// the stream stays up.
#[tokio::test]
async fn a_hostile_archive_stamp_is_skipped_not_a_panic() {
    let fake = Fake::start(vec![Fault::HostileStamp]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.login("alice", PASSWORD).await.unwrap();
    assert!(client.wait_caught_up(WAIT).await);
    let texts: Vec<String> = client.messages("bob@localhost", None, 10).await.unwrap().messages.iter().map(|m| m.body.preview()).collect();
    assert_eq!(texts, ["after the bad stamp"]);
    assert_eq!((fake.connections(), client.connection_state()), (1, ConnectionState::Connected));
}

/// An archive id is unique in its archive only: the account's archive and a group's may hold
/// the same one (ejabberd's ids are microsecond stamps). Both messages are kept.
#[tokio::test]
async fn the_same_archive_id_in_two_archives_is_two_messages() {
    let fake = Fake::start(vec![Fault::CollidingIds]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.login("alice", PASSWORD).await.unwrap();
    assert!(client.wait_caught_up(WAIT).await);
    let texts = |c: &'static str| {
        let client = client.clone();
        async move { client.messages(c, None, 10).await.unwrap().messages.iter().map(|m| m.body.preview()).collect::<Vec<_>>() }
    };
    eventually("both messages", || async {
        client.conversation("g@conference.localhost").await.unwrap().is_some() && texts("g@conference.localhost").await == ["group 42"]
    })
    .await;
    assert_eq!(texts("bob@localhost").await, ["direct 42"]);
}

#[tokio::test]
async fn malformed_xml_in_the_handshake_is_a_clear_error() {
    let fake = Fake::start(vec![Fault::MalformedHandshake]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    let err = client.login("alice", PASSWORD).await.unwrap_err();
    assert!(matches!(&err, Error::Transport(m) if m.contains("malformed XML")), "{err:?}");
}

#[tokio::test]
async fn a_redirect_is_followed_to_a_real_server() {
    let prosody = missive_testkit::xmpp::Prosody::start();
    let port = prosody.addr().port();
    let fake = Fake::start(vec![Fault::Redirect(port)]).await;
    let client = Client::open(client_config(&fake.url())).await.unwrap();
    client.register("alice", PASSWORD).await.expect("registered on the server we were sent to");
    assert_eq!(client.username().await.unwrap().as_deref(), Some("alice@localhost"));
    assert_eq!(fake.connections(), 1);
    assert!(client.wait_caught_up(WAIT).await);
}
