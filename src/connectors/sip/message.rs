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
    buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()
}

/// The parsed header section.
struct Head {
    start: StartLine,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
}

fn parse_start_line(line: &str) -> Result<StartLine, SipParseError> {
    let bad = || SipParseError::BadStartLine(shown(line));
    if line.len() > 3 && line[..4].eq_ignore_ascii_case("SIP/") {
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

/// Parses the header section (without the terminating empty line). `head` starts at the
/// start line.
fn parse_head(head: &[u8]) -> Result<Head, SipParseError> {
    let head = std::str::from_utf8(head).map_err(|_| SipParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    // Tabs are allowed in header values (folding, SWS); every other control character,
    // including a lone CR, is refused so nothing downstream (logs, our own re-sent
    // headers) ever carries one.
    let has_ctl = |s: &str| s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
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
            let (name, value) = headers
                .last_mut()
                .ok_or(SipParseError::FoldBeforeHeader)?;
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
    out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
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
            && scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
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
        Some("sip") | None => uri_param(uri, "transport").is_some_and(|t| t.eq_ignore_ascii_case("tls")),
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
                if line.bytes().any(|b| b < 0x20 || b == 0x7f) {
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
                if buf.len() > MAX_HEADER_LEN
                    || buf.iter().any(|&b| (b < 0x20 && b != b'\r') || b == 0x7f)
                {
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
