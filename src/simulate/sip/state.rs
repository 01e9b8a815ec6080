//! One simulated user's state and the bodies a notifier renders from it: PIDF with RPID
//! (reference §3.6), dialog-info (§5) and simple-message-summary (§6).
//!
//! Rendering is split in two steps: a [`Snapshot`] is taken when a change happens (so every
//! NOTIFY carries the state of *its* change, in order), and turned into bytes when the
//! NOTIFY leaves, because a dialog-info `version` belongs to the subscription and is only
//! known then.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

/// The RFC 4480 activity tokens (reference §3.4). Anything else is refused by the control
/// API, so the simulator never emits a document a real client could not have sent.
pub const RPID_ACTIVITIES: &[&str] = &[
    "appointment",
    "away",
    "breakfast",
    "busy",
    "dinner",
    "holiday",
    "in-transit",
    "looking-for-work",
    "lunch",
    "meal",
    "meeting",
    "on-the-phone",
    "other",
    "performance",
    "permanent-absence",
    "playing",
    "presentation",
    "shopping",
    "sleeping",
    "spectator",
    "steering",
    "travel",
    "tv",
    "unknown",
    "vacation",
    "working",
    "worship",
];

/// PIDF `<basic>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basic {
    Open,
    Closed,
}

impl Basic {
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

/// What a user's client published: one tuple's `basic`, at most one RPID activity on the
/// person (none = "no particular activity", rendered as an empty `<rpid:activities/>`
/// like baresip does), and a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub basic: Basic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a [`Presence`] cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("unknown RPID activity {0:?} (RFC 4480 tokens only, e.g. busy, away, on-the-phone, meeting)")]
    Activity(String),
    #[error("note longer than {MAX_NOTE} characters")]
    NoteTooLong,
    #[error("unknown call state {0:?} (idle, ringing, dialing, in-call)")]
    CallState(String),
}

/// Longest note accepted (a PIDF note is a status line, not a document).
pub const MAX_NOTE: usize = 1024;

impl Presence {
    /// Open, no activity, no note: "available".
    pub fn available() -> Self {
        Presence {
            basic: Basic::Open,
            activity: None,
            note: None,
        }
    }

    pub fn new(basic: Basic, activity: Option<&str>, note: Option<&str>) -> Self {
        Presence {
            basic,
            activity: activity.map(str::to_string),
            note: note.map(str::to_string),
        }
    }

    /// Lowercases the activity, drops empty strings, checks the token and the note length.
    pub fn validated(mut self) -> Result<Self, StateError> {
        self.activity = self
            .activity
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty() && a != "available" && a != "none");
        if let Some(a) = &self.activity {
            if !RPID_ACTIVITIES.contains(&a.as_str()) {
                return Err(StateError::Activity(a.clone()));
            }
        }
        self.note = self.note.filter(|n| !n.trim().is_empty());
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE)
        {
            return Err(StateError::NoteTooLong);
        }
        Ok(self)
    }

    /// `open busy "In a call"`, for logs and the change log.
    pub fn summary(&self) -> String {
        let mut s = self.basic.as_str().to_string();
        if let Some(a) = &self.activity {
            s.push(' ');
            s.push_str(a);
        }
        if let Some(n) = &self.note {
            s.push_str(&format!(" {n:?}"));
        }
        s
    }
}

/// The telephony state a dialog-info document describes (reference §5, §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// No live dialog.
    Idle,
    /// An incoming call: `early`, `direction="recipient"`.
    Ringing,
    /// An outgoing call not yet answered: `early`, `direction="initiator"`.
    Dialing,
    /// A call in progress: `confirmed`.
    InCall,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Ringing => "ringing",
            CallState::Dialing => "dialing",
            CallState::InCall => "in-call",
        }
    }

    pub fn parse(s: &str) -> Result<CallState, StateError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "idle" | "none" => Ok(CallState::Idle),
            "ringing" | "early" => Ok(CallState::Ringing),
            "dialing" | "trying" => Ok(CallState::Dialing),
            "in-call" | "incall" | "confirmed" | "busy" | "on-the-phone" => Ok(CallState::InCall),
            other => Err(StateError::CallState(other.to_string())),
        }
    }
}

/// The user's current (or last) call, as the dialog package shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Calls made so far by this user; names the dialog (`id`, `call-id`, tags).
    pub number: u32,
    pub state: CallState,
    /// `true` when the user placed the call.
    pub initiator: bool,
    /// The other party (`sip:ext123@domain`).
    pub peer: String,
    /// The call was answered before it ended (`remote-bye` rather than `cancelled`).
    pub answered: bool,
}

impl Call {
    /// The next state of a user's call record when the telephony state becomes `to`.
    /// `None` when nothing changes.
    pub fn transition(
        current: Option<&Call>,
        to: CallState,
        peer: impl FnOnce() -> String,
    ) -> Option<Call> {
        let live = current.filter(|c| c.state != CallState::Idle);
        match (live, to) {
            (None, CallState::Idle) => None,
            (Some(c), CallState::Idle) => Some(Call {
                state: CallState::Idle,
                ..c.clone()
            }),
            (Some(c), s) if c.state == s => None,
            // Answering (or being answered) keeps the dialog; anything else starts a new one.
            (Some(c), CallState::InCall) => Some(Call {
                state: CallState::InCall,
                answered: true,
                ..c.clone()
            }),
            (_, s) => Some(Call {
                number: current.map_or(1, |c| c.number + 1),
                state: s,
                initiator: s == CallState::Dialing,
                peer: peer(),
                answered: s == CallState::InCall,
            }),
        }
    }
}

/// The state a NOTIFY carries, captured when the change happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// Nothing published for the presentity: an empty NOTIFY body (Kamailio does this,
    /// reference §2.3 rule 6).
    Empty,
    /// A complete `application/pidf+xml` document.
    Pidf(Arc<str>),
    /// A dialog-info document without its `version` (set per subscription when sent).
    Dialog {
        entity: Arc<str>,
        call: Option<Call>,
    },
    /// `application/simple-message-summary`.
    Mwi(Arc<str>),
}

impl Snapshot {
    /// `(Content-Type, body)`; `version` is only used by dialog-info.
    pub fn render(&self, version: u32) -> (&'static str, Vec<u8>) {
        match self {
            Snapshot::Empty => ("", Vec::new()),
            Snapshot::Pidf(doc) => ("application/pidf+xml", doc.as_bytes().to_vec()),
            Snapshot::Dialog { entity, call } => (
                "application/dialog-info+xml",
                dialog_info(entity, call.as_ref(), version).into_bytes(),
            ),
            Snapshot::Mwi(text) => (
                "application/simple-message-summary",
                text.as_bytes().to_vec(),
            ),
        }
    }
}

/// XML text/attribute escaping (`&`, `<`, `>`, `"`, `'`).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339 with milliseconds (`2024-05-01T09:00:00.123Z`): PIDF `timestamp` is an
/// xs:dateTime, and the milliseconds let a benchmark read the change time back.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The PIDF document of reference §3.6 for `name@domain`: one tuple (stable id, `basic`,
/// contact, timestamp) and one `dm:person` with the RPID activities, the note and the
/// timestamp of the change.
pub fn pidf(name: &str, domain: &str, p: &Presence, at: SystemTime) -> String {
    let entity = xml_escape(&format!("sip:{name}@{domain}"));
    let id = xml_escape(name);
    let ts = timestamp(at);
    let activities = match &p.activity {
        None => "<rpid:activities/>".to_string(),
        Some(a) => format!("<rpid:activities><rpid:{a}/></rpid:activities>"),
    };
    let note = p
        .note
        .as_deref()
        .map(|n| format!("\n    <dm:note>{}</dm:note>", xml_escape(n)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{entity}\">\n  \
<tuple id=\"t-{id}\">\n    \
<status><basic>{basic}</basic></status>\n    \
<contact priority=\"0.8\">{entity}</contact>\n    \
<timestamp>{ts}</timestamp>\n  \
</tuple>\n  \
<dm:person id=\"p-{id}\">\n    \
{activities}{note}\n    \
<dm:timestamp>{ts}</dm:timestamp>\n  \
</dm:person>\n\
</presence>\n",
        basic = p.basic.as_str(),
    )
}

/// A `state="full"` dialog-info document (reference §5): no dialog element for a user who
/// never called, else the current/last call (`early`, `confirmed`, or `terminated` with
/// `remote-bye` / `cancelled`).
pub fn dialog_info(entity: &str, call: Option<&Call>, version: u32) -> String {
    let entity_x = xml_escape(entity);
    let Some(c) = call else {
        return format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{entity_x}\"/>\n"
        );
    };
    let state = match c.state {
        CallState::Idle if c.answered => "<state event=\"remote-bye\">terminated</state>",
        CallState::Idle => "<state event=\"cancelled\">terminated</state>",
        CallState::Ringing | CallState::Dialing => "<state>early</state>",
        CallState::InCall => "<state>confirmed</state>",
    };
    let user = entity
        .split('@')
        .next()
        .unwrap_or(entity)
        .trim_start_matches("sip:");
    let n = c.number;
    let direction = if c.initiator {
        "initiator"
    } else {
        "recipient"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{entity_x}\">\n  \
<dialog id=\"d-{u}-{n}\" call-id=\"c-{u}-{n}@sim\" local-tag=\"lt-{u}-{n}\" remote-tag=\"rt-{u}-{n}\" direction=\"{direction}\">\n    \
{state}\n    \
<local><identity>{entity_x}</identity></local>\n    \
<remote><identity>{peer}</identity></remote>\n  \
</dialog>\n\
</dialog-info>\n",
        u = xml_escape(user),
        peer = xml_escape(&c.peer),
    )
}

/// RFC 3842 body.
pub fn message_summary(aor: &str, new: u32, old: u32) -> String {
    format!(
        "Messages-Waiting: {}\r\nMessage-Account: sip:{aor}\r\nVoice-Message: {new}/{old} (0/0)\r\n",
        if new > 0 { "yes" } else { "no" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidf_has_person_activity_note_and_escapes() {
        let p = Presence::new(Basic::Open, Some("meeting"), Some("Q3 <review> & \"plan\""));
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_714_554_000_123);
        let doc = pidf("alice", "example.com", &p, t);
        assert!(doc.contains("entity=\"sip:alice@example.com\""));
        assert!(doc.contains("<basic>open</basic>"));
        assert!(doc.contains("<rpid:activities><rpid:meeting/></rpid:activities>"));
        assert!(doc.contains("<dm:note>Q3 &lt;review&gt; &amp; &quot;plan&quot;</dm:note>"));
        assert!(doc.contains("<timestamp>2024-05-01T09:00:00.123Z</timestamp>"));
        assert!(doc.contains("<dm:timestamp>2024-05-01T09:00:00.123Z</dm:timestamp>"));
        let closed = pidf(
            "bob",
            "example.com",
            &Presence::new(Basic::Closed, None, None),
            t,
        );
        assert!(closed.contains("<basic>closed</basic>"));
        assert!(closed.contains("<rpid:activities/>"));
        assert!(!closed.contains("dm:note"));
    }

    #[test]
    fn presence_validation() {
        let p = Presence::new(Basic::Open, Some(" On-The-Phone "), Some("  ")).validated();
        assert_eq!(
            p.unwrap(),
            Presence::new(Basic::Open, Some("on-the-phone"), None)
        );
        let p = Presence::new(Basic::Open, Some("available"), None).validated();
        assert_eq!(p.unwrap(), Presence::available());
        assert!(matches!(
            Presence::new(Basic::Open, Some("dnd"), None).validated(),
            Err(StateError::Activity(_))
        ));
        let long = "x".repeat(MAX_NOTE + 1);
        assert!(Presence::new(Basic::Open, None, Some(&long))
            .validated()
            .is_err());
    }

    #[test]
    fn call_transitions_and_dialog_info() {
        let peer = || "sip:ext100@example.com".to_string();
        assert_eq!(Call::transition(None, CallState::Idle, peer), None);
        let ringing = Call::transition(None, CallState::Ringing, peer).unwrap();
        assert_eq!((ringing.number, ringing.initiator), (1, false));
        let doc = dialog_info("sip:alice@example.com", Some(&ringing), 3);
        assert!(doc.contains("version=\"3\" state=\"full\""));
        assert!(doc.contains("direction=\"recipient\""));
        assert!(doc.contains("<state>early</state>"));
        let answered = Call::transition(Some(&ringing), CallState::InCall, peer).unwrap();
        assert_eq!((answered.number, answered.answered), (1, true));
        assert!(dialog_info("sip:alice@example.com", Some(&answered), 4)
            .contains("<state>confirmed</state>"));
        assert_eq!(
            Call::transition(Some(&answered), CallState::InCall, peer),
            None
        );
        let ended = Call::transition(Some(&answered), CallState::Idle, peer).unwrap();
        assert!(dialog_info("sip:alice@example.com", Some(&ended), 5)
            .contains("<state event=\"remote-bye\">terminated</state>"));
        let dialing = Call::transition(Some(&ended), CallState::Dialing, peer).unwrap();
        assert_eq!((dialing.number, dialing.initiator), (2, true));
        let cancelled = Call::transition(Some(&dialing), CallState::Idle, peer).unwrap();
        assert!(dialog_info("sip:alice@example.com", Some(&cancelled), 6)
            .contains("<state event=\"cancelled\">terminated</state>"));
        let empty = dialog_info("sip:alice@example.com", None, 1);
        assert!(empty.contains("version=\"1\" state=\"full\" entity=\"sip:alice@example.com\"/>"));
    }

    #[test]
    fn mwi_body() {
        let b = message_summary("alice@example.com", 2, 8);
        assert_eq!(
            b,
            "Messages-Waiting: yes\r\nMessage-Account: sip:alice@example.com\r\nVoice-Message: 2/8 (0/0)\r\n"
        );
        assert!(message_summary("a@b", 0, 1).starts_with("Messages-Waiting: no"));
    }
}
