//! The presence model of one simulated user and its two renderings (basic and rich PIDF).
//!
//! A user's presence has two layers, like on IM&P:
//!
//! - the *client* layer: what the user's own clients publish (Jabber, phone). The handle's
//!   `set_basic`/`set_rich` and the random change generator write here. It shows in the rich
//!   view as the `cisco-upc` tuple.
//! - the *PWS* layer: what a PWS set-presence call wrote, shown as the `cisco-pws` tuple
//!   (override false) or the `pws-override` / `pws-persistent` tuple (override true).
//!
//! The overall state (the Cisco RPID `person` and the basic value) is the override layer when
//! there is one (it masks device changes), else whichever layer was written last, except
//! that a non-override UNAVAILABLE only counts when the client is unavailable too
//! (reference §3.14). Basic and rich are always two views of that one overall state.

use super::error::PwsError;
use super::xml::{escape_into, Element};

/// Basic presence values (reference §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basic {
    Available,
    Busy,
    Dnd,
    Away,
    Unavailable,
    Vacation,
    Unknown,
}

impl Basic {
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Available => "AVAILABLE",
            Basic::Busy => "BUSY",
            Basic::Dnd => "DND",
            Basic::Away => "AWAY",
            Basic::Unavailable => "UNAVAILABLE",
            Basic::Vacation => "VACATION",
            Basic::Unknown => "UNKNOWN",
        }
    }

    /// The exact upper-case wire value (UNKNOWN included; callers decide whether to allow it).
    pub fn from_wire(s: &str) -> Option<Basic> {
        Some(match s {
            "AVAILABLE" => Basic::Available,
            "BUSY" => Basic::Busy,
            "DND" => Basic::Dnd,
            "AWAY" => Basic::Away,
            "UNAVAILABLE" => Basic::Unavailable,
            "VACATION" => Basic::Vacation,
            "UNKNOWN" => Basic::Unknown,
            _ => return None,
        })
    }

    /// Cisco RPID activity element for the overall state; UNAVAILABLE has none.
    fn activity(self) -> Option<&'static str> {
        match self {
            Basic::Available => Some("available"),
            Basic::Busy => Some("busy"),
            Basic::Dnd => Some("dnd"),
            Basic::Away => Some("away"),
            Basic::Vacation => Some("vacation"),
            Basic::Unavailable | Basic::Unknown => None,
        }
    }
}

/// The "why busy" qualifier that rich presence carries next to `<busy/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qualifier {
    OnThePhone,
    Meeting,
}

impl Qualifier {
    fn element(self) -> &'static str {
        match self {
            Qualifier::OnThePhone => "on-the-phone",
            Qualifier::Meeting => "meeting",
        }
    }
}

/// One presence state: the overall basic value, an optional busy qualifier and a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub basic: Basic,
    pub qualifier: Option<Qualifier>,
    pub note: Option<String>,
}

impl State {
    pub fn basic(basic: Basic) -> State {
        State {
            basic,
            qualifier: None,
            note: None,
        }
    }

    /// From PIDF activity names (`busy`, `on-the-phone`, `meeting`, `away`, …), as the
    /// handle's `set_rich` takes them: several may be given, separated by spaces, commas or
    /// `+`. `on-the-phone` / `meeting` alone imply busy. `None` if nothing is recognised.
    pub fn from_activities(activities: &str, note: Option<&str>) -> Option<State> {
        let mut basic = None;
        let mut qualifier = None;
        for tok in activities
            .split(|c: char| c.is_whitespace() || c == ',' || c == '+')
            .filter(|t| !t.is_empty())
        {
            match activity_from_name(&tok.to_ascii_lowercase()) {
                Some(Activity::Basic(b)) => basic = basic.or(Some(b)),
                Some(Activity::Qualifier(q)) => qualifier = qualifier.or(Some(q)),
                Some(Activity::Clear) | None => return None,
            }
        }
        let basic = match (basic, qualifier) {
            (Some(b), _) => b,
            (None, Some(_)) => Basic::Busy,
            (None, None) => return None,
        };
        Some(State {
            basic,
            qualifier: if basic == Basic::Busy {
                qualifier
            } else {
                None
            },
            note: note.filter(|n| !n.is_empty()).map(str::to_owned),
        })
    }
}

enum Activity {
    Basic(Basic),
    Qualifier(Qualifier),
    Clear,
}

fn activity_from_name(name: &str) -> Option<Activity> {
    Some(match name {
        "available" => Activity::Basic(Basic::Available),
        "away" => Activity::Basic(Basic::Away),
        "busy" => Activity::Basic(Basic::Busy),
        "dnd" => Activity::Basic(Basic::Dnd),
        "vacation" => Activity::Basic(Basic::Vacation),
        "unavailable" => Activity::Basic(Basic::Unavailable),
        "on-the-phone" => Activity::Qualifier(Qualifier::OnThePhone),
        "meeting" => Activity::Qualifier(Qualifier::Meeting),
        "clear" => Activity::Clear,
        _ => return None,
    })
}

/// What a PWS set-presence call wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwsLayer {
    pub state: State,
    pub override_: bool,
    /// `cisco-pws`, `pws-override`, `pws-persistent` or the client's tuple id.
    pub tuple_id: String,
}

/// A simulated end user's presence (see the module doc for the layering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub client: State,
    pub pws: Option<PwsLayer>,
    /// The PWS layer was written after the client layer.
    pub pws_latest: bool,
}

impl UserPresence {
    pub fn new(client: State) -> UserPresence {
        UserPresence {
            client,
            pws: None,
            pws_latest: false,
        }
    }

    /// The overall state.
    pub fn effective(&self) -> &State {
        match &self.pws {
            Some(p) if p.override_ => &p.state,
            Some(p)
                if self.pws_latest
                    && (p.state.basic != Basic::Unavailable
                        || self.client.basic == Basic::Unavailable) =>
            {
                &p.state
            }
            _ => &self.client,
        }
    }

    pub fn set_client(&mut self, s: State) {
        self.client = s;
        self.pws_latest = false;
    }

    pub fn set_pws(&mut self, layer: PwsLayer) {
        self.pws = Some(layer);
        self.pws_latest = true;
    }

    pub fn clear_pws(&mut self) {
        self.pws = None;
        self.pws_latest = false;
    }
}

/// `<contact contactURI="…" presenceStatus="…"/>` of a basic presence list.
pub fn write_basic_contact(out: &mut String, contact_uri: &str, basic: Basic) {
    out.push_str("<contact contactURI=\"");
    escape_into(out, contact_uri);
    out.push_str("\" presenceStatus=\"");
    out.push_str(basic.as_str());
    out.push_str("\"/>");
}

pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
pub const CISCO_RPID_NS: &str = "urn:cisco:params:xml:ns:pidf:rpid";

/// One PIDF `<presence>` document for a contact, in the element set of reference §5.2.
/// `p` is `None` for a contact the server does not know: an empty document (no person, no
/// tuples), which is what UNKNOWN looks like in rich presence.
pub fn write_pidf(out: &mut String, contact_uri: &str, user_id: &str, p: Option<&UserPresence>) {
    out.push_str("<presence xmlns=\"");
    out.push_str(PIDF_NS);
    out.push_str("\" entity=\"sip:");
    escape_into(out, contact_uri);
    out.push('"');
    let Some(p) = p else {
        out.push_str("/>");
        return;
    };
    out.push('>');
    let eff = p.effective();
    let offline = eff.basic == Basic::Unavailable;

    // person: the overall state, in the Cisco RPID namespace.
    out.push_str("<person xmlns=\"");
    out.push_str(CISCO_RPID_NS);
    out.push_str("\" id=\"");
    escape_into(out, user_id);
    out.push_str("\"><activities>");
    if let Some(a) = eff.basic.activity() {
        push_empty(out, a);
    }
    if eff.basic == Basic::Busy {
        if let Some(q) = eff.qualifier {
            push_empty(out, q.element());
        }
    }
    let phone = match (eff.qualifier, offline) {
        (_, true) => "unavailable",
        (Some(Qualifier::OnThePhone), _) if eff.basic == Basic::Busy => "busy",
        _ => "available",
    };
    let im = match eff.basic {
        Basic::Available => "available",
        Basic::Busy => "busy",
        Basic::Dnd => "dnd",
        Basic::Away | Basic::Vacation => "away",
        Basic::Unavailable | Basic::Unknown => "unavailable",
    };
    out.push_str("<phone-status>");
    out.push_str(phone);
    out.push_str("</phone-status><im-status>");
    out.push_str(im);
    out.push_str("</im-status></activities>");
    if let Some(note) = &eff.note {
        out.push_str("<note>");
        escape_into(out, note);
        out.push_str("</note>");
    }
    out.push_str("</person>");

    out.push_str("<display-name xmlns=\"urn:ietf:params:xml:ns:pidf:cipid\">");
    escape_into(out, user_id);
    out.push_str("</display-name>");

    // The user's own client.
    let upc_open = !offline && p.client.basic != Basic::Unavailable;
    let idle = matches!(p.client.basic, Basic::Away | Basic::Vacation);
    write_tuple(out, "cisco-upc", "0.6", contact_uri, upc_open, Some(idle));
    // What PWS set, if anything.
    if let Some(layer) = &p.pws {
        let open = !offline && layer.state.basic != Basic::Unavailable;
        write_tuple(out, &layer.tuple_id, "0.8", contact_uri, open, None);
    }
    out.push_str("</presence>");
}

fn push_empty(out: &mut String, name: &str) {
    out.push('<');
    out.push_str(name);
    out.push_str("/>");
}

fn write_tuple(
    out: &mut String,
    id: &str,
    priority: &str,
    contact_uri: &str,
    open: bool,
    idle: Option<bool>,
) {
    out.push_str("<tuple id=\"");
    escape_into(out, id);
    out.push_str("\"><contact priority=\"");
    out.push_str(priority);
    out.push_str("\">sip:");
    escape_into(out, contact_uri);
    out.push_str("</contact>");
    if let Some(idle) = idle {
        out.push_str("<user-input>");
        out.push_str(if idle { "idle" } else { "active" });
        out.push_str("</user-input>");
    }
    out.push_str("<status><basic>");
    out.push_str(if open { "open" } else { "closed" });
    out.push_str("</basic></status></tuple>");
}

/// What a rich set-presence body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RichSet {
    Set(PwsLayer),
    /// `<clear/>`: drop the PWS layer.
    Clear,
}

/// Interprets a PIDF set-presence body (reference §3.14): root `presence`, every tuple with
/// a non-empty Cisco `source` element (162), with override only `pws-override` /
/// `pws-persistent` tuple ids (161). The state comes from `person/activities`, else from the
/// tuples' `status/basic` (any open → AVAILABLE, all closed → UNAVAILABLE).
pub fn parse_rich_set(doc: &Element, override_: bool) -> Result<RichSet, PwsError> {
    if doc.name != "presence" {
        return Err(PwsError(103));
    }
    let tuples: Vec<&Element> = doc.children.iter().filter(|c| c.name == "tuple").collect();
    for t in &tuples {
        let source_ok = t
            .descendant("source")
            .is_some_and(|s| !s.text.trim().is_empty());
        if !source_ok {
            return Err(PwsError(162));
        }
        if override_ && !matches!(t.attr("id"), Some("pws-override" | "pws-persistent")) {
            return Err(PwsError(161));
        }
    }

    let person = doc.child("person");
    let mut basic = None;
    let mut qualifier = None;
    if let Some(acts) = person.and_then(|p| p.child("activities")) {
        for a in &acts.children {
            match activity_from_name(&a.name) {
                Some(Activity::Clear) => return Ok(RichSet::Clear),
                Some(Activity::Basic(b)) => basic = basic.or(Some(b)),
                Some(Activity::Qualifier(q)) => qualifier = qualifier.or(Some(q)),
                None => {}
            }
        }
    }
    let basic = match (basic, qualifier) {
        (Some(b), _) => b,
        (None, Some(_)) => Basic::Busy,
        (None, None) if !tuples.is_empty() => {
            let open = tuples.iter().any(|t| {
                t.child("status")
                    .and_then(|s| s.child_text("basic"))
                    .is_some_and(|b| b.eq_ignore_ascii_case("open"))
            });
            if open {
                Basic::Available
            } else {
                Basic::Unavailable
            }
        }
        (None, None) => return Err(PwsError(120)),
    };
    let note = person
        .and_then(|p| p.child_text("note"))
        .or_else(|| doc.child_text("note"))
        .or_else(|| tuples.iter().find_map(|t| t.child_text("note")))
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let default_id = if override_ {
        "pws-override"
    } else {
        "cisco-pws"
    };
    let tuple_id = tuples
        .first()
        .and_then(|t| t.attr("id"))
        .filter(|id| !id.is_empty())
        .unwrap_or(default_id)
        .to_owned();
    Ok(RichSet::Set(PwsLayer {
        state: State {
            basic,
            qualifier: if basic == Basic::Busy {
                qualifier
            } else {
                None
            },
            note,
        },
        override_,
        tuple_id,
    }))
}

/// A random but plausible client state (used for initial states and random changes).
pub fn random_state(rng: &mut fastrand::Rng) -> State {
    let basic = match rng.u32(..100) {
        0..35 => Basic::Available,
        35..55 => Basic::Away,
        55..75 => Basic::Busy,
        75..83 => Basic::Dnd,
        83..95 => Basic::Unavailable,
        _ => Basic::Vacation,
    };
    let qualifier = if basic == Basic::Busy {
        match rng.u32(..4) {
            0 | 1 => Some(Qualifier::OnThePhone),
            2 => Some(Qualifier::Meeting),
            _ => None,
        }
    } else {
        None
    };
    let note = if rng.u32(..10) == 0 {
        Some(["Back at 3", "Working from home", "On site"][rng.usize(..3)].to_owned())
    } else {
        None
    };
    State {
        basic,
        qualifier,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::parse;
    use super::*;

    fn pidf(p: Option<&UserPresence>) -> String {
        let mut s = String::new();
        write_pidf(&mut s, "alice@example.com", "alice", p);
        s
    }

    #[test]
    fn activities_parse() {
        type Row = (&'static str, Option<(Basic, Option<Qualifier>)>);
        let rows: [Row; 8] = [
            ("busy", Some((Basic::Busy, None))),
            (
                "on-the-phone",
                Some((Basic::Busy, Some(Qualifier::OnThePhone))),
            ),
            (
                "busy+meeting",
                Some((Basic::Busy, Some(Qualifier::Meeting))),
            ),
            ("Away", Some((Basic::Away, None))),
            ("dnd", Some((Basic::Dnd, None))),
            ("vacation", Some((Basic::Vacation, None))),
            ("unavailable", Some((Basic::Unavailable, None))),
            ("sleeping", None),
        ];
        for (input, want) in rows {
            let got = State::from_activities(input, None).map(|s| (s.basic, s.qualifier));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn rich_mirrors_basic() {
        let rows = [
            (Basic::Available, Some("available"), "open"),
            (Basic::Away, Some("away"), "open"),
            (Basic::Busy, Some("busy"), "open"),
            (Basic::Dnd, Some("dnd"), "open"),
            (Basic::Vacation, Some("vacation"), "open"),
            (Basic::Unavailable, None, "closed"),
        ];
        for (basic, activity, tuple) in rows {
            let up = UserPresence::new(State::basic(basic));
            let doc = parse(&pidf(Some(&up))).unwrap();
            let person = doc.child("person").unwrap();
            let acts = person.child("activities").unwrap();
            let first = acts
                .children
                .iter()
                .map(|c| c.name.as_str())
                .find(|n| !n.ends_with("-status"));
            assert_eq!(first, activity, "{basic:?}");
            let t = doc.child("tuple").unwrap();
            assert_eq!(t.child("status").unwrap().child_text("basic"), Some(tuple));
        }
        let unknown = parse(&pidf(None)).unwrap();
        assert!(unknown.children.is_empty());
    }

    #[test]
    fn override_masks_client_and_clear_restores() {
        let mut up = UserPresence::new(State::basic(Basic::Available));
        up.set_pws(PwsLayer {
            state: State::basic(Basic::Dnd),
            override_: true,
            tuple_id: "pws-override".into(),
        });
        up.set_client(State::basic(Basic::Busy));
        assert_eq!(up.effective().basic, Basic::Dnd);
        up.clear_pws();
        assert_eq!(up.effective().basic, Basic::Busy);
        // Non-override: last writer wins, but UNAVAILABLE only if the client is too.
        up.set_pws(PwsLayer {
            state: State::basic(Basic::Unavailable),
            override_: false,
            tuple_id: "cisco-pws".into(),
        });
        assert_eq!(up.effective().basic, Basic::Busy);
        up.set_pws(PwsLayer {
            state: State::basic(Basic::Away),
            override_: false,
            tuple_id: "cisco-pws".into(),
        });
        assert_eq!(up.effective().basic, Basic::Away);
        up.set_client(State::basic(Basic::Available));
        assert_eq!(up.effective().basic, Basic::Available);
    }

    #[test]
    fn rich_set_rules() {
        let src = r#"<source xmlns="urn:cisco:params:xml:ns:pidf:source">Human</source>"#;
        let body = |tuple_id: &str, act: &str, source: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">
                <tuple id="{tuple_id}"><status><basic>open</basic></status>{source}</tuple>
                <rp:person xmlns:rp="urn:cisco:params:xml:ns:pidf:rpid"><rp:activities>{act}</rp:activities>
                <rp:note>Lunch</rp:note></rp:person></presence>"#
            )
        };
        let doc = parse(&body("pws-override", "<rp:away/>", src)).unwrap();
        let RichSet::Set(l) = parse_rich_set(&doc, true).unwrap() else {
            panic!("expected a set")
        };
        assert_eq!(l.state.basic, Basic::Away);
        assert_eq!(l.state.note.as_deref(), Some("Lunch"));
        assert_eq!(l.tuple_id, "pws-override");

        let doc = parse(&body("cisco-pws", "<rp:away/>", src)).unwrap();
        assert_eq!(parse_rich_set(&doc, true), Err(PwsError(161)));
        assert!(parse_rich_set(&doc, false).is_ok());

        let doc = parse(&body("cisco-pws", "<rp:away/>", "")).unwrap();
        assert_eq!(parse_rich_set(&doc, false), Err(PwsError(162)));

        let doc = parse(&body("cisco-pws", "<rp:clear/>", src)).unwrap();
        assert_eq!(parse_rich_set(&doc, false), Ok(RichSet::Clear));

        let doc = parse(&body("cisco-pws", "<rp:on-the-phone/>", src)).unwrap();
        let RichSet::Set(l) = parse_rich_set(&doc, false).unwrap() else {
            panic!("expected a set")
        };
        assert_eq!(
            (l.state.basic, l.state.qualifier),
            (Basic::Busy, Some(Qualifier::OnThePhone))
        );

        let doc = parse("<session/>").unwrap();
        assert_eq!(parse_rich_set(&doc, false), Err(PwsError(103)));
    }
}
