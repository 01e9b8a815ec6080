//! Inbound PUBLISH: the bridge as a small event state compositor (RFC 3903 §6), so phones
//! that announce their own state by PUBLISH (Zoiper, baresip) are a source too.
//!
//! Publications are keyed by (AOR, event, entity-tag), each with its own expiry. Every
//! success answers a new, unguessable `SIP-ETag`; a body-less PUBLISH with `SIP-If-Match`
//! refreshes, one with a body modifies, `Expires: 0` removes; an unknown tag gets 412.
//! The user's state is composed from the newest live presence publication plus the
//! newest dialog publication (the on-the-phone overlay); when the last presence
//! publication is removed or expires, the user is "nobody published" — the same as an
//! empty NOTIFY from a presence server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::body::parse_body;
use super::config::Package;
use super::connector::SipCore;
use super::message::{uri_aor, SipMessage};

#[derive(Debug, Clone)]
struct Publication {
    event: Package,
    etag: String,
    expires_at: Instant,
    content_type: String,
    body: Vec<u8>,
    /// Order of arrival: the newest publication wins the composition.
    seq: u64,
}

#[derive(Default)]
struct Table {
    by_aor: HashMap<String, Vec<Publication>>,
    count: usize,
    seq: u64,
}

pub struct Compositor {
    core: Arc<SipCore>,
    table: Mutex<Table>,
}

/// Body types accepted per event.
fn accepts(event: Package) -> &'static [&'static str] {
    match event {
        Package::Presence => &["application/pidf+xml", "application/xpidf+xml"],
        Package::Dialog => &["application/dialog-info+xml"],
        Package::MessageSummary => &["application/simple-message-summary"],
    }
}

fn new_etag() -> String {
    // 128 bits from the OS generator: a tag must not be guessable, or anyone could replace
    // or remove a phone's publication.
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Compositor {
    pub fn new(core: Arc<SipCore>) -> Self {
        Compositor {
            core,
            table: Mutex::new(Table::default()),
        }
    }

    /// Answers one PUBLISH. Returns the response and the AORs whose composed state may
    /// have changed (to emit after the response went out).
    pub fn on_publish(&self, req: &SipMessage) -> (SipMessage, Vec<String>) {
        let cfg = &self.core.config.inbound_publish;
        let reply = |code: u16, reason: &str| SipMessage::response_to(req, code, reason);
        let event = match req.event().map(|e| e.package) {
            Some(p) if p == "presence" => Package::Presence,
            Some(p) if p == "dialog" => Package::Dialog,
            Some(p) if p == "message-summary" => Package::MessageSummary,
            _ => {
                return (
                    reply(489, "Bad Event")
                        .with("Allow-Events", "presence, dialog, message-summary"),
                    vec![],
                )
            }
        };
        let Some(aor) = req.request_uri().and_then(uri_aor) else {
            return (reply(400, "Bad Request-URI"), vec![]);
        };
        // A phone publishes its own state: From names the publisher, which must be the
        // AOR it publishes for (RFC 3903 §6 step 2; we have no other authorization).
        let from = req.from_hdr().and_then(|f| uri_aor(&f.uri));
        if from.as_deref() != Some(aor.as_str()) {
            self.core.error("publish_forbidden");
            return (reply(403, "Publisher Is Not The Presentity"), vec![]);
        }
        if !cfg.domains.is_empty() {
            let domain = aor.rsplit('@').next().unwrap_or("");
            if !cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                return (reply(404, "Not Found"), vec![]);
            }
        }
        let requested = req.expires().unwrap_or(3600);
        let min = cfg.min_expires.as_secs() as u32;
        if requested != 0 && requested < min {
            return (
                reply(423, "Interval Too Brief").with("Min-Expires", min.to_string()),
                vec![],
            );
        }
        let granted = requested.min(cfg.max_expires.as_secs() as u32);
        let has_body = !req.body.is_empty();
        let content_type = req.content_type().map(|m| m.essence);
        if has_body {
            let ok = content_type
                .as_deref()
                .is_some_and(|ct| accepts(event).contains(&ct));
            if !ok {
                return (
                    reply(415, "Unsupported Media Type").with("Accept", accepts(event).join(", ")),
                    vec![],
                );
            }
            // Refuse a body we could not use, now, rather than store garbage.
            let ct = content_type.as_deref().unwrap_or_default();
            if let Err(e) = parse_body(ct, &req.body) {
                self.core.error("publish_body");
                tracing::info!(connector = %self.core.name, user = %aor, error = %e, "inbound PUBLISH body rejected");
                return (reply(400, "Bad Body"), vec![]);
            }
        }
        let now = Instant::now();
        let mut t = self.table.lock().expect("esc lock");
        t.seq += 1;
        let seq = t.seq;
        let etag = new_etag();
        match req.header("SIP-If-Match") {
            Some(tag) => {
                let list = t.by_aor.entry(aor.clone()).or_default();
                let Some(i) = list
                    .iter()
                    .position(|p| p.etag == tag && p.event == event && p.expires_at > now)
                else {
                    if list.is_empty() {
                        t.by_aor.remove(&aor);
                    }
                    return (reply(412, "Conditional Request Failed"), vec![]);
                };
                if requested == 0 {
                    list.remove(i);
                    if list.is_empty() {
                        t.by_aor.remove(&aor);
                    }
                    t.count -= 1;
                    return (reply(200, "OK").with("Expires", "0"), vec![aor]);
                }
                let p = &mut list[i];
                p.etag = etag.clone();
                p.expires_at = now + Duration::from_secs(granted.into());
                let changed = if has_body {
                    p.body = req.body.clone();
                    p.content_type = content_type.unwrap_or_default();
                    p.seq = seq;
                    vec![aor]
                } else {
                    vec![]
                };
                (
                    reply(200, "OK")
                        .with("SIP-ETag", etag)
                        .with("Expires", granted.to_string()),
                    changed,
                )
            }
            None => {
                if !has_body {
                    return (reply(400, "Initial PUBLISH Without Body"), vec![]);
                }
                if requested == 0 {
                    return (reply(400, "Expires 0 Without SIP-If-Match"), vec![]);
                }
                if t.count >= cfg.max_publications {
                    self.core.error("publish_table_full");
                    return (
                        reply(503, "Service Unavailable").with("Retry-After", "60"),
                        vec![],
                    );
                }
                t.count += 1;
                t.by_aor.entry(aor.clone()).or_default().push(Publication {
                    event,
                    etag: etag.clone(),
                    expires_at: now + Duration::from_secs(granted.into()),
                    content_type: content_type.unwrap_or_default(),
                    body: req.body.clone(),
                    seq,
                });
                (
                    reply(200, "OK")
                        .with("SIP-ETag", etag)
                        .with("Expires", granted.to_string()),
                    vec![aor],
                )
            }
        }
    }

    /// Composes the AOR's live publications and hands the state to the pipeline.
    pub async fn emit(&self, aor: &str) {
        let (presence, dialog) = {
            let t = self.table.lock().expect("esc lock");
            let now = Instant::now();
            let newest = |ev: Package| {
                t.by_aor.get(aor).and_then(|l| {
                    l.iter()
                        .filter(|p| p.event == ev && p.expires_at > now)
                        .max_by_key(|p| p.seq)
                        .map(|p| (p.content_type.clone(), p.body.clone()))
                })
            };
            (newest(Package::Presence), newest(Package::Dialog))
        };
        match self
            .core
            .presentities
            .compose_published(aor, presence, dialog)
        {
            Ok(state) => self.core.observe(aor.to_string(), state, false).await,
            Err(e) => {
                self.core.error("publish_body");
                tracing::warn!(connector = %self.core.name, user = %aor, error = %e, "inbound publication could not be composed");
            }
        }
    }

    /// Removes expired publications every second and emits the users they affected.
    pub async fn sweep_expired(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut changed = Vec::new();
            {
                let mut t = self.table.lock().expect("esc lock");
                let mut removed = 0;
                t.by_aor.retain(|aor, list| {
                    let before = list.len();
                    list.retain(|p| p.expires_at > now);
                    if list.len() != before {
                        removed += before - list.len();
                        changed.push(aor.clone());
                    }
                    !list.is_empty()
                });
                t.count -= removed;
                // Users whose last publication expired are not in `by_aor` any more but
                // are in `changed`: they compose to "nobody published".
            }
            for aor in changed {
                self.emit(&aor).await;
            }
        }
    }
}
