//! What the connector holds per user: the latest presence document, the dialog overlay
//! and the message summary, from however many subscriptions (a presence and a dialog
//! subscription of one user, or a resource list naming them). Every update re-runs the
//! pure §11 mapper ([`normalize`]) over the whole, so presence and dialog state of one
//! presentity make one normalized state (reference §11.2).

use std::collections::HashMap;
use std::sync::Mutex;

use super::body::rlmi::InstanceState;
use super::body::{parse_body, Body, BodyError, DialogTracker, MessageSummary, TrackOutcome};
use super::config::{Package, SipConfig};
use super::message::{SipMessage, SubState};
use super::normalize::{normalize, terminated_changes_state, PresenceDoc, SipNormalizeOptions};
use super::subscription::Spec;
use crate::metrics::{labels, Metrics};
use crate::model::PresenceState;

#[derive(Default)]
struct Entry {
    presence: Option<PresenceDoc>,
    dialog: Option<DialogTracker>,
    mwi: Option<MessageSummary>,
}

/// Per-user state of one connector.
pub struct Presentities {
    opts: SipNormalizeOptions,
    users: Mutex<HashMap<String, Entry>>,
    /// Subscription states for the `subscriptions` gauge: (user, package) → state.
    states: Mutex<HashMap<(String, Package), &'static str>>,
}

/// A list resource's user id: the AOR of its URI.
fn aor(uri: &str) -> String {
    super::normalize::user_from_uri(uri)
}

impl Presentities {
    pub fn new(config: &SipConfig) -> Self {
        Presentities {
            opts: SipNormalizeOptions {
                empty_active_is_offline: config.empty_means_offline,
                dialing_is_on_the_phone: config.dialing_is_on_the_phone,
            },
            users: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
        }
    }

    fn state_of(&self, e: &Entry) -> PresenceState {
        normalize(
            e.presence.as_ref(),
            e.dialog.as_ref().map(|d| d.telephony()),
            e.mwi.as_ref(),
            &self.opts,
        )
    }

    /// Applies one NOTIFY; returns the users whose state was recomputed, and whether the
    /// subscription should be refreshed to get a full document (a dialog-info gap).
    pub fn on_notify(
        &self,
        spec: &Spec,
        msg: &SipMessage,
        first: bool,
    ) -> Result<(Vec<(String, PresenceState)>, bool), BodyError> {
        let ss = msg.subscription_state();
        let state = ss.as_ref().map(|s| s.state.clone());
        let content_type = msg.header("Content-Type").unwrap_or("");
        let body = if msg.body.is_empty() || content_type.is_empty() {
            None
        } else {
            Some(parse_body(content_type, &msg.body)?)
        };
        let mut users = self.users.lock().expect("presentities lock");
        if spec.list {
            let Some(Body::List(list)) = body else {
                // A list NOTIFY without a list body carries no per-user state.
                return Ok((Vec::new(), false));
            };
            let mut out = Vec::new();
            for r in &list.resources {
                let user = aor(&r.uri);
                if user.is_empty() {
                    continue;
                }
                // A resource whose back-end subscription ended for good is unknown now
                // (§11.1); pending ones and ones without state wait for state.
                let live = r.best_instance().filter(|i| i.body().is_some());
                let gone = r
                    .instances
                    .iter()
                    .find_map(|i| match (&i.state, &i.reason) {
                        (InstanceState::Terminated, Some(reason))
                            if terminated_changes_state(reason) =>
                        {
                            Some(reason.clone())
                        }
                        _ => None,
                    });
                let Some(inst) = live else {
                    if let Some(reason) = gone {
                        let e = users.entry(user.clone()).or_default();
                        e.presence = Some(PresenceDoc::Terminated { reason });
                        out.push((user, self.state_of(e)));
                    }
                    continue;
                };
                let e = users.entry(user.clone()).or_default();
                if let Some(b) = inst.body() {
                    if apply_body(e, b, first) == Applied::Changed {
                        out.push((user, self.state_of(e)));
                    }
                }
            }
            return Ok((out, false));
        }
        let e = users.entry(spec.aor.clone()).or_default();
        let applied = match (spec.package, body) {
            (Package::Presence, Some(b)) => apply_body(e, &b, first),
            (Package::Presence, None) => match state {
                // "Nobody published" is state; a terminating NOTIFY without body is not.
                Some(SubState::Terminated) => Applied::Unchanged,
                Some(SubState::Active) => {
                    e.presence = Some(PresenceDoc::EmptyActive);
                    Applied::Changed
                }
                _ => {
                    e.presence = Some(PresenceDoc::EmptyPending);
                    Applied::Changed
                }
            },
            (Package::Dialog, Some(b)) => {
                if first {
                    // Versions restart with every new subscription (§5 rule 1).
                    e.dialog = Some(DialogTracker::new());
                }
                apply_body(e, &b, first)
            }
            (Package::Dialog, None) => Applied::Unchanged,
            (Package::MessageSummary, Some(b)) => apply_body(e, &b, first),
            (Package::MessageSummary, None) => Applied::Unchanged,
        };
        Ok(match applied {
            Applied::Changed => (vec![(spec.aor.clone(), self.state_of(e))], false),
            Applied::Unchanged => (Vec::new(), false),
            Applied::NeedsFull => (Vec::new(), true),
        })
    }

    /// The subscription ended for a reason that stops retries.
    pub fn on_gone(&self, spec: &Spec, why: &str) -> Vec<(String, PresenceState)> {
        let reason = why.rsplit("reason=").next().unwrap_or("").to_string();
        if spec.list || !terminated_changes_state(&reason) && spec.package == Package::Presence {
            return Vec::new();
        }
        let mut users = self.users.lock().expect("presentities lock");
        let e = users.entry(spec.aor.clone()).or_default();
        match spec.package {
            Package::Presence => e.presence = Some(PresenceDoc::Terminated { reason }),
            Package::Dialog => e.dialog = None,
            Package::MessageSummary => e.mwi = None,
        }
        vec![(spec.aor.clone(), self.state_of(e))]
    }

    /// The state of a user composed from inbound publications (newest presence and
    /// dialog document), with "nobody published" when there is no presence document.
    pub fn compose_published(
        &self,
        _aor: &str,
        presence: Option<(String, Vec<u8>)>,
        dialog: Option<(String, Vec<u8>)>,
    ) -> Result<PresenceState, BodyError> {
        let mut e = Entry::default();
        match presence {
            Some((ct, b)) => {
                apply_body(&mut e, &parse_body(&ct, &b)?, true);
            }
            None => e.presence = Some(PresenceDoc::EmptyActive),
        }
        if let Some((ct, b)) = dialog {
            e.dialog = Some(DialogTracker::new());
            // A publication is a full document; its version has no history here.
            if let Body::Dialog(mut info) = parse_body(&ct, &b)? {
                info.state = super::body::dialog::DocState::Full;
                if let Some(t) = e.dialog.as_mut() {
                    t.apply(&info);
                }
            }
        }
        Ok(self.state_of(&e))
    }

    /// Tracks one subscription's state for the `subscriptions{state}` gauge.
    pub fn set_sub_state(
        &self,
        metrics: &Metrics,
        connector: &str,
        user: &str,
        package: Package,
        state: Option<&'static str>,
    ) {
        let mut states = self.states.lock().expect("states lock");
        let key = (user.to_string(), package);
        let old = match state {
            Some(s) => states.insert(key, s),
            None => states.remove(&key),
        };
        if old == state {
            return;
        }
        if let Some(o) = old {
            metrics
                .subscriptions
                .get_or_create(&labels([("connector", connector), ("state", o)]))
                .dec();
        }
        if let Some(s) = state {
            metrics
                .subscriptions
                .get_or_create(&labels([("connector", connector), ("state", s)]))
                .inc();
        }
    }
}

/// What applying a body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Changed,
    /// Nothing changed (a stale dialog document).
    Unchanged,
    /// A partial dialog document after a gap: the state is incomplete until a full one.
    NeedsFull,
}

/// Applies a parsed body to a user's entry.
fn apply_body(e: &mut Entry, body: &Body, first: bool) -> Applied {
    match body {
        Body::Pidf(_) | Body::Xpidf(_) => {
            e.presence = PresenceDoc::from_body(body.clone());
            Applied::Changed
        }
        Body::Dialog(info) => {
            let t = e.dialog.get_or_insert_with(DialogTracker::new);
            if first && t.version().is_some() {
                t.reset();
            }
            match t.apply(info) {
                TrackOutcome::Applied => Applied::Changed,
                TrackOutcome::Stale { .. } => Applied::Unchanged,
                // A gap in partial documents: keep the last full picture and ask for a
                // full document (a refresh makes the notifier send one, §5 rule 1).
                TrackOutcome::NeedsFullState { .. } => Applied::NeedsFull,
            }
        }
        Body::Mwi(m) => {
            e.mwi = Some(m.clone());
            Applied::Changed
        }
        // A list nested where a single document was expected: nothing per user here.
        Body::List(_) => Applied::Unchanged,
    }
}
