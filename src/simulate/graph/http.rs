//! The routes: token endpoint, presence reads, subscriptions (with the validation
//! handshake), and the Graph / AAD error bodies.

use super::core::{bump, gerr, GraphError, Principal, MAX_IDS, MAX_LIFETIME, MIN_LIFETIME};
use super::util::{form_get, guid, parse_form, parse_time, pct_decode, pct_encode};
use super::Shared;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

type Reply = Result<Response, GraphError>;

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    bump(&shared.counters.requests);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|s| s.trim().to_owned());
    let body = axum::body::to_bytes(req.into_body(), 8 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();

    let resp = if let Some(rest) = path.strip_suffix("/oauth2/v2.0/token") {
        if method == Method::POST {
            token(&shared, rest.trim_start_matches('/'), &body)
        } else {
            Err(gerr(405, "MethodNotAllowed", "Use POST."))
        }
    } else if let Some(rest) = path.strip_prefix("/v1.0/") {
        graph(
            &shared,
            &method,
            rest,
            query.as_deref(),
            bearer.as_deref(),
            &body,
        )
        .await
    } else {
        Err(gerr(
            400,
            "BadRequest",
            format!("Invalid version or path: {path}"),
        ))
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => error_response(&shared, &e),
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        bump(&shared.counters.errors);
    }
    resp
}

fn json_response(status: u16, v: &Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        v.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// The Graph error envelope (§6).
fn error_response(shared: &Shared, e: &GraphError) -> Response {
    let now = shared.clock.now();
    let rid = shared.with(|core, _| guid(&mut core.rng));
    let mut r = json_response(
        e.status,
        &json!({ "error": {
            "code": e.code,
            "message": e.message,
            "innerError": {
                "code": e.status.to_string(),
                "date": humantime::format_rfc3339_seconds(now).to_string(),
                "request-id": rid,
                "client-request-id": rid,
            }
        }}),
    );
    if let Some(ra) = &e.retry_after {
        if let Ok(v) = HeaderValue::from_str(ra) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

// ---- token endpoint (§1) ----

fn aad_error(shared: &Shared, status: u16, error: &str, code: u32, desc: &str) -> Response {
    bump(&shared.counters.token_failures);
    let now = shared.clock.now();
    let (trace, corr) = shared.with(|core, _| (guid(&mut core.rng), guid(&mut core.rng)));
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {desc} Trace ID: {trace} Correlation ID: {corr} Timestamp: {}", humantime::format_rfc3339_seconds(now)),
            "error_codes": [code],
            "timestamp": humantime::format_rfc3339_seconds(now).to_string(),
            "trace_id": trace,
            "correlation_id": corr,
        }),
    )
}

fn token(shared: &Shared, tenant: &str, body: &str) -> Reply {
    let cfg = &shared.cfg;
    let tenant_id = shared.with(|core, _| core.tenant_id.clone());
    if tenant != cfg.tenant && tenant != tenant_id && tenant != "organizations" {
        return Ok(aad_error(
            shared,
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        ));
    }
    let form = parse_form(body);
    let get = |k| form_get(&form, k);
    let (Some(grant), Some(client)) = (get("grant_type"), get("client_id")) else {
        return Ok(aad_error(
            shared,
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type' and 'client_id'.",
        ));
    };
    if client != cfg.client_id {
        return Ok(aad_error(
            shared,
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client}' was not found in the directory."),
        ));
    }
    let secret_ok = get("client_secret") == Some(cfg.client_secret.as_str());
    let scope = get("scope").unwrap_or("").to_owned();
    let now = shared.clock.now();
    let who = match grant {
        "client_credentials" => {
            if !secret_ok {
                return Ok(aad_error(
                    shared,
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                ));
            }
            if !scope.ends_with("/.default") {
                return Ok(aad_error(shared, 400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."));
            }
            Principal::App
        }
        "password" | "refresh_token" => {
            if get("client_secret").is_some() && !secret_ok {
                return Ok(aad_error(
                    shared,
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                ));
            }
            let user = if grant == "password" {
                let (Some(name), Some(pw)) = (get("username"), get("password")) else {
                    return Ok(aad_error(shared, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'username' and 'password'."));
                };
                let u = shared.with(|core, _| core.user_by_upn(name));
                match u {
                    Some(u) if pw == cfg.user_password => u,
                    _ => {
                        return Ok(aad_error(
                            shared,
                            400,
                            "invalid_grant",
                            50126,
                            "Error validating credentials due to invalid username or password.",
                        ))
                    }
                }
            } else {
                let rt = get("refresh_token").unwrap_or("");
                match shared.with(|core, _| core.redeem_refresh(rt)) {
                    Some(u) => u,
                    None => {
                        return Ok(aad_error(
                            shared,
                            400,
                            "invalid_grant",
                            9002313,
                            "Invalid request. Request is malformed or invalid (refresh token).",
                        ))
                    }
                }
            };
            Principal::User(user)
        }
        other => {
            return Ok(aad_error(
                shared,
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    };
    let delegated = matches!(who, Principal::User(_));
    let offline = scope.split_whitespace().any(|s| s == "offline_access");
    let (tok, rt) = shared.with(|core, _| core.issue(who, delegated && offline, now));
    let secs = cfg.token_lifetime.as_secs();
    let mut v = json!({
        "token_type": "Bearer",
        "expires_in": secs,
        "ext_expires_in": secs,
        "access_token": tok,
    });
    if delegated {
        v["scope"] = json!(if scope.is_empty() {
            "https://graph.microsoft.com/.default".to_owned()
        } else {
            scope
        });
    }
    if let Some(rt) = rt {
        v["refresh_token"] = json!(rt);
    }
    Ok(json_response(200, &v))
}

// ---- Graph ----

async fn graph(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    bearer: Option<&str>,
    body: &str,
) -> Reply {
    let who = shared.with(|core, now| core.auth(bearer, now))?;
    let seg: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["users", id, "presence"]) | ("GET", ["communications", "presences", id]) => {
            read_one(shared, id)
        }
        ("GET", ["me", "presence"]) => match who {
            Principal::User(u) => {
                let id = shared.with(|core, _| core.users[u].id.clone());
                read_one(shared, &id)
            }
            Principal::App => Err(gerr(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            )),
        },
        ("POST", ["users", id, "presence", action]) => {
            let v = if body.trim().is_empty() {
                json!({})
            } else {
                parse_json(body)?
            };
            shared.with(|core, now| {
                let u = core.user_index(id).ok_or_else(|| {
                    gerr(
                        404,
                        "ResourceNotFound",
                        format!("User '{id}' was not found."),
                    )
                })?;
                super::writes::write(core, &who, u, action, &v, now)
            })?;
            Ok(StatusCode::OK.into_response())
        }
        ("POST", ["communications", "getPresencesByUserId"]) => read_many(shared, body),
        ("POST", ["subscriptions"]) => create_sub(shared, &who, body).await,
        ("GET", ["subscriptions"]) => {
            let v: Vec<Value> = shared.with(|core, _| {
                let mut ids: Vec<String> = core.subs.keys().cloned().collect();
                ids.sort();
                ids.iter().map(|id| core.sub_json(id)).collect()
            });
            Ok(json_response(
                200,
                &json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions",
                    "value": v,
                }),
            ))
        }
        ("GET", ["subscriptions", id]) => shared.with(|core, now| {
            core.live_sub(id, now)?;
            let mut v = core.sub_json(id);
            v["@odata.context"] =
                json!("https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity");
            Ok(json_response(200, &v))
        }),
        ("PATCH", ["subscriptions", id]) => {
            need_delegated(&who)?;
            let v: Value = parse_json(body)?;
            let now = shared.clock.now();
            let exp = match v.get("expirationDateTime") {
                Some(e) => Some(expiry(e, now)?),
                None => None,
            };
            let new_url = v.get("notificationUrl").and_then(Value::as_str);
            let old_url = shared
                .with(|core, now| core.live_sub(id, now).map(|s| s.notification_url.clone()))?;
            if let Some(u) = new_url.filter(|u| *u != old_url) {
                check_scheme(shared, u)?;
                validate(shared, u).await?;
            }
            shared.with(|core, now| {
                let s = core.live_sub(id, now)?;
                if let Some(u) = v.get("notificationUrl").and_then(Value::as_str) {
                    s.notification_url = u.to_owned();
                }
                let exp = exp.unwrap_or(s.expires);
                let mut v = core.renew(id, exp, now)?;
                v["@odata.context"] =
                    json!("https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity");
                Ok(json_response(200, &v))
            })
        }
        ("POST", ["subscriptions", id, "reauthorize"]) => {
            need_delegated(&who)?;
            shared.with(|core, now| core.reauthorize(id, now))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("DELETE", ["subscriptions", id]) => shared.with(|core, now| {
            core.live_sub(id, now)?;
            core.subs.remove(*id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }),
        _ => {
            let _ = query;
            Err(gerr(
                400,
                "BadRequest",
                format!(
                    "Resource not found for the segment '{}'.",
                    seg.first().copied().unwrap_or("")
                ),
            ))
        }
    }
}

fn need_delegated(who: &Principal) -> Result<(), GraphError> {
    match who {
        Principal::User(_) => Ok(()),
        Principal::App => Err(gerr(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: Application permission is not supported for presence subscriptions; use a delegated token.]")),
    }
}

fn parse_json(body: &str) -> Result<Value, GraphError> {
    serde_json::from_str(body).map_err(|e| {
        gerr(
            400,
            "BadRequest",
            format!("Unable to read JSON request payload: {e}"),
        )
    })
}

fn read_one(shared: &Shared, id: &str) -> Reply {
    shared.with(|core, now| {
        core.charge_read(now)?;
        match core.user_index(id) {
            Some(u) => {
                let mut v = core.users[u].to_json();
                v["@odata.context"] = json!(format!(
                    "https://graph.microsoft.com/v1.0/$metadata#users('{id}')/presence/$entity"
                ));
                Ok(json_response(200, &v))
            }
            None => Err(gerr(
                404,
                "ResourceNotFound",
                format!("User '{id}' was not found."),
            )),
        }
    })
}

fn read_many(shared: &Shared, body: &str) -> Reply {
    let v = parse_json(body)?;
    let Some(ids) = v.get("ids").and_then(Value::as_array) else {
        return Err(gerr(400, "BadRequest", "The 'ids' parameter is required."));
    };
    if ids.len() > MAX_IDS {
        return Err(gerr(
            400,
            "BadRequest",
            format!("The number of ids exceeds the maximum of {MAX_IDS}."),
        ));
    }
    let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
    shared.with(|core, now| {
        core.charge_read(now)?;
        let value: Vec<Value> = ids
            .iter()
            .filter_map(|id| core.user_index(id))
            .map(|u| core.users[u].to_json())
            .collect();
        Ok(json_response(200, &json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)",
            "value": value,
        })))
    })
}

// ---- subscriptions (§3) ----

/// Requested expiry → stored expiry: < now+45 min raised, > now+60 min refused.
fn expiry(v: &Value, now: SystemTime) -> Result<SystemTime, GraphError> {
    let t = v.as_str().and_then(parse_time).ok_or_else(|| {
        gerr(
            400,
            "InvalidRequest",
            "expirationDateTime is missing or invalid.",
        )
    })?;
    if t > now + MAX_LIFETIME + Duration::from_secs(1) {
        return Err(gerr(
            400,
            "InvalidRequest",
            "Subscription expiration can only be 60 minutes in the future.",
        ));
    }
    Ok(t.max(now + MIN_LIFETIME))
}

/// The ids of a presence resource (both forms of §3.1), unquoted ids refused.
pub fn parse_resource(resource: &str) -> Result<Vec<String>, GraphError> {
    let bad = |m: &str| gerr(400, "InvalidRequest", m.to_owned());
    let r = pct_decode(resource.trim());
    let r = r.trim_start_matches('/');
    let Some(rest) = r.strip_prefix("communications/presences") else {
        return Err(bad("Unsupported resource for this API."));
    };
    if let Some(id) = rest.strip_prefix('/') {
        if id.is_empty() || id.contains(['/', '?', '\'']) {
            return Err(bad("Invalid resource."));
        }
        return Ok(vec![id.to_owned()]);
    }
    let filter = rest
        .strip_prefix("?$filter=")
        .ok_or_else(|| bad("Invalid resource."))?
        .trim();
    let list = filter
        .strip_prefix("id in")
        .map(str::trim)
        .and_then(|l| l.strip_prefix('('))
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| bad("Invalid filter clause."))?;
    let mut ids = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let id = item
            .strip_prefix('\'')
            .and_then(|i| i.strip_suffix('\''))
            .filter(|i| !i.is_empty() && !i.contains('\''))
            .ok_or_else(|| bad("Invalid filter clause: ids must be single-quoted."))?;
        if !ids.iter().any(|x: &String| x.eq_ignore_ascii_case(id)) {
            ids.push(id.to_owned());
        }
    }
    if ids.len() > MAX_IDS {
        return Err(bad(
            "Too many ids in the filter: at most 650 users per subscription.",
        ));
    }
    Ok(ids)
}

async fn create_sub(shared: &Arc<Shared>, who: &Principal, body: &str) -> Reply {
    need_delegated(who)?;
    let Principal::User(creator) = *who else {
        unreachable!()
    };
    let v = parse_json(body)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    if s("changeType").as_deref() != Some("updated") {
        return Err(gerr(
            400,
            "InvalidRequest",
            "changeType must be 'updated' for presence.",
        ));
    }
    let resource =
        s("resource").ok_or_else(|| gerr(400, "InvalidRequest", "resource is required."))?;
    let ids = parse_resource(&resource)?;
    let url = s("notificationUrl")
        .ok_or_else(|| gerr(400, "InvalidRequest", "notificationUrl is required."))?;
    let lifecycle = s("lifecycleNotificationUrl");
    for u in std::iter::once(&url).chain(lifecycle.iter()) {
        check_scheme(shared, u)?;
    }
    let client_state = s("clientState");
    if client_state.as_ref().is_some_and(|c| c.len() > 128) {
        return Err(gerr(
            400,
            "InvalidRequest",
            "clientState must be at most 128 characters.",
        ));
    }
    let rich = v
        .get("includeResourceData")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if rich && s("encryptionCertificate").is_none_or(|c| c.is_empty()) {
        return Err(gerr(
            400,
            "InvalidRequest",
            "A valid encryptionCertificate is required when includeResourceData is true.",
        ));
    }
    // Decided: the simulator takes the base64 DER SubjectPublicKeyInfo of the key instead
    // of an X.509 certificate (no X.509 parser in the tree); Graph takes the certificate.
    let encryption_key = match s("encryptionCertificate") {
        Some(c) if rich => {
            use base64::Engine;
            use rsa::pkcs8::DecodePublicKey;
            let der = base64::engine::general_purpose::STANDARD
                .decode(c.trim())
                .ok();
            match der.and_then(|d| rsa::RsaPublicKey::from_public_key_der(&d).ok()) {
                Some(k) => Some(k),
                None => {
                    return Err(gerr(
                        400,
                        "InvalidRequest",
                        "encryptionCertificate must be base64 DER (SubjectPublicKeyInfo of an RSA key) in this simulator.",
                    ))
                }
            }
        }
        _ => None,
    };
    let now = shared.clock.now();
    let exp = expiry(v.get("expirationDateTime").unwrap_or(&Value::Null), now)?;
    let conflict = || {
        gerr(409, "ExtensionError", "Operation: Create; Exception: [Status Code: Conflict; Reason: A subscripton already exists. It must be deleted before a another can be made.]")
    };
    if shared.with(|core, now| core.has_sub(creator, now)) {
        return Err(conflict());
    }
    for u in std::iter::once(&url).chain(lifecycle.iter()) {
        validate(shared, u).await?;
    }
    shared.with(|core, now| {
        if core.has_sub(creator, now) {
            return Err(conflict());
        }
        let users = ids.iter().filter_map(|id| core.user_index(id)).collect();
        let id = core.new_sub_id();
        let mut out = core.insert_sub(
            id,
            creator,
            resource,
            users,
            url,
            lifecycle,
            client_state,
            exp,
            rich,
            s("encryptionCertificateId"),
            encryption_key.clone(),
            s("latestSupportedTlsVersion").unwrap_or_else(|| "v1_2".into()),
        );
        out["@odata.context"] =
            json!("https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity");
        Ok(json_response(201, &out))
    })
}

/// HTTPS only, unless `allow_http_webhooks`.
fn check_scheme(shared: &Shared, u: &str) -> Result<(), GraphError> {
    let https = u.starts_with("https://");
    if https || shared.cfg.allow_http_webhooks && u.starts_with("http://") {
        Ok(())
    } else {
        Err(gerr(
            400,
            "InvalidRequest",
            "The notification URL must use HTTPS.",
        ))
    }
}

/// The validation handshake (§4.1): 200, text/plain, body = the decoded token, within 10 s.
async fn validate(shared: &Shared, url: &str) -> Result<(), GraphError> {
    let rid = shared.with(|core, _| guid(&mut core.rng));
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {rid}"
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{sep}validationToken={}", pct_encode(&token));
    let r = shared
        .http
        .post(&full)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let ok = match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let body = resp.text().await.unwrap_or_default();
            status == 200 && ct.starts_with("text/plain") && body == token
        }
        Err(_) => false,
    };
    if ok {
        bump(&shared.counters.validations_ok);
        Ok(())
    } else {
        bump(&shared.counters.validations_failed);
        Err(gerr(400, "ValidationError", format!("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request: {url}")))
    }
}
