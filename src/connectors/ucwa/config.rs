//! `[connectors.ucwa.<name>]`: one Lync / Skype for Business deployment reached over UCWA.

use crate::config::{de_duration, Secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A signed-in user: holds one UCWA application, watches a share of the contacts, and can
/// have its own presence set by commands (UCWA cannot set anyone else's).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UcwaAccount {
    /// Sign-in name for the token request (UPN or SIP address).
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UcwaConfig {
    /// Autodiscover root, e.g. `https://lyncdiscover.example.com/` (links are followed
    /// from there; no UCWA URL is ever built by hand).
    pub autodiscover_url: String,
    /// Signed-in users; contacts are spread over them.
    pub accounts: Vec<UcwaAccount>,
    #[serde(default)]
    pub contacts: Vec<String>,
    /// More contacts, one per line (`#` comments allowed).
    #[serde(default)]
    pub contacts_file: Option<PathBuf>,
    /// Subscription duration in minutes (10–30).
    #[serde(default = "default_duration")]
    pub subscription_minutes: u32,
    /// How often subscriptions are extended (well inside their duration).
    #[serde(default = "default_renew", deserialize_with = "de_duration")]
    pub renew_interval: Duration,
    /// Event-channel `timeout` (180–1800 s): an idle pending GET is released after it.
    #[serde(default = "default_event_timeout", deserialize_with = "de_duration")]
    pub event_timeout: Duration,
    /// Contacts added per subscribe / add-members request.
    #[serde(default = "default_batch")]
    pub contacts_per_request: usize,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    #[serde(default = "default_culture")]
    pub culture: String,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// `reportMyActivity` period once an account has made itself available (≤ 4 min).
    #[serde(default = "default_activity", deserialize_with = "de_duration")]
    pub report_activity_interval: Duration,
}

fn default_duration() -> u32 {
    30
}
fn default_renew() -> Duration {
    Duration::from_secs(8 * 60)
}
fn default_event_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_batch() -> usize {
    100
}
fn default_user_agent() -> String {
    concat!("presence-bridge/", env!("CARGO_PKG_VERSION")).to_string()
}
fn default_culture() -> String {
    "en-US".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_activity() -> Duration {
    Duration::from_secs(180)
}

impl UcwaConfig {
    pub fn validate(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.autodiscover_url.starts_with("http://")
            || self.autodiscover_url.starts_with("https://"))
        {
            p.push(format!(
                "{key}.autodiscover_url must be http(s)://…, e.g. https://lyncdiscover.example.com/"
            ));
        }
        if self.accounts.is_empty() {
            p.push(format!(
                "{key}.accounts is empty: add at least one signed-in user"
            ));
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.username.trim().is_empty() {
                p.push(format!("{key}.accounts[{i}].username is empty"));
            }
        }
        if self.contacts.is_empty() && self.contacts_file.is_none() {
            p.push(format!(
                "{key}: no contacts: set contacts = [...] or contacts_file"
            ));
        }
        if !(10..=30).contains(&self.subscription_minutes) {
            p.push(format!(
                "{key}.subscription_minutes must be 10–30 (the server rejects others)"
            ));
        }
        if self.renew_interval >= Duration::from_secs(self.subscription_minutes as u64 * 60) {
            p.push(format!(
                "{key}.renew_interval must be shorter than subscription_minutes"
            ));
        }
        if self.renew_interval < Duration::from_millis(100) {
            p.push(format!("{key}.renew_interval must be at least 100ms"));
        }
        let t = self.event_timeout.as_secs();
        if !(1..=1800).contains(&t) {
            p.push(format!(
                "{key}.event_timeout must be at most 1800s (server range 180–1800)"
            ));
        }
        if self.report_activity_interval > Duration::from_secs(240) {
            p.push(format!(
                "{key}.report_activity_interval must be at most 4m (UCWA idles the user otherwise)"
            ));
        }
        for (f, v) in [("user_agent", &self.user_agent), ("culture", &self.culture)] {
            if v.is_empty() || v.len() > 100 {
                p.push(format!("{key}.{f} must be 1–100 characters"));
            }
        }
        if !(1..=1000).contains(&self.contacts_per_request) {
            p.push(format!("{key}.contacts_per_request must be 1..=1000"));
        }
        p
    }

    /// Contacts, canonical (`alice@example.com`) and de-duplicated, in configuration order.
    pub fn all_contacts(&self) -> std::io::Result<Vec<String>> {
        crate::connectors::load_contacts(&self.contacts, self.contacts_file.as_deref())
    }
}
