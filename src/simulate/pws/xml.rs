//! A tiny owned XML tree for request bodies, and escaping for the bodies we write.
//!
//! Request bodies are small (the HTTP layer caps them at 1 MiB), so a tree is simpler than a
//! streaming parser and lets each operation look elements up by *local name*: PWS clients
//! send PIDF with and without prefixes and with assorted namespace declarations, and the
//! reference says to match on local names only.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Deeper nesting than this is refused; it also keeps the recursive `Drop` of the tree shallow
/// (a 1 MiB body of `<a>` would otherwise be 300 000 levels deep).
const MAX_DEPTH: usize = 64;

/// One element: local name, attributes by local name, concatenated direct text, children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == local)
            .map(|(_, v)| v.as_str())
    }

    /// First direct child with this local name.
    pub fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == local)
    }

    /// Trimmed text of the first direct child with this local name.
    pub fn child_text(&self, local: &str) -> Option<&str> {
        self.child(local).map(|c| c.text.trim())
    }

    /// First element with this local name anywhere below (depth first), not `self`.
    pub fn descendant(&self, local: &str) -> Option<&Element> {
        for c in &self.children {
            if c.name == local {
                return Some(c);
            }
            if let Some(d) = c.descendant(local) {
                return Some(d);
            }
        }
        None
    }
}

/// Why a body is not a usable XML document (error 102 in PWS terms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

fn err(m: impl Into<String>) -> XmlError {
    XmlError(m.into())
}

/// Parses a whole document with exactly one root element.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().trim_text(false);
    let decoder = reader.decoder();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;

    let open = |e: &BytesStart<'_>| -> Result<Element, XmlError> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| err(e.to_string()))?;
            let key = a.key;
            // Namespace declarations are not data.
            if key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:") {
                continue;
            }
            let k = String::from_utf8_lossy(key.local_name().as_ref()).into_owned();
            let v = a
                .decode_and_unescape_value(decoder)
                .map_err(|e| err(e.to_string()))?
                .into_owned();
            attrs.push((k, v));
        }
        Ok(Element {
            name,
            attrs,
            ..Element::default()
        })
    };

    loop {
        let ev = reader.read_event().map_err(|e| err(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(err("more than one root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err("nesting too deep"));
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                let el = open(&e)?;
                close(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                // quick-xml checks that end names match their start tags.
                let el = stack.pop().ok_or_else(|| err("unexpected end tag"))?;
                close(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| err(e.to_string()))?;
                text(&mut stack, &s)?;
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| err(e.to_string()))?;
                text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| err(e.to_string()))? {
                    Some(c) => c,
                    None => match &*r {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        other => {
                            return Err(err(format!(
                                "unknown entity &{};",
                                String::from_utf8_lossy(other)
                            )))
                        }
                    },
                };
                text(&mut stack, resolved.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(err("DOCTYPE not allowed")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(err("unclosed element"));
    }
    root.ok_or_else(|| err("no root element"))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err(err("more than one root element")),
    }
    Ok(())
}

fn text(stack: &mut [Element], s: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.text.push_str(s),
        None if s.trim().is_empty() => {}
        None => return Err(err("text outside the root element")),
    }
    Ok(())
}

/// Appends `s` escaped for use in text or a double-quoted attribute.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_local_name_and_unescapes() {
        let doc = r#"<?xml version="1.0"?>
            <p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">
              <tuple id="x&amp;y"><note>a &lt; b &#65;</note></tuple>
              <![CDATA[ignored?]]>
            </p:presence>"#;
        let el = parse(doc).unwrap();
        assert_eq!(el.name, "presence");
        assert_eq!(el.attr("entity"), Some("sip:a@b"));
        let t = el.child("tuple").unwrap();
        assert_eq!(t.attr("id"), Some("x&y"));
        assert_eq!(t.child_text("note"), Some("a < b A"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "text",
            "<a>&foo;</a>",
            "<!DOCTYPE a><a/>",
            "<a x='1' x='2'/>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let deep = "<a>".repeat(10_000);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
