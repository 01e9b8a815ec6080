//! The built-in synthetic source: N simulated users whose presence changes at a configured
//! rate. It drives the demo, the end-to-end tests and the load bench, and it implements the
//! command target (a set-presence command changes the simulated user, and the change comes
//! back as an event like any other source's).
//!
//! It behaves like a real source from the pipeline's point of view: a first full fetch
//! (flagged resync), notification-driven single-user changes, optional periodic resyncs that
//! re-send every user (mostly unchanged, so they exercise the "unchanged → no event" path).

use super::{CommandOutcome, CommandTarget, Connector, ConnectorContext, ConnectorError};
use crate::model::{
    canonical_user, now_millis, Activity, Availability, Command, CommandAction, Observation,
    PresenceState, SourceRef,
};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of simulated users.
    #[serde(default = "default_users")]
    pub users: u32,
    /// Presence changes per second over all users; 0 means as fast as the pipeline takes them.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Seed of the random changes (the same seed gives the same sequence).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// User ids are `<user_prefix><n>@<domain>`.
    #[serde(default = "default_prefix")]
    pub user_prefix: String,
    #[serde(default = "default_domain")]
    pub domain: String,
    /// Stop changing after this many changes (the source stays up); for tests and benches.
    #[serde(default)]
    pub max_changes: Option<u64>,
    /// Share of notifications that re-send an unchanged state (like a real server does).
    #[serde(default = "default_repeat")]
    pub repeat_ratio: f64,
    /// Re-send every user's state this often (flagged resync), like a fail-safe fetch.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub resync_interval: Option<Duration>,
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    crate::config::de_duration(d).map(Some)
}

fn default_users() -> u32 {
    50
}
fn default_rate() -> f64 {
    20.0
}
fn default_seed() -> u64 {
    1
}
fn default_prefix() -> String {
    "user".into()
}
fn default_domain() -> String {
    "synthetic.example".into()
}
fn default_repeat() -> f64 {
    0.1
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            users: default_users(),
            rate: default_rate(),
            seed: default_seed(),
            user_prefix: default_prefix(),
            domain: default_domain(),
            max_changes: None,
            repeat_ratio: default_repeat(),
            resync_interval: None,
        }
    }
}

impl SyntheticConfig {
    pub fn validate(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.users == 0 {
            p.push(format!("{key}.users is 0: simulate at least 1 user"));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            p.push(format!(
                "{key}.rate must be a finite number >= 0 (0 = unlimited)"
            ));
        }
        if !(0.0..=1.0).contains(&self.repeat_ratio) {
            p.push(format!("{key}.repeat_ratio must be between 0 and 1"));
        }
        if self.domain.is_empty() || self.domain.contains('@') {
            p.push(format!(
                "{key}.domain must be a domain like \"example.com\""
            ));
        }
        p
    }

    pub fn user(&self, n: u32) -> String {
        canonical_user(&format!("{}{:05}@{}", self.user_prefix, n, self.domain))
    }
}

const AVAIL_CHOICES: [Availability; 8] = [
    Availability::Available,
    Availability::Available,
    Availability::AvailableIdle,
    Availability::Away,
    Availability::BeRightBack,
    Availability::Busy,
    Availability::DoNotDisturb,
    Availability::Offline,
];

/// A random but plausible state, with the "raw" values a source would carry.
fn random_state(rng: &mut fastrand::Rng) -> PresenceState {
    let availability = AVAIL_CHOICES[rng.usize(..AVAIL_CHOICES.len())];
    let mut s =
        PresenceState::new(availability).with_raw("availability", format!("{availability:?}"));
    if availability == Availability::Busy {
        let act = [
            Activity::InACall,
            Activity::InAMeeting,
            Activity::Presenting,
            Activity::InAConferenceCall,
        ][rng.usize(..4)];
        s.activity = Some(act);
        s.raw.insert("activity".into(), format!("{act:?}"));
    }
    if rng.u8(..10) == 0 {
        s.note = Some(["Back at 3", "Working from home", "On site"][rng.usize(..3)].into());
    }
    s
}

struct Sim {
    users: Vec<String>,
    states: Vec<PresenceState>,
}

pub struct SyntheticConnector {
    name: String,
    config: SyntheticConfig,
    sim: Arc<Mutex<Sim>>,
    /// Set once `run` starts, so commands can emit their change like a notification.
    sender: Arc<Mutex<Option<super::ObservationSender>>>,
}

impl SyntheticConnector {
    pub fn new(name: &str, config: SyntheticConfig) -> Self {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let users: Vec<String> = (0..config.users).map(|n| config.user(n)).collect();
        let states = users.iter().map(|_| random_state(&mut rng)).collect();
        SyntheticConnector {
            name: name.to_string(),
            config,
            sim: Arc::new(Mutex::new(Sim { users, states })),
            sender: Arc::new(Mutex::new(None)),
        }
    }

    fn source(&self) -> SourceRef {
        SourceRef {
            kind: "synthetic".into(),
            connector: self.name.clone(),
            server: Some("synthetic.local".into()),
            server_time: None,
        }
    }

    fn observation(&self, user: &str, state: PresenceState, resync: bool) -> Observation {
        let now = now_millis();
        let mut source = self.source();
        source.server_time = Some(now);
        Observation {
            source,
            user: user.to_string(),
            state,
            observed_at: now,
            resync,
        }
    }

    fn snapshot(&self) -> Vec<(String, PresenceState)> {
        let sim = self.sim.lock().expect("sim lock");
        sim.users
            .iter()
            .cloned()
            .zip(sim.states.iter().cloned())
            .collect()
    }

    async fn send_all(&self, ctx: &ConnectorContext, resync: bool) -> Result<(), ()> {
        for (user, state) in self.snapshot() {
            if ctx
                .observations
                .send(self.observation(&user, state, resync))
                .await
                .is_err()
            {
                return Err(());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for SyntheticConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        Some(Arc::new(SyntheticCommands {
            name: self.name.clone(),
            sim: self.sim.clone(),
            sender: self.sender.clone(),
            source: self.source(),
        }))
    }

    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let span = tracing::info_span!("connector", source = "synthetic", connector = %self.name);
        let _enter = span.enter();
        *self.sender.lock().expect("sender lock") = Some(ctx.observations.clone());
        ctx.metrics
            .subscriptions
            .get_or_create(&crate::metrics::labels([
                ("connector", &self.name),
                ("state", "active"),
            ]))
            .set(self.config.users as i64);
        let mut shutdown = ctx.shutdown.clone();
        // First fetch: every user (a real connector's post-subscribe fetch).
        if self.send_all(&ctx, true).await.is_err() {
            return Ok(());
        }
        let mut rng = fastrand::Rng::with_seed(self.config.seed.wrapping_add(0x5eed));
        let mut emitted: u64 = 0;
        let tick = Duration::from_millis(10);
        let per_tick = self.config.rate * tick.as_secs_f64();
        let mut budget = 0.0f64;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = self.config.resync_interval.map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let unlimited = self.config.rate == 0.0;
            let done = self.config.max_changes.is_some_and(|m| emitted >= m);
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = async { resync.as_mut().unwrap().tick().await }, if resync.is_some() => {
                    if self.send_all(&ctx, true).await.is_err() { break; }
                }
                _ = interval.tick(), if !unlimited && !done => {
                    budget += per_tick;
                    while budget >= 1.0 && self.config.max_changes.is_none_or(|m| emitted < m) {
                        budget -= 1.0;
                        let obs = self.next_change(&mut rng, &mut emitted);
                        if ctx.observations.send(obs).await.is_err() { return Ok(()); }
                    }
                }
                _ = std::future::ready(()), if unlimited && !done => {
                    // Unlimited rate: emit a burst, then yield so shutdown is seen.
                    for _ in 0..256 {
                        if self.config.max_changes.is_some_and(|m| emitted >= m) { break; }
                        let obs = self.next_change(&mut rng, &mut emitted);
                        if ctx.observations.send(obs).await.is_err() { return Ok(()); }
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
        *self.sender.lock().expect("sender lock") = None;
        Ok(())
    }
}

impl SyntheticConnector {
    /// One simulated notification: usually a real change, sometimes a repeat of the state.
    fn next_change(&self, rng: &mut fastrand::Rng, emitted: &mut u64) -> Observation {
        let (user, state) = {
            let mut sim = self.sim.lock().expect("sim lock");
            let i = rng.usize(..sim.users.len());
            if rng.f64() >= self.config.repeat_ratio {
                let mut next = random_state(rng);
                // Make it a real change: a repeat is only produced on purpose above.
                while next == sim.states[i] {
                    next = random_state(rng);
                }
                sim.states[i] = next;
                *emitted += 1;
            }
            (sim.users[i].clone(), sim.states[i].clone())
        };
        self.observation(&user, state, false)
    }
}

struct SyntheticCommands {
    name: String,
    sim: Arc<Mutex<Sim>>,
    sender: Arc<Mutex<Option<super::ObservationSender>>>,
    source: SourceRef,
}

#[async_trait]
impl CommandTarget for SyntheticCommands {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn owns(&self, user: &str) -> bool {
        self.sim
            .lock()
            .expect("sim lock")
            .users
            .iter()
            .any(|u| u == user)
    }

    async fn apply(&self, cmd: &Command) -> CommandOutcome {
        let new_state = match cmd.action {
            CommandAction::ClearPresence => {
                PresenceState::new(Availability::Available).with_raw("availability", "Available")
            }
            CommandAction::SetPresence => {
                let Some(a) = cmd.availability else {
                    return CommandOutcome::Rejected("SET_PRESENCE needs an availability".into());
                };
                if a == Availability::Unknown {
                    return CommandOutcome::Rejected(
                        "UNKNOWN cannot be set; choose a real availability".into(),
                    );
                }
                let mut s = PresenceState::new(a).with_raw("availability", format!("{a:?}"));
                s.activity = cmd.activity;
                s.note = cmd.note.clone();
                s
            }
        };
        {
            let mut sim = self.sim.lock().expect("sim lock");
            let Some(i) = sim.users.iter().position(|u| *u == cmd.user) else {
                return CommandOutcome::Rejected(format!("unknown user {}", cmd.user));
            };
            sim.states[i] = new_state.clone();
        }
        // The change comes back through the pipeline like a notification-driven fetch.
        let sender = self.sender.lock().expect("sender lock").clone();
        if let Some(tx) = sender {
            let now = now_millis();
            let mut source = self.source.clone();
            source.server_time = Some(now);
            let _ = tx
                .send(Observation {
                    source,
                    user: cmd.user.clone(),
                    state: new_state,
                    observed_at: now,
                    resync: false,
                })
                .await;
        }
        CommandOutcome::Applied
    }
}
