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
    D::digest(data).iter().map(|b| format!("{b:02x}")).collect()
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
            match self
                .realms
                .iter_mut()
                .find(|r| r.challenge.realm == c.realm)
            {
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
        check(
            &c,
            method,
            &c.uri,
            b"",
            password,
            expected_realm,
            expected_nonce,
        )
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
    constant_time_eq(
        expected.as_bytes(),
        c.response.to_ascii_lowercase().as_bytes(),
    )
}

/// Comparison whose time does not depend on where the first difference is, so a
/// listener does not leak how much of a guessed response was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::sip::message::tests::wire;

    // Reference §9 test vectors (computed with Python hashlib).
    const USER: &str = "watcher";
    const REALM: &str = "127.0.0.1";
    const PASSWORD: &str = "secret";
    const NONCE: &str = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
    const CNONCE: &str = "0a4f113b";
    const METHOD: &str = "SUBSCRIBE";
    const URI: &str = "sip:alice@127.0.0.1:15070";

    #[test]
    fn reference_vectors() {
        struct V {
            alg: Algorithm,
            ha1: &'static str,
            ha2: &'static str,
            auth: &'static str,
            legacy: &'static str,
        }
        let vectors = [
            V {
                alg: Algorithm::Md5,
                ha1: "9a29e42c9fe411c8883c9b445815b3fd",
                ha2: "fd09b7522ca771fdbff576c4e1947b80",
                auth: "b677ab3166caf8fe106d09452db0c4a6",
                legacy: "a9b3ce924c0a0ccf748b48f9aa47783d",
            },
            V {
                alg: Algorithm::Sha256,
                ha1: "d7040cb24bea52551f2378e0072c1905641935261964fdaaee7560f9980c2e24",
                ha2: "b90ea317b8d13e18db3a625c25fcc5d705c55d4d666e78b15b25e22e4b89a685",
                auth: "cfb5a73d48989b9b3ca4a043aaf0d96bc0fd47b51d2a9412dcd51c57a871ce3d",
                legacy: "0562368937add586ad22a7ceb973916824e1be15f1d4fbce9d4c6d03589f55f2",
            },
        ];
        for v in vectors {
            assert_eq!(ha1(v.alg, USER, REALM, PASSWORD, NONCE, CNONCE), v.ha1);
            assert_eq!(ha2(v.alg, METHOD, URI, Some("auth"), b"ignored"), v.ha2);
            assert_eq!(ha2(v.alg, METHOD, URI, None, b""), v.ha2);
            let r = |qop| {
                response(
                    v.alg, USER, REALM, PASSWORD, NONCE, CNONCE, 1, qop, METHOD, URI, b"",
                )
            };
            assert_eq!(r(Some("auth")), v.auth, "{}", v.alg);
            assert_eq!(r(None), v.legacy, "{}", v.alg);
        }
    }

    #[test]
    fn derived_computations() {
        // -sess: HA1 = H(H(user:realm:pw):nonce:cnonce).
        let base = ha1(Algorithm::Md5, USER, REALM, PASSWORD, NONCE, CNONCE);
        assert_eq!(
            ha1(Algorithm::Md5Sess, USER, REALM, PASSWORD, NONCE, CNONCE),
            hex::<Md5>(format!("{base}:{NONCE}:{CNONCE}").as_bytes())
        );
        // auth-int: HA2 = H(METHOD:uri:H(body)).
        let body_hash = hex::<Sha256>(b"<presence/>");
        assert_eq!(
            ha2(
                Algorithm::Sha256,
                "PUBLISH",
                URI,
                Some("auth-int"),
                b"<presence/>"
            ),
            hex::<Sha256>(format!("PUBLISH:{URI}:{body_hash}").as_bytes())
        );
        // nc is 8 hex digits.
        let ha1 = ha1(Algorithm::Md5, USER, REALM, PASSWORD, NONCE, CNONCE);
        let ha2 = ha2(Algorithm::Md5, METHOD, URI, None, b"");
        assert_eq!(
            response(
                Algorithm::Md5,
                USER,
                REALM,
                PASSWORD,
                NONCE,
                CNONCE,
                0x1a,
                Some("auth"),
                METHOD,
                URI,
                b""
            ),
            hex::<Md5>(format!("{ha1}:{NONCE}:0000001a:{CNONCE}:auth:{ha2}").as_bytes())
        );
        // SHA-512/256 is 64 hex digits and differs from SHA-256.
        let r = response(
            Algorithm::Sha512_256,
            USER,
            REALM,
            PASSWORD,
            NONCE,
            CNONCE,
            1,
            Some("auth"),
            METHOD,
            URI,
            b"",
        );
        assert_eq!(r.len(), 64);
        assert_ne!(
            r,
            "cfb5a73d48989b9b3ca4a043aaf0d96bc0fd47b51d2a9412dcd51c57a871ce3d"
        );
    }

    #[test]
    fn algorithm_tokens() {
        for (token, alg) in [
            ("MD5", Algorithm::Md5),
            ("md5-SESS", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("sha-256-sess", Algorithm::Sha256Sess),
            ("SHA-512-256", Algorithm::Sha512_256),
            (" SHA-512-256-sess ", Algorithm::Sha512_256Sess),
        ] {
            assert_eq!(Algorithm::parse(token), Some(alg));
            assert_eq!(Algorithm::parse(alg.as_str()), Some(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        for bad in ["", "SHA256", "SHA-1", "AKAv1-MD5", "SHA-512"] {
            assert_eq!(Algorithm::parse(bad), None, "{bad}");
        }
    }

    fn request(method: &str, uri: &str) -> SipMessage {
        SipMessage::request(method, uri)
            .with("Via", "SIP/2.0/UDP 127.0.0.1:16002;branch=z9hG4bK1;rport")
            .with("From", "<sip:watcher@127.0.0.1>;tag=1")
            .with("To", "<sip:alice@127.0.0.1>")
            .with("Call-ID", "c1@127.0.0.1")
            .with("CSeq", format!("1 {method}"))
    }

    /// A challenge response as Kamailio sends it (auth module, reference §9).
    fn challenge_resp(code: u16, lines: &[&str]) -> SipMessage {
        let status = format!(
            "SIP/2.0 {code} {}",
            if code == 401 {
                "Unauthorized"
            } else {
                "Proxy Authentication Required"
            }
        );
        let mut head = vec![
            status.as_str(),
            "Via: SIP/2.0/UDP 127.0.0.1:16002;branch=z9hG4bK1;rport=16002",
            "From: <sip:watcher@127.0.0.1>;tag=1",
            "To: <sip:alice@127.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.6a2c",
            "Call-ID: c1@127.0.0.1",
            "CSeq: 1 SUBSCRIBE",
        ];
        head.extend_from_slice(lines);
        head.push("Server: kamailio (5.6.3 (x86_64/linux))");
        head.push("Content-Length: 0");
        SipMessage::parse(&wire(&head, "")).unwrap()
    }

    fn proxy_challenge(nonce: &str, extra: &str) -> SipMessage {
        let h = format!("Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"{nonce}\", qop=\"auth\", algorithm=SHA-256{extra}");
        challenge_resp(407, &[&h])
    }

    fn creds() -> Credentials {
        Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        }
    }

    #[test]
    fn challenges_parse() {
        // rsipstack 0.7.14 fails on the unquoted `algorithm=SHA-256` Kamailio sends.
        let resp = proxy_challenge("awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D", "");
        assert_eq!(
            challenges(&resp),
            [Challenge {
                realm: "127.0.0.1".into(),
                nonce: "awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D".into(),
                opaque: None,
                algorithm: Algorithm::Sha256,
                qop: vec!["auth".into()],
                stale: false,
                proxy: true,
            }]
        );
        let resp = challenge_resp(
            401,
            &[
                "WWW-Authenticate: Basic realm=\"x\"",
                "WWW-Authenticate: digest REALM = \"a, \\\"b\\\"\" ,NONCE=\"n1\",opaque=\"op aque\",qop=\"auth-int, AUTH\",stale=TRUE,algorithm=\"md5-sess\", domain=\"sip:a sip:b\"",
                "WWW-Authenticate: Digest realm=\"r2\", nonce=\"n2\", algorithm=SHA3-256",
                "WWW-Authenticate: Digest realm=\"r3\", nonce=\"n3\", algorithm=SHA-512-256, Digest realm=\"r4\", nonce=\"n4\"",
                "WWW-Authenticate: Digest nonce=\"no-realm\"",
                "WWW-Authenticate: Digest realm=\"no-nonce\"",
                "WWW-Authenticate: Digest realm=\"unterminated, nonce=\"x\"",
                "Proxy-Authenticate: Digest realm=\"p\", nonce=\"pn\", stale=false",
            ],
        );
        let got = challenges(&resp);
        let summary: Vec<_> = got
            .iter()
            .map(|c| (c.realm.as_str(), c.nonce.as_str(), c.algorithm, c.proxy))
            .collect();
        assert_eq!(
            summary,
            [
                ("a, \"b\"", "n1", Algorithm::Md5Sess, false),
                ("r3", "n3", Algorithm::Sha512_256, false),
                ("r4", "n4", Algorithm::Md5, false),
                ("p", "pn", Algorithm::Md5, true),
            ]
        );
        assert_eq!(got[0].opaque.as_deref(), Some("op aque"));
        assert_eq!(got[0].qop, ["auth-int", "auth"]);
        assert!(got[0].stale);
        assert!(got[1].qop.is_empty() && !got[1].stale && got[1].opaque.is_none());
        assert!(!got[3].stale);
    }

    #[test]
    fn answers_a_407_with_proxy_authorization() {
        let mut client = DigestClient::new(creds());
        let req = request(METHOD, URI);
        let resp = proxy_challenge("awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D", ", opaque=\"x,y\"");
        client.on_challenge(&req, &resp).unwrap();

        let mut retry = req.clone();
        retry.set("CSeq", "2 SUBSCRIBE");
        retry.add("Authorization", "Digest stale one");
        client.authorize(&mut retry);
        assert_eq!(retry.header("Authorization"), None);
        let values: Vec<&str> = retry.headers("Proxy-Authorization").collect();
        assert_eq!(values.len(), 1);
        let v = values[0];
        assert!(v.starts_with("Digest username=\"watcher\", realm=\"127.0.0.1\", nonce=\"awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D\", uri=\"sip:alice@127.0.0.1:15070\", response=\""), "{v}");
        assert!(
            v.contains(", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\""),
            "{v}"
        );
        assert!(v.ends_with(", opaque=\"x,y\""), "{v}");
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.response.len(), 64);
        assert_eq!(c.uri, URI);
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.cnonce.as_ref().unwrap().len(), 16);
        assert_eq!(c.opaque.as_deref(), Some("x,y"));
        assert!(verify(
            v,
            METHOD,
            PASSWORD,
            REALM,
            "awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D"
        ));
        assert!(verify_request(
            v,
            &retry,
            PASSWORD,
            REALM,
            "awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D"
        ));
        assert!(!verify(
            v,
            METHOD,
            "wrong",
            REALM,
            "awFdhGsBXFjaV6yfCq2tegR+GEuB4E7D"
        ));
        // The server's own check, recomputed from the header's values.
        assert_eq!(
            c.response,
            response(
                Algorithm::Sha256,
                USER,
                REALM,
                PASSWORD,
                &c.nonce,
                c.cnonce.as_deref().unwrap(),
                1,
                Some("auth"),
                METHOD,
                URI,
                b""
            )
        );
    }

    #[test]
    fn answers_a_401_with_authorization_for_the_request_uri() {
        let mut client = DigestClient::new(creds());
        let resp = challenge_resp(
            401,
            &["WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"n1\", qop=\"auth\""],
        );
        client.on_challenge(&request(METHOD, URI), &resp).unwrap();
        // A refresh goes to the remote target, a different Request-URI: uri follows it.
        let mut refresh = request(METHOD, "sip:127.0.0.1:15060;transport=tcp");
        client.authorize(&mut refresh);
        assert_eq!(refresh.header("Proxy-Authorization"), None);
        let v = refresh.header("Authorization").unwrap();
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.uri, "sip:127.0.0.1:15060;transport=tcp");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(
            v.contains(", algorithm=MD5, qop=auth, nc=00000001, "),
            "{v}"
        );
        assert!(verify_request(v, &refresh, PASSWORD, REALM, "n1"));
        // The same header does not pass for another request.
        assert!(!verify_request(
            v,
            &request(METHOD, URI),
            PASSWORD,
            REALM,
            "n1"
        ));
        assert!(!verify_request(
            v,
            &request("PUBLISH", "sip:127.0.0.1:15060;transport=tcp"),
            PASSWORD,
            REALM,
            "n1"
        ));
        // A response has nothing to authorize.
        let mut resp = SipMessage::response(200, "OK");
        client.authorize(&mut resp);
        assert!(resp.headers.is_empty());
    }

    #[test]
    fn nc_counts_uses_of_a_nonce_and_restarts_with_a_new_one() {
        let mut client = DigestClient::new(creds());
        let first = request(METHOD, URI);
        client
            .on_challenge(&first, &proxy_challenge("n1", ""))
            .unwrap();
        let nc_and_nonce = |client: &mut DigestClient| {
            let mut r = request(METHOD, URI);
            client.authorize(&mut r);
            let c = parse_credentials(r.header("Proxy-Authorization").unwrap()).unwrap();
            (c.nc.unwrap(), c.nonce, c.cnonce.unwrap(), r)
        };
        let (nc1, nonce1, cnonce1, _) = nc_and_nonce(&mut client);
        client.on_success();
        let (nc2, _, cnonce2, _) = nc_and_nonce(&mut client);
        let (nc3, _, _, sent) = nc_and_nonce(&mut client);
        assert_eq!((nc1, nc2, nc3), (1, 2, 3));
        assert_eq!(nonce1, "n1");
        assert_ne!(cnonce1, cnonce2);
        // The server forgot n1 (stale): new nonce, nc starts over.
        client
            .on_challenge(&sent, &proxy_challenge("n2", ", stale=true"))
            .unwrap();
        let (nc, nonce, _, _) = nc_and_nonce(&mut client);
        assert_eq!((nc, nonce.as_str()), (1, "n2"));
        // The same nonce again (a re-sent challenge) keeps counting.
        let (_, _, _, sent) = nc_and_nonce(&mut client);
        client.on_success();
        client
            .on_challenge(&sent, &proxy_challenge("n2", ", stale=true"))
            .unwrap();
        let (nc, _, _, _) = nc_and_nonce(&mut client);
        assert_eq!(nc, 3);
    }

    #[test]
    fn wrong_credentials_end_in_rejected_not_a_loop() {
        let mut client = DigestClient::new(creds());
        let req = request(METHOD, URI);
        client
            .on_challenge(&req, &proxy_challenge("n1", ""))
            .unwrap();
        let mut retry = req.clone();
        client.authorize(&mut retry);
        // Kamailio answers wrong credentials with a fresh challenge, no stale.
        let err = client
            .on_challenge(&retry, &proxy_challenge("n2", ""))
            .unwrap_err();
        assert!(matches!(err, DigestError::Rejected { ref realm } if realm == "127.0.0.1"));
        assert_eq!(err.to_string(), "credentials rejected by realm 127.0.0.1");
        // The realm is forgotten: the next request goes without credentials, and a new
        // attempt starts from a new challenge.
        let mut next = request(METHOD, URI);
        client.authorize(&mut next);
        assert_eq!(next.header("Proxy-Authorization"), None);
        client
            .on_challenge(&next, &proxy_challenge("n3", ""))
            .unwrap();
    }

    #[test]
    fn stale_recomputes_silently_but_not_forever() {
        let mut client = DigestClient::new(creds());
        let req = request(METHOD, URI);
        client
            .on_challenge(&req, &proxy_challenge("n0", ""))
            .unwrap();
        let mut sent = req.clone();
        for i in 1..=MAX_STALE {
            client.authorize(&mut sent);
            client
                .on_challenge(&sent, &proxy_challenge(&format!("n{i}"), ", stale=true"))
                .unwrap();
        }
        client.authorize(&mut sent);
        assert!(matches!(
            client.on_challenge(&sent, &proxy_challenge("nx", ", stale=TRUE")),
            Err(DigestError::StaleLoop { .. })
        ));
        // A 2xx in between resets the count.
        let mut client = DigestClient::new(creds());
        client
            .on_challenge(&req, &proxy_challenge("n0", ""))
            .unwrap();
        for i in 1..=MAX_STALE * 3 {
            client.authorize(&mut sent);
            client.on_success();
            client
                .on_challenge(&sent, &proxy_challenge(&format!("n{i}"), ", stale=true"))
                .unwrap();
        }
    }

    #[test]
    fn a_challenge_to_pre_emptive_credentials_after_a_success_is_a_new_nonce() {
        let mut client = DigestClient::new(creds());
        let req = request(METHOD, URI);
        client
            .on_challenge(&req, &proxy_challenge("n1", ""))
            .unwrap();
        let mut retry = req.clone();
        client.authorize(&mut retry);
        client.on_success();
        // A refresh with the confirmed nonce is challenged without stale (a server that
        // expires nonces silently): not a credential failure.
        let mut refresh = request(METHOD, URI);
        client.authorize(&mut refresh);
        client
            .on_challenge(&refresh, &proxy_challenge("n2", ""))
            .unwrap();
        // But the answer to that challenge failing is.
        let mut retry = request(METHOD, URI);
        client.authorize(&mut retry);
        assert!(matches!(
            client.on_challenge(&retry, &proxy_challenge("n3", "")),
            Err(DigestError::Rejected { .. })
        ));
    }

    #[test]
    fn concurrent_requests_do_not_trip_the_guard() {
        // Two SUBSCRIBEs go out without credentials; both are challenged. Answering the
        // first must not make the second's challenge look like a rejection.
        let mut client = DigestClient::new(creds());
        let a = request(METHOD, "sip:alice@127.0.0.1");
        let b = request(METHOD, "sip:bob@127.0.0.1");
        client.on_challenge(&a, &proxy_challenge("na", "")).unwrap();
        let mut a2 = a.clone();
        client.authorize(&mut a2);
        client.on_challenge(&b, &proxy_challenge("nb", "")).unwrap();
        let mut b2 = b.clone();
        client.authorize(&mut b2);
        assert!(b2
            .header("Proxy-Authorization")
            .unwrap()
            .contains("nonce=\"nb\""));
        // a2 carried the replaced nonce: its re-challenge is not about the current one.
        client
            .on_challenge(&a2, &proxy_challenge("nc", ""))
            .unwrap();
    }

    #[test]
    fn first_supported_challenge_per_realm_and_every_realm() {
        let mut client = DigestClient::new(creds());
        let resp = challenge_resp(
            407,
            &[
                "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"x\", algorithm=SHA3-512",
                "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"a\", algorithm=SHA-256, qop=\"auth\"",
                "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"b\", algorithm=MD5, qop=\"auth\"",
                "Proxy-Authenticate: Digest realm=\"other\", nonce=\"t\", qop=\"token\"",
                "Proxy-Authenticate: Digest realm=\"other\", nonce=\"o\"",
                "WWW-Authenticate: Digest realm=\"uas\", nonce=\"u\", qop=\"auth-int\", algorithm=SHA-512-256-sess",
            ],
        );
        client.on_challenge(&request(METHOD, URI), &resp).unwrap();
        let mut req = request("PUBLISH", URI);
        req.set_body("application/pidf+xml", b"<presence/>".to_vec());
        client.authorize(&mut req);
        let proxy: Vec<_> = req
            .headers("Proxy-Authorization")
            .map(|v| parse_credentials(v).unwrap())
            .collect();
        assert_eq!(proxy.len(), 2);
        assert_eq!(
            (proxy[0].nonce.as_str(), proxy[0].algorithm),
            ("a", Algorithm::Sha256)
        );
        // Legacy (no qop): no nc, no cnonce, no qop.
        assert_eq!(proxy[1].nonce, "o");
        assert_eq!(
            (
                proxy[1].qop.as_deref(),
                proxy[1].nc,
                proxy[1].cnonce.as_deref()
            ),
            (None, None, None)
        );
        let legacy = req.headers("Proxy-Authorization").nth(1).unwrap();
        assert!(verify_request(legacy, &req, PASSWORD, "other", "o"));
        assert!(
            !legacy.contains("qop") && !legacy.contains("nc="),
            "{legacy}"
        );
        // auth-int only: the body is covered; -sess: cnonce in HA1.
        let uas = req.header("Authorization").unwrap();
        let c = parse_credentials(uas).unwrap();
        assert_eq!(
            (c.qop.as_deref(), c.algorithm),
            (Some("auth-int"), Algorithm::Sha512_256Sess)
        );
        assert!(uas.contains("qop=auth-int, nc=00000001"), "{uas}");
        assert!(verify_request(uas, &req, PASSWORD, "uas", "u"));
        let mut tampered = req.clone();
        tampered.body = b"<presence>x</presence>".to_vec();
        assert!(!verify_request(uas, &tampered, PASSWORD, "uas", "u"));
        // Preference: auth over auth-int when both are offered.
        let both = challenge_resp(
            401,
            &["WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth-int,auth\""],
        );
        let mut client = DigestClient::new(creds());
        client.on_challenge(&req, &both).unwrap();
        let mut r = request(METHOD, URI);
        client.authorize(&mut r);
        assert!(r.header("Authorization").unwrap().contains("qop=auth,"));
    }

    #[test]
    fn no_usable_challenge() {
        let mut client = DigestClient::new(creds());
        let req = request(METHOD, URI);
        for lines in [
            &[][..],
            &["WWW-Authenticate: Basic realm=\"x\""][..],
            &["Proxy-Authenticate: Digest realm=\"x\", nonce=\"n\", algorithm=AKAv1-MD5"][..],
            &["Proxy-Authenticate: Digest realm=\"x\", nonce=\"n\", qop=\"auth-conf\""][..],
        ] {
            assert!(matches!(
                client.on_challenge(&req, &challenge_resp(407, lines)),
                Err(DigestError::NoUsableChallenge)
            ));
        }
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "watcher".into(),
            password: "hunter2-secret".into(),
        };
        let shown = format!("{c:?} {:?}", DigestClient::new(c.clone()));
        assert!(shown.contains("watcher"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn verify_refuses_what_does_not_match() {
        let nc = "00000001";
        let good = response(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            NONCE,
            CNONCE,
            1,
            Some("auth"),
            METHOD,
            URI,
            b"",
        );
        let header = |resp: &str, extra: &str| {
            format!("Digest username=\"{USER}\", realm=\"{REALM}\", nonce=\"{NONCE}\", uri=\"{URI}\", response=\"{resp}\"{extra}")
        };
        let auth = format!(", qop=auth, nc={nc}, cnonce=\"{CNONCE}\"");
        assert!(verify(
            &header(&good, &auth),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(verify(
            &header(&good.to_uppercase(), &auth),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(verify(
            &header(&good, &format!("{auth}, algorithm=md5")),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, &auth),
            "PUBLISH",
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, &auth),
            METHOD,
            PASSWORD,
            "other",
            NONCE
        ));
        assert!(!verify(
            &header(&good, &auth),
            METHOD,
            PASSWORD,
            REALM,
            "other"
        ));
        assert!(!verify(
            &header(&good, ", qop=auth, nc=00000002, cnonce=\"0a4f113b\""),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, ", qop=auth, cnonce=\"0a4f113b\""),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, ", qop=auth, nc=00000001"),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, ", qop=auth, nc=1, cnonce=\"0a4f113b\""),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, &format!("{auth}, algorithm=SHA-256")),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, &format!("{auth}, algorithm=bogus")),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good, ", qop=auth-conf, nc=00000001, cnonce=\"0a4f113b\""),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        assert!(!verify(
            &header(&good[1..], &auth),
            METHOD,
            PASSWORD,
            REALM,
            NONCE
        ));
        let legacy = response(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            NONCE,
            "",
            0,
            None,
            METHOD,
            URI,
            b"",
        );
        assert!(verify(&header(&legacy, ""), METHOD, PASSWORD, REALM, NONCE));
        assert_eq!(legacy, "a9b3ce924c0a0ccf748b48f9aa47783d");
        for garbage in [
            "",
            "Digest",
            "Basic dXNlcjpwYXNz",
            "Digest username=\"x",
            "Digest ,,,=",
            "\"",
            "Digest username=x, realm=y",
        ] {
            assert!(
                !verify(garbage, METHOD, PASSWORD, REALM, NONCE),
                "{garbage}"
            );
        }
    }
}
