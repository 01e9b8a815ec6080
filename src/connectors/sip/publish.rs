//! Set presence from the command topic: PUBLISH (RFC 3903) of a PIDF document to the
//! presence server, for the commanded user.
//!
//! One publication per user, kept alive by a refresher task: body-less PUBLISH with the
//! latest `SIP-If-Match` before the granted expiry. The entity-tag changes on every
//! success (reference §7.1), so the newest one is always stored. `412` means the server
//! forgot us (expiry, restart, fail-over): publish again from scratch with the full body.
//! Kamailio 5.6 answers `500` "wrong etag" for tags it cannot parse; that is treated like
//! 412 once. CLEAR_PRESENCE removes our publication (`Expires: 0`); the server then
//! composes the user's other publications (their phones) without ours.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::config::with_scheme;
use super::connector::SipCore;
use super::digest::DigestClient;
use super::message::{new_call_id, new_tag, SipMessage};
use super::normalize::pidf_for_command;
use super::subscription::{backoff, refresh_after};
use crate::connectors::{CommandOutcome, CommandTarget};
use crate::model::{now_millis, Availability, Command, CommandAction};

/// A live publication of ours.
struct Publication {
    etag: String,
    body: String,
    expires: u32,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

type Slot = Arc<Mutex<Option<Publication>>>;

/// Digest state per published user, kept across requests so refreshes carry credentials
/// for the last challenge pre-emptively (nc + 1) instead of paying a 407 round trip each.
type Auth = Arc<Mutex<DigestClient>>;

/// The connector's [`CommandTarget`].
pub struct SipCommands {
    name: String,
    users: HashSet<String>,
    core: Arc<OnceLock<Arc<SipCore>>>,
    slots: std::sync::Mutex<HashMap<String, (Slot, Auth)>>,
}

/// Why a PUBLISH did not succeed.
#[derive(Debug)]
enum PublishError {
    /// The server answered with a final error.
    Status(u16, String),
    /// Transport, digest or stack trouble.
    Other(String),
}

impl SipCommands {
    pub fn new(name: &str, users: Vec<String>, core: Arc<OnceLock<Arc<SipCore>>>) -> Self {
        SipCommands {
            name: name.to_string(),
            users: users.into_iter().collect(),
            core,
            slots: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, core: &SipCore, user: &str) -> (Slot, Auth) {
        self.slots
            .lock()
            .expect("slots lock")
            .entry(user.to_string())
            .or_insert_with(|| {
                (
                    Slot::default(),
                    Arc::new(Mutex::new(DigestClient::new(core.credentials()))),
                )
            })
            .clone()
    }

    /// Removes every publication we hold (shutdown).
    pub async fn remove_all(&self, core: &Arc<SipCore>) {
        let slots: Vec<(String, Slot, Auth)> = self
            .slots
            .lock()
            .expect("slots lock")
            .iter()
            .map(|(u, (s, a))| (u.clone(), s.clone(), a.clone()))
            .collect();
        for (user, slot, auth) in slots {
            let mut guard = slot.lock().await;
            if let Some(p) = guard.take() {
                if let Some(r) = p.refresher {
                    r.abort();
                }
                let mut digest = auth.lock().await;
                let _ = publish(core, &mut digest, &user, None, Some(&p.etag), 0).await;
            }
        }
    }
}

/// Sends one PUBLISH for `user`; returns (new entity-tag, granted expires).
async fn publish(
    core: &SipCore,
    digest: &mut DigestClient,
    user: &str,
    body: Option<&str>,
    if_match: Option<&str>,
    expires: u32,
) -> Result<(String, u32), PublishError> {
    let uri = with_scheme(user);
    let mut expires = expires;
    let call_id = new_call_id(&core.local_host());
    let tag = new_tag();
    for cseq in 1..=4u32 {
        let mut req = SipMessage::request("PUBLISH", &uri);
        req.add("Max-Forwards", "70");
        // Servers authorise a publication by From = presentity.
        req.add("From", format!("<{uri}>;tag={tag}"));
        req.add("To", format!("<{uri}>"));
        req.add("Call-ID", call_id.clone());
        req.add("CSeq", format!("{cseq} PUBLISH"));
        req.add("Event", "presence");
        req.add("Expires", expires.to_string());
        if let Some(t) = if_match {
            req.add("SIP-If-Match", t.to_string());
        }
        if let Some(b) = body {
            req.set_body("application/pidf+xml", b.as_bytes().to_vec());
        }
        digest.authorize(&mut req);
        let resp = core
            .stack
            .request(req.clone(), core.target())
            .await
            .map_err(|e| PublishError::Other(e.to_string()))?;
        let code = resp.code().unwrap_or(0);
        match code {
            200..=299 => {
                digest.on_success();
                let etag = match resp.header("SIP-ETag") {
                    Some(t) => t.to_string(),
                    // A removal leaves no state to tag; an ESC may omit it (ours does).
                    None if expires == 0 => String::new(),
                    None => {
                        return Err(PublishError::Other(
                            "2xx to PUBLISH without SIP-ETag".into(),
                        ))
                    }
                };
                let granted = resp.expires().unwrap_or(expires);
                return Ok((etag, granted));
            }
            401 | 407 => {
                digest
                    .on_challenge(&req, &resp)
                    .map_err(|e| PublishError::Other(e.to_string()))?;
            }
            423 => match resp.min_expires() {
                Some(min) if min > expires => expires = min,
                _ => return Err(status_err(&resp)),
            },
            _ => return Err(status_err(&resp)),
        }
    }
    Err(PublishError::Other("too many challenges".into()))
}

fn status_err(resp: &SipMessage) -> PublishError {
    let reason = match &resp.start {
        super::message::StartLine::Response { reason, .. } => reason.clone(),
        _ => String::new(),
    };
    PublishError::Status(resp.code().unwrap_or(0), reason)
}

/// Publishes `body`: a modify when we hold a tag, falling back to an initial PUBLISH when
/// the server no longer knows it (412, or Kamailio's 500 "wrong etag").
async fn publish_or_republish(
    core: &SipCore,
    digest: &mut DigestClient,
    user: &str,
    body: &str,
    current: Option<&str>,
    expires: u32,
) -> Result<(String, u32), PublishError> {
    if let Some(tag) = current {
        match publish(core, digest, user, Some(body), Some(tag), expires).await {
            Err(PublishError::Status(412 | 500, _)) => {
                core.error("publish_412");
            }
            other => return other,
        }
    }
    publish(core, digest, user, Some(body), None, expires).await
}

/// Keeps a publication alive until aborted.
fn spawn_refresher(
    core: Arc<SipCore>,
    user: String,
    slot: Slot,
    auth: Auth,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let timer_f = core.config.t1 * 64;
        let mut failures = 0u32;
        loop {
            let (expires, wait) = {
                let g = slot.lock().await;
                let Some(p) = g.as_ref() else { return };
                let granted = Duration::from_secs(p.expires.into());
                let wait = if failures == 0 {
                    refresh_after(granted, timer_f)
                } else {
                    backoff(Duration::from_secs(2), Duration::from_secs(60), failures)
                };
                (p.expires, wait)
            };
            tokio::time::sleep(wait).await;
            let mut g = slot.lock().await;
            let Some(p) = g.as_mut() else { return };
            let mut digest = auth.lock().await;
            // Refresh: no body, the latest tag (pitfall 5).
            let result =
                match publish(&core, &mut digest, &user, None, Some(&p.etag), expires).await {
                    Err(PublishError::Status(412 | 500, _)) => {
                        core.error("publish_412");
                        publish(&core, &mut digest, &user, Some(&p.body), None, expires).await
                    }
                    other => other,
                };
            match result {
                Ok((etag, granted)) => {
                    failures = 0;
                    p.etag = etag;
                    p.expires = granted;
                }
                Err(e) => {
                    failures += 1;
                    core.error("publish_refresh");
                    tracing::warn!(connector = %core.name, user = %user, error = ?e, "sip PUBLISH refresh failed");
                }
            }
        }
    })
}

#[async_trait]
impl CommandTarget for SipCommands {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sip"
    }

    fn owns(&self, user: &str) -> bool {
        self.users.contains(user)
    }

    async fn apply(&self, cmd: &Command) -> CommandOutcome {
        let Some(core) = self.core.get().cloned() else {
            return CommandOutcome::Failed("SIP connector is not started yet".into());
        };
        let user = cmd.user.clone();
        let (slot, auth) = self.slot(&core, &user);
        let mut guard = slot.lock().await;
        match cmd.action {
            CommandAction::ClearPresence => {
                let Some(p) = guard.take() else {
                    return CommandOutcome::Applied;
                };
                if let Some(r) = p.refresher {
                    r.abort();
                }
                let mut digest = auth.lock().await;
                match publish(&core, &mut digest, &user, None, Some(&p.etag), 0).await {
                    // Already gone at the server is what we wanted.
                    Ok(_) | Err(PublishError::Status(412, _)) => CommandOutcome::Applied,
                    Err(e) => outcome(e),
                }
            }
            _ => {
                let availability = cmd.availability.unwrap_or(Availability::Available);
                if let Err(why) = super::normalize::check_command(availability) {
                    return CommandOutcome::Rejected(why);
                }
                // With `expiry_seconds` the override ends then, as on the other sources:
                // published for that long and not refreshed. Without it, it stays until
                // CLEAR_PRESENCE (refreshed every `publish_expires`).
                let lapses = cmd.expiry_seconds.filter(|s| *s > 0);
                let expires = lapses
                    .map(|s| s.min(86_400) as u32)
                    .unwrap_or(core.config.publish_expires.as_secs() as u32);
                let id = short_id(&user);
                let body = pidf_for_command(
                    &with_scheme(&user),
                    availability,
                    cmd.activity,
                    cmd.note.as_deref(),
                    &format!("pb-t-{id}"),
                    &format!("pb-p-{id}"),
                    now_millis(),
                );
                let current = guard.as_ref().map(|p| p.etag.clone());
                let result = {
                    let mut digest = auth.lock().await;
                    publish_or_republish(
                        &core,
                        &mut digest,
                        &user,
                        &body,
                        current.as_deref(),
                        expires,
                    )
                    .await
                };
                match result {
                    Ok((etag, granted)) => {
                        if let Some(old) = guard.take().and_then(|p| p.refresher) {
                            old.abort();
                        }
                        *guard = Some(Publication {
                            etag,
                            body,
                            expires: granted,
                            refresher: None,
                        });
                        drop(guard);
                        if lapses.is_none() {
                            let handle = spawn_refresher(
                                core.clone(),
                                user.clone(),
                                slot.clone(),
                                auth.clone(),
                            );
                            if let Some(p) = slot.lock().await.as_mut() {
                                p.refresher = Some(handle);
                            }
                        }
                        CommandOutcome::Applied
                    }
                    Err(e) => outcome(e),
                }
            }
        }
    }
}

fn outcome(e: PublishError) -> CommandOutcome {
    match e {
        PublishError::Status(code @ (400..=499 | 600..=699), reason) => {
            CommandOutcome::Rejected(format!("PUBLISH answered {code} {reason}"))
        }
        PublishError::Status(code, reason) => {
            CommandOutcome::Failed(format!("PUBLISH answered {code} {reason}"))
        }
        PublishError::Other(e) => CommandOutcome::Failed(e),
    }
}

/// Stable tuple/person ids per user (reference §7.1: our publication is one source
/// among the user's phones, so it must keep its identity across refreshes).
fn short_id(user: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
