//! Graph presence to the normalized model, and normalized commands back to the pairs Graph
//! accepts. Pure tables (reference §2.1, §2.3); the raw Graph values stay in
//! [`PresenceState::raw`] exactly as sent, under `graph.availability`, `graph.activity`,
//! `graph.sequenceNumber` and `graph.workLocation` (each only when Graph sent it).
//!
//! Availability (case-insensitive, trimmed; Graph documents PascalCase but the 2025+ pages
//! show lowerCamel): `Available`→AVAILABLE, `AvailableIdle`→AVAILABLE_IDLE, `Away`→AWAY,
//! `BeRightBack`→BE_RIGHT_BACK, `Busy`→BUSY, `BusyIdle`→BUSY_IDLE, `DoNotDisturb`→
//! DO_NOT_DISTURB, `Offline`→OFFLINE; `PresenceUnknown`, missing or anything else→UNKNOWN.
//!
//! Activity (same matching): `InACall`→IN_A_CALL, `InAConferenceCall`→
//! IN_A_CONFERENCE_CALL, `InAMeeting`→IN_A_MEETING, `Presenting`→PRESENTING,
//! `OutOfOffice`→OUT_OF_OFFICE, `Focusing`→FOCUSING, `OffWork`→OFF_WORK, `Inactive` and
//! `AvailableInactive` (the setPresence idle fade)→INACTIVE, `UrgentInterruptionsOnly`→
//! URGENT_INTERRUPTIONS_ONLY. An activity that merely repeats an availability value
//! (`Available`, `AvailableIdle`, `Away`, `BeRightBack`, `Busy`, `BusyIdle`,
//! `DoNotDisturb`, `Offline`, `PresenceUnknown`) or is blank→none; anything else→OTHER
//! (the raw value is kept). The activity never changes the availability.
//!
//! `note` is `statusMessage.message.content` (none when blank); `out_of_office` is
//! `outOfOfficeSettings.isOutOfOffice`, forced to `true` by activity `OutOfOffice`, and
//! none when Graph says neither. Graph has no device or last-active time.

use super::json::GraphPresence;
use crate::model::{Activity, Availability, PresenceState};

/// setPresence expiration range in seconds: PT5M..PT4H (§2.3).
pub const SET_PRESENCE_EXPIRATION_SECS: std::ops::RangeInclusive<u64> = 300..=14_400;

/// A Graph presence as a normalized state.
pub fn normalize(p: &GraphPresence) -> PresenceState {
    let availability = p
        .availability
        .as_deref()
        .map_or(Availability::Unknown, availability_of);
    let mut state = PresenceState::new(availability);
    state.activity = p.activity.as_deref().and_then(activity_of);
    state.note = p
        .status_message
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .map(str::to_string);
    state.out_of_office = if state.activity == Some(Activity::OutOfOffice) {
        Some(true)
    } else {
        p.out_of_office
    };
    for (key, value) in [
        ("graph.availability", &p.availability),
        ("graph.activity", &p.activity),
        ("graph.sequenceNumber", &p.sequence_number),
        ("graph.workLocation", &p.work_location),
    ] {
        if let Some(value) = value {
            state = state.with_raw(key, value.as_str());
        }
    }
    state
}

const AVAILABILITIES: [(&str, Availability); 9] = [
    ("Available", Availability::Available),
    ("AvailableIdle", Availability::AvailableIdle),
    ("Away", Availability::Away),
    ("BeRightBack", Availability::BeRightBack),
    ("Busy", Availability::Busy),
    ("BusyIdle", Availability::BusyIdle),
    ("DoNotDisturb", Availability::DoNotDisturb),
    ("Offline", Availability::Offline),
    ("PresenceUnknown", Availability::Unknown),
];

/// A Graph `availability` as a normalized availability.
fn availability_of(raw: &str) -> Availability {
    let raw = raw.trim();
    AVAILABILITIES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw))
        .map_or(Availability::Unknown, |(_, a)| *a)
}

/// A Graph `activity` as a normalized activity; `None` when blank or when it only repeats
/// an availability.
fn activity_of(raw: &str) -> Option<Activity> {
    const TABLE: [(&str, Activity); 10] = [
        ("InACall", Activity::InACall),
        ("InAConferenceCall", Activity::InAConferenceCall),
        ("InAMeeting", Activity::InAMeeting),
        ("Presenting", Activity::Presenting),
        ("OutOfOffice", Activity::OutOfOffice),
        ("Focusing", Activity::Focusing),
        ("OffWork", Activity::OffWork),
        ("Inactive", Activity::Inactive),
        ("AvailableInactive", Activity::Inactive),
        ("UrgentInterruptionsOnly", Activity::UrgentInterruptionsOnly),
    ];
    let raw = raw.trim();
    if raw.is_empty()
        || AVAILABILITIES
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(raw))
    {
        return None;
    }
    Some(
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(raw))
            .map_or(Activity::Other, |(_, a)| *a),
    )
}

/// The `(availability, activity)` wire pair for **setPresence** (an app presence session),
/// or why the request cannot be sent. Exactly the valid pairs of §2.3:
/// AVAILABLE→`Available/Available`, BUSY+IN_A_CALL→`Busy/InACall`,
/// BUSY+IN_A_CONFERENCE_CALL→`Busy/InAConferenceCall`, AWAY→`Away/Away`,
/// DO_NOT_DISTURB+PRESENTING→`DoNotDisturb/Presenting`. Everything else is refused with the
/// activities allowed for that availability.
pub fn set_presence_pair(
    a: Availability,
    act: Option<Activity>,
) -> Result<(&'static str, &'static str), String> {
    use Activity as Ac;
    use Availability as Av;
    match (a, act) {
        (Av::Available, None) => Ok(("Available", "Available")),
        (Av::Busy, Some(Ac::InACall)) => Ok(("Busy", "InACall")),
        (Av::Busy, Some(Ac::InAConferenceCall)) => Ok(("Busy", "InAConferenceCall")),
        (Av::Away, None) => Ok(("Away", "Away")),
        (Av::DoNotDisturb, Some(Ac::Presenting)) => Ok(("DoNotDisturb", "Presenting")),
        _ => {
            let allowed = match a {
                Av::Available | Av::Away => "no activity",
                Av::Busy => "IN_A_CALL or IN_A_CONFERENCE_CALL",
                Av::DoNotDisturb => "PRESENTING",
                _ => {
                    return Err(format!(
                        "Graph setPresence cannot set {a}; valid: AVAILABLE, \
                         BUSY+IN_A_CALL, BUSY+IN_A_CONFERENCE_CALL, AWAY, \
                         DO_NOT_DISTURB+PRESENTING"
                    ))
                }
            };
            Err(format!(
                "Graph setPresence: {a} with {} is not a valid pair; allowed activities \
                 for {a}: {allowed}",
                act.map_or("no activity", Activity::as_str)
            ))
        }
    }
}

/// The `(availability, activity)` wire pair for **setUserPreferredPresence** (the
/// user-visible status), or why not. Exactly the valid pairs of §2.3: AVAILABLE→
/// `Available/Available`, BUSY→`Busy/Busy`, DO_NOT_DISTURB→`DoNotDisturb/DoNotDisturb`,
/// BE_RIGHT_BACK→`BeRightBack/BeRightBack`, AWAY→`Away/Away`, OFFLINE (with or without
/// OFF_WORK; Teams' "appear offline")→`Offline/OffWork`. Any other activity is refused.
pub fn preferred_pair(
    a: Availability,
    act: Option<Activity>,
) -> Result<(&'static str, &'static str), String> {
    use Availability as Av;
    match (a, act) {
        (Av::Available, None) => Ok(("Available", "Available")),
        (Av::Busy, None) => Ok(("Busy", "Busy")),
        (Av::DoNotDisturb, None) => Ok(("DoNotDisturb", "DoNotDisturb")),
        (Av::BeRightBack, None) => Ok(("BeRightBack", "BeRightBack")),
        (Av::Away, None) => Ok(("Away", "Away")),
        (Av::Offline, None | Some(Activity::OffWork)) => Ok(("Offline", "OffWork")),
        (Av::Available | Av::Busy | Av::DoNotDisturb | Av::BeRightBack | Av::Away, Some(x)) => {
            Err(format!(
                "Graph setUserPreferredPresence: {a} takes no activity (got {}); \
                 allowed activities for {a}: none",
                x.as_str()
            ))
        }
        (Av::Offline, Some(x)) => Err(format!(
            "Graph setUserPreferredPresence: OFFLINE with {} is not valid; allowed \
             activities for OFFLINE: OFF_WORK or none",
            x.as_str()
        )),
        _ => Err(format!(
            "Graph setUserPreferredPresence cannot set {a}; valid: AVAILABLE, BUSY, \
             DO_NOT_DISTURB, BE_RIGHT_BACK, AWAY, OFFLINE(+OFF_WORK)"
        )),
    }
}

/// A setPresence `expirationDuration` in seconds must be within PT5M..PT4H (§2.3).
pub fn expiration_bounds(secs: u64) -> Result<(), String> {
    if SET_PRESENCE_EXPIRATION_SECS.contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "expiration of {secs} s is outside Graph's PT5M..PT4H (300..=14400 s)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::graph::json::{parse_presences, tests as samples};
    use Availability::*;

    fn presence(availability: Option<&str>, activity: Option<&str>) -> GraphPresence {
        GraphPresence {
            id: "u".into(),
            availability: availability.map(Into::into),
            activity: activity.map(Into::into),
            ..GraphPresence::default()
        }
    }

    #[test]
    fn availability_table() {
        #[rustfmt::skip]
        let rows: &[(Option<&str>, Availability)] = &[
            (Some("Available"),       Available),
            (Some("AvailableIdle"),   AvailableIdle),
            (Some("Away"),            Away),
            (Some("BeRightBack"),     BeRightBack),
            (Some("Busy"),            Busy),
            (Some("BusyIdle"),        BusyIdle),
            (Some("DoNotDisturb"),    DoNotDisturb),
            (Some("Offline"),         Offline),
            (Some("PresenceUnknown"), Unknown),
            (Some("available"),       Available),
            (Some("doNotDisturb"),    DoNotDisturb),
            (Some("BUSYIDLE"),        BusyIdle),
            (Some(" Away\n"),         Away),
            (Some("presenceunknown"), Unknown),
            (Some("unknown"),         Unknown),
            (Some("Online"),          Unknown),
            (Some("inAMeeting"),      Unknown),
            (Some("Do Not Disturb"),  Unknown),
            (Some(""),                Unknown),
            (None,                    Unknown),
        ];
        for (raw, want) in rows {
            let got = normalize(&presence(*raw, None));
            assert_eq!(got.availability, *want, "{raw:?}");
            assert_eq!(got.activity, None, "{raw:?}");
            assert_eq!(got.raw.get("graph.availability").map(String::as_str), *raw);
            assert_eq!(got.raw.len(), usize::from(raw.is_some()));
            assert_eq!((got.note, got.out_of_office), (None, None));
        }
    }

    #[test]
    fn activity_table() {
        use Activity::*;
        #[rustfmt::skip]
        let rows: &[(&str, Option<Activity>)] = &[
            ("InACall",                 Some(InACall)),
            ("InAConferenceCall",       Some(InAConferenceCall)),
            ("InAMeeting",              Some(InAMeeting)),
            ("Presenting",              Some(Presenting)),
            ("OutOfOffice",             Some(OutOfOffice)),
            ("Focusing",                Some(Focusing)),
            ("OffWork",                 Some(OffWork)),
            ("Inactive",                Some(Inactive)),
            ("AvailableInactive",       Some(Inactive)),
            ("UrgentInterruptionsOnly", Some(UrgentInterruptionsOnly)),
            ("inACall",                 Some(InACall)),
            ("PRESENTING",              Some(Presenting)),
            (" offWork ",               Some(OffWork)),
            ("Available",               None),
            ("AvailableIdle",           None),
            ("Away",                    None),
            ("BeRightBack",             None),
            ("Busy",                    None),
            ("BusyIdle",                None),
            ("DoNotDisturb",            None),
            ("Offline",                 None),
            ("PresenceUnknown",         None),
            ("busy",                    None),
            ("",                        None),
            ("  ",                      None),
            ("Vacation",                Some(Other)),
            ("in-a-call",               Some(Other)),
            ("SomethingNew2027",        Some(Other)),
        ];
        for (raw, want) in rows {
            let got = normalize(&presence(Some("Busy"), Some(raw)));
            assert_eq!(got.activity, *want, "{raw:?}");
            assert_eq!(
                got.availability, Busy,
                "activity never changes availability"
            );
            assert_eq!(
                got.raw.get("graph.activity").map(String::as_str),
                Some(*raw)
            );
        }
    }

    #[test]
    fn samples_and_extras() {
        let ps = parse_presences(samples::PRESENCES.as_bytes()).unwrap();
        let s = normalize(&ps[0]);
        assert_eq!(
            (s.availability, s.activity),
            (Busy, Some(Activity::InAMeeting))
        );
        assert_eq!(s.note.as_deref(), Some("In the lab"));
        assert_eq!(s.out_of_office, Some(false));
        assert_eq!(s.raw["graph.sequenceNumber"], "C78B3AA4C1E6C8B5");
        assert_eq!(s.raw["graph.workLocation"], "remote");
        assert_eq!((s.device, s.last_active), (None, None));
        let s = normalize(&ps[1]);
        assert_eq!(
            (s.availability, s.activity, s.out_of_office),
            (Away, None, Some(true))
        );

        let mut p = presence(Some("Available"), Some("OutOfOffice"));
        assert_eq!(normalize(&p).out_of_office, Some(true));
        p.out_of_office = Some(false);
        assert_eq!(normalize(&p).out_of_office, Some(true), "activity OOF wins");
        p.status_message = Some("  ".into());
        assert_eq!(normalize(&p).note, None);
    }

    #[test]
    fn set_presence_pairs() {
        use Activity::*;
        let ok = [
            (Available, None, ("Available", "Available")),
            (Busy, Some(InACall), ("Busy", "InACall")),
            (Busy, Some(InAConferenceCall), ("Busy", "InAConferenceCall")),
            (Away, None, ("Away", "Away")),
            (
                DoNotDisturb,
                Some(Presenting),
                ("DoNotDisturb", "Presenting"),
            ),
        ];
        for (a, act, want) in ok {
            assert_eq!(set_presence_pair(a, act), Ok(want));
        }
        // Every other combination is refused.
        for a in Availability::ALL {
            for act in std::iter::once(None).chain(Activity::ALL.map(Some)) {
                if ok.iter().any(|(x, y, _)| (*x, *y) == (a, act)) {
                    continue;
                }
                let err = set_presence_pair(a, act).unwrap_err();
                assert!(err.contains("setPresence"), "{err}");
            }
        }
        assert!(set_presence_pair(Busy, None)
            .unwrap_err()
            .contains("IN_A_CALL or IN_A_CONFERENCE_CALL"));
        assert!(set_presence_pair(DoNotDisturb, None)
            .unwrap_err()
            .contains("PRESENTING"));
        assert!(set_presence_pair(Busy, Some(InAMeeting)).is_err());
        assert!(set_presence_pair(Available, Some(OutOfOffice)).is_err());
    }

    #[test]
    fn preferred_pairs() {
        let ok = [
            (Available, None, ("Available", "Available")),
            (Busy, None, ("Busy", "Busy")),
            (DoNotDisturb, None, ("DoNotDisturb", "DoNotDisturb")),
            (BeRightBack, None, ("BeRightBack", "BeRightBack")),
            (Away, None, ("Away", "Away")),
            (Offline, None, ("Offline", "OffWork")),
            (Offline, Some(Activity::OffWork), ("Offline", "OffWork")),
        ];
        for (a, act, want) in ok {
            assert_eq!(preferred_pair(a, act), Ok(want));
        }
        for a in Availability::ALL {
            for act in std::iter::once(None).chain(Activity::ALL.map(Some)) {
                if ok.iter().any(|(x, y, _)| (*x, *y) == (a, act)) {
                    continue;
                }
                let err = preferred_pair(a, act).unwrap_err();
                assert!(err.contains("setUserPreferredPresence"), "{err}");
            }
        }
    }

    #[test]
    fn expirations() {
        for (secs, ok) in [
            (0, false),
            (299, false),
            (300, true),
            (3600, true),
            (14_400, true),
            (14_401, false),
            (u64::MAX, false),
        ] {
            assert_eq!(expiration_bounds(secs).is_ok(), ok, "{secs}");
        }
    }
}
