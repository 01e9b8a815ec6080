//! SIP messages (RFC 3261 §7): parsing what peers send, building what we send, and the
//! typed views of the headers the presence connector reads.
//!
//! The message is kept as sent: header names keep their spelling (compact or long),
//! values are trimmed and folded lines joined, so `parse(to_bytes(m)) == m`. Lookups are
//! case-insensitive and treat the compact forms (`v`, `f`, `t`, `i`, `m`, `c`, `l`, `o`,
//! `u`, `k`, `s`, `e`) as their long names, because peers mix both freely.
//!
//! Input may come from any host that can reach our port, so parsing is bounded: a message
//! over [`MAX_MESSAGE`] bytes, more than [`MAX_HEADERS`] header fields or one field over
//! [`MAX_HEADER_LEN`] bytes is an error, never a panic; the header section must be UTF-8
//! without control characters (the body is opaque bytes). Time is linear in the input.
//! The typed accessors never fail: a header that is absent or does not parse is `None`,
//! and the caller decides what a missing header means for its transaction.

use std::fmt;

/// Largest message accepted, header section and body together. A resource-list NOTIFY
/// with a few hundred PIDF parts fits; nothing a presence peer sends comes close.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Most header fields in one message (Kamailio NOTIFYs carry about 12).
pub const MAX_HEADERS: usize = 128;
/// Longest header field value after unfolding. Long Record-Route sets and multipart
/// Content-Types are well below this; the bound keeps what one field can make us copy,
/// compare or log small.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// The start line of a request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One SIP message. Header names as sent, values trimmed and unfolded, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why bytes are not a SIP message (or not yet a whole one, for [`frame`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SipParseError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty message")]
    Empty,
    #[error("header section not terminated by an empty line")]
    NoHeaderEnd,
    #[error("header section is not valid UTF-8")]
    NotUtf8,
    #[error("invalid start line {0:?}")]
    BadStartLine(String),
    #[error("unsupported SIP version {0:?}")]
    BadVersion(String),
    #[error("invalid header line {0:?}")]
    BadHeader(String),
    #[error("folded line before the first header field")]
    FoldBeforeHeader,
    #[error("more than {max} header fields")]
    TooManyHeaders { max: usize },
    #[error("header field {name} longer than {max} bytes")]
    HeaderTooLong { name: String, max: usize },
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
    #[error("Content-Length is required on a stream transport")]
    MissingContentLength,
    #[error("body shorter than Content-Length: {got} of {expected} bytes")]
    BodyTruncated { expected: usize, got: usize },
    #[error("{extra} bytes after the {expected}-byte body announced by Content-Length")]
    TrailingBytes { expected: usize, extra: usize },
    #[error("invalid name-addr {0:?}")]
    BadNameAddr(String),
}

/// At most this many characters of offending input go into an error message (they end up
/// in logs, and the input is the peer's).
const SHOWN: usize = 64;

fn shown(s: &str) -> String {
    s.chars()
        .take(SHOWN)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Header names

/// The long name for a compact form (RFC 3261 §7.3.3 and the event extensions); other
/// names unchanged.
fn long_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'v' => "Via",
        b'f' => "From",
        b't' => "To",
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'c' => "Content-Type",
        b'l' => "Content-Length",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'k' => "Supported",
        b's' => "Subject",
        b'e' => "Content-Encoding",
        _ => name,
    }
}

/// Same header field? Case-insensitive, compact forms equal to their long names.
fn same_name(a: &str, b: &str) -> bool {
    long_name(a).eq_ignore_ascii_case(long_name(b))
}

/// RFC 3261 `token` characters (header names, methods, parameter names).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Where the header section ends: `(head_len, body_start)`, `head_len` excluding the line
/// break of the last header line. Bare LF line ends are accepted (some stacks and every
/// hand-written test send them).
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some((i, i + 2)),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i, i + 3)),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Number of CR/LF bytes before the start line (RFC 3261 §7.5: ignored).
fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// The parsed header section.
struct Head {
    start: StartLine,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
}

fn parse_start_line(line: &str) -> Result<StartLine, SipParseError> {
    let bad = || SipParseError::BadStartLine(shown(line));
    // Bytes, not `str` slicing: the fifth byte may be inside a multi-byte character.
    if line.len() > 3 && line.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
        // `SIP/2.0 SP code SP reason`; the reason may hold spaces or be empty.
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(SipParseError::BadVersion(shown(version)));
        }
        let code = parts.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        let reason = parts.next().unwrap_or_default().trim().to_string();
        return Ok(StartLine::Response { code, reason });
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_token(method) {
        return Err(bad());
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(SipParseError::BadVersion(shown(version)));
    }
    Ok(StartLine::Request {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

/// A control character other than HTAB (tabs are allowed in header values: folding, SWS).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Parses the header section (without the terminating empty line). `head` starts at the
/// start line.
fn parse_head(head: &[u8]) -> Result<Head, SipParseError> {
    let head = std::str::from_utf8(head).map_err(|_| SipParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    // Tabs are allowed in header values (folding, SWS); every other control character,
    // including a lone CR, is refused so nothing downstream (logs, our own re-sent
    // headers) ever carries one.
    let has_ctl = |s: &str| s.bytes().any(is_ctl);
    if has_ctl(first) {
        return Err(SipParseError::BadStartLine(shown(first)));
    }
    let start = parse_start_line(first)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if has_ctl(line) {
            return Err(SipParseError::BadHeader(shown(line)));
        }
        if line.starts_with([' ', '\t']) {
            // A folded continuation: joined to the previous value with one space (§7.3.1).
            let (name, value) = headers.last_mut().ok_or(SipParseError::FoldBeforeHeader)?;
            let more = line.trim();
            if !more.is_empty() {
                if value.len() + 1 + more.len() > MAX_HEADER_LEN {
                    return Err(SipParseError::HeaderTooLong {
                        name: shown(name),
                        max: MAX_HEADER_LEN,
                    });
                }
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| SipParseError::BadHeader(shown(line)))?;
        // `HCOLON = *( SP / HTAB ) ":" SWS`: blanks before the colon are allowed.
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(SipParseError::BadHeader(shown(line)));
        }
        let value = value.trim();
        if value.len() > MAX_HEADER_LEN {
            return Err(SipParseError::HeaderTooLong {
                name: shown(name),
                max: MAX_HEADER_LEN,
            });
        }
        if headers.len() == MAX_HEADERS {
            return Err(SipParseError::TooManyHeaders { max: MAX_HEADERS });
        }
        headers.push((name.to_string(), value.to_string()));
    }

    let mut content_length = None;
    for (name, value) in &headers {
        if !same_name(name, "Content-Length") {
            continue;
        }
        let bad = || SipParseError::BadContentLength(shown(value));
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // A value too large for usize is certainly larger than MAX_MESSAGE.
        let n = value.parse::<usize>().unwrap_or(usize::MAX);
        // Two different lengths would let a proxy and us frame the stream differently.
        if content_length.is_some_and(|old| old != n) {
            return Err(bad());
        }
        content_length = Some(n);
    }
    Ok(Head {
        start,
        headers,
        content_length,
    })
}

impl SipMessage {
    /// One complete message (datagram or already-framed stream message). Header names
    /// kept as sent; folded (continuation) lines unfolded; body = exactly Content-Length
    /// bytes if present (error if fewer; extra bytes error), else the rest of the buffer.
    /// CR/LF before the start line is skipped (RFC 3261 §7.5). Limits enforced.
    pub fn parse(buf: &[u8]) -> Result<SipMessage, SipParseError> {
        if buf.len() > MAX_MESSAGE {
            return Err(SipParseError::TooLarge {
                len: buf.len(),
                max: MAX_MESSAGE,
            });
        }
        let buf = &buf[leading_crlf(buf)..];
        if buf.is_empty() {
            return Err(SipParseError::Empty);
        }
        let (head_len, body_start) = head_end(buf).ok_or(SipParseError::NoHeaderEnd)?;
        let head = parse_head(&buf[..head_len])?;
        let rest = &buf[body_start..];
        let body = match head.content_length {
            None => rest,
            Some(n) if rest.len() < n => {
                return Err(SipParseError::BodyTruncated {
                    expected: n,
                    got: rest.len(),
                })
            }
            Some(n) if rest.len() > n => {
                return Err(SipParseError::TrailingBytes {
                    expected: n,
                    extra: rest.len() - n,
                })
            }
            Some(_) => rest,
        };
        Ok(SipMessage {
            start: head.start,
            headers: head.headers,
            body: body.to_vec(),
        })
    }

    // -----------------------------------------------------------------------------------
    // Building

    /// A request without headers.
    pub fn request(method: &str, uri: &str) -> SipMessage {
        SipMessage {
            start: StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response without headers.
    pub fn response(code: u16, reason: &str) -> SipMessage {
        SipMessage {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Copies all Via (in order), From, To, Call-ID, CSeq from the request (RFC 3261
    /// §8.2.6), Content-Length 0. The To tag, Contact and anything else are the caller's.
    pub fn response_to(req: &SipMessage, code: u16, reason: &str) -> SipMessage {
        let mut resp = SipMessage::response(code, reason);
        for via in req.headers("Via") {
            resp.add("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = req.header(name) {
                resp.add(name, v);
            }
        }
        resp.add("Content-Length", "0");
        resp
    }

    /// Appends a header field.
    pub fn add(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Builder form of [`SipMessage::add`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.add(name, value);
        self
    }

    /// Replaces every field of that header (compact forms included) by one, at the place
    /// of the first; appends it when absent.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.headers.iter().position(|(n, _)| same_name(n, name)) {
            Some(first) => {
                self.headers[first] = (name.to_string(), value);
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || !same_name(n, name)
                });
            }
            None => self.headers.push((name.to_string(), value)),
        }
        self
    }

    /// Removes every field of that header (compact forms included).
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !same_name(n, name));
    }

    /// The first value of a header: case-insensitive, compact forms equivalent, trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// Every header line's value, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
    }

    /// [`SipMessage::headers`] with the values' lifetime independent of `name`'s.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| same_name(n, name))
            .map(|(_, v)| v.trim())
    }

    /// Every comma-separated element across all lines of a header (commas inside `"..."`
    /// or `<...>` don't split), trimmed, empty ones dropped. For Via, Route, Record-Route,
    /// Allow-Events, Contact, Supported; not for the auth headers, whose parameters are
    /// comma-separated themselves.
    pub fn header_list(&self, name: &str) -> Vec<&str> {
        self.values(name)
            .flat_map(|v| split_outside(v, b','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// Sets the body and its Content-Type (removed when `content_type` is empty) and
    /// Content-Length.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        if content_type.trim().is_empty() {
            self.remove("Content-Type");
        } else {
            self.set("Content-Type", content_type);
        }
        self.set("Content-Length", body.len().to_string());
        self.body = body;
    }

    /// The wire form: start line, headers, a Content-Length that matches the body (at the
    /// place of the first one, else last; others dropped), CRLF line ends, body. CR and LF
    /// inside names or values become spaces, so a value taken from a peer or the
    /// configuration can never add a header line of its own.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                push_clean(&mut out, method);
                out.push(b' ');
                push_clean(&mut out, uri);
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code} ").as_bytes());
                push_clean(&mut out, reason);
                out.extend_from_slice(b"\r\n");
            }
        }
        let length = self.body.len().to_string();
        let mut length_written = false;
        for (name, value) in &self.headers {
            let value = if same_name(name, "Content-Length") {
                if length_written {
                    continue;
                }
                length_written = true;
                length.as_str()
            } else {
                value.as_str()
            };
            push_clean(&mut out, name);
            out.extend_from_slice(b": ");
            push_clean(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
        if !length_written {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(length.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    // -----------------------------------------------------------------------------------
    // Typed views

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, as sent (methods are case-sensitive).
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID").filter(|v| !v.is_empty())
    }

    /// `CSeq: 2 notify` → `(2, "NOTIFY")`.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let mut parts = self.header("CSeq")?.split_ascii_whitespace();
        let (Some(n), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        if !n.bytes().all(|b| b.is_ascii_digit()) || !is_token(method) {
            return None;
        }
        Some((n.parse().ok()?, method.to_ascii_uppercase()))
    }

    pub fn from_hdr(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("From")?).ok()
    }

    pub fn to_hdr(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("To")?).ok()
    }

    /// The first Contact (a header may list several; `*` is not a name-addr).
    pub fn contact(&self) -> Option<NameAddr> {
        let first = *self.header_list("Contact").first()?;
        NameAddr::parse(first).ok().filter(|c| c.uri != "*")
    }

    pub fn content_type(&self) -> Option<MediaType> {
        MediaType::parse(self.header("Content-Type")?)
    }

    /// `Expires` as delta-seconds (the deprecated date form gives `None`).
    pub fn expires(&self) -> Option<u32> {
        delta_seconds(self.header("Expires")?)
    }

    pub fn min_expires(&self) -> Option<u32> {
        delta_seconds(self.header("Min-Expires")?)
    }

    /// `Retry-After: 120;duration=3600 (maintenance)` → `120`.
    pub fn retry_after(&self) -> Option<u32> {
        let v = self.header("Retry-After")?;
        let end = v.find([';', '(', ' ', '\t']).unwrap_or(v.len());
        delta_seconds(&v[..end])
    }

    pub fn subscription_state(&self) -> Option<SubscriptionState> {
        SubscriptionState::parse(self.header("Subscription-State")?)
    }

    pub fn event(&self) -> Option<EventHeader> {
        EventHeader::parse(self.header("Event")?)
    }

    /// The `branch` parameter of the topmost Via.
    pub fn via_branch(&self) -> Option<String> {
        let top = *self.header_list("Via").first()?;
        let (_, value) = params(top)
            .skip(1)
            .find(|(n, _)| n.eq_ignore_ascii_case("branch"))?;
        value.filter(|v| !v.is_empty()).map(str::to_string)
    }
}

/// Pushes `s` with CR and LF replaced by spaces.
fn push_clean(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// RFC 3261 delta-seconds: digits only; values beyond `u32` saturate (§20.19 says to
/// treat them as 2³²−1).
fn delta_seconds(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u32>().unwrap_or(u32::MAX))
}

/// Splits at `sep` where it is outside a quoted string (with `\` escapes) and outside
/// `<...>`.
fn split_outside(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut quoted = false;
    let mut angle = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            if quoted {
                match b {
                    b'\\' => i += 1,
                    b'"' => quoted = false,
                    _ => {}
                }
            } else if b == b'"' {
                quoted = true;
            } else if angle {
                angle = b != b'>';
            } else if b == b'<' {
                angle = true;
            } else if b == sep {
                // `sep` is ASCII, so `i - 1` is a char boundary.
                let part = &s[start..i - 1];
                start = i;
                return Some(part);
            }
        }
        done = true;
        // An escape as the last byte can step `i` past the end; `start` never does.
        Some(&s[start.min(s.len())..])
    })
}

/// `;`-separated parameters of a header value: the first item is the value itself (with
/// `None`), then `name[=value]` pairs, trimmed. Values as sent (quotes kept).
fn params(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_outside(s, b';').map(|p| match p.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (p.trim(), None),
    })
}

/// The content of a quoted string (`"a\"b"` → `a"b`); other input trimmed and unchanged.
pub(crate) fn unquote(s: &str) -> String {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('"') else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// `"..."` with `"` and `\` escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// name-addr (From, To, Contact)

/// `"Alice" <sip:alice@example.com>;tag=1` or `sip:alice@example.com;tag=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    pub uri: String,
    /// Header parameters (`tag`, `expires`, `+sip.instance`…), names and values as sent.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Both forms: `[display] <uri>;params` and bare `uri;params`, where everything after
    /// the first `;` belongs to the header, not the URI (RFC 3261 §20.10).
    pub fn parse(s: &str) -> Result<NameAddr, SipParseError> {
        let s = s.trim();
        let bad = || SipParseError::BadNameAddr(shown(s));
        if s.is_empty() {
            return Err(bad());
        }
        let (display, addr) = if let Some(rest) = s.strip_prefix('"') {
            // A quoted display name may itself hold `<`, `;` or `,`.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(bad)?;
            let after = rest[end + 1..].trim_start();
            if !after.starts_with('<') {
                return Err(bad());
            }
            (Some(unquote(&s[..end + 2])), after)
        } else if let Some(lt) = s.find('<') {
            let display = s[..lt].trim();
            ((!display.is_empty()).then(|| display.to_string()), &s[lt..])
        } else {
            (None, s)
        };

        let (uri, rest) = if let Some(inner) = addr.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(bad)?;
            let rest = inner[gt + 1..].trim();
            if !rest.is_empty() && !rest.starts_with(';') {
                return Err(bad());
            }
            (inner[..gt].trim(), rest)
        } else {
            let end = addr.find(';').unwrap_or(addr.len());
            (addr[..end].trim(), &addr[end..])
        };
        if uri.is_empty() || uri.contains(|c: char| c.is_whitespace() || c == '<') {
            return Err(bad());
        }
        let mut out = Vec::new();
        for (name, value) in params(rest).skip(1) {
            if name.is_empty() {
                if value.is_none() {
                    // `;;` or a trailing `;`: nothing there.
                    continue;
                }
                return Err(bad());
            }
            out.push((name.to_string(), value.map(str::to_string)));
        }
        Ok(NameAddr {
            display,
            uri: uri.to_string(),
            params: out,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// A header parameter's value (name case-insensitive); `Some("")` for a parameter
    /// without value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// The header value with `tag` set to `tag` (replacing any other tag), e.g. the To of
    /// a response that establishes a dialog.
    pub fn to_string_with_tag(&self, tag: &str) -> String {
        let mut na = self.clone();
        na.params.retain(|(n, _)| !n.eq_ignore_ascii_case("tag"));
        na.params.push(("tag".to_string(), Some(tag.to_string())));
        na.to_string()
    }
}

/// Always the `<uri>` form, so URI parameters and header parameters stay apart.
impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>", self.uri)?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Subscription-State, Event, Content-Type

/// The value of Subscription-State (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
    Terminated,
    /// An extension value, lowercased; RFC 6665 says to treat it as `pending`.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub state: SubState,
    pub expires: Option<u32>,
    /// Lowercased (`deactivated`, `probation`, `rejected`, `timeout`, `giveup`,
    /// `noresource`, `invariant`).
    pub reason: Option<String>,
    pub retry_after: Option<u32>,
}

impl SubscriptionState {
    /// `active;expires=3599`, `terminated;reason=timeout;retry-after=30`.
    pub fn parse(value: &str) -> Option<SubscriptionState> {
        let mut items = params(value);
        let (state, _) = items.next()?;
        if !is_token(state) {
            return None;
        }
        let state = match state.to_ascii_lowercase().as_str() {
            "active" => SubState::Active,
            "pending" => SubState::Pending,
            "terminated" => SubState::Terminated,
            other => SubState::Other(other.to_string()),
        };
        let mut out = SubscriptionState {
            state,
            expires: None,
            reason: None,
            retry_after: None,
        };
        for (name, value) in items {
            let Some(value) = value else { continue };
            match name.to_ascii_lowercase().as_str() {
                "expires" => out.expires = delta_seconds(value),
                "retry-after" => out.retry_after = delta_seconds(value),
                "reason" => {
                    let reason = unquote(value).to_ascii_lowercase();
                    out.reason = (!reason.is_empty()).then_some(reason);
                }
                _ => {}
            }
        }
        Some(out)
    }
}

/// The Event header (RFC 6665 §8.2.1): `presence`, `presence;id=7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    /// Lowercased, template included (`presence.winfo`).
    pub package: String,
    /// The `id` parameter as sent (compared byte for byte).
    pub id: Option<String>,
}

impl EventHeader {
    pub fn parse(value: &str) -> Option<EventHeader> {
        let mut items = params(value);
        let (package, _) = items.next()?;
        if !is_token(package) {
            return None;
        }
        let id = items
            .find(|(n, _)| n.eq_ignore_ascii_case("id"))
            .and_then(|(_, v)| v)
            .map(unquote)
            .filter(|v| !v.is_empty());
        Some(EventHeader {
            package: package.to_ascii_lowercase(),
            id,
        })
    }
}

/// A Content-Type: `application/pidf+xml`, `multipart/related;type="application/rlmi+xml";boundary=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lowercased.
    pub essence: String,
    /// Names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    pub fn parse(value: &str) -> Option<MediaType> {
        let mut items = params(value);
        let (essence, _) = items.next()?;
        let (ty, sub) = essence.split_once('/')?;
        if !is_token(ty.trim()) || !is_token(sub.trim()) {
            return None;
        }
        let essence = format!("{}/{}", ty.trim(), sub.trim()).to_ascii_lowercase();
        let params = items
            .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), unquote(v?))))
            .filter(|(n, _)| !n.is_empty())
            .collect();
        Some(MediaType { essence, params })
    }

    /// A parameter's value (name case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Identifiers

/// A From/To tag: 64 random bits in hex (RFC 3261 §19.3 asks for at least 32).
pub fn new_tag() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A Via branch: the RFC 3261 magic cookie `z9hG4bK` and 64 random bits, so it is unique
/// per transaction.
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", fastrand::u64(..))
}

/// A Call-ID: 128 random bits in hex, `@host` when a host is given.
pub fn new_call_id(host: &str) -> String {
    let id = format!("{:032x}", fastrand::u128(..));
    let host = host.trim();
    if host.is_empty() {
        id
    } else {
        format!("{id}@{host}")
    }
}

// ---------------------------------------------------------------------------------------
// URIs

/// Schemes whose URIs are `user@host`; [`uri_aor`] drops them.
const AOR_SCHEMES: [&str; 4] = ["sip", "sips", "pres", "im"];

/// `(scheme lowercased, rest)`; no scheme for `user@host`, `host` and `host:port`.
fn split_scheme(uri: &str) -> (Option<String>, &str) {
    let uri = uri.trim();
    let uri = uri
        .strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(uri);
    if let Some((scheme, rest)) = uri.split_once(':') {
        let is_scheme = scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic());
        // `host:5060` has a port, not a scheme.
        let is_port = !rest.is_empty()
            && rest
                .split([';', '?'])
                .next()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if is_scheme && !is_port {
            return (Some(scheme.to_ascii_lowercase()), rest);
        }
    }
    (None, uri)
}

/// `(user, host, port)` of a scheme-less URI: `alice:pw@[::1]:5070;transport=tcp` →
/// `(Some("alice"), "[::1]", Some("5070"))`.
fn split_user_host_port(rest: &str) -> Option<(Option<&str>, &str, Option<&str>)> {
    // The user part may hold `;` and `?` (telephone-subscriber), the host part never `@`.
    let (user, hostport) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = user.map(|u| u.split(':').next().unwrap_or(u));
    if user.is_some_and(str::is_empty) {
        return None;
    }
    let hostport = &hostport[..hostport.find([';', '?', '>']).unwrap_or(hostport.len())];
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        let port = hostport[close + 1..].strip_prefix(':');
        if port.is_none() && close + 1 != hostport.len() {
            return None;
        }
        (&hostport[..=close], port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '<' || c == '"') {
        return None;
    }
    Some((user, host, port))
}

/// `"sip:Alice@Example.COM:5060;transport=tcp"` → `Some("alice@example.com")`: user@host,
/// scheme (sip/sips/pres/im/none), password, port and parameters dropped, lowercased
/// (presentity matching compares `user@host`, reference §3.2). A URI without a user gives
/// its host; another scheme (`tel:`, `http:`) gives `None`.
pub fn uri_aor(uri: &str) -> Option<String> {
    let (scheme, rest) = split_scheme(uri);
    if scheme.is_some_and(|s| !AOR_SCHEMES.contains(&s.as_str())) {
        return None;
    }
    let (user, host, _) = split_user_host_port(rest)?;
    Some(match user {
        Some(user) => format!("{user}@{host}").to_lowercase(),
        None => host.to_lowercase(),
    })
}

/// Host and port of a SIP URI (`sip:user@host:port;...`), default port 5060 (5061 for
/// `sips:` or `;transport=tls`, RFC 3263 §4.2). An IPv6 host comes without brackets, ready
/// for a socket address.
pub fn uri_host_port(uri: &str) -> Option<(String, u16)> {
    let (scheme, rest) = split_scheme(uri);
    let tls = match scheme.as_deref() {
        Some("sips") => true,
        Some("sip") | None => {
            uri_param(uri, "transport").is_some_and(|t| t.eq_ignore_ascii_case("tls"))
        }
        Some(_) => return None,
    };
    let (_, host, port) = split_user_host_port(rest)?;
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
        None if tls => 5061,
        None => 5060,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_ascii_lowercase(), port))
}

/// A URI parameter (`transport`, `lr`, `maddr`), name case-insensitive, `Some("")` when it
/// has no value. Parameters are the `;` items after the host part (a `;` in the user part
/// is not one).
pub fn uri_param(uri: &str, name: &str) -> Option<String> {
    let (_, rest) = split_scheme(uri);
    let after_user = rest.find('@').map_or(rest, |at| &rest[at + 1..]);
    let after_user = &after_user[..after_user.find(['?', '>']).unwrap_or(after_user.len())];
    params(after_user)
        .skip(1)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or("").to_string())
}

// ---------------------------------------------------------------------------------------
// Stream framing

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The first n bytes are one complete message.
    Message(usize),
    /// The first n bytes are a keep-alive (RFC 5626 §4.4.1): 4 for a CRLFCRLF ping (answer
    /// with a CRLF pong), 2 for a CRLF pong, 1 for a stray CR or LF. A ping split across
    /// two reads shows as two pongs.
    KeepAlive(usize),
}

/// Stream framing for TCP/TLS: `Ok(Some(Frame::Message(n)))` when the first n bytes are
/// one complete message (header section + Content-Length body; Content-Length is
/// required on streams), `Ok(Some(Frame::KeepAlive(n)))` for leading keep-alive CRLFs,
/// `Ok(None)` if more bytes are needed, `Err` on garbage or a message over
/// [`MAX_MESSAGE`] (the connection cannot be resynchronised: close it).
///
/// Stateless: it rescans `buf` on every call, so a caller that reads in small pieces
/// should bound how often it calls this (or how long a partial message may take).
pub fn frame(buf: &[u8]) -> Result<Option<Frame>, SipParseError> {
    match buf {
        [] | [b'\r'] => return Ok(None),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Some(Frame::KeepAlive(4))),
        [b'\r', b'\n', ..] => return Ok(Some(Frame::KeepAlive(2))),
        [b'\r' | b'\n', ..] => return Ok(Some(Frame::KeepAlive(1))),
        _ => {}
    }
    let window = &buf[..buf.len().min(MAX_MESSAGE)];
    let Some((head_len, body_start)) = head_end(window) else {
        if buf.len() >= MAX_MESSAGE {
            return Err(SipParseError::TooLarge {
                len: buf.len(),
                max: MAX_MESSAGE,
            });
        }
        // Refuse garbage early instead of buffering it up to MAX_MESSAGE: the start line,
        // once complete, must parse, and must be text before that.
        match buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = std::str::from_utf8(line).map_err(|_| SipParseError::NotUtf8)?;
                if line.bytes().any(is_ctl) {
                    return Err(SipParseError::BadStartLine(shown(line)));
                }
                parse_start_line(line)?;
            }
            None => {
                let bad = || SipParseError::BadStartLine(shown(&String::from_utf8_lossy(buf)));
                // A multi-byte character cut by the read is fine; invalid UTF-8 is not.
                if let Err(e) = std::str::from_utf8(buf) {
                    if e.error_len().is_some() {
                        return Err(SipParseError::NotUtf8);
                    }
                }
                if buf.len() > MAX_HEADER_LEN || buf.iter().any(|&b| b != b'\r' && is_ctl(b)) {
                    return Err(bad());
                }
            }
        }
        return Ok(None);
    };
    let head = parse_head(&buf[..head_len])?;
    let length = head
        .content_length
        .ok_or(SipParseError::MissingContentLength)?;
    let total = body_start.saturating_add(length);
    if total > MAX_MESSAGE {
        return Err(SipParseError::TooLarge {
            len: total,
            max: MAX_MESSAGE,
        });
    }
    Ok((buf.len() >= total).then_some(Frame::Message(total)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `head` (lines joined with CRLF) + empty line + `body`, with `{len}` in the head
    /// replaced by the body length.
    pub(crate) fn wire(head: &[&str], body: &str) -> Vec<u8> {
        let head = head.join("\r\n").replace("{len}", &body.len().to_string());
        format!("{head}\r\n\r\n{body}").into_bytes()
    }

    pub(crate) const PIDF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@127.0.0.1">
  <tuple id="a1"><status><basic>open</basic></status></tuple>
  <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
</presence>
"#;

    /// A NOTIFY as Kamailio 5.6 presence sends it (reference §2.3, header order and
    /// values as in its traces).
    pub(crate) fn kamailio_notify() -> Vec<u8> {
        wire(
            &[
                "NOTIFY sip:presence-bridge@10.1.2.3:5070;transport=tcp SIP/2.0",
                "Via: SIP/2.0/TCP 127.0.0.1:15060;branch=z9hG4bK9d5e.a1f0c6f4000000000000000000000000.0",
                "To: <sip:presence-bridge@example.com>;tag=4f1c2a9b77e0d3c5",
                "From: <sip:alice@127.0.0.1>;tag=a6a1c5f60faecf035a1ae5b6e96e979a-4a3d",
                "CSeq: 2 NOTIFY",
                "Call-ID: 0f3c7a9e5b1d2c4e6a8b0c2d4e6f8a0b@10.1.2.3",
                "Content-Length: {len}",
                "User-Agent: kamailio (5.6.3 (x86_64/linux))",
                "Max-Forwards: 70",
                "Event: presence",
                "Contact: <sip:127.0.0.1:15060;transport=tcp>",
                "Subscription-State: active;expires=3599",
                "Content-Type: application/pidf+xml",
            ],
            PIDF,
        )
    }

    /// Kamailio's 200 OK to an initial SUBSCRIBE (§2.8: 200, Expires, Contact).
    pub(crate) fn kamailio_200() -> Vec<u8> {
        wire(
            &[
                "SIP/2.0 200 OK",
                "Via: SIP/2.0/TCP 10.1.2.3:5070;branch=z9hG4bK1a2b3c4d5e6f7a8b;rport=5070;received=10.1.2.3",
                "From: <sip:presence-bridge@example.com>;tag=4f1c2a9b77e0d3c5",
                "To: <sip:alice@127.0.0.1>;tag=a6a1c5f60faecf035a1ae5b6e96e979a-4a3d",
                "Call-ID: 0f3c7a9e5b1d2c4e6a8b0c2d4e6f8a0b@10.1.2.3",
                "CSeq: 1 SUBSCRIBE",
                "Expires: 3600",
                "Contact: <sip:127.0.0.1:15060;transport=tcp>",
                "Server: kamailio (5.6.3 (x86_64/linux))",
                "Content-Length: 0",
            ],
            "",
        )
    }

    #[test]
    fn kamailio_notify_parses() {
        let m = SipMessage::parse(&kamailio_notify()).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some("NOTIFY"));
        assert_eq!(m.code(), None);
        assert_eq!(
            m.request_uri(),
            Some("sip:presence-bridge@10.1.2.3:5070;transport=tcp")
        );
        assert_eq!(
            m.call_id(),
            Some("0f3c7a9e5b1d2c4e6a8b0c2d4e6f8a0b@10.1.2.3")
        );
        assert_eq!(m.cseq(), Some((2, "NOTIFY".to_string())));
        assert_eq!(m.to_hdr().unwrap().tag(), Some("4f1c2a9b77e0d3c5"));
        let from = m.from_hdr().unwrap();
        assert_eq!(from.uri, "sip:alice@127.0.0.1");
        assert_eq!(from.tag(), Some("a6a1c5f60faecf035a1ae5b6e96e979a-4a3d"));
        assert_eq!(
            m.contact().unwrap().uri,
            "sip:127.0.0.1:15060;transport=tcp"
        );
        assert_eq!(
            m.event(),
            Some(EventHeader {
                package: "presence".into(),
                id: None
            })
        );
        assert_eq!(
            m.subscription_state(),
            Some(SubscriptionState {
                state: SubState::Active,
                expires: Some(3599),
                reason: None,
                retry_after: None
            })
        );
        assert_eq!(m.content_type().unwrap().essence, "application/pidf+xml");
        assert_eq!(m.body, PIDF.as_bytes());
        assert_eq!(
            m.via_branch().as_deref(),
            Some("z9hG4bK9d5e.a1f0c6f4000000000000000000000000.0")
        );
        assert_eq!(
            m.header("user-agent"),
            Some("kamailio (5.6.3 (x86_64/linux))")
        );
        assert_eq!(m.headers.len(), 12);
        assert_eq!(
            uri_aor(m.request_uri().unwrap()).unwrap(),
            "presence-bridge@10.1.2.3"
        );
    }

    #[test]
    fn kamailio_200_parses() {
        let m = SipMessage::parse(&kamailio_200()).unwrap();
        assert!(!m.is_request());
        assert_eq!(m.code(), Some(200));
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 200,
                reason: "OK".into()
            }
        );
        assert_eq!(m.method(), None);
        assert_eq!(m.request_uri(), None);
        assert_eq!(m.expires(), Some(3600));
        assert_eq!(m.cseq(), Some((1, "SUBSCRIBE".into())));
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bK1a2b3c4d5e6f7a8b"));
        assert_eq!(
            uri_host_port(&m.contact().unwrap().uri),
            Some(("127.0.0.1".into(), 15060))
        );
        assert!(m.body.is_empty());
        assert_eq!(m.subscription_state(), None);
        assert_eq!(m.event(), None);
    }

    #[test]
    fn compact_forms_are_their_long_names() {
        let m = SipMessage::parse(&wire(
            &[
                "NOTIFY sip:w@h SIP/2.0",
                "v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc1",
                "f: <sip:alice@h>;tag=x",
                "t: <sip:w@h>;tag=y",
                "i: cid@h",
                "CSeq: 7 NOTIFY",
                "m: <sip:192.0.2.10>",
                "o: presence;id=7",
                "u: presence, dialog",
                "k: eventlist",
                "s: hello",
                "e: gzip",
                "c: application/pidf+xml;charset=UTF-8",
                "l: {len}",
            ],
            "<x/>",
        ))
        .unwrap();
        assert_eq!(
            m.header("Via"),
            Some("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc1")
        );
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bKc1"));
        assert_eq!(m.from_hdr().unwrap().tag(), Some("x"));
        assert_eq!(m.to_hdr().unwrap().tag(), Some("y"));
        assert_eq!(m.call_id(), Some("cid@h"));
        assert_eq!(m.contact().unwrap().uri, "sip:192.0.2.10");
        assert_eq!(
            m.event(),
            Some(EventHeader {
                package: "presence".into(),
                id: Some("7".into())
            })
        );
        assert_eq!(m.header_list("Allow-Events"), ["presence", "dialog"]);
        assert_eq!(m.header("supported"), Some("eventlist"));
        assert_eq!(m.header("Subject"), Some("hello"));
        assert_eq!(m.header("Content-Encoding"), Some("gzip"));
        let ct = m.content_type().unwrap();
        assert_eq!(ct.essence, "application/pidf+xml");
        assert_eq!(ct.param("Charset"), Some("UTF-8"));
        assert_eq!(m.header("content-length"), Some("4"));
        // And the other way round: a compact name finds the long form.
        let long = SipMessage::request("NOTIFY", "sip:w@h").with("Call-ID", "c1");
        assert_eq!(long.header("i"), Some("c1"));
        assert_eq!(long.header("I"), Some("c1"));
        // Names kept as sent.
        assert_eq!(m.headers[0].0, "v");
    }

    #[test]
    fn names_are_case_insensitive_and_blanks_around_the_colon_allowed() {
        let m = SipMessage::parse(
            b"OPTIONS sip:h SIP/2.0\r\ncall-id: a\r\nCALL-ID :b\r\nCaLl-Id\t:  c  \r\nX-Empty:\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.header("Call-ID"), Some("a"));
        assert_eq!(m.headers("call-id").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.header("x-empty"), Some(""));
        assert_eq!(m.call_id(), Some("a"));
        assert_eq!(m.header("Missing"), None);
        assert_eq!(m.headers[1].0, "CALL-ID");
    }

    #[test]
    fn folded_lines_are_unfolded() {
        let m = SipMessage::parse(
            b"SUBSCRIBE sip:a@h SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree \r\nAccept: application/pidf+xml,\r\n application/xpidf+xml\r\nVia: SIP/2.0/UDP h\r\n   ;branch=z9hG4bKf\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.header("Subject"), Some("one two three"));
        assert_eq!(
            m.header_list("Accept"),
            ["application/pidf+xml", "application/xpidf+xml"]
        );
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bKf"));
        assert_eq!(m.headers.len(), 4);
        assert_eq!(
            SipMessage::parse(b"OPTIONS sip:h SIP/2.0\r\n folded: first\r\n\r\n"),
            Err(SipParseError::FoldBeforeHeader)
        );
    }

    #[test]
    fn header_list_respects_quotes_and_angle_brackets() {
        let m = SipMessage::parse(&wire(
            &[
                "SIP/2.0 200 OK",
                "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa, SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKb",
                "Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKc;received=10.0.0.1",
                "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr;x=\"a,b\">",
                "Contact: \"Smith, Bob\" <sip:bob@h>;expires=60, <sip:weird,user@h>, sip:carol@h",
                "Allow-Events: presence,dialog ,, message-summary",
                "Content-Length: 0",
            ],
            "",
        ))
        .unwrap();
        assert_eq!(
            m.header_list("Via"),
            [
                "SIP/2.0/UDP p1.example.com;branch=z9hG4bKa",
                "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKb",
                "SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKc;received=10.0.0.1",
            ]
        );
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bKa"));
        assert_eq!(
            m.header_list("record-route"),
            [
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr;x=\"a,b\">"
            ]
        );
        let contacts = m.header_list("m");
        assert_eq!(
            contacts,
            [
                "\"Smith, Bob\" <sip:bob@h>;expires=60",
                "<sip:weird,user@h>",
                "sip:carol@h"
            ]
        );
        let first = m.contact().unwrap();
        assert_eq!(first.display.as_deref(), Some("Smith, Bob"));
        assert_eq!(first.param("expires"), Some("60"));
        assert_eq!(
            m.header_list("Allow-Events"),
            ["presence", "dialog", "message-summary"]
        );
        assert!(m.header_list("Route").is_empty());
        // An escaped quote does not end the quoted string; an unterminated one runs to
        // the end of the line.
        let m = SipMessage::request("X", "sip:h")
            .with("Contact", r#""a \", b" <sip:a@h>, <sip:b@h>"#)
            .with("Route", "\"open, <sip:c@h>");
        assert_eq!(m.header_list("Contact").len(), 2);
        assert_eq!(m.header_list("Route"), ["\"open, <sip:c@h>"]);
        let m = SipMessage::request("X", "sip:h").with("Route", "\"\\");
        assert_eq!(m.header_list("Route"), ["\"\\"]);
    }

    #[test]
    fn content_length_must_match_the_body() {
        let head = |cl: &str| format!("MESSAGE sip:h SIP/2.0\r\nContent-Length: {cl}\r\n\r\n");
        let msg = |cl: &str, body: &str| format!("{}{body}", head(cl)).into_bytes();
        assert_eq!(
            SipMessage::parse(&msg("5", "hello")).unwrap().body,
            b"hello"
        );
        assert_eq!(
            SipMessage::parse(&msg("6", "hello")),
            Err(SipParseError::BodyTruncated {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            SipMessage::parse(&msg("3", "hello")),
            Err(SipParseError::TrailingBytes {
                expected: 3,
                extra: 2
            })
        );
        for bad in ["abc", "-1", "1.0", "", "99999999999999999999999999"] {
            let r = SipMessage::parse(&msg(bad, ""));
            if bad == "99999999999999999999999999" {
                assert!(
                    matches!(r, Err(SipParseError::BodyTruncated { .. })),
                    "{r:?}"
                );
            } else {
                assert!(
                    matches!(r, Err(SipParseError::BadContentLength(_))),
                    "{bad}: {r:?}"
                );
            }
        }
        // Two lengths that disagree (one compact) are refused; equal ones are fine.
        let two = b"MESSAGE sip:h SIP/2.0\r\nContent-Length: 2\r\nl: 3\r\n\r\nabc";
        assert!(matches!(
            SipMessage::parse(two),
            Err(SipParseError::BadContentLength(_))
        ));
        let same = b"MESSAGE sip:h SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc";
        assert_eq!(SipMessage::parse(same).unwrap().body, b"abc");
        // No Content-Length: the rest of the datagram.
        let none = b"MESSAGE sip:h SIP/2.0\r\nTo: <sip:h>\r\n\r\nrest\r\n";
        assert_eq!(SipMessage::parse(none).unwrap().body, b"rest\r\n");
        // A body may be any bytes.
        let mut binary = head("4").into_bytes();
        binary.extend_from_slice(&[0, 0xff, 0xfe, b'\n']);
        assert_eq!(
            SipMessage::parse(&binary).unwrap().body,
            [0, 0xff, 0xfe, b'\n']
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        use SipParseError as E;
        type Check = fn(&SipParseError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", |e| *e == E::Empty),
            (b"\r\n\r\n", |e| *e == E::Empty),
            (b"NOTIFY sip:h SIP/2.0\r\nVia: x\r\n", |e| {
                *e == E::NoHeaderEnd
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nVia: x", |e| *e == E::NoHeaderEnd),
            (b"NOTIFY sip:h SIP/2.0", |e| *e == E::NoHeaderEnd),
            (b"NOTIFY sip:h SIP/3.0\r\n\r\n", |e| {
                matches!(e, E::BadVersion(_))
            }),
            (b"SIP/1.0 200 OK\r\n\r\n", |e| matches!(e, E::BadVersion(_))),
            (b"SIP/2.0 2000 OK\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"SIP/2.0 099 Low\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"SIP/2.0 700 High\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"SIP/2.0 2x0 OK\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"NOTIFY sip:h\r\n\r\n", |e| matches!(e, E::BadStartLine(_))),
            (b"NOTIFY sip:h SIP/2.0 extra\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"NOT(IFY sip:h SIP/2.0\r\n\r\n", |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", |e| {
                matches!(e, E::BadVersion(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nno colon here\r\n\r\n", |e| {
                matches!(e, E::BadHeader(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\n: empty name\r\n\r\n", |e| {
                matches!(e, E::BadHeader(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nBad Name: x\r\n\r\n", |e| {
                matches!(e, E::BadHeader(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nX: a\x00b\r\n\r\n", |e| {
                matches!(e, E::BadHeader(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nX: a\rb\r\n\r\n", |e| {
                matches!(e, E::BadHeader(_))
            }),
            (b"NOTIFY sip:h SIP/2.0\r\nX: caf\xe9\r\n\r\n", |e| {
                *e == E::NotUtf8
            }),
            (b"NOTIFY sip:\xff SIP/2.0\r\n\r\n", |e| *e == E::NotUtf8),
            (b"\x00\x01\x02\x03\n\n", |e| matches!(e, E::BadStartLine(_))),
            ("SIP\u{e9}/2.0 200 OK\r\n\r\n".as_bytes(), |e| {
                matches!(e, E::BadStartLine(_))
            }),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n", |e| {
                *e == E::NotUtf8
            }),
        ];
        for (input, expected) in cases {
            let err = SipParseError::clone(&SipMessage::parse(input).unwrap_err());
            assert!(
                expected(&err),
                "{:?}: {err:?}",
                String::from_utf8_lossy(input)
            );
            // Every error renders without panicking and without control characters.
            assert!(!err.to_string().contains(['\r', '\n', '\0']));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x51b);
        let alphabet = b"SIP/2.0 NOTIFYsip:@;=,\"<>\r\n\t:Content-Length0123456789\xff\x00";
        for _ in 0..20_000 {
            let len = rng.usize(0..200);
            let bytes: Vec<u8> = if rng.bool() {
                (0..len).map(|_| rng.u8(..)).collect()
            } else {
                (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect()
            };
            let _ = frame(&bytes);
            if let Ok(m) = SipMessage::parse(&bytes) {
                let _ = (m.subscription_state(), m.event(), m.from_hdr(), m.contact());
                let _ = (
                    m.content_type(),
                    m.cseq(),
                    m.header_list("Via"),
                    m.via_branch(),
                );
                // The wire form parses back to the same message, up to what to_bytes
                // normalizes: one Content-Length, equal to the body length.
                let mut expected = m.clone();
                let len = m.body.len().to_string();
                let mut seen = false;
                expected.headers.retain_mut(|(n, v)| {
                    if !same_name(n, "Content-Length") {
                        return true;
                    }
                    *v = len.clone();
                    !std::mem::replace(&mut seen, true)
                });
                if !seen {
                    expected.add("Content-Length", len);
                }
                assert_eq!(SipMessage::parse(&m.to_bytes()), Ok(expected));
            }
        }
    }

    #[test]
    fn limits() {
        // Exactly MAX_HEADERS fields are fine, one more is not.
        let mut head = vec!["NOTIFY sip:h SIP/2.0".to_string()];
        head.extend((0..MAX_HEADERS).map(|i| format!("X-{i}: {i}")));
        let refs: Vec<&str> = head.iter().map(String::as_str).collect();
        assert_eq!(
            SipMessage::parse(&wire(&refs, "")).unwrap().headers.len(),
            MAX_HEADERS
        );
        head.push("X-last: 1".into());
        let refs: Vec<&str> = head.iter().map(String::as_str).collect();
        assert_eq!(
            SipMessage::parse(&wire(&refs, "")),
            Err(SipParseError::TooManyHeaders { max: MAX_HEADERS })
        );

        // One huge field, on one line or built up by folding.
        let huge = format!("X-Huge: {}", "a".repeat(MAX_HEADER_LEN + 1));
        assert!(matches!(
            SipMessage::parse(&wire(&["NOTIFY sip:h SIP/2.0", &huge], "")),
            Err(SipParseError::HeaderTooLong { ref name, max: MAX_HEADER_LEN }) if name == "X-Huge"
        ));
        let ok = format!("X-Big: {}", "a".repeat(MAX_HEADER_LEN));
        assert!(SipMessage::parse(&wire(&["NOTIFY sip:h SIP/2.0", &ok], "")).is_ok());
        let fold = format!(" {}", "b".repeat(1000));
        let mut folded = vec!["NOTIFY sip:h SIP/2.0", "X-Folded: a"];
        folded.extend(std::iter::repeat_n(
            fold.as_str(),
            MAX_HEADER_LEN / 1000 + 1,
        ));
        assert!(matches!(
            SipMessage::parse(&wire(&folded, "")),
            Err(SipParseError::HeaderTooLong { .. })
        ));

        // The whole message.
        let body = "x".repeat(MAX_MESSAGE);
        let big = wire(&["MESSAGE sip:h SIP/2.0", "Content-Length: {len}"], &body);
        assert_eq!(
            SipMessage::parse(&big),
            Err(SipParseError::TooLarge {
                len: big.len(),
                max: MAX_MESSAGE
            })
        );
        let head_len = wire(&["MESSAGE sip:h SIP/2.0", "Content-Length: 999999"], "").len();
        let fits = wire(
            &["MESSAGE sip:h SIP/2.0", "Content-Length: {len}"],
            &body[..MAX_MESSAGE - head_len],
        );
        assert_eq!(fits.len(), MAX_MESSAGE);
        assert!(SipMessage::parse(&fits).is_ok());
    }

    #[test]
    fn bare_lf_and_leading_crlf_are_accepted() {
        let m = SipMessage::parse(
            b"\r\n\r\nOPTIONS sip:h SIP/2.0\nCall-ID: x\nContent-Length: 2\n\nhi",
        )
        .unwrap();
        assert_eq!(m.call_id(), Some("x"));
        assert_eq!(m.body, b"hi");
        // Lower-case version and reason with spaces.
        let m = SipMessage::parse(b"sip/2.0 481 Call/Transaction Does Not Exist\r\n\r\n").unwrap();
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 481,
                reason: "Call/Transaction Does Not Exist".into()
            }
        );
        let m = SipMessage::parse(b"SIP/2.0 200\r\n\r\n").unwrap();
        assert_eq!(m.code(), Some(200));
    }

    #[test]
    fn round_trip() {
        for raw in [kamailio_notify(), kamailio_200()] {
            let m = SipMessage::parse(&raw).unwrap();
            assert_eq!(m.to_bytes(), raw);
            assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m);
        }
        // Folded and compact input: not byte-identical, but the same message.
        let raw =
            b"NOTIFY sip:w@h SIP/2.0\r\nv: SIP/2.0/UDP h\r\n ;branch=z9hG4bKx\r\nl: 3\r\n\r\nabc";
        let m = SipMessage::parse(raw).unwrap();
        assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m);

        let mut built = SipMessage::request("SUBSCRIBE", "sip:alice@pbx.example.com")
            .with(
                "Via",
                format!("SIP/2.0/TCP 10.1.2.3:5070;branch={};rport", new_branch()),
            )
            .with("Max-Forwards", "70")
            .with(
                "From",
                format!("<sip:presence-bridge@example.com>;tag={}", new_tag()),
            )
            .with("To", "<sip:alice@pbx.example.com>")
            .with("Call-ID", new_call_id("10.1.2.3"))
            .with("CSeq", "1 SUBSCRIBE")
            .with("Event", "presence")
            .with("Expires", "3600");
        built.set_body("application/pidf+xml", PIDF.as_bytes().to_vec());
        assert_eq!(SipMessage::parse(&built.to_bytes()).unwrap(), built);
        let resp = SipMessage::response(489, "Bad Event").with("Allow-Events", "presence");
        let mut expected = resp.clone();
        expected.add("Content-Length", "0");
        assert_eq!(SipMessage::parse(&resp.to_bytes()).unwrap(), expected);
    }

    #[test]
    fn to_bytes_fixes_content_length_and_line_breaks() {
        let m = SipMessage::request("MESSAGE", "sip:h")
            .with("Content-Length", "999")
            .with("To", "<sip:h>")
            .with("l", "5");
        let mut m = m;
        m.body = b"hello".to_vec();
        assert_eq!(
            m.to_bytes(),
            b"MESSAGE sip:h SIP/2.0\r\nContent-Length: 5\r\nTo: <sip:h>\r\n\r\nhello"
        );
        assert_eq!(
            SipMessage::response(200, "OK").to_bytes(),
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        // A value with a line break cannot smuggle a header or end the header section.
        let evil = SipMessage::request("NOTIFY", "sip:h\r\nX: 1")
            .with("Subject", "hi\r\nVia: SIP/2.0/UDP evil\r\n\r\nbody");
        let parsed = SipMessage::parse(&evil.to_bytes()).unwrap_err();
        assert!(
            matches!(parsed, SipParseError::BadStartLine(_)),
            "{parsed:?}"
        );
        let evil = SipMessage::request("NOTIFY", "sip:h").with("Subject", "hi\r\nVia: x\n\nbody");
        let parsed = SipMessage::parse(&evil.to_bytes()).unwrap();
        assert_eq!(parsed.headers.len(), 2);
        assert_eq!(parsed.header("Via"), None);
        assert_eq!(parsed.header("Subject"), Some("hi  Via: x  body"));
    }

    #[test]
    fn builders() {
        let req = SipMessage::parse(&kamailio_notify()).unwrap();
        let with_two_vias = {
            let mut r = req.clone();
            r.headers
                .insert(1, ("v".into(), "SIP/2.0/UDP proxy;branch=z9hG4bKp".into()));
            r
        };
        let resp = SipMessage::response_to(&with_two_vias, 200, "OK");
        assert_eq!(resp.code(), Some(200));
        assert_eq!(
            resp.headers,
            [
                ("Via".to_string(), "SIP/2.0/TCP 127.0.0.1:15060;branch=z9hG4bK9d5e.a1f0c6f4000000000000000000000000.0".to_string()),
                ("Via".into(), "SIP/2.0/UDP proxy;branch=z9hG4bKp".into()),
                ("From".into(), "<sip:alice@127.0.0.1>;tag=a6a1c5f60faecf035a1ae5b6e96e979a-4a3d".into()),
                ("To".into(), "<sip:presence-bridge@example.com>;tag=4f1c2a9b77e0d3c5".into()),
                ("Call-ID".into(), "0f3c7a9e5b1d2c4e6a8b0c2d4e6f8a0b@10.1.2.3".into()),
                ("CSeq".into(), "2 NOTIFY".into()),
                ("Content-Length".into(), "0".into()),
            ]
        );
        assert!(resp.body.is_empty());

        let mut m = SipMessage::request("PUBLISH", "sip:alice@h")
            .with("Expires", "60")
            .with("Route", "<sip:p1;lr>")
            .with("Route", "<sip:p2;lr>")
            .with("To", "<sip:alice@h>");
        m.set("route", "<sip:p3;lr>");
        assert_eq!(m.headers("Route").collect::<Vec<_>>(), ["<sip:p3;lr>"]);
        assert_eq!(m.headers[1].0, "route");
        m.set("Expires", "0").set("SIP-If-Match", "a.1.2");
        assert_eq!(m.expires(), Some(0));
        assert_eq!(m.headers.last().unwrap().1, "a.1.2");
        m.add("t", "<sip:other@h>");
        m.set("To", "<sip:alice@h>;tag=1");
        assert_eq!(m.headers("To").collect::<Vec<_>>(), ["<sip:alice@h>;tag=1"]);
        m.remove("expires");
        assert_eq!(m.expires(), None);
        m.remove("Nothing");
        m.set_body("application/pidf+xml", b"<p/>".to_vec());
        assert_eq!(m.header("Content-Length"), Some("4"));
        assert_eq!(m.content_type().unwrap().essence, "application/pidf+xml");
        m.set_body("", Vec::new());
        assert_eq!(m.header("Content-Type"), None);
        assert_eq!(m.header("Content-Length"), Some("0"));
        assert_eq!(m.method(), Some("PUBLISH"));
    }

    #[test]
    fn name_addr_forms() {
        let p = |s: &str| NameAddr::parse(s).unwrap();
        let na = |display: Option<&str>, uri: &str, params: &[(&str, Option<&str>)]| NameAddr {
            display: display.map(str::to_string),
            uri: uri.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
        };
        let cases = [
            ("<sip:a@h>", na(None, "sip:a@h", &[])),
            (
                "<sip:a@h;transport=tcp>;tag=1",
                na(None, "sip:a@h;transport=tcp", &[("tag", Some("1"))]),
            ),
            (
                "sip:a@h;tag=1;lr",
                na(None, "sip:a@h", &[("tag", Some("1")), ("lr", None)]),
            ),
            (
                "  Alice Smith <sip:a@h> ;tag = x ",
                na(Some("Alice Smith"), "sip:a@h", &[("tag", Some("x"))]),
            ),
            (
                "\"Smith, <Al>\" <sip:a@h>",
                na(Some("Smith, <Al>"), "sip:a@h", &[]),
            ),
            (
                "\"q\\\"uote\"<sips:a@h>",
                na(Some("q\"uote"), "sips:a@h", &[]),
            ),
            ("\"\" <sip:a@h>", na(Some(""), "sip:a@h", &[])),
            (
                "<sip:a@h>;+sip.instance=\"<urn:uuid:1;x>\";expires=60",
                na(
                    None,
                    "sip:a@h",
                    &[
                        ("+sip.instance", Some("\"<urn:uuid:1;x>\"")),
                        ("expires", Some("60")),
                    ],
                ),
            ),
            ("<sip:a@h>;", na(None, "sip:a@h", &[])),
            ("sip:127.0.0.1:15060", na(None, "sip:127.0.0.1:15060", &[])),
            ("*", na(None, "*", &[])),
        ];
        for (input, expected) in cases {
            assert_eq!(p(input), expected, "{input}");
            // Display gives something that parses back to the same value.
            assert_eq!(p(&expected.to_string()), expected, "{input}");
        }
        assert_eq!(p("<sip:a@h>;TAG=1").tag(), Some("1"));
        assert_eq!(p("<sip:a@h>;lr").param("LR"), Some(""));
        assert_eq!(p("<sip:a@h>").tag(), None);
        assert_eq!(
            p("\"Al\" <sip:a@h>;tag=old;x=1").to_string_with_tag("new"),
            "\"Al\" <sip:a@h>;x=1;tag=new"
        );
        assert_eq!(p("sip:a@h").to_string_with_tag("t"), "<sip:a@h>;tag=t");
        for bad in [
            "",
            "  ",
            "<sip:a@h",
            "\"unterminated <sip:a@h>",
            "\"x\" sip:a@h",
            "<sip:a@h> junk",
            "<>",
            "sip:a b@h",
            "<sip:a@h>;=1",
            "a <b <c>",
        ] {
            assert!(
                matches!(NameAddr::parse(bad), Err(SipParseError::BadNameAddr(_))),
                "{bad:?}"
            );
        }
        let m = SipMessage::request("X", "sip:h").with("Contact", "*");
        assert_eq!(m.contact(), None);
    }

    #[test]
    fn subscription_state_values() {
        let ss = |state, expires, reason: Option<&str>, retry_after| SubscriptionState {
            state,
            expires,
            reason: reason.map(str::to_string),
            retry_after,
        };
        let cases = [
            (
                "active;expires=3599",
                Some(ss(SubState::Active, Some(3599), None, None)),
            ),
            (
                "Active ; Expires = 60",
                Some(ss(SubState::Active, Some(60), None, None)),
            ),
            ("pending", Some(ss(SubState::Pending, None, None, None))),
            (
                "terminated;reason=timeout",
                Some(ss(SubState::Terminated, None, Some("timeout"), None)),
            ),
            (
                "terminated;reason=Probation;retry-after=30",
                Some(ss(SubState::Terminated, None, Some("probation"), Some(30))),
            ),
            (
                "terminated;reason=\"giveup\";retry-after=x",
                Some(ss(SubState::Terminated, None, Some("giveup"), None)),
            ),
            (
                "waiting;expires=99999999999",
                Some(ss(
                    SubState::Other("waiting".into()),
                    Some(u32::MAX),
                    None,
                    None,
                )),
            ),
            (
                "active;expires;foo=bar;reason",
                Some(ss(SubState::Active, None, None, None)),
            ),
            ("", None),
            (";expires=1", None),
            ("act ive", None),
        ];
        for (value, expected) in cases {
            let m = SipMessage::request("NOTIFY", "sip:h").with("Subscription-State", value);
            assert_eq!(m.subscription_state(), expected, "{value}");
        }
    }

    #[test]
    fn event_values() {
        let ev = |p: &str, id: Option<&str>| {
            Some(EventHeader {
                package: p.into(),
                id: id.map(str::to_string),
            })
        };
        let cases = [
            ("presence", ev("presence", None)),
            ("Presence;id=7", ev("presence", Some("7"))),
            ("dialog ; ID = ab;other=1", ev("dialog", Some("ab"))),
            ("presence.winfo", ev("presence.winfo", None)),
            ("message-summary;id=\"q\"", ev("message-summary", Some("q"))),
            ("presence;id=", ev("presence", None)),
            ("", None),
            ("pres ence", None),
        ];
        for (value, expected) in cases {
            let m = SipMessage::request("NOTIFY", "sip:h").with("o", value);
            assert_eq!(m.event(), expected, "{value}");
        }
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse(
            "Multipart/Related;type=\"application/rlmi+xml\";start=\"<rlmi-1@h;x>\";boundary=rlsbound42",
        )
        .unwrap();
        assert_eq!(m.essence, "multipart/related");
        assert_eq!(m.param("type"), Some("application/rlmi+xml"));
        assert_eq!(m.param("START"), Some("<rlmi-1@h;x>"));
        assert_eq!(m.param("boundary"), Some("rlsbound42"));
        assert_eq!(m.param("charset"), None);
        assert_eq!(
            MediaType::parse(" application/PIDF+xml ; charset=\"UTF-8\"").unwrap(),
            MediaType {
                essence: "application/pidf+xml".into(),
                params: vec![("charset".into(), "UTF-8".into())]
            }
        );
        for bad in [
            "",
            "application",
            "/xml",
            "application/",
            "a b/c",
            "text/pl ain",
        ] {
            assert_eq!(MediaType::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn numeric_headers() {
        let m = |name: &str, v: &str| SipMessage::request("X", "sip:h").with(name, v);
        assert_eq!(m("Expires", " 3600 ").expires(), Some(3600));
        assert_eq!(m("Expires", "0").expires(), Some(0));
        assert_eq!(
            m("Expires", "Thu, 01 Dec 1994 16:00:00 GMT").expires(),
            None
        );
        assert_eq!(m("Expires", "-1").expires(), None);
        assert_eq!(m("Expires", "4294967296").expires(), Some(u32::MAX));
        assert_eq!(m("Min-Expires", "60").min_expires(), Some(60));
        assert_eq!(m("Retry-After", "120").retry_after(), Some(120));
        assert_eq!(
            m("Retry-After", "18000;duration=3600").retry_after(),
            Some(18000)
        );
        assert_eq!(
            m("Retry-After", "120 (I'm in a meeting)").retry_after(),
            Some(120)
        );
        assert_eq!(m("Retry-After", "soon").retry_after(), None);

        let cseq = |v: &str| m("CSeq", v).cseq();
        assert_eq!(cseq("1 SUBSCRIBE"), Some((1, "SUBSCRIBE".into())));
        assert_eq!(cseq("  42   notify "), Some((42, "NOTIFY".into())));
        assert_eq!(
            cseq("4294967295 PUBLISH"),
            Some((u32::MAX, "PUBLISH".into()))
        );
        for bad in [
            "",
            "1",
            "SUBSCRIBE",
            "4294967296 X",
            "-1 X",
            "1 X Y",
            "x1 X",
            "1 (X)",
        ] {
            assert_eq!(cseq(bad), None, "{bad}");
        }
        assert_eq!(m("Call-ID", "").call_id(), None);
        assert_eq!(m("Via", "SIP/2.0/UDP h;branch=").via_branch(), None);
        assert_eq!(
            m("Via", "SIP/2.0/UDP h;rport;BRANCH=z9hG4bK1")
                .via_branch()
                .as_deref(),
            Some("z9hG4bK1")
        );
        assert_eq!(
            m("Via", "SIP/2.0/UDP h;received=1.2.3.4").via_branch(),
            None
        );
    }

    #[test]
    fn uris() {
        let aor = [
            (
                "sip:Alice@Example.COM:5060;transport=tcp",
                Some("alice@example.com"),
            ),
            ("sips:bob@h", Some("bob@h")),
            ("pres:carol@example.com", Some("carol@example.com")),
            ("SIP:dave:secret@h.example.com", Some("dave@h.example.com")),
            ("<sip:eve@[2001:DB8::1]:5070>", Some("eve@[2001:db8::1]")),
            ("alice@example.com", Some("alice@example.com")),
            (
                "sip:+1234;phone-context=x@h;user=phone",
                Some("+1234;phone-context=x@h"),
            ),
            ("sip:pbx.example.com", Some("pbx.example.com")),
            ("sip:127.0.0.1:15060;transport=tcp", Some("127.0.0.1")),
            ("pbx.example.com:5060", Some("pbx.example.com")),
            ("sip:a@h?subject=x@y", Some("a@h")),
            ("tel:+15551234", None),
            ("http://example.com", None),
            ("sip:", None),
            ("sip:@h", None),
            ("sip:a@", None),
            ("", None),
            ("sip:a@[::1", None),
            ("sip:a@[::1]x", None),
        ];
        for (uri, expected) in aor {
            assert_eq!(uri_aor(uri).as_deref(), expected, "{uri}");
        }
        let hp = |h: &str, p| Some((h.to_string(), p));
        let host_port = [
            ("sip:alice@127.0.0.1:15070", hp("127.0.0.1", 15070)),
            ("sip:alice@pbx.example.com", hp("pbx.example.com", 5060)),
            ("sips:alice@pbx.example.com", hp("pbx.example.com", 5061)),
            (
                "sip:pbx.example.com;transport=TLS",
                hp("pbx.example.com", 5061),
            ),
            (
                "sip:pbx.example.com:5080;transport=tls",
                hp("pbx.example.com", 5080),
            ),
            (
                "sip:pbx.example.com;transport=tcp",
                hp("pbx.example.com", 5060),
            ),
            ("sip:a@[2001:db8::1]:5070;lr", hp("2001:db8::1", 5070)),
            ("sip:[::1]", hp("::1", 5060)),
            (
                "<sip:192.0.2.10:5060;transport=tcp>",
                hp("192.0.2.10", 5060),
            ),
            ("sip:Host.Example.COM", hp("host.example.com", 5060)),
            ("sip:a@h:99999", None),
            ("sip:a@h:", None),
            ("sip:a@h:x", None),
            ("tel:+1555", None),
            ("sip:", None),
        ];
        for (uri, expected) in host_port {
            assert_eq!(uri_host_port(uri), expected, "{uri}");
        }
        assert_eq!(
            uri_param("sip:a;b=c@h;transport=TCP;lr", "transport").as_deref(),
            Some("TCP")
        );
        assert_eq!(uri_param("sip:a;b=c@h;transport=TCP;lr", "b"), None);
        assert_eq!(uri_param("sip:h;LR", "lr").as_deref(), Some(""));
        assert_eq!(uri_param("sip:h?x=1;lr", "lr"), None);
    }

    #[test]
    fn identifiers() {
        let tags: std::collections::HashSet<String> = (0..1000).map(|_| new_tag()).collect();
        assert_eq!(tags.len(), 1000);
        assert!(tags.iter().all(|t| t.len() == 16 && is_token(t)));
        let branch = new_branch();
        assert!(branch.starts_with("z9hG4bK") && branch.len() == 23 && is_token(&branch));
        assert_ne!(new_branch(), branch);
        let cid = new_call_id("10.1.2.3");
        assert!(cid.ends_with("@10.1.2.3") && cid.len() == 32 + 9);
        assert_eq!(new_call_id(" ").len(), 32);
    }

    #[test]
    fn framing() {
        let notify = kamailio_notify();
        let ok = kamailio_200();
        // Every strict prefix needs more bytes; the whole message is one frame.
        for cut in 0..notify.len() {
            assert_eq!(frame(&notify[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(frame(&notify), Ok(Some(Frame::Message(notify.len()))));
        // Two messages back to back (and a keep-alive between them).
        let mut stream = notify.clone();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&ok);
        stream.extend_from_slice(b"\r\n");
        let mut frames = Vec::new();
        let mut rest = &stream[..];
        while let Some(f) = frame(rest).unwrap() {
            let n = match f {
                Frame::Message(n) => {
                    frames.push(SipMessage::parse(&rest[..n]).unwrap().code());
                    n
                }
                Frame::KeepAlive(n) => {
                    frames.push(Some(n as u16));
                    n
                }
            };
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(frames, [None, Some(4), Some(200), Some(2)]);

        assert_eq!(frame(b"\r\n\r\n"), Ok(Some(Frame::KeepAlive(4))));
        assert_eq!(frame(b"\r\n\r\nOPTIONS"), Ok(Some(Frame::KeepAlive(4))));
        assert_eq!(frame(b"\r\n"), Ok(Some(Frame::KeepAlive(2))));
        assert_eq!(frame(b"\r\n\r"), Ok(Some(Frame::KeepAlive(2))));
        assert_eq!(frame(b"\r"), Ok(None));
        assert_eq!(frame(b"\n"), Ok(Some(Frame::KeepAlive(1))));
        assert_eq!(frame(b"\rX"), Ok(Some(Frame::KeepAlive(1))));
        assert_eq!(frame(b""), Ok(None));

        // Content-Length is required on a stream.
        assert_eq!(
            frame(b"NOTIFY sip:h SIP/2.0\r\nTo: <sip:h>\r\n\r\nbody"),
            Err(SipParseError::MissingContentLength)
        );
        // Garbage is refused as soon as it is recognisable, not buffered.
        assert!(frame(b"GET / HTTP/1.1\r\n").is_err());
        assert!(frame(b"\x16\x03\x01\x02\x00\x01").is_err());
        assert!(frame(b"\xff\xfe\xfd").is_err());
        assert!(frame(b"NOTIFY sip:h SIP/2.0\r\nbad line\r\n\r\n").is_err());
        assert_eq!(frame(b"NOTIFY sip:h SIP/2.0\r\nVia: x"), Ok(None));
        assert_eq!(
            frame("NOTIFY sip:é".as_bytes().split_last().unwrap().1),
            Ok(None)
        );
        assert!(frame("X".repeat(MAX_HEADER_LEN + 1).as_bytes()).is_err());
        // Too large, announced or actual.
        assert!(matches!(
            frame(b"NOTIFY sip:h SIP/2.0\r\nContent-Length: 262145\r\n\r\n"),
            Err(SipParseError::TooLarge { .. })
        ));
        let endless = format!(
            "NOTIFY sip:h SIP/2.0\r\n{}",
            "X-A: b\r\n".repeat(MAX_MESSAGE / 8)
        );
        assert!(matches!(
            frame(endless.as_bytes()),
            Err(SipParseError::TooLarge { .. })
        ));
    }
}
