//! SIP digest authentication (RFC 3261 §22 with RFC 2617's qop, RFC 8760's SHA-256 and
//! SHA-512/256): the client side that answers 401/407 challenges, and a server-side check
//! for the inbound PUBLISH listener.
//!
//! Pitfalls this module exists to avoid (reference §14.6): a 407 is answered with
//! `Proxy-Authorization` and a 401 with `Authorization`; `qop`, `nc` and `algorithm` go
//! unquoted; `uri` is the Request-URI of the request being authorized; `nc` counts every
//! use of a nonce; wrong credentials end in [`DigestError::Rejected`] instead of a loop;
//! `algorithm=SHA-256` is understood.

use super::message::{quote, SipMessage};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use std::fmt;

/// Digest algorithms of RFC 8760 (absent `algorithm` means MD5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// The RFC 8760 token, case-insensitively (`md5`, `SHA-256-sess`); `None` for others.
    pub fn parse(token: &str) -> Option<Algorithm> {
        let token = token.trim();
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// The RFC 8760 token: `MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess`, `SHA-512-256`,
    /// `SHA-512-256-sess`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// A `-sess` variant: HA1 also covers the nonce and cnonce.
    pub fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// H(data) as lowercase hex.
    fn hash(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::<Md5>(data),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex::<Sha256>(data),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => hex::<Sha512_256>(data),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex<D: Digest>(data: &[u8]) -> String {
    D::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One Digest challenge of a `WWW-Authenticate` or `Proxy-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// Echoed verbatim.
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Offered qop values, lowercased (`auth`, `auth-int`); empty for a legacy RFC 2069
    /// challenge.
    pub qop: Vec<String>,
    /// The nonce expired but the credentials were good: answer again silently.
    pub stale: bool,
    /// From `Proxy-Authenticate` (answer with `Proxy-Authorization`).
    pub proxy: bool,
}

impl Challenge {
    /// Can we answer it? (An unknown algorithm never gets this far.)
    fn usable(&self) -> bool {
        self.qop.is_empty() || self.chosen_qop().is_some()
    }

    /// `auth` when offered, else `auth-int`, else none (legacy when nothing is offered).
    fn chosen_qop(&self) -> Option<&'static str> {
        ["auth", "auth-int"]
            .into_iter()
            .find(|q| self.qop.iter().any(|o| o == q))
    }
}

/// One item of an auth header: a scheme token starting a challenge/credentials, or a
/// `name=value` parameter (name lowercased, quoted value unescaped).
enum Item<'a> {
    Scheme(&'a str),
    Param(String, String),
}

/// Splits an auth header value into items. RFC 7235 lets one header hold several
/// challenges (`Digest realm="a", nonce="1", Digest realm="b", ...`): a token followed by
/// blanks instead of `=` starts the next one. `None` for an unterminated quoted string.
fn auth_items(s: &str) -> Option<Vec<Item<'_>>> {
    let b = s.as_bytes();
    let blank = |c: u8| c == b' ' || c == b'\t';
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b',' || blank(b[i])) {
            i += 1;
        }
        if i == b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b'=' | b',' | b' ' | b'\t' | b'"') {
            i += 1;
        }
        // All delimiters are ASCII, so these indices are char boundaries.
        let name = &s[start..i];
        if name.is_empty() {
            return None;
        }
        let mut j = i;
        while j < b.len() && blank(b[j]) {
            j += 1;
        }
        if j == b.len() || b[j] != b'=' {
            out.push(Item::Scheme(name));
            i = j;
            continue;
        }
        i = j + 1;
        while i < b.len() && blank(b[i]) {
            i += 1;
        }
        let value = if b.get(i) == Some(&b'"') {
            let mut value = String::new();
            let mut chars = s[i + 1..].char_indices();
            let mut end = None;
            while let Some((k, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1 + k + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            i = end?;
            value
        } else {
            let start = i;
            while i < b.len() && !matches!(b[i], b',' | b' ' | b'\t') {
                i += 1;
            }
            s[start..i].to_string()
        };
        out.push(Item::Param(name.to_ascii_lowercase(), value));
    }
}

/// Groups items into `(scheme, params)`; parameters before any scheme are dropped.
fn auth_groups(s: &str) -> Vec<(&str, Vec<(String, String)>)> {
    let mut groups: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    for item in auth_items(s).unwrap_or_default() {
        match item {
            Item::Scheme(scheme) => groups.push((scheme, Vec::new())),
            Item::Param(n, v) => {
                if let Some((_, params)) = groups.last_mut() {
                    params.push((n, v));
                }
            }
        }
    }
    groups
}

/// The first value of a parameter (a repeated one is ignored, not merged).
fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The Digest challenges in one header value; unknown algorithms and challenges without
/// realm or nonce are skipped.
pub fn parse_challenges(value: &str, proxy: bool) -> Vec<Challenge> {
    auth_groups(value)
        .into_iter()
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Digest"))
        .filter_map(|(_, p)| {
            let algorithm = match get(&p, "algorithm") {
                None => Algorithm::Md5,
                Some(a) => Algorithm::parse(a)?,
            };
            Some(Challenge {
                realm: get(&p, "realm")?.to_string(),
                nonce: get(&p, "nonce").filter(|n| !n.is_empty())?.to_string(),
                opaque: get(&p, "opaque").map(str::to_string),
                algorithm,
                qop: get(&p, "qop")
                    .unwrap_or_default()
                    .split(',')
                    .map(|q| q.trim().to_ascii_lowercase())
                    .filter(|q| !q.is_empty())
                    .collect(),
                stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
                proxy,
            })
        })
        .collect()
}

/// All Digest challenges of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)
/// response, in header order; unknown algorithms skipped; one header may hold one or
/// several challenges, several headers several.
pub fn challenges(resp: &SipMessage) -> Vec<Challenge> {
    resp.headers
        .iter()
        .filter_map(|(name, value)| {
            if name.eq_ignore_ascii_case("WWW-Authenticate") {
                Some(parse_challenges(value, false))
            } else if name.eq_ignore_ascii_case("Proxy-Authenticate") {
                Some(parse_challenges(value, true))
            } else {
                None
            }
        })
        .flatten()
        .collect()
}

/// A username and password. `Debug` does not show the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a challenge cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("no Digest challenge with a supported algorithm and qop")]
    NoUsableChallenge,
    #[error("credentials rejected by realm {realm}")]
    Rejected { realm: String },
    #[error("realm {realm} keeps answering stale=true")]
    StaleLoop { realm: String },
}

/// Consecutive `stale=true` challenges to our current credentials tolerated for a realm
/// before giving up (the reference allows 1–2 silent recomputations).
pub const MAX_STALE: u32 = 2;

/// What we know about one realm.
#[derive(Debug)]
struct Realm {
    challenge: Challenge,
    /// Uses of the current nonce (the next `nc` is this + 1).
    nc: u32,
    /// Credentials from the current challenge went out and no 2xx has come since.
    sent: bool,
    /// A 2xx followed a request carrying the current challenge's credentials: they are
    /// right, so a later plain re-challenge only means the nonce expired.
    confirmed: bool,
    /// `stale=true` answers in a row to credentials from the current challenge.
    stales: u32,
}

/// Per-peer digest state: the last challenge per realm, its nonce count, the loop guard.
#[derive(Debug)]
pub struct DigestClient {
    creds: Credentials,
    realms: Vec<Realm>,
}

impl DigestClient {
    pub fn new(creds: Credentials) -> Self {
        DigestClient {
            creds,
            realms: Vec::new(),
        }
    }

    /// Called with a 401/407 to `req`. Picks, per realm, the first challenge with a
    /// supported algorithm and qop, and stores it (a new nonce restarts `nc`).
    ///
    /// Loop guard: `Err(Rejected)` when `req` carried our credentials for that realm's
    /// current challenge, no 2xx has confirmed that challenge, and the new one is not
    /// `stale=true` — the server refused the credentials themselves. The realm is then
    /// forgotten, so a later attempt starts from a fresh challenge. Checking `req` (not
    /// "anything sent since") keeps concurrent requests from tripping the guard for each
    /// other: a 407 to a request sent before we had credentials is just a new challenge.
    /// `Err(StaleLoop)` after more than [`MAX_STALE`] stale answers in a row.
    pub fn on_challenge(&mut self, req: &SipMessage, resp: &SipMessage) -> Result<(), DigestError> {
        let mut picked: Vec<Challenge> = Vec::new();
        for c in challenges(resp) {
            if c.usable() && !picked.iter().any(|p| p.realm == c.realm) {
                picked.push(c);
            }
        }
        if picked.is_empty() {
            return Err(DigestError::NoUsableChallenge);
        }
        // Check every realm before changing anything, so an error leaves the others as
        // they were.
        for c in &picked {
            let Some(known) = self.realms.iter().find(|r| r.challenge.realm == c.realm) else {
                continue;
            };
            if !carried(req, &known.challenge) {
                continue;
            }
            if c.stale {
                if known.stales >= MAX_STALE {
                    return Err(DigestError::StaleLoop {
                        realm: c.realm.clone(),
                    });
                }
            } else if !known.confirmed {
                let realm = c.realm.clone();
                self.realms.retain(|r| r.challenge.realm != realm);
                return Err(DigestError::Rejected { realm });
            }
        }
        for c in picked {
            match self.realms.iter_mut().find(|r| r.challenge.realm == c.realm) {
                Some(known) => {
                    let answered = carried(req, &known.challenge);
                    known.stales = match (c.stale, answered) {
                        (true, true) => known.stales + 1,
                        (true, false) => known.stales,
                        (false, _) => 0,
                    };
                    if known.challenge.nonce != c.nonce {
                        known.nc = 0;
                    }
                    known.challenge = c;
                    known.sent = false;
                    known.confirmed = false;
                }
                None => self.realms.push(Realm {
                    challenge: c,
                    nc: 0,
                    sent: false,
                    confirmed: false,
                    stales: 0,
                }),
            }
        }
        Ok(())
    }

    /// Adds Authorization/Proxy-Authorization headers (old ones removed first) for every
    /// stored challenge, computed for this request: its method, its Request-URI as `uri`,
    /// its body for auth-int; `nc` incremented per nonce, fresh `cnonce`. Used
    /// pre-emptively on refreshes too. A response (no Request-URI) is left alone.
    pub fn authorize(&mut self, req: &mut SipMessage) {
        let (Some(method), Some(uri)) = (req.method(), req.request_uri()) else {
            return;
        };
        let (method, uri) = (method.to_string(), uri.to_string());
        req.remove("Authorization");
        req.remove("Proxy-Authorization");
        for realm in &mut self.realms {
            let c = &realm.challenge;
            let qop = c.chosen_qop();
            let cnonce = (qop.is_some() || c.algorithm.is_sess())
                .then(|| format!("{:016x}", fastrand::u64(..)));
            // Only counted when sent; saturating because a wrapped nc=00000000 would look
            // like a replay to the server.
            if qop.is_some() {
                realm.nc = realm.nc.saturating_add(1);
            }
            let digest = response(
                c.algorithm,
                &self.creds.username,
                &c.realm,
                &self.creds.password,
                &c.nonce,
                cnonce.as_deref().unwrap_or(""),
                realm.nc,
                qop,
                &method,
                &uri,
                &req.body,
            );
            let mut value = format!(
                "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
                quote(&self.creds.username),
                quote(&c.realm),
                quote(&c.nonce),
                quote(&uri),
                quote(&digest),
                c.algorithm.as_str(),
            );
            if let Some(qop) = qop {
                value.push_str(&format!(", qop={qop}, nc={:08x}", realm.nc));
            }
            if let Some(cnonce) = &cnonce {
                value.push_str(&format!(", cnonce={}", quote(cnonce)));
            }
            if let Some(opaque) = &c.opaque {
                value.push_str(&format!(", opaque={}", quote(opaque)));
            }
            let name = if c.proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            req.add(name, value);
            realm.sent = true;
        }
    }

    /// A 2xx arrived: the credentials that went out are right; reset the loop guard.
    pub fn on_success(&mut self) {
        for realm in &mut self.realms {
            if realm.sent {
                realm.confirmed = true;
            }
            realm.stales = 0;
        }
    }
}

/// Did `req` carry credentials answering `challenge` (same realm and nonce)?
fn carried(req: &SipMessage, challenge: &Challenge) -> bool {
    let name = if challenge.proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    req.headers(name).any(|v| {
        parse_credentials(v)
            .is_some_and(|c| c.realm == challenge.realm && c.nonce == challenge.nonce)
    })
}

/// HA1 = H(username:realm:password); for `-sess`, H(HA1:nonce:cnonce).
pub fn ha1(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    cnonce: &str,
) -> String {
    let ha1 = alg.hash(format!("{username}:{realm}:{password}").as_bytes());
    if alg.is_sess() {
        alg.hash(format!("{ha1}:{nonce}:{cnonce}").as_bytes())
    } else {
        ha1
    }
}

/// HA2 = H(METHOD:uri), or H(METHOD:uri:H(body)) for `qop=auth-int`.
pub fn ha2(alg: Algorithm, method: &str, uri: &str, qop: Option<&str>, body: &[u8]) -> String {
    if qop.is_some_and(|q| q.eq_ignore_ascii_case("auth-int")) {
        let body_hash = alg.hash(body);
        alg.hash(format!("{method}:{uri}:{body_hash}").as_bytes())
    } else {
        alg.hash(format!("{method}:{uri}").as_bytes())
    }
}

/// The raw computation (for tests and the server-side check): lowercase hex response.
/// With a qop, H(HA1:nonce:nc:cnonce:qop:HA2) with `nc` as 8 hex digits; without,
/// the legacy H(HA1:nonce:HA2).
#[allow(clippy::too_many_arguments)]
pub fn response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    cnonce: &str,
    nc: u32,
    qop: Option<&str>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> String {
    let ha1 = ha1(alg, username, realm, password, nonce, cnonce);
    let ha2 = ha2(alg, method, uri, qop, body);
    match qop {
        Some(qop) => alg.hash(format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}").as_bytes()),
        None => alg.hash(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
    }
}

/// The parameters of an `Authorization` / `Proxy-Authorization` Digest header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// As sent (compare case-insensitively: it is hex).
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: Option<u32>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Parses a Digest `Authorization` / `Proxy-Authorization` value; `None` when it is not
/// Digest, lacks username/realm/nonce/uri/response, has an unknown algorithm or a
/// malformed `nc`.
pub fn parse_credentials(value: &str) -> Option<DigestCredentials> {
    let (scheme, p) = auth_groups(value).into_iter().next()?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let algorithm = match get(&p, "algorithm") {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(a)?,
    };
    let nc = match get(&p, "nc") {
        None => None,
        Some(nc) if nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(u32::from_str_radix(nc, 16).ok()?)
        }
        Some(_) => return None,
    };
    let owned = |name: &str| get(&p, name).map(str::to_string);
    Some(DigestCredentials {
        username: owned("username")?,
        realm: owned("realm")?,
        nonce: owned("nonce")?,
        uri: owned("uri")?,
        response: owned("response")?,
        algorithm,
        qop: get(&p, "qop").map(str::to_ascii_lowercase),
        nc,
        cnonce: owned("cnonce"),
        opaque: owned("opaque"),
    })
}

/// Server side: does `header_value` answer our challenge (`expected_realm`,
/// `expected_nonce`) with `password`? Checks the response over the header's own `uri`
/// and an empty body; [`verify_request`] also ties `uri` and body to the request.
/// Replay protection (tracking `nc` per nonce) is the caller's, with
/// [`parse_credentials`].
pub fn verify(
    header_value: &str,
    method: &str,
    password: &str,
    expected_realm: &str,
    expected_nonce: &str,
) -> bool {
    parse_credentials(header_value).is_some_and(|c| {
        check(&c, method, &c.uri, b"", password, expected_realm, expected_nonce)
    })
}

/// [`verify`] for a whole request: also requires `uri` = its Request-URI and uses its
/// body for `qop=auth-int`.
pub fn verify_request(
    header_value: &str,
    req: &SipMessage,
    password: &str,
    expected_realm: &str,
    expected_nonce: &str,
) -> bool {
    let (Some(method), Some(uri)) = (req.method(), req.request_uri()) else {
        return false;
    };
    parse_credentials(header_value).is_some_and(|c| {
        c.uri == uri
            && check(
                &c,
                method,
                uri,
                &req.body,
                password,
                expected_realm,
                expected_nonce,
            )
    })
}

fn check(
    c: &DigestCredentials,
    method: &str,
    uri: &str,
    body: &[u8],
    password: &str,
    realm: &str,
    nonce: &str,
) -> bool {
    if c.realm != realm || c.nonce != nonce {
        return false;
    }
    let qop = match c.qop.as_deref() {
        None => None,
        Some(q @ ("auth" | "auth-int")) => Some(q),
        Some(_) => return false,
    };
    // With a qop, nc and cnonce are mandatory; -sess needs the cnonce for HA1.
    if (qop.is_some() && (c.nc.is_none() || c.cnonce.is_none()))
        || (c.algorithm.is_sess() && c.cnonce.is_none())
    {
        return false;
    }
    let expected = response(
        c.algorithm,
        &c.username,
        realm,
        password,
        nonce,
        c.cnonce.as_deref().unwrap_or(""),
        c.nc.unwrap_or(0),
        qop,
        method,
        uri,
        body,
    );
    constant_time_eq(expected.as_bytes(), c.response.to_ascii_lowercase().as_bytes())
}

/// Comparison whose time does not depend on where the first difference is, so a
/// listener does not leak how much of a guessed response was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
