//! `[connectors.graph.<name>]`: Microsoft Teams presence through Microsoft Graph.

use crate::config::{de_duration, Secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A delegated ("service") user: presence subscriptions are delegated-only and one per app
/// per user with at most 650 ids, so N watched users need ceil(N/650) of these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    pub username: String,
    pub password: Secret,
}

/// Rich notifications (`includeResourceData`): the presence arrives encrypted inside the
/// notification, so no fetch is needed for it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphEncryption {
    /// Base64 certificate Graph encrypts to (the simulator takes the key's base64 DER
    /// SubjectPublicKeyInfo instead).
    pub certificate: String,
    pub certificate_id: String,
    /// The certificate's private key, PKCS#8 PEM (e.g. `"${file:/etc/presence-bridge/graph.key}"`).
    pub private_key: Secret,
}

/// Which Graph API set-presence commands use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandApi {
    /// `setUserPreferredPresence` / `clearUserPreferredPresence`: what the user would pick in
    /// Teams; shown to everyone (default).
    Preferred,
    /// `setPresence` / `clearPresence`: an application presence session (sessionId = the
    /// app's client id) that Teams aggregates with the user's other sessions; it lapses
    /// after its expiration (5 min–4 h).
    Session,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Entra tenant (name or id).
    pub tenant: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Token endpoint; default `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default = "default_graph")]
    pub graph_url: String,
    pub service_accounts: Vec<ServiceAccount>,
    /// Watched users by object id.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Public HTTPS URL Graph posts notifications (and lifecycle notifications) to; its
    /// path is served by the bridge.
    pub notification_url: String,
    /// Requested subscription lifetime (Graph allows 45–60 min).
    #[serde(default = "default_lifetime", deserialize_with = "de_duration")]
    pub subscription_lifetime: Duration,
    #[serde(default = "default_renew", deserialize_with = "de_duration")]
    pub renew_interval: Duration,
    /// Full fetch of every user (notifications can be lost; `missed` is not sent for presence).
    #[serde(default = "default_resync", deserialize_with = "de_duration")]
    pub resync_interval: Duration,
    /// Notifications arriving within this window are fetched together.
    #[serde(default = "default_coalesce", deserialize_with = "de_duration")]
    pub coalesce_window: Duration,
    /// Presence reads allowed per 30 s (Graph: 1500 per app and tenant).
    #[serde(default = "default_budget")]
    pub reads_per_30s: u32,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub encryption: Option<GraphEncryption>,
    #[serde(default = "default_command_api")]
    pub command_api: CommandApi,
}

fn default_command_api() -> CommandApi {
    CommandApi::Preferred
}

fn default_graph() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_lifetime() -> Duration {
    Duration::from_secs(59 * 60)
}
fn default_renew() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_resync() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_coalesce() -> Duration {
    Duration::from_millis(250)
}
fn default_budget() -> u32 {
    1500
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

impl GraphConfig {
    pub fn validate(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.tenant.is_empty() || self.client_id.is_empty() {
            p.push(format!("{key}: tenant and client_id are required"));
        }
        if self.service_accounts.is_empty() {
            p.push(format!(
                "{key}.service_accounts is empty: presence subscriptions need delegated users (one per 650 watched users)"
            ));
        }
        if self.users.is_empty() && self.users_file.is_none() {
            p.push(format!("{key}: no users: set users = [...] or users_file"));
        }
        if !(self.notification_url.starts_with("https://")
            || self.notification_url.starts_with("http://"))
            || super::super::pws::config::callback_path(&self.notification_url).is_none()
        {
            p.push(format!(
                "{key}.notification_url must be an https URL with a path, e.g. https://bridge.example.com/graph/teams"
            ));
        }
        let l = self.subscription_lifetime.as_secs();
        if !(45 * 60..=60 * 60).contains(&l) {
            p.push(format!("{key}.subscription_lifetime must be 45m–60m"));
        }
        if self.renew_interval >= self.subscription_lifetime {
            p.push(format!(
                "{key}.renew_interval must be shorter than subscription_lifetime"
            ));
        }
        if let Some(e) = &self.encryption {
            if let Err(err) = super::crypto::private_key_from_pem(e.private_key.expose()) {
                p.push(format!("{key}.encryption.private_key: {err}"));
            }
        }
        if self.reads_per_30s == 0 {
            p.push(format!("{key}.reads_per_30s must be at least 1"));
        }
        p
    }

    pub fn token_url(&self) -> String {
        self.token_url.clone().unwrap_or_else(|| {
            format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                self.tenant
            )
        })
    }

    /// Watched user ids, lower-case, de-duplicated.
    pub fn all_users(&self) -> std::io::Result<Vec<String>> {
        crate::connectors::load_contacts(&self.users, self.users_file.as_deref())
    }
}
