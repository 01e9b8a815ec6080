//! UCWA presence to the normalized model, and normalized availabilities back to what UCWA
//! accepts. Pure tables (reference §9); the raw UCWA values stay in
//! [`PresenceState::raw`], exactly as sent, under `ucwa.availability`, `ucwa.activity` and
//! `ucwa.deviceType` (each only when the server sent it).
//!
//! Availability (case-insensitive, trimmed): `Online`→AVAILABLE, `IdleOnline`→
//! AVAILABLE_IDLE, `Busy`→BUSY, `IdleBusy`→BUSY_IDLE, `DoNotDisturb`→DO_NOT_DISTURB,
//! `BeRightBack`→BE_RIGHT_BACK, `Away`→AWAY, `Offline`→OFFLINE; missing or anything else
//! (including `Inactive`, which one dashboard page mentions but the enum lacks)→UNKNOWN.
//!
//! Activity (case-insensitive, trimmed): `on-the-phone` and `in-a-call`→IN_A_CALL,
//! `in-a-conference`→IN_A_CONFERENCE_CALL, `in-a-meeting`→IN_A_MEETING,
//! `presenting`→PRESENTING, `urgent-interruptions-only`→URGENT_INTERRUPTIONS_ONLY,
//! `off-work`→OFF_WORK; any other text (UCWA sends localized text and other clients' custom
//! tokens)→OTHER; absent or blank→none. The activity never changes the availability:
//! `Away` + `off-work` stays AWAY with activity OFF_WORK.
//!
//! `device` is `deviceType` (`PC`, `Mobile`, `DeskPhone`, `Web`), `None` when absent, blank
//! or `Unknown`; `last_active` is `lastActive` in milliseconds; `note` is the contactNote
//! message, `None` when blank. UCWA's contactPresence has no out-of-office flag, so
//! `out_of_office` stays `None`.

use super::json::ContactPresence;
use crate::model::{Activity, Availability, PresenceState};

/// A contactPresence (and the contact's note, if fetched) as a normalized state.
pub fn normalize(p: &ContactPresence, note: Option<&str>) -> PresenceState {
    let availability = p
        .availability
        .as_deref()
        .map_or(Availability::Unknown, availability_of);
    let mut state = PresenceState::new(availability);
    state.activity = p.activity.as_deref().and_then(activity_of);
    state.device = p
        .device_type
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("Unknown"))
        .map(str::to_string);
    state.last_active = p.last_active;
    state.note = note.filter(|n| !n.trim().is_empty()).map(str::to_string);
    for (key, value) in [
        ("ucwa.availability", &p.availability),
        ("ucwa.activity", &p.activity),
        ("ucwa.deviceType", &p.device_type),
    ] {
        if let Some(value) = value {
            state = state.with_raw(key, value.as_str());
        }
    }
    state
}

/// A UCWA `Availability` value as a normalized availability.
fn availability_of(raw: &str) -> Availability {
    const TABLE: [(&str, Availability); 8] = [
        ("Online", Availability::Available),
        ("IdleOnline", Availability::AvailableIdle),
        ("Busy", Availability::Busy),
        ("IdleBusy", Availability::BusyIdle),
        ("DoNotDisturb", Availability::DoNotDisturb),
        ("BeRightBack", Availability::BeRightBack),
        ("Away", Availability::Away),
        ("Offline", Availability::Offline),
    ];
    let raw = raw.trim();
    TABLE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw))
        .map_or(Availability::Unknown, |(_, a)| *a)
}

/// A UCWA `activity` as a normalized activity; `None` when blank.
fn activity_of(raw: &str) -> Option<Activity> {
    const TABLE: [(&str, Activity); 7] = [
        ("on-the-phone", Activity::InACall),
        ("in-a-call", Activity::InACall),
        ("in-a-conference", Activity::InAConferenceCall),
        ("in-a-meeting", Activity::InAMeeting),
        ("presenting", Activity::Presenting),
        (
            "urgent-interruptions-only",
            Activity::UrgentInterruptionsOnly,
        ),
        ("off-work", Activity::OffWork),
    ];
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    Some(
        TABLE
            .iter()
            .find(|(token, _)| token.eq_ignore_ascii_case(raw))
            .map_or(Activity::Other, |(_, a)| *a),
    )
}

/// The `PreferredAvailability` (§7) that sets `a` on the signed-in user, or why it cannot
/// be set. On success the value is always `Some` (the body is
/// [`set_presence_body`](super::json::set_presence_body)`(value)`); `None` is reserved for
/// the reset, see [`reset_for_clear`].
///
/// AVAILABLE and AVAILABLE_IDLE→`Online`, BUSY and BUSY_IDLE→`Busy` (idleness is the
/// server's to decide), DO_NOT_DISTURB→`DoNotDisturb`, BE_RIGHT_BACK→`BeRightBack`,
/// AWAY→`Away`, or `Offwork` with activity OFF_WORK. Other activities cannot be set
/// through UCWA and are ignored. OFFLINE and UNKNOWN are refused.
pub fn availability_for_command(
    a: Availability,
    activity: Option<Activity>,
) -> Result<Option<&'static str>, String> {
    let value = match a {
        Availability::Available | Availability::AvailableIdle => "Online",
        Availability::Busy | Availability::BusyIdle => "Busy",
        Availability::DoNotDisturb => "DoNotDisturb",
        Availability::BeRightBack => "BeRightBack",
        Availability::Away if activity == Some(Activity::OffWork) => "Offwork",
        Availability::Away => "Away",
        Availability::Offline => {
            return Err(
                "UCWA cannot set Offline; a user shows Offline only when signed out \
                 of every client. Use AWAY (with activity OFF_WORK for Offwork) or clear the \
                 presence"
                    .to_string(),
            )
        }
        Availability::Unknown => {
            return Err(
                "UNKNOWN cannot be set at UCWA (the server only reports it); use \
                 AVAILABLE, BUSY, DO_NOT_DISTURB, BE_RIGHT_BACK or AWAY, or clear the presence"
                    .to_string(),
            )
        }
    };
    Ok(Some(value))
}

/// What a clear (reset) command sends: no availability, i.e. the **empty body**
/// (`set_presence_body(None)` is `""`), which UCWA answers by returning the user to the
/// automatic state derived from activity and calendar (§7).
pub fn reset_for_clear() -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::ucwa::json::{parse_contact_presence, set_presence_body, tests};
    use Availability::*;

    fn presence(availability: Option<&str>, activity: Option<&str>) -> ContactPresence {
        ContactPresence {
            availability: availability.map(Into::into),
            activity: activity.map(Into::into),
            ..ContactPresence::default()
        }
    }

    #[test]
    fn availability_table() {
        #[rustfmt::skip]
        let rows: &[(Option<&str>, Availability)] = &[
            (Some("Online"),       Available),
            (Some("IdleOnline"),   AvailableIdle),
            (Some("Busy"),         Busy),
            (Some("IdleBusy"),     BusyIdle),
            (Some("DoNotDisturb"), DoNotDisturb),
            (Some("BeRightBack"),  BeRightBack),
            (Some("Away"),         Away),
            (Some("Offline"),      Offline),
            (Some("online"),       Available),
            (Some("IDLEBUSY"),     BusyIdle),
            (Some("doNotDisturb"), DoNotDisturb),
            (Some(" Away\n"),      Away),
            (Some("Inactive"),     Unknown),
            (Some("Available"),    Unknown),
            (Some("Do Not Disturb"), Unknown),
            (Some("Offwork"),      Unknown),
            (Some(""),             Unknown),
            (Some("  "),           Unknown),
            (None,                 Unknown),
        ];
        for (raw, want) in rows {
            let got = normalize(&presence(*raw, None), None);
            assert_eq!(got.availability, *want, "{raw:?}");
            assert_eq!(got.activity, None, "{raw:?}");
            assert_eq!(
                got.raw.get("ucwa.availability").map(String::as_str),
                *raw,
                "raw value kept as sent"
            );
            assert_eq!(got.raw.len(), usize::from(raw.is_some()));
            assert_eq!(
                (got.note, got.device, got.last_active, got.out_of_office),
                (None, None, None, None)
            );
        }
    }

    #[test]
    fn activity_table() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, Availability, Option<Activity>)] = &[
            ("Busy",         "on-the-phone",              Busy,         Some(Activity::InACall)),
            ("Busy",         "in-a-call",                 Busy,         Some(Activity::InACall)),
            ("Busy",         "in-a-conference",           Busy,         Some(Activity::InAConferenceCall)),
            ("Busy",         "in-a-meeting",              Busy,         Some(Activity::InAMeeting)),
            ("DoNotDisturb", "presenting",                DoNotDisturb, Some(Activity::Presenting)),
            ("DoNotDisturb", "urgent-interruptions-only", DoNotDisturb, Some(Activity::UrgentInterruptionsOnly)),
            ("Away",         "off-work",                  Away,         Some(Activity::OffWork)),
            ("Offline",      "off-work",                  Offline,      Some(Activity::OffWork)),
            ("IdleBusy",     "in-a-meeting",              BusyIdle,     Some(Activity::InAMeeting)),
            ("Busy",         "On-The-Phone",              Busy,         Some(Activity::InACall)),
            ("Busy",         "IN-A-MEETING",              Busy,         Some(Activity::InAMeeting)),
            ("Away",         " Off-Work ",                Away,         Some(Activity::OffWork)),
            ("Online",       "Available",                 Available,    Some(Activity::Other)),
            ("Busy",         "In a meeting",              Busy,         Some(Activity::Other)),
            ("Busy",         "En réunion",                Busy,         Some(Activity::Other)),
            ("Away",         "lunch",                     Away,         Some(Activity::Other)),
            ("Busy",         "on_the_phone",              Busy,         Some(Activity::Other)),
            ("Busy",         "in-a-call-with-bob",        Busy,         Some(Activity::Other)),
            ("Online",       "",                          Available,    None),
            ("Online",       " \t",                       Available,    None),
        ];
        for (availability, activity, want_a, want_act) in rows {
            let got = normalize(&presence(Some(availability), Some(activity)), None);
            assert_eq!(got.availability, *want_a, "{availability} {activity:?}");
            assert_eq!(got.activity, *want_act, "{availability} {activity:?}");
            assert_eq!(
                got.raw.get("ucwa.activity").map(String::as_str),
                Some(*activity),
                "raw activity kept as sent"
            );
        }
        // No activity property at all: no activity, no raw key.
        let got = normalize(&presence(Some("Busy"), None), None);
        assert!(!got.raw.contains_key("ucwa.activity"));
    }

    #[test]
    fn device_last_active_note() {
        #[rustfmt::skip]
        let rows: &[(Option<&str>, Option<&str>)] = &[
            (Some("PC"),        Some("PC")),
            (Some("Mobile"),    Some("Mobile")),
            (Some("DeskPhone"), Some("DeskPhone")),
            (Some("Web"),       Some("Web")),
            (Some(" Web "),     Some("Web")),
            (Some("Tablet"),    Some("Tablet")),
            (Some("Unknown"),   None),
            (Some("unknown"),   None),
            (Some(""),          None),
            (None,              None),
        ];
        for (device_type, want) in rows {
            let p = ContactPresence {
                device_type: device_type.map(Into::into),
                last_active: Some(42),
                ..presence(Some("Online"), None)
            };
            let got = normalize(&p, None);
            assert_eq!(got.device.as_deref(), *want, "{device_type:?}");
            assert_eq!(got.last_active, Some(42));
            assert_eq!(
                got.raw.get("ucwa.deviceType").map(String::as_str),
                *device_type
            );
        }
        for (note, want) in [
            (Some("Back at 3"), Some("Back at 3")),
            (Some(" padded "), Some(" padded ")),
            (Some(""), None),
            (Some("  "), None),
            (None, None),
        ] {
            let got = normalize(&presence(Some("Away"), None), note);
            assert_eq!(got.note.as_deref(), want, "{note:?}");
        }
    }

    #[test]
    fn reference_samples() {
        let p = parse_contact_presence(tests::PRESENCE.as_bytes()).unwrap();
        let got = normalize(&p, Some("Back at 3"));
        let want = PresenceState {
            device: Some("PC".into()),
            last_active: Some(1_474_932_023_993),
            ..PresenceState::new(Busy)
                .with_activity(Activity::InACall)
                .with_note("Back at 3")
                .with_raw("ucwa.availability", "Busy")
                .with_raw("ucwa.activity", "on-the-phone")
                .with_raw("ucwa.deviceType", "PC")
        };
        assert_eq!(got, want);

        let p = parse_contact_presence(tests::PRESENCE_OFFLINE.as_bytes()).unwrap();
        let want = PresenceState {
            last_active: Some(1_358_827_096_000),
            ..PresenceState::new(Offline)
                .with_raw("ucwa.availability", "Offline")
                .with_raw("ucwa.deviceType", "Unknown")
        };
        assert_eq!(normalize(&p, None), want);

        let empty = normalize(&ContactPresence::default(), None);
        assert_eq!(empty, PresenceState::new(Unknown));
    }

    #[test]
    fn commands() {
        #[rustfmt::skip]
        let rows: &[(Availability, Option<Activity>, &str)] = &[
            (Available,     None,                        "Online"),
            (AvailableIdle, None,                        "Online"),
            (Busy,          None,                        "Busy"),
            (BusyIdle,      None,                        "Busy"),
            (Busy,          Some(Activity::InAMeeting),  "Busy"),
            (DoNotDisturb,  None,                        "DoNotDisturb"),
            (DoNotDisturb,  Some(Activity::Presenting),  "DoNotDisturb"),
            (BeRightBack,   None,                        "BeRightBack"),
            (BeRightBack,   Some(Activity::OffWork),     "BeRightBack"),
            (Away,          None,                        "Away"),
            (Away,          Some(Activity::Vacation),    "Away"),
            (Away,          Some(Activity::OffWork),     "Offwork"),
            (Available,     Some(Activity::OffWork),     "Online"),
        ];
        for (a, activity, want) in rows {
            assert_eq!(
                availability_for_command(*a, *activity),
                Ok(Some(*want)),
                "{a} {activity:?}"
            );
        }
        for activity in [None, Some(Activity::OffWork)] {
            let err = availability_for_command(Offline, activity).unwrap_err();
            assert!(err.starts_with("UCWA cannot set Offline;"), "{err}");
            let err = availability_for_command(Unknown, activity).unwrap_err();
            assert!(err.starts_with("UNKNOWN cannot be set"), "{err}");
        }
        assert_eq!(
            Availability::ALL
                .iter()
                .filter(|a| availability_for_command(**a, None).is_ok())
                .count(),
            7
        );
        // Every value sent reads back as the availability it was asked for (idle variants
        // collapse to their active form).
        for a in Availability::ALL {
            if let Ok(Some(value)) = availability_for_command(a, None) {
                let back = normalize(&presence(Some(value), None), None).availability;
                let want = match a {
                    AvailableIdle => Available,
                    BusyIdle => Busy,
                    other => other,
                };
                assert_eq!(back, want, "{a}");
            }
        }
        assert_eq!(reset_for_clear(), None);
        assert_eq!(set_presence_body(reset_for_clear()), "");
    }
}
