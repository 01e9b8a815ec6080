//! The presence of one simulated user with the wire names of the UCWA enums (reference §6,
//! §7): `Availability`, `ContactDeviceType`, `PreferredAvailability`.

/// `availability` of a contactPresence (enum Availability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    Online,
    Busy,
    DoNotDisturb,
    BeRightBack,
    Away,
    Offline,
    IdleOnline,
    IdleBusy,
}

impl Availability {
    pub const ALL: [Availability; 8] = [
        Availability::Online,
        Availability::Busy,
        Availability::DoNotDisturb,
        Availability::BeRightBack,
        Availability::Away,
        Availability::Offline,
        Availability::IdleOnline,
        Availability::IdleBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "Online",
            Availability::Busy => "Busy",
            Availability::DoNotDisturb => "DoNotDisturb",
            Availability::BeRightBack => "BeRightBack",
            Availability::Away => "Away",
            Availability::Offline => "Offline",
            Availability::IdleOnline => "IdleOnline",
            Availability::IdleBusy => "IdleBusy",
        }
    }

    /// The wire name, any case.
    pub fn parse(s: &str) -> Option<Availability> {
        Availability::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// `deviceType` of a contactPresence (enum ContactDeviceType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    DeskPhone,
    Mobile,
    Pc,
    Unknown,
    Web,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::DeskPhone => "DeskPhone",
            DeviceType::Mobile => "Mobile",
            DeviceType::Pc => "PC",
            DeviceType::Unknown => "Unknown",
            DeviceType::Web => "Web",
        }
    }
}

/// What `POST me/presence` and `makeMeAvailable.signInAs` accept (PreferredAvailability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preferred {
    Online,
    Busy,
    DoNotDisturb,
    BeRightBack,
    Away,
    Offwork,
}

impl Preferred {
    const ALL: [(Preferred, &'static str); 6] = [
        (Preferred::Online, "Online"),
        (Preferred::Busy, "Busy"),
        (Preferred::DoNotDisturb, "DoNotDisturb"),
        (Preferred::BeRightBack, "BeRightBack"),
        (Preferred::Away, "Away"),
        (Preferred::Offwork, "Offwork"),
    ];

    /// The wire name, any case.
    pub fn parse(s: &str) -> Option<Preferred> {
        Preferred::ALL
            .into_iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(p, _)| p)
    }

    /// The published state. *Decided* (the reference leaves it open): `Offwork` shows as
    /// availability `Away` with activity `off-work`; the others map one to one, without an
    /// activity.
    pub fn apply(self) -> (Availability, Option<&'static str>) {
        match self {
            Preferred::Online => (Availability::Online, None),
            Preferred::Busy => (Availability::Busy, None),
            Preferred::DoNotDisturb => (Availability::DoNotDisturb, None),
            Preferred::BeRightBack => (Availability::BeRightBack, None),
            Preferred::Away => (Availability::Away, None),
            Preferred::Offwork => (Availability::Away, Some("off-work")),
        }
    }
}

/// One user's published presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub availability: Availability,
    /// A well-known token (`on-the-phone`, …) or free text; absent when none.
    pub activity: Option<String>,
    /// The device the user is on; an Offline user renders as `Unknown`.
    pub device: DeviceType,
    /// Milliseconds since 1970 of the last change (`lastActive`).
    pub last_active_ms: i64,
    pub note: Option<String>,
}

impl Presence {
    /// The `deviceType` shown to watchers.
    pub fn shown_device(&self) -> DeviceType {
        if self.availability == Availability::Offline {
            DeviceType::Unknown
        } else {
            self.device
        }
    }
}

/// A random (availability, activity) for the initial states and the change generator. The
/// activity tokens are the well-known ones of §6.
pub fn random_state(rng: &mut fastrand::Rng) -> (Availability, Option<&'static str>) {
    let r = rng.u32(..100);
    match r {
        0..35 => (Availability::Online, None),
        35..55 => {
            let act = [
                None,
                Some("in-a-meeting"),
                Some("on-the-phone"),
                Some("in-a-conference"),
                Some("presenting"),
            ];
            (Availability::Busy, act[rng.usize(..act.len())])
        }
        55..60 => (
            Availability::DoNotDisturb,
            if rng.bool() {
                Some("urgent-interruptions-only")
            } else {
                None
            },
        ),
        60..65 => (Availability::BeRightBack, None),
        65..78 => (
            Availability::Away,
            if rng.u8(..4) == 0 {
                Some("off-work")
            } else {
                None
            },
        ),
        78..90 => (Availability::Offline, None),
        90..97 => (Availability::IdleOnline, None),
        _ => (Availability::IdleBusy, None),
    }
}

/// A random device, mostly PCs.
pub fn random_device(rng: &mut fastrand::Rng) -> DeviceType {
    match rng.u32(..10) {
        0..6 => DeviceType::Pc,
        6..8 => DeviceType::Mobile,
        8 => DeviceType::Web,
        _ => DeviceType::DeskPhone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_round_trip() {
        for a in Availability::ALL {
            assert_eq!(Availability::parse(a.as_str()), Some(a));
        }
        assert_eq!(Availability::parse("busy"), Some(Availability::Busy));
        assert_eq!(Availability::parse("Inactive"), None);
        assert_eq!(Availability::parse(""), None);
    }

    #[test]
    fn preferred_mapping() {
        let rows = [
            ("Online", Availability::Online, None),
            ("Busy", Availability::Busy, None),
            ("DoNotDisturb", Availability::DoNotDisturb, None),
            ("BeRightBack", Availability::BeRightBack, None),
            ("Away", Availability::Away, None),
            ("Offwork", Availability::Away, Some("off-work")),
        ];
        for (wire, a, act) in rows {
            assert_eq!(Preferred::parse(wire).unwrap().apply(), (a, act), "{wire}");
        }
        assert_eq!(Preferred::parse("Offline"), None);
        assert_eq!(Preferred::parse("IdleOnline"), None);
    }

    #[test]
    fn offline_shows_unknown_device() {
        let mut p = Presence {
            availability: Availability::Offline,
            activity: None,
            device: DeviceType::Mobile,
            last_active_ms: 0,
            note: None,
        };
        assert_eq!(p.shown_device(), DeviceType::Unknown);
        p.availability = Availability::Online;
        assert_eq!(p.shown_device().as_str(), "Mobile");
    }
}
