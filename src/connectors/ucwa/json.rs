//! UCWA JSON bodies: parsing what the server sends, building what we send.
//!
//! UCWA resources are HAL-like: properties, `_links` (relation → `{"href": …}`) and
//! `_embedded` (relation → resource). The parsers keep only what the connector reads and
//! ignore every other property, so new server versions and vendor additions pass through.
//! Responses use lowerCamelCase; since the reference shows both casings in requests
//! (`uris`/`Uris`), resource properties are also accepted in PascalCase (`Availability`).
//! A body carrying both spellings of one property is an error (duplicate field).
//!
//! Bounded by construction: a body longer than [`MAX_BODY`] is refused before parsing;
//! serde_json refuses arrays and objects nested deeper than 128 wherever a value is
//! materialized, and skips unknown properties with an iterative scanner (no recursion, so
//! deep nesting there costs one byte of heap per level and never the stack). Memory is a
//! small multiple of the body; time is linear in it.
//!
//! Strict where the connector depends on a value (a known property of the wrong type, a
//! body that is not a JSON object, a missing `self` link are errors) and lenient where one
//! bad item must not block the rest: a malformed link entry is dropped, and a malformed
//! event is skipped and counted ([`EventsPage::skipped`]) so the event channel keeps
//! moving. Error bodies never fail to parse ([`parse_error`]).
//!
//! Request bodies are serialized with serde_json, never concatenated, so every value is
//! escaped.

use crate::model::canonical_user;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Largest body parsed, in bytes. Real UCWA bodies are a few KiB; an events page for a
/// large subscription a few hundred KiB.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Presence subscription duration range accepted by UCWA, in minutes (§5).
pub const SUBSCRIPTION_MINUTES: std::ops::RangeInclusive<u32> = 10..=30;

/// Why a UCWA body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum UcwaJsonError {
    #[error("body of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("malformed or unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} is missing or empty")]
    Missing(&'static str),
    /// The token endpoint answered with an OAuth error (`invalid_grant`, …).
    #[error("token request refused: {error}")]
    OAuth {
        error: String,
        description: Option<String>,
    },
}

/// One HAL link (`_links.<rel>`); `title` and other members are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(alias = "Href")]
    pub href: String,
}

/// An OAuth token from the WebTicket service (§2 step 3). `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `cwt=…` on-premises; sent as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// As sent (`Bearer`); `Bearer` when the server leaves it out.
    pub token_type: String,
    /// Lifetime in seconds (8 h for authenticated users).
    pub expires_in: Option<u64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The signed-in user, embedded in the application (`_embedded.me`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    /// `sip:user@example.com`.
    pub uri: Option<String>,
    /// `self`, `makeMeAvailable`, and after makeMeAvailable `presence`, `note`,
    /// `reportMyActivity`, …
    pub links: HashMap<String, String>,
}

/// An application resource (§3): the session every other UCWA call hangs off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub self_href: String,
    /// The event channel, `…/events?ack=1`.
    pub events_href: String,
    pub me: Option<Me>,
    /// `_embedded.people._links`: `presenceSubscriptions`, `subscribedContacts`, `search`…
    pub people_links: HashMap<String, String>,
}

/// One response of the event channel (§4). At least one of `next`, `resume`, `resync` is
/// present (otherwise parsing fails: the channel could not continue).
#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    /// The next P-GET; following it acknowledges this page.
    pub next: Option<String>,
    /// Sent instead of `next` after a cleanup: every subscription is gone, re-subscribe.
    pub resume: Option<String>,
    /// The ack was out of range: follow it and drop cached transient state.
    pub resync: Option<String>,
    /// Every event of every sender, in document order.
    pub events: Vec<Event>,
    /// Events left out because they lacked a `link` (`rel` and `href`) or a `type`, or a
    /// member had the wrong type. Worth a log line; the page is still usable.
    pub skipped: usize,
}

/// One event, flattened with its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `people`, `me`, `communication`, …
    pub sender_rel: String,
    pub sender_href: String,
    /// `contactPresence`, `contactNote`, `presenceSubscription`, `presence`, …
    pub link_rel: String,
    pub link_href: String,
    /// The resource the linked one belongs to (`contact` for a `contactPresence`).
    pub in_rel: Option<String>,
    pub in_href: Option<String>,
    /// `added | updated | deleted | started | completed`, lower-cased.
    pub kind: String,
    /// The event's `_embedded` object (e.g. the `presenceSubscription` about to expire).
    pub embedded: Option<Value>,
    /// Why an operation failed or the server changed something (§8 shape).
    pub reason: Option<UcwaErrorBody>,
}

/// A contact's presence (§6). Values as sent; [`super::normalize`] interprets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPresence {
    pub availability: Option<String>,
    pub activity: Option<String>,
    pub device_type: Option<String>,
    /// Milliseconds since the epoch, from `/Date(ms)/` (an unreadable date is `None`).
    pub last_active: Option<i64>,
    pub self_href: Option<String>,
}

/// A presence subscription (§5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Extend with `POST <self>?duration=N`, end with `DELETE <self>`.
    pub self_href: String,
    pub memberships: Option<String>,
    /// `addToPresenceSubscription`.
    pub add_members: Option<String>,
}

/// A UCWA error body (§8). Only `code` is guaranteed by UCWA, and proxies send anything,
/// so every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UcwaErrorBody {
    pub code: Option<String>,
    pub subcode: Option<String>,
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing

/// The `_links` of any HAL resource (autodiscovery root, user resource, …) as rel → href.
/// A missing `_links` is an error; link entries without a string `href` are dropped; an
/// array of links (allowed by HAL) gives its first usable entry.
pub fn parse_links(body: &[u8]) -> Result<HashMap<String, String>, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, rename = "_links")]
        links: Option<Links>,
    }
    let raw: Raw = from_body(body)?;
    raw.links
        .map(|l| l.0)
        .ok_or(UcwaJsonError::Missing("_links"))
}

/// The token endpoint's answer. A body with an OAuth `error` instead of a token (the `400`
/// answer) is [`UcwaJsonError::OAuth`]. `expires_in` is accepted as a number or a numeric
/// string.
pub fn parse_token(body: &[u8]) -> Result<Token, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        token_type: Option<String>,
        #[serde(default, deserialize_with = "seconds")]
        expires_in: Option<u64>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let raw: Raw = from_body(body)?;
    match (non_empty(raw.access_token), non_empty(raw.error)) {
        (Some(access_token), _) => Ok(Token {
            access_token,
            token_type: non_empty(raw.token_type).unwrap_or_else(|| "Bearer".to_string()),
            expires_in: raw.expires_in,
        }),
        (None, Some(error)) => Err(UcwaJsonError::OAuth {
            error,
            description: non_empty(raw.error_description),
        }),
        (None, None) => Err(UcwaJsonError::Missing("access_token")),
    }
}

/// The token service URL from a `WWW-Authenticate` header value (§2 step 2):
/// `MsRtcOAuth href="https://pool/WebTicket/oauthtoken",grant_type="…"`. The header may
/// hold several challenges (`Bearer trusted_issuers="", client_id="…", MsRtcOAuth href=…`);
/// scheme and parameter names are case-insensitive, values quoted (with `\` escapes) or
/// bare tokens. `None` without an `MsRtcOAuth` challenge carrying a non-empty `href`.
pub fn parse_oauth_challenge(www_authenticate: &str) -> Option<String> {
    let mut in_ms_rtc = false;
    for item in split_top_level_commas(www_authenticate) {
        let item = item.trim_matches(is_http_ws);
        if item.is_empty() {
            continue;
        }
        // `scheme`, `scheme param=value`, `scheme token68`, or a bare `param=value`.
        let token_end = item
            .find(|c: char| c == '=' || is_http_ws(c))
            .unwrap_or(item.len());
        let after_token = item[token_end..].trim_start_matches(is_http_ws);
        let param = if after_token.starts_with('=') {
            Some(item)
        } else {
            // A new challenge starts here.
            in_ms_rtc = item[..token_end].eq_ignore_ascii_case("MsRtcOAuth");
            (!after_token.is_empty()).then_some(after_token)
        };
        let Some(param) = param.filter(|_| in_ms_rtc) else {
            continue;
        };
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim_matches(is_http_ws).eq_ignore_ascii_case("href") {
            let href = unquote(value.trim_matches(is_http_ws));
            if !href.is_empty() {
                return Some(href);
            }
        }
    }
    None
}

/// An application resource (§3), from `POST applications` or `GET <application>`.
/// `self` and `events` links are required.
pub fn parse_application(body: &[u8]) -> Result<Application, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, rename = "_links")]
        links: Option<Links>,
        #[serde(default, rename = "_embedded")]
        embedded: Option<Embedded>,
    }
    #[derive(Deserialize)]
    struct Embedded {
        #[serde(default, alias = "Me")]
        me: Option<RawMe>,
        #[serde(default, alias = "People")]
        people: Option<LinksOnly>,
    }
    #[derive(Deserialize)]
    struct RawMe {
        #[serde(default, alias = "Uri")]
        uri: Option<String>,
        #[serde(default, rename = "_links")]
        links: Option<Links>,
    }
    let raw: Raw = from_body(body)?;
    let mut links = raw.links.unwrap_or_default().0;
    let self_href = links
        .remove("self")
        .ok_or(UcwaJsonError::Missing("_links.self"))?;
    let events_href = links
        .remove("events")
        .ok_or(UcwaJsonError::Missing("_links.events"))?;
    let (me, people) = raw.embedded.map_or((None, None), |e| (e.me, e.people));
    Ok(Application {
        self_href,
        events_href,
        me: me.map(|me| Me {
            uri: non_empty(me.uri),
            links: me.links.unwrap_or_default().0,
        }),
        people_links: people.and_then(|p| p.links).unwrap_or_default().0,
    })
}

/// One event-channel response (§4). `sender` is an array in which a sender may repeat to
/// keep the order of events; the events come out flattened in document order. A page with
/// only `_links` (the timeout answer) has no events.
pub fn parse_events(body: &[u8]) -> Result<EventsPage, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, rename = "_links")]
        links: Option<Links>,
        #[serde(default, alias = "Sender")]
        sender: Option<Vec<Sender>>,
    }
    #[derive(Deserialize)]
    struct Sender {
        #[serde(default, alias = "Rel")]
        rel: Option<String>,
        #[serde(default, alias = "Href")]
        href: Option<String>,
        #[serde(default, alias = "Events")]
        events: Option<Vec<Lenient<RawEvent>>>,
    }
    #[derive(Deserialize)]
    struct RawEvent {
        #[serde(alias = "Link")]
        link: RelHref,
        #[serde(default, rename = "in", alias = "In")]
        in_: Option<Lenient<RelHref>>,
        #[serde(rename = "type", alias = "Type")]
        kind: String,
        #[serde(default, rename = "_embedded")]
        embedded: Option<Value>,
        #[serde(default, alias = "Reason")]
        reason: Option<Value>,
    }
    #[derive(Deserialize)]
    struct RelHref {
        #[serde(alias = "Rel")]
        rel: String,
        #[serde(alias = "Href")]
        href: String,
    }

    let raw: Raw = from_body(body)?;
    let mut links = raw.links.unwrap_or_default().0;
    let mut page = EventsPage {
        next: links.remove("next"),
        resume: links.remove("resume"),
        resync: links.remove("resync"),
        events: Vec::new(),
        skipped: 0,
    };
    if page.next.is_none() && page.resume.is_none() && page.resync.is_none() {
        return Err(UcwaJsonError::Missing("_links.next, resume or resync"));
    }
    for sender in raw.sender.unwrap_or_default() {
        let sender_rel = sender.rel.unwrap_or_default();
        let sender_href = sender.href.unwrap_or_default();
        for Lenient(event) in sender.events.unwrap_or_default() {
            let Some(ev) = event.filter(|e| {
                !e.link.rel.is_empty() && !e.link.href.is_empty() && !e.kind.trim().is_empty()
            }) else {
                page.skipped += 1;
                continue;
            };
            let in_ = ev.in_.and_then(|l| l.0);
            page.events.push(Event {
                sender_rel: sender_rel.clone(),
                sender_href: sender_href.clone(),
                link_rel: ev.link.rel,
                link_href: ev.link.href,
                in_rel: in_.as_ref().map(|l| l.rel.clone()),
                in_href: in_.map(|l| l.href),
                kind: ev.kind.trim().to_ascii_lowercase(),
                embedded: ev.embedded.filter(|v| !v.is_null()),
                reason: ev
                    .reason
                    .as_ref()
                    .and_then(Value::as_object)
                    .map(error_from),
            });
        }
    }
    Ok(page)
}

/// A contactPresence resource (§6). `lastActive` is `/Date(ms)/` (a bare number of
/// milliseconds is accepted too; an unreadable date string is `None`).
pub fn parse_contact_presence(body: &[u8]) -> Result<ContactPresence, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, alias = "Availability")]
        availability: Option<String>,
        #[serde(default, alias = "Activity")]
        activity: Option<String>,
        #[serde(default, rename = "deviceType", alias = "DeviceType")]
        device_type: Option<String>,
        #[serde(
            default,
            rename = "lastActive",
            alias = "LastActive",
            deserialize_with = "ms_date"
        )]
        last_active: Option<i64>,
        #[serde(default, rename = "_links")]
        links: Option<Links>,
    }
    let raw: Raw = from_body(body)?;
    Ok(ContactPresence {
        availability: raw.availability,
        activity: raw.activity,
        device_type: raw.device_type,
        last_active: raw.last_active,
        self_href: raw.links.and_then(|mut l| l.0.remove("self")),
    })
}

/// A contactNote resource (`{"message": …, "type": "personal" | "outOfOffice"}`): the
/// message, `None` when absent or blank.
pub fn parse_contact_note(body: &[u8]) -> Result<Option<String>, UcwaJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    let raw: Raw = from_body(body)?;
    Ok(raw.message.filter(|m| !m.trim().is_empty()))
}

/// A presenceSubscription resource (§5); the `self` link is required.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, UcwaJsonError> {
    let raw: LinksOnly = from_body(body)?;
    let mut links = raw.links.unwrap_or_default().0;
    Ok(Subscription {
        self_href: links
            .remove("self")
            .ok_or(UcwaJsonError::Missing("_links.self"))?,
        memberships: links.remove("memberships"),
        add_members: links.remove("addToPresenceSubscription"),
    })
}

/// The error body of §8. Never fails: non-JSON bodies (HTML from a proxy, XML, nothing)
/// and fields of the wrong type give `None`. Property names are matched case-insensitively.
pub fn parse_error(body: &[u8]) -> UcwaErrorBody {
    if body.len() > MAX_BODY {
        return UcwaErrorBody::default();
    }
    match serde_json::from_slice::<Value>(strip_bom(body)) {
        Ok(Value::Object(map)) => error_from(&map),
        _ => UcwaErrorBody::default(),
    }
}

/// `/Date(1358827096000)/` or `/Date(1358827096000+0100)/` → milliseconds since the epoch
/// (the number is UTC; the offset only says where the writer was, so it is validated and
/// ignored). The JSON-escaped form `\/Date(…)\/` is accepted too; anything else is `None`.
pub fn parse_ms_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let inner = s
        .strip_prefix("/Date(")
        .or_else(|| s.strip_prefix("\\/Date("))?;
    let inner = inner
        .strip_suffix(")/")
        .or_else(|| inner.strip_suffix(")\\/"))?;
    // The number may start with `-`; an offset sign can only come after a digit.
    let split = inner
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '+' || c == '-')
        .map_or(inner.len(), |(i, _)| i);
    let (ms, offset) = inner.split_at(split);
    let digits = ms.strip_prefix('-').unwrap_or(ms);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !offset.is_empty() && (offset.len() != 5 || !offset[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    ms.parse().ok()
}

/// The canonical user of a people href: the segment after `people`, percent-decoded,
/// `sip:` removed and lower-cased ([`canonical_user`]):
/// `…/people/alice@example.com/presence` and `…/people/sip:alice%40example.com` →
/// `alice@example.com`. `None` when that segment is no SIP user (`…/people/282/…`,
/// `…/people/presenceSubscriptions/…`, `…/people`).
pub fn user_from_href(href: &str) -> Option<String> {
    let path = href.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    segments.windows(2).find_map(|w| {
        if !w[0].eq_ignore_ascii_case("people") {
            return None;
        }
        let user = canonical_user(&percent_decode(w[1])?);
        let (local, domain) = user.split_once('@')?;
        let valid = !local.is_empty()
            && !domain.is_empty()
            && !user.chars().any(|c| c.is_control() || c.is_whitespace());
        valid.then_some(user)
    })
}

// ---------------------------------------------------------------------------------------
// Building

/// `POST applications` body (§3). UCWA limits each value to 100 characters; the caller
/// (configuration) checks that.
pub fn application_body(user_agent: &str, endpoint_id: &str, culture: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        user_agent: &'a str,
        endpoint_id: &'a str,
        culture: &'a str,
    }
    to_json(&Body {
        user_agent,
        endpoint_id,
        culture,
    })
}

/// `POST presenceSubscriptions` body (§5): `{"duration":N,"uris":["sip:…"]}`. The
/// duration is clamped to [`SUBSCRIPTION_MINUTES`] (the server refuses anything else);
/// URIs get a `sip:` prefix unless they have one.
pub fn subscription_body(duration_min: u32, uris: &[String]) -> String {
    #[derive(Serialize)]
    struct Body {
        duration: u32,
        uris: Vec<String>,
    }
    to_json(&Body {
        duration: duration_min.clamp(*SUBSCRIPTION_MINUTES.start(), *SUBSCRIPTION_MINUTES.end()),
        uris: uris.iter().map(|u| sip_uri(u)).collect(),
    })
}

/// `POST addToPresenceSubscription` body (§5): `{"contactUris":["sip:…"]}`, with the
/// `sip:` prefix added where missing.
pub fn add_members_body(uris: &[String]) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        contact_uris: Vec<String>,
    }
    to_json(&Body {
        contact_uris: uris.iter().map(|u| sip_uri(u)).collect(),
    })
}

/// `POST <me.presence>` body (§7): `{"availability":"Busy"}`, or the empty body that resets
/// the user's presence to the automatic state.
pub fn set_presence_body(availability: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        availability: &'a str,
    }
    availability.map_or_else(String::new, |availability| to_json(&Body { availability }))
}

/// `POST <me.makeMeAvailable>` body (§7): online, messaging only, plain text.
pub fn make_me_available_body() -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        sign_in_as: &'static str,
        supported_modalities: [&'static str; 1],
        supported_message_formats: [&'static str; 1],
    }
    to_json(&Body {
        sign_in_as: "Online",
        supported_modalities: ["Messaging"],
        supported_message_formats: ["Plain"],
    })
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Size check, object check, then serde.
fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, UcwaJsonError> {
    use crate::connectors::JsonBodyProblem as P;
    let body = crate::connectors::json_object_body(body, MAX_BODY).map_err(|p| match p {
        P::TooLarge { len, max } => UcwaJsonError::TooLarge { len, max },
        P::NotAnObject => UcwaJsonError::NotAnObject,
    })?;
    Ok(serde_json::from_slice(body)?)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("request bodies are plain strings and numbers")
}

use crate::connectors::{non_empty, strip_bom};

/// A resource of which only the links matter.
#[derive(Deserialize)]
struct LinksOnly {
    #[serde(default, rename = "_links")]
    links: Option<Links>,
}

/// `_links` as rel → href (see [`parse_links`] for what is dropped).
#[derive(Default)]
struct Links(HashMap<String, String>);

impl<'de> Deserialize<'de> for Links {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = HashMap::<String, Value>::deserialize(d)?;
        let href = |v: &Value| match v.as_object().and_then(|o| get_ci(o, "href")) {
            Some(Value::String(h)) if !h.trim().is_empty() => Some(h.clone()),
            _ => None,
        };
        Ok(Links(
            raw.into_iter()
                .filter_map(|(rel, v)| {
                    let href = match &v {
                        Value::Array(items) => items.iter().find_map(href),
                        other => href(other),
                    }?;
                    Some((rel, href))
                })
                .collect(),
        ))
    }
}

/// `Some(T)` if the value deserializes as `T`, `None` otherwise; never an error (except
/// for JSON that is malformed or too deep, which fails the whole body).
struct Lenient<T>(Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Lenient(T::deserialize(value).ok()))
    }
}

/// A property by name: the exact spelling first, then ignoring ASCII case.
fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn error_from(map: &Map<String, Value>) -> UcwaErrorBody {
    let text = |name| match get_ci(map, name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    UcwaErrorBody {
        code: text("code"),
        subcode: text("subcode"),
        message: text("message"),
    }
}

/// `expires_in`: a non-negative integer, or a string holding one.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| de::Error::custom("expires_in: expected whole seconds")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom("expires_in: expected whole seconds")),
        Some(_) => Err(de::Error::custom("expires_in: expected whole seconds")),
    }
}

/// `lastActive`: `/Date(ms)/` (unreadable → `None`) or a number of milliseconds.
fn ms_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(parse_ms_date(&s)),
        Some(Value::Number(n)) => Ok(n.as_i64()),
        Some(_) => Err(de::Error::custom(
            "lastActive: expected a /Date(ms)/ string",
        )),
    }
}

/// `alice@x` → `sip:alice@x`; `sip:`/`sips:` URIs (any case) stay as they are.
fn sip_uri(uri: &str) -> String {
    let uri = uri.trim();
    let has_scheme = |scheme: &str| {
        uri.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    };
    if has_scheme("sip:") || has_scheme("sips:") {
        uri.to_string()
    } else {
        format!("sip:{uri}")
    }
}

/// `%XX` decoding of one path segment; `None` for a broken escape or non-UTF-8 result.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_http_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits a header value at commas outside quoted strings.
fn split_top_level_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A quoted-string's content with `\` escapes resolved, or a bare token as it is.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    // Reference samples (docs/ucwa.md and seed 002). `…` placeholders of the reference are
    // filled in with concrete values; everything else is verbatim.

    pub(crate) const TOKEN: &str = r#"{"access_token":"cwt=AAEB...buHc","token_type":"Bearer","expires_in":28289,"ms_rtc_identityscope":"local"}"#;

    pub(crate) const CHALLENGE: &str = r#"MsRtcOAuth href="https://lyncweb.contoso.com/WebTicket/oauthtoken",grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password""#;

    pub(crate) const AUTODISCOVER: &str = r#"{"_links":{
        "self":{"href":"https://lyncdiscover.contoso.com/Autodiscover/AutodiscoverService.svc/root?originalDomain=contoso.com"},
        "user":{"href":"https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user?originalDomain=contoso.com"},
        "xframe":{"href":"https://lyncweb.contoso.com/Autodiscover/XFrame/XFrame.html"}}}"#;

    pub(crate) const USER: &str = r#"{"_links":{
        "self":{"href":"https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user"},
        "applications":{"href":"https://lyncweb.contoso.com/ucwa/oauth/v1/applications"},
        "xframe":{"href":"https://lyncweb.contoso.com/Autodiscover/XFrame/XFrame.html"}}}"#;

    pub(crate) const APPLICATION: &str = r#"{"rel":"application","id":"105","culture":"en-US","userAgent":"presence-bridge/1.0",
 "_links":{"self":{"href":"/ucwa/oauth/v1/applications/105"},
           "events":{"href":"/ucwa/oauth/v1/applications/105/events?ack=1"},
           "batch":{"href":"/ucwa/oauth/v1/applications/105/batch"},"policies":{"href":"/ucwa/oauth/v1/applications/105/policies"}},
 "_embedded":{
   "me":{"rel":"me","uri":"sip:user@example.com","name":"User",
         "_links":{"self":{"href":"/ucwa/oauth/v1/applications/105/me"},"makeMeAvailable":{"href":"/ucwa/oauth/v1/applications/105/me/makeMeAvailable"},"photo":{"href":"/ucwa/oauth/v1/applications/105/photos/user@example.com"}}},
   "people":{"rel":"people","_links":{"presenceSubscriptions":{"href":"/ucwa/oauth/v1/applications/105/people/presenceSubscriptions"},
         "presenceSubscriptionMemberships":{"href":"/ucwa/oauth/v1/applications/105/people/presenceSubscriptionMemberships"},"subscribedContacts":{"href":"/ucwa/oauth/v1/applications/105/people/subscribedContacts"},"myContacts":{"href":"/ucwa/oauth/v1/applications/105/people/contacts"},
         "myGroups":{"href":"/ucwa/oauth/v1/applications/105/people/groups"},"search":{"href":"/ucwa/oauth/v1/applications/105/people/search"}}},
   "communication":{"rel":"communication"},"onlineMeetings":{"rel":"onlineMeetings"}}}"#;

    pub(crate) const EVENTS: &str = r#"{"_links":{"self":{"href":"/ucwa/oauth/v1/applications/105/events?ack=5"},"next":{"href":"/ucwa/oauth/v1/applications/105/events?ack=6"}},
 "sender":[
   {"rel":"people","href":"/ucwa/oauth/v1/applications/105/people",
    "events":[
      {"link":{"rel":"contactPresence","href":"/ucwa/oauth/v1/applications/105/people/alice@example.com/presence"},
       "in":{"rel":"contact","href":"/ucwa/oauth/v1/applications/105/people/alice@example.com"},
       "type":"updated"}]}]}"#;

    /// Seed 002, verbatim: the presenceSubscription about to expire.
    pub(crate) const EVENTS_EXPIRING: &str = r#"{
       "_links":{
          "self":{"href":"/ucwa/v1/applications/101/events?ack=10"},
          "next":{"href":"/ucwa/v1/applications/101/events?ack=11"}
        },
        "sender":[
        {
          "rel":"people","href":"/ucwa/v1/applications/101/people",
          "events":[
             {
                "link":{"rel":"presenceSubscription","href":"/ucwa/v1/applications/101/people/presenceSubscriptions/97b6bd66"},
                "_embedded":{
                   "presenceSubscription":{
                      "id":"97b6bd66",
                      "_links":{
                         "self":{"href":"/ucwa/v1/applications/101/people/presenceSubscriptions/97b6bd66"},
                         "memberships":{"href":"/ucwa/v1/applications/101/people/presenceSubscriptionMemberships?presenceSubscriptionId=97b6bd66"},
                         "addToPresenceSubscription":{"href":"/ucwa/v1/applications/101/people/presenceSubscriptionMemberships?presenceSubscriptionId=97b6bd66"}
                      },
                      "rel":"presenceSubscription"
                   }
                },
                "type":"updated"
              }
           ]
        }]
    }"#;

    /// Subscription created (§5), with a sender repeated to keep the order of events.
    pub(crate) const EVENTS_REPEATED: &str = r#"{"_links":{"self":{"href":"/ucwa/oauth/v1/applications/101/events?ack=2"},"next":{"href":"/ucwa/oauth/v1/applications/101/events?ack=3"}},
 "sender":[
  {"rel":"people","href":"/ucwa/oauth/v1/applications/101/people","events":[
    {"link":{"rel":"contact","href":"/ucwa/oauth/v1/applications/101/people/sarad@contoso.com"},
     "in":{"rel":"subscribedContacts","href":"/ucwa/oauth/v1/applications/101/people/subscribedContacts"},"type":"added"},
    {"link":{"rel":"presenceSubscription","href":"/ucwa/oauth/v1/applications/101/people/presenceSubscriptions/97b6bd66"},"type":"added"}]},
  {"rel":"me","href":"/ucwa/oauth/v1/applications/101/me","events":[
    {"link":{"rel":"presence","href":"/ucwa/oauth/v1/applications/101/me/presence"},"type":"added"}]},
  {"rel":"people","href":"/ucwa/oauth/v1/applications/101/people","events":[
    {"link":{"rel":"contactPresence","href":"/ucwa/oauth/v1/applications/101/people/sarad@Contoso.com/presence"},
     "in":{"rel":"contact","href":"/ucwa/oauth/v1/applications/101/people/sarad@contoso.com"},"type":"updated"}]}]}"#;

    pub(crate) const EVENTS_TIMEOUT: &str = r#"{"_links":{"self":{"href":"/ucwa/oauth/v1/applications/101/events?ack=7"},"next":{"href":"/ucwa/oauth/v1/applications/101/events?ack=8"}}}"#;
    pub(crate) const EVENTS_RESUME: &str = r#"{"_links":{"self":{"href":"/ucwa/oauth/v1/applications/101/events?ack=7"},"resume":{"href":"/ucwa/oauth/v1/applications/101/events?ack=8"}}}"#;
    pub(crate) const EVENTS_RESYNC: &str =
        r#"{"_links":{"resync":{"href":"/ucwa/oauth/v1/applications/101/events?ack=1"}}}"#;

    /// Seed 002, verbatim.
    pub(crate) const SUBSCRIPTION: &str = r#"{
       "id":"97b6bd66",
       "_links":{
          "self":{"href":"/ucwa/oauth/v1/applications/101/people/presenceSubscriptions/97b6bd66"},
          "memberships":{"href":"/ucwa/oauth/v1/applications/101/people/presenceSubscriptionMemberships?presenceSubscriptionId=97b6bd66"},
          "addToPresenceSubscription":{"href":"/ucwa/oauth/v1/applications/101/people/presenceSubscriptionMemberships?presenceSubscriptionId=97b6bd66"}
       },
       "rel":"presenceSubscription"
    }"#;

    pub(crate) const PRESENCE: &str = r#"{"rel":"contactPresence","availability":"Busy","activity":"on-the-phone",
 "deviceType":"PC","lastActive":"/Date(1474932023993)/",
 "_links":{"self":{"href":"/ucwa/oauth/v1/applications/105/people/alice@example.com/presence"}}}"#;

    /// Seed 002, verbatim (note the JSON-escaped `\/`).
    pub(crate) const PRESENCE_OFFLINE: &str = r#"{
       "availability":"Offline",
       "deviceType":"Unknown",
       "lastActive":"\/Date(1358827096000)\/",
       "_links":{
          "self":{"href":"/ucwa/oauth/v1/applications/101/people/saraD@contoso.com/presence"}},
       "rel":"contactPresence"
    }"#;

    pub(crate) const NOTE: &str = r#"{"rel":"contactNote","message":"Back at 3","type":"personal","_links":{"self":{"href":"/ucwa/oauth/v1/applications/101/people/alice@example.com/note"}}}"#;

    pub(crate) const ERROR: &str = r#"{"code":"Conflict","subcode":"AlreadyExists","message":"The resource already exists.","link":{"rel":"makeMeAvailable","href":"/x"},"parameters":{"a":1},"debugInfo":{"diagnostics":"1"}}"#;

    pub(crate) const ERROR_NOT_FOUND: &str = r#"{"code":"NotFound","subcode":"ApplicationNotFound","message":"The application does not exist."}"#;

    /// Every sample (name, body), for the fuzz seeds test and the "never panics" test.
    pub(crate) const SAMPLES: &[(&str, &str)] = &[
        ("token", TOKEN),
        ("challenge", CHALLENGE),
        ("autodiscover", AUTODISCOVER),
        ("user", USER),
        ("application", APPLICATION),
        ("events", EVENTS),
        ("events_expiring", EVENTS_EXPIRING),
        ("events_repeated", EVENTS_REPEATED),
        ("events_timeout", EVENTS_TIMEOUT),
        ("events_resume", EVENTS_RESUME),
        ("events_resync", EVENTS_RESYNC),
        ("subscription", SUBSCRIPTION),
        ("presence", PRESENCE),
        ("presence_offline", PRESENCE_OFFLINE),
        ("note", NOTE),
        ("error", ERROR),
        ("error_not_found", ERROR_NOT_FOUND),
    ];

    fn links(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_sample() {
        let t = parse_token(TOKEN.as_bytes()).unwrap();
        assert_eq!(t.access_token, "cwt=AAEB...buHc");
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.expires_in, Some(28289));
        assert!(!format!("{t:?}").contains("cwt="), "Debug leaks the token");

        for (body, expires) in [
            (r#"{"access_token":"cwt=x"}"#, None),
            (r#"{"access_token":"cwt=x","expires_in":null}"#, None),
            (
                r#"{"access_token":"cwt=x","expires_in":"3600"}"#,
                Some(3600),
            ),
            (r#"{"access_token":"cwt=x","expires_in":0}"#, Some(0)),
        ] {
            let t = parse_token(body.as_bytes()).unwrap();
            assert_eq!(t.expires_in, expires, "{body}");
            assert_eq!(t.token_type, "Bearer", "{body}");
        }
        for body in [
            r#"{"access_token":"cwt=x","expires_in":-1}"#,
            r#"{"access_token":"cwt=x","expires_in":1.5}"#,
            r#"{"access_token":"cwt=x","expires_in":"soon"}"#,
            r#"{"access_token":"cwt=x","expires_in":[1]}"#,
            r#"{"access_token":7}"#,
        ] {
            assert!(
                matches!(parse_token(body.as_bytes()), Err(UcwaJsonError::Json(_))),
                "{body}"
            );
        }
        assert!(matches!(
            parse_token(br#"{"error":"invalid_grant","error_description":"bad password"}"#),
            Err(UcwaJsonError::OAuth { error, description: Some(d) })
                if error == "invalid_grant" && d == "bad password"
        ));
        assert!(matches!(
            parse_token(br#"{"error":"invalid_request"}"#),
            Err(UcwaJsonError::OAuth {
                description: None,
                ..
            })
        ));
        for body in [
            r#"{}"#,
            r#"{"access_token":""}"#,
            r#"{"token_type":"Bearer"}"#,
        ] {
            assert!(
                matches!(
                    parse_token(body.as_bytes()),
                    Err(UcwaJsonError::Missing("access_token"))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn oauth_challenges() {
        let href = "https://lyncweb.contoso.com/WebTicket/oauthtoken";
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            (CHALLENGE, Some(href)),
            (r#"msrtcoauth HREF="https://a/t""#, Some("https://a/t")),
            (r#"MSRTCOAUTH grant_type="password", href = "https://a/t""#, Some("https://a/t")),
            (r#"MsRtcOAuth href=https://a/t?x=1,grant_type=password"#, Some("https://a/t?x=1")),
            (r#"Bearer trusted_issuers="", client_id="00000004-0000-0ff1-ce00-000000000000", MsRtcOAuth href="https://a/t",grant_type="urn:microsoft.rtc:windows,password""#, Some("https://a/t")),
            (r#"MsRtcOAuth grant_type="urn:a,href=evil", href="https://a/t""#, Some("https://a/t")),
            (r#"Negotiate, NTLM, MsRtcOAuth href="https://a/t""#, Some("https://a/t")),
            (r#"MsRtcOAuth href="https://a/\"q\"""#, Some(r#"https://a/"q""#)),
            ("\tMsRtcOAuth\thref=\"https://a/t\"\t", Some("https://a/t")),
            (r#"Bearer href="https://not/this""#, None),
            (r#"Bearer realm="x", href="https://not/this""#, None),
            (r#"MsRtcOAuth grant_type="password""#, None),
            (r#"MsRtcOAuth href="""#, None),
            (r#"MsRtcOAuth"#, None),
            (r#"MsRtcOAuthX href="https://a/t""#, None),
            (r#"MsRtcOAuth href="unterminated"#, Some("unterminated")),
            ("", None),
            (",,,", None),
            ("=", None),
            ("\"", None),
        ];
        for (header, want) in rows {
            assert_eq!(parse_oauth_challenge(header).as_deref(), *want, "{header}");
        }
    }

    #[test]
    fn links_samples() {
        assert_eq!(
            parse_links(AUTODISCOVER.as_bytes()).unwrap()["user"],
            "https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user?originalDomain=contoso.com"
        );
        let user = parse_links(USER.as_bytes()).unwrap();
        assert_eq!(
            user["applications"],
            "https://lyncweb.contoso.com/ucwa/oauth/v1/applications"
        );
        assert_eq!(user.len(), 3);
        let redirect = parse_links(
            br#"{"_links":{"self":{"href":"/s"},"redirect":{"href":"https://pool2/"}}}"#,
        )
        .unwrap();
        assert_eq!(redirect["redirect"], "https://pool2/");
        // Malformed entries are dropped; an array gives its first usable entry.
        let odd = parse_links(
            br#"{"_links":{"a":{"href":5},"b":{"title":"t"},"c":"x","d":null,"e":{"href":""},
                "f":[{"title":"t"},{"href":"/f1"},{"href":"/f2"}],"g":{"Href":"/g","title":"G"},"h":[]}}"#,
        )
        .unwrap();
        assert_eq!(odd, links(&[("f", "/f1"), ("g", "/g")]));
        assert_eq!(parse_links(br#"{"_links":{}}"#).unwrap(), HashMap::new());
        for body in [&b"{}"[..], br#"{"_links":null}"#, br#"{"rel":"x"}"#] {
            assert!(matches!(
                parse_links(body),
                Err(UcwaJsonError::Missing("_links"))
            ));
        }
        for body in [&br#"{"_links":"x"}"#[..], br#"{"_links":[]}"#] {
            assert!(matches!(parse_links(body), Err(UcwaJsonError::Json(_))));
        }
    }

    #[test]
    fn application_sample() {
        let app = parse_application(APPLICATION.as_bytes()).unwrap();
        assert_eq!(app.self_href, "/ucwa/oauth/v1/applications/105");
        assert_eq!(
            app.events_href,
            "/ucwa/oauth/v1/applications/105/events?ack=1"
        );
        let me = app.me.unwrap();
        assert_eq!(me.uri.as_deref(), Some("sip:user@example.com"));
        assert_eq!(
            me.links["makeMeAvailable"],
            "/ucwa/oauth/v1/applications/105/me/makeMeAvailable"
        );
        assert!(!me.links.contains_key("presence"));
        assert_eq!(
            app.people_links["presenceSubscriptions"],
            "/ucwa/oauth/v1/applications/105/people/presenceSubscriptions"
        );
        assert_eq!(app.people_links.len(), 6);

        // After makeMeAvailable, `me` gains its presence links; PascalCase is accepted.
        let app = parse_application(
            br#"{"_links":{"self":{"href":"/a"},"events":{"href":"/a/events?ack=3"}},
                 "_embedded":{"Me":{"Uri":"sip:u@x","_links":{"presence":{"href":"/a/me/presence"},
                 "reportMyActivity":{"href":"/a/me/reportMyActivity"}}}}}"#,
        )
        .unwrap();
        let me = app.me.unwrap();
        assert_eq!(me.uri.as_deref(), Some("sip:u@x"));
        assert_eq!(me.links["presence"], "/a/me/presence");
        assert!(app.people_links.is_empty());

        let bare =
            parse_application(br#"{"_links":{"self":{"href":"/a"},"events":{"href":"/e"}}}"#)
                .unwrap();
        assert_eq!((bare.me, bare.people_links.len()), (None, 0));
        assert!(matches!(
            parse_application(br#"{"_links":{"events":{"href":"/e"}}}"#),
            Err(UcwaJsonError::Missing("_links.self"))
        ));
        assert!(matches!(
            parse_application(br#"{"_links":{"self":{"href":"/a"}}}"#),
            Err(UcwaJsonError::Missing("_links.events"))
        ));
        assert!(matches!(
            parse_application(ERROR.as_bytes()),
            Err(UcwaJsonError::Missing(_))
        ));
        for body in [
            &br#"{"_links":{"self":{"href":"/a"},"events":{"href":"/e"}},"_embedded":{"me":{"uri":5}}}"#[..],
            br#"{"_links":{"self":{"href":"/a"},"events":{"href":"/e"}},"_embedded":"me"}"#,
        ] {
            assert!(matches!(parse_application(body), Err(UcwaJsonError::Json(_))));
        }
    }

    #[test]
    fn events_sample() {
        let page = parse_events(EVENTS.as_bytes()).unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("/ucwa/oauth/v1/applications/105/events?ack=6")
        );
        assert_eq!((page.resume, page.resync, page.skipped), (None, None, 0));
        assert_eq!(
            page.events,
            [Event {
                sender_rel: "people".into(),
                sender_href: "/ucwa/oauth/v1/applications/105/people".into(),
                link_rel: "contactPresence".into(),
                link_href: "/ucwa/oauth/v1/applications/105/people/alice@example.com/presence"
                    .into(),
                in_rel: Some("contact".into()),
                in_href: Some("/ucwa/oauth/v1/applications/105/people/alice@example.com".into()),
                kind: "updated".into(),
                embedded: None,
                reason: None,
            }]
        );
    }

    #[test]
    fn events_expiring_subscription() {
        let page = parse_events(EVENTS_EXPIRING.as_bytes()).unwrap();
        assert_eq!(
            page.next.as_deref(),
            Some("/ucwa/v1/applications/101/events?ack=11")
        );
        let [ev] = &page.events[..] else {
            panic!("{page:?}")
        };
        assert_eq!(
            (ev.link_rel.as_str(), ev.kind.as_str()),
            ("presenceSubscription", "updated")
        );
        assert_eq!((&ev.in_rel, &ev.in_href), (&None, &None));
        let embedded = ev.embedded.as_ref().unwrap();
        assert_eq!(embedded["presenceSubscription"]["id"], "97b6bd66");
        // The embedded resource parses like a subscription body.
        let sub = parse_subscription(
            serde_json::to_vec(&embedded["presenceSubscription"])
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert_eq!(
            sub.self_href,
            "/ucwa/v1/applications/101/people/presenceSubscriptions/97b6bd66"
        );
    }

    #[test]
    fn events_repeated_senders_keep_order() {
        let page = parse_events(EVENTS_REPEATED.as_bytes()).unwrap();
        let got: Vec<(&str, &str, &str, Option<&str>)> = page
            .events
            .iter()
            .map(|e| {
                (
                    e.sender_rel.as_str(),
                    e.link_rel.as_str(),
                    e.kind.as_str(),
                    e.in_rel.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("people", "contact", "added", Some("subscribedContacts")),
                ("people", "presenceSubscription", "added", None),
                ("me", "presence", "added", None),
                ("people", "contactPresence", "updated", Some("contact")),
            ]
        );
        assert_eq!(
            page.events[2].sender_href,
            "/ucwa/oauth/v1/applications/101/me"
        );
        assert_eq!(
            user_from_href(&page.events[3].link_href).as_deref(),
            Some("sarad@contoso.com")
        );
    }

    #[test]
    fn events_continuations() {
        let page = parse_events(EVENTS_TIMEOUT.as_bytes()).unwrap();
        assert!(page.events.is_empty());
        assert_eq!(
            page.next.as_deref(),
            Some("/ucwa/oauth/v1/applications/101/events?ack=8")
        );
        let page = parse_events(EVENTS_RESUME.as_bytes()).unwrap();
        assert_eq!((page.next.as_deref(), page.resync.as_deref()), (None, None));
        assert_eq!(
            page.resume.as_deref(),
            Some("/ucwa/oauth/v1/applications/101/events?ack=8")
        );
        let page = parse_events(EVENTS_RESYNC.as_bytes()).unwrap();
        assert_eq!((page.next.as_deref(), page.resume.as_deref()), (None, None));
        assert_eq!(
            page.resync.as_deref(),
            Some("/ucwa/oauth/v1/applications/101/events?ack=1")
        );
        let page = parse_events(br#"{"_links":{"next":{"href":"/n"}},"sender":null}"#).unwrap();
        assert!(page.events.is_empty());
        let page = parse_events(br#"{"_links":{"next":{"href":"/n"}},"sender":[]}"#).unwrap();
        assert!(page.events.is_empty());
        let page =
            parse_events(br#"{"_links":{"next":{"href":"/n"}},"sender":[{"rel":"people"}]}"#)
                .unwrap();
        assert!(page.events.is_empty());
        for body in [
            &b"{}"[..],
            br#"{"_links":{"self":{"href":"/s"}}}"#,
            ERROR.as_bytes(),
        ] {
            assert!(matches!(
                parse_events(body),
                Err(UcwaJsonError::Missing("_links.next, resume or resync"))
            ));
        }
    }

    #[test]
    fn events_malformed_entries_are_skipped() {
        let body = br#"{"_links":{"next":{"href":"/n"}},"Sender":[{"Rel":"people","Href":"/p","Events":[
            {"link":{"rel":"contactPresence"},"type":"updated"},
            {"link":{"rel":"contactPresence","href":"/p/a@x/presence"}},
            {"link":{"rel":"contactPresence","href":5},"type":"updated"},
            {"link":{"rel":"contactPresence","href":"/p/a@x/presence"},"type":7},
            {"link":{"rel":"","href":"/p/a@x/presence"},"type":"updated"},
            {"link":{"rel":"contactPresence","href":"/p/a@x/presence"},"type":" "},
            "not an event", 17, null, [],
            {"Link":{"Rel":"contactNote","Href":"/p/a@x/note","title":"t"},"In":{"rel":"contact"},"Type":"Updated"},
            {"link":{"rel":"conversation","href":"/c/1"},"type":"completed",
             "reason":{"code":"Gone","Subcode":"InactiveApplicationExpired","message":5},"_embedded":null}
        ]}]}"#;
        let page = parse_events(body).unwrap();
        assert_eq!(page.skipped, 10);
        let [note, done] = &page.events[..] else {
            panic!("{page:?}")
        };
        assert_eq!(
            (note.sender_rel.as_str(), note.sender_href.as_str()),
            ("people", "/p")
        );
        assert_eq!(
            (
                note.link_rel.as_str(),
                note.link_href.as_str(),
                note.kind.as_str()
            ),
            ("contactNote", "/p/a@x/note", "updated")
        );
        // An `in` without an href is dropped, not the event.
        assert_eq!((&note.in_rel, &note.in_href), (&None, &None));
        assert_eq!(done.kind, "completed");
        assert_eq!(done.embedded, None);
        assert_eq!(
            done.reason,
            Some(UcwaErrorBody {
                code: Some("Gone".into()),
                subcode: Some("InactiveApplicationExpired".into()),
                message: None,
            })
        );
        // Structural errors fail the page.
        for body in [
            &br#"{"_links":{"next":{"href":"/n"}},"sender":{}}"#[..],
            br#"{"_links":{"next":{"href":"/n"}},"sender":[{"events":{}}]}"#,
            br#"{"_links":{"next":{"href":"/n"}},"sender":[{"rel":5,"events":[]}]}"#,
            br#"{"_links":{"next":{"href":"/n"}},"sender":["people"]}"#,
        ] {
            assert!(
                matches!(parse_events(body), Err(UcwaJsonError::Json(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn subscription_sample() {
        let sub = parse_subscription(SUBSCRIPTION.as_bytes()).unwrap();
        let memberships = "/ucwa/oauth/v1/applications/101/people/presenceSubscriptionMemberships?presenceSubscriptionId=97b6bd66";
        assert_eq!(
            sub,
            Subscription {
                self_href: "/ucwa/oauth/v1/applications/101/people/presenceSubscriptions/97b6bd66"
                    .into(),
                memberships: Some(memberships.into()),
                add_members: Some(memberships.into()),
            }
        );
        let bare = parse_subscription(br#"{"_links":{"self":{"href":"/s"}}}"#).unwrap();
        assert_eq!((bare.memberships, bare.add_members), (None, None));
        for body in [
            &br#"{"id":"1"}"#[..],
            br#"{"_links":{"memberships":{"href":"/m"}}}"#,
        ] {
            assert!(matches!(
                parse_subscription(body),
                Err(UcwaJsonError::Missing("_links.self"))
            ));
        }
    }

    #[test]
    fn presence_samples() {
        assert_eq!(
            parse_contact_presence(PRESENCE.as_bytes()).unwrap(),
            ContactPresence {
                availability: Some("Busy".into()),
                activity: Some("on-the-phone".into()),
                device_type: Some("PC".into()),
                last_active: Some(1_474_932_023_993),
                self_href: Some(
                    "/ucwa/oauth/v1/applications/105/people/alice@example.com/presence".into()
                ),
            }
        );
        assert_eq!(
            parse_contact_presence(PRESENCE_OFFLINE.as_bytes()).unwrap(),
            ContactPresence {
                availability: Some("Offline".into()),
                activity: None,
                device_type: Some("Unknown".into()),
                last_active: Some(1_358_827_096_000),
                self_href: Some(
                    "/ucwa/oauth/v1/applications/101/people/saraD@contoso.com/presence".into()
                ),
            }
        );
        #[rustfmt::skip]
        let rows: &[(&str, ContactPresence)] = &[
            ("{}", ContactPresence::default()),
            (r#"{"availability":null,"activity":null,"lastActive":null}"#, ContactPresence::default()),
            (r#"{"Availability":"Away","Activity":"off-work","DeviceType":"Mobile","LastActive":"/Date(5)/"}"#,
             ContactPresence { availability: Some("Away".into()), activity: Some("off-work".into()),
                               device_type: Some("Mobile".into()), last_active: Some(5), self_href: None }),
            (r#"{"lastActive":"yesterday"}"#, ContactPresence::default()),
            (r#"{"lastActive":1358827096000}"#, ContactPresence { last_active: Some(1_358_827_096_000), ..Default::default() }),
            (r#"{"lastActive":1.5e300}"#, ContactPresence::default()),
            (r#"{"availability":"Online","x":{"y":[1,2,{"z":null}]},"_embedded":{}}"#,
             ContactPresence { availability: Some("Online".into()), ..Default::default() }),
        ];
        for (body, want) in rows {
            assert_eq!(
                &parse_contact_presence(body.as_bytes()).unwrap(),
                want,
                "{body}"
            );
        }
        for body in [
            r#"{"availability":5}"#,
            r#"{"activity":["busy"]}"#,
            r#"{"deviceType":{}}"#,
            r#"{"lastActive":{"ms":5}}"#,
            r#"{"lastActive":true}"#,
            r#"{"_links":{"self":"x"},"availability":"Online","availability":"Busy"}"#,
            r#"{"availability":"Online","Availability":"Busy"}"#,
            r#"{"availability":"Online"} trailing"#,
            r#"{"availability":"Online""#,
        ] {
            assert!(
                matches!(
                    parse_contact_presence(body.as_bytes()),
                    Err(UcwaJsonError::Json(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn note_sample() {
        assert_eq!(
            parse_contact_note(NOTE.as_bytes()).unwrap().as_deref(),
            Some("Back at 3")
        );
        for (body, want) in [
            (
                r#"{"message":"OOF until Monday","type":"outOfOffice"}"#,
                Some("OOF until Monday"),
            ),
            (r#"{"Message":"x"}"#, Some("x")),
            (r#"{"message":""}"#, None),
            (r#"{"message":"  "}"#, None),
            (r#"{"message":null}"#, None),
            (r#"{"type":"personal"}"#, None),
        ] {
            assert_eq!(
                parse_contact_note(body.as_bytes()).unwrap().as_deref(),
                want,
                "{body}"
            );
        }
        assert!(parse_contact_note(br#"{"message":1}"#).is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            parse_error(ERROR.as_bytes()),
            UcwaErrorBody {
                code: Some("Conflict".into()),
                subcode: Some("AlreadyExists".into()),
                message: Some("The resource already exists.".into()),
            }
        );
        assert_eq!(
            parse_error(ERROR_NOT_FOUND.as_bytes()).subcode.as_deref(),
            Some("ApplicationNotFound")
        );
        assert_eq!(
            parse_error(br#"{"Code":"Gone","SubCode":"TooManyApplications"}"#),
            UcwaErrorBody {
                code: Some("Gone".into()),
                subcode: Some("TooManyApplications".into()),
                message: None,
            }
        );
        assert_eq!(
            parse_error(br#"{"code":"Conflict","subcode":7,"message":{"a":1}}"#),
            UcwaErrorBody {
                code: Some("Conflict".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            parse_error("\u{feff}{\"code\":\"BadRequest\"}".as_bytes())
                .code
                .as_deref(),
            Some("BadRequest")
        );
        for body in [
            &b""[..],
            b"<html><body>502 Bad Gateway</body></html>",
            b"<reason xmlns=\"http://schemas.microsoft.com/rtc/2012/03/ucwa\"><code>Gone</code></reason>",
            b"null",
            b"[]",
            b"\"code\"",
            b"{\"code\":",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_error(body), UcwaErrorBody::default());
        }
    }

    #[test]
    fn ms_dates() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<i64>)] = &[
            ("/Date(1358827096000)/",        Some(1_358_827_096_000)),
            ("/Date(1358827096000+0100)/",   Some(1_358_827_096_000)),
            ("/Date(1358827096000-0530)/",   Some(1_358_827_096_000)),
            ("\\/Date(1358827096000)\\/",    Some(1_358_827_096_000)),
            (" /Date(0)/ ",                  Some(0)),
            ("/Date(-1000)/",                Some(-1000)),
            ("/Date(-1000+0000)/",           Some(-1000)),
            ("/Date(9223372036854775807)/",  Some(i64::MAX)),
            ("/Date(9223372036854775808)/",  None),
            ("/Date()/",                     None),
            ("/Date(-)/",                    None),
            ("/Date(+5)/",                   None),
            ("/Date(5+01)/",                 None),
            ("/Date(5+01000)/",              None),
            ("/Date(5+01a0)/",               None),
            ("/Date(5++0100)/",              None),
            ("/Date(1.5)/",                  None),
            ("/Date(12 34)/",                None),
            ("/Date(1358827096000)",         None),
            ("Date(1358827096000)",          None),
            ("/date(1358827096000)/",        None),
            ("2013-01-22T04:38:16Z",         None),
            ("",                             None),
            ("/Date(٣)/",                    None),
            ("/Date(5+é000)/",               None),
        ];
        for (s, want) in rows {
            assert_eq!(parse_ms_date(s), *want, "{s:?}");
        }
    }

    #[test]
    fn users_from_hrefs() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            ("/ucwa/oauth/v1/applications/101/people/alice@example.com/presence", Some("alice@example.com")),
            ("/ucwa/oauth/v1/applications/101/people/sip:alice@example.com",      Some("alice@example.com")),
            ("/ucwa/v1/applications/101/people/saraD@Contoso.com/presence",       Some("sarad@contoso.com")),
            ("https://pool.example.com/ucwa/v1/applications/1/people/bob@example.com/note", Some("bob@example.com")),
            ("/ucwa/v1/applications/1/people/sip%3Aalice%40example.com/presence", Some("alice@example.com")),
            ("/ucwa/v1/applications/1/people/SIP:Alice@Example.com",              Some("alice@example.com")),
            ("/ucwa/v1/applications/1/people/j%C3%B6rg@example.com",              Some("jörg@example.com")),
            ("/ucwa/v1/applications/1/people/alice@example.com?x=1#f",            Some("alice@example.com")),
            ("http://people/ucwa/v1/applications/1/people/alice@example.com",     Some("alice@example.com")),
            ("/ucwa/v1/applications/1/People/alice@example.com",                  Some("alice@example.com")),
            ("/ucwa/oauth/v1/applications/101/people/282/contactPresence",        None),
            ("/ucwa/oauth/v1/applications/101/people/presenceSubscriptions/97b6bd66", None),
            ("/ucwa/oauth/v1/applications/101/people/subscribedContacts",         None),
            ("/ucwa/oauth/v1/applications/101/people",                            None),
            ("/ucwa/oauth/v1/applications/101/people/",                           None),
            ("/ucwa/oauth/v1/applications/101/me/presence",                       None),
            ("/ucwa/v1/applications/1/people/sip:",                               None),
            ("/ucwa/v1/applications/1/people/@example.com",                       None),
            ("/ucwa/v1/applications/1/people/alice@",                             None),
            ("/ucwa/v1/applications/1/people/alice%ZZ@example.com",               None),
            ("/ucwa/v1/applications/1/people/alice%4",                            None),
            ("/ucwa/v1/applications/1/people/alice%FF@example.com",               None),
            ("/ucwa/v1/applications/1/people/al%20ice@example.com",               None),
            ("/ucwa/v1/applications/1/people/al%0Aice@example.com",               None),
            ("",                                                                  None),
            ("people",                                                            None),
            ("%",                                                                 None),
            ("/people/é%",                                                        None),
        ];
        for (href, want) in rows {
            assert_eq!(user_from_href(href).as_deref(), *want, "{href}");
        }
    }

    #[test]
    fn request_bodies() {
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            application_body("presence-bridge/1.0", "6f1c0e4a-529b", "en-US"),
            r#"{"userAgent":"presence-bridge/1.0","endpointId":"6f1c0e4a-529b","culture":"en-US"}"#
        );
        assert_eq!(
            parse(application_body("a\"b\\c\n</x>", "\u{0}", "é")),
            json!({"userAgent":"a\"b\\c\n</x>","endpointId":"\u{0}","culture":"é"})
        );
        let uris = vec![
            "alice@example.com".to_string(),
            "sip:bob@example.com".to_string(),
            "SIP:carol@example.com".to_string(),
            "sips:dan@example.com".to_string(),
            " eve@example.com ".to_string(),
            "x\"@y".to_string(),
        ];
        assert_eq!(
            subscription_body(30, &uris[..2]),
            r#"{"duration":30,"uris":["sip:alice@example.com","sip:bob@example.com"]}"#
        );
        assert_eq!(
            parse(subscription_body(20, &uris)),
            json!({"duration":20,"uris":["sip:alice@example.com","sip:bob@example.com",
                "SIP:carol@example.com","sips:dan@example.com","sip:eve@example.com","sip:x\"@y"]})
        );
        for (asked, sent) in [
            (0, 10),
            (9, 10),
            (10, 10),
            (11, 11),
            (30, 30),
            (31, 30),
            (u32::MAX, 30),
        ] {
            assert_eq!(
                parse(subscription_body(asked, &[]))["duration"],
                sent,
                "{asked}"
            );
        }
        assert_eq!(subscription_body(10, &[]), r#"{"duration":10,"uris":[]}"#);
        assert_eq!(
            add_members_body(&["carol@example.com".to_string()]),
            r#"{"contactUris":["sip:carol@example.com"]}"#
        );
        assert_eq!(
            set_presence_body(Some("Busy")),
            r#"{"availability":"Busy"}"#
        );
        assert_eq!(set_presence_body(None), "");
        assert_eq!(
            parse(set_presence_body(Some("\"},\"x\":{"))),
            json!({"availability":"\"},\"x\":{"})
        );
        assert_eq!(
            make_me_available_body(),
            r#"{"signInAs":"Online","supportedModalities":["Messaging"],"supportedMessageFormats":["Plain"]}"#
        );
    }

    /// Every parser on `body`; none may panic.
    pub(crate) fn parse_all(body: &[u8]) {
        let _ = parse_links(body);
        let _ = parse_token(body);
        let _ = parse_application(body);
        let _ = parse_events(body);
        let _ = parse_contact_presence(body);
        let _ = parse_contact_note(body);
        let _ = parse_subscription(body);
        let _ = parse_error(body);
        let text = String::from_utf8_lossy(body);
        let _ = parse_oauth_challenge(&text);
        let _ = parse_ms_date(&text);
        let _ = user_from_href(&text);
    }

    fn all_results_are_json_errors(body: &[u8]) -> bool {
        let is_json = |r: Result<(), UcwaJsonError>| matches!(r, Err(UcwaJsonError::Json(_)));
        is_json(parse_links(body).map(drop))
            && is_json(parse_token(body).map(drop))
            && is_json(parse_application(body).map(drop))
            && is_json(parse_events(body).map(drop))
            && is_json(parse_contact_presence(body).map(drop))
            && is_json(parse_contact_note(body).map(drop))
            && is_json(parse_subscription(body).map(drop))
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        type Fails = fn(&[u8]) -> bool;
        let n = 10_000;
        let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        for nested in [&arrays, &objects] {
            // Where a value is materialized (links, `_embedded`, events, `reason`,
            // `lastActive`), serde_json's recursion limit (128) turns deep nesting into an
            // error; typed properties refuse an array or object at once.
            let next = r#""_links":{"next":{"href":"/n"}}"#;
            let rows: Vec<(String, bool, Fails)> = vec![
                (format!(r#"{{"_links":{nested}}}"#), true, |b| {
                    parse_links(b).is_err()
                }),
                (format!(r#"{{"_links":{{"self":{nested}}}}}"#), true, |b| {
                    parse_subscription(b).is_err()
                }),
                (format!(r#"{{"access_token":{nested}}}"#), false, |b| {
                    parse_token(b).is_err()
                }),
                (
                    format!(r#"{{"_embedded":{{"me":{{"_links":{nested}}}}}}}"#),
                    true,
                    |b| parse_application(b).is_err(),
                ),
                (format!(r#"{{"availability":{nested}}}"#), false, |b| {
                    parse_contact_presence(b).is_err()
                }),
                (format!(r#"{{"lastActive":{nested}}}"#), true, |b| {
                    parse_contact_presence(b).is_err()
                }),
                (format!(r#"{{"message":{nested}}}"#), false, |b| {
                    parse_contact_note(b).is_err()
                }),
                (format!(r#"{{{next},"sender":{nested}}}"#), false, |b| {
                    parse_events(b).is_err()
                }),
                (
                    format!(r#"{{{next},"sender":[{{"events":[{nested}]}}]}}"#),
                    true,
                    |b| parse_events(b).is_err(),
                ),
                (
                    format!(r#"{{{next},"sender":[{{"events":[{{"_embedded":{nested}}}]}}]}}"#),
                    true,
                    |b| parse_events(b).is_err(),
                ),
                (format!(r#"{{"code":{nested}}}"#), true, |b| {
                    parse_error(b) == UcwaErrorBody::default()
                }),
            ];
            for (body, recursion, fails) in rows {
                parse_all(body.as_bytes());
                assert!(fails(body.as_bytes()), "{}", &body[..60]);
                if recursion {
                    let err = serde_json::from_str::<Value>(&body).unwrap_err();
                    assert!(err.to_string().contains("recursion limit"), "{err}");
                }
            }
            let in_events = format!(r#"{{{next},"sender":[{{"events":[{nested}]}}]}}"#);
            let err = parse_events(in_events.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("recursion limit"), "{err}");
        }
        // Unknown properties are skipped by an iterative scanner: deep but well-formed
        // nesting there is accepted without recursion, unbalanced nesting is an error.
        let unknown = format!(r#"{{"x":{arrays},"y":{objects},"availability":"Busy"}}"#);
        assert_eq!(
            parse_contact_presence(unknown.as_bytes())
                .unwrap()
                .availability
                .as_deref(),
            Some("Busy")
        );
        assert!(matches!(
            parse_contact_presence(arrays.as_bytes()),
            Err(UcwaJsonError::NotAnObject)
        ));
        assert_eq!(
            parse_contact_presence(objects.as_bytes()).unwrap(),
            ContactPresence::default()
        );
        let unbalanced = format!(r#"{{"x":{}}}"#, "[".repeat(n));
        assert!(all_results_are_json_errors(unbalanced.as_bytes()));
        // Eight million levels in an unknown property, within the size cap: no stack used.
        let huge = format!(
            r#"{{"x":{}{},"availability":"Busy"}}"#,
            "[".repeat(MAX_BODY / 2 - 16),
            "]".repeat(MAX_BODY / 2 - 16)
        );
        assert!(huge.len() <= MAX_BODY);
        assert!(parse_contact_presence(huge.as_bytes()).is_ok());
    }

    #[test]
    fn size_cap() {
        let padded = |len: usize| {
            let mut body = br#"{"availability":"Busy","x":""#.to_vec();
            body.resize(len - 2, b'a');
            body.extend_from_slice(b"\"}");
            body
        };
        let at_cap = padded(MAX_BODY);
        assert_eq!(at_cap.len(), MAX_BODY);
        assert_eq!(
            parse_contact_presence(&at_cap)
                .unwrap()
                .availability
                .as_deref(),
            Some("Busy")
        );
        let over = padded(MAX_BODY + 1);
        for result in [
            parse_links(&over).map(drop),
            parse_token(&over).map(drop),
            parse_application(&over).map(drop),
            parse_events(&over).map(drop),
            parse_contact_presence(&over).map(drop),
            parse_contact_note(&over).map(drop),
            parse_subscription(&over).map(drop),
        ] {
            assert!(matches!(
                result,
                Err(UcwaJsonError::TooLarge { len, max: MAX_BODY }) if len == MAX_BODY + 1
            ));
        }
        let mut error = br#"{"code":"Gone","x":""#.to_vec();
        error.resize(MAX_BODY, b'a');
        error.extend_from_slice(b"\"}");
        assert_eq!(parse_error(&error), UcwaErrorBody::default());
        // A huge string value within the cap is kept as it is.
        let huge = format!("{{\"message\":\"{}\"}}", "n".repeat(MAX_BODY - 32));
        assert_eq!(
            parse_contact_note(huge.as_bytes()).unwrap().unwrap().len(),
            MAX_BODY - 32
        );
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let nasty: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b" ".to_vec(),
            b"{".to_vec(),
            b"}".to_vec(),
            b"null".to_vec(),
            b"true".to_vec(),
            b"0".to_vec(),
            b"\"x\"".to_vec(),
            b"[]".to_vec(),
            b"[{}]".to_vec(),
            b"[null,null,null,null,null]".to_vec(),
            b"{}".to_vec(),
            b"{\"_links\":null,\"_embedded\":null,\"sender\":null}".to_vec(),
            b"{\"a\":\"\\ud800\"}".to_vec(),
            b"{\"availability\":\"\\ud800\"}".to_vec(),
            b"{\"availability\":\"\\u0000\"}".to_vec(),
            b"{\"availability\":\"\xff\"}".to_vec(),
            b"{\"availability\":1e999999}".to_vec(),
            b"{\"lastActive\":-1e999}".to_vec(),
            b"{\"lastActive\":18446744073709551616}".to_vec(),
            b"{\"expires_in\":18446744073709551616,\"access_token\":\"x\"}".to_vec(),
            b"{\"availability\":\"Busy\",}".to_vec(),
            b"{'availability':'Busy'}".to_vec(),
            b"\xEF\xBB\xBF{\"availability\":\"Busy\"}".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
            b"\0\0\0\0".to_vec(),
            b"{\"_links\":{\"self\":{\"href\":\"/a\"},\"events\":{\"href\":\"/e\"}},\"_embedded\":{\"me\":[\"sip:x\",{}],\"people\":[{}]}}".to_vec(),
            b"{\"_links\":{\"next\":{\"href\":\"/n\"}},\"sender\":[{\"events\":[{\"link\":[\"contactPresence\",\"/p\"],\"type\":\"updated\"}]}]}".to_vec(),
            format!("{{\"_links\":{{{}\"self\":{{\"href\":\"/s\"}}}}}}", "\"x\":{},".repeat(100_000)).into_bytes(),
            format!("{{\"_links\":{{\"next\":{{\"href\":\"/n\"}}}},\"sender\":[{}{{}}]}}", "{\"events\":[]},".repeat(100_000)).into_bytes(),
            format!("{{\"availability\":\"{}\"}}", "\\u00e9".repeat(500_000)).into_bytes(),
            format!("{{\"availability\":{}1}}", "-".repeat(100)).into_bytes(),
            format!("{{\"lastActive\":\"/Date({})/\"}}", "9".repeat(100_000)).into_bytes(),
        ];
        for body in &nasty {
            parse_all(body);
        }
        for (_, sample) in SAMPLES {
            parse_all(sample.as_bytes());
            // Every prefix of every sample: truncated bodies are errors, not panics.
            for end in 0..sample.len() {
                if sample.is_char_boundary(end) {
                    parse_all(&sample.as_bytes()[..end]);
                }
            }
        }
        for body in &nasty[..11] {
            assert!(parse_contact_presence(body).is_err(), "{body:?}");
        }
        assert_eq!(
            parse_contact_presence(&nasty[23])
                .unwrap()
                .availability
                .as_deref(),
            Some("Busy")
        );
        let wide = parse_links(&nasty[28]).unwrap();
        assert_eq!(wide, links(&[("self", "/s")]));
        assert!(parse_events(&nasty[29]).unwrap().events.is_empty());
        assert_eq!(
            parse_contact_presence(&nasty[32]).unwrap().last_active,
            None
        );
    }
}
