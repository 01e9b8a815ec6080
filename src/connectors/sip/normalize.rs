//! SIP presence to the normalized model (reference §11), and the PIDF we PUBLISH for a
//! command (§3.6). Pure: the connector keeps, per user, the latest presence document, the
//! dialog telephony state and the message summary, and calls [`normalize`] whenever one of
//! them changes.
//!
//! ## Signals (§11.1)
//!
//! Every signal proposes a *class*; the classes and what they become in our model:
//!
//! | class | availability | activity |
//! |---|---|---|
//! | on-the-phone | BUSY | IN_A_CALL |
//! | do-not-disturb | DO_NOT_DISTURB | — |
//! | in-a-meeting | BUSY | IN_A_MEETING (PRESENTING for `presentation`) |
//! | busy | BUSY | — (OTHER for `performance`, `worship`, `spectator`) |
//! | vacation | AWAY | VACATION; OUT_OF_OFFICE (+ `out_of_office`) for an out-of-office text |
//! | be-right-back | BE_RIGHT_BACK | — |
//! | away | AWAY | — (OTHER for `lunch`, `travel`, … ) |
//! | available | AVAILABLE, or AVAILABLE_IDLE when idle | — (OTHER for `working`) |
//! | offline | OFFLINE | — (OTHER for `permanent-absence`) |
//! | unknown | UNKNOWN | — |
//!
//! | source | class |
//! |---|---|
//! | PIDF: some tuple `basic=open` | available |
//! | PIDF: every tuple `basic=closed` | offline |
//! | PIDF: other `basic` strings, no `basic`, no tuples and no person | no opinion (alone → unknown) |
//! | RPID `on-the-phone` | on-the-phone |
//! | RPID `meeting`, `presentation`, `appointment` | in-a-meeting |
//! | RPID `busy`, `performance`, `worship`, `spectator` | busy |
//! | RPID `vacation`, `holiday` | vacation |
//! | RPID `permanent-absence` | offline |
//! | RPID `away`, `lunch`, `breakfast`, `dinner`, `meal`, `shopping`, `sleeping`, `steering`, `travel`, `in-transit`, `tv`, `playing`, `looking-for-work` | away |
//! | RPID `working` | available |
//! | RPID `unknown`, `other`, empty `activities`, unknown tokens | no opinion |
//! | legacy rpid-status text `online` / `busy` / `away` / `on-the-phone` / `berightback` / `lunch`, `outtolunch` / `meeting` / `vacation` (else as RPID) | available / busy / away / on-the-phone / be-right-back / away / in-a-meeting / vacation |
//! | note or `rpid:other` text matching `do not disturb` or the word `dnd` (any case) | do-not-disturb |
//! | … `be right back` or the word `brb` | be-right-back |
//! | … `out of office`, `out of the office`, the word `ooo`, `vacation`, `holiday` | vacation (OUT_OF_OFFICE) |
//! | `rpid:user-input` = `idle` on the person (else on every device/tuple that reports one) | idle flag |
//! | XPIDF `status`: `open` / `closed` / `inuse` / `inactive` | available / offline / on-the-phone / away |
//! | XPIDF `msnsubstatus`: `online` / `busy` / `onthephone` / `berightback` / `away` / `outtolunch` (OTHER) / `idle` / `offline` | available / busy / on-the-phone / be-right-back / away / away / available + idle flag / offline |
//! | empty NOTIFY, `active` | offline ([`SipNormalizeOptions::empty_active_is_offline`], else unknown) |
//! | empty NOTIFY, `pending` | unknown |
//! | `terminated` with a no-retry reason ([`terminated_changes_state`]) | unknown |
//! | dialog: a confirmed dialog (`in-a-call`) | on-the-phone |
//! | dialog: early initiator (`dialing`) | on-the-phone if [`SipNormalizeOptions::dialing_is_on_the_phone`], else like ringing |
//! | dialog: early recipient (`ringing`) | no class; activity OTHER when nothing else set one |
//! | dialog: idle | nothing |
//!
//! Which PIDF parts are read: the person chosen by [`Pidf::current_person`]; the open
//! tuples if there are any, else all tuples. XPIDF: the "most present" address
//! ([`Xpidf::best_address`]).
//!
//! ## Combining (§11.2)
//!
//! The highest class wins: on-the-phone > do-not-disturb > in-a-meeting > busy > vacation >
//! be-right-back > away > available > offline > unknown. Exception: when every tuple is
//! closed (XPIDF: the address is `closed`), available, away and be-right-back become
//! offline (a closed client is offline even if its last activity was "lunch"); vacation and
//! above keep precedence. The activity is the first one set by a signal of the winning
//! class, else the class default above.
//!
//! **Deviation from §11**: §11 maps user-input idle and `msnsubstatus=idle` to *away*. Our
//! model has AVAILABLE_IDLE, which says more, so idle turns an otherwise AVAILABLE result
//! into AVAILABLE_IDLE (and changes nothing else: busy stays BUSY).
//!
//! ## Other fields
//!
//! `note`: the person's first note, else the first presence-level note, else the first
//! note of the tuples read (XPIDF: the address note). `device`: the id of the first open
//! tuple (XPIDF: the address URI unless `closed`). `last_active`: the person's
//! `user-input/@last-input` when idle. `out_of_office`: `Some(true)` for an out-of-office
//! text, else `None`. Raw values (all optional):
//!
//! | raw key | value |
//! |---|---|
//! | `sip.basic` | every tuple's `basic`, space-joined (`-` for none): `open closed unknown` |
//! | `sip.activities` | activity tokens of the person and the tuples read, space-joined |
//! | `sip.other` | the `rpid:other` text |
//! | `sip.user_input` | the person's `user-input` |
//! | `sip.xpidf.status`, `sip.xpidf.substatus` | of the address read |
//! | `sip.dialog` | `in-a-call` \| `ringing` \| `dialing` \| `idle` (with a dialog subscription) |
//! | `sip.mwi` | `yes 2/8` (waiting, then new/old of the voice class or the first class) |
//! | `sip.subscription` | `no-state` (empty, active), `pending`, `terminated;reason=…` |

use super::body::pidf::{format_datetime, parse_datetime, Tuple};
use super::body::{Body, MessageSummary, Pidf, Telephony, Xpidf};
use crate::model::{canonical_user, Activity, Availability, Millis, PresenceState};

/// The latest presence state of one user, as the connector keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceDoc {
    Pidf(Pidf),
    Xpidf(Xpidf),
    /// Empty NOTIFY body with `Subscription-State: active` (nobody published).
    EmptyActive,
    /// Empty NOTIFY body while the subscription is `pending` (or an unknown state).
    EmptyPending,
    /// The subscription ended for a reason that stops retries (see
    /// [`terminated_changes_state`]); other terminations should keep the last document.
    Terminated {
        reason: String,
    },
}

impl PresenceDoc {
    /// The presence document in a body, if it is one (PIDF or XPIDF).
    pub fn from_body(body: Body) -> Option<PresenceDoc> {
        match body {
            Body::Pidf(p) => Some(PresenceDoc::Pidf(p)),
            Body::Xpidf(x) => Some(PresenceDoc::Xpidf(x)),
            _ => None,
        }
    }
}

/// Knobs of the mapping (§11.1 "configurable").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipNormalizeOptions {
    /// Empty NOTIFY with `active`: OFFLINE (true) or UNKNOWN (false).
    pub empty_active_is_offline: bool,
    /// An outgoing call still ringing counts as on the phone (true) or only as an activity.
    pub dialing_is_on_the_phone: bool,
}

impl Default for SipNormalizeOptions {
    fn default() -> Self {
        SipNormalizeOptions {
            empty_active_is_offline: true,
            dialing_is_on_the_phone: true,
        }
    }
}

/// Whether a `terminated` subscription moves the user to UNKNOWN (§11.2 rule 4): only the
/// reasons that stop retries do (`rejected`, `noresource`, `invariant`); for the others the
/// last known state stands.
pub fn terminated_changes_state(reason: &str) -> bool {
    matches!(
        reason.trim().to_ascii_lowercase().as_str(),
        "rejected" | "noresource" | "invariant"
    )
}

/// Precedence order, lowest first (§11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Unknown,
    Offline,
    Available,
    Away,
    BeRightBack,
    Vacation,
    Busy,
    InAMeeting,
    DoNotDisturb,
    OnThePhone,
}

#[derive(Debug, Clone, Copy)]
struct Signal {
    class: Class,
    activity: Option<Activity>,
    out_of_office: bool,
}

fn sig(class: Class, activity: Option<Activity>) -> Signal {
    Signal {
        class,
        activity,
        out_of_office: false,
    }
}

/// An RPID (RFC 4480) or legacy rpid-status activity token.
fn activity_signal(token: &str) -> Option<Signal> {
    use Class::*;
    let other = Some(Activity::Other);
    Some(match token {
        "on-the-phone" | "onthephone" => sig(OnThePhone, Some(Activity::InACall)),
        "meeting" | "appointment" => sig(InAMeeting, Some(Activity::InAMeeting)),
        "presentation" => sig(InAMeeting, Some(Activity::Presenting)),
        "busy" => sig(Busy, None),
        "performance" | "worship" | "spectator" => sig(Busy, other),
        "vacation" | "holiday" => sig(Vacation, Some(Activity::Vacation)),
        "berightback" | "be-right-back" => sig(BeRightBack, None),
        "away" => sig(Away, None),
        "lunch" | "outtolunch" | "breakfast" | "dinner" | "meal" | "shopping" | "sleeping"
        | "steering" | "travel" | "in-transit" | "tv" | "playing" | "looking-for-work" => {
            sig(Away, other)
        }
        "online" => sig(Available, None),
        "working" => sig(Available, other),
        "permanent-absence" => sig(Offline, other),
        _ => return None,
    })
}

/// Note / `other` text heuristics (§11.1). Case-insensitive; "word" means delimited by
/// non-alphanumeric characters, like a regex `\b`.
fn text_signals(text: &str, out: &mut Vec<Signal>) {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let word = |w: &str| words.contains(&w);
    // Runs of whitespace count as one space ("do  not disturb").
    let spaced = words.join(" ");
    let phrase = |p: &str| spaced.contains(p);
    if phrase("do not disturb") || word("dnd") {
        out.push(sig(Class::DoNotDisturb, None));
    }
    if phrase("be right back") || word("brb") {
        out.push(sig(Class::BeRightBack, None));
    }
    if phrase("out of office")
        || phrase("out of the office")
        || word("ooo")
        || lower.contains("vacation")
        || lower.contains("holiday")
    {
        out.push(Signal {
            class: Class::Vacation,
            activity: Some(Activity::OutOfOffice),
            out_of_office: true,
        });
    }
}

/// What one presence document contributes.
#[derive(Default)]
struct Collected {
    signals: Vec<Signal>,
    all_closed: bool,
    idle: bool,
    note: Option<String>,
    device: Option<String>,
    last_active: Option<Millis>,
    raw: Vec<(&'static str, String)>,
}

fn is(value: Option<&str>, want: &str) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn collect_pidf(p: &Pidf) -> Collected {
    let mut c = Collected::default();
    let open: Vec<&Tuple> = p
        .tuples
        .iter()
        .filter(|t| is(t.basic.as_deref(), "open"))
        .collect();
    let read: Vec<&Tuple> = if open.is_empty() {
        p.tuples.iter().collect()
    } else {
        open.clone()
    };
    if !open.is_empty() {
        c.signals.push(sig(Class::Available, None));
    }
    c.all_closed =
        !p.tuples.is_empty() && p.tuples.iter().all(|t| is(t.basic.as_deref(), "closed"));
    if c.all_closed {
        c.signals.push(sig(Class::Offline, None));
    }

    let person = p.current_person();
    let mut tokens: Vec<&str> = Vec::new();
    for t in person
        .into_iter()
        .flat_map(|p| &p.activities)
        .chain(read.iter().flat_map(|t| &t.activities))
    {
        if !tokens.contains(&t.as_str()) {
            tokens.push(t);
        }
    }
    c.signals
        .extend(tokens.iter().filter_map(|t| activity_signal(t)));

    c.note = person
        .and_then(|p| p.notes.first())
        .or(p.notes.first())
        .or_else(|| read.iter().find_map(|t| t.notes.first()))
        .cloned();
    if let Some(other) = person.and_then(|p| p.other.as_deref()) {
        text_signals(other, &mut c.signals);
    }
    if let Some(note) = &c.note {
        text_signals(note, &mut c.signals);
    }

    // Idle: the person says so; without a person value, every device/open tuple that
    // reports user input says idle.
    c.idle = match person.and_then(|p| p.user_input.as_deref()) {
        Some(v) => v == "idle",
        None => {
            let mut reported = p
                .devices
                .iter()
                .filter_map(|d| d.user_input.as_deref())
                .chain(open.iter().filter_map(|t| t.user_input.as_deref()))
                .peekable();
            reported.peek().is_some() && reported.all(|v| v == "idle")
        }
    };
    if c.idle {
        c.last_active = person
            .and_then(|p| p.last_input.as_deref())
            .and_then(parse_datetime);
    }
    c.device = open
        .iter()
        .map(|t| &t.id)
        .find(|id| !id.is_empty())
        .cloned();

    if !p.tuples.is_empty() {
        let basics: Vec<&str> = p
            .tuples
            .iter()
            .map(|t| t.basic.as_deref().unwrap_or("-"))
            .collect();
        c.raw.push(("sip.basic", basics.join(" ")));
    }
    if !tokens.is_empty() {
        c.raw.push(("sip.activities", tokens.join(" ")));
    }
    if let Some(p) = person {
        if let Some(other) = &p.other {
            c.raw.push(("sip.other", other.clone()));
        }
        if let Some(ui) = &p.user_input {
            c.raw.push(("sip.user_input", ui.clone()));
        }
    }
    c
}

fn collect_xpidf(x: &Xpidf) -> Collected {
    use Class::*;
    let mut c = Collected::default();
    let Some(a) = x.best_address() else {
        return c;
    };
    match a.status.as_deref() {
        Some("open") => c.signals.push(sig(Available, None)),
        Some("closed") => {
            c.all_closed = true;
            c.signals.push(sig(Offline, None));
        }
        Some("inuse") => c.signals.push(sig(OnThePhone, Some(Activity::InACall))),
        Some("inactive") => c.signals.push(sig(Away, None)),
        _ => {}
    }
    match a.substatus.as_deref() {
        Some("online") => c.signals.push(sig(Available, None)),
        Some("busy") => c.signals.push(sig(Busy, None)),
        Some("onthephone") => c.signals.push(sig(OnThePhone, Some(Activity::InACall))),
        Some("berightback") => c.signals.push(sig(BeRightBack, None)),
        Some("away") => c.signals.push(sig(Away, None)),
        Some("outtolunch") => c.signals.push(sig(Away, Some(Activity::Other))),
        Some("idle") => {
            c.idle = true;
            c.signals.push(sig(Available, None));
        }
        Some("offline") => c.signals.push(sig(Offline, None)),
        _ => {}
    }
    c.note = a.note.clone();
    if let Some(note) = &a.note {
        text_signals(note, &mut c.signals);
    }
    if a.status.as_deref() != Some("closed") && !a.uri.is_empty() {
        c.device = Some(a.uri.clone());
    }
    if let Some(s) = &a.status {
        c.raw.push(("sip.xpidf.status", s.clone()));
    }
    if let Some(s) = &a.substatus {
        c.raw.push(("sip.xpidf.substatus", s.clone()));
    }
    c
}

/// The normalized state of one user from what the connector holds for them: the latest
/// presence document (`None` without a presence subscription), the telephony state of a
/// dialog subscription, and the message summary. Rules in the module docs.
pub fn normalize(
    presence: Option<&PresenceDoc>,
    dialog: Option<Telephony>,
    mwi: Option<&MessageSummary>,
    opts: &SipNormalizeOptions,
) -> PresenceState {
    let mut c = match presence {
        Some(PresenceDoc::Pidf(p)) => collect_pidf(p),
        Some(PresenceDoc::Xpidf(x)) => collect_xpidf(x),
        Some(PresenceDoc::EmptyActive) => {
            let mut c = Collected::default();
            if opts.empty_active_is_offline {
                c.signals.push(sig(Class::Offline, None));
            }
            c.raw.push(("sip.subscription", "no-state".into()));
            c
        }
        Some(PresenceDoc::EmptyPending) => Collected {
            raw: vec![("sip.subscription", "pending".into())],
            ..Collected::default()
        },
        Some(PresenceDoc::Terminated { reason }) => {
            let reason = reason.trim();
            let value = if reason.is_empty() {
                "terminated".to_string()
            } else {
                format!("terminated;reason={reason}")
            };
            Collected {
                raw: vec![("sip.subscription", value)],
                ..Collected::default()
            }
        }
        None => Collected::default(),
    };

    let mut ringing = false;
    if let Some(t) = dialog {
        match t {
            Telephony::InCall => c
                .signals
                .push(sig(Class::OnThePhone, Some(Activity::InACall))),
            Telephony::Dialing if opts.dialing_is_on_the_phone => c
                .signals
                .push(sig(Class::OnThePhone, Some(Activity::InACall))),
            Telephony::Dialing | Telephony::Ringing => ringing = true,
            Telephony::Idle => {}
        }
        c.raw.push(("sip.dialog", t.as_str().into()));
    }

    let mut class = c
        .signals
        .iter()
        .map(|s| s.class)
        .max()
        .unwrap_or(Class::Unknown);
    if c.all_closed && (Class::Available..=Class::BeRightBack).contains(&class) {
        class = Class::Offline;
    }
    let chosen = c
        .signals
        .iter()
        .find(|s| s.class == class && s.activity.is_some());
    let availability = match class {
        Class::Unknown => Availability::Unknown,
        Class::Offline => Availability::Offline,
        Class::Available if c.idle => Availability::AvailableIdle,
        Class::Available => Availability::Available,
        Class::Away | Class::Vacation => Availability::Away,
        Class::BeRightBack => Availability::BeRightBack,
        Class::Busy | Class::InAMeeting | Class::OnThePhone => Availability::Busy,
        Class::DoNotDisturb => Availability::DoNotDisturb,
    };
    let mut state = PresenceState::new(availability);
    state.activity = chosen.and_then(|s| s.activity).or(match class {
        Class::OnThePhone => Some(Activity::InACall),
        Class::InAMeeting => Some(Activity::InAMeeting),
        Class::Vacation => Some(Activity::Vacation),
        _ => None,
    });
    if ringing && state.activity.is_none() {
        state.activity = Some(Activity::Other);
    }
    if chosen.is_some_and(|s| s.out_of_office) {
        state.out_of_office = Some(true);
    }
    state.note = c.note;
    state.device = c.device;
    state.last_active = c.last_active;
    for (k, v) in c.raw {
        state.raw.insert(k.to_string(), v);
    }
    if let Some(m) = mwi {
        let mut v = String::from(if m.messages_waiting { "yes" } else { "no" });
        if let Some(class) = m.main_class() {
            v.push_str(&format!(" {}/{}", class.new, class.old));
        }
        state.raw.insert("sip.mwi".into(), v);
    }
    state
}

/// The canonical user id of a SIP URI or entity (§3.2: compare as `user@host`, host
/// case-insensitive, scheme and port ignored): `<sip:Alice@Example.com:5060;transport=tcp>`,
/// `pres:alice@example.com` and the scheme-less `alice@example.com` of pua_usrloc all give
/// `alice@example.com`. URI parameters and headers are dropped; like
/// [`canonical_user`], the result is lower case.
pub fn user_from_uri(uri: &str) -> String {
    let mut s = uri.trim();
    if let Some(i) = s.find('<') {
        let inner = &s[i + 1..];
        s = inner.split('>').next().unwrap_or(inner);
    }
    for scheme in ["sips:", "sip:", "pres:", "im:", "tel:"] {
        if s.len() >= scheme.len()
            && s.is_char_boundary(scheme.len())
            && s[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            s = &s[scheme.len()..];
            break;
        }
    }
    s = s.split([';', '?']).next().unwrap_or("");
    let (user, host) = match s.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, s),
    };
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    match user {
        Some(u) => canonical_user(&format!("{u}@{host}")),
        None => canonical_user(host),
    }
}

/// Refuses availabilities that cannot be published: UNKNOWN is what servers report, not
/// something a user sets.
pub fn check_command(availability: Availability) -> Result<(), String> {
    match availability {
        Availability::Unknown => Err("UNKNOWN cannot be published over SIP; use AVAILABLE, \
             AWAY, BE_RIGHT_BACK, BUSY, DO_NOT_DISTURB or OFFLINE"
            .into()),
        _ => Ok(()),
    }
}

/// The PIDF we PUBLISH to set a user's presence (§3.6, §7.1), the reverse of
/// [`normalize`]:
///
/// | availability | basic | RPID activities | note / marker |
/// |---|---|---|---|
/// | AVAILABLE | open | none (`<rpid:activities/>`) | |
/// | AVAILABLE_IDLE | open | none, `user-input` idle | |
/// | AWAY | open | `away` | |
/// | BE_RIGHT_BACK | open | `away` | "Be Right Back" |
/// | BUSY | open | `busy` | |
/// | BUSY_IDLE | open | `busy`, `user-input` idle (reads back as BUSY: §11 has no busy-idle) | |
/// | DO_NOT_DISTURB | open | `busy` | "Do Not Disturb" |
/// | OFFLINE | closed | none | |
/// | UNKNOWN | open | `unknown` (refuse it first: [`check_command`]) | |
///
/// Activity adds a token: IN_A_CALL / IN_A_CONFERENCE_CALL → `on-the-phone`, IN_A_MEETING →
/// `meeting`, PRESENTING → `presentation`, VACATION → `vacation`; OUT_OF_OFFICE adds the
/// marker "Out of Office"; the others have no RPID equivalent. The marker is the note when
/// the command has none; with a note of its own, the note is kept and the marker goes into
/// `<rpid:other>`, so the state reads back either way. Every value is escaped; ids are
/// made valid `xs:ID`s (other characters become `_`, a leading non-letter gets a `_`).
pub fn pidf_for_command(
    entity: &str,
    availability: Availability,
    activity: Option<Activity>,
    note: Option<&str>,
    tuple_id: &str,
    person_id: &str,
    now: Millis,
) -> String {
    use Availability as A;
    let basic = if availability == A::Offline {
        "closed"
    } else {
        "open"
    };
    let mut tokens: Vec<&str> = Vec::new();
    match availability {
        A::Away | A::BeRightBack => tokens.push("away"),
        A::Busy | A::BusyIdle | A::DoNotDisturb => tokens.push("busy"),
        A::Unknown => tokens.push("unknown"),
        A::Available | A::AvailableIdle | A::Offline => {}
    }
    match activity {
        Some(Activity::InACall | Activity::InAConferenceCall) => tokens.push("on-the-phone"),
        Some(Activity::InAMeeting) => tokens.push("meeting"),
        Some(Activity::Presenting) => tokens.push("presentation"),
        Some(Activity::Vacation) => tokens.push("vacation"),
        _ => {}
    }
    let marker = match (availability, activity) {
        (A::DoNotDisturb, _) => Some("Do Not Disturb"),
        (A::BeRightBack, _) => Some("Be Right Back"),
        (_, Some(Activity::OutOfOffice)) => Some("Out of Office"),
        _ => None,
    };
    let note = note.filter(|n| !n.trim().is_empty());
    let idle = matches!(availability, A::AvailableIdle | A::BusyIdle);
    let ts = format_datetime(now);

    let mut out = String::with_capacity(768);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
         xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"",
    );
    out.push_str(&escape_attr(entity));
    out.push_str("\">\n <tuple id=\"");
    out.push_str(&xml_id(tuple_id));
    out.push_str("\"><status><basic>");
    out.push_str(basic);
    out.push_str("</basic></status><timestamp>");
    out.push_str(&ts);
    out.push_str("</timestamp></tuple>\n <dm:person id=\"");
    out.push_str(&xml_id(person_id));
    out.push_str("\">");
    let other = marker.filter(|_| note.is_some());
    if tokens.is_empty() && other.is_none() {
        out.push_str("<rpid:activities/>");
    } else {
        out.push_str("<rpid:activities>");
        for t in &tokens {
            out.push_str("<rpid:");
            out.push_str(t);
            out.push_str("/>");
        }
        if let Some(m) = other {
            out.push_str("<rpid:other>");
            out.push_str(m);
            out.push_str("</rpid:other>");
        }
        out.push_str("</rpid:activities>");
    }
    if idle {
        out.push_str("<rpid:user-input>idle</rpid:user-input>");
    }
    if let Some(text) = note.or(marker) {
        out.push_str("<dm:note>");
        out.push_str(&escape_text(text));
        out.push_str("</dm:note>");
    }
    out.push_str("<dm:timestamp>");
    out.push_str(&ts);
    out.push_str("</dm:timestamp></dm:person>\n</presence>\n");
    out
}

/// Whether `c` may appear in an XML 1.0 document at all (even as a reference).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Text content: markup escaped, CR kept as a reference (parsers turn a literal CR
/// into LF), characters XML cannot carry dropped.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| xml_char(c)) {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// An attribute value in double quotes: like text, plus `"`, and tab/LF/CR as
/// references (attribute-value normalization would turn them into spaces).
fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| xml_char(c)) {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// A valid `xs:ID` (NCName) from `s`: letters, digits, `-`, `_`, `.` kept, others `_`,
/// `_` prepended if it does not start with a letter or `_`; `_` for an empty id.
fn xml_id(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::sip::body::dialog::tests::{KAMAILIO, SIPP as SIPP_DIALOG};
    use crate::connectors::sip::body::pidf::tests::{
        BARESIP, LEGACY, PUA_USRLOC, PUBLISHED, SIPP_NOTIFIER,
    };
    use crate::connectors::sip::body::pidf::{Device, Person};
    use crate::connectors::sip::body::rlmi::tests::{sipp_first, SIPP_CT};
    use crate::connectors::sip::body::xpidf::tests::{sipp as sipp_xpidf, REFERENCE as XPIDF};
    use crate::connectors::sip::body::{parse_body, DialogTracker};
    use Activity::*;
    use Availability::*;

    const NS: &str = r#"xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status""#;

    /// (name, presence, telephony, options, availability, activity)
    type OverlayRow<'a> = (
        &'a str,
        Option<&'a PresenceDoc>,
        Telephony,
        SipNormalizeOptions,
        Availability,
        Option<Activity>,
    );
    /// (availability, activity, note) published → (availability, activity) read back
    type RoundTripRow = (
        Availability,
        Option<Activity>,
        Option<&'static str>,
        Availability,
        Option<Activity>,
    );

    fn opts() -> SipNormalizeOptions {
        SipNormalizeOptions::default()
    }

    fn pidf_doc(body: &str) -> PresenceDoc {
        match parse_body("application/pidf+xml", body.as_bytes()) {
            Ok(b) => PresenceDoc::from_body(b).unwrap(),
            Err(e) => panic!("{e}: {body}"),
        }
    }

    /// A PIDF with the given tuple basics, person activities (RFC form), person note.
    fn doc(basics: &[&str], activities: &[&str], note: Option<&str>) -> PresenceDoc {
        let tuples: String = basics
            .iter()
            .enumerate()
            .map(|(i, b)| format!("<tuple id=\"t{i}\"><status><basic>{b}</basic></status></tuple>"))
            .collect();
        let acts: String = activities
            .iter()
            .map(|a| match a.strip_prefix("other:") {
                Some(text) => format!("<rpid:other>{text}</rpid:other>"),
                None => format!("<rpid:{a}/>"),
            })
            .collect();
        let note = note.map_or(String::new(), |n| format!("<dm:note>{n}</dm:note>"));
        pidf_doc(&format!(
            "<presence {NS} entity=\"sip:a@x\">{tuples}<dm:person id=\"p\"><rpid:activities>{acts}</rpid:activities>{note}</dm:person></presence>"
        ))
    }

    fn norm(d: &PresenceDoc) -> PresenceState {
        normalize(Some(d), None, None, &opts())
    }

    #[test]
    fn signal_table() {
        let o: &[&str] = &["open"];
        #[rustfmt::skip]
        let rows: Vec<(&str, PresenceDoc, Availability, Option<Activity>)> = vec![
            ("open, no activity",        doc(o, &[], None),                         Available,     None),
            ("all closed",               doc(&["closed", "CLOSED"], &[], None),     Offline,       None),
            ("open + closed",            doc(&["closed", "open"], &[], None),       Available,     None),
            ("basic unknown",            doc(&["unknown"], &[], None),              Unknown,       None),
            ("closed + unknown",         doc(&["closed", "unknown"], &[], None),    Unknown,       None),
            ("no tuple, no person",      pidf_doc(&format!("<presence {NS} entity=\"a\"/>")), Unknown, None),
            ("on-the-phone",             doc(o, &["on-the-phone"], None),           Busy,          Some(InACall)),
            ("meeting",                  doc(o, &["meeting"], None),                Busy,          Some(InAMeeting)),
            ("appointment",              doc(o, &["appointment"], None),            Busy,          Some(InAMeeting)),
            ("presentation",             doc(o, &["presentation"], None),           Busy,          Some(Presenting)),
            ("busy",                     doc(o, &["busy"], None),                   Busy,          None),
            ("performance",              doc(o, &["performance"], None),            Busy,          Some(Other)),
            ("worship",                  doc(o, &["worship"], None),                Busy,          Some(Other)),
            ("spectator",                doc(o, &["spectator"], None),              Busy,          Some(Other)),
            ("vacation",                 doc(o, &["vacation"], None),               Away,          Some(Vacation)),
            ("holiday",                  doc(o, &["holiday"], None),                Away,          Some(Vacation)),
            ("permanent-absence",        doc(&[], &["permanent-absence"], None),    Offline,       Some(Other)),
            // Plain precedence: an open tuple (available) outranks offline.
            ("permanent-absence, open",  doc(o, &["permanent-absence"], None),      Available,     None),
            ("away",                     doc(o, &["away"], None),                   Away,          None),
            ("working",                  doc(o, &["working"], None),                Available,     Some(Other)),
            ("unknown activity",         doc(o, &["unknown"], None),                Available,     None),
            ("unknown, no tuples",       doc(&[], &["unknown"], None),              Unknown,       None),
            ("future token",             doc(o, &["teleporting"], None),            Available,     None),
            ("other text, no heuristic", doc(o, &["other:Gone fishing"], None),     Available,     None),
            ("other text dnd",           doc(o, &["other:DND"], None),              DoNotDisturb,  None),
            ("note do not disturb",      doc(o, &["busy"], Some("Do  not Disturb")), DoNotDisturb, None),
            ("note dnd word",            doc(o, &[], Some("dnd until 3")),          DoNotDisturb,  None),
            ("note dnd inside word",     doc(o, &[], Some("addnda")),               Available,     None),
            ("note brb",                 doc(o, &["away"], Some("Be Right Back")),  BeRightBack,   None),
            ("note brb word",            doc(o, &[], Some("BRB!")),                 BeRightBack,   None),
            ("note out of office",       doc(o, &[], Some("Out of the Office")),    Away,          Some(OutOfOffice)),
            ("note ooo",                 doc(o, &[], Some("OOO till Monday")),      Away,          Some(OutOfOffice)),
            ("note vacation",            doc(o, &[], Some("on Vacation")),          Away,          Some(OutOfOffice)),
            ("note holidays",            doc(o, &[], Some("Holidays")),             Away,          Some(OutOfOffice)),
            ("note available",           doc(o, &[], Some("Available")),            Available,     None),
        ];
        let away_tokens = [
            "lunch",
            "breakfast",
            "dinner",
            "meal",
            "shopping",
            "sleeping",
            "steering",
            "travel",
            "in-transit",
            "tv",
            "playing",
            "looking-for-work",
        ];
        let mut rows = rows;
        for t in away_tokens {
            rows.push((t, doc(o, &[t], None), Away, Some(Other)));
        }
        for (name, d, availability, activity) in rows {
            let got = norm(&d);
            assert_eq!(
                (got.availability, got.activity),
                (availability, activity),
                "{name}"
            );
            assert_eq!(
                got.out_of_office,
                (activity == Some(OutOfOffice)).then_some(true),
                "{name}"
            );
        }
    }

    #[test]
    fn legacy_rpid_status_table() {
        let legacy = |text: &str| {
            pidf_doc(&format!(
                "<presence {NS} entity=\"a\"><tuple id=\"t\"><status><basic>open</basic>\
                 <es:activities><es:activity>{text}</es:activity></es:activities></status></tuple></presence>"
            ))
        };
        #[rustfmt::skip]
        let rows: &[(&str, Availability, Option<Activity>)] = &[
            ("online",       Available,   None),
            ("busy",         Busy,        None),
            ("away",         Away,        None),
            ("on-the-phone", Busy,        Some(InACall)),
            ("berightback",  BeRightBack, None),
            ("lunch",        Away,        Some(Other)),
            ("outtolunch",   Away,        Some(Other)),
            ("meeting",      Busy,        Some(InAMeeting)),
            ("vacation",     Away,        Some(Vacation)),
            ("Appointment",  Busy,        Some(InAMeeting)),
            ("whatever",     Available,   None),
        ];
        for (text, availability, activity) in rows {
            let got = norm(&legacy(text));
            assert_eq!(
                (got.availability, got.activity),
                (*availability, *activity),
                "{text}"
            );
            assert_eq!(got.raw["sip.activities"], text.to_ascii_lowercase());
        }
    }

    #[test]
    fn combining_rules() {
        let o: &[&str] = &["open"];
        let c: &[&str] = &["closed"];
        #[rustfmt::skip]
        let rows: Vec<(&str, PresenceDoc, Availability, Option<Activity>)> = vec![
            // Precedence: on-the-phone > dnd > meeting > busy > vacation > brb > away > available.
            ("phone > dnd",       doc(o, &["on-the-phone", "busy"], Some("DND")),  Busy,         Some(InACall)),
            ("dnd > meeting",     doc(o, &["meeting"], Some("Do Not Disturb")),    DoNotDisturb, None),
            ("meeting > busy",    doc(o, &["busy", "meeting"], None),              Busy,         Some(InAMeeting)),
            ("busy > vacation",   doc(o, &["vacation", "busy"], None),             Busy,         None),
            ("vacation > brb",    doc(o, &["vacation"], Some("brb")),              Away,         Some(Vacation)),
            ("brb > away",        doc(o, &["lunch"], Some("brb")),                 BeRightBack,  None),
            ("away > available",  doc(o, &["working", "away"], None),              Away,         None),
            ("first activity",    doc(o, &["away", "lunch", "travel"], None),      Away,         Some(Other)),
            ("presentation first", doc(o, &["presentation", "meeting"], None),     Busy,         Some(Presenting)),
            // All closed: away-class signals become offline...
            ("closed + away",     doc(c, &["away"], None),                         Offline,      None),
            ("closed + lunch",    doc(c, &["lunch"], None),                        Offline,      None),
            ("closed + brb",      doc(c, &[], Some("Be right back")),              Offline,      None),
            ("closed + working",  doc(c, &["working"], None),                      Offline,      None),
            // ...vacation and meeting (calendar-driven) and stronger ones keep precedence.
            ("closed + vacation", doc(c, &["vacation"], None),                     Away,         Some(Vacation)),
            ("closed + ooo note", doc(c, &[], Some("out of office")),              Away,         Some(OutOfOffice)),
            ("closed + meeting",  doc(c, &["meeting"], None),                      Busy,         Some(InAMeeting)),
            ("closed + busy",     doc(c, &["busy"], None),                         Busy,         None),
            ("closed + dnd",      doc(c, &[], Some("DND")),                        DoNotDisturb, None),
            ("closed + phone",    doc(c, &["on-the-phone"], None),                 Busy,         Some(InACall)),
            // Not all closed (unknown basic): away stays away.
            ("unknown + away",    doc(&["closed", "unknown"], &["away"], None),    Away,         None),
            // No tuples at all: activities alone decide.
            ("no tuples, away",   doc(&[], &["away"], None),                       Away,         None),
        ];
        for (name, d, availability, activity) in rows {
            let got = norm(&d);
            assert_eq!(
                (got.availability, got.activity),
                (availability, activity),
                "{name}"
            );
        }
    }

    #[test]
    fn newest_person_and_tuple_reading() {
        let d = pidf_doc(&format!(
            "<presence {NS} entity=\"a\">\
             <tuple id=\"old\"><status><basic>closed</basic><es:activities><es:activity>away</es:activity></es:activities></status><note>stale</note></tuple>\
             <tuple id=\"\"><status><basic>open</basic></status></tuple>\
             <tuple id=\"desk\"><status><basic>open</basic></status><note>desk note</note></tuple>\
             <dm:person id=\"new\"><rpid:activities><rpid:busy/></rpid:activities><dm:timestamp>2024-05-01T10:00:00Z</dm:timestamp></dm:person>\
             <dm:person id=\"old\"><rpid:activities><rpid:on-the-phone/></rpid:activities><dm:note>old</dm:note><dm:timestamp>2024-05-01T09:00:00Z</dm:timestamp></dm:person>\
             </presence>"
        ));
        let got = norm(&d);
        assert_eq!((got.availability, got.activity), (Busy, None));
        // The closed tuple's legacy "away" is not read when some tuple is open.
        assert_eq!(got.raw["sip.activities"], "busy");
        assert_eq!(got.raw["sip.basic"], "closed open open");
        assert_eq!(got.note.as_deref(), Some("desk note"));
        assert_eq!(got.device.as_deref(), Some("desk"));
    }

    #[test]
    fn idle() {
        let mk = |person_ui: Option<&str>, devices: &[&str], acts: &[&str], basic: &str| {
            let person = Person {
                id: "p".into(),
                activities: acts.iter().map(|s| s.to_string()).collect(),
                user_input: person_ui.map(Into::into),
                last_input: Some("2024-05-01T08:00:00Z".into()),
                ..Person::default()
            };
            PresenceDoc::Pidf(Pidf {
                entity: "a".into(),
                tuples: vec![Tuple {
                    id: "t".into(),
                    basic: Some(basic.into()),
                    ..Tuple::default()
                }],
                persons: vec![person],
                devices: devices
                    .iter()
                    .map(|u| Device {
                        user_input: Some(u.to_string()),
                        ..Device::default()
                    })
                    .collect(),
                ..Pidf::default()
            })
        };
        #[rustfmt::skip]
        let rows = [
            ("person idle",          mk(Some("idle"), &[], &[], "open"),                AvailableIdle),
            ("person active",        mk(Some("active"), &["idle"], &[], "open"),        Available),
            ("devices idle",         mk(None, &["idle", "idle"], &[], "open"),          AvailableIdle),
            ("devices mixed",        mk(None, &["idle", "active"], &[], "open"),        Available),
            ("idle but busy",        mk(Some("idle"), &[], &["busy"], "open"),          Busy),
            ("idle but away",        mk(Some("idle"), &[], &["away"], "open"),          Away),
            ("idle and closed",      mk(Some("idle"), &[], &[], "closed"),              Offline),
        ];
        for (name, d, want) in rows {
            let got = norm(&d);
            assert_eq!(got.availability, want, "{name}");
            // The person's last-input counts whenever the user is idle.
            let idle = !name.contains("active") && !name.contains("mixed");
            assert_eq!(got.last_active, idle.then_some(1_714_550_400_000), "{name}");
        }
    }

    #[test]
    fn observed_bodies() {
        // baresip unregistered: basic unknown, empty activities → no opinion at all.
        let got = norm(&pidf_doc(BARESIP));
        assert_eq!((got.availability, got.activity), (Unknown, None));
        assert_eq!(got.raw["sip.basic"], "unknown");
        assert!(!got.raw.contains_key("sip.activities"));
        // baresip registered: the same with basic open.
        let got = norm(&pidf_doc(&BARESIP.replace(">unknown<", ">open<")));
        assert_eq!(got.availability, Available);
        assert_eq!(got.device.as_deref(), Some("t4109"));

        let got = norm(&pidf_doc(PUA_USRLOC));
        assert_eq!(got.availability, Available);
        assert_eq!(got.device.as_deref(), Some("0x7f0c7c2f9f28"));
        assert_eq!(
            got.raw.iter().collect::<Vec<_>>(),
            [(&"sip.basic".to_string(), &"open".to_string())]
        );

        let got = norm(&pidf_doc(LEGACY));
        assert_eq!((got.availability, got.activity), (Busy, None));
        assert_eq!(got.note.as_deref(), Some("busy"));

        let got = norm(&pidf_doc(PUBLISHED));
        assert_eq!((got.availability, got.activity), (Busy, Some(InAMeeting)));
        assert_eq!(got.note.as_deref(), Some("In a meeting"));
        assert_eq!(got.device.as_deref(), Some("bridge-t1"));

        let want = [
            (Available, None, Some("Available")),
            (Busy, Some(InACall), Some("On the phone")),
            (Offline, None, None),
        ];
        for (body, (availability, activity, note)) in SIPP_NOTIFIER.iter().zip(want) {
            let got = norm(&pidf_doc(body));
            assert_eq!(
                (got.availability, got.activity, got.note.as_deref()),
                (availability, activity, note),
                "{body}"
            );
        }
    }

    #[test]
    fn xpidf_table() {
        let x = |status: &str, sub: &str| {
            let body = sipp_xpidf(status, sub);
            match parse_body("application/xpidf+xml", body.as_bytes()).unwrap() {
                Body::Xpidf(x) => PresenceDoc::Xpidf(x),
                _ => unreachable!(),
            }
        };
        #[rustfmt::skip]
        let rows: &[(&str, &str, Availability, Option<Activity>)] = &[
            ("open",     "online",      Available,     None),
            ("open",     "",            Available,     None),
            ("open",     "unknown",     Available,     None),
            ("open",     "busy",        Busy,          None),
            ("open",     "onthephone",  Busy,          Some(InACall)),
            ("inuse",    "online",      Busy,          Some(InACall)),
            ("inuse",    "onthephone",  Busy,          Some(InACall)),
            ("open",     "berightback", BeRightBack,   None),
            ("open",     "away",        Away,          None),
            ("inactive", "",            Away,          None),
            ("open",     "outtolunch",  Away,          Some(Other)),
            ("open",     "idle",        AvailableIdle, None),
            ("inactive", "idle",        Away,          None),
            ("closed",   "",            Offline,       None),
            ("closed",   "offline",     Offline,       None),
            ("closed",   "berightback", Offline,       None),
            ("closed",   "busy",        Busy,          None),
            ("",         "",            Unknown,       None),
        ];
        for (status, sub, availability, activity) in rows {
            let got = norm(&x(status, sub));
            assert_eq!(
                (got.availability, got.activity),
                (*availability, *activity),
                "{status}/{sub}"
            );
            assert_eq!(
                got.raw.get("sip.xpidf.status").map(String::as_str),
                Some(*status).filter(|s| !s.is_empty())
            );
            assert_eq!(
                got.raw.get("sip.xpidf.substatus").map(String::as_str),
                Some(*sub).filter(|s| !s.is_empty())
            );
            assert_eq!(got.device.is_some(), *status != "closed", "{status}");
        }
        let got = norm(&PresenceDoc::Xpidf(
            match parse_body("application/xpidf+xml", XPIDF.as_bytes()).unwrap() {
                Body::Xpidf(x) => x,
                _ => unreachable!(),
            },
        ));
        assert_eq!((got.availability, got.activity), (Busy, Some(InACall)));
        assert_eq!(got.note.as_deref(), Some("On the phone"));
        assert_eq!(got.device.as_deref(), Some("sip:alice@example.com;user=ip"));
        assert_eq!(
            norm(&PresenceDoc::Xpidf(Xpidf::default())).availability,
            Unknown
        );
    }

    #[test]
    fn empty_and_terminated() {
        let o = opts();
        let off = SipNormalizeOptions {
            empty_active_is_offline: false,
            ..o
        };
        let n = |d: PresenceDoc, opts: &SipNormalizeOptions| normalize(Some(&d), None, None, opts);
        let got = n(PresenceDoc::EmptyActive, &o);
        assert_eq!((got.availability, got.activity), (Offline, None));
        assert_eq!(got.raw["sip.subscription"], "no-state");
        assert_eq!(n(PresenceDoc::EmptyActive, &off).availability, Unknown);
        let got = n(PresenceDoc::EmptyPending, &o);
        assert_eq!(got.availability, Unknown);
        assert_eq!(got.raw["sip.subscription"], "pending");
        let got = n(
            PresenceDoc::Terminated {
                reason: "rejected".into(),
            },
            &o,
        );
        assert_eq!(got.availability, Unknown);
        assert_eq!(got.raw["sip.subscription"], "terminated;reason=rejected");
        assert_eq!(
            n(PresenceDoc::Terminated { reason: " ".into() }, &o).raw["sip.subscription"],
            "terminated"
        );
        // The two differ only in raw, and that is still a change.
        assert_ne!(
            n(PresenceDoc::EmptyPending, &off),
            n(PresenceDoc::EmptyActive, &off)
        );
        for (reason, stops) in [
            ("rejected", true),
            ("NoResource", true),
            ("invariant", true),
            ("timeout", false),
            ("deactivated", false),
            ("probation", false),
            ("giveup", false),
            ("", false),
        ] {
            assert_eq!(terminated_changes_state(reason), stops, "{reason}");
        }
        assert_eq!(normalize(None, None, None, &o), PresenceState::new(Unknown));
    }

    #[test]
    fn dialog_overlay() {
        let avail = doc(&["open"], &[], None);
        let meeting = doc(&["open"], &["meeting"], None);
        let closed = doc(&["closed"], &["lunch"], None);
        let no_dialing = SipNormalizeOptions {
            dialing_is_on_the_phone: false,
            ..opts()
        };
        #[rustfmt::skip]
        let rows: Vec<OverlayRow> = vec![
            ("in call",             Some(&avail),   Telephony::InCall,  opts(),     Busy,      Some(InACall)),
            ("in call > meeting",   Some(&meeting), Telephony::InCall,  opts(),     Busy,      Some(InACall)),
            ("in call, closed",     Some(&closed),  Telephony::InCall,  opts(),     Busy,      Some(InACall)),
            ("in call, no presence", None,          Telephony::InCall,  opts(),     Busy,      Some(InACall)),
            ("ringing",             Some(&avail),   Telephony::Ringing, opts(),     Available, Some(Other)),
            ("ringing in meeting",  Some(&meeting), Telephony::Ringing, opts(),     Busy,      Some(InAMeeting)),
            ("dialing",             Some(&avail),   Telephony::Dialing, opts(),     Busy,      Some(InACall)),
            ("dialing, option off", Some(&avail),   Telephony::Dialing, no_dialing, Available, Some(Other)),
            ("idle",                Some(&avail),   Telephony::Idle,    opts(),     Available, None),
            ("idle, no presence",   None,           Telephony::Idle,    opts(),     Unknown,   None),
        ];
        for (name, presence, t, o, availability, activity) in rows {
            let got = normalize(presence, Some(t), None, &o);
            assert_eq!(
                (got.availability, got.activity),
                (availability, activity),
                "{name}"
            );
            assert_eq!(got.raw["sip.dialog"], t.as_str(), "{name}");
        }
        let overlay = normalize(
            Some(&PresenceDoc::EmptyActive),
            Some(Telephony::InCall),
            None,
            &opts(),
        );
        assert_eq!(overlay.availability, Busy);

        // The sipp dialog notifier through the tracker, over an available presence.
        let mut tracker = DialogTracker::new();
        let mut seen = vec![];
        for body in SIPP_DIALOG {
            let Body::Dialog(d) =
                parse_body("application/dialog-info+xml", body.as_bytes()).unwrap()
            else {
                unreachable!()
            };
            tracker.apply(&d);
            let s = normalize(Some(&avail), Some(tracker.telephony()), None, &opts());
            seen.push((s.availability, s.activity, s.raw["sip.dialog"].clone()));
        }
        assert_eq!(
            seen,
            [
                (Available, None, "idle".to_string()),
                (Available, Some(Other), "ringing".to_string()),
                (Busy, Some(InACall), "in-a-call".to_string()),
                (Available, None, "idle".to_string()),
            ]
        );
        let Body::Dialog(k) =
            parse_body("application/dialog-info+xml", KAMAILIO.as_bytes()).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(
            normalize(None, Some(Telephony::of(&k.dialogs)), None, &opts()).activity,
            Some(InACall)
        );
    }

    #[test]
    fn mwi_raw() {
        let avail = doc(&["open"], &[], None);
        let m = |body: &str| match parse_body("application/simple-message-summary", body.as_bytes())
            .unwrap()
        {
            Body::Mwi(m) => m,
            _ => unreachable!(),
        };
        for (body, want) in [
            ("Messages-Waiting: yes\r\nMessage-Account: sip:alice@vm.example.com\r\nVoice-Message: 2/8 (1/2)\r\n", "yes 2/8"),
            ("Messages-Waiting: no\r\n", "no"),
            ("Messages-Waiting: yes\r\nFax-Message: 1/0\r\n", "yes 1/0"),
        ] {
            let got = normalize(Some(&avail), None, Some(&m(body)), &opts());
            assert_eq!(got.availability, Available);
            assert_eq!(got.raw["sip.mwi"], want);
        }
        assert_ne!(
            normalize(
                Some(&avail),
                None,
                Some(&m("Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n")),
                &opts()
            ),
            normalize(
                Some(&avail),
                None,
                Some(&m("Messages-Waiting: yes\r\nVoice-Message: 2/0\r\n")),
                &opts()
            ),
        );
    }

    #[test]
    fn rls_resources() {
        let Body::List(l) = parse_body(SIPP_CT, sipp_first().as_bytes()).unwrap() else {
            unreachable!()
        };
        let alice = l.resources[0]
            .best_instance()
            .unwrap()
            .body()
            .unwrap()
            .clone();
        let got = norm(&PresenceDoc::from_body(alice).unwrap());
        assert_eq!((got.availability, got.activity), (Busy, None));
        assert_eq!(user_from_uri(&l.resources[0].uri), "alice@127.0.0.1");
    }

    #[test]
    fn raw_values() {
        let d = pidf_doc(&format!(
            "<presence {NS} entity=\"a\"><tuple id=\"t\"><status><basic>open</basic></status></tuple><tuple id=\"u\"/>\
             <dm:person id=\"p\"><rpid:activities><rpid:away/><rpid:other>Gone</rpid:other></rpid:activities>\
             <rpid:user-input>active</rpid:user-input></dm:person></presence>"
        ));
        let got = norm(&d);
        let raw: Vec<(&str, &str)> = got
            .raw
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            raw,
            [
                ("sip.activities", "away other"),
                ("sip.basic", "open -"),
                ("sip.other", "Gone"),
                ("sip.user_input", "active"),
            ]
        );
    }

    #[test]
    fn users() {
        for (uri, want) in [
            ("sip:Alice@Example.com", "alice@example.com"),
            ("carol@127.0.0.1", "carol@127.0.0.1"),
            ("pres:bob@example.com", "bob@example.com"),
            ("SIPS:bob@example.com:5061;transport=tls", "bob@example.com"),
            (
                "\"Bob\" <sip:bob@example.com:5060>;tag=1",
                "bob@example.com",
            ),
            ("sip:alice@127.0.0.1;method=SUBSCRIBE", "alice@127.0.0.1"),
            ("sip:alice@[::1]:5060", "alice@[::1]"),
            ("sip:example.com", "example.com"),
            ("tel:+4930123", "+4930123"),
            ("", ""),
            ("é", "é"),
        ] {
            assert_eq!(user_from_uri(uri), want, "{uri}");
        }
    }

    #[test]
    fn command_bodies() {
        let body = pidf_for_command(
            "sip:alice@example.com",
            Busy,
            Some(InAMeeting),
            Some("Board <meeting> & \"lunch\"\r\n"),
            "bridge-t1",
            "bridge-p1",
            1_714_554_000_000,
        );
        assert!(body.contains(r#"entity="sip:alice@example.com""#), "{body}");
        assert!(body.contains(r#"<tuple id="bridge-t1"><status><basic>open</basic></status><timestamp>2024-05-01T09:00:00Z</timestamp></tuple>"#), "{body}");
        assert!(body.contains(r#"<dm:person id="bridge-p1"><rpid:activities><rpid:busy/><rpid:meeting/></rpid:activities>"#), "{body}");
        assert!(
            body.contains("<dm:note>Board &lt;meeting&gt; &amp; \"lunch\"&#13;\n</dm:note>"),
            "{body}"
        );
        let Body::Pidf(p) = parse_body("application/pidf+xml", body.as_bytes()).unwrap() else {
            unreachable!()
        };
        assert_eq!(p.persons[0].notes, ["Board <meeting> & \"lunch\""]);

        // Hostile entity and ids cannot break out of their attribute.
        let body = pidf_for_command(
            "a\"><x/>&\u{0}\t\nz",
            Available,
            None,
            Some("\u{1}"),
            "1 bad\"id",
            "",
            0,
        );
        assert!(
            body.contains("entity=\"a&quot;&gt;&lt;x/&gt;&amp;&#9;&#10;z\""),
            "{body}"
        );
        assert!(body.contains("<tuple id=\"_1_bad_id\">"), "{body}");
        assert!(body.contains("<dm:person id=\"_\">"), "{body}");
        assert!(body.contains("<rpid:activities/>"), "{body}");
        assert!(body.contains("<dm:note></dm:note>"), "{body}");
        let Body::Pidf(p) = parse_body("application/pidf+xml", body.as_bytes()).unwrap() else {
            unreachable!()
        };
        assert_eq!(p.entity, "a\"><x/>&\t\nz");
        assert_eq!(
            p.tuples[0].timestamp.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );

        assert!(check_command(Unknown).is_err());
        assert!(
            Availability::ALL
                .iter()
                .filter(|a| check_command(**a).is_ok())
                .count()
                == 8
        );
    }

    #[test]
    fn command_round_trip() {
        #[rustfmt::skip]
        let rows: &[RoundTripRow] = &[
            (Available,     None,               None,                Available,     None),
            (AvailableIdle, None,               None,                AvailableIdle, None),
            (Away,          None,               None,                Away,          None),
            (BeRightBack,   None,               None,                BeRightBack,   None),
            (BeRightBack,   None,               Some("coffee"),      BeRightBack,   None),
            (Busy,          None,               None,                Busy,          None),
            (BusyIdle,      None,               None,                Busy,          None),
            (DoNotDisturb,  None,               None,                DoNotDisturb,  None),
            (DoNotDisturb,  None,               Some("heads down"),  DoNotDisturb,  None),
            (Offline,       None,               None,                Offline,       None),
            (Busy,          Some(InACall),      None,                Busy,          Some(InACall)),
            (Busy,          Some(InAConferenceCall), None,           Busy,          Some(InACall)),
            (Busy,          Some(InAMeeting),   Some("1:1"),         Busy,          Some(InAMeeting)),
            (Busy,          Some(Presenting),   None,                Busy,          Some(Presenting)),
            (Away,          Some(Vacation),     None,                Away,          Some(Vacation)),
            (Away,          Some(OutOfOffice),  None,                Away,          Some(OutOfOffice)),
            (Away,          Some(OutOfOffice),  Some("back Monday"), Away,          Some(OutOfOffice)),
            (Available,     Some(Focusing),     None,                Available,     None),
        ];
        for (availability, activity, note, want_a, want_act) in rows {
            let body = pidf_for_command(
                "sip:alice@example.com",
                *availability,
                *activity,
                *note,
                "t1",
                "p1",
                1_714_554_000_000,
            );
            let got = norm(&pidf_doc(&body));
            assert_eq!(
                (got.availability, got.activity),
                (*want_a, *want_act),
                "{availability:?} {activity:?} {note:?}\n{body}"
            );
            let marker = match (availability, activity) {
                (DoNotDisturb, _) => Some("Do Not Disturb"),
                (BeRightBack, _) => Some("Be Right Back"),
                (_, Some(OutOfOffice)) => Some("Out of Office"),
                _ => None,
            };
            assert_eq!(
                got.note.as_deref(),
                note.or(marker),
                "{availability:?} {note:?}"
            );
            assert_eq!(
                got.out_of_office,
                (*activity == Some(OutOfOffice)).then_some(true)
            );
            assert_eq!(got.device.is_some(), *availability != Offline);
        }
    }
}
