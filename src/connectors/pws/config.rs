//! `[connectors.pws.<name>]`: one Cisco IM&P Presence Web Service deployment.

use crate::config::{de_duration, Secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    /// `getSubscribedPresence` basic: one status per contact (cheapest).
    Basic,
    /// Rich PIDF: activities (on the phone, in a meeting), notes, devices.
    Rich,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PwsMode {
    /// The server calls `callback_url` when a subscription has changes (normal).
    Notify,
    /// The server cannot reach the bridge: fetch every subscription each `poll_interval`.
    /// The server keeps collecting changes per subscription, so nothing is missed.
    Poll,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PwsConfig {
    /// REST base, e.g. `https://imp1.example.com:8083/presence-service`.
    pub base_url: String,
    /// Application user (member of "Admin-3rd Party API").
    pub app_user: String,
    pub app_password: Secret,
    /// End users that hold the subscriptions (logged in by proxy, no password). Contacts are
    /// spread over them in order, `max_contacts_per_subscription` each.
    pub watchers: Vec<String>,
    /// Contacts to watch (`user@presence-domain`).
    #[serde(default)]
    pub contacts: Vec<String>,
    /// More contacts, one per line (`#` comments allowed).
    #[serde(default)]
    pub contacts_file: Option<PathBuf>,
    #[serde(default = "default_presence")]
    pub presence: PresenceKind,
    #[serde(default = "default_mode")]
    pub mode: PwsMode,
    /// URL the server calls, reachable from IM&P; its path is served by the bridge's HTTP
    /// server (e.g. `http://bridge.example.com:9464/pws/main`). Required in `notify` mode.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Fetch interval in `poll` mode.
    #[serde(default = "default_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Fail-safe fetch of every subscription (the server stops notifying under CPU load).
    #[serde(default = "default_failsafe", deserialize_with = "de_duration")]
    pub failsafe_interval: Duration,
    /// Lifetime of endpoints and subscriptions (3600–86400 s); refreshed at 80 %.
    #[serde(default = "default_expiry", deserialize_with = "de_duration")]
    pub expiry: Duration,
    /// `force=true` logins (a new session key each time). Default: non-forced, as Cisco
    /// recommends.
    #[serde(default)]
    pub forced_login: bool,
    /// Contacts per subscription (the server allows 1–5000).
    #[serde(default = "default_max_contacts")]
    pub max_contacts_per_subscription: usize,
    /// Contacts sent per subscribe/add request.
    #[serde(default = "default_batch")]
    pub contacts_per_request: usize,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Largest response body read (a fetch of 5000 rich contacts is a few MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Lifetime of presence set by commands (3600–86400 s) when the command gives none.
    #[serde(default = "default_set_expiry", deserialize_with = "de_duration")]
    pub set_expiry: Duration,
}

fn default_presence() -> PresenceKind {
    PresenceKind::Basic
}
fn default_mode() -> PwsMode {
    PwsMode::Notify
}
fn default_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_failsafe() -> Duration {
    Duration::from_secs(600)
}
fn default_expiry() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_contacts() -> usize {
    5000
}
fn default_batch() -> usize {
    100
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_set_expiry() -> Duration {
    Duration::from_secs(3600)
}

impl PwsConfig {
    /// Problems with their key and fix.
    pub fn validate(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            p.push(format!(
                "{key}.base_url must be http(s)://host:port/presence-service"
            ));
        }
        if self.app_user.trim().is_empty() {
            p.push(format!(
                "{key}.app_user is empty: name the application user"
            ));
        }
        if self.watchers.is_empty() {
            p.push(format!(
                "{key}.watchers is empty: list at least one end user to hold subscriptions"
            ));
        }
        if self.contacts.is_empty() && self.contacts_file.is_none() {
            p.push(format!(
                "{key}: no contacts: set contacts = [...] or contacts_file"
            ));
        }
        if self.mode == PwsMode::Notify && self.callback_url.is_none() {
            p.push(format!(
                "{key}.callback_url is required in notify mode (the URL IM&P calls, served by the bridge), or set mode = \"poll\""
            ));
        }
        if let Some(u) = &self.callback_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.contains(' ') {
                p.push(format!(
                    "{key}.callback_url must be an http(s) URL without spaces"
                ));
            } else if callback_path(u).is_none() {
                p.push(format!(
                    "{key}.callback_url needs a path, e.g. http://host:9464/pws/main"
                ));
            }
        }
        let secs = self.expiry.as_secs();
        if !(3600..=86400).contains(&secs) {
            p.push(format!(
                "{key}.expiry must be between 1h and 24h (the server rejects others with error 131)"
            ));
        }
        let s = self.set_expiry.as_secs();
        if !(3600..=86400).contains(&s) {
            p.push(format!("{key}.set_expiry must be between 1h and 24h"));
        }
        if !(1..=5000).contains(&self.max_contacts_per_subscription) {
            p.push(format!(
                "{key}.max_contacts_per_subscription must be 1..=5000"
            ));
        }
        if !(1..=100).contains(&self.contacts_per_request) {
            p.push(format!("{key}.contacts_per_request must be 1..=100"));
        }
        if self.failsafe_interval < Duration::from_secs(1) {
            p.push(format!("{key}.failsafe_interval must be at least 1s"));
        }
        p
    }

    /// Every contact from `contacts` and `contacts_file`, canonical and de-duplicated, in
    /// configuration order.
    pub fn all_contacts(&self) -> std::io::Result<Vec<String>> {
        crate::connectors::load_contacts(&self.contacts, self.contacts_file.as_deref())
    }
}

/// The path part of the callback URL (what the bridge's HTTP server serves).
pub fn callback_path(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.len() > 1).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_paths() {
        for (url, want) in [
            ("http://h:9464/pws/main", Some("/pws/main")),
            ("https://h/pws?x=1", Some("/pws")),
            ("http://h:9464", None),
            ("http://h:9464/", None),
        ] {
            assert_eq!(callback_path(url).as_deref(), want, "{url}");
        }
    }
}
