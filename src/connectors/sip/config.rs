//! `[connectors.sip.<name>]`: one SIP presence server (or a set of phones reached through
//! one outbound proxy), watched by SUBSCRIBE/NOTIFY.

use crate::config::{de_duration, Secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::stack::Transport;

/// An event package we can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Package {
    /// RFC 3856: PIDF (and XPIDF) presence documents.
    Presence,
    /// RFC 4235: dialog-info, the busy-lamp "on the phone" signal.
    Dialog,
    /// RFC 3842: message waiting (kept as a raw attribute only).
    MessageSummary,
}

impl Package {
    pub fn event(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
            Package::MessageSummary => "message-summary",
        }
    }

    /// What we put in `Accept`: every body type we parse for this package.
    pub fn accept(self, list: bool) -> &'static str {
        match (self, list) {
            (Package::Presence, false) => "application/pidf+xml, application/xpidf+xml",
            (Package::Presence, true) => {
                "multipart/related, application/rlmi+xml, application/pidf+xml, application/xpidf+xml"
            }
            (Package::Dialog, false) => "application/dialog-info+xml",
            (Package::Dialog, true) => {
                "multipart/related, application/rlmi+xml, application/dialog-info+xml"
            }
            (Package::MessageSummary, _) => "application/simple-message-summary",
        }
    }
}

/// A presentity with its own package set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SipTarget {
    /// `sip:alice@example.com` or `alice@example.com`.
    pub uri: String,
    pub events: Vec<Package>,
}

/// The optional inbound PUBLISH listener (we act as event state compositor for phones
/// that announce their state by PUBLISH, e.g. Zoiper).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundPublish {
    #[serde(default)]
    pub enabled: bool,
    /// Accept publications only for these domains (empty: any).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Shortest publication we grant (shorter requests get 423 with Min-Expires).
    #[serde(default = "default_min_expires", deserialize_with = "de_duration")]
    pub min_expires: Duration,
    /// Longest publication we grant (longer requests are shortened).
    #[serde(default = "default_max_expires", deserialize_with = "de_duration")]
    pub max_expires: Duration,
    /// Publications kept at most (a flood gets 503 instead of unbounded memory).
    #[serde(default = "default_max_publications")]
    pub max_publications: usize,
}

impl Default for InboundPublish {
    fn default() -> Self {
        InboundPublish {
            enabled: false,
            domains: Vec::new(),
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            max_publications: default_max_publications(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// The next hop for every request: the presence server or an outbound proxy
    /// (`host:port`, an IP address).
    pub server: SocketAddr,
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// Domain for contacts written without one (`alice` → `alice@domain`) and for the
    /// Request-URI host of presentities.
    pub domain: String,
    /// Our UDP+TCP address; NOTIFYs and inbound PUBLISHes arrive here.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Address to put in Via/Contact when `bind` is a wildcard or NAT-ed.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Our watcher identity (From of SUBSCRIBE), e.g. `sip:presence-bridge@example.com`.
    pub watcher: String,
    /// Digest user name (default: the user part of `watcher`).
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password (`${ENV}` or `${file:/path}`); without it challenges fail cleanly.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Presentities watched with `events`.
    #[serde(default)]
    pub contacts: Vec<String>,
    #[serde(default)]
    pub contacts_file: Option<PathBuf>,
    /// Packages subscribed for `contacts`.
    #[serde(default = "default_events")]
    pub events: Vec<Package>,
    /// Presentities with their own package set.
    #[serde(default)]
    pub targets: Vec<SipTarget>,
    /// Resource-list URIs (RFC 4662) subscribed with `Supported: eventlist`; every
    /// resource in their NOTIFYs becomes a user.
    #[serde(default)]
    pub lists: Vec<String>,
    /// Requested subscription duration; the server's grant rules.
    #[serde(default = "default_expires", deserialize_with = "de_duration")]
    pub expires: Duration,
    /// New subscriptions started per second (Presence Provider
    /// `MaxPresenceSubscriptionsPerSecond`).
    #[serde(default = "default_rate")]
    pub subscribe_rate: f64,
    /// First delay after a failed subscription; doubled per failure
    /// (`FailedPresenceSubscriptionsResubscribeDelay`).
    #[serde(default = "default_retry", deserialize_with = "de_duration")]
    pub retry_delay: Duration,
    /// Cap of the doubling (`MaxFailedPresenceSubscriptionsResubscribeDelay`).
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Consecutive failures after which a URI is given up (0: never;
    /// `MaxFailedPresenceSubscriptionsPerUri`).
    #[serde(default = "default_max_failures")]
    pub max_failures_per_uri: u32,
    /// An empty NOTIFY of an active subscription ("nobody published") means OFFLINE;
    /// false: UNKNOWN.
    #[serde(default = "default_true")]
    pub empty_means_offline: bool,
    /// An outgoing call that is still ringing counts as on the phone.
    #[serde(default = "default_true")]
    pub dialing_is_on_the_phone: bool,
    /// RFC 3261 T1; Timer F and Timer N are 64×T1.
    #[serde(default = "default_t1", deserialize_with = "de_duration")]
    pub t1: Duration,
    /// PEM CA bundle for `transport = "tls"`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Lifetime of presence set by commands (PUBLISH Expires) when the command gives none;
    /// refreshed before it runs out.
    #[serde(default = "default_expires", deserialize_with = "de_duration")]
    pub publish_expires: Duration,
    #[serde(default)]
    pub inbound_publish: InboundPublish,
    /// Deadline for un-SUBSCRIBE and PUBLISH removal at shutdown.
    #[serde(default = "default_shutdown", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
}

fn default_transport() -> Transport {
    Transport::Udp
}
fn default_bind() -> SocketAddr {
    "0.0.0.0:5070".parse().expect("literal")
}
fn default_events() -> Vec<Package> {
    vec![Package::Presence]
}
fn default_expires() -> Duration {
    Duration::from_secs(3600)
}
fn default_rate() -> f64 {
    15.0
}
fn default_retry() -> Duration {
    Duration::from_secs(15)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_max_failures() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
fn default_t1() -> Duration {
    Duration::from_millis(500)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(5)
}
fn default_min_expires() -> Duration {
    Duration::from_secs(60)
}
fn default_max_expires() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_publications() -> usize {
    100_000
}

impl SipConfig {
    /// Problems with their key and fix.
    pub fn validate(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.domain.trim().is_empty() || self.domain.contains(['@', ' ', ':']) {
            p.push(format!(
                "{key}.domain must be a bare domain such as example.com"
            ));
        }
        if super::message::uri_aor(&self.watcher).is_none() {
            p.push(format!(
                "{key}.watcher must be a SIP URI such as sip:presence-bridge@example.com"
            ));
        }
        if self.contacts.is_empty()
            && self.contacts_file.is_none()
            && self.targets.is_empty()
            && self.lists.is_empty()
            && !self.inbound_publish.enabled
        {
            p.push(format!(
                "{key}: nothing to watch: set contacts, contacts_file, targets or lists, or enable inbound_publish"
            ));
        }
        if self.events.is_empty() {
            p.push(format!(
                "{key}.events is empty: use [\"presence\"] (and \"dialog\" for on-the-phone)"
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if super::message::uri_aor(&with_scheme(&t.uri)).is_none() {
                p.push(format!(
                    "{key}.targets[{i}].uri must be user@domain or a SIP URI"
                ));
            }
            if t.events.is_empty() {
                p.push(format!("{key}.targets[{i}].events is empty"));
            }
        }
        let exp = self.expires.as_secs();
        if !(10..=86400).contains(&exp) {
            p.push(format!("{key}.expires must be between 10s and 24h"));
        }
        let pexp = self.publish_expires.as_secs();
        if !(10..=86400).contains(&pexp) {
            p.push(format!("{key}.publish_expires must be between 10s and 24h"));
        }
        if !(self.subscribe_rate > 0.0 && self.subscribe_rate.is_finite()) {
            p.push(format!(
                "{key}.subscribe_rate must be a positive number of subscriptions per second"
            ));
        }
        if self.retry_delay.is_zero() || self.retry_max < self.retry_delay {
            p.push(format!(
                "{key}.retry_delay must be > 0 and retry_max at least retry_delay"
            ));
        }
        if self.t1 < Duration::from_millis(10) || self.t1 > Duration::from_secs(10) {
            p.push(format!(
                "{key}.t1 must be between 10ms and 10s (RFC 3261: 500ms)"
            ));
        }
        if self.transport == Transport::Tls && self.tls_ca_file.is_none() {
            p.push(format!(
                "{key}.tls_ca_file is required with transport = \"tls\" (the PEM CA that signed the server's certificate)"
            ));
        }
        let ib = &self.inbound_publish;
        if ib.enabled && (ib.min_expires.is_zero() || ib.max_expires < ib.min_expires) {
            p.push(format!(
                "{key}.inbound_publish: min_expires must be > 0 and max_expires at least min_expires"
            ));
        }
        p
    }

    /// The digest user name: `username`, else the user part of `watcher`.
    pub fn digest_user(&self) -> String {
        self.username.clone().unwrap_or_else(|| {
            super::message::uri_aor(&self.watcher)
                .and_then(|a| a.split('@').next().map(str::to_string))
                .unwrap_or_default()
        })
    }

    /// Every watched presentity as `user@domain` with its packages, de-duplicated, in
    /// configuration order (targets override the shared package list).
    pub fn presentities(&self) -> std::io::Result<Vec<(String, Vec<Package>)>> {
        let mut out: Vec<(String, Vec<Package>)> = Vec::new();
        let contacts =
            crate::connectors::load_contacts(&self.contacts, self.contacts_file.as_deref())?;
        let mut seen = std::collections::HashMap::new();
        for c in contacts {
            let aor = self.aor(&c);
            if seen.insert(aor.clone(), out.len()).is_none() {
                out.push((aor, self.events.clone()));
            }
        }
        for t in &self.targets {
            let aor = self.aor(&t.uri);
            let mut ev = t.events.clone();
            ev.sort();
            ev.dedup();
            match seen.get(&aor) {
                Some(&i) => out[i].1 = ev,
                None => {
                    seen.insert(aor.clone(), out.len());
                    out.push((aor, ev));
                }
            }
        }
        Ok(out)
    }

    /// `alice` → `alice@domain`; `sip:Alice@X.org` → `alice@x.org`.
    pub fn aor(&self, raw: &str) -> String {
        let c = crate::model::canonical_user(raw);
        if c.contains('@') {
            super::message::uri_aor(&with_scheme(&c)).unwrap_or(c)
        } else {
            format!("{c}@{}", self.domain.to_ascii_lowercase())
        }
    }
}

/// Adds `sip:` when a URI has no scheme.
pub fn with_scheme(uri: &str) -> String {
    let t = uri.trim();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        t.to_string()
    } else {
        format!("sip:{t}")
    }
}
