//! REST/XML client for the Presence Web Service (reference `pws.md` §3). One client per
//! IM&P node: a user homed on another node answers a login with 307 and the connector
//! makes a client for that node.

use super::xml::{self, BasicContact, Pidf, PwsXmlError};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PwsError {
    /// Missing or invalid session key (codes 100/101, HTTP 401): log in again.
    #[error("session key not valid (code {code:?})")]
    Session { code: Option<u32> },
    /// An endpoint (132) or subscription (133) the server no longer knows.
    #[error("{what} unknown to the server (code {code})")]
    Gone { what: &'static str, code: u32 },
    /// CPU (210) or request-rate (212) protection, HTTP 503: back off.
    #[error("server throttling (code {code:?}, HTTP 503)")]
    Throttled { code: Option<u32> },
    /// The user is homed on another node.
    #[error("user homed on another node: {base}")]
    Redirect { base: String },
    #[error("HTTP {status}, code {code:?}: {message}")]
    Rejected {
        status: u16,
        code: Option<u32>,
        message: String,
    },
    #[error("transport: {0}")]
    Transport(String),
    #[error("response: {0}")]
    Parse(#[from] PwsXmlError),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("response without a usable Location header")]
    NoLocation,
}

impl PwsError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PwsError::Session { .. } => "session",
            PwsError::Gone { .. } => "gone",
            PwsError::Throttled { .. } => "throttled",
            PwsError::Redirect { .. } => "redirect",
            PwsError::Rejected { .. } => "rejected",
            PwsError::Transport(_) => "transport",
            PwsError::Parse(_) => "parse",
            PwsError::TooLarge(_) => "too_large",
            PwsError::NoLocation => "no_location",
        }
    }
}

const KEY: &str = "Presence-Session-Key";
const EXPIRY: &str = "Presence-Expiry";
const OVERRIDE: &str = "Presence-Override";

#[derive(Clone)]
pub struct PwsClient {
    http: reqwest::Client,
    base: String,
    max_body: usize,
}

struct Response {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// `x` percent-encoded for a path segment (user names and contact URIs).
fn seg(x: &str) -> String {
    let mut out = String::with_capacity(x.len());
    for b in x.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl PwsClient {
    pub fn new(base: &str, timeout: Duration, max_body: usize) -> PwsClient {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // 307s are answered by logging in on the named node, not followed blindly.
            .redirect(reqwest::redirect::Policy::none())
            // Cisco asks for connection reuse: TLS set-up is expensive on IM&P.
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client with static settings");
        PwsClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            max_body,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client settings for another node.
    pub fn for_base(&self, base: &str) -> PwsClient {
        PwsClient {
            http: self.http.clone(),
            base: base.trim_end_matches('/').to_string(),
            max_body: self.max_body,
        }
    }

    /// Host of the base URL, for `source.server` in events.
    pub fn host(&self) -> String {
        let rest = self
            .base
            .split_once("://")
            .map(|x| x.1)
            .unwrap_or(&self.base);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<String>,
    ) -> Result<Response, PwsError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("text/xml"))
                .body(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| PwsError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PwsError::Transport(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(PwsError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(Response { headers, body });
        }
        Err(classify(status, &headers, &body))
    }

    pub async fn login_app(
        &self,
        user: &str,
        password: &str,
        forced: bool,
    ) -> Result<String, PwsError> {
        let (method, path) = login_path(user, forced);
        let r = self
            .call(method, &path, &[], Some(xml::session_body(password)))
            .await?;
        Ok(xml::parse_session_key(&r.body)?)
    }

    /// Logs an end user in by proxy (app-user key, no password).
    pub async fn login_user(
        &self,
        app_key: &str,
        user: &str,
        forced: bool,
    ) -> Result<String, PwsError> {
        let (method, path) = login_path(user, forced);
        let r = self
            .call(method, &path, &[(KEY, app_key.to_string())], None)
            .await?;
        Ok(xml::parse_session_key(&r.body)?)
    }

    pub async fn logout(&self, key: &str, user: &str) -> Result<(), PwsError> {
        self.call(
            Method::DELETE,
            &format!("/users/{}/session", seg(user)),
            &[(KEY, key.to_string())],
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn register_endpoint(
        &self,
        app_key: &str,
        url: &str,
        expiry: u64,
    ) -> Result<String, PwsError> {
        let r = self
            .call(
                Method::POST,
                "/endpoints",
                &[(KEY, app_key.to_string()), (EXPIRY, expiry.to_string())],
                Some(xml::endpoint_body(url)),
            )
            .await?;
        location_id(&r.headers)
    }

    /// Extends an endpoint's (absolute) lifetime; no URL in the body (error 123).
    pub async fn refresh_endpoint(
        &self,
        app_key: &str,
        id: &str,
        expiry: u64,
    ) -> Result<(), PwsError> {
        self.call(
            Method::PUT,
            &format!("/endpoints/{}", seg(id)),
            &[(KEY, app_key.to_string()), (EXPIRY, expiry.to_string())],
            Some("<endpoint></endpoint>".to_string()),
        )
        .await
        .map(|_| ())
    }

    pub async fn unregister_endpoint(&self, app_key: &str, id: &str) -> Result<(), PwsError> {
        self.call(
            Method::DELETE,
            &format!("/endpoints/{}", seg(id)),
            &[(KEY, app_key.to_string())],
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn subscribe(
        &self,
        key: &str,
        user: &str,
        contacts: &[String],
        endpoint_id: &str,
        expiry: u64,
    ) -> Result<String, PwsError> {
        let r = self
            .call(
                Method::POST,
                &format!("/users/{}/subscriptions", seg(user)),
                &[(KEY, key.to_string()), (EXPIRY, expiry.to_string())],
                Some(xml::subscription_body(contacts, endpoint_id)),
            )
            .await?;
        location_id(&r.headers)
    }

    /// Adds contacts to and/or extends a subscription (`expiry` 0 keeps the old one).
    pub async fn update_subscription(
        &self,
        key: &str,
        user: &str,
        sid: &str,
        contacts: &[String],
        endpoint_id: &str,
        expiry: u64,
    ) -> Result<(), PwsError> {
        self.call(
            Method::PUT,
            &format!("/users/{}/subscriptions/{}", seg(user), seg(sid)),
            &[(KEY, key.to_string()), (EXPIRY, expiry.to_string())],
            Some(xml::subscription_body(contacts, endpoint_id)),
        )
        .await
        .map(|_| ())
    }

    pub async fn unsubscribe(&self, key: &str, user: &str, sid: &str) -> Result<(), PwsError> {
        self.call(
            Method::DELETE,
            &format!("/users/{}/subscriptions/{}", seg(user), seg(sid)),
            &[(KEY, key.to_string())],
            None,
        )
        .await
        .map(|_| ())
    }

    /// `getSubscribedPresence` basic: the contacts changed since the last fetch.
    pub async fn fetch_basic(
        &self,
        key: &str,
        user: &str,
        sid: &str,
    ) -> Result<Vec<BasicContact>, PwsError> {
        let r = self
            .call(
                Method::GET,
                &format!(
                    "/users/{}/presence/basic/subscriptions/{}",
                    seg(user),
                    seg(sid)
                ),
                &[(KEY, key.to_string())],
                None,
            )
            .await?;
        Ok(xml::parse_basic_list(&r.body)?)
    }

    /// `getSubscribedPresence` rich (PIDF per contact).
    pub async fn fetch_rich(
        &self,
        key: &str,
        user: &str,
        sid: &str,
    ) -> Result<Vec<Pidf>, PwsError> {
        let r = self
            .call(
                Method::GET,
                &format!(
                    "/users/{}/presence/rich/subscriptions/{}",
                    seg(user),
                    seg(sid)
                ),
                &[(KEY, key.to_string())],
                None,
            )
            .await?;
        Ok(xml::parse_rich_list(&r.body)?)
    }

    /// Sets the basic presence of the user owning `key`.
    pub async fn set_basic(
        &self,
        key: &str,
        user: &str,
        status: &str,
        override_: bool,
        expiry: u64,
    ) -> Result<(), PwsError> {
        self.call(
            Method::PUT,
            &format!("/users/{}/presence/basic", seg(user)),
            &[
                (KEY, key.to_string()),
                (EXPIRY, expiry.to_string()),
                (OVERRIDE, override_.to_string()),
            ],
            Some(xml::basic_presence_body(status)),
        )
        .await
        .map(|_| ())
    }

    /// Sets rich presence (a PIDF document) of the user owning `key`.
    pub async fn set_rich(
        &self,
        key: &str,
        user: &str,
        pidf: String,
        override_: bool,
        expiry: u64,
    ) -> Result<(), PwsError> {
        self.call(
            Method::PUT,
            &format!("/users/{}/presence/rich", seg(user)),
            &[
                (KEY, key.to_string()),
                (EXPIRY, expiry.to_string()),
                (OVERRIDE, override_.to_string()),
            ],
            Some(pidf),
        )
        .await
        .map(|_| ())
    }
}

fn login_path(user: &str, forced: bool) -> (Method, String) {
    if forced {
        (Method::PUT, format!("/users/{}/session", seg(user)))
    } else {
        (Method::POST, format!("/users/{}/sessions", seg(user)))
    }
}

/// The id is the WHOLE last path segment of `Location` (Cisco's samples take one
/// character, which breaks at id 10).
fn location_id(headers: &HeaderMap) -> Result<String, PwsError> {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(xml::id_from_location)
        .ok_or(PwsError::NoLocation)
}

/// Maps a non-2xx answer to an error by HTTP status and PWS error code (reference §7).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> PwsError {
    let err = xml::parse_error(body);
    if status == StatusCode::TEMPORARY_REDIRECT {
        let from_location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.find("/presence-service").map(|i| l[..i + 17].to_string()));
        let from_body = xml::parse_redirect(body).map(|r| r.primary);
        return match (from_location, from_body) {
            (Some(base), _) => PwsError::Redirect { base },
            (None, Some(primary)) => PwsError::Redirect {
                base: format!("https://{primary}:8083/presence-service"),
            },
            (None, None) => PwsError::Rejected {
                status: 307,
                code: err.code,
                message: "redirect without a target".into(),
            },
        };
    }
    match (status.as_u16(), err.code) {
        (_, Some(100 | 101)) | (401, _) => PwsError::Session { code: err.code },
        (_, Some(132)) => PwsError::Gone {
            what: "endpoint",
            code: 132,
        },
        (_, Some(133)) => PwsError::Gone {
            what: "subscription",
            code: 133,
        },
        (503, code) | (_, code @ Some(210 | 212)) => PwsError::Throttled { code },
        (s, code) => PwsError::Rejected {
            status: s,
            code,
            message: err
                .message
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_body(code: u32) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><description xmlns="urn:cisco:cup:presence:soap"><code>{code}</code><message>m{code}</message><fix>f</fix></description>"#
        )
        .into_bytes()
    }

    #[test]
    fn classification_table() {
        let h = HeaderMap::new();
        let c = |s: u16, b: &[u8]| classify(StatusCode::from_u16(s).unwrap(), &h, b);
        assert!(matches!(
            c(401, &err_body(101)),
            PwsError::Session { code: Some(101) }
        ));
        assert!(matches!(
            c(401, b"<html>proxy</html>"),
            PwsError::Session { code: None }
        ));
        assert!(matches!(
            c(400, &err_body(133)),
            PwsError::Gone { code: 133, .. }
        ));
        assert!(matches!(
            c(400, &err_body(132)),
            PwsError::Gone { code: 132, .. }
        ));
        assert!(matches!(
            c(503, &err_body(210)),
            PwsError::Throttled { code: Some(210) }
        ));
        assert!(matches!(c(503, b""), PwsError::Throttled { code: None }));
        match c(400, &err_body(121)) {
            PwsError::Rejected {
                status,
                code,
                message,
            } => {
                assert_eq!((status, code, message.as_str()), (400, Some(121), "m121"))
            }
            other => panic!("{other:?}"),
        }
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            HeaderValue::from_static("https://imp2:8083/presence-service/users/jdoe/session"),
        );
        match classify(StatusCode::TEMPORARY_REDIRECT, &h, b"") {
            PwsError::Redirect { base } => assert_eq!(base, "https://imp2:8083/presence-service"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("alice@example.com"), "alice@example.com");
        assert_eq!(seg("a b/c?"), "a%20b%2Fc%3F");
    }
}
