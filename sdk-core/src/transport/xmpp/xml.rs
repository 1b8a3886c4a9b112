//! XML elements for XMPP over WebSocket (RFC 7395: one complete element per text frame).
//!
//! `Element::parse` reads one frame with quick-xml's namespace-aware reader, so prefixes,
//! attribute order and quote style do not matter; `Element::to_xml` writes an element back with
//! every special character escaped. Only what XMPP uses is kept: element names with their
//! resolved namespace, plain attributes, text and child elements (no comments, processing
//! instructions or DTDs: RFC 6120 forbids them, so they are refused).

use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// Largest frame the transport accepts, and deepest nesting: bounds on what a server can make us
/// allocate.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// Why a frame is not one acceptable XML element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

fn err(e: impl std::fmt::Display) -> XmlError {
    XmlError(e.to_string())
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Self {
        Element { name: name.into(), ns: ns.into(), ..Default::default() }
    }

    /// Builder: sets an attribute.
    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set_attr(key, value);
        self
    }

    pub fn set_attr(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key.into(), value)),
        }
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn get_attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The first child element with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated text children.
    pub fn text_content(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// Parses one frame: exactly one element, nothing but whitespace around it.
    pub fn parse(frame: &str) -> Result<Element, XmlError> {
        let mut reader = NsReader::from_str(frame);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        let mut stack: Vec<Element> = Vec::new();
        let mut done: Option<Element> = None;
        loop {
            let (resolved, event) = reader.read_resolved_event().map_err(err)?;
            let ns = match resolved {
                ResolveResult::Bound(ns) => Some(String::from_utf8(ns.as_ref().to_vec()).map_err(err)?),
                ResolveResult::Unbound => Some(String::new()),
                ResolveResult::Unknown(p) => {
                    return Err(XmlError(format!("unknown prefix {}", String::from_utf8_lossy(&p))));
                }
            };
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    if done.is_some() {
                        return Err(XmlError("more than one element in a frame".into()));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError("elements nested too deeply".into()));
                    }
                    let mut element =
                        Element { name: local(start.local_name().as_ref())?, ns: ns.unwrap_or_default(), ..Default::default() };
                    for a in start.attributes() {
                        let a = a.map_err(err)?;
                        let key = a.key.as_ref();
                        if key == b"xmlns" || key.starts_with(b"xmlns:") {
                            continue;
                        }
                        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(err)?.into_owned();
                        let key = local(key)?;
                        if element.get_attr(&key).is_some() {
                            return Err(XmlError(format!("duplicate attribute {key}")));
                        }
                        element.attrs.push((key, value));
                    }
                    if matches!(event, Event::Empty(_)) {
                        close(&mut stack, &mut done, element);
                    } else {
                        stack.push(element);
                    }
                }
                Event::End(_) => {
                    let element = stack.pop().ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                    close(&mut stack, &mut done, element);
                }
                Event::Text(t) => {
                    let text = t.xml10_content().map_err(err)?;
                    push_text(&mut stack, &text)?;
                }
                Event::CData(t) => {
                    let text = t.decode().map_err(err)?;
                    push_text(&mut stack, &text)?;
                }
                Event::GeneralRef(r) => {
                    let text = match r.resolve_char_ref().map_err(err)? {
                        Some(c) => c.to_string(),
                        None => match r.decode().map_err(err)?.as_ref() {
                            "amp" => "&".into(),
                            "lt" => "<".into(),
                            "gt" => ">".into(),
                            "quot" => "\"".into(),
                            "apos" => "'".into(),
                            other => return Err(XmlError(format!("unknown entity &{other};"))),
                        },
                    };
                    push_text(&mut stack, &text)?;
                }
                Event::Decl(_) => {}
                Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                    return Err(XmlError("comments, processing instructions and DTDs are not allowed".into()));
                }
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(XmlError("frame ends inside an element".into()));
        }
        done.ok_or_else(|| XmlError("no element in frame".into()))
    }

    /// Serialises the element; `parent_ns` is the namespace in scope (an `xmlns` is written only
    /// where it changes).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write(&mut out, None);
        out
    }

    fn write(&self, out: &mut String, parent_ns: Option<&str>) {
        out.push('<');
        out.push_str(&self.name);
        if parent_ns != Some(self.ns.as_str()) && !self.ns.is_empty() {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='");
            escape_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out, Some(&self.ns)),
                Node::Text(t) => escape_into(out, t),
            }
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

fn local(bytes: &[u8]) -> Result<String, XmlError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(err)
}

fn close(stack: &mut [Element], done: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *done = Some(element),
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => {
            if let Some(Node::Text(last)) = parent.children.last_mut() {
                last.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError("text outside the element".into())),
    }
}

/// Escapes text and attribute values (single-quoted attributes, as written above).
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Characters XML 1.0 cannot carry at all are dropped rather than sent broken.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_quotes_and_attribute_order_alike() {
        let a = Element::parse(r#"<stream:features xmlns:stream="http://etherx.jabber.org/streams" xmlns='jabber:client'><sm xmlns="urn:xmpp:sm:3"/></stream:features>"#).unwrap();
        assert!(a.is("features", "http://etherx.jabber.org/streams"));
        assert!(a.get_child("sm", "urn:xmpp:sm:3").is_some());
        let b = Element::parse(
            r#"<message type="chat" to='b@x' xmlns="jabber:client"><body>a &amp; b &#x263A; <![CDATA[<c>]]></body></message>"#,
        )
        .unwrap();
        let c = Element::parse(
            r#"<m:message xmlns:m='jabber:client' to="b@x" type='chat'><m:body>a &amp; b &#9786; &lt;c&gt;</m:body></m:message>"#,
        )
        .unwrap();
        assert_eq!(b.get_attr("to"), c.get_attr("to"));
        assert_eq!(b.get_child("body", "jabber:client").unwrap().text_content(), "a & b \u{263a} <c>");
        assert_eq!(c.get_child("body", "jabber:client").unwrap().text_content(), "a & b \u{263a} <c>");
    }

    #[test]
    fn round_trips_with_escaping() {
        let e = Element::new("message", "jabber:client")
            .attr("to", "o'brien@x")
            .child(Element::new("body", "jabber:client").text("<&'\"> \u{1}ok"))
            .child(Element::new("origin-id", "urn:xmpp:sid:0").attr("id", "1"));
        let xml = e.to_xml();
        let back = Element::parse(&xml).unwrap();
        assert_eq!(back.get_attr("to"), Some("o'brien@x"));
        assert_eq!(back.get_child("body", "jabber:client").unwrap().text_content(), "<&'\"> ok");
        assert_eq!(back.get_child("origin-id", "urn:xmpp:sid:0").unwrap().get_attr("id"), Some("1"));
    }

    proptest::proptest! {
        /// Any text and attribute value (XML-legal characters) comes back as it went out.
        #[test]
        fn any_text_and_attribute_round_trips(text in "[\\t\\n\\x20-\\u{D7FF}\\u{E000}-\\u{FFFD}]{0,64}", value in "[\\x20-\\u{D7FF}]{0,32}") {
            let e = Element::new("message", "jabber:client").attr("to", value.clone()).child(Element::new("body", "jabber:client").text(text.clone()));
            let back = Element::parse(&e.to_xml()).unwrap();
            // Attribute values are normalised by XML itself: whitespace becomes spaces.
            proptest::prop_assert_eq!(back.get_attr("to"), Some(value.as_str()));
            let body = back.get_child("body", "jabber:client").map(Element::text_content).unwrap_or_default();
            // XML turns a lone \r into \n on input.
            proptest::prop_assert_eq!(body, text.replace("\r\n", "\n").replace('\r', "\n"));
        }
    }

    #[test]
    fn refuses_what_is_not_one_clean_element() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "text",
            "<a>&bogus;</a>",
            "<a><!-- c --></a>",
            "<!DOCTYPE a><a/>",
            "<p:a/>",
            "<a x='1' x='2'/>",
            "<a x=1/>",
        ] {
            assert!(Element::parse(bad).is_err(), "accepted {bad:?}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(Element::parse(&deep).is_err());
    }
}
