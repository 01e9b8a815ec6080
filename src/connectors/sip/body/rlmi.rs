//! Resource lists (RFC 4662, reference §8): a `multipart/related` NOTIFY body whose root
//! part is RLMI (`application/rlmi+xml`) and whose other parts hold the state documents of
//! the listed resources.
//!
//! Multipart (RFC 2046/2387): the `boundary` parameter is required (1–70 characters). A
//! delimiter is a line that starts with `--boundary` followed only by optional transport
//! whitespace (the close delimiter has `--` after the boundary); the line break before a
//! delimiter belongs to it. Lines may end in CRLF or bare LF (SIPp and some proxies send
//! LF). The preamble and epilogue are ignored; a body that ends without a close delimiter
//! keeps its last part (a truncated part then fails on its own). At most [`MAX_ITEMS`]` + 1`
//! parts. Part headers: `Content-ID`, `Content-Type`, `Content-Transfer-Encoding`
//! (`binary`, `8bit`, `7bit` taken as is, `base64` decoded, others refused for that part).
//!
//! The root is the part whose `Content-ID` equals the `start` parameter, else the first
//! part; it must be RLMI. RLMI (namespace `urn:ietf:params:xml:ns:rlmi`):
//! `list @uri @version @fullState`, `name`; `resource @uri`, `name`; `instance @id @state
//! @reason @cid`. Nested `list` elements are skipped (a nested list's state arrives as a
//! multipart part, which is parsed like any other). Each instance's `cid` is looked up
//! among the parts' Content-IDs (angle brackets and a `cid:` prefix ignored on both sides)
//! and that part is parsed with [`super::parse_body`] by its own Content-Type, one
//! multipart level deeper (at most [`super::MAX_NESTING`]). A part is parsed once even if
//! several instances name it, and shared. One bad part does not fail the list: its
//! instance gets [`InstanceBody::Failed`].

use super::xml::{non_empty, token, Elem, Ns, Parser};
use super::{parse_at, Body, BodyError, MediaType, MAX_ITEMS, MAX_TEXT};
use base64::Engine as _;
use std::sync::Arc;

/// A resource list notification (`Body::List`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceList {
    pub uri: String,
    pub version: u64,
    /// `fullState="true"`: the list is complete; `false`: only changed resources are listed.
    pub full_state: bool,
    pub name: Option<String>,
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub uri: String,
    pub name: Option<String>,
    /// One per back-end subscription; none while the server has not gathered state yet
    /// (Kamailio's first NOTIFY, §8).
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// `@reason` on terminated instances (`rejected`, `timeout`, …), lower-cased.
    pub reason: Option<String>,
    /// `@cid` as sent.
    pub cid: Option<String>,
    pub body: InstanceBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Active,
    Pending,
    Terminated,
    /// Anything else, lower-cased (empty when missing).
    Other(String),
}

/// The state document of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceBody {
    /// The instance has no `cid` (pending, terminated, or no state yet).
    None,
    /// A `cid` that no part carries.
    Missing,
    /// The part is there but empty ("no state", like an empty NOTIFY).
    Empty,
    Parsed(Arc<Body>),
    /// The part could not be used; the rest of the list still is.
    Failed(BodyError),
}

impl Instance {
    /// The parsed document, if any.
    pub fn body(&self) -> Option<&Body> {
        match &self.body {
            InstanceBody::Parsed(b) => Some(b),
            _ => None,
        }
    }
}

impl Resource {
    /// The instance that best represents the resource: the first `active` one with a
    /// parsed body, else the first with a body, else the first.
    pub fn best_instance(&self) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.state == InstanceState::Active && i.body().is_some())
            .or_else(|| self.instances.iter().find(|i| i.body().is_some()))
            .or(self.instances.first())
    }
}

/// A bare `application/rlmi+xml` document (no state parts: every `cid` is missing).
pub fn parse_rlmi(body: &[u8]) -> Result<ResourceList, BodyError> {
    parse_list(body, &mut |_| InstanceBody::Missing)
}

/// A `multipart/related` body with an RLMI root (`media` carries `boundary`, `start`,
/// `type`), at multipart nesting `depth`.
pub(super) fn parse_multipart(
    media: &MediaType,
    body: &[u8],
    depth: usize,
) -> Result<ResourceList, BodyError> {
    if let Some(ty) = media.param("type") {
        if !ty.trim().eq_ignore_ascii_case("application/rlmi+xml") {
            return Err(BodyError::Unsupported(format!(
                "multipart/related with type={:?}",
                ty.chars().take(64).collect::<String>()
            )));
        }
    }
    let boundary = media
        .param("boundary")
        .ok_or_else(|| BodyError::Multipart("no boundary parameter".into()))?;
    let parts = split(body, boundary)?;
    let root_index = match media.param("start").map(clean_cid) {
        Some(start) => parts
            .iter()
            .position(|p| p.content_id.as_deref().map(clean_cid) == Some(start))
            .ok_or_else(|| {
                BodyError::Multipart(format!(
                    "no part has the start Content-ID <{}>",
                    start.chars().take(64).collect::<String>()
                ))
            })?,
        None => 0,
    };
    let root = &parts[root_index];
    if let Some(ct) = &root.content_type {
        let essence = MediaType::parse(ct).essence;
        if essence != "application/rlmi+xml" {
            return Err(BodyError::Multipart(format!(
                "root part is {:?}, not application/rlmi+xml",
                essence.chars().take(64).collect::<String>()
            )));
        }
    }
    let root_body = root.decoded().map_err(BodyError::Multipart)?;
    // Each part parsed at most once (several instances may name it).
    let mut cache: Vec<Option<InstanceBody>> = vec![None; parts.len()];
    parse_list(&root_body, &mut |cid| {
        let cid = clean_cid(cid);
        let Some(i) = parts.iter().enumerate().position(|(i, p)| {
            i != root_index && p.content_id.as_deref().map(clean_cid) == Some(cid)
        }) else {
            return InstanceBody::Missing;
        };
        cache[i]
            .get_or_insert_with(|| parts[i].parse(depth + 1))
            .clone()
    })
}

/// Parses the RLMI document; `lookup` gives the body for an instance `cid`.
fn parse_list(
    body: &[u8],
    lookup: &mut dyn FnMut(&str) -> InstanceBody,
) -> Result<ResourceList, BodyError> {
    let mut p = Parser::new(body);
    let root = p.root()?;
    if (root.ns, root.local()) != (Ns::Rlmi, &b"list"[..]) {
        return Err(BodyError::UnexpectedRoot {
            expected: "<list> in urn:ietf:params:xml:ns:rlmi",
            found: root.shown(),
        });
    }
    let [uri, version, full] = p.attrs(&root, [b"uri", b"version", b"fullState"])?;
    let version = version.ok_or(BodyError::MissingAttribute {
        element: "list",
        attribute: "version",
    })?;
    let version = version
        .parse::<u64>()
        .map_err(|_| BodyError::InvalidAttribute {
            element: "list",
            attribute: "version",
            value: version.clone(),
        })?;
    let full_state = match full.as_deref().map(token).as_deref() {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => {
            return Err(BodyError::InvalidAttribute {
                element: "list",
                attribute: "fullState",
                value: full.unwrap_or_default(),
            })
        }
        None => {
            return Err(BodyError::MissingAttribute {
                element: "list",
                attribute: "fullState",
            })
        }
    };
    let mut list = ResourceList {
        uri: uri.unwrap_or_default(),
        version,
        full_state,
        name: None,
        resources: Vec::new(),
    };
    let mut instances = 0usize;
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::Rlmi, b"resource") => {
                if list.resources.len() >= MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "<resource> elements",
                        limit: MAX_ITEMS,
                    });
                }
                let r = parse_resource(&mut p, &child, &mut instances, lookup)?;
                list.resources.push(r);
            }
            (Ns::Rlmi, b"name") => list.name = list.name.or(non_empty(p.text()?)),
            _ => p.skip()?,
        }
    }
    Ok(list)
}

fn parse_resource(
    p: &mut Parser<'_>,
    e: &Elem<'_>,
    instances: &mut usize,
    lookup: &mut dyn FnMut(&str) -> InstanceBody,
) -> Result<Resource, BodyError> {
    let [uri] = p.attrs(e, [b"uri"])?;
    let mut r = Resource {
        uri: uri.unwrap_or_default(),
        ..Resource::default()
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::Rlmi, b"instance") => {
                *instances += 1;
                if *instances > MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "<instance> elements",
                        limit: MAX_ITEMS,
                    });
                }
                let [id, state, reason, cid] =
                    p.attrs(&child, [b"id", b"state", b"reason", b"cid"])?;
                p.skip()?;
                let cid = cid.and_then(non_empty);
                let state = state.map(|s| token(&s)).unwrap_or_default();
                r.instances.push(Instance {
                    id: id.unwrap_or_default(),
                    state: match state.as_str() {
                        "active" => InstanceState::Active,
                        "pending" => InstanceState::Pending,
                        "terminated" => InstanceState::Terminated,
                        _ => InstanceState::Other(state),
                    },
                    reason: reason.map(|r| token(&r)).and_then(non_empty),
                    body: cid.as_deref().map_or(InstanceBody::None, &mut *lookup),
                    cid,
                });
            }
            (Ns::Rlmi, b"name") => r.name = r.name.or(non_empty(p.text()?)),
            _ => p.skip()?,
        }
    }
    Ok(r)
}

/// A Content-ID or `cid` without surrounding whitespace, `<>` and `cid:` prefix.
fn clean_cid(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    let s = match s.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("cid:") => &s[4..],
        _ => s,
    };
    s.trim()
}

// ---------------------------------------------------------------------------------------
// multipart splitting

/// One body part, borrowed from the multipart body.
#[derive(Debug)]
struct Part<'a> {
    content_id: Option<String>,
    content_type: Option<String>,
    encoding: Option<String>,
    body: &'a [u8],
}

impl Part<'_> {
    /// The content with its transfer encoding undone.
    fn decoded(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self.encoding.as_deref().map(token).as_deref() {
            None | Some("binary" | "8bit" | "7bit" | "") => Ok(self.body.into()),
            Some("base64") => {
                let compact: Vec<u8> = self
                    .body
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&compact)
                    .map(Into::into)
                    .map_err(|e| format!("part {:?}: bad base64: {e}", self.shown_id()))
            }
            Some(other) => Err(format!(
                "part {:?}: unsupported Content-Transfer-Encoding {:?}",
                self.shown_id(),
                other.chars().take(32).collect::<String>()
            )),
        }
    }

    fn shown_id(&self) -> String {
        self.content_id
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(64)
            .collect()
    }

    fn parse(&self, depth: usize) -> InstanceBody {
        let body = match self.decoded() {
            Ok(b) => b,
            Err(e) => return InstanceBody::Failed(BodyError::Multipart(e)),
        };
        if body.trim_ascii().is_empty() {
            return InstanceBody::Empty;
        }
        let Some(ct) = &self.content_type else {
            return InstanceBody::Failed(BodyError::Multipart(format!(
                "part {:?} has no Content-Type",
                self.shown_id()
            )));
        };
        match parse_at(ct, &body, depth) {
            Ok(b) => InstanceBody::Parsed(Arc::new(b)),
            Err(e) => InstanceBody::Failed(e),
        }
    }
}

/// Most header lines in one part.
const MAX_PART_HEADERS: usize = 64;

fn split<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, BodyError> {
    let boundary = boundary.as_bytes();
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(BodyError::Multipart(format!(
            "boundary must be 1 to 70 characters, got {}",
            boundary.len()
        )));
    }
    let mut parts = Vec::new();
    // Start of the current part's content (after its delimiter line), if inside one.
    let mut current: Option<usize> = None;
    let mut line_start = 0usize;
    let mut closed = false;
    while line_start <= body.len() {
        let line_end = body[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| line_start + i);
        let next = (line_end + 1).min(body.len() + 1);
        if let Some(kind) = delimiter(&body[line_start..line_end], boundary) {
            if let Some(start) = current.take() {
                // The line break before the delimiter belongs to the delimiter.
                let mut end = line_start.saturating_sub(1).max(start);
                if end > start && body[end - 1] == b'\r' {
                    end -= 1;
                }
                if parts.len() > MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "multipart parts",
                        limit: MAX_ITEMS + 1,
                    });
                }
                parts.push(part(&body[start..end])?);
            }
            if kind == Delim::Close {
                closed = true;
                break;
            }
            current = Some(next.min(body.len()));
        }
        line_start = next;
    }
    if !closed {
        if let Some(start) = current {
            if parts.len() > MAX_ITEMS {
                return Err(BodyError::TooMany {
                    element: "multipart parts",
                    limit: MAX_ITEMS + 1,
                });
            }
            parts.push(part(&body[start..])?);
        }
    }
    if parts.is_empty() {
        return Err(BodyError::Multipart(
            "no body part found for the boundary".into(),
        ));
    }
    Ok(parts)
}

#[derive(Debug, PartialEq, Eq)]
enum Delim {
    Open,
    Close,
}

/// Whether `line` (without its LF) is a delimiter for `boundary`.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<Delim> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (kind, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (Delim::Close, r),
        None => (Delim::Open, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .then_some(kind)
}

/// Splits one part into its headers and content.
fn part(raw: &[u8]) -> Result<Part<'_>, BodyError> {
    let mut p = Part {
        content_id: None,
        content_type: None,
        encoding: None,
        body: &[],
    };
    let mut pos = 0usize;
    let mut headers = 0usize;
    let mut last: Option<(String, String)> = None;
    let finish = |h: Option<(String, String)>, p: &mut Part<'_>| {
        if let Some((name, value)) = h {
            let slot = match name.as_str() {
                "content-id" => &mut p.content_id,
                "content-type" => &mut p.content_type,
                "content-transfer-encoding" => &mut p.encoding,
                _ => return,
            };
            if slot.is_none() {
                *slot = Some(value.trim().to_string());
            }
        }
    };
    loop {
        if pos >= raw.len() {
            // Headers only, no content.
            finish(last.take(), &mut p);
            return Ok(p);
        }
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i);
        let line = raw[pos..end].strip_suffix(b"\r").unwrap_or(&raw[pos..end]);
        pos = (end + 1).min(raw.len());
        if line.is_empty() {
            finish(last.take(), &mut p);
            p.body = &raw[pos..];
            return Ok(p);
        }
        headers += 1;
        if headers > MAX_PART_HEADERS {
            return Err(BodyError::TooMany {
                element: "header lines in a multipart part",
                limit: MAX_PART_HEADERS,
            });
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header.
            if let Some((_, value)) = &mut last {
                if value.len() < MAX_TEXT {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            }
            continue;
        }
        finish(last.take(), &mut p);
        if let Some((name, value)) = line.split_once(':') {
            let mut value = value.trim().to_string();
            if value.len() > MAX_TEXT {
                let mut cut = MAX_TEXT;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
            }
            last = Some((name.trim().to_ascii_lowercase(), value));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::connectors::sip::body::parse_body;

    /// Kamailio's first RLMI for a fresh list subscription: resources, no instances (§8).
    pub const KAMAILIO_RLMI: &str = r#"<list uri="sip:buddies@127.0.0.1" xmlns="urn:ietf:params:xml:ns:rlmi" version="1" fullState="true">
  <resource uri="sip:alice@127.0.0.1"/>
  <resource uri="sip:bob@127.0.0.1"/>
</list>"#;

    pub const SIPP_CT: &str = r#"multipart/related;type="application/rlmi+xml";start="<rlmi-1@127.0.0.1>";boundary="rlsbound42""#;

    /// The first NOTIFY body of `shared/peers/sipp/notifier-rls.xml` (SIPp sends CRLF).
    pub fn sipp_first() -> String {
        r#"--rlsbound42
Content-Transfer-Encoding: binary
Content-ID: <rlmi-1@127.0.0.1>
Content-Type: application/rlmi+xml;charset=UTF-8

<?xml version="1.0" encoding="UTF-8"?>
<list xmlns="urn:ietf:params:xml:ns:rlmi" uri="sip:buddies@127.0.0.1" version="1" fullState="true">
  <name>Buddies</name>
  <resource uri="sip:alice@127.0.0.1"><name>Alice</name>
    <instance id="ia1" state="active" cid="alice-1@127.0.0.1"/></resource>
  <resource uri="sip:bob@127.0.0.1"><name>Bob</name>
    <instance id="ib1" state="pending"/></resource>
  <resource uri="sip:carol@127.0.0.1"><name>Carol</name>
    <instance id="ic1" state="terminated" reason="rejected"/></resource>
</list>
--rlsbound42
Content-Transfer-Encoding: binary
Content-ID: <alice-1@127.0.0.1>
Content-Type: application/pidf+xml

<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@127.0.0.1">
<tuple id="t-alice"><status><basic>open</basic></status></tuple>
<dm:person id="p-alice"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
</presence>
--rlsbound42--
"#
        .replace('\n', "\r\n")
    }

    /// The last NOTIFY of the same scenario (terminated instances, no state parts).
    pub const SIPP_LAST: &str = "--rlsbound42\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <rlmi-4@127.0.0.1>\r\nContent-Type: application/rlmi+xml;charset=UTF-8\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:buddies@127.0.0.1\" version=\"4\" fullState=\"true\">\r\n  <name>Buddies</name>\r\n  <resource uri=\"sip:alice@127.0.0.1\"><name>Alice</name>\r\n    <instance id=\"ia1\" state=\"terminated\" reason=\"timeout\"/></resource>\r\n  <resource uri=\"sip:bob@127.0.0.1\"><name>Bob</name>\r\n    <instance id=\"ib1\" state=\"terminated\" reason=\"timeout\"/></resource>\r\n  <resource uri=\"sip:carol@127.0.0.1\"><name>Carol</name>\r\n    <instance id=\"ic1\" state=\"terminated\" reason=\"rejected\"/></resource>\r\n</list>\r\n--rlsbound42--\r\n";

    fn list(ct: &str, body: &str) -> ResourceList {
        match parse_body(ct, body.as_bytes()) {
            Ok(Body::List(l)) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kamailio_without_instances() {
        let l = list("application/rlmi+xml", KAMAILIO_RLMI);
        assert_eq!(
            (l.uri.as_str(), l.version, l.full_state),
            ("sip:buddies@127.0.0.1", 1, true)
        );
        let uris: Vec<&str> = l.resources.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["sip:alice@127.0.0.1", "sip:bob@127.0.0.1"]);
        assert!(l
            .resources
            .iter()
            .all(|r| r.instances.is_empty() && r.best_instance().is_none()));
        // The same RLMI as the root of a multipart with no other part.
        let body = format!(
            "--b\r\nContent-Type: application/rlmi+xml\r\n\r\n{KAMAILIO_RLMI}\r\n--b--\r\n"
        );
        assert_eq!(list("multipart/related;boundary=b", &body), l);
    }

    #[test]
    fn sipp_notifications() {
        let l = list(SIPP_CT, &sipp_first());
        assert_eq!(l.name.as_deref(), Some("Buddies"));
        assert_eq!((l.version, l.full_state), (1, true));
        assert_eq!(l.resources.len(), 3);
        let alice = &l.resources[0];
        assert_eq!(alice.name.as_deref(), Some("Alice"));
        let i = alice.best_instance().unwrap();
        assert_eq!((i.id.as_str(), &i.state), ("ia1", &InstanceState::Active));
        assert_eq!(i.cid.as_deref(), Some("alice-1@127.0.0.1"));
        let Some(Body::Pidf(pidf)) = i.body() else {
            panic!("{:?}", i.body)
        };
        assert_eq!(pidf.entity, "sip:alice@127.0.0.1");
        assert_eq!(pidf.persons[0].activities, ["busy"]);
        let bob = &l.resources[1].instances[0];
        assert_eq!(
            (&bob.state, &bob.body),
            (&InstanceState::Pending, &InstanceBody::None)
        );
        let carol = &l.resources[2].instances[0];
        assert_eq!(carol.state, InstanceState::Terminated);
        assert_eq!(carol.reason.as_deref(), Some("rejected"));

        // LF-only line ends parse the same.
        assert_eq!(list(SIPP_CT, &sipp_first().replace("\r\n", "\n")), l);

        let ct = SIPP_CT.replace("rlmi-1", "rlmi-4");
        let last = list(&ct, SIPP_LAST);
        assert_eq!(last.version, 4);
        assert!(last
            .resources
            .iter()
            .all(|r| r.instances[0].state == InstanceState::Terminated
                && r.instances[0].body == InstanceBody::None));
        assert_eq!(
            last.resources[0].instances[0].reason.as_deref(),
            Some("timeout")
        );
    }

    #[test]
    fn multipart_with_several_pidf_parts() {
        // Root not first, preamble and epilogue, folded header, base64 part, a part named
        // twice, a missing cid, an empty part, an unsupported and a broken part.
        let pidf = |user: &str, act: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:{user}@x"><tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><r:activities><r:{act}/></r:activities></dm:person></presence>"#
            )
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(pidf("dan", "away"));
        let b64 = format!("{}\r\n{}", &b64[..40], &b64[40..]);
        let rlmi = r#"<list xmlns="urn:ietf:params:xml:ns:rlmi" uri="sip:l@x" version="7" fullState="false">
            <resource uri="sip:bob@x"><instance id="1" state="active" cid="bob@x"/></resource>
            <resource uri="sip:bob2@x"><instance id="2" state="active" cid="&lt;bob@x&gt;"/></resource>
            <resource uri="sip:dan@x"><instance id="3" state="active" cid="cid:dan@x"/></resource>
            <resource uri="sip:eve@x"><instance id="4" state="active" cid="nope@x"/></resource>
            <resource uri="sip:fay@x"><instance id="5" state="active" cid="fay@x"/></resource>
            <resource uri="sip:gus@x"><instance id="6" state="active" cid="gus@x"/></resource>
            <resource uri="sip:hal@x"><instance id="7" state="active" cid="hal@x"/></resource>
            <resource uri="sip:ivy@x"><instance id="8" state="weird" cid="ivy@x"/><instance id="9" state="active" cid="bob@x"/></resource>
          </list>"#;
        let body = format!(
            "preamble --zz not a delimiter\r\n--zz\r\nContent-ID: <bob@x>\r\nContent-Type: application/pidf+xml\r\n\r\n{bob}\r\n\
             --zz  \r\nContent-Type: application/rlmi+xml\r\nContent-ID:\r\n <root@x>\r\n\r\n{rlmi}\r\n\
             --zz\r\nContent-ID: <dan@x>\r\nContent-Type: application/pidf+xml\r\nContent-Transfer-Encoding: BASE64\r\n\r\n{b64}\r\n\
             --zz\r\nContent-ID: <fay@x>\r\nContent-Type: application/pidf+xml\r\n\r\n\r\n\
             --zz\r\nContent-ID: <gus@x>\r\nContent-Type: text/plain\r\n\r\nhello\r\n--zzz\r\n\
             --zz\r\nContent-ID: <hal@x>\r\nContent-Type: application/pidf+xml\r\n\r\n<presence\r\n\
             --zz\r\nContent-ID: <ivy@x>\r\nContent-Type: application/pidf+xml\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n\
             --zz--\r\nepilogue\r\n--zz\r\nContent-ID: <late@x>\r\n\r\nignored",
            bob = pidf("bob", "busy"),
        );
        let l = list(
            "multipart/related; boundary=zz; start=\"<root@x>\"; type=\"Application/RLMI+xml\"",
            &body,
        );
        assert_eq!((l.version, l.full_state), (7, false));
        let entity = |r: usize| match l.resources[r].instances[0].body() {
            Some(Body::Pidf(p)) => p.entity.clone(),
            other => panic!("{r}: {other:?}"),
        };
        assert_eq!(entity(0), "sip:bob@x");
        assert_eq!(entity(1), "sip:bob@x");
        assert_eq!(entity(2), "sip:dan@x");
        // Shared, not parsed twice.
        let (InstanceBody::Parsed(a), InstanceBody::Parsed(b)) = (
            &l.resources[0].instances[0].body,
            &l.resources[7].instances[1].body,
        ) else {
            panic!()
        };
        assert!(Arc::ptr_eq(a, b));
        assert_eq!(l.resources[3].instances[0].body, InstanceBody::Missing);
        assert_eq!(l.resources[4].instances[0].body, InstanceBody::Empty);
        assert!(matches!(
            &l.resources[5].instances[0].body,
            InstanceBody::Failed(BodyError::Unsupported(t)) if t == "text/plain"
        ));
        assert!(matches!(
            &l.resources[6].instances[0].body,
            InstanceBody::Failed(BodyError::Truncated | BodyError::Malformed { .. })
        ));
        let ivy = &l.resources[7];
        assert_eq!(ivy.instances[0].state, InstanceState::Other("weird".into()));
        assert!(
            matches!(&ivy.instances[0].body, InstanceBody::Failed(BodyError::Multipart(m)) if m.contains("quoted-printable"))
        );
        assert_eq!(ivy.best_instance().unwrap().id, "9");
    }

    #[test]
    fn multipart_errors() {
        let rl = "--b\r\nContent-Type: application/rlmi+xml\r\n\r\n<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"1\" fullState=\"true\"/>\r\n--b--";
        assert!(matches!(
            parse_body("multipart/related;boundary=b", rl.as_bytes()),
            Ok(Body::List(_))
        ));
        for (ct, body, want) in [
            ("multipart/related", rl, "no boundary"),
            ("multipart/related;boundary=\"\"", rl, "1 to 70"),
            ("multipart/related;boundary=c", rl, "no body part"),
            (
                "multipart/related;boundary=b;start=x",
                rl,
                "start Content-ID",
            ),
            (
                "multipart/related;boundary=b",
                "--b\r\nContent-Type: application/pidf+xml\r\n\r\n<x/>\r\n--b--",
                "not application/rlmi+xml",
            ),
            (
                "multipart/related;boundary=b",
                "--b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n--b--",
                "bad base64",
            ),
        ] {
            match parse_body(ct, body.as_bytes()) {
                Err(BodyError::Multipart(m)) => assert!(m.contains(want), "{ct}: {m}"),
                other => panic!("{ct}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_body(
                "multipart/related;boundary=b;type=\"application/pidf+xml\"",
                rl.as_bytes()
            ),
            Err(BodyError::Unsupported(_))
        ));
        let bad_rlmi = [
            (
                "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" fullState=\"true\"/>",
                "version",
            ),
            (
                "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"x\" fullState=\"true\"/>",
                "version",
            ),
            (
                "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"1\"/>",
                "fullState",
            ),
            (
                "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"1\" fullState=\"maybe\"/>",
                "fullState",
            ),
            ("<list version=\"1\" fullState=\"true\"/>", "<list>"),
        ];
        for (doc, want) in bad_rlmi {
            let e = parse_body("application/rlmi+xml", doc.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{doc}: {e}");
        }
        // Parts and headers are bounded.
        let many = format!(
            "{}--b--",
            "--b\r\nContent-Type: application/rlmi+xml\r\n\r\nx\r\n".repeat(MAX_ITEMS + 2)
        );
        assert!(matches!(
            parse_body("multipart/related;boundary=b", many.as_bytes()),
            Err(BodyError::TooMany {
                element: "multipart parts",
                ..
            })
        ));
        let unclosed =
            "--b\r\nContent-Type: application/rlmi+xml\r\n\r\nx\r\n".repeat(MAX_ITEMS + 2);
        assert!(matches!(
            parse_body("multipart/related;boundary=b", unclosed.as_bytes()),
            Err(BodyError::TooMany {
                element: "multipart parts",
                ..
            })
        ));
        let headers = format!(
            "--b\r\n{}\r\nx\r\n--b--",
            "X-A: 1\r\n".repeat(MAX_PART_HEADERS + 1)
        );
        assert!(matches!(
            parse_body("multipart/related;boundary=b", headers.as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
        // Instances are bounded over the whole list.
        let res = "<resource uri=\"u\"><instance id=\"i\" state=\"active\"/><instance id=\"j\" state=\"active\"/></resource>".repeat(MAX_ITEMS / 2 + 1);
        let doc = format!("<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"1\" fullState=\"true\">{res}</list>");
        assert!(matches!(
            parse_body("application/rlmi+xml", doc.as_bytes()),
            Err(BodyError::TooMany {
                element: "<instance> elements",
                ..
            })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        // A list whose part is a list (allowed), whose part is a list (refused).
        let inner_rlmi = |v: u32, cid: &str| {
            format!("<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:l{v}@x\" version=\"{v}\" fullState=\"true\"><resource uri=\"sip:r@x\"><instance id=\"i\" state=\"active\" cid=\"{cid}\"/></resource></list>")
        };
        let wrap = |boundary: &str, rlmi: String, part_ct: &str, part: &str| {
            format!("--{boundary}\r\nContent-Type: application/rlmi+xml\r\n\r\n{rlmi}\r\n--{boundary}\r\nContent-ID: <p@x>\r\nContent-Type: {part_ct}\r\n\r\n{part}\r\n--{boundary}--\r\n")
        };
        let level2 = wrap(
            "b2",
            inner_rlmi(2, "p@x"),
            "application/pidf+xml",
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:r@x\"/>",
        );
        let level1 = wrap(
            "b1",
            inner_rlmi(1, "p@x"),
            "multipart/related;boundary=b2",
            &level2,
        );
        let l = list("multipart/related;boundary=b1", &level1);
        let Some(Body::List(inner)) = l.resources[0].instances[0].body() else {
            panic!("{l:?}")
        };
        assert!(matches!(
            inner.resources[0].instances[0].body(),
            Some(Body::Pidf(_))
        ));

        let level0 = wrap(
            "b0",
            inner_rlmi(0, "p@x"),
            "multipart/related;boundary=b1",
            &level1,
        );
        let l = list("multipart/related;boundary=b0", &level0);
        let Some(Body::List(l1)) = l.resources[0].instances[0].body() else {
            panic!()
        };
        assert_eq!(
            l1.resources[0].instances[0].body,
            InstanceBody::Failed(BodyError::NestedTooDeep)
        );
    }

    #[test]
    fn delimiters() {
        assert_eq!(delimiter(b"--b", b"b"), Some(Delim::Open));
        assert_eq!(delimiter(b"--b \t\r", b"b"), Some(Delim::Open));
        assert_eq!(delimiter(b"--b--\r", b"b"), Some(Delim::Close));
        assert_eq!(delimiter(b"--bb", b"b"), None);
        assert_eq!(delimiter(b" --b", b"b"), None);
        assert_eq!(delimiter(b"-b", b"b"), None);
        assert_eq!(clean_cid(" <CID:a@b> "), "a@b");
        assert_eq!(clean_cid("a@b"), "a@b");
        assert_eq!(clean_cid("<>"), "");
        assert_eq!(clean_cid("é"), "é");
    }
}
