//! The XMPP transport: RFC 7395 (XMPP over WebSocket, subprotocol `xmpp`) to a standard XMPP
//! server such as Prosody or ejabberd, behind the same [`Transport`] trait as the native one.
//!
//! `connect` opens the stream and authenticates (XEP-0077 registration when asked, SASL
//! SCRAM-SHA-256, SCRAM-SHA-1, or PLAIN only over TLS or loopback), then resumes the previous
//! XEP-0198 session if the server still holds it, or binds a new resource and enables stream
//! management and carbons. The link task ([`link`]) does the rest. Durable events come from
//! XEP-0313 archives only, live traffic being a cue to read them: so live and synced messages,
//! cursors and sequence numbers are the same thing on every device ([`archive`]).
//!
//! The session token the engine stores is the SCRAM salted password, not the password (see
//! [`sasl::Credential`]); for a server offering only PLAIN it has to be the password itself.

mod archive;
mod link;
mod sasl;
mod stanza;
mod xml;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::Instrument as _;

use super::tls::{self, Verification};
use super::*;
use sasl::{Credential, Mechanism, Scram, Secret};
use stanza::*;
use xml::Element;

pub use xml::XmlError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame accepted from the server (Prosody announces 256 KiB).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Where and how to reach an XMPP service.
#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// `ws://` or `wss://` WebSocket endpoint, e.g. `wss://chat.example.com/xmpp-websocket`.
    pub url: String,
    /// More endpoints of the same service (the nodes of a cluster), tried in order after `url`
    /// when one cannot be reached; the one that works is kept for the next connections.
    pub fallback_urls: Vec<String>,
    /// The XMPP domain: usernames without `@` are taken to be on it.
    pub domain: String,
    /// The MUC service for groups, e.g. `conference.example.com`.
    pub muc_domain: String,
    /// How many of the newest entries of an archive a device reads the first time (its own
    /// archive at first login, a group's when invited); older messages come as history when
    /// the app pages back. 0 reads whole archives.
    pub initial_sync_limit: u32,
}

impl XmppConfig {
    /// The usual layout: `domain` and `conference.<domain>`.
    pub fn new(url: impl Into<String>, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        XmppConfig { url: url.into(), fallback_urls: Vec::new(), muc_domain: format!("conference.{domain}"), domain, initial_sync_limit: 500 }
    }

    /// The same, with more endpoints of the service to fail over to (see `fallback_urls`).
    ///
    /// ```
    /// use missive::transport::xmpp::XmppConfig;
    /// let config = XmppConfig::new("wss://node1.example.com/ws", "example.com").with_fallbacks(["wss://node2.example.com/ws"]);
    /// assert_eq!(config.endpoints(), ["wss://node1.example.com/ws", "wss://node2.example.com/ws"]);
    /// ```
    pub fn with_fallbacks<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.fallback_urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Every endpoint, in the order they are tried.
    pub fn endpoints(&self) -> Vec<&str> {
        std::iter::once(self.url.as_str()).chain(self.fallback_urls.iter().map(String::as_str)).collect()
    }
}

/// What outlives one link: the XEP-0198 session to resume, the ids of messages the server
/// acknowledged on it but no archive has shown yet, and counters.
///
/// An acknowledgement only protects against a resend while the session lives: Prosody counts a
/// stanza when it arrives, before it is archived, so a server killed in between has acknowledged
/// a message it never stored. After a failed resume the archive alone decides what is resent.
#[derive(Default)]
struct Shared {
    session: Option<SmSession>,
    server_has: HashSet<String>,
    stats: XmppStats,
    /// Where the server told us to connect next (`<close see-other-uri>`).
    redirect: Option<String>,
    /// Which of the configured endpoints to try first (the last one that worked).
    endpoint: usize,
}

/// How the streams of a transport went (for diagnostics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XmppStats {
    /// Streams authenticated.
    pub streams: u32,
    /// XEP-0198 sessions resumed.
    pub resumed: u32,
    /// Resumptions the server refused (the session had expired or the server restarted).
    pub resume_failed: u32,
    /// Archive queries sent for older history (`Request::History`), not counting sync.
    pub history_queries: u32,
    /// Archives read again because a live message was not in them yet (servers that archive
    /// after routing, such as Openfire), and live messages still missing after the last try.
    pub archive_lag_re_reads: u32,
    pub archive_lag_given_up: u32,
}

/// How long a connection waits for the answer to a XEP-0198 resumption.
const RESUME_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A XEP-0198 session that may be resumed.
struct SmSession {
    id: String,
    jid: String,
    counters: SmCounters,
}

/// Stream management counters of one session.
#[derive(Default)]
struct SmCounters {
    /// Stanzas handled from the server (our `h`).
    inbound: u32,
    /// Stanzas sent to the server.
    sent: u32,
    /// Sent and not yet acknowledged: (number, client id of a message).
    unacked: VecDeque<(u32, Option<String>)>,
}

/// Connects to an XMPP server over WebSocket. Cheap to clone; clones share the session state.
#[derive(Clone)]
pub struct XmppTransport {
    config: XmppConfig,
    tls: Arc<rustls::ClientConfig>,
    shared: Arc<Mutex<Shared>>,
    connect_timeout: Duration,
    /// Makes this client's resource unique: two devices configured alike must not take each
    /// other's resource (the server would end one stream for the other, back and forth).
    instance: String,
}

impl XmppTransport {
    /// Verifies `wss` certificates against the web PKI roots.
    pub fn new(config: XmppConfig) -> Self {
        Self::with_verification(config, &Verification::WebPki).expect("the web PKI roots are valid")
    }

    /// With explicit certificate checks: see [`Verification`].
    pub fn with_verification(config: XmppConfig, verification: &Verification) -> Result<Self, TransportError> {
        let tls = tls::client_config(verification).map_err(TransportError::Io)?;
        let instance = format!("{:08x}", rand::random::<u32>());
        Ok(XmppTransport { config, tls: Arc::new(tls), shared: Arc::default(), connect_timeout: Duration::from_secs(10), instance })
    }
}

impl XmppTransport {
    /// Counters of the streams opened so far.
    pub fn stats(&self) -> XmppStats {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats
    }
}

impl Transport for XmppTransport {
    fn dense_sequences(&self) -> bool {
        false
    }

    fn receipts_name_messages(&self) -> bool {
        true
    }

    fn connect(&self, auth: Auth) -> BoxFuture<Result<Link, TransportError>> {
        let this = self.clone();
        Box::pin(async move { crate::transport::within(this.connect_timeout, this.open(auth)).await })
    }
}

fn io(e: impl std::fmt::Display) -> TransportError {
    TransportError::Io(e.to_string())
}

/// The stream, during the handshake.
struct Handshake {
    ws: Ws,
    /// A `see-other-uri` the server sent.
    redirect: Option<String>,
}

impl Handshake {
    async fn send(&mut self, e: &Element) -> Result<(), TransportError> {
        self.ws.send(WsMessage::Text(e.to_xml().into())).await.map_err(io)
    }

    /// The next element; a stream error or close ends the handshake with its reason.
    async fn next(&mut self) -> Result<Element, TransportError> {
        while let Some(frame) = self.ws.next().await {
            match frame.map_err(io)? {
                WsMessage::Text(text) => {
                    let e = Element::parse(&text).map_err(io)?;
                    if e.is("error", NS_STREAMS) {
                        return Err(TransportError::Io(format!("stream error: {} {}", error_condition(&e), error_text(&e))));
                    }
                    if e.is("close", NS_FRAMING) {
                        return Err(TransportError::Io(match e.get_attr("see-other-uri") {
                            Some(uri) => {
                                self.redirect = Some(uri.to_owned());
                                format!("the server sends us to {uri}")
                            }
                            None => "the server closed the stream".into(),
                        }));
                    }
                    return Ok(e);
                }
                WsMessage::Close(c) => {
                    return Err(TransportError::Io(format!("closed by server: {c:?}")));
                }
                WsMessage::Binary(_) => {
                    return Err(TransportError::Io("binary frame on an XMPP stream".into()));
                }
                _ => {}
            }
        }
        Err(TransportError::Io("connection closed during the handshake".into()))
    }

    /// Opens (or restarts) the stream; returns the features.
    async fn open(&mut self, domain: &str) -> Result<Element, TransportError> {
        self.send(&open(domain)).await?;
        let opened = self.next().await?;
        if !opened.is("open", NS_FRAMING) {
            return Err(TransportError::Io(format!("expected <open/>, got <{}>", opened.name)));
        }
        let features = self.next().await?;
        if !features.is("features", NS_STREAMS) {
            return Err(TransportError::Io(format!("expected stream features, got <{}>", features.name)));
        }
        Ok(features)
    }

    /// The result of an iq with this id (other traffic before it is dropped: none is expected).
    async fn iq_result(&mut self, id: &str) -> Result<Element, TransportError> {
        loop {
            let e = self.next().await?;
            if e.is("iq", NS_CLIENT) && e.get_attr("id") == Some(id) {
                return Ok(e);
            }
        }
    }
}

/// What a stored token holds.
enum Token {
    Scram { jid: String, credential: Credential },
    Plain { jid: String, password: String },
}

impl Token {
    fn encode(&self) -> String {
        match self {
            Token::Scram { jid, credential } => format!("xmpp1 {jid} {}", credential.encode()),
            Token::Plain { jid, password } => format!("xmpp1p {jid} {}", B64.encode(password)),
        }
    }

    fn decode(s: &str) -> Option<Token> {
        let mut parts = s.split(' ');
        let (kind, jid, secret) = (parts.next()?, parts.next()?.to_owned(), parts.next()?);
        match kind {
            "xmpp1" => Some(Token::Scram { jid, credential: Credential::decode(secret)? }),
            "xmpp1p" => Some(Token::Plain { jid, password: String::from_utf8(B64.decode(secret).ok()?).ok()? }),
            _ => None,
        }
    }

    fn jid(&self) -> &str {
        match self {
            Token::Scram { jid, .. } | Token::Plain { jid, .. } => jid,
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a server may send us from `from` to `to` (RFC 7395 `see-other-uri`): same scheme
/// only, so a redirect can never drop TLS.
pub(super) fn redirect_allowed(from: &str, to: &str) -> bool {
    let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    matches!(scheme(to).as_deref(), Some("ws" | "wss")) && scheme(from) == scheme(to)
}

/// Why a connection to one endpoint failed: it could not be reached (the next is tried), or it
/// answered and the attempt failed there.
enum OpenError {
    Unreachable(TransportError),
    Failed(TransportError),
}
use OpenError::{Failed, Unreachable};

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable(e) | Failed(e) => e.fmt(f),
        }
    }
}

impl XmppTransport {
    /// Connects to the first endpoint that can be reached, starting with the last one that
    /// worked; an endpoint that answers but refuses (credentials, a protocol error) ends the
    /// attempt: it is the same service.
    async fn open(&self, auth: Auth) -> Result<Link, TransportError> {
        let endpoints = self.config.endpoints();
        let first = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).endpoint % endpoints.len();
        let mut last_error = None;
        for i in (0..endpoints.len()).map(|k| (first + k) % endpoints.len()) {
            match self.open_endpoint(endpoints[i], auth.clone()).await {
                Ok(link) => {
                    self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).endpoint = i;
                    return Ok(link);
                }
                Err(Unreachable(e)) => {
                    tracing::debug!(endpoint = i, error = %e, "endpoint unreachable, trying the next");
                    last_error = Some(e);
                }
                Err(Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TransportError::Closed))
    }

    async fn open_endpoint(&self, configured: &str, auth: Auth) -> Result<Link, OpenError> {
        // A redirect during the handshake is followed at once (one hop).
        match self.open_once(configured, auth.clone()).await {
            Err(e) if self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redirect.is_some() => {
                tracing::debug!(error = %e, "following the server's redirect");
                self.open_once(configured, auth).await
            }
            other => other,
        }
    }

    async fn open_once(&self, configured: &str, auth: Auth) -> Result<Link, OpenError> {
        // A redirect from the server is tried once; if it fails, the configured URL again.
        let redirect = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redirect.take();
        let url = redirect.unwrap_or_else(|| configured.to_owned());
        let mut request = url.as_str().into_client_request().map_err(|e| Failed(io(e)))?;
        let loopback = request.uri().host().is_some_and(is_loopback);
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
        let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
        let (ws, response) =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(Connector::Rustls(self.tls.clone())))
                .await
                .map_err(|e| Unreachable(io(e)))?;
        if response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()) != Some("xmpp") {
            return Err(Failed(TransportError::Io("the server did not accept the xmpp subprotocol".into())));
        }
        let mut hs = Handshake { ws, redirect: None };
        let result = self.handshake(&mut hs, &url, loopback, auth).await;
        if let Some(to) = hs.redirect.take() {
            self.follow_redirect(&url, to);
        }
        let (jid, token, session, resumed_h) = result.map_err(Failed)?;
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (in_tx, in_rx) = mpsc::channel(1024);
        let task = link::LinkTask::new(hs.ws, in_tx, jid.clone(), session, self.config.clone(), self.shared.clone(), resumed_h, url);
        tokio::spawn(task.run(out_rx).in_current_span());
        Ok(Link { grant: Grant { username: jid, token: Some(token) }, outgoing: out_tx, incoming: in_rx })
    }

    /// Remembers a redirect for the next connection, if allowed.
    fn follow_redirect(&self, from: &str, to: String) {
        if redirect_allowed(from, &to) {
            tracing::info!(%to, "the server redirects us");
            self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).redirect = Some(to);
        } else {
            tracing::warn!(%to, "ignoring a redirect to another scheme");
        }
    }

    /// Stream opening, authentication, resumption or binding.
    async fn handshake(
        &self,
        hs: &mut Handshake,
        url: &str,
        loopback: bool,
        auth: Auth,
    ) -> Result<(String, String, link::Session, Option<u32>), TransportError> {
        let domain = self.config.domain.clone();
        let features = hs.open(&domain).await?;
        let plain_allowed = url.starts_with("wss://") || loopback;

        // Who, with what secret, and whether a previous session may be resumed.
        let (jid, device, secret, may_resume) = match &auth {
            Auth::Register { username, password, device } => {
                let jid = to_bare_jid(username, &domain);
                register(hs, &features, &jid, password).await?;
                (jid, device.clone(), Ok(password.clone()), false)
            }
            Auth::Login { username, password, device } => (to_bare_jid(username, &domain), device.clone(), Ok(password.clone()), false),
            Auth::Token { token, device } => {
                let token = Token::decode(token)
                    .ok_or_else(|| TransportError::Auth("not a session token of the XMPP transport; log in again".into()))?;
                (token.jid().to_owned(), device.clone(), Err(token), true)
            }
        };
        let local = jid.split('@').next().unwrap_or_default().to_owned();
        let offered: Vec<String> = features
            .get_child("mechanisms", NS_SASL)
            .map(|m| m.elements().filter(|e| e.name == "mechanism").map(Element::text_content).collect())
            .unwrap_or_default();
        let mechanism = match &secret {
            Err(Token::Scram { credential, .. }) => {
                if !offered.iter().any(|m| m == credential.mechanism.name()) {
                    return Err(TransportError::Auth("the server no longer offers the stored mechanism; log in again".into()));
                }
                credential.mechanism
            }
            Err(Token::Plain { .. }) => Mechanism::Plain,
            Ok(_) => Mechanism::choose(offered.iter().map(String::as_str), plain_allowed)
                .ok_or_else(|| TransportError::Io(format!("no usable SASL mechanism among {offered:?} (PLAIN needs TLS)")))?,
        };
        if mechanism == Mechanism::Plain && !plain_allowed {
            return Err(TransportError::Io("refusing SASL PLAIN without TLS".into()));
        }
        let token = authenticate(hs, mechanism, &local, &jid, secret).await?;
        let features = hs.open(&domain).await?;
        let (session, resumed_h) = self.resume_or_bind(hs, &features, &jid, &device, may_resume).await?;
        Ok((jid, token, session, resumed_h))
    }

    /// Resumes the previous XEP-0198 session when allowed and possible, else binds a resource,
    /// enables stream management and carbons, and announces presence.
    async fn resume_or_bind(
        &self,
        hs: &mut Handshake,
        features: &Element,
        jid: &str,
        device: &str,
        may_resume: bool,
    ) -> Result<(link::Session, Option<u32>), TransportError> {
        let sm_offered = features.get_child("sm", NS_SM).is_some();
        let previous = {
            let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.stats.streams += 1;
            shared.session.take()
        };
        if let Some(previous) = previous.filter(|p| may_resume && sm_offered && bare(&p.jid) == jid) {
            hs.send(&Element::new("resume", NS_SM).attr("h", previous.counters.inbound.to_string()).attr("previd", &previous.id)).await?;
            // A server can leave a resumption unanswered for long (ejabberd, when the old
            // stream was cut with archive queries in progress, stayed silent for 16 s and more):
            // that counts as failed, and the next connection binds a new session.
            let answer = match tokio::time::timeout(RESUME_ANSWER_WAIT, hs.next()).await {
                Ok(answer) => answer?,
                Err(_) => {
                    tracing::debug!("no answer to the XEP-0198 resumption; the next connection binds a new session");
                    self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.resume_failed += 1;
                    return Err(io("no answer to the XEP-0198 resumption"));
                }
            };
            if answer.is("resumed", NS_SM) {
                let h: u32 = answer.get_attr("h").and_then(|h| h.parse().ok()).ok_or_else(|| io("<resumed/> without h"))?;
                tracing::debug!(h, "XEP-0198 session resumed");
                self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.resumed += 1;
                return Ok((link::Session { id: Some(previous.id), full_jid: previous.jid, counters: previous.counters }, Some(h)));
            }
            tracing::debug!(reason = %error_condition(&answer), "XEP-0198 resume failed; binding a new session");
            self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.resume_failed += 1;
        }
        // A new session: earlier acknowledgements prove nothing any more (see `Shared`).
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).server_has.clear();
        let device = if device.is_empty() { "missive" } else { device };
        let resource = format!("{device}.{}", self.instance);
        hs.send(&iq("set", "bind", None, Element::new("bind", NS_BIND).child(Element::new("resource", NS_BIND).text(resource)))).await?;
        let bound = hs.iq_result("bind").await?;
        if bound.get_attr("type") != Some("result") {
            let why = bound.get_child("error", NS_CLIENT).map(error_condition).unwrap_or_default();
            return Err(TransportError::Io(format!("resource binding refused: {why}")));
        }
        let full_jid = bound
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("jid", NS_BIND))
            .map(Element::text_content)
            .ok_or_else(|| io("bind result without a JID"))?;
        let mut id = None;
        if sm_offered {
            hs.send(&Element::new("enable", NS_SM).attr("resume", "true")).await?;
            let enabled = hs.next().await?;
            if enabled.is("enabled", NS_SM) {
                id = enabled.get_attr("id").map(str::to_owned);
            }
        }
        let mut counters = SmCounters::default();
        // Carbons (copies of what the account's other devices send and receive): an iq, counted.
        hs.send(&iq("set", "carbons", None, Element::new("enable", NS_CARBONS))).await?;
        if sm_offered {
            counters.sent += 1;
        }
        let carbons = hs.iq_result("carbons").await?;
        if sm_offered {
            counters.inbound += 1;
        }
        if carbons.get_attr("type") != Some("result") {
            tracing::warn!("the server refused carbons: messages from other devices arrive at the next sync");
        }
        Ok((link::Session { id, full_jid, counters }, None))
    }
}

/// XEP-0077 in-band registration.
async fn register(hs: &mut Handshake, features: &Element, jid: &str, password: &str) -> Result<(), TransportError> {
    if features.get_child("register", "http://jabber.org/features/iq-register").is_none() {
        return Err(TransportError::Refused {
            code: "UNSUPPORTED".into(),
            message: "the server does not offer in-band registration".into(),
            retryable: false,
        });
    }
    let local = jid.split('@').next().unwrap_or_default();
    let query = Element::new("query", NS_REGISTER)
        .child(Element::new("username", NS_REGISTER).text(local))
        .child(Element::new("password", NS_REGISTER).text(password));
    hs.send(&iq("set", "reg", None, query)).await?;
    let answer = hs.iq_result("reg").await?;
    if answer.get_attr("type") == Some("result") {
        return Ok(());
    }
    let error = answer.get_child("error", NS_CLIENT);
    let condition = error.map(error_condition).unwrap_or_default();
    let text = error.map(error_text).unwrap_or_default();
    let code = if condition == "conflict" { "USERNAME_TAKEN" } else { "REGISTRATION_REFUSED" };
    Err(TransportError::Refused { code: code.into(), message: format!("{condition} {text}").trim().to_owned(), retryable: false })
}

/// SASL; returns the session token to store.
async fn authenticate(
    hs: &mut Handshake,
    mechanism: Mechanism,
    local: &str,
    jid: &str,
    secret: Result<String, Token>,
) -> Result<String, TransportError> {
    let auth = |payload: String| Element::new("auth", NS_SASL).attr("mechanism", mechanism.name()).text(payload);
    let failure = |e: &Element| {
        let condition = error_condition(e);
        let text = error_text(e);
        TransportError::Auth(if text.is_empty() { condition } else { format!("{condition}: {text}") })
    };
    if mechanism == Mechanism::Plain {
        let password = match secret {
            Ok(p) => p,
            Err(Token::Plain { password, .. }) => password,
            Err(Token::Scram { .. }) => unreachable!("chosen from the token"),
        };
        hs.send(&auth(sasl::plain(local, &password))).await?;
        let answer = hs.next().await?;
        if !answer.is("success", NS_SASL) {
            return Err(failure(&answer));
        }
        return Ok(Token::Plain { jid: jid.to_owned(), password }.encode());
    }
    let nonce = B64.encode(rand::random::<[u8; 18]>());
    let (mut scram, first) = Scram::start(mechanism, local, &nonce);
    hs.send(&auth(B64.encode(first))).await?;
    let challenge = hs.next().await?;
    if !challenge.is("challenge", NS_SASL) {
        return Err(failure(&challenge));
    }
    let server_first = B64.decode(challenge.text_content().trim()).map_err(|_| io("SASL challenge is not base64"))?;
    let server_first = String::from_utf8(server_first).map_err(|_| io("SASL challenge is not UTF-8"))?;
    let secret = match &secret {
        Ok(password) => Secret::Password(password),
        Err(Token::Scram { credential, .. }) => Secret::Stored(credential),
        Err(Token::Plain { .. }) => unreachable!("PLAIN handled above"),
    };
    let client_final = scram.respond(&server_first, secret).map_err(|e| match e {
        sasl::SaslError::StaleCredential => TransportError::Auth(e.to_string()),
        other => io(other),
    })?;
    hs.send(&Element::new("response", NS_SASL).text(B64.encode(client_final))).await?;
    let answer = hs.next().await?;
    if !answer.is("success", NS_SASL) {
        return Err(failure(&answer));
    }
    let server_final = B64.decode(answer.text_content().trim()).map_err(|_| io("SASL success is not base64"))?;
    let credential = scram.finish(&String::from_utf8_lossy(&server_final)).map_err(io)?;
    Ok(Token::Scram { jid: jid.to_owned(), credential }.encode())
}

/// For `crate::fuzzing`: a frame through the parser and the stanza readers.
pub(crate) fn fuzz_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(e) = Element::parse(text) else { return };
    let _ = e.to_xml();
    let me = "bob@localhost";
    if let Some(result) = e.get_child("result", NS_MAM) {
        let _ = read_archived(result, None, me);
        let _ = read_archived(result, Some("g@conference.localhost"), me);
    }
    let _ = classify(&e, None, me);
    let _ = classify(&e, Some("g@conference.localhost"), me);
    let _ = read_chat_state(&e);
    let _ = error_condition(&e);
    let _ = read_body(&e);
}

/// For `crate::fuzzing`: SCRAM with a server that says anything.
pub(crate) fn fuzz_scram(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, last) = text.split_once('\n').unwrap_or((&text, ""));
    // Large iteration counts are valid but slow (up to a second each): not what is fuzzed here.
    if first.split(',').filter_map(|f| f.strip_prefix("i=")).any(|i| i.parse::<u32>().map_or(false, |i| i > 4096)) {
        return;
    }
    for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
        let (mut scram, _) = Scram::start(mechanism, "user", "abc");
        if scram.respond(first, Secret::Password("pencil")).is_ok() {
            let _ = scram.finish(last);
        }
    }
}

/// For `crate::fuzzing`: strings the SDK stores and reads back.
pub(crate) fn fuzz_stored(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(c) = archive::Cursor::decode(&text) {
        assert_eq!(archive::Cursor::decode(&c.encode()), Some(c), "a cursor survives a round trip");
    }
    let _ = Token::decode(&text);
    let _ = Credential::decode(&text);
    let _ = archive::parse_stamp(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_never_drop_tls() {
        assert!(redirect_allowed("wss://a.example/ws", "wss://b.example/ws"));
        assert!(redirect_allowed("ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws"));
        assert!(!redirect_allowed("wss://a.example/ws", "ws://b.example/ws"));
        assert!(!redirect_allowed("wss://a.example/ws", "https://b.example/ws"));
        assert!(!redirect_allowed("wss://a.example/ws", "b.example:5222"));
    }

    #[test]
    fn plain_is_allowed_on_loopback_only() {
        for host in ["localhost", "127.0.0.1", "127.3.2.1", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "localhost.example.com", "[2001:db8::1]"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn tokens_round_trip_and_never_show_secrets() {
        let credential = Credential { mechanism: Mechanism::ScramSha1, salt: vec![1, 2], iterations: 4096, salted_password: vec![9; 20] };
        let token = Token::Scram { jid: "a@b".into(), credential: credential.clone() }.encode();
        assert!(matches!(Token::decode(&token), Some(Token::Scram { jid, credential: c }) if jid == "a@b" && c == credential));
        assert!(!format!("{credential:?}").contains("9, 9"));
        assert!(Token::decode("opaque-native-token").is_none());
        assert!(
            matches!(Token::decode(&Token::Plain { jid: "a@b".into(), password: "pw d".into() }.encode()), Some(Token::Plain { password, .. }) if password == "pw d")
        );
    }
}
