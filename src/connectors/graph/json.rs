//! Microsoft Graph JSON bodies: parsing what Graph sends, building what we send.
//!
//! Bounded by construction: a body longer than [`MAX_BODY`] is refused before parsing;
//! serde_json refuses nesting deeper than 128 wherever a value is materialized and skips
//! unknown properties without recursion. Memory is a small multiple of the body; time is
//! linear in it.
//!
//! Strict where the connector depends on a value (a known property of the wrong type, a
//! body that is not a JSON object, a missing `id` are errors) and lenient where one bad item
//! must not block the rest: a malformed presence in a `value` array or a malformed change
//! notification is skipped (notifications count it in [`Notifications::skipped`]). Error
//! bodies never fail to parse ([`parse_error`]).
//!
//! Request bodies are serialized with serde_json, never concatenated, so every value is
//! escaped. Times are RFC 3339 in UTC (`2026-01-10T10:59:00.000Z`), parsed and formatted
//! here without a date library.

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Largest body parsed, in bytes. A getPresencesByUserId answer for 650 users is ~200 KiB.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Most ids in one getPresencesByUserId request or one presence subscription (§2.2, §3.1).
pub const MAX_IDS: usize = 650;

/// Why a Graph body could not be parsed (or a request body built).
#[derive(Debug, thiserror::Error)]
pub enum GraphJsonError {
    #[error("body of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("malformed or unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} is missing or empty")]
    Missing(&'static str),
    /// The token endpoint answered with an OAuth error (`invalid_client`, …).
    #[error("token request refused: {error}")]
    OAuth {
        error: String,
        description: Option<String>,
    },
    #[error("{n} ids in one request; Graph accepts 1 to {max}")]
    TooManyIds { n: usize, max: usize },
}

/// An Entra token (client credentials or refresh-token grant). `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Only for delegated grants with `offline_access`; Entra may rotate it on every refresh.
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One user's presence as Graph sends it (§2). Enum strings are kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphPresence {
    /// The user's Entra object id.
    pub id: String,
    pub availability: Option<String>,
    pub activity: Option<String>,
    /// `statusMessage.message.content`.
    pub status_message: Option<String>,
    /// `outOfOfficeSettings.isOutOfOffice`.
    pub out_of_office: Option<bool>,
    /// Compare as strings; higher = newer.
    pub sequence_number: Option<String>,
    /// `workLocation.workLocationType` (`office`, `remote`, …), or the value when a string.
    pub work_location: Option<String>,
}

/// One item of a change or lifecycle notification collection (§4.2, §5).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeNotification {
    pub subscription_id: String,
    pub client_state: Option<String>,
    /// `updated` for change notifications; `None` for lifecycle notifications.
    pub change_type: Option<String>,
    pub resource: Option<String>,
    /// The user id: `resourceData.id`, else parsed from `resource`.
    pub resource_id: Option<String>,
    /// `reauthorizationRequired`, `subscriptionRemoved`, `missed`.
    pub lifecycle_event: Option<String>,
    pub tenant_id: Option<String>,
    /// Rich notifications only; decrypted elsewhere (§4.5).
    pub encrypted_content: Option<Value>,
}

/// A `changeNotificationCollection`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notifications {
    pub items: Vec<ChangeNotification>,
    /// JWTs to validate (rich notifications only); non-string entries are dropped.
    pub validation_tokens: Vec<String>,
    /// Items left out: not an object, no `subscriptionId`, or a member of the wrong type.
    pub skipped: usize,
}

/// A subscription as created, renewed or read (§3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub expiration_date_time: String,
    pub resource: String,
    pub client_state: Option<String>,
}

/// `{"error":{"code":…,"message":…}}`. Branch on status + `code`, never on `message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Parsers

/// A token endpoint answer; an OAuth error body (`{"error":"invalid_grant",…}`) is
/// [`GraphJsonError::OAuth`].
pub fn parse_token(body: &[u8]) -> Result<Token, GraphJsonError> {
    #[derive(Deserialize)]
    struct Raw {
        access_token: Option<String>,
        #[serde(default, deserialize_with = "seconds")]
        expires_in: Option<u64>,
        refresh_token: Option<String>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let raw: Raw = from_body(body)?;
    if let Some(error) = non_empty(raw.error) {
        return Err(GraphJsonError::OAuth {
            error,
            description: non_empty(raw.error_description),
        });
    }
    Ok(Token {
        access_token: non_empty(raw.access_token).ok_or(GraphJsonError::Missing("access_token"))?,
        expires_in: raw
            .expires_in
            .ok_or(GraphJsonError::Missing("expires_in"))?,
        refresh_token: non_empty(raw.refresh_token),
    })
}

/// A getPresencesByUserId answer (`{"value":[…]}`) or a single presence object. Items of
/// `value` that are malformed or lack an `id` are skipped; match results by `id`.
pub fn parse_presences(body: &[u8]) -> Result<Vec<GraphPresence>, GraphJsonError> {
    #[derive(Deserialize)]
    struct Envelope {
        value: Option<Vec<Lenient<RawPresence>>>,
        #[serde(flatten)]
        single: RawPresence,
    }
    let env: Envelope = from_body(body)?;
    match env.value {
        Some(items) => Ok(items
            .into_iter()
            .filter_map(|l| l.0.and_then(RawPresence::into_presence))
            .collect()),
        None => env
            .single
            .into_presence()
            .map(|p| vec![p])
            .ok_or(GraphJsonError::Missing("value or id")),
    }
}

/// A change or lifecycle notification collection. Items are parsed one by one: a malformed
/// item is skipped and counted, the others are kept.
pub fn parse_notifications(body: &[u8]) -> Result<Notifications, GraphJsonError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        value: Option<Vec<Lenient<RawNotification>>>,
        validation_tokens: Option<Vec<Value>>,
    }
    let raw: Raw = from_body(body)?;
    let mut out = Notifications::default();
    for item in raw.value.ok_or(GraphJsonError::Missing("value"))? {
        match item.0.and_then(RawNotification::into_notification) {
            Some(n) => out.items.push(n),
            None => out.skipped += 1,
        }
    }
    out.validation_tokens = raw
        .validation_tokens
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            _ => None,
        })
        .collect();
    Ok(out)
}

/// A subscription (201 on create, 200 on PATCH/GET).
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, GraphJsonError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        id: Option<String>,
        expiration_date_time: Option<String>,
        resource: Option<String>,
        client_state: Option<String>,
    }
    let raw: Raw = from_body(body)?;
    Ok(Subscription {
        id: non_empty(raw.id).ok_or(GraphJsonError::Missing("id"))?,
        expiration_date_time: non_empty(raw.expiration_date_time)
            .ok_or(GraphJsonError::Missing("expirationDateTime"))?,
        resource: non_empty(raw.resource).ok_or(GraphJsonError::Missing("resource"))?,
        client_state: non_empty(raw.client_state),
    })
}

/// The Graph error envelope (§6). Never fails: non-JSON bodies and members of the wrong
/// type give `None`.
pub fn parse_error(body: &[u8]) -> GraphErrorBody {
    if body.len() > MAX_BODY {
        return GraphErrorBody::default();
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(strip_bom(body)) else {
        return GraphErrorBody::default();
    };
    let Some(Value::Object(err)) = map.get("error") else {
        return GraphErrorBody::default();
    };
    let text = |name: &str| match err.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    GraphErrorBody {
        code: text("code"),
        message: text("message"),
    }
}

/// `Retry-After` in (possibly fractional) seconds: `"2"`, `"2.128"`. An HTTP-date, a
/// negative or non-finite value, or anything else is `None` (use the own backoff).
pub fn parse_retry_after(header: &str) -> Option<Duration> {
    let s = header.trim();
    if s.is_empty()
        || s.len() > 32
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || !s.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: f64 = s.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// RFC 3339 (`2026-11-21T10:15:30.1234567Z`, `…+01:00`, `t`/space separator, lower-case
/// `z`) → milliseconds since the epoch, fraction truncated. Anything else is `None`, as is
/// an instant outside years 0000..=9999 in UTC (so [`format_rfc3339_ms`] round-trips).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 20 || b.len() > 64 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            Some(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        } else {
            None
        }
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    let ms = secs * 1000 + millis;
    // An offset can push 0000-01-01 or 9999-12-31 out of the four-digit UTC range.
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the range both directions cover.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds:
/// `2026-01-10T10:59:00.000Z`. Clamped to years 0000..=9999.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Seconds as an ISO 8601 duration: 5400 → `PT1H30M`, 0 → `PT0S`. Hours are not folded
/// into days (`PT24H`), as Graph's own samples do.
pub fn iso8601_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out += &format!("{h}H");
    }
    if m > 0 {
        out += &format!("{m}M");
    }
    if s > 0 || secs == 0 {
        out += &format!("{s}S");
    }
    out
}

/// The user id a notification's `resource` names: `communications/presences('{id}')`,
/// `communications/presences/{id}` or `users/{id}/presence` (leading `/` optional, prefixes
/// case-insensitive). A filtered collection or anything else is `None`.
pub fn user_id_from_resource(resource: &str) -> Option<String> {
    let r = resource.trim();
    let r = r.strip_prefix('/').unwrap_or(r);
    let id = if let Some(rest) = strip_prefix_ci(r, "communications/presences('") {
        rest.strip_suffix("')")?
    } else if let Some(rest) = strip_prefix_ci(r, "communications/presences/") {
        rest
    } else if let Some(rest) = strip_prefix_ci(r, "users/") {
        let (id, tail) = rest.split_once('/')?;
        if !tail.eq_ignore_ascii_case("presence") {
            return None;
        }
        id
    } else {
        return None;
    };
    let valid = !id.is_empty() && !id.contains(['/', '\'', '?', '(', ')', ' ']);
    valid.then(|| id.to_string())
}

// ---------------------------------------------------------------------------------------
// Request bodies

/// `/communications/presences?$filter=id in ('a','b')`: ids single-quoted, a `'` inside an
/// id doubled (OData string literal).
pub fn presence_filter_resource(ids: &[String]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .map(|id| format!("'{}'", id.replace('\'', "''")))
        .collect();
    format!(
        "/communications/presences?$filter=id in ({})",
        quoted.join(",")
    )
}

/// `POST /subscriptions` for presence (`changeType: updated`, basic notifications).
pub fn subscription_body(
    resource: &str,
    notification_url: &str,
    lifecycle_url: Option<&str>,
    client_state: &str,
    expiration_rfc3339: &str,
) -> String {
    let mut body = json!({
        "changeType": "updated",
        "notificationUrl": notification_url,
        "resource": resource,
        "expirationDateTime": expiration_rfc3339,
        "clientState": client_state,
        "includeResourceData": false,
        "latestSupportedTlsVersion": "v1_2",
    });
    if let Some(url) = lifecycle_url {
        body["lifecycleNotificationUrl"] = Value::from(url);
    }
    to_json(&body)
}

/// `PATCH /subscriptions/{id}`: renews (and reauthorizes).
pub fn renew_body(expiration_rfc3339: &str) -> String {
    to_json(&json!({ "expirationDateTime": expiration_rfc3339 }))
}

/// `POST /communications/getPresencesByUserId`; 1 to [`MAX_IDS`] ids.
pub fn get_presences_body(ids: &[String]) -> Result<String, GraphJsonError> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(GraphJsonError::TooManyIds {
            n: ids.len(),
            max: MAX_IDS,
        });
    }
    Ok(to_json(&json!({ "ids": ids })))
}

/// `POST /users/{id}/presence/setPresence`; `expiration` is an ISO 8601 duration
/// (PT5M..PT4H, Graph's default 5 min when `None`).
pub fn set_presence_body(
    session_id: &str,
    availability: &str,
    activity: &str,
    expiration: Option<&str>,
) -> String {
    let mut body = json!({
        "sessionId": session_id,
        "availability": availability,
        "activity": activity,
    });
    if let Some(e) = expiration {
        body["expirationDuration"] = Value::from(e);
    }
    to_json(&body)
}

/// `POST /users/{id}/presence/setUserPreferredPresence`; without `expiration` Graph keeps
/// it 1 day (Busy, DoNotDisturb) or 7 days.
pub fn set_preferred_presence_body(
    availability: &str,
    activity: &str,
    expiration: Option<&str>,
) -> String {
    let mut body = json!({ "availability": availability, "activity": activity });
    if let Some(e) = expiration {
        body["expirationDuration"] = Value::from(e);
    }
    to_json(&body)
}

/// `POST /users/{id}/presence/clearPresence`.
pub fn clear_presence_body(session_id: &str) -> String {
    to_json(&json!({ "sessionId": session_id }))
}

// ---------------------------------------------------------------------------------------
// Helpers

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPresence {
    id: Option<String>,
    availability: Option<String>,
    activity: Option<String>,
    status_message: Option<RawStatusMessage>,
    out_of_office_settings: Option<RawOof>,
    sequence_number: Option<String>,
    work_location: Option<Value>,
}

#[derive(Deserialize)]
struct RawStatusMessage {
    message: Option<RawItemBody>,
}

#[derive(Deserialize)]
struct RawItemBody {
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOof {
    is_out_of_office: Option<bool>,
}

impl RawPresence {
    fn into_presence(self) -> Option<GraphPresence> {
        let work_location = match self.work_location {
            Some(Value::String(s)) => Some(s),
            Some(Value::Object(o)) => match o.get("workLocationType") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        Some(GraphPresence {
            id: non_empty(self.id)?,
            availability: non_empty(self.availability),
            activity: non_empty(self.activity),
            status_message: non_empty(
                self.status_message
                    .and_then(|m| m.message)
                    .and_then(|b| b.content),
            ),
            out_of_office: self.out_of_office_settings.and_then(|o| o.is_out_of_office),
            sequence_number: non_empty(self.sequence_number),
            work_location: non_empty(work_location),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNotification {
    subscription_id: Option<String>,
    client_state: Option<String>,
    change_type: Option<String>,
    resource: Option<String>,
    resource_data: Option<RawResourceData>,
    lifecycle_event: Option<String>,
    tenant_id: Option<String>,
    encrypted_content: Option<Value>,
}

#[derive(Deserialize)]
struct RawResourceData {
    id: Option<String>,
}

impl RawNotification {
    fn into_notification(self) -> Option<ChangeNotification> {
        let resource = non_empty(self.resource);
        let resource_id = non_empty(self.resource_data.and_then(|d| d.id))
            .or_else(|| resource.as_deref().and_then(user_id_from_resource));
        Some(ChangeNotification {
            subscription_id: non_empty(self.subscription_id)?,
            client_state: self.client_state,
            change_type: non_empty(self.change_type),
            resource,
            resource_id,
            lifecycle_event: non_empty(self.lifecycle_event),
            tenant_id: non_empty(self.tenant_id),
            encrypted_content: self.encrypted_content.filter(|v| !v.is_null()),
        })
    }
}

/// `Some(T)` if the value deserializes as `T`, `None` otherwise; never an error (except
/// for JSON that is malformed or too deep, which fails the whole body).
struct Lenient<T>(Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Lenient(if value.is_object() {
            T::deserialize(value).ok()
        } else {
            None
        }))
    }
}

/// Size check, object check, then serde.
fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, GraphJsonError> {
    use crate::connectors::JsonBodyProblem as P;
    let body = crate::connectors::json_object_body(body, MAX_BODY).map_err(|p| match p {
        P::TooLarge { len, max } => GraphJsonError::TooLarge { len, max },
        P::NotAnObject => GraphJsonError::NotAnObject,
    })?;
    Ok(serde_json::from_slice(body)?)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("request bodies are plain strings")
}

use crate::connectors::{non_empty, strip_bom};

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TOKEN: &str = r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.secret"}"#;
    pub(crate) const TOKEN_DELEGATED: &str = r#"{"token_type":"Bearer","scope":"Presence.Read.All","expires_in":"4170","access_token":"eyJ0.a","refresh_token":"0.AR.refresh"}"#;
    pub(crate) const PRESENCES: &str = r#"{"value":[
        {"id":"fa8bf3dc-eca7-46b7-bad1-db199b62afc3","availability":"Busy","activity":"InAMeeting",
         "statusMessage":{"message":{"content":"In the lab","contentType":"text"},"publishedDateTime":"2026-01-10T10:00:00Z"},
         "outOfOfficeSettings":{"message":null,"isOutOfOffice":false},"sequenceNumber":"C78B3AA4C1E6C8B5",
         "workLocation":{"placeId":null,"source":"manual","workLocationType":"remote"}},
        {"id":"66825e03-7ef5-42da-9069-724602c31f6b","availability":"Away","activity":"Away",
         "outOfOfficeSettings":{"message":null,"isOutOfOffice":true}}]}"#;
    pub(crate) const PRESENCE_SINGLE: &str = r#"{"id":"fa8b","availability":"Busy","activity":"InAMeeting","statusMessage":null,"outOfOfficeSettings":{"message":null,"isOutOfOffice":false},"sequenceNumber":"1"}"#;
    pub(crate) const NOTIFICATION: &str = r##"{ "value": [ {
    "subscriptionId": "7f10", "clientState": "secret", "changeType": "updated",
    "tenantId": "84bd", "organizationId": "84bd",
    "resource": "communications/presences/u1",
    "subscriptionExpirationDateTime": "2026-01-10T10:59:00.0000000Z",
    "resourceData": { "@odata.id": "users/u1/presence",
                      "@odata.type": "#microsoft.graph.presence", "id": "u1" },
    "encryptedContent": { "data": "ZA==", "dataKey": "aw==", "dataSignature": "cw==",
                          "encryptionCertificateId": "c1", "encryptionCertificateThumbprint": "ab" }
  }, {"subscriptionId":"7f10","clientState":"secret","changeType":"updated",
      "resource":"communications/presences('u2')"} ],
  "validationTokens": [ "eyJ0.v1", 5 ] }"##;
    pub(crate) const LIFECYCLE: &str = r#"{ "value": [ { "subscriptionId": "7f10", "subscriptionExpirationDateTime": "2026-01-10T10:59:00.0000000Z", "tenantId": "84bd",
               "clientState": "secret", "lifecycleEvent": "reauthorizationRequired" } ] }"#;
    pub(crate) const SUBSCRIPTION: &str = r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","resource":"/communications/presences?$filter=id in ('fa8b','6682')",
        "applicationId":"app","changeType":"updated","clientState":"secret","notificationUrl":"https://b/graph/notify",
        "expirationDateTime":"2026-01-10T10:59:00.0000000Z","creatorId":"c","notificationContentType":"application/json"}"#;
    pub(crate) const ERROR: &str = r#"{"error":{"code":"TooManyRequests","message":"Too many requests","innerError":{"code":"429","date":"2026-01-10T10:00:00","request-id":"r","client-request-id":"c"}}}"#;

    pub(crate) const SAMPLES: &[(&str, &str)] = &[
        ("token", TOKEN),
        ("token_delegated", TOKEN_DELEGATED),
        ("presences", PRESENCES),
        ("presence_single", PRESENCE_SINGLE),
        ("notification", NOTIFICATION),
        ("lifecycle", LIFECYCLE),
        ("subscription", SUBSCRIPTION),
        ("error", ERROR),
    ];

    /// Every parser on `body`; none may panic.
    pub(crate) fn parse_all(body: &[u8]) {
        let _ = parse_token(body);
        let _ = parse_presences(body);
        let _ = parse_notifications(body);
        let _ = parse_subscription(body);
        let _ = parse_error(body);
        let text = String::from_utf8_lossy(body);
        let _ = parse_retry_after(&text);
        let _ = parse_rfc3339_ms(&text);
        let _ = user_id_from_resource(&text);
    }

    #[test]
    fn token_samples() {
        let t = parse_token(TOKEN.as_bytes()).unwrap();
        assert_eq!(
            (t.access_token.as_str(), t.expires_in),
            ("eyJ0eXAi.secret", 3599)
        );
        assert_eq!(t.refresh_token, None);
        let t = parse_token(TOKEN_DELEGATED.as_bytes()).unwrap();
        assert_eq!(t.expires_in, 4170);
        assert_eq!(t.refresh_token.as_deref(), Some("0.AR.refresh"));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("eyJ0") && !dbg.contains("0.AR"), "{dbg}");
        match parse_token(br#"{"error":"invalid_grant","error_description":"AADSTS70000"}"#) {
            Err(GraphJsonError::OAuth { error, description }) => {
                assert_eq!(error, "invalid_grant");
                assert_eq!(description.as_deref(), Some("AADSTS70000"));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"expires_in":1}"#,
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"","expires_in":1}"#,
            r#"{"access_token":5,"expires_in":1}"#,
            r#"{"access_token":"a","expires_in":-1}"#,
            r#"{"access_token":"a","expires_in":1.5}"#,
            r#"["access_token"]"#,
            "",
        ] {
            assert!(parse_token(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_samples() {
        let ps = parse_presences(PRESENCES.as_bytes()).unwrap();
        assert_eq!(
            ps[0],
            GraphPresence {
                id: "fa8bf3dc-eca7-46b7-bad1-db199b62afc3".into(),
                availability: Some("Busy".into()),
                activity: Some("InAMeeting".into()),
                status_message: Some("In the lab".into()),
                out_of_office: Some(false),
                sequence_number: Some("C78B3AA4C1E6C8B5".into()),
                work_location: Some("remote".into()),
            }
        );
        assert_eq!(ps[1].out_of_office, Some(true));
        assert_eq!(ps[1].status_message, None);
        assert_eq!(ps.len(), 2);
        let one = parse_presences(PRESENCE_SINGLE.as_bytes()).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, "fa8b");
        assert_eq!(one[0].sequence_number.as_deref(), Some("1"));
        // Malformed items in `value` are skipped; the rest stays.
        let mixed = br#"{"value":[1,{"availability":"Busy"},{"id":"a","availability":5},{"id":"b","workLocation":"office"},{"id":" "}]}"#;
        let ps = parse_presences(mixed).unwrap();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].work_location.as_deref(), Some("office"));
        assert!(parse_presences(br#"{"value":[]}"#).unwrap().is_empty());
        for bad in [
            r#"{"value":{}}"#,
            r#"{"value":"x"}"#,
            r#"{}"#,
            r#"{"availability":"Busy"}"#,
            r#"{"id":"a","availability":["Busy"]}"#,
            r#"{"id":"a","outOfOfficeSettings":{"isOutOfOffice":"yes"}}"#,
            r#"[{"id":"a"}]"#,
            "null",
            "{",
        ] {
            assert!(parse_presences(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn notification_samples() {
        let n = parse_notifications(NOTIFICATION.as_bytes()).unwrap();
        assert_eq!(n.skipped, 0);
        assert_eq!(n.validation_tokens, vec!["eyJ0.v1".to_string()]);
        let first = &n.items[0];
        assert_eq!(first.subscription_id, "7f10");
        assert_eq!(first.client_state.as_deref(), Some("secret"));
        assert_eq!(first.change_type.as_deref(), Some("updated"));
        assert_eq!(first.tenant_id.as_deref(), Some("84bd"));
        assert_eq!(first.resource_id.as_deref(), Some("u1"));
        assert_eq!(first.lifecycle_event, None);
        assert_eq!(first.encrypted_content.as_ref().unwrap()["dataKey"], "aw==");
        assert_eq!(n.items[1].resource_id.as_deref(), Some("u2"));
        assert_eq!(n.items[1].encrypted_content, None);

        let l = parse_notifications(LIFECYCLE.as_bytes()).unwrap();
        assert_eq!(l.items.len(), 1);
        assert_eq!(
            l.items[0].lifecycle_event.as_deref(),
            Some("reauthorizationRequired")
        );
        assert_eq!(
            (
                l.items[0].change_type.as_ref(),
                l.items[0].resource_id.as_ref()
            ),
            (None, None)
        );
        assert!(l.validation_tokens.is_empty());

        let mixed = br#"{"value":[1,"x",{"clientState":"s"},{"subscriptionId":5},{"subscriptionId":"s","resource":[]},{"subscriptionId":"ok"}]}"#;
        let m = parse_notifications(mixed).unwrap();
        assert_eq!((m.items.len(), m.skipped), (1, 5));
        for bad in [
            r#"{}"#,
            r#"{"value":{}}"#,
            r#"[]"#,
            r#"{"value":[],"validationTokens":"x"}"#,
        ] {
            assert!(parse_notifications(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_ids() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            ("communications/presences/u1", Some("u1")),
            ("/communications/presences/u1", Some("u1")),
            ("communications/presences('u1')", Some("u1")),
            ("Communications/Presences('u1')", Some("u1")),
            ("users/u1/presence", Some("u1")),
            ("/users/u1/Presence", Some("u1")),
            ("/communications/presences?$filter=id in ('a','b')", None),
            ("communications/presences('a','b')", None),
            ("communications/presences('')", None),
            ("communications/presences/", None),
            ("communications/presences/a/b", None),
            ("users/u1/calendar", None),
            ("", None),
            ("é", None),
        ];
        for (r, want) in rows {
            assert_eq!(user_id_from_resource(r).as_deref(), *want, "{r}");
        }
    }

    #[test]
    fn subscription_and_error_samples() {
        let s = parse_subscription(SUBSCRIPTION.as_bytes()).unwrap();
        assert_eq!(s.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
        assert_eq!(s.expiration_date_time, "2026-01-10T10:59:00.0000000Z");
        assert_eq!(
            s.resource,
            "/communications/presences?$filter=id in ('fa8b','6682')"
        );
        assert_eq!(s.client_state.as_deref(), Some("secret"));
        assert!(parse_subscription(br#"{"id":"a","resource":"r"}"#).is_err());
        assert!(
            parse_subscription(br#"{"id":1,"resource":"r","expirationDateTime":"x"}"#).is_err()
        );

        let e = parse_error(ERROR.as_bytes());
        assert_eq!(e.code.as_deref(), Some("TooManyRequests"));
        assert_eq!(e.message.as_deref(), Some("Too many requests"));
        for junk in [
            "",
            "<html>",
            "[]",
            r#"{"error":"x"}"#,
            r#"{"error":{"code":5}}"#,
            r#"{"code":"X"}"#,
        ] {
            assert_eq!(
                parse_error(junk.as_bytes()),
                GraphErrorBody::default(),
                "{junk}"
            );
        }
    }

    #[test]
    fn retry_after() {
        let ms = |s: &str| parse_retry_after(s).map(|d| d.as_millis());
        assert_eq!(ms("1.5"), Some(1500));
        assert_eq!(ms("2"), Some(2000));
        assert_eq!(ms(" 2.128 "), Some(2128));
        assert_eq!(ms("0"), Some(0));
        for bad in [
            "",
            "garbage",
            "-1",
            "1e3",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            ".",
            "1.2.3",
            "inf",
            "NaN",
            "99999999999999999999999",
        ] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:00.001Z", Some(1)),
            ("2026-11-21T10:15:30.1234567Z", Some(1_795_256_130_123)),
            ("2026-11-21T11:15:30.1234567+01:00", Some(1_795_256_130_123)),
            ("2026-11-21T05:15:30.123-05:00", Some(1_795_256_130_123)),
            ("2026-11-21t10:15:30.1z", Some(1_795_256_130_100)),
            ("2026-11-21 10:15:30Z", Some(1_795_256_130_000)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000)),
            ("1969-12-31T23:59:59.999Z", Some(-1)),
            ("2026-06-30T23:59:60Z", Some(1_782_864_000_000)),
            ("0000-01-01T00:00:00+00:01", None),
            ("9999-12-31T23:59:59-00:01", None),
            ("0000-01-01T00:00:00-00:01", Some(-62_167_219_140_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-21T24:00:00Z", None),
            ("2026-11-21T10:15:30", None),
            ("2026-11-21T10:15:30.Z", None),
            ("2026-11-21T10:15:30+0100", None),
            ("2026-11-21T10:15:30+24:00", None),
            ("2026-11-21T10:15:30ZZ", None),
            ("+026-11-21T10:15:30Z", None),
            ("2026-1é-21T10:15:30Z", None),
            ("", None),
        ];
        for (s, want) in rows {
            assert_eq!(parse_rfc3339_ms(s), *want, "{s}");
        }
        for ms in [
            0,
            1,
            -1,
            1_795_256_130_123,
            951_782_400_000,
            253_402_300_799_999,
            -62_167_219_200_000,
        ] {
            let s = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
        assert_eq!(
            format_rfc3339_ms(1_795_256_130_123),
            "2026-11-21T10:15:30.123Z"
        );
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339_ms(&"9".repeat(10_000)), None);
    }

    #[test]
    fn durations() {
        for (secs, want) in [
            (0, "PT0S"),
            (45, "PT45S"),
            (300, "PT5M"),
            (3600, "PT1H"),
            (5400, "PT1H30M"),
            (3661, "PT1H1M1S"),
            (14_400, "PT4H"),
            (86_400, "PT24H"),
        ] {
            assert_eq!(iso8601_duration(secs), want);
        }
    }

    #[test]
    fn request_bodies() {
        let ids = vec!["a".to_string(), "o'brien".to_string()];
        assert_eq!(
            presence_filter_resource(&ids),
            "/communications/presences?$filter=id in ('a','o''brien')"
        );
        let v: Value = serde_json::from_str(&subscription_body(
            "/communications/presences?$filter=id in ('a')",
            "https://b/n?tenant=\"t\"",
            Some("https://b/l"),
            "s3cr\"et",
            "2026-01-10T10:59:00.000Z",
        ))
        .unwrap();
        assert_eq!(v["changeType"], "updated");
        assert_eq!(v["notificationUrl"], "https://b/n?tenant=\"t\"");
        assert_eq!(v["lifecycleNotificationUrl"], "https://b/l");
        assert_eq!(v["clientState"], "s3cr\"et");
        assert_eq!(v["expirationDateTime"], "2026-01-10T10:59:00.000Z");
        let v: Value = serde_json::from_str(&subscription_body("r", "n", None, "c", "e")).unwrap();
        assert!(v.get("lifecycleNotificationUrl").is_none());
        assert_eq!(renew_body("x"), r#"{"expirationDateTime":"x"}"#);
        assert_eq!(
            get_presences_body(&ids).unwrap(),
            r#"{"ids":["a","o'brien"]}"#
        );
        assert!(get_presences_body(&vec!["x".to_string(); 650]).is_ok());
        assert!(matches!(
            get_presences_body(&vec!["x".to_string(); 651]),
            Err(GraphJsonError::TooManyIds { n: 651, max: 650 })
        ));
        assert!(get_presences_body(&[]).is_err());
        let v: Value =
            serde_json::from_str(&set_presence_body("app", "Busy", "InACall", Some("PT1H")))
                .unwrap();
        assert_eq!(
            v,
            json!({"sessionId":"app","availability":"Busy","activity":"InACall","expirationDuration":"PT1H"})
        );
        let v: Value =
            serde_json::from_str(&set_preferred_presence_body("Offline", "OffWork", None)).unwrap();
        assert_eq!(v, json!({"availability":"Offline","activity":"OffWork"}));
        assert_eq!(clear_presence_body("a\"pp"), r#"{"sessionId":"a\"pp"}"#);
    }

    #[test]
    fn samples_parse_without_panic() {
        for (_, s) in SAMPLES {
            parse_all(s.as_bytes());
        }
    }

    #[test]
    fn hostile_inputs() {
        let n = 10_000;
        let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        for nested in [&arrays, &objects] {
            for body in [
                format!(r#"{{"value":{nested}}}"#),
                format!(r#"{{"value":[{nested}]}}"#),
                format!(r#"{{"id":"a","availability":{nested}}}"#),
                format!(r#"{{"access_token":{nested},"expires_in":1}}"#),
                format!(r#"{{"value":[{{"subscriptionId":"s","encryptedContent":{nested}}}]}}"#),
                format!(r#"{{"id":{nested}}}"#),
            ] {
                parse_all(body.as_bytes());
                assert!(parse_presences(body.as_bytes()).is_err());
                assert!(parse_notifications(body.as_bytes()).is_err());
                assert!(parse_token(body.as_bytes()).is_err());
                assert!(parse_subscription(body.as_bytes()).is_err());
            }
            parse_all(nested.as_bytes());
        }
        let over = vec![b' '; MAX_BODY + 1];
        assert!(matches!(
            parse_presences(&over),
            Err(GraphJsonError::TooLarge { .. })
        ));
        assert_eq!(parse_error(&over), GraphErrorBody::default());
        let huge = format!(
            r#"{{"id":"a","availability":"{}"}}"#,
            "x".repeat(MAX_BODY - 64)
        );
        assert_eq!(
            parse_presences(huge.as_bytes()).unwrap()[0]
                .availability
                .as_ref()
                .map(String::len),
            Some(MAX_BODY - 64)
        );
        for junk in [
            &b"\xff\xfe"[..],
            b"\xEF\xBB\xBF{\"id\":\"a\"}",
            b"{\"id\":\"\\ud800\"}",
            b"\0",
        ] {
            parse_all(junk);
        }
        assert_eq!(
            parse_presences(b"\xEF\xBB\xBF{\"id\":\"a\"}").unwrap()[0].id,
            "a"
        );
    }
}
