//! HTTP client for one signed-in UCWA user: sign-in by autodiscovery and OAuth token
//! (reference `ucwa.md` §2), then requests with `Authorization: Bearer`. Hrefs are followed,
//! never built; relative hrefs are resolved against the origin they came from.

use super::json::{self, UcwaErrorBody, UcwaJsonError};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum UcwaError {
    /// 401: the token is missing, expired or revoked.
    #[error("unauthorized (token expired or revoked)")]
    Unauthorized,
    /// 404 ApplicationNotFound / 410 (InactiveApplicationExpired, …): recreate the app.
    #[error("application gone ({status} {subcode:?})")]
    ApplicationGone {
        status: u16,
        subcode: Option<String>,
    },
    /// Any other 404 (an expired subscription, a vanished resource).
    #[error("not found ({subcode:?})")]
    NotFound { subcode: Option<String> },
    /// 409 PGetReplaced: a newer pending GET took this one's place.
    #[error("pending GET replaced by a newer one")]
    PGetReplaced,
    /// 429 / 503: back off.
    #[error("server busy (HTTP {0})")]
    Throttled(u16),
    #[error("HTTP {status}: {code:?}/{subcode:?}: {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        subcode: Option<String>,
        message: String,
    },
    #[error("sign-in: {0}")]
    SignIn(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("response: {0}")]
    Parse(#[from] UcwaJsonError),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

impl UcwaError {
    pub fn kind(&self) -> &'static str {
        match self {
            UcwaError::Unauthorized => "unauthorized",
            UcwaError::ApplicationGone { .. } => "application_gone",
            UcwaError::NotFound { .. } => "not_found",
            UcwaError::PGetReplaced => "pget_replaced",
            UcwaError::Throttled(_) => "throttled",
            UcwaError::Rejected { .. } => "rejected",
            UcwaError::SignIn(_) => "sign_in",
            UcwaError::Transport(_) => "transport",
            UcwaError::Parse(_) => "parse",
            UcwaError::TooLarge(_) => "too_large",
        }
    }
}

/// Maps a non-2xx answer to an error (reference §8).
pub fn classify(status: StatusCode, body: &[u8]) -> UcwaError {
    let UcwaErrorBody {
        code,
        subcode,
        message,
    } = json::parse_error(body);
    match (status.as_u16(), subcode.as_deref()) {
        (401, _) => UcwaError::Unauthorized,
        (404, Some("ApplicationNotFound")) | (410, _) => UcwaError::ApplicationGone {
            status: status.as_u16(),
            subcode,
        },
        (404, _) => UcwaError::NotFound { subcode },
        (409, Some("PGetReplaced")) => UcwaError::PGetReplaced,
        (429 | 503, _) => UcwaError::Throttled(status.as_u16()),
        (s, _) => UcwaError::Rejected {
            status: s,
            code,
            subcode,
            message: message.unwrap_or_default(),
        },
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{host}")
        }
        None => url.to_string(),
    }
}

/// Resolves a HAL href against the origin of `base`.
pub fn resolve(base: &str, href: &str) -> String {
    if href.starts_with("http://") || href.starts_with("https://") {
        href.to_string()
    } else {
        format!("{}/{}", origin(base), href.trim_start_matches('/'))
    }
}

struct Token {
    value: String,
    expires: Instant,
}

/// One signed-in user.
pub struct UcwaClient {
    http: reqwest::Client,
    max_body: usize,
    username: String,
    password: String,
    autodiscover: String,
    /// Token endpoint and applications URL, learned at sign-in.
    learned: Mutex<Option<(String, String)>>,
    token: Mutex<Option<Token>>,
}

pub struct Response {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl UcwaClient {
    pub fn new(
        autodiscover: &str,
        username: &str,
        password: &str,
        timeout: Duration,
        max_body: usize,
    ) -> UcwaClient {
        crate::install_crypto_provider();
        UcwaClient {
            http: reqwest::Client::builder()
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .expect("reqwest client with static settings"),
            max_body,
            username: username.to_string(),
            password: password.to_string(),
            autodiscover: autodiscover.to_string(),
            learned: Mutex::new(None),
            token: Mutex::new(None),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    async fn raw(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), UcwaError> {
        let mut req = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header(ACCEPT, "application/json");
        if let Some(t) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some((ctype, b)) = body {
            req = req.header(CONTENT_TYPE, ctype).body(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| UcwaError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| UcwaError::Transport(e.without_url().to_string()))?
        {
            if out.len() + chunk.len() > self.max_body {
                return Err(UcwaError::TooLarge(self.max_body));
            }
            out.extend_from_slice(&chunk);
        }
        Ok((status, headers, out))
    }

    /// Autodiscover → user resource → OAuth challenge → token → applications URL.
    /// Returns the applications URL.
    pub async fn sign_in(&self, timeout: Duration) -> Result<String, UcwaError> {
        let (s, _, body) = self
            .raw(Method::GET, &self.autodiscover, None, None, timeout)
            .await?;
        if !s.is_success() {
            return Err(UcwaError::SignIn(format!("autodiscover answered {s}")));
        }
        let links = json::parse_links(&body)?;
        let user = links
            .get("user")
            .ok_or_else(|| UcwaError::SignIn("autodiscover without a user link".into()))?;
        let user = resolve(&self.autodiscover, user);
        let (s, h, _) = self.raw(Method::GET, &user, None, None, timeout).await?;
        if s != StatusCode::UNAUTHORIZED {
            return Err(UcwaError::SignIn(format!(
                "user resource without a token answered {s}, expected 401 with a challenge"
            )));
        }
        let token_url = h
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(json::parse_oauth_challenge)
            .ok_or_else(|| UcwaError::SignIn("no MsRtcOAuth challenge".into()))?;
        let token_url = resolve(&user, &token_url);
        self.token_at(&token_url, timeout).await?;
        let bearer = self.bearer();
        let (s, _, body) = self
            .raw(Method::GET, &user, bearer.as_deref(), None, timeout)
            .await?;
        if !s.is_success() {
            return Err(classify(s, &body));
        }
        let links = json::parse_links(&body)?;
        let apps = links
            .get("applications")
            .ok_or_else(|| UcwaError::SignIn("user resource without applications link".into()))?;
        let apps = resolve(&user, apps);
        *self.learned.lock().expect("lock") = Some((token_url, apps.clone()));
        Ok(apps)
    }

    async fn token_at(&self, token_url: &str, timeout: Duration) -> Result<(), UcwaError> {
        let form = format!(
            "grant_type=password&username={}&password={}",
            form_encode(&self.username),
            form_encode(&self.password)
        );
        let (s, _, body) = self
            .raw(
                Method::POST,
                token_url,
                None,
                Some(("application/x-www-form-urlencoded;charset=UTF-8", form)),
                timeout,
            )
            .await?;
        if !s.is_success() {
            // The body says invalid_grant etc.; never echo the request.
            return Err(UcwaError::SignIn(format!(
                "token request for {} refused ({s}): {}",
                self.username,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        let t = json::parse_token(&body)?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(8 * 3600));
        *self.token.lock().expect("lock") = Some(Token {
            value: t.access_token,
            // Refresh at 80 % of the lifetime.
            expires: Instant::now() + life.mul_f64(0.8),
        });
        Ok(())
    }

    fn bearer(&self) -> Option<String> {
        self.token
            .lock()
            .expect("lock")
            .as_ref()
            .map(|t| t.value.clone())
    }

    /// A new token when the current one is near its end (or `force`).
    pub async fn refresh_token(&self, force: bool, timeout: Duration) -> Result<(), UcwaError> {
        let due = force
            || self
                .token
                .lock()
                .expect("lock")
                .as_ref()
                .is_none_or(|t| Instant::now() >= t.expires);
        if !due {
            return Ok(());
        }
        let url = self
            .learned
            .lock()
            .expect("lock")
            .as_ref()
            .map(|l| l.0.clone());
        match url {
            Some(u) => self.token_at(&u, timeout).await,
            None => self.sign_in(timeout).await.map(|_| ()),
        }
    }

    /// A UCWA request with the bearer token; a 401 gets one new token and a retry.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        json_body: Option<String>,
        timeout: Duration,
    ) -> Result<Response, UcwaError> {
        self.refresh_token(false, timeout.min(Duration::from_secs(30)))
            .await?;
        for attempt in 0..2 {
            let body = json_body.clone().map(|b| ("application/json", b));
            let bearer = self.bearer();
            let (status, _, body) = self
                .raw(method.clone(), url, bearer.as_deref(), body, timeout)
                .await?;
            if status.is_success() {
                return Ok(Response { status, body });
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.refresh_token(true, Duration::from_secs(30)).await?;
                continue;
            }
            return Err(classify(status, &body));
        }
        Err(UcwaError::Unauthorized)
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn href_resolution() {
        for (base, href, want) in [
            (
                "https://pool.example.com/ucwa/oauth/v1/applications",
                "/ucwa/oauth/v1/applications/105/events?ack=1",
                "https://pool.example.com/ucwa/oauth/v1/applications/105/events?ack=1",
            ),
            (
                "http://127.0.0.1:8080/x",
                "http://other:1/y",
                "http://other:1/y",
            ),
            ("http://h:1/a/b?c", "z", "http://h:1/z"),
        ] {
            assert_eq!(resolve(base, href), want);
        }
    }

    #[test]
    fn error_classification() {
        let c = |s: u16, b: &str| classify(StatusCode::from_u16(s).unwrap(), b.as_bytes());
        assert!(matches!(c(401, ""), UcwaError::Unauthorized));
        assert!(matches!(
            c(
                404,
                r#"{"code":"NotFound","subcode":"ApplicationNotFound"}"#
            ),
            UcwaError::ApplicationGone { status: 404, .. }
        ));
        assert!(matches!(
            c(
                410,
                r#"{"code":"Gone","subcode":"InactiveApplicationExpired"}"#
            ),
            UcwaError::ApplicationGone { status: 410, .. }
        ));
        assert!(matches!(
            c(404, r#"{"code":"NotFound"}"#),
            UcwaError::NotFound { .. }
        ));
        assert!(matches!(
            c(409, r#"{"code":"Conflict","subcode":"PGetReplaced"}"#),
            UcwaError::PGetReplaced
        ));
        assert!(matches!(c(503, "<html>"), UcwaError::Throttled(503)));
        assert!(matches!(
            c(409, r#"{"code":"Conflict","subcode":"AlreadyExists"}"#),
            UcwaError::Rejected { status: 409, .. }
        ));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d@e"), "a+b%26c%3Dd%40e");
    }
}
