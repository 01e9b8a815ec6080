//! PWS states to the normalized model, and normalized availabilities back to what PWS
//! accepts. Pure tables; the raw PWS values stay in [`PresenceState::raw`]:
//!
//! | raw key | value |
//! |---|---|
//! | `pws.basic` | `presenceStatus` of a basic list, exactly as sent |
//! | `pws.activities` | the person's activity element names, space-joined (`busy on-the-phone`) |
//! | `pws.phone_status`, `pws.im_status`, `pws.user_input` | the person's text values |
//! | `pws.tuples` | every tuple as `id=basic`, space-joined (`cisco-upc=open cisco-pws=closed`) |
//!
//! Basic (§6 of the reference): `AVAILABLE`→AVAILABLE, `BUSY`→BUSY, `DND`→DO_NOT_DISTURB,
//! `AWAY`→AWAY, `VACATION`→AWAY + VACATION, `UNAVAILABLE`→OFFLINE, `UNKNOWN` and anything
//! else→UNKNOWN (case-insensitive, trimmed).
//!
//! Rich: the person's activities carry the overall state. When several state elements are
//! present the most restrictive wins, in this order: `dnd`, `busy` (or a bare
//! `on-the-phone`/`meeting`), `vacation`, `away`, `available`, `unavailable`. Without a
//! known state element the tuples decide: some tuple `open` → AVAILABLE, all `closed` →
//! OFFLINE, no tuple at all (an empty document, as for a user the server does not know) →
//! UNKNOWN. Idle
//! (`user-input` = `idle`, the person's value, else every open tuple that reports one)
//! turns AVAILABLE into AVAILABLE_IDLE and BUSY into BUSY_IDLE. Qualifiers set the activity
//! whatever the state (DND stays DND on a call): `on-the-phone`→IN_A_CALL,
//! `meeting`→IN_A_MEETING, `vacation`→VACATION. PWS has no out-of-office flag, so
//! `out_of_office` stays `None`.
//!
//! `note` is the person's (or presence-level) note, else the note of the first open tuple
//! that has one. `device` is the id of the first open tuple in document order (e.g.
//! `cisco-upc`, or `cisco-pws` for a state set through PWS): the client the user is
//! reachable on; `None` when no tuple is open.

use super::xml::{Pidf, Tuple};
use crate::model::{canonical_user, Activity, Availability, PresenceState};

/// A basic `presenceStatus` (§5.1) as a normalized state.
pub fn normalize_basic(status: &str) -> PresenceState {
    let state = match status.trim().to_ascii_uppercase().as_str() {
        "AVAILABLE" => PresenceState::new(Availability::Available),
        "BUSY" => PresenceState::new(Availability::Busy),
        "DND" => PresenceState::new(Availability::DoNotDisturb),
        "AWAY" => PresenceState::new(Availability::Away),
        "VACATION" => PresenceState::new(Availability::Away).with_activity(Activity::Vacation),
        "UNAVAILABLE" => PresenceState::new(Availability::Offline),
        _ => PresenceState::new(Availability::Unknown),
    };
    state.with_raw("pws.basic", status)
}

/// A rich PIDF document (§5.2) as a normalized state (rules in the module docs).
pub fn normalize_rich(p: &Pidf) -> PresenceState {
    let has = |name: &str| p.activities.iter().any(|a| a.eq_ignore_ascii_case(name));
    let on_the_phone = has("on-the-phone");
    let meeting = has("meeting");
    let vacation = has("vacation");
    let open: Vec<&Tuple> = p.tuples.iter().filter(|t| is_open(t)).collect();
    let idle = is_idle(p, &open);

    let availability = if has("dnd") {
        Availability::DoNotDisturb
    } else if has("busy") || on_the_phone || meeting {
        if idle {
            Availability::BusyIdle
        } else {
            Availability::Busy
        }
    } else if vacation || has("away") {
        Availability::Away
    } else if has("available") || (!has("unavailable") && !open.is_empty()) {
        if idle {
            Availability::AvailableIdle
        } else {
            Availability::Available
        }
    } else if has("unavailable") || !p.tuples.is_empty() {
        Availability::Offline
    } else {
        Availability::Unknown
    };

    let mut state = PresenceState::new(availability);
    state.activity = if on_the_phone {
        Some(Activity::InACall)
    } else if meeting {
        Some(Activity::InAMeeting)
    } else if vacation {
        Some(Activity::Vacation)
    } else {
        None
    };
    state.note = p
        .note
        .clone()
        .or_else(|| open.iter().find_map(|t| t.note.clone()));
    state.device = open
        .iter()
        .map(|t| &t.id)
        .find(|id| !id.is_empty())
        .cloned();

    if !p.activities.is_empty() {
        state = state.with_raw("pws.activities", p.activities.join(" "));
    }
    for (key, value) in [
        ("pws.phone_status", &p.phone_status),
        ("pws.im_status", &p.im_status),
        ("pws.user_input", &p.user_input),
    ] {
        if let Some(value) = value {
            state = state.with_raw(key, value.as_str());
        }
    }
    if !p.tuples.is_empty() {
        let tuples: Vec<String> = p
            .tuples
            .iter()
            .map(|t| format!("{}={}", t.id, t.basic.as_deref().unwrap_or("")))
            .collect();
        state = state.with_raw("pws.tuples", tuples.join(" "));
    }
    state
}

fn is_open(t: &Tuple) -> bool {
    t.basic
        .as_deref()
        .is_some_and(|b| b.eq_ignore_ascii_case("open"))
}

fn is_idle(p: &Pidf, open: &[&Tuple]) -> bool {
    let idle = |v: &str| v.eq_ignore_ascii_case("idle");
    match p.user_input.as_deref() {
        Some(v) => idle(v),
        None => {
            let mut reported = open
                .iter()
                .filter_map(|t| t.user_input.as_deref())
                .peekable();
            reported.peek().is_some() && reported.all(idle)
        }
    }
}

/// The basic presence value (§3.13) that sets `a`, or why it cannot be set.
pub fn basic_for_command(a: Availability) -> Result<&'static str, String> {
    match a {
        Availability::Available | Availability::AvailableIdle => Ok("AVAILABLE"),
        Availability::Away | Availability::BeRightBack => Ok("AWAY"),
        Availability::Busy | Availability::BusyIdle => Ok("BUSY"),
        Availability::DoNotDisturb => Ok("DND"),
        Availability::Offline => Ok("UNAVAILABLE"),
        Availability::Unknown => Err("UNKNOWN cannot be set at PWS (the server only reports \
             it); use AVAILABLE, AWAY, BUSY, DO_NOT_DISTURB or OFFLINE"
            .to_string()),
    }
}

/// The `Presence-Override` header for setting basic `status`: `DND` is only accepted with
/// override (error 122), `AVAILABLE` only without (error 121); the rest are set as one
/// more client (without override), so the user's other clients still count.
pub fn override_for(status: &str) -> bool {
    status.trim().eq_ignore_ascii_case("DND")
}

/// The canonical user id of a PWS contact URI (`sip:Alice@x` and `alice@x` are one user).
pub fn user_from_uri(uri: &str) -> String {
    canonical_user(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::pws::xml::parse_rich_list;
    use Availability::*;

    #[test]
    fn basic_table() {
        #[rustfmt::skip]
        let rows: &[(&str, Availability, Option<Activity>)] = &[
            ("AVAILABLE",   Available,    None),
            ("BUSY",        Busy,         None),
            ("DND",         DoNotDisturb, None),
            ("AWAY",        Away,         None),
            ("VACATION",    Away,         Some(Activity::Vacation)),
            ("UNAVAILABLE", Offline,      None),
            ("UNKNOWN",     Unknown,      None),
            ("available",   Available,    None),
            ("Dnd",         DoNotDisturb, None),
            ("vacation",    Away,         Some(Activity::Vacation)),
            ("  BUSY \n",   Busy,         None),
            ("",            Unknown,      None),
            ("   ",         Unknown,      None),
            ("ON_THE_PHONE", Unknown,     None),
            ("AVAILABLE_IDLE", Unknown,   None),
        ];
        for (raw, availability, activity) in rows {
            let got = normalize_basic(raw);
            assert_eq!(got.availability, *availability, "{raw:?}");
            assert_eq!(got.activity, *activity, "{raw:?}");
            assert_eq!(got.raw.get("pws.basic").map(String::as_str), Some(*raw));
            assert_eq!(got.raw.len(), 1, "{raw:?}");
            assert_eq!(
                (got.note, got.device, got.out_of_office),
                (None, None, None)
            );
        }
    }

    fn tuple(id: &str, basic: &str, user_input: Option<&str>) -> Tuple {
        Tuple {
            id: id.into(),
            basic: Some(basic.into()),
            user_input: user_input.map(Into::into),
            ..Tuple::default()
        }
    }

    fn pidf(activities: &[&str], user_input: Option<&str>, tuples: Vec<Tuple>) -> Pidf {
        Pidf {
            entity: "sip:alice@example.com".into(),
            activities: activities.iter().map(|a| a.to_string()).collect(),
            user_input: user_input.map(Into::into),
            tuples,
            ..Pidf::default()
        }
    }

    #[test]
    fn rich_table() {
        let open = || vec![tuple("cisco-upc", "open", None)];
        let closed = || vec![tuple("cisco-upc", "closed", None)];
        #[rustfmt::skip]
        let rows: Vec<(&str, Pidf, Availability, Option<Activity>)> = vec![
            ("available",            pidf(&["available"], None, open()),                 Available,     None),
            ("available active",     pidf(&["available"], Some("active"), open()),       Available,     None),
            ("available idle",       pidf(&["available"], Some("idle"), open()),         AvailableIdle, None),
            ("available upper",      pidf(&["AVAILABLE"], None, open()),                 Available,     None),
            ("away",                 pidf(&["away"], None, open()),                      Away,          None),
            ("away idle",            pidf(&["away"], Some("idle"), open()),              Away,          None),
            ("busy",                 pidf(&["busy"], None, open()),                      Busy,          None),
            ("busy on-the-phone",    pidf(&["busy", "on-the-phone"], None, open()),      Busy,          Some(Activity::InACall)),
            ("busy meeting",         pidf(&["busy", "meeting"], None, open()),           Busy,          Some(Activity::InAMeeting)),
            ("busy idle",            pidf(&["busy"], Some("idle"), open()),              BusyIdle,      None),
            ("busy meeting idle",    pidf(&["busy", "meeting"], Some("idle"), open()),   BusyIdle,      Some(Activity::InAMeeting)),
            ("bare on-the-phone",    pidf(&["on-the-phone"], None, open()),              Busy,          Some(Activity::InACall)),
            ("bare meeting",         pidf(&["meeting"], None, closed()),                 Busy,          Some(Activity::InAMeeting)),
            ("dnd",                  pidf(&["dnd"], None, open()),                       DoNotDisturb,  None),
            ("dnd idle",             pidf(&["dnd"], Some("idle"), open()),               DoNotDisturb,  None),
            ("dnd on-the-phone",     pidf(&["dnd", "on-the-phone"], None, open()),       DoNotDisturb,  Some(Activity::InACall)),
            ("dnd beats busy",       pidf(&["busy", "dnd"], None, open()),               DoNotDisturb,  None),
            ("vacation",             pidf(&["vacation"], None, open()),                  Away,          Some(Activity::Vacation)),
            ("unavailable",          pidf(&["unavailable"], None, closed()),             Offline,       None),
            ("unavailable, open",    pidf(&["unavailable"], None, open()),               Offline,       None),
            ("none, all closed",     pidf(&[], None, closed()),                          Offline,       None),
            ("none, some open",      pidf(&[], None, vec![tuple("a", "closed", None), tuple("b", "open", None)]), Available, None),
            ("none, open idle",      pidf(&[], None, vec![tuple("a", "open", Some("idle"))]), AvailableIdle, None),
            ("none, mixed idle",     pidf(&[], None, vec![tuple("a", "open", Some("idle")), tuple("b", "open", Some("active"))]), Available, None),
            ("none, no tuples",      pidf(&[], None, vec![]),                            Unknown,       None),
            ("unknown only, open",   pidf(&["lunch"], None, open()),                     Available,     None),
            ("unknown only, closed", pidf(&["lunch"], None, closed()),                   Offline,       None),
            ("clear, open",          pidf(&["clear"], None, open()),                     Available,     None),
        ];
        for (name, doc, availability, activity) in rows {
            let got = normalize_rich(&doc);
            assert_eq!(got.availability, availability, "{name}");
            assert_eq!(got.activity, activity, "{name}");
            assert_eq!(got.out_of_office, None, "{name}");
            let joined = doc.activities.join(" ");
            assert_eq!(
                got.raw.get("pws.activities"),
                (!joined.is_empty()).then_some(&joined),
                "{name}"
            );
        }
    }

    #[test]
    fn rich_note_device_and_raw() {
        let mut doc = pidf(
            &["busy", "on-the-phone"],
            Some("active"),
            vec![
                Tuple {
                    note: Some("stale".into()),
                    ..tuple("jabber-desk", "closed", None)
                },
                Tuple {
                    note: Some("on a call".into()),
                    ..tuple("cisco-upc", "open", Some("active"))
                },
                tuple("cisco-pws", "open", None),
            ],
        );
        doc.phone_status = Some("busy".into());
        doc.im_status = Some("available".into());
        let got = normalize_rich(&doc);
        assert_eq!(got.device.as_deref(), Some("cisco-upc"));
        assert_eq!(got.note.as_deref(), Some("on a call"));
        let raw: Vec<(&str, &str)> = got
            .raw
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            raw,
            [
                ("pws.activities", "busy on-the-phone"),
                ("pws.im_status", "available"),
                ("pws.phone_status", "busy"),
                (
                    "pws.tuples",
                    "jabber-desk=closed cisco-upc=open cisco-pws=open"
                ),
                ("pws.user_input", "active"),
            ]
        );

        doc.note = Some("Back at 3".into());
        assert_eq!(normalize_rich(&doc).note.as_deref(), Some("Back at 3"));
        doc.tuples
            .iter_mut()
            .for_each(|t| t.basic = Some("closed".into()));
        let closed = normalize_rich(&doc);
        assert_eq!(closed.device, None);
        assert_eq!(closed.availability, Busy);
    }

    #[test]
    fn rich_reference_sample() {
        let docs = parse_rich_list(crate::connectors::pws::xml::tests::RICH_SAMPLE).unwrap();
        let got = normalize_rich(&docs[0]);
        assert_eq!(got.availability, Busy);
        assert_eq!(got.activity, Some(Activity::InACall));
        assert_eq!(got.device.as_deref(), Some("cisco-upc"));
        assert_eq!(got.note, None);
        assert_eq!(user_from_uri(&docs[0].entity), "alice@example.com");
    }

    #[test]
    fn commands() {
        #[rustfmt::skip]
        let rows: &[(Availability, &str, bool)] = &[
            (Available,     "AVAILABLE",   false),
            (AvailableIdle, "AVAILABLE",   false),
            (Away,          "AWAY",        false),
            (BeRightBack,   "AWAY",        false),
            (Busy,          "BUSY",        false),
            (BusyIdle,      "BUSY",        false),
            (DoNotDisturb,  "DND",         true),
            (Offline,       "UNAVAILABLE", false),
        ];
        for (a, status, override_) in rows {
            assert_eq!(basic_for_command(*a), Ok(*status), "{a}");
            assert_eq!(override_for(status), *override_, "{a}");
        }
        let err = basic_for_command(Unknown).unwrap_err();
        assert!(err.starts_with("UNKNOWN cannot be set"), "{err}");
        assert!(override_for(" dnd "));
        assert!(!override_for("VACATION"));
        assert!(!override_for(""));
        assert_eq!(
            Availability::ALL
                .iter()
                .filter(|a| basic_for_command(**a).is_ok())
                .count(),
            8
        );
    }

    #[test]
    fn users() {
        for (uri, want) in [
            ("alice@example.com", "alice@example.com"),
            ("sip:Alice@Example.com", "alice@example.com"),
            (" Bob@example.com ", "bob@example.com"),
        ] {
            assert_eq!(user_from_uri(uri), want, "{uri}");
        }
    }
}
