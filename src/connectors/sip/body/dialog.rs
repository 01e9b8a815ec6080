//! Dialog event package (RFC 4235, reference §5): the busy-lamp-field body, and the
//! per-subscription [`DialogTracker`] that applies full and partial documents.
//!
//! Read (namespace `urn:ietf:params:xml:ns:dialog-info`, any prefix): `dialog-info`
//! `@version` (required, unsigned), `@state` (`full` | `partial`, required), `@entity`;
//! `dialog` `@id @call-id @local-tag @remote-tag @direction`, its `state` text with
//! `@event`/`@code`, and `remote/identity` (text and `@display`). `Event: dialog;sla`
//! bodies are the same document with extra elements, which are skipped.
//!
//! A dialog without `@id` (required by the RFC, but not every PBX cares) is keyed by its
//! `@call-id`, else by its position (`#3`), so partial updates still find it when the
//! notifier is consistent.
//!
//! Tracking (§5 rules 1–3): a document whose `version` is not above the last applied one is
//! dropped ([`TrackOutcome::Stale`]); `full` replaces the dialog set; `partial` updates the
//! listed dialogs by id and needs `version == last + 1`, else
//! [`TrackOutcome::NeedsFullState`] (refresh the subscription to get a full document; the
//! current set is kept meanwhile). Terminated dialogs are removed. Versions restart with a
//! new subscription: use a new tracker (or [`DialogTracker::reset`]).
//!
//! Telephony from the live dialogs: any `confirmed` → [`Telephony::InCall`]; else any
//! `trying`/`proceeding`/`early` that is `recipient` (or has no direction: it cannot be
//! ours to dial, and ringing leaves the availability alone) → [`Telephony::Ringing`]; else
//! any early `initiator` → [`Telephony::Dialing`]; else [`Telephony::Idle`].

use super::xml::{non_empty, token, Elem, Ns, Parser};
use super::{BodyError, MAX_ITEMS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocState {
    Full,
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Initiator,
    Recipient,
}

/// The `state` of one dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogState {
    Trying,
    Proceeding,
    Early,
    Confirmed,
    Terminated,
    /// Anything else (kept lower-cased; empty when the element is missing).
    Other(String),
}

impl DialogState {
    fn parse(s: &str) -> DialogState {
        match token(s).as_str() {
            "trying" => DialogState::Trying,
            "proceeding" => DialogState::Proceeding,
            "early" => DialogState::Early,
            "confirmed" => DialogState::Confirmed,
            "terminated" => DialogState::Terminated,
            other => DialogState::Other(other.to_string()),
        }
    }

    fn is_early(&self) -> bool {
        matches!(
            self,
            DialogState::Trying | DialogState::Proceeding | DialogState::Early
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    pub version: u64,
    pub state: DocState,
    pub entity: String,
    pub dialogs: Vec<Dialog>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: String,
    pub call_id: Option<String>,
    pub local_tag: Option<String>,
    pub remote_tag: Option<String>,
    pub direction: Option<Direction>,
    pub state: DialogState,
    /// `state/@event` on terminated dialogs: `cancelled`, `rejected`, `remote-bye`, …
    pub event: Option<String>,
    /// `state/@code`: the SIP status that caused the state.
    pub code: Option<u16>,
    pub remote_identity: Option<String>,
    pub remote_display: Option<String>,
}

/// Telephony state derived from the live dialogs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telephony {
    Idle,
    Ringing,
    InCall,
    Dialing,
}

impl Telephony {
    /// `idle` | `ringing` | `in-a-call` | `dialing` (the `sip.dialog` raw value).
    pub fn as_str(self) -> &'static str {
        match self {
            Telephony::Idle => "idle",
            Telephony::Ringing => "ringing",
            Telephony::InCall => "in-a-call",
            Telephony::Dialing => "dialing",
        }
    }

    /// Telephony of a set of dialogs (terminated ones count for nothing).
    pub fn of<'a>(dialogs: impl IntoIterator<Item = &'a Dialog>) -> Telephony {
        let mut ringing = false;
        let mut dialing = false;
        for d in dialogs {
            if d.state == DialogState::Confirmed {
                return Telephony::InCall;
            }
            if d.state.is_early() {
                match d.direction {
                    Some(Direction::Initiator) => dialing = true,
                    Some(Direction::Recipient) | None => ringing = true,
                }
            }
        }
        if ringing {
            Telephony::Ringing
        } else if dialing {
            Telephony::Dialing
        } else {
            Telephony::Idle
        }
    }
}

/// Parses an `application/dialog-info+xml` body.
pub fn parse(body: &[u8]) -> Result<DialogInfo, BodyError> {
    let mut p = Parser::new(body);
    let root = p.root()?;
    if (root.ns, root.local()) != (Ns::DialogInfo, &b"dialog-info"[..]) {
        return Err(BodyError::UnexpectedRoot {
            expected: "<dialog-info> in urn:ietf:params:xml:ns:dialog-info",
            found: root.shown(),
        });
    }
    let [version, state, entity] = p.attrs(&root, [b"version", b"state", b"entity"])?;
    let version = version.ok_or(BodyError::MissingAttribute {
        element: "dialog-info",
        attribute: "version",
    })?;
    let version = version
        .parse::<u64>()
        .map_err(|_| BodyError::InvalidAttribute {
            element: "dialog-info",
            attribute: "version",
            value: version.clone(),
        })?;
    let state = match state.as_deref().map(token).as_deref() {
        Some("full") => DocState::Full,
        Some("partial") => DocState::Partial,
        Some(_) => {
            return Err(BodyError::InvalidAttribute {
                element: "dialog-info",
                attribute: "state",
                value: state.unwrap_or_default(),
            })
        }
        None => {
            return Err(BodyError::MissingAttribute {
                element: "dialog-info",
                attribute: "state",
            })
        }
    };
    let mut info = DialogInfo {
        version,
        state,
        entity: entity.unwrap_or_default(),
        dialogs: Vec::new(),
    };
    while let Some(child) = p.child()? {
        if (child.ns, child.local()) != (Ns::DialogInfo, &b"dialog"[..]) {
            p.skip()?;
            continue;
        }
        if info.dialogs.len() >= MAX_ITEMS {
            return Err(BodyError::TooMany {
                element: "<dialog> elements",
                limit: MAX_ITEMS,
            });
        }
        let position = info.dialogs.len();
        let dialog = parse_dialog(&mut p, &child, position)?;
        info.dialogs.push(dialog);
    }
    Ok(info)
}

fn parse_dialog(p: &mut Parser<'_>, e: &Elem<'_>, position: usize) -> Result<Dialog, BodyError> {
    let [id, call_id, local_tag, remote_tag, direction] = p.attrs(
        e,
        [b"id", b"call-id", b"local-tag", b"remote-tag", b"direction"],
    )?;
    let (id, call_id) = (id.and_then(non_empty), call_id.and_then(non_empty));
    let mut dialog = Dialog {
        id: id
            .or_else(|| call_id.clone())
            .unwrap_or_else(|| format!("#{position}")),
        call_id,
        local_tag: local_tag.and_then(non_empty),
        remote_tag: remote_tag.and_then(non_empty),
        direction: match direction.as_deref().map(token).as_deref() {
            Some("initiator") => Some(Direction::Initiator),
            Some("recipient") => Some(Direction::Recipient),
            _ => None,
        },
        state: DialogState::Other(String::new()),
        event: None,
        code: None,
        remote_identity: None,
        remote_display: None,
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::DialogInfo, b"state") => {
                let [event, code] = p.attrs(&child, [b"event", b"code"])?;
                dialog.event = event.map(|e| token(&e)).and_then(non_empty);
                dialog.code = code.and_then(|c| c.parse().ok());
                dialog.state = DialogState::parse(&p.text()?);
            }
            (Ns::DialogInfo, b"remote") => {
                while let Some(part) = p.child()? {
                    if (part.ns, part.local()) == (Ns::DialogInfo, &b"identity"[..]) {
                        let [display] = p.attrs(&part, [b"display"])?;
                        dialog.remote_display = display.and_then(non_empty);
                        dialog.remote_identity = non_empty(p.text()?);
                    } else {
                        p.skip()?;
                    }
                }
            }
            _ => p.skip()?,
        }
    }
    Ok(dialog)
}

/// What [`DialogTracker::apply`] did with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackOutcome {
    /// Applied; the telephony state may have changed.
    Applied,
    /// `version` not above the last applied one: dropped (a retransmission or reordering).
    Stale { last: u64, got: u64 },
    /// A partial document that does not follow the last applied version (or arrives before
    /// any full one): dropped; refresh the subscription to get a full document.
    NeedsFullState { last: Option<u64>, got: u64 },
}

/// The live dialogs of one dialog subscription (§5 processing rules 1–3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialogTracker {
    version: Option<u64>,
    dialogs: Vec<Dialog>,
}

impl DialogTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget everything (a new subscription restarts the versions).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The last applied version.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The live (not terminated) dialogs, in the order first seen.
    pub fn dialogs(&self) -> &[Dialog] {
        &self.dialogs
    }

    pub fn telephony(&self) -> Telephony {
        Telephony::of(&self.dialogs)
    }

    pub fn apply(&mut self, info: &DialogInfo) -> TrackOutcome {
        if let Some(last) = self.version {
            if info.version <= last {
                return TrackOutcome::Stale {
                    last,
                    got: info.version,
                };
            }
        }
        match info.state {
            DocState::Full => {
                self.dialogs = info
                    .dialogs
                    .iter()
                    .filter(|d| d.state != DialogState::Terminated)
                    .cloned()
                    .collect();
            }
            DocState::Partial => {
                if self.version.and_then(|v| v.checked_add(1)) != Some(info.version) {
                    return TrackOutcome::NeedsFullState {
                        last: self.version,
                        got: info.version,
                    };
                }
                for d in &info.dialogs {
                    let existing = self.dialogs.iter().position(|x| x.id == d.id);
                    match (existing, d.state == DialogState::Terminated) {
                        (Some(i), true) => {
                            self.dialogs.remove(i);
                        }
                        (Some(i), false) => self.dialogs[i] = d.clone(),
                        (None, true) => {}
                        // Bounded like a document: more live dialogs than one body may
                        // carry is not a real phone; extra ones are not tracked.
                        (None, false) if self.dialogs.len() < MAX_ITEMS => {
                            self.dialogs.push(d.clone())
                        }
                        (None, false) => {}
                    }
                }
            }
        }
        self.version = Some(info.version);
        TrackOutcome::Applied
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Kamailio presence_dialoginfo relaying a published dialog (§5, observed).
    pub const KAMAILIO: &str = r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="d-sipp-15433" call-id="call-15433@sipp" local-tag="lt15433" remote-tag="rt15433" direction="initiator">
    <state>confirmed</state>
    <local><identity>sip:alice@127.0.0.1</identity></local>
    <remote><identity>sip:carol@127.0.0.1</identity></remote>
  </dialog>
</dialog-info>"#;

    /// The four documents of `shared/peers/sipp/notifier-dialog.xml`.
    pub const SIPP: [&str; 4] = [
        r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:alice@127.0.0.1">
</dialog-info>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="partial" entity="sip:alice@127.0.0.1">
  <dialog id="d1" call-id="c1@peer" local-tag="l1" remote-tag="r1" direction="recipient">
    <state>early</state>
    <remote><identity display="Carol">sip:carol@127.0.0.1</identity></remote>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="partial" entity="sip:alice@127.0.0.1">
  <dialog id="d1" call-id="c1@peer" local-tag="l1" remote-tag="r1" direction="recipient">
    <state>confirmed</state>
    <remote><identity display="Carol">sip:carol@127.0.0.1</identity></remote>
  </dialog>
</dialog-info>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:alice@127.0.0.1">
  <dialog id="d1" call-id="c1@peer" local-tag="l1" remote-tag="r1" direction="recipient">
    <state event="remote-bye">terminated</state>
    <remote><identity display="Carol">sip:carol@127.0.0.1</identity></remote>
  </dialog>
</dialog-info>"#,
    ];

    fn doc(version: u64, state: &str, dialogs: &[(&str, &str, &str)]) -> DialogInfo {
        let body: String = dialogs
            .iter()
            .map(|(id, dir, st)| {
                format!(r#"<dialog id="{id}" direction="{dir}"><state>{st}</state></dialog>"#)
            })
            .collect();
        parse(
            format!(
                r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:a@x">{body}</dialog-info>"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn kamailio_example() {
        let d = parse(KAMAILIO.as_bytes()).unwrap();
        assert_eq!(
            (d.version, d.state, d.entity.as_str()),
            (1, DocState::Full, "sip:alice@127.0.0.1")
        );
        let x = &d.dialogs[0];
        assert_eq!(x.id, "d-sipp-15433");
        assert_eq!(x.call_id.as_deref(), Some("call-15433@sipp"));
        assert_eq!(x.local_tag.as_deref(), Some("lt15433"));
        assert_eq!(x.remote_tag.as_deref(), Some("rt15433"));
        assert_eq!(x.direction, Some(Direction::Initiator));
        assert_eq!(x.state, DialogState::Confirmed);
        assert_eq!(x.remote_identity.as_deref(), Some("sip:carol@127.0.0.1"));
        let mut t = DialogTracker::new();
        assert_eq!(t.apply(&d), TrackOutcome::Applied);
        assert_eq!(t.telephony(), Telephony::InCall);
    }

    #[test]
    fn sipp_sequence() {
        let docs: Vec<DialogInfo> = SIPP.iter().map(|s| parse(s.as_bytes()).unwrap()).collect();
        assert_eq!(docs[3].dialogs[0].event.as_deref(), Some("remote-bye"));
        assert_eq!(docs[1].dialogs[0].remote_display.as_deref(), Some("Carol"));
        let mut t = DialogTracker::new();
        let mut seen = vec![];
        for d in &docs {
            assert_eq!(t.apply(d), TrackOutcome::Applied);
            seen.push(t.telephony());
        }
        use Telephony::*;
        assert_eq!(seen, [Idle, Ringing, InCall, Idle]);
        assert!(t.dialogs().is_empty());
        // The same documents again (a retransmission) change nothing.
        assert_eq!(t.apply(&docs[2]), TrackOutcome::Stale { last: 3, got: 2 });
        assert_eq!(t.apply(&docs[3]), TrackOutcome::Stale { last: 3, got: 3 });
        // A new subscription restarts the versions.
        t.reset();
        assert_eq!(t.apply(&docs[0]), TrackOutcome::Applied);
        assert_eq!(t.version(), Some(0));
    }

    #[test]
    fn tracking_rules() {
        let mut t = DialogTracker::new();
        // Partial before any full.
        assert_eq!(
            t.apply(&doc(5, "partial", &[("a", "recipient", "early")])),
            TrackOutcome::NeedsFullState { last: None, got: 5 }
        );
        assert_eq!(t.version(), None);
        t.apply(&doc(
            5,
            "full",
            &[
                ("a", "initiator", "trying"),
                ("b", "recipient", "terminated"),
            ],
        ));
        assert_eq!(t.dialogs().len(), 1);
        assert_eq!(t.telephony(), Telephony::Dialing);
        // Gap: 7 after 5.
        assert_eq!(
            t.apply(&doc(7, "partial", &[("a", "initiator", "confirmed")])),
            TrackOutcome::NeedsFullState {
                last: Some(5),
                got: 7
            }
        );
        assert_eq!(
            t.telephony(),
            Telephony::Dialing,
            "kept until a full document"
        );
        t.apply(&doc(6, "partial", &[("c", "recipient", "proceeding")]));
        assert_eq!(t.telephony(), Telephony::Ringing, "ringing beats dialing");
        t.apply(&doc(7, "partial", &[("a", "initiator", "confirmed")]));
        assert_eq!(t.telephony(), Telephony::InCall);
        t.apply(&doc(
            8,
            "partial",
            &[("a", "initiator", "terminated"), ("zz", "x", "terminated")],
        ));
        assert_eq!(t.dialogs().len(), 1);
        assert_eq!(t.telephony(), Telephony::Ringing);
        // Full replaces (even with a version jump).
        t.apply(&doc(100, "full", &[]));
        assert_eq!(t.telephony(), Telephony::Idle);
        assert_eq!(
            t.apply(&doc(u64::MAX, "full", &[("m", "recipient", "confirmed")])),
            TrackOutcome::Applied
        );
        assert_eq!(
            t.apply(&doc(u64::MAX, "partial", &[])),
            TrackOutcome::Stale {
                last: u64::MAX,
                got: u64::MAX
            }
        );
        // No direction, early: ringing. Unknown state: nothing.
        t.reset();
        t.apply(&doc(0, "full", &[("a", "", "early")]));
        assert_eq!(t.telephony(), Telephony::Ringing);
        t.apply(&doc(1, "full", &[("a", "recipient", "weird")]));
        assert_eq!(t.telephony(), Telephony::Idle);
        assert_eq!(t.dialogs()[0].state, DialogState::Other("weird".into()));
    }

    #[test]
    fn tracker_is_bounded() {
        let mut t = DialogTracker::new();
        t.apply(&doc(0, "full", &[]));
        for v in 1..=300u64 {
            let id = format!("d{v}");
            t.apply(&doc(v, "partial", &[(&id, "recipient", "early")]));
        }
        assert_eq!(t.dialogs().len(), MAX_ITEMS);
    }

    #[test]
    fn ids_and_attributes() {
        let d = parse(br#"<d:dialog-info xmlns:d="urn:ietf:params:xml:ns:dialog-info" version="3" state="Partial" entity="sip:a@x">
            <d:dialog call-id="cid-1"><d:state code="486" event="Rejected">terminated</d:state></d:dialog>
            <d:dialog><d:state>confirmed</d:state></d:dialog>
            <dialog id="foreign"/></d:dialog-info>"#).unwrap();
        assert_eq!(d.state, DocState::Partial);
        assert_eq!(d.dialogs.len(), 2);
        assert_eq!(d.dialogs[0].id, "cid-1");
        assert_eq!(d.dialogs[0].code, Some(486));
        assert_eq!(d.dialogs[0].event.as_deref(), Some("rejected"));
        assert_eq!(d.dialogs[1].id, "#1");
        assert_eq!(d.dialogs[1].state, DialogState::Confirmed);

        let ns = r#"xmlns="urn:ietf:params:xml:ns:dialog-info""#;
        for (attrs, want) in [
            (
                "state=\"full\"",
                BodyError::MissingAttribute {
                    element: "dialog-info",
                    attribute: "version",
                },
            ),
            (
                "version=\"1\"",
                BodyError::MissingAttribute {
                    element: "dialog-info",
                    attribute: "state",
                },
            ),
            (
                "version=\"-1\" state=\"full\"",
                BodyError::InvalidAttribute {
                    element: "dialog-info",
                    attribute: "version",
                    value: "-1".into(),
                },
            ),
            (
                "version=\"99999999999999999999\" state=\"full\"",
                BodyError::InvalidAttribute {
                    element: "dialog-info",
                    attribute: "version",
                    value: "99999999999999999999".into(),
                },
            ),
            (
                "version=\"1\" state=\"delta\"",
                BodyError::InvalidAttribute {
                    element: "dialog-info",
                    attribute: "state",
                    value: "delta".into(),
                },
            ),
        ] {
            let body = format!("<dialog-info {ns} {attrs}/>");
            assert_eq!(parse(body.as_bytes()), Err(want), "{attrs}");
        }
        assert!(matches!(
            parse(b"<dialog-info version=\"1\" state=\"full\"/>"),
            Err(BodyError::UnexpectedRoot { .. })
        ));
        let many = format!(
            r#"<dialog-info {ns} version="1" state="full">{}</dialog-info>"#,
            "<dialog id=\"x\"/>".repeat(MAX_ITEMS + 1)
        );
        assert!(matches!(
            parse(many.as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
    }
}
