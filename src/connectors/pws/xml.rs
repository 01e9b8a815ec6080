//! PWS REST bodies: parsing what the server sends, building what we send.
//!
//! Parsing is a small pull parser over quick-xml's reader ([`Parser`]) that every body
//! shares. Elements and attributes are matched by **local name**, because PWS mixes
//! namespaces and prefixes between releases (`person` in a Cisco namespace, tuples with or
//! without their own `xmlns`, `sc:servcaps`…). Whitespace, XML declarations, comments,
//! processing instructions and unknown elements or attributes are ignored; unknown
//! subtrees are skipped without being stored.
//!
//! The input may come from a misbehaving server or a proxy, so parsing is bounded: nesting
//! deeper than [`MAX_DEPTH`], a kept text or attribute value longer than [`MAX_TEXT`], or
//! more than [`MAX_ENTRIES`] contacts in one list is an error. Memory kept is at most what
//! the parsed values need (never more than the input), and time is linear in the input.
//! Entities: the five predefined ones and character references are resolved; a document
//! type declaration is refused ([`PwsXmlError::Doctype`]), so custom entities (the
//! "billion laughs" family) never get a definition, and an unknown entity reference in a
//! value we keep is an error. The caller bounds the body size itself.
//!
//! Building escapes every value; the one value that becomes an element name (the rich
//! activity) is validated instead.

use quick_xml::errors::IllFormedError;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;
use std::borrow::Cow;

/// Deepest element nesting accepted (PWS bodies need 5).
pub const MAX_DEPTH: usize = 64;
/// Longest text or attribute value kept, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
/// Most entries (`contact`s or `presence` documents) in one list. PWS allows 5000 contacts
/// per subscription; anything far beyond that is not a real answer.
pub const MAX_ENTRIES: usize = 20_000;
/// Most `tuple`s in one PIDF document (one per device or client of a user).
pub const MAX_TUPLES: usize = 1_000;
/// Most activity elements in one PIDF document.
pub const MAX_ACTIVITIES: usize = 64;

/// Why a PWS body could not be parsed (or a request body not built).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PwsXmlError {
    #[error("malformed XML at byte {position}: {source}")]
    Malformed {
        position: u64,
        #[source]
        source: quick_xml::Error,
    },
    #[error("document type declarations are not accepted")]
    Doctype,
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("text or attribute value longer than {MAX_TEXT} bytes")]
    TooLong,
    #[error("more than {limit} <{element}> elements")]
    TooMany { element: &'static str, limit: usize },
    #[error("no root element")]
    NoRoot,
    #[error("document ends inside an element")]
    Truncated,
    #[error("root element is <{found}>, expected <{expected}>")]
    UnexpectedRoot {
        expected: &'static str,
        found: String,
    },
    #[error("<{0}> is missing or empty")]
    Missing(&'static str),
    #[error("{0:?} is not a valid XML element name")]
    InvalidName(String),
}

/// Where to log in instead (an end user homed on another node, §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub primary: String,
    pub backup: Option<String>,
}

/// The body of a PWS error answer (§5.3). Every field is optional: proxies answer with
/// HTML or nothing at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PwsErrorBody {
    pub code: Option<u32>,
    pub message: Option<String>,
    pub fix: Option<String>,
}

/// One entry of a basic presence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicContact {
    /// `contactURI` as sent (trimmed), e.g. `alice@example.com`.
    pub uri: String,
    /// `presenceStatus` as sent (empty when absent), e.g. `AWAY`.
    pub status: String,
}

/// One PIDF document of a rich presence list, reduced to what normalization reads.
/// Text values are trimmed; empty ones are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pidf {
    /// `presence/@entity`, e.g. `sip:alice@example.com`.
    pub entity: String,
    /// Local names of the empty children of `person/activities` in document order, without
    /// duplicates: the overall state (`busy`) and its qualifiers (`on-the-phone`).
    pub activities: Vec<String>,
    pub phone_status: Option<String>,
    pub im_status: Option<String>,
    /// `user-input` of the person (`active` | `idle`), in `activities` or directly in it.
    pub user_input: Option<String>,
    /// The person's note, else a note directly under `presence`.
    pub note: Option<String>,
    pub display_name: Option<String>,
    pub tuples: Vec<Tuple>,
}

/// One device or client of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuple {
    /// `tuple/@id`, e.g. `cisco-upc`, `cisco-pws`, `pws-override`.
    pub id: String,
    /// `status/basic`: `open` | `closed`.
    pub basic: Option<String>,
    pub user_input: Option<String>,
    pub contact: Option<String>,
    pub note: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing

/// `<session><sessionKey>K</sessionKey></session>` → `K`.
pub fn parse_session_key(body: &[u8]) -> Result<String, PwsXmlError> {
    let mut p = Parser::new(body);
    p.expect_root("session")?;
    while let Some(child) = p.child()? {
        if local(&child) == b"sessionKey" {
            if let Some(key) = non_empty(p.text()?) {
                return Ok(key);
            }
        } else {
            p.skip()?;
        }
    }
    Err(PwsXmlError::Missing("sessionKey"))
}

/// `<session><redirect primaryServer=".." backupServer=".."/></session>`; `None` for any
/// other body (including malformed ones).
pub fn parse_redirect(body: &[u8]) -> Option<Redirect> {
    let mut p = Parser::new(body);
    p.expect_root("session").ok()?;
    while let Some(child) = p.child().ok()? {
        if local(&child) == b"redirect" {
            let primary = p.attr(&child, b"primaryServer").ok()?.and_then(non_empty)?;
            let backup = p.attr(&child, b"backupServer").ok()?.and_then(non_empty);
            return Some(Redirect { primary, backup });
        }
        p.skip().ok()?;
    }
    None
}

/// The id in a `Location` header: the whole last path segment, so
/// `http://h/presence-service/endpoints/10` → `10`. Query, fragment and trailing slashes are
/// ignored; a location without a path segment gives `None`.
pub fn id_from_location(location: &str) -> Option<String> {
    let s = location.trim();
    let s = s.split(['?', '#']).next().unwrap_or_default();
    // Drop `scheme://authority` so a bare `http://host` is not mistaken for an id.
    let path = match s.find("://") {
        Some(i) => {
            let rest = &s[i + 3..];
            &rest[rest.find('/')?..]
        }
        None => s,
    };
    let id = path.trim_end_matches('/').rsplit('/').next()?.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The error body of §5.3, found at the root or anywhere below it. Never fails: what could
/// be read is kept, the rest is `None` (non-XML bodies give all `None`).
pub fn parse_error(body: &[u8]) -> PwsErrorBody {
    let mut out = PwsErrorBody::default();
    // An error half-way through still leaves the fields read before it.
    let _ = parse_error_into(body, &mut out);
    out
}

fn parse_error_into(body: &[u8], out: &mut PwsErrorBody) -> Result<(), PwsXmlError> {
    let mut p = Parser::new(body);
    loop {
        match p.next()? {
            None => return Ok(()),
            Some(Tok::Open(e)) if local(&e) == b"description" => break,
            Some(_) => {}
        }
    }
    while let Some(child) = p.child()? {
        match local(&child) {
            b"code" => out.code = p.text()?.trim().parse().ok(),
            b"message" => out.message = non_empty(p.text()?),
            b"fix" => out.fix = non_empty(p.text()?),
            _ => p.skip()?,
        }
    }
    Ok(())
}

/// `<presenceList type="basic"><contact contactURI=".." presenceStatus=".."/>…`. An empty
/// list is `Ok(vec![])`; contacts without a `contactURI` are dropped.
pub fn parse_basic_list(body: &[u8]) -> Result<Vec<BasicContact>, PwsXmlError> {
    let mut p = Parser::new(body);
    p.expect_root("presenceList")?;
    let mut contacts = Vec::new();
    let mut seen = 0usize;
    while let Some(child) = p.child()? {
        if local(&child) != b"contact" {
            p.skip()?;
            continue;
        }
        seen += 1;
        if seen > MAX_ENTRIES {
            return Err(PwsXmlError::TooMany {
                element: "contact",
                limit: MAX_ENTRIES,
            });
        }
        let uri = p.attr(&child, b"contactURI")?.and_then(non_empty);
        let status = p.attr(&child, b"presenceStatus")?.unwrap_or_default();
        p.skip()?;
        if let Some(uri) = uri {
            contacts.push(BasicContact { uri, status });
        }
    }
    Ok(contacts)
}

/// `<presenceList type="rich">` holding one PIDF `<presence>` per contact, or a bare
/// `<presence>` (polled presence). Documents without an `entity` are dropped.
pub fn parse_rich_list(body: &[u8]) -> Result<Vec<Pidf>, PwsXmlError> {
    let mut p = Parser::new(body);
    let root = p.root()?;
    match local(&root) {
        b"presence" => Ok(parse_pidf(&mut p, &root)?.into_iter().collect()),
        b"presenceList" => {
            let mut docs = Vec::new();
            let mut seen = 0usize;
            while let Some(child) = p.child()? {
                if local(&child) != b"presence" {
                    p.skip()?;
                    continue;
                }
                seen += 1;
                if seen > MAX_ENTRIES {
                    return Err(PwsXmlError::TooMany {
                        element: "presence",
                        limit: MAX_ENTRIES,
                    });
                }
                docs.extend(parse_pidf(&mut p, &child)?);
            }
            Ok(docs)
        }
        other => Err(PwsXmlError::UnexpectedRoot {
            expected: "presenceList or presence",
            found: shown_name(other),
        }),
    }
}

/// Reads one `<presence>` whose start tag `e` was just read.
fn parse_pidf(p: &mut Parser<'_>, e: &BytesStart<'_>) -> Result<Option<Pidf>, PwsXmlError> {
    let entity = p.attr(e, b"entity")?.and_then(non_empty);
    let mut pidf = Pidf::default();
    let mut presence_note = None;
    while let Some(child) = p.child()? {
        match local(&child) {
            b"person" => parse_person(p, &mut pidf)?,
            b"tuple" => {
                if pidf.tuples.len() >= MAX_TUPLES {
                    return Err(PwsXmlError::TooMany {
                        element: "tuple",
                        limit: MAX_TUPLES,
                    });
                }
                let tuple = parse_tuple(p, &child)?;
                pidf.tuples.push(tuple);
            }
            b"display-name" => pidf.display_name = non_empty(p.text()?).or(pidf.display_name),
            b"note" => presence_note = non_empty(p.text()?).or(presence_note),
            _ => p.skip()?,
        }
    }
    pidf.note = pidf.note.or(presence_note);
    Ok(entity.map(|entity| Pidf { entity, ..pidf }))
}

/// Reads the rest of a `<person>`; a document with several persons merges them.
fn parse_person(p: &mut Parser<'_>, pidf: &mut Pidf) -> Result<(), PwsXmlError> {
    let mut user_input = None;
    while let Some(child) = p.child()? {
        match local(&child) {
            b"activities" => parse_activities(p, pidf)?,
            b"user-input" => user_input = non_empty(p.text()?),
            b"note" => pidf.note = non_empty(p.text()?).or(pidf.note.take()),
            b"display-name" => {
                pidf.display_name = non_empty(p.text()?).or(pidf.display_name.take())
            }
            _ => p.skip()?,
        }
    }
    // `activities/user-input` (Cisco) wins over `person/user-input` (IETF RPID).
    if pidf.user_input.is_none() {
        pidf.user_input = user_input;
    }
    Ok(())
}

/// Reads the rest of `<activities>`: known text children into their fields, every other
/// child without text is an activity (`<busy/>`, `<on-the-phone/>`).
fn parse_activities(p: &mut Parser<'_>, pidf: &mut Pidf) -> Result<(), PwsXmlError> {
    while let Some(child) = p.child()? {
        let name = local(&child);
        let text = p.text()?;
        match name {
            b"phone-status" => pidf.phone_status = non_empty(text),
            b"im-status" => pidf.im_status = non_empty(text),
            b"user-input" => pidf.user_input = non_empty(text),
            _ if text.trim().is_empty() => {
                let name = decode_name(name)?;
                if !pidf.activities.contains(&name) {
                    if pidf.activities.len() >= MAX_ACTIVITIES {
                        return Err(PwsXmlError::TooMany {
                            element: "activities/*",
                            limit: MAX_ACTIVITIES,
                        });
                    }
                    pidf.activities.push(name);
                }
            }
            // An unknown child with text (RPID `<other>Lunch</other>`) is no state.
            _ => {}
        }
    }
    Ok(())
}

/// Reads one `<tuple>` whose start tag `e` was just read.
fn parse_tuple(p: &mut Parser<'_>, e: &BytesStart<'_>) -> Result<Tuple, PwsXmlError> {
    let mut tuple = Tuple {
        id: p.attr(e, b"id")?.unwrap_or_default().trim().to_string(),
        ..Tuple::default()
    };
    while let Some(child) = p.child()? {
        match local(&child) {
            b"status" => {
                while let Some(status) = p.child()? {
                    if local(&status) == b"basic" {
                        tuple.basic = non_empty(p.text()?);
                    } else {
                        p.skip()?;
                    }
                }
            }
            b"user-input" => tuple.user_input = non_empty(p.text()?),
            b"contact" => tuple.contact = non_empty(p.text()?),
            b"note" => tuple.note = tuple.note.or(non_empty(p.text()?)),
            _ => p.skip()?,
        }
    }
    Ok(tuple)
}

// ---------------------------------------------------------------------------------------
// Building. Every value goes through `escape` (`<>&'"`), so a password with markup in it
// stays a password.

/// App-user login body (§3.1).
pub fn session_body(password: &str) -> String {
    format!(
        "<session><password>{}</password></session>",
        escape(password)
    )
}

/// Endpoint registration body (§3.5).
pub fn endpoint_body(url: &str) -> String {
    format!("<endpoint><url>{}</url></endpoint>", escape(url))
}

/// Subscription body (§3.8).
pub fn subscription_body(contacts: &[String], endpoint_id: &str) -> String {
    let mut out = String::from("<subscription><contactsList>");
    for contact in contacts {
        out.push_str("<contact contactURI=\"");
        out.push_str(&escape(contact.as_str()));
        out.push_str("\"/>");
    }
    out.push_str("</contactsList><subscriptionType>PRESENCE_NOTIFICATION</subscriptionType>");
    out.push_str("<endPointID>");
    out.push_str(&escape(endpoint_id));
    out.push_str("</endPointID></subscription>");
    out
}

/// Basic presence body (§3.13), e.g. `<presence>BUSY</presence>`.
pub fn basic_presence_body(status: &str) -> String {
    format!("<presence>{}</presence>", escape(status))
}

/// Rich presence body (§3.14): one tuple (`pws-override` with override, else `cisco-pws`)
/// carrying the Cisco source element, and a Cisco-namespace person with the activity and
/// the optional note. The activity becomes an element name, so it must be a plain XML name
/// (`[A-Za-z_][A-Za-z0-9._-]*`, e.g. `away`, `on-the-phone`, `clear`); anything else is
/// [`PwsXmlError::InvalidName`] rather than a body that would inject markup.
pub fn rich_presence_body(
    entity: &str,
    activity: &str,
    note: Option<&str>,
    override_: bool,
) -> Result<String, PwsXmlError> {
    if !is_plain_name(activity) {
        return Err(PwsXmlError::InvalidName(
            activity.chars().take(64).collect(),
        ));
    }
    let (tuple_id, source) = if override_ {
        ("pws-override", "Human")
    } else {
        ("cisco-pws", "Presence Web Service")
    };
    // The person id is the user part of the entity, as in Cisco's samples.
    let user = entity.split_once(':').map_or(entity, |(_, rest)| rest);
    let person_id = user
        .split('@')
        .next()
        .filter(|u| !u.is_empty())
        .unwrap_or("pws");
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\
         <tuple id=\"{tuple_id}\"><status><basic>open</basic></status>\
         <source xmlns=\"urn:cisco:params:xml:ns:pidf:source\">{source}</source></tuple>\
         <person xmlns=\"urn:cisco:params:xml:ns:pidf:rpid\" id=\"{person_id}\">\
         <activities><{activity}/></activities>",
        entity = escape(entity),
        person_id = escape(person_id),
    );
    if let Some(note) = note {
        out.push_str("<note>");
        out.push_str(&escape(note));
        out.push_str("</note>");
    }
    out.push_str("</person></presence>");
    Ok(out)
}

fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// ---------------------------------------------------------------------------------------
// The bounded pull parser.

/// What [`Parser::next`] yields: markup reduced to what the body parsers care about.
enum Tok<'a> {
    Open(BytesStart<'a>),
    Close,
    /// A piece of character data (text, CDATA or a resolved reference) to be decoded only
    /// if kept.
    Text(Piece<'a>),
}

enum Piece<'a> {
    /// Raw text (escaped form; references come separately as `Ref`).
    Raw(Cow<'a, [u8]>),
    /// CDATA content, taken literally.
    Literal(Cow<'a, [u8]>),
    Ref(BytesRef<'a>),
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// Open elements, including the one just returned by `Open`.
    depth: usize,
    /// The last `Open` was an empty element (`<a/>`): its `Close` comes next.
    pending_close: bool,
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8]) -> Self {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let mut reader = Reader::from_reader(body);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        Parser {
            reader,
            depth: 0,
            pending_close: false,
        }
    }

    fn malformed(&self, source: quick_xml::Error) -> PwsXmlError {
        PwsXmlError::Malformed {
            position: self.reader.error_position(),
            source,
        }
    }

    /// The next token; `None` at the end of a document whose elements are all closed.
    fn next(&mut self) -> Result<Option<Tok<'a>>, PwsXmlError> {
        if self.pending_close {
            self.pending_close = false;
            self.depth -= 1;
            return Ok(Some(Tok::Close));
        }
        loop {
            let event = self.reader.read_event().map_err(|e| self.malformed(e))?;
            return Ok(Some(match event {
                Event::Start(_) | Event::Empty(_) if self.depth >= MAX_DEPTH => {
                    return Err(PwsXmlError::TooDeep);
                }
                Event::Start(e) => {
                    self.depth += 1;
                    Tok::Open(e)
                }
                // `<a/>` reads like `<a></a>`: every element is consumed the same way.
                Event::Empty(e) => {
                    self.depth += 1;
                    self.pending_close = true;
                    Tok::Open(e)
                }
                Event::End(e) => {
                    if self.depth == 0 {
                        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                        return Err(self.malformed(IllFormedError::UnmatchedEndTag(name).into()));
                    }
                    self.depth -= 1;
                    Tok::Close
                }
                Event::Text(t) => Tok::Text(Piece::Raw(t.into_inner())),
                Event::CData(c) => Tok::Text(Piece::Literal(c.into_inner())),
                Event::GeneralRef(r) => Tok::Text(Piece::Ref(r)),
                Event::DocType(_) => return Err(PwsXmlError::Doctype),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
                Event::Eof if self.depth > 0 => return Err(PwsXmlError::Truncated),
                Event::Eof => return Ok(None),
            }));
        }
    }

    /// The root element's start tag (text, comments and the like before it are ignored).
    fn root(&mut self) -> Result<BytesStart<'a>, PwsXmlError> {
        loop {
            match self.next()? {
                Some(Tok::Open(e)) => return Ok(e),
                Some(_) => {}
                None => return Err(PwsXmlError::NoRoot),
            }
        }
    }

    fn expect_root(&mut self, expected: &'static str) -> Result<BytesStart<'a>, PwsXmlError> {
        let root = self.root()?;
        if local(&root) == expected.as_bytes() {
            Ok(root)
        } else {
            Err(PwsXmlError::UnexpectedRoot {
                expected,
                found: shown_name(local(&root)),
            })
        }
    }

    /// The next child element of the current element, or `None` once the current element
    /// is closed. Text between children is ignored. After `Some`, the caller must consume
    /// the child with `skip`, `text`, or further `child` calls up to `None`.
    fn child(&mut self) -> Result<Option<BytesStart<'a>>, PwsXmlError> {
        loop {
            match self.next()? {
                Some(Tok::Open(e)) => return Ok(Some(e)),
                Some(Tok::Close) => return Ok(None),
                Some(Tok::Text(_)) => {}
                None => return Err(PwsXmlError::Truncated),
            }
        }
    }

    /// Skips the rest of the current element (iteratively: no recursion on hostile depth).
    fn skip(&mut self) -> Result<(), PwsXmlError> {
        let mut open = 1usize;
        while open > 0 {
            match self.next()? {
                Some(Tok::Open(_)) => open += 1,
                Some(Tok::Close) => open -= 1,
                Some(Tok::Text(_)) => {}
                None => return Err(PwsXmlError::Truncated),
            }
        }
        Ok(())
    }

    /// The direct text of the current element, up to its end (child elements skipped).
    fn text(&mut self) -> Result<String, PwsXmlError> {
        let mut out = String::new();
        loop {
            let piece = match self.next()? {
                Some(Tok::Text(piece)) => piece,
                Some(Tok::Open(_)) => {
                    self.skip()?;
                    continue;
                }
                Some(Tok::Close) => return Ok(out),
                None => return Err(PwsXmlError::Truncated),
            };
            match piece {
                Piece::Raw(bytes) | Piece::Literal(bytes) => {
                    if out.len() + bytes.len() > MAX_TEXT {
                        return Err(PwsXmlError::TooLong);
                    }
                    let text = self
                        .reader
                        .decoder()
                        .decode(&bytes)
                        .map_err(|e| self.malformed(e.into()))?;
                    out.push_str(&text.replace("\r\n", "\n"));
                }
                Piece::Ref(r) => {
                    let resolved = self.resolve(&r)?;
                    if out.len() + resolved.len() > MAX_TEXT {
                        return Err(PwsXmlError::TooLong);
                    }
                    out.push_str(&resolved);
                }
            }
        }
    }

    /// A character reference or one of the five predefined entities; anything else is
    /// [`PwsXmlError::UnknownEntity`] (no DTD is ever read, so nothing else is defined).
    fn resolve(&self, r: &BytesRef<'_>) -> Result<Cow<'static, str>, PwsXmlError> {
        if r.is_char_ref() {
            return match r.resolve_char_ref() {
                Ok(Some(c)) => Ok(Cow::Owned(c.to_string())),
                Ok(None) => Err(PwsXmlError::UnknownEntity(shown_name(r))),
                Err(e) => Err(self.malformed(e)),
            };
        }
        let name = r.decode().map_err(|e| self.malformed(e.into()))?;
        resolve_predefined_entity(&name)
            .map(Cow::Borrowed)
            .ok_or_else(|| PwsXmlError::UnknownEntity(shown_name(r)))
    }

    /// The unescaped value of the attribute of `e` with local name `name`.
    /// The first one wins; duplicates are not looked for, because quick-xml's duplicate
    /// check is quadratic in the number of attributes.
    fn attr(&self, e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, PwsXmlError> {
        for attr in e.attributes().with_checks(false) {
            let attr = attr.map_err(|err| self.malformed(err.into()))?;
            if attr.key.local_name().as_ref() != name {
                continue;
            }
            if attr.value.len() > MAX_TEXT {
                return Err(PwsXmlError::TooLong);
            }
            let mut unknown = None;
            let value = attr
                .decode_and_unescape_value_with(self.reader.decoder(), |entity| {
                    let found = resolve_predefined_entity(entity);
                    if found.is_none() && unknown.is_none() {
                        unknown = Some(entity.chars().take(64).collect::<String>());
                    }
                    found
                })
                .map_err(|err| match unknown.take() {
                    Some(entity) => PwsXmlError::UnknownEntity(entity),
                    None => self.malformed(err),
                })?;
            return Ok(Some(value.into_owned()));
        }
        Ok(None)
    }
}

fn local<'e>(e: &'e BytesStart<'_>) -> &'e [u8] {
    let name = e.name().into_inner();
    // Same as `local_name()`, without tying the slice to a temporary.
    match name.iter().position(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

fn decode_name(name: &[u8]) -> Result<String, PwsXmlError> {
    if name.len() > MAX_TEXT {
        return Err(PwsXmlError::TooLong);
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// A name for an error message: lossy, and short whatever the input.
fn shown_name(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned()
}

/// Trimmed, `None` when nothing is left.
fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else if t.len() == s.len() {
        Some(s)
    } else {
        Some(t.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// §5.1, as captured from a real server.
    const BASIC_SAMPLE: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?>
<presenceList type="basic">
    <contact contactURI="alice@example.com" presenceStatus="AWAY"/>
    <contact contactURI="bob@example.com" presenceStatus="UNKNOWN"/>
</presenceList>
"#;

    /// §5.2.
    pub(crate) const RICH_SAMPLE: &[u8] =
        br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">
  <person xmlns="urn:cisco:params:xml:ns:pidf:rpid" id="alice">
    <activities>
      <busy/>                              <!-- overall state element -->
      <on-the-phone/>                      <!-- optional qualifier -->
      <phone-status>busy</phone-status>
      <im-status>available</im-status>
      <user-input>active</user-input>      <!-- may also appear here -->
    </activities>
  </person>
  <display-name xmlns="urn:ietf:params:xml:ns:pidf:cipid">Alice Example</display-name>
  <tuple id="cisco-upc">                   <!-- one tuple per device/client -->
    <contact priority="0.6">sip:alice@example.com</contact>
    <note xml:lang="en"/>
    <sc:servcaps xmlns:sc="urn:ietf:params:xml:ns:pidf:servcaps">
      <sc:audio>false</sc:audio><sc:video>false</sc:video><sc:text>true</sc:text>
      <sc:type>text/plain</sc:type>
    </sc:servcaps>
    <user-input>active</user-input>        <!-- active | idle -->
    <status><basic>open</basic></status>   <!-- open | closed -->
  </tuple>
</presence>
"#;

    /// §5.3, as captured from a real server.
    const ERROR_SAMPLE: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?>
<description xmlns="urn:cisco:cup:presence:soap">
  <code>133</code>
  <message>The subscription id does not exist</message>
  <fix>Subscribe again</fix>
</description>
"#;

    fn sample_pidf() -> Pidf {
        Pidf {
            entity: "sip:alice@example.com".into(),
            activities: vec!["busy".into(), "on-the-phone".into()],
            phone_status: Some("busy".into()),
            im_status: Some("available".into()),
            user_input: Some("active".into()),
            note: None,
            display_name: Some("Alice Example".into()),
            tuples: vec![Tuple {
                id: "cisco-upc".into(),
                basic: Some("open".into()),
                user_input: Some("active".into()),
                contact: Some("sip:alice@example.com".into()),
                note: None,
            }],
        }
    }

    #[test]
    fn session_key() {
        let body = b"<?xml version=\"1.0\"?>\n<session>\n  <sessionKey> 8f0c1d2e-1111-2222-3333-444455556666 </sessionKey>\n</session>";
        assert_eq!(
            parse_session_key(body).unwrap(),
            "8f0c1d2e-1111-2222-3333-444455556666"
        );
        let prefixed = b"\xEF\xBB\xBF<p:session xmlns:p=\"urn:x\" extra=\"1\"><p:other>x</p:other><p:sessionKey>K</p:sessionKey></p:session>";
        assert_eq!(parse_session_key(prefixed).unwrap(), "K");
        assert!(matches!(
            parse_session_key(b"<session><sessionKey> </sessionKey></session>"),
            Err(PwsXmlError::Missing("sessionKey"))
        ));
        assert!(matches!(
            parse_session_key(b"<login><sessionKey>K</sessionKey></login>"),
            Err(PwsXmlError::UnexpectedRoot {
                expected: "session",
                ..
            })
        ));
        assert!(matches!(parse_session_key(b""), Err(PwsXmlError::NoRoot)));
    }

    #[test]
    fn redirect() {
        let body = br#"<session><redirect primaryServer="imp2.example.com" backupServer="imp3.example.com"/></session>"#;
        assert_eq!(
            parse_redirect(body),
            Some(Redirect {
                primary: "imp2.example.com".into(),
                backup: Some("imp3.example.com".into()),
            })
        );
        let no_backup = br#"<session><redirect primaryServer="imp2" backupServer=""/></session>"#;
        assert_eq!(parse_redirect(no_backup).unwrap().backup, None);
        assert_eq!(
            parse_redirect(b"<session><sessionKey>K</sessionKey></session>"),
            None
        );
        assert_eq!(parse_redirect(b"<session><redirect/></session>"), None);
        assert_eq!(parse_redirect(b"not xml"), None);
    }

    #[test]
    fn location_ids() {
        for (location, want) in [
            ("http://imp/presence-service/endpoints/9", Some("9")),
            ("http://imp/presence-service/endpoints/10", Some("10")),
            (
                "https://imp:8083/presence-service/endpoints/123456",
                Some("123456"),
            ),
            (
                "http://imp/presence-service/users/bob/subscriptions/123?x=y",
                Some("123"),
            ),
            ("http://imp/presence-service/endpoints/10/", Some("10")),
            ("http://imp/presence-service/endpoints/11#frag", Some("11")),
            ("/presence-service/endpoints/12", Some("12")),
            (" 13 ", Some("13")),
            ("http://imp", None),
            ("http://imp/", None),
            ("", None),
            ("/", None),
        ] {
            assert_eq!(id_from_location(location).as_deref(), want, "{location:?}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            parse_error(ERROR_SAMPLE),
            PwsErrorBody {
                code: Some(133),
                message: Some("The subscription id does not exist".into()),
                fix: Some("Subscribe again".into()),
            }
        );
        let none = PwsErrorBody::default();
        for body in [
            &b""[..],
            b"Service Unavailable",
            b"<html><body><h1>503</h1><br></body></html>",
            b"\xff\xfe\x00",
            b"<description><code>abc</code></description>",
        ] {
            assert_eq!(
                parse_error(body),
                none,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Fields before a fault in the document are kept.
        let cut = b"<description><code>210</code><message>max CPU";
        assert_eq!(parse_error(cut).code, Some(210));
        let nested = b"<Envelope><Body><Fault><detail><description><code>101</code></description></detail></Fault></Body></Envelope>";
        assert_eq!(parse_error(nested).code, Some(101));
    }

    #[test]
    fn basic_lists() {
        let want = vec![
            BasicContact {
                uri: "alice@example.com".into(),
                status: "AWAY".into(),
            },
            BasicContact {
                uri: "bob@example.com".into(),
                status: "UNKNOWN".into(),
            },
        ];
        assert_eq!(parse_basic_list(BASIC_SAMPLE).unwrap(), want);
        assert_eq!(
            parse_basic_list(br#"<presenceList type="basic"/>"#).unwrap(),
            vec![]
        );
        assert_eq!(
            parse_basic_list(b"<presenceList type=\"basic\">\n</presenceList>").unwrap(),
            vec![]
        );
        // Prefixes, unknown attributes and elements, entities, a contact without URI.
        let odd = br#"<ns:presenceList xmlns:ns="urn:x" type="basic" page="1">
            <ns:contact x:contactURI="carol&amp;co@example.com" presenceStatus="BUSY" extra="&#65;"><child/></ns:contact>
            <unknown>text</unknown>
            <contact presenceStatus="AWAY"/>
            <contact contactURI="dave@example.com"/>
        </ns:presenceList>"#;
        assert_eq!(
            parse_basic_list(odd).unwrap(),
            vec![
                BasicContact {
                    uri: "carol&co@example.com".into(),
                    status: "BUSY".into(),
                },
                BasicContact {
                    uri: "dave@example.com".into(),
                    status: "".into(),
                },
            ]
        );
    }

    #[test]
    fn rich_lists() {
        assert_eq!(parse_rich_list(RICH_SAMPLE).unwrap(), vec![sample_pidf()]);
        let sample = std::str::from_utf8(RICH_SAMPLE).unwrap();
        let list = format!(
            "<?xml version=\"1.0\"?><presenceList type=\"rich\">{sample}{}</presenceList>",
            sample.replace("alice", "bob")
        );
        let docs = parse_rich_list(list.as_bytes()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], sample_pidf());
        assert_eq!(docs[1].entity, "sip:bob@example.com");
        assert_eq!(
            parse_rich_list(br#"<presenceList type="rich"/>"#).unwrap(),
            vec![]
        );

        // Prefixed elements, several tuples, person notes, a document without entity.
        let body = br#"<presenceList type="rich">
          <presence entity="x"><tuple id="t"/></presence>
          <p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:ce="urn:cisco:params:xml:ns:pidf:rpid" entity="sip:carol@example.com">
            <ce:person id="carol"><ce:activities><ce:away/><ce:other>Lunch</ce:other><ce:away/></ce:activities>
              <ce:note>Back &lt;soon&gt;</ce:note><user-input>idle</user-input></ce:person>
            <p:tuple id="cisco-pws"><p:status><p:basic>closed</p:basic></p:status><p:note>pws</p:note></p:tuple>
            <tuple xmlns="urn:cisco:params:xml:ns:pidf" id="jabber"><status><basic> open </basic></status><note><![CDATA[a <b>]]></note></tuple>
          </p:presence>
          <presence><person><activities><busy/></activities></person></presence>
        </presenceList>"#;
        let docs = parse_rich_list(body).unwrap();
        assert_eq!(docs.len(), 2);
        let carol = &docs[1];
        assert_eq!(carol.entity, "sip:carol@example.com");
        assert_eq!(carol.activities, ["away"]);
        assert_eq!(carol.note.as_deref(), Some("Back <soon>"));
        assert_eq!(carol.user_input.as_deref(), Some("idle"));
        assert_eq!(carol.tuples.len(), 2);
        assert_eq!(carol.tuples[0].note.as_deref(), Some("pws"));
        assert_eq!(carol.tuples[1].basic.as_deref(), Some("open"));
        assert_eq!(carol.tuples[1].note.as_deref(), Some("a <b>"));
        assert!(matches!(
            parse_rich_list(b"<session/>"),
            Err(PwsXmlError::UnexpectedRoot { .. })
        ));
    }

    #[test]
    fn request_bodies() {
        assert_eq!(
            session_body("s3cret"),
            "<session><password>s3cret</password></session>"
        );
        assert_eq!(
            endpoint_body("http://bridge.example:8080/pws?a=1&b=2"),
            "<endpoint><url>http://bridge.example:8080/pws?a=1&amp;b=2</url></endpoint>"
        );
        assert_eq!(
            subscription_body(&["alice@example.com".into(), "b\"o<b@x".into()], "10"),
            "<subscription><contactsList><contact contactURI=\"alice@example.com\"/>\
             <contact contactURI=\"b&quot;o&lt;b@x\"/></contactsList>\
             <subscriptionType>PRESENCE_NOTIFICATION</subscriptionType>\
             <endPointID>10</endPointID></subscription>"
        );
        assert_eq!(basic_presence_body("BUSY"), "<presence>BUSY</presence>");
    }

    #[test]
    fn escaping_round_trip() {
        let password = r#"p<a&s>s"w'o;rd&amp;"#;
        let body = session_body(password);
        assert!(!body.contains("<a&"), "{body}");
        // Read back with the same parser the server side of the tests uses.
        let mut p = Parser::new(body.as_bytes());
        p.expect_root("session").unwrap();
        let child = p.child().unwrap().unwrap();
        assert_eq!(local(&child), b"password");
        assert_eq!(p.text().unwrap(), password);

        let contacts = vec![r#"a"&<>'@x"#.to_string()];
        let body = subscription_body(&contacts, "<1>");
        let list = body
            .replace("<subscription>", "<presenceList>")
            .replace("</subscription>", "</presenceList>")
            .replace("<contactsList>", "")
            .replace("</contactsList>", "");
        let parsed = parse_basic_list(list.as_bytes()).unwrap();
        assert_eq!(parsed[0].uri, contacts[0]);
    }

    #[test]
    fn rich_bodies() {
        let body = rich_presence_body(
            "sip:alice@example.com",
            "away",
            Some("Back <3 & \"soon\""),
            true,
        )
        .unwrap();
        assert!(body.contains(r#"<tuple id="pws-override">"#), "{body}");
        assert!(
            body.contains(r#"<source xmlns="urn:cisco:params:xml:ns:pidf:source">Human</source>"#)
        );
        assert!(body.contains(r#"<person xmlns="urn:cisco:params:xml:ns:pidf:rpid" id="alice">"#));
        let docs = parse_rich_list(body.as_bytes()).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].entity, "sip:alice@example.com");
        assert_eq!(docs[0].activities, ["away"]);
        assert_eq!(docs[0].note.as_deref(), Some("Back <3 & \"soon\""));
        assert_eq!(docs[0].tuples[0].id, "pws-override");
        assert_eq!(docs[0].tuples[0].basic.as_deref(), Some("open"));

        let body = rich_presence_body("a\"b@x", "on-the-phone", None, false).unwrap();
        assert!(body.contains(r#"<tuple id="cisco-pws">"#));
        assert!(body.contains(">Presence Web Service</source>"));
        assert!(!body.contains("<note>"));
        let docs = parse_rich_list(body.as_bytes()).unwrap();
        assert_eq!(docs[0].entity, "a\"b@x");
        assert_eq!(docs[0].activities, ["on-the-phone"]);

        for bad in ["", "busy/><x", "1busy", "bu sy", "a:b", "é"] {
            assert!(
                matches!(
                    rich_presence_body("alice@x", bad, None, false),
                    Err(PwsXmlError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
    }

    /// Every parser on `body`; none may panic.
    fn parse_all(body: &[u8]) -> [bool; 5] {
        let _ = parse_error(body);
        let _ = parse_redirect(body);
        let _ = id_from_location(&String::from_utf8_lossy(body));
        [
            parse_session_key(body).is_ok(),
            parse_basic_list(body).is_ok(),
            parse_rich_list(body).is_ok(),
            parse_redirect(body).is_some(),
            parse_error(body) != PwsErrorBody::default(),
        ]
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let deep = "<presenceList>".repeat(100_000);
        let deep_rich = format!("<presence entity=\"x\">{}", "<person>".repeat(10_000));
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<session><sessionKey>&lol3;</sessionKey></session>"#;
        let huge_attr = format!(
            "<presenceList><contact contactURI=\"{}\" presenceStatus=\"AWAY\"/></presenceList>",
            "a".repeat(1 << 20)
        );
        let huge_text = format!(
            "<session><sessionKey>{}</sessionKey></session>",
            "k".repeat(1 << 20)
        );
        let many_unknown = format!(
            "<presenceList>{}</presenceList>",
            "<x a=\"1\">t</x>".repeat(50_000)
        );
        let many_attrs: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
        let many_attrs =
            format!("<presenceList><contact{many_attrs} contactURI=\"z@x\"/></presenceList>");
        let many_refs = format!(
            "<session><sessionKey>{}</sessionKey></session>",
            "&amp;".repeat(70_000)
        );
        let nasty: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"<".to_vec(),
            b"<<<<>>>>".to_vec(),
            b"<session>".to_vec(),
            b"<session><sessionKey>K".to_vec(),
            b"</session>".to_vec(),
            b"<session></sessionKey>".to_vec(),
            b"<session><sessionKey>K</sessionKey></session></session>".to_vec(),
            b"<session><sessionKey>&unknown;</sessionKey></session>".to_vec(),
            b"<session><sessionKey>&#0;</sessionKey></session>".to_vec(),
            b"<session><sessionKey>&#xFFFFFFFFFF;</sessionKey></session>".to_vec(),
            b"<session><sessionKey>&#xD800;</sessionKey></session>".to_vec(),
            b"<session><sessionKey>&;</sessionKey></session>".to_vec(),
            b"<session><sessionKey>a & b</sessionKey></session>".to_vec(),
            b"<session><sessionKey>\xff\xfe</sessionKey></session>".to_vec(),
            b"<session><sessionKey><![CDATA[unterminated".to_vec(),
            b"<session><!-- unterminated".to_vec(),
            b"<session><?pi unterminated".to_vec(),
            b"<presenceList><contact contactURI=alice presenceStatus=AWAY/></presenceList>".to_vec(),
            b"<presenceList><contact contactURI=\"a\" contactURI=\"b\"/></presenceList>".to_vec(),
            b"<presenceList><contact contactURI=\"&bad;\"/></presenceList>".to_vec(),
            b"<presenceList><contact contactURI=\"&#0;\"/></presenceList>".to_vec(),
            b"<presenceList><contact contactURI=\"a\0b\"/></presenceList>".to_vec(),
            b"<presence entity=\"x\"><person><activities><\xff\xfe/></activities></person></presence>".to_vec(),
            b"<presence entity=\"x\"><person><activities><busy>&nope;</busy></activities></person></presence>".to_vec(),
            b"<:/>".to_vec(),
            b"<a:/>".to_vec(),
            b"<presence entity='x'><tuple id='\xff'/></presence>".to_vec(),
            b"\0\0\0\0".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
            b"\xFE\xFF\0<\0s".to_vec(),
            deep.into_bytes(),
            deep_rich.into_bytes(),
            laughs.as_bytes().to_vec(),
            huge_attr.into_bytes(),
            huge_text.into_bytes(),
            many_unknown.into_bytes(),
            many_refs.into_bytes(),
            many_attrs.into_bytes(),
        ];
        for body in &nasty {
            parse_all(body);
        }
        assert!(matches!(
            parse_basic_list(&nasty[31]),
            Err(PwsXmlError::TooDeep)
        ));
        assert!(matches!(
            parse_rich_list(&nasty[31]),
            Err(PwsXmlError::TooDeep)
        ));
        assert!(matches!(
            parse_rich_list(&nasty[32]),
            Err(PwsXmlError::TooDeep)
        ));
        assert!(matches!(
            parse_session_key(laughs.as_bytes()),
            Err(PwsXmlError::Doctype)
        ));
        assert!(matches!(
            parse_session_key(&nasty[8]),
            Err(PwsXmlError::UnknownEntity(e)) if e == "unknown"
        ));
        assert!(matches!(
            parse_basic_list(&nasty[20]),
            Err(PwsXmlError::UnknownEntity(e)) if e == "bad"
        ));
        assert!(matches!(
            parse_basic_list(&nasty[34]),
            Err(PwsXmlError::TooLong)
        ));
        assert!(matches!(
            parse_session_key(&nasty[35]),
            Err(PwsXmlError::TooLong)
        ));
        assert_eq!(parse_basic_list(&nasty[36]).unwrap(), vec![]);
        assert!(matches!(
            parse_session_key(&nasty[37]),
            Err(PwsXmlError::TooLong)
        ));
        assert_eq!(parse_basic_list(&nasty[38]).unwrap()[0].uri, "z@x");
        assert!(matches!(
            parse_session_key(&nasty[4]),
            Err(PwsXmlError::Truncated)
        ));
    }

    #[test]
    fn list_caps() {
        let list = |n: usize| {
            let mut body = String::from("<presenceList type=\"basic\">");
            for i in 0..n {
                body.push_str(&format!(
                    "<contact contactURI=\"u{i}@example.com\" presenceStatus=\"AWAY\"/>"
                ));
            }
            body.push_str("</presenceList>");
            body
        };
        assert_eq!(
            parse_basic_list(list(MAX_ENTRIES).as_bytes())
                .unwrap()
                .len(),
            MAX_ENTRIES
        );
        assert!(matches!(
            parse_basic_list(list(MAX_ENTRIES + 1).as_bytes()),
            Err(PwsXmlError::TooMany {
                element: "contact",
                limit: MAX_ENTRIES
            })
        ));
        let tuples = format!(
            "<presence entity=\"x\">{}</presence>",
            "<tuple id=\"t\"/>".repeat(MAX_TUPLES + 1)
        );
        assert!(matches!(
            parse_rich_list(tuples.as_bytes()),
            Err(PwsXmlError::TooMany {
                element: "tuple",
                ..
            })
        ));
        let activities: String = (0..=MAX_ACTIVITIES).map(|i| format!("<a{i}/>")).collect();
        let body = format!("<presence entity=\"x\"><person><activities>{activities}</activities></person></presence>");
        assert!(matches!(
            parse_rich_list(body.as_bytes()),
            Err(PwsXmlError::TooMany { .. })
        ));
    }
}
