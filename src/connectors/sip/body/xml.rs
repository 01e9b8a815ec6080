//! The bounded, namespace-aware pull parser every SIP XML body shares.
//!
//! Elements are identified by **namespace URI + local name** (quick-xml's [`NsReader`]),
//! never by prefix: `rpid:`, `r:`, `ep:` and a default namespace on a child all name the
//! same RPID elements, and the same prefix can mean different namespaces in different
//! documents. Attributes are the unprefixed ones (every attribute we read is unqualified in
//! its schema), so `xmlns:id="…"` can never be mistaken for `id`.
//!
//! Bounds (see [`super`] for the numbers): nesting deeper than [`MAX_DEPTH`] is an error,
//! anywhere in the document, including subtrees that are skipped; kept text and attribute
//! values are cut at [`MAX_TEXT`] bytes (on a character boundary) instead of failing, since a
//! long note is not an attack worth refusing a whole NOTIFY for. Time is linear in the input.
//!
//! Entities: the five predefined ones and character references are resolved. A document
//! type declaration is *skipped, never read* (XPIDF documents carry one), so no entity is
//! ever defined; a reference to any other entity in a value we keep is
//! [`BodyError::UnknownEntity`]. That is what stops the "billion laughs" family: nothing is
//! ever expanded.

use super::{BodyError, MAX_DEPTH, MAX_TEXT};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use std::borrow::Cow;

pub const NS_PIDF: &[u8] = b"urn:ietf:params:xml:ns:pidf";
pub const NS_DATA_MODEL: &[u8] = b"urn:ietf:params:xml:ns:pidf:data-model";
pub const NS_RPID: &[u8] = b"urn:ietf:params:xml:ns:pidf:rpid";
pub const NS_RPID_STATUS: &[u8] = b"urn:ietf:params:xml:ns:pidf:status:rpid-status";
pub const NS_DIALOG_INFO: &[u8] = b"urn:ietf:params:xml:ns:dialog-info";
pub const NS_RLMI: &[u8] = b"urn:ietf:params:xml:ns:rlmi";

/// The namespaces the parsers distinguish. Everything else is `Other` and gets skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// No namespace (XPIDF, or a document that forgot its `xmlns`).
    None,
    Pidf,
    DataModel,
    Rpid,
    /// Pre-RFC RPID (`…:pidf:status:rpid-status`), activities as text (§3.5).
    RpidStatus,
    DialogInfo,
    Rlmi,
    Other,
}

impl Ns {
    fn of(resolved: &ResolveResult<'_>) -> Ns {
        match resolved {
            ResolveResult::Unbound => Ns::None,
            // An undeclared prefix: not well-formed in the namespace sense; treated as a
            // foreign element so it is skipped rather than failing the document.
            ResolveResult::Unknown(_) => Ns::Other,
            ResolveResult::Bound(ns) => match ns.as_ref() {
                NS_PIDF => Ns::Pidf,
                NS_DATA_MODEL => Ns::DataModel,
                NS_RPID => Ns::Rpid,
                NS_RPID_STATUS => Ns::RpidStatus,
                NS_DIALOG_INFO => Ns::DialogInfo,
                NS_RLMI => Ns::Rlmi,
                _ => Ns::Other,
            },
        }
    }
}

/// A start tag with its resolved namespace.
pub struct Elem<'a> {
    pub ns: Ns,
    pub start: BytesStart<'a>,
}

impl Elem<'_> {
    /// The local name (after any prefix).
    pub fn local(&self) -> &[u8] {
        let name = self.start.name().into_inner();
        match name.iter().position(|&b| b == b':') {
            Some(i) => &name[i + 1..],
            None => name,
        }
    }

    /// The local name for error messages and tokens: lossy UTF-8, at most 64 bytes.
    pub fn shown(&self) -> String {
        shown(self.local())
    }
}

/// A name for a message: lossy, and short whatever the input.
pub fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned()
}

enum Tok<'a> {
    Open(Elem<'a>),
    Close,
    Text(Piece<'a>),
}

enum Piece<'a> {
    /// Text in escaped form (references arrive separately as `Ref`).
    Raw(Cow<'a, [u8]>),
    /// CDATA content, taken literally.
    Literal(Cow<'a, [u8]>),
    Ref(BytesRef<'a>),
}

pub struct Parser<'a> {
    reader: NsReader<&'a [u8]>,
    /// Open elements, including the one just returned as `Open`.
    depth: usize,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let mut reader = NsReader::from_reader(body);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        // `<a/>` arrives as `<a></a>`: every element is consumed the same way.
        config.expand_empty_elements = true;
        Parser { reader, depth: 0 }
    }

    fn malformed(&self, source: quick_xml::Error) -> BodyError {
        BodyError::Malformed {
            position: self.reader.buffer_position(),
            message: source.to_string(),
        }
    }

    fn next(&mut self) -> Result<Option<Tok<'a>>, BodyError> {
        loop {
            let (ns, event) = match self.reader.read_resolved_event() {
                Ok((resolved, event)) => (Ns::of(&resolved), event),
                Err(e) => return Err(self.malformed(e)),
            };
            return Ok(Some(match event {
                Event::Start(start) => {
                    if self.depth >= MAX_DEPTH {
                        return Err(BodyError::TooDeep {
                            element: shown(start.local_name().into_inner()),
                        });
                    }
                    self.depth += 1;
                    Tok::Open(Elem { ns, start })
                }
                Event::End(_) => {
                    // quick-xml checks end names against the open elements, so an end tag
                    // without a start never gets here with depth 0; stay defensive anyway.
                    self.depth = self.depth.checked_sub(1).ok_or(BodyError::Malformed {
                        position: self.reader.buffer_position(),
                        message: "end tag without start tag".into(),
                    })?;
                    Tok::Close
                }
                // Not produced with `expand_empty_elements`; counted like a start + end.
                Event::Empty(start) => {
                    if self.depth >= MAX_DEPTH {
                        return Err(BodyError::TooDeep {
                            element: shown(start.local_name().into_inner()),
                        });
                    }
                    continue;
                }
                Event::Text(t) => Tok::Text(Piece::Raw(t.into_inner())),
                Event::CData(c) => Tok::Text(Piece::Literal(c.into_inner())),
                Event::GeneralRef(r) => Tok::Text(Piece::Ref(r)),
                // Skipped, never interpreted: no entity is ever defined (module docs).
                Event::DocType(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
                Event::Eof if self.depth > 0 => return Err(BodyError::Truncated),
                Event::Eof => return Ok(None),
            }));
        }
    }

    /// The root element (declarations, comments, a DOCTYPE and whitespace before it are
    /// ignored).
    pub fn root(&mut self) -> Result<Elem<'a>, BodyError> {
        loop {
            match self.next()? {
                Some(Tok::Open(e)) => return Ok(e),
                Some(_) => {}
                None => return Err(BodyError::NoRoot),
            }
        }
    }

    /// The next child element of the current element, or `None` once the current element
    /// is closed. Text between children is ignored. After `Some`, the caller consumes the
    /// child with [`skip`](Self::skip), [`text`](Self::text), or `child` calls up to `None`.
    pub fn child(&mut self) -> Result<Option<Elem<'a>>, BodyError> {
        loop {
            match self.next()? {
                Some(Tok::Open(e)) => return Ok(Some(e)),
                Some(Tok::Close) => return Ok(None),
                Some(Tok::Text(_)) => {}
                None => return Err(BodyError::Truncated),
            }
        }
    }

    /// Skips the rest of the current element (iteratively: no recursion on hostile depth).
    pub fn skip(&mut self) -> Result<(), BodyError> {
        let mut open = 1usize;
        while open > 0 {
            match self.next()? {
                Some(Tok::Open(_)) => open += 1,
                Some(Tok::Close) => open -= 1,
                Some(Tok::Text(_)) => {}
                None => return Err(BodyError::Truncated),
            }
        }
        Ok(())
    }

    /// The direct text of the current element up to its end (child elements skipped),
    /// trimmed, and cut at [`MAX_TEXT`] bytes. Empty when there is none.
    pub fn text(&mut self) -> Result<String, BodyError> {
        let mut out = Bounded::default();
        loop {
            let piece = match self.next()? {
                Some(Tok::Text(piece)) => piece,
                Some(Tok::Open(_)) => {
                    self.skip()?;
                    continue;
                }
                Some(Tok::Close) => return Ok(out.finish()),
                None => return Err(BodyError::Truncated),
            };
            match piece {
                Piece::Raw(bytes) | Piece::Literal(bytes) => {
                    if out.full() {
                        continue;
                    }
                    let text = std::str::from_utf8(&bytes).map_err(|e| BodyError::Malformed {
                        position: self.reader.buffer_position(),
                        message: format!("text is not UTF-8: {e}"),
                    })?;
                    out.push(text);
                }
                Piece::Ref(r) => {
                    // Resolved even when full, so an undefined entity is always an error.
                    let resolved = self.resolve(&r)?;
                    out.push(&resolved);
                }
            }
        }
    }

    /// A character reference or one of the five predefined entities.
    fn resolve(&self, r: &BytesRef<'_>) -> Result<Cow<'static, str>, BodyError> {
        if r.is_char_ref() {
            return match r.resolve_char_ref() {
                Ok(Some(c)) => Ok(Cow::Owned(c.to_string())),
                Ok(None) => Err(BodyError::UnknownEntity(shown(r))),
                Err(e) => Err(self.malformed(e)),
            };
        }
        quick_xml::escape::resolve_predefined_entity(&String::from_utf8_lossy(r))
            .map(Cow::Borrowed)
            .ok_or_else(|| BodyError::UnknownEntity(shown(r)))
    }

    /// The unprefixed attributes `names` of `e`, unescaped, trimmed and cut at
    /// [`MAX_TEXT`]; `None` for a missing one. One pass over the attributes; the first
    /// occurrence of a name wins (no duplicate check: quick-xml's is quadratic).
    pub fn attrs<const N: usize>(
        &self,
        e: &Elem<'_>,
        names: [&[u8]; N],
    ) -> Result<[Option<String>; N], BodyError> {
        let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
        for attr in e.start.attributes().with_checks(false) {
            let attr = attr.map_err(|err| self.malformed(err.into()))?;
            let key = attr.key.into_inner();
            let Some(i) = names.iter().position(|n| *n == key) else {
                continue;
            };
            if out[i].is_some() {
                continue;
            }
            let mut unknown = None;
            let value = attr
                .decode_and_unescape_value_with(self.reader.decoder(), |entity| {
                    let found = quick_xml::escape::resolve_predefined_entity(entity);
                    if found.is_none() && unknown.is_none() {
                        unknown = Some(shown(entity.as_bytes()));
                    }
                    found
                })
                .map_err(|err| match unknown.take() {
                    Some(entity) => BodyError::UnknownEntity(entity),
                    None => self.malformed(err),
                })?;
            let mut b = Bounded::default();
            b.push(&value);
            out[i] = Some(b.finish());
        }
        Ok(out)
    }

    /// Whether `e` carries RFC 3863 `mustUnderstand="true"` (any prefix). The parsers
    /// cannot honour it (it marks an extension we don't know); callers may log it.
    pub fn must_understand(&self, e: &Elem<'_>) -> bool {
        e.start.attributes().with_checks(false).any(|a| {
            a.is_ok_and(|a| {
                a.key.local_name().as_ref() == b"mustUnderstand"
                    && matches!(a.value.as_ref(), b"true" | b"1")
            })
        })
    }
}

/// A string that keeps at most [`MAX_TEXT`] bytes (cut on a char boundary) and drops
/// leading whitespace as it goes, so padding does not eat the budget.
#[derive(Default)]
struct Bounded {
    s: String,
    full: bool,
}

impl Bounded {
    fn full(&self) -> bool {
        self.full
    }

    fn push(&mut self, text: &str) {
        if self.full {
            return;
        }
        let text = if self.s.is_empty() {
            text.trim_start()
        } else {
            text
        };
        let room = MAX_TEXT - self.s.len();
        if text.len() <= room {
            self.s.push_str(text);
        } else {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.s.push_str(&text[..cut]);
            self.full = true;
        }
    }

    fn finish(self) -> String {
        let mut s = self.s;
        let end = s.trim_end().len();
        s.truncate(end);
        s.replace("\r\n", "\n")
    }
}

/// `None` for an empty string.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A token as compared: trimmed and ASCII-lowercased.
pub fn token(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_is_cut_on_char_boundary() {
        let mut b = Bounded::default();
        b.push("   ");
        b.push("  x");
        b.push(&"é".repeat(MAX_TEXT));
        let s = b.finish();
        assert!(s.len() <= MAX_TEXT && s.len() > MAX_TEXT - 2, "{}", s.len());
        assert!(s.starts_with("xé"));
    }

    #[test]
    fn namespaces_not_prefixes() {
        let doc = br#"<a xmlns="urn:ietf:params:xml:ns:pidf" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" xmlns:rpid="urn:other">
            <r:busy/><rpid:busy/><x xmlns="urn:ietf:params:xml:ns:pidf:rpid"/><u:z/></a>"#;
        let mut p = Parser::new(doc);
        let root = p.root().unwrap();
        assert_eq!((root.ns, root.local()), (Ns::Pidf, &b"a"[..]));
        let mut seen = vec![];
        while let Some(c) = p.child().unwrap() {
            seen.push((c.ns, c.shown()));
            p.skip().unwrap();
        }
        assert_eq!(
            seen,
            [
                (Ns::Rpid, "busy".to_string()),
                (Ns::Other, "busy".to_string()),
                (Ns::Rpid, "x".to_string()),
                (Ns::Other, "z".to_string()),
            ]
        );
    }
}
