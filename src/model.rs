//! The normalized presence model shared by every connector and every sink.
//!
//! The Rust types mirror the Avro schemas in `schemas/` field by field and symbol by
//! symbol: the Avro encoder in [`crate::codec`] writes struct fields in declaration order
//! and enum variants by index, so **the order of fields and variants here is the wire
//! format**. `tests/schemas.rs` checks that order against the committed `.avsc` files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the Unix epoch (Avro `timestamp-millis`).
pub type Millis = i64;

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Normalized availability. `Unknown` is also what readers fall back to for symbols added
/// after they were built (the schema's enum default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Availability {
    Available,
    AvailableIdle,
    Away,
    BeRightBack,
    Busy,
    BusyIdle,
    DoNotDisturb,
    Offline,
    Unknown,
}

impl Availability {
    pub const ALL: [Availability; 9] = [
        Availability::Available,
        Availability::AvailableIdle,
        Availability::Away,
        Availability::BeRightBack,
        Availability::Busy,
        Availability::BusyIdle,
        Availability::DoNotDisturb,
        Availability::Offline,
        Availability::Unknown,
    ];

    /// The schema symbol, e.g. `DO_NOT_DISTURB`.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "AVAILABLE",
            Availability::AvailableIdle => "AVAILABLE_IDLE",
            Availability::Away => "AWAY",
            Availability::BeRightBack => "BE_RIGHT_BACK",
            Availability::Busy => "BUSY",
            Availability::BusyIdle => "BUSY_IDLE",
            Availability::DoNotDisturb => "DO_NOT_DISTURB",
            Availability::Offline => "OFFLINE",
            Availability::Unknown => "UNKNOWN",
        }
    }

    /// Parses a schema symbol (case-insensitive, `-` accepted for `_`).
    pub fn parse(s: &str) -> Option<Self> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        Self::ALL.into_iter().find(|a| a.as_str() == norm)
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalized activity. The set is open: a source value with no symbol here becomes
/// `Other`, and the source's own value stays in [`PresenceState::raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Activity {
    InACall,
    InAConferenceCall,
    InAMeeting,
    Presenting,
    OutOfOffice,
    Vacation,
    Focusing,
    OffWork,
    Inactive,
    UrgentInterruptionsOnly,
    Other,
}

impl Activity {
    pub const ALL: [Activity; 11] = [
        Activity::InACall,
        Activity::InAConferenceCall,
        Activity::InAMeeting,
        Activity::Presenting,
        Activity::OutOfOffice,
        Activity::Vacation,
        Activity::Focusing,
        Activity::OffWork,
        Activity::Inactive,
        Activity::UrgentInterruptionsOnly,
        Activity::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Activity::InACall => "IN_A_CALL",
            Activity::InAConferenceCall => "IN_A_CONFERENCE_CALL",
            Activity::InAMeeting => "IN_A_MEETING",
            Activity::Presenting => "PRESENTING",
            Activity::OutOfOffice => "OUT_OF_OFFICE",
            Activity::Vacation => "VACATION",
            Activity::Focusing => "FOCUSING",
            Activity::OffWork => "OFF_WORK",
            Activity::Inactive => "INACTIVE",
            Activity::UrgentInterruptionsOnly => "URGENT_INTERRUPTIONS_ONLY",
            Activity::Other => "OTHER",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        Self::ALL.into_iter().find(|a| a.as_str() == norm)
    }
}

/// One user's presence, normalized, with the source's raw values kept beside it.
///
/// Equality is what the pipeline uses to decide "unchanged → no event", so it covers every
/// field including `raw`: a change only visible in a raw value is still a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceState {
    pub availability: Availability,
    #[serde(default)]
    pub activity: Option<Activity>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub last_active: Option<Millis>,
    #[serde(default)]
    pub out_of_office: Option<bool>,
    /// Raw source values by name (e.g. `availability` → `IdleBusy`). A `BTreeMap` so the
    /// encoding is deterministic and equal states encode to equal bytes.
    #[serde(default)]
    pub raw: BTreeMap<String, String>,
}

impl PresenceState {
    pub fn new(availability: Availability) -> Self {
        PresenceState {
            availability,
            activity: None,
            note: None,
            device: None,
            last_active: None,
            out_of_office: None,
            raw: BTreeMap::new(),
        }
    }

    pub fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = Some(activity);
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn with_raw(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.raw.insert(key.into(), value.into());
        self
    }
}

/// Whether an event is the first sight of a user at a source or a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeOp {
    Snapshot,
    Change,
}

/// Which source an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Connector kind: `pws`, `ucwa`, `graph`, `sip`, `synthetic`.
    pub kind: String,
    /// The configured connector name; with the user it keys state and event ids.
    pub connector: String,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub server_time: Option<Millis>,
}

/// The event the bridge publishes: previous and current state of one user at one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub event_id: String,
    pub op: ChangeOp,
    #[serde(default)]
    pub resync: bool,
    pub source: SourceRef,
    pub user: String,
    pub sequence: i64,
    pub observed_at: Millis,
    #[serde(default)]
    pub previous: Option<PresenceState>,
    pub current: PresenceState,
}

/// A [`PresenceChange`] borrowing its parts from the observation and the last state, so the
/// hot path encodes without cloning. Same fields in the same order: same Avro bytes.
#[derive(Debug, Serialize)]
pub struct PresenceChangeRef<'a> {
    pub event_id: String,
    pub op: ChangeOp,
    pub resync: bool,
    pub source: &'a SourceRef,
    pub user: &'a str,
    pub sequence: i64,
    pub observed_at: Millis,
    pub previous: Option<&'a PresenceState>,
    pub current: &'a PresenceState,
}

impl PresenceChangeRef<'_> {
    pub fn to_owned(&self) -> PresenceChange {
        PresenceChange {
            event_id: self.event_id.clone(),
            op: self.op,
            resync: self.resync,
            source: self.source.clone(),
            user: self.user.to_string(),
            sequence: self.sequence,
            observed_at: self.observed_at,
            previous: self.previous.cloned(),
            current: self.current.clone(),
        }
    }
}

/// Namespace for event ids (UUIDv5). Fixed forever: changing it changes every event id.
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x6f, 0x1c, 0x0e, 0x4a, 0x52, 0x9b, 0x4d, 0x35, 0x9a, 0x1e, 0x2b, 0x70, 0x5d, 0x8e, 0x41, 0xc3,
]);

/// Deterministic event id: the same (connector, user, sequence) always gives the same id,
/// so a re-publish after a crash is recognisable downstream (Kafka header, `Nats-Msg-Id`).
pub fn event_id(connector: &str, user: &str, sequence: i64) -> String {
    // NUL separators: neither connector names nor user ids may contain NUL, so distinct
    // triples never collide by concatenation.
    let mut name = Vec::with_capacity(connector.len() + user.len() + 24);
    name.extend_from_slice(connector.as_bytes());
    name.push(0);
    name.extend_from_slice(user.as_bytes());
    name.push(0);
    name.extend_from_slice(sequence.to_string().as_bytes());
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
        .hyphenated()
        .to_string()
}

/// Canonical user id: trimmed, lower-case, any `sip:`/`sips:`/`tel:`/`mailto:` scheme removed.
/// Every connector passes user ids through this, so one person has one key everywhere.
pub fn canonical_user(raw: &str) -> String {
    let t = raw.trim();
    let lower = t.to_lowercase();
    for scheme in ["sips:", "sip:", "tel:", "mailto:"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            return rest.to_string();
        }
    }
    lower
}

/// What a connector hands to the pipeline: one fetched state of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub source: SourceRef,
    /// Canonical user id (see [`canonical_user`]).
    pub user: String,
    pub state: PresenceState,
    pub observed_at: Millis,
    /// Found by a periodic fetch / resync rather than in answer to a notification.
    pub resync: bool,
}

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandAction {
    SetPresence,
    ClearPresence,
}

fn default_action() -> CommandAction {
    CommandAction::SetPresence
}

/// A command from the command topic (Avro `PresenceCommand`, or the same fields as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub command_id: String,
    #[serde(default = "default_action")]
    pub action: CommandAction,
    pub user: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub availability: Option<Availability>,
    #[serde(default)]
    pub activity: Option<Activity>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub expiry_seconds: Option<i64>,
    #[serde(default)]
    pub issued_at: Option<Millis>,
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    Applied,
    Rejected,
    Failed,
    Unsupported,
    Unknown,
}

/// Published once per command on the results topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub command_id: String,
    pub user: String,
    #[serde(default)]
    pub connector: Option<String>,
    pub status: CommandStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub duplicate: bool,
    pub completed_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_deterministic_and_distinct() {
        let a = event_id("pws-main", "alice@example.com", 7);
        assert_eq!(a, event_id("pws-main", "alice@example.com", 7));
        assert_ne!(a, event_id("pws-main", "alice@example.com", 8));
        assert_ne!(a, event_id("pws-main2", "alice@example.com", 7));
        // Concatenation ambiguity is ruled out by the separators.
        assert_ne!(event_id("ab", "c", 1), event_id("a", "bc", 1));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn canonical_user_table() {
        for (input, want) in [
            ("Alice@Example.COM", "alice@example.com"),
            ("  sip:Bob@example.com ", "bob@example.com"),
            ("SIPS:carol@x.org", "carol@x.org"),
            ("tel:+4930123", "+4930123"),
            ("mailto:Dan@x.org", "dan@x.org"),
        ] {
            assert_eq!(canonical_user(input), want, "{input}");
        }
    }

    #[test]
    fn availability_parse_round_trips() {
        for a in Availability::ALL {
            assert_eq!(Availability::parse(a.as_str()), Some(a));
        }
        assert_eq!(
            Availability::parse("do-not-disturb"),
            Some(Availability::DoNotDisturb)
        );
        assert_eq!(Availability::parse("sleepy"), None);
        for a in Activity::ALL {
            assert_eq!(Activity::parse(a.as_str()), Some(a));
        }
    }
}
