//! A minimal blocking XMPP client over WebSocket (RFC 7395), to check what a throwaway server
//! does: in-band registration, SASL PLAIN and SCRAM-SHA-1, resource binding, stanzas as text, XEP-0313 queries,
//! XEP-0198 resumption.
//!
//! XML is handled as text: each WebSocket message is one element, and the helpers
//! ([`attr`], [`child_text`]) read the first occurrence of what they look for. That is enough
//! for tests against known servers; it is not a parser, and the SDK does not use it.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use super::DOMAIN;

/// How long a single answer is waited for.
const ANSWER: Duration = Duration::from_secs(30);

/// A connected XMPP stream.
pub struct RawClient {
    ws: WebSocket<TcpStream>,
    inbox: VecDeque<String>,
    next_id: u64,
    /// The bound full JID (empty before binding).
    pub jid: String,
    /// The latest `<stream:features/>` (after authentication: the post-auth ones).
    pub features: String,
}

/// Connects to `url`, opens a stream and returns its first `<stream:features/>`: whether the
/// server serves XMPP there, not just whether the port is open.
pub fn stream_features(url: &str, within: Duration) -> Result<String, String> {
    let client = RawClient::connect_within(url, within)?;
    let features = client.features.clone();
    client.close();
    Ok(features)
}

impl RawClient {
    /// Connects and opens a stream to [`DOMAIN`]; [`RawClient::features`] holds its features.
    pub fn connect(url: &str) -> Result<RawClient, String> {
        Self::connect_within(url, ANSWER)
    }

    fn connect_within(url: &str, within: Duration) -> Result<RawClient, String> {
        let mut request = url.into_client_request().map_err(|e| format!("bad url {url}: {e}"))?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "xmpp".parse().expect("a header value"));
        let host = request.uri().authority().map(|a| a.as_str().to_owned()).ok_or(format!("no host in {url}"))?;
        let addr = host.parse().map_err(|e| format!("{host}: {e}"))?;
        let tcp = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect {url}: {e}"))?;
        tcp.set_read_timeout(Some(within)).map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client(request, tcp).map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let mut client = RawClient { ws, inbox: VecDeque::new(), next_id: 0, jid: String::new(), features: String::new() };
        client.open_stream(within)?;
        Ok(client)
    }

    fn open_stream(&mut self, within: Duration) -> Result<(), String> {
        self.send(&format!(r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="{DOMAIN}" version="1.0"/>"#));
        self.features = self.try_wait(within, |e| e.contains("features"))?;
        Ok(())
    }

    /// Registers `user` with XEP-0077 before authenticating; the error is the server's answer.
    pub fn register(&mut self, user: &str, password: &str) -> Result<(), String> {
        let reply = self.iq(
            "set",
            None,
            &format!(
                "<query xmlns='jabber:iq:register'><username>{}</username><password>{}</password></query>",
                escape(user),
                escape(password)
            ),
        );
        if attr(&reply, "type").as_deref() == Some("result") { Ok(()) } else { Err(reply) }
    }

    /// The SASL mechanisms offered in the current features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features.split("<mechanism>").skip(1).filter_map(|s| s.split("</mechanism>").next()).map(str::to_owned).collect()
    }

    /// SASL PLAIN (loopback only), then the stream is opened again; the error is the failure.
    pub fn authenticate(&mut self, user: &str, password: &str) -> Result<(), String> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"));
        let answer = self.try_wait(ANSWER, |e| e.starts_with("<success") || e.starts_with("<failure"))?;
        if !answer.starts_with("<success") {
            return Err(answer);
        }
        self.open_stream(ANSWER)
    }

    /// SASL SCRAM-SHA-1 (RFC 5802, no channel binding), checking the server's signature, then
    /// the stream is opened again; the error is the failure. `user` must need no escaping.
    pub fn authenticate_scram_sha1(&mut self, user: &str, password: &str) -> Result<(), String> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD as B64;
        use hmac::{Hmac, Mac};
        use sha1::{Digest, Sha1};
        let hmac = |key: &[u8], data: &[u8]| {
            let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        };
        let client_nonce = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.next_id);
            format!("{:016x}{:x}", h.finish(), std::process::id())
        };
        let client_first_bare = format!("n={user},r=missive{client_nonce}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
            B64.encode(format!("n,,{client_first_bare}"))
        ));
        let challenge = self.try_wait(ANSWER, |e| e.starts_with("<challenge") || e.starts_with("<failure"))?;
        let server_first = child_text(&challenge, "challenge").ok_or(challenge.clone())?;
        let server_first = String::from_utf8(B64.decode(server_first.trim()).map_err(|e| format!("{challenge}: {e}"))?).map_err(|e| e.to_string())?;
        let field = |name: &str| server_first.split(',').find_map(|f| f.strip_prefix(name)).map(str::to_owned);
        let (Some(nonce), Some(salt), Some(iterations)) = (field("r="), field("s="), field("i=")) else {
            return Err(format!("a SCRAM server-first-message without r, s or i: {server_first}"));
        };
        if !nonce.starts_with(&format!("missive{client_nonce}")) {
            return Err(format!("the server's nonce does not extend ours: {server_first}"));
        }
        let salt = B64.decode(salt).map_err(|e| format!("salt: {e}"))?;
        let iterations: u32 = iterations.parse().map_err(|e| format!("iterations: {e}"))?;
        let mut salted = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha1::digest(&client_key);
        let client_final_bare = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{client_final_bare}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(format!("{client_final_bare},p={}", B64.encode(proof)))
        ));
        let answer = self.try_wait(ANSWER, |e| e.starts_with("<success") || e.starts_with("<failure"))?;
        if !answer.starts_with("<success") {
            return Err(answer);
        }
        let expected = format!("v={}", B64.encode(hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes())));
        let outcome = child_text(&answer, "success").and_then(|t| B64.decode(t.trim()).ok()).map(|v| String::from_utf8_lossy(&v).into_owned());
        if outcome.as_deref() != Some(expected.as_str()) {
            return Err(format!("the server's signature does not match ({answer}, expected {expected})"));
        }
        self.open_stream(ANSWER)
    }

    /// Binds `resource`; returns (and keeps) the full JID.
    pub fn bind(&mut self, resource: &str) -> Result<String, String> {
        let reply =
            self.iq("set", None, &format!("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind>", escape(resource)));
        self.jid = child_text(&reply, "jid").ok_or(reply)?;
        Ok(self.jid.clone())
    }

    /// Connects, registers when `register` (an existing account is fine), authenticates with
    /// PLAIN, binds resource `raw` and sends initial presence. Panics saying which step failed.
    pub fn login(url: &str, user: &str, password: &str, register: bool) -> RawClient {
        let mut c = RawClient::connect(url).unwrap_or_else(|e| panic!("{user}: {e}"));
        if register {
            if let Err(e) = c.register(user, password) {
                assert!(e.contains("conflict"), "{user}: registration failed: {e}");
            }
        }
        c.authenticate(user, password).unwrap_or_else(|e| panic!("{user}: authentication failed: {e}"));
        c.bind("raw").unwrap_or_else(|e| panic!("{user}: binding failed: {e}"));
        c.send("<presence/>");
        c
    }

    /// Sends one element, as it is except that a stanza (`<iq`, `<message`, `<presence`) whose
    /// first tag has no `xmlns` gets `xmlns='jabber:client'`: over WebSocket there is no stream
    /// element to inherit it from (RFC 7395 section 3.3.3), and Prosody ends the stream with
    /// `<unsupported-stanza-type/>` on a stanza without it (ejabberd and Openfire accept it).
    pub fn send(&mut self, xml: &str) {
        let xml = with_client_namespace(xml);
        self.ws.send(Message::text(xml.as_str())).unwrap_or_else(|e| panic!("send {xml}: {e}"));
    }

    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("raw-{}", self.next_id)
    }

    /// Sends an iq of `kind` (get/set) with `payload` and returns its answer (result or error).
    pub fn iq(&mut self, kind: &str, to: Option<&str>, payload: &str) -> String {
        let id = self.id();
        let to = to.map(|t| format!(" to='{}'", escape(t))).unwrap_or_default();
        self.send(&format!("<iq type='{kind}' id='{id}'{to}>{payload}</iq>"));
        self.wait(ANSWER, &format!("the answer to iq {id}"), |e| e.starts_with("<iq") && attr(e, "id").as_deref() == Some(&id))
    }

    /// Sends a `<message/>` of `kind` (chat, groupchat) with this body; returns its id.
    pub fn message(&mut self, to: &str, kind: &str, body: &str) -> String {
        let id = self.id();
        self.send(&format!("<message to='{}' type='{kind}' id='{id}'><body>{}</body></message>", escape(to), escape(body)));
        id
    }

    /// The next received element for which `matches` holds, within `within` (others are kept
    /// for later calls). Panics with `what` on timeout or when the stream ends.
    pub fn wait(&mut self, within: Duration, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.try_wait(within, matches).unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }

    /// Like [`RawClient::wait`], returning what went wrong instead of panicking.
    pub fn try_wait(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> Result<String, String> {
        if let Some(i) = self.inbox.iter().position(|e| matches(e)) {
            return Ok(self.inbox.remove(i).expect("an index found"));
        }
        let deadline = Instant::now() + within;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let element = t.as_str().to_owned();
                    if matches(&element) {
                        return Ok(element);
                    }
                    if element.starts_with("<close") || element.starts_with("<stream:error") {
                        return Err(format!("the server ended the stream: {element}"));
                    }
                    self.inbox.push_back(element);
                }
                Ok(Message::Close(c)) => return Err(format!("the server closed the WebSocket: {c:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("WebSocket: {e}")),
            }
            if Instant::now() >= deadline {
                return Err(format!("nothing within {within:?}; unmatched: {:?}", self.inbox));
            }
        }
    }

    /// Everything received and not consumed yet (clears it).
    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(e) = self.try_wait(Duration::from_millis(100), |_| true) {
            self.inbox.push_back(e);
        }
        self.inbox.drain(..).collect()
    }

    /// The whole XEP-0313 archive of `archive` (None: the own account), oldest first: each
    /// entry is the `<message>` carrying a `<result>`. Follows RSM pages of 100.
    pub fn mam(&mut self, archive: Option<&str>) -> Vec<String> {
        let mut entries = vec![];
        let mut after = String::new();
        loop {
            let query_id = self.id();
            let rsm = format!("<set xmlns='http://jabber.org/protocol/rsm'><max>100</max>{after}</set>");
            let id = self.id();
            let to = archive.map(|t| format!(" to='{}'", escape(t))).unwrap_or_default();
            self.send(&format!("<iq type='set' id='{id}'{to}><query xmlns='urn:xmpp:mam:2' queryid='{query_id}'>{rsm}</query></iq>"));
            let fin = self.wait(ANSWER, "the end of an archive query", |e| e.starts_with("<iq") && attr(e, "id").as_deref() == Some(&id));
            assert_eq!(attr(&fin, "type").as_deref(), Some("result"), "archive query refused: {fin}");
            let page: Vec<String> = {
                let mut page = vec![];
                while let Some(i) = self.inbox.iter().position(|e| e.starts_with("<message") && e.contains(&query_id)) {
                    page.push(self.inbox.remove(i).expect("an index found"));
                }
                page
            };
            let complete = fin.contains("complete='true'") || fin.contains("complete=\"true\"");
            let last = child_text(&fin, "last");
            entries.extend(page);
            match last {
                Some(last) if !complete => after = format!("<after>{last}</after>"),
                _ => return entries,
            }
        }
    }

    /// Closes the stream politely.
    pub fn close(mut self) {
        self.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
        let _ = self.ws.close(None);
        let _ = self.try_wait(Duration::from_millis(500), |_| false);
    }

    /// Drops the connection without closing the stream (as a lost network would): a session
    /// with stream management enabled stays resumable.
    pub fn drop_connection(self) {
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }
}

/// `xml` with `xmlns='jabber:client'` on its first tag when it is a stanza without a namespace.
fn with_client_namespace(xml: &str) -> String {
    let tag_end = xml.find('>').unwrap_or(xml.len());
    let is_stanza = ["<iq", "<message", "<presence"]
        .iter()
        .any(|s| xml.strip_prefix(s).is_some_and(|rest| rest.starts_with([' ', '>', '/'])));
    if is_stanza && !xml[..tag_end].contains(" xmlns=") {
        let name_end = xml.find([' ', '>', '/']).expect("a stanza's name ends");
        format!("{} xmlns='jabber:client'{}", &xml[..name_end], &xml[name_end..])
    } else {
        xml.to_owned()
    }
}

/// The value of attribute `name` on the first tag of `element` (either quote).
pub fn attr(element: &str, name: &str) -> Option<String> {
    let tag = &element[..element.find('>').unwrap_or(element.len())];
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(start) = tag.find(&key) {
            let rest = &tag[start + key.len()..];
            return rest.find(quote).map(|end| unescape(&rest[..end]));
        }
    }
    None
}

/// The text of the first `<tag>` (with or without attributes) in `element`.
pub fn child_text(element: &str, tag: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = element[from..].find(&format!("<{tag}")) {
        let start = from + i + tag.len() + 1;
        let rest = &element[start..];
        if rest.starts_with('>') || rest.starts_with(' ') {
            let open_end = rest.find('>')?;
            if rest[..open_end].ends_with('/') {
                return Some(String::new());
            }
            let body = &rest[open_end + 1..];
            return body.find(&format!("</{tag}>")).map(|end| unescape(&body[..end]));
        }
        from = start;
    }
    None
}

/// Escapes text for XML content and attributes.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&apos;", "'").replace("&quot;", "\"").replace("&amp;", "&")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_helpers_read_either_quote() {
        let e = r#"<iq type="result" id='a&amp;b'><bind xmlns='x'><jid>u@h/r</jid></bind></iq>"#;
        assert_eq!(attr(e, "type").as_deref(), Some("result"));
        assert_eq!(attr(e, "id").as_deref(), Some("a&b"));
        assert_eq!(attr(e, "xmlns"), None, "only the first tag");
        assert_eq!(child_text(e, "jid").as_deref(), Some("u@h/r"));
        assert_eq!(child_text("<a><bodyx>n</bodyx><body>y</body></a>", "body").as_deref(), Some("y"));
        assert_eq!(base64(b"\0u\0p"), "AHUAcA==");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(with_client_namespace("<presence/>"), "<presence xmlns='jabber:client'/>");
        assert_eq!(with_client_namespace("<iq type='get'><q xmlns='x'/></iq>"), "<iq xmlns='jabber:client' type='get'><q xmlns='x'/></iq>");
        assert_eq!(with_client_namespace("<message xmlns='jabber:client' to='a'/>"), "<message xmlns='jabber:client' to='a'/>");
        assert_eq!(with_client_namespace("<enable xmlns='urn:xmpp:sm:3'/>"), "<enable xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(with_client_namespace("<iqx/>"), "<iqx/>");
        assert_eq!(with_client_namespace("<message to='a@b/c' xmlns='jabber:client'/>"), "<message to='a@b/c' xmlns='jabber:client'/>");
    }
}
