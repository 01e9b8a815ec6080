//! The presence write actions (§2.3): `setPresence`, `clearPresence`,
//! `setUserPreferredPresence`, `clearUserPreferredPresence`, with pair and
//! `expirationDuration` validation.

use super::core::{gerr, AppSession, Core, GraphError, Principal};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Pairs `setPresence` accepts.
pub const SESSION_PAIRS: [(&str, &str); 5] = [
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];

/// Pairs `setUserPreferredPresence` accepts.
pub const PREFERRED_PAIRS: [(&str, &str); 6] = [
    ("Available", "Available"),
    ("Busy", "Busy"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("BeRightBack", "BeRightBack"),
    ("Away", "Away"),
    ("Offline", "OffWork"),
];

/// ISO-8601 duration `P[nD][T[nH][nM][n[.n]S]]` (no years/months/weeks).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let rest = s
        .trim()
        .strip_prefix('P')
        .or_else(|| s.trim().strip_prefix('p'))?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut any = false;
    let mut num = String::new();
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'D' | 'd' => {
                secs += num.parse::<f64>().ok()? * 86400.0;
                num.clear();
                any = true;
            }
            _ => return None,
        }
    }
    if !num.is_empty() {
        return None;
    }
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        for c in t.chars() {
            let mult = match c {
                '0'..='9' | '.' => {
                    num.push(c);
                    continue;
                }
                'H' | 'h' => 3600.0,
                'M' | 'm' => 60.0,
                'S' | 's' => 1.0,
                _ => return None,
            };
            secs += num.parse::<f64>().ok()? * mult;
            num.clear();
            any = true;
        }
        if !num.is_empty() {
            return None;
        }
    }
    any.then(|| Duration::from_secs_f64(secs))
}

fn pair(
    v: &Value,
    table: &[(&'static str, &'static str)],
) -> Result<(&'static str, &'static str), GraphError> {
    let a = v.get("availability").and_then(Value::as_str).unwrap_or("");
    let act = v.get("activity").and_then(Value::as_str).unwrap_or("");
    table
        .iter()
        .find(|(x, y)| x.eq_ignore_ascii_case(a) && y.eq_ignore_ascii_case(act))
        .copied()
        .ok_or_else(|| {
            gerr(
                400,
                "BadRequest",
                format!("The availability/activity pair '{a}/{act}' is not supported."),
            )
        })
}

fn duration(
    v: &Value,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, GraphError> {
    let Some(d) = v.get("expirationDuration").filter(|d| !d.is_null()) else {
        return Ok(default);
    };
    let d = d.as_str().and_then(parse_duration).ok_or_else(|| {
        gerr(
            400,
            "BadRequest",
            "expirationDuration is not a valid ISO-8601 duration.",
        )
    })?;
    if d < min || d > max {
        return Err(gerr(
            400,
            "BadRequest",
            "expirationDuration is out of range.",
        ));
    }
    Ok(d)
}

/// Runs one write action on user `u` for the caller `who`.
pub fn write(
    core: &mut Core,
    who: &Principal,
    u: usize,
    action: &str,
    v: &Value,
    now: SystemTime,
) -> Result<(), GraphError> {
    if let Principal::User(me) = who {
        if *me != u {
            return Err(gerr(
                403,
                "Forbidden",
                "Cannot set the presence of another user.",
            ));
        }
    }
    let min = |m: u64| Duration::from_secs(m * 60);
    let session_id = || {
        v.get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| gerr(400, "BadRequest", "sessionId is required."))
    };
    match action {
        "setPresence" => {
            let sid = session_id()?;
            if !sid.eq_ignore_ascii_case(&core.client_id) {
                return Err(gerr(
                    400,
                    "BadRequest",
                    "sessionId must be the calling application's id.",
                ));
            }
            let (a, act) = pair(v, &SESSION_PAIRS)?;
            let d = duration(v, min(5), min(5), min(240))?;
            let user = &mut core.users[u];
            user.sessions.retain(|s| !s.id.eq_ignore_ascii_case(&sid));
            user.sessions.push(AppSession {
                id: sid,
                availability: a.into(),
                activity: act.into(),
                expires: now + d,
                set_at: now,
            });
        }
        "clearPresence" => {
            let sid = session_id()?;
            let user = &mut core.users[u];
            let before = user.sessions.len();
            user.sessions
                .retain(|s| !(s.id.eq_ignore_ascii_case(&sid) && s.expires > now));
            if user.sessions.len() == before {
                return Err(gerr(
                    404,
                    "NotFound",
                    "The presence session does not exist.",
                ));
            }
        }
        "setUserPreferredPresence" => {
            let (a, act) = pair(v, &PREFERRED_PAIRS)?;
            let default = if matches!(a, "DoNotDisturb" | "Busy") {
                1
            } else {
                7
            };
            let d = duration(v, min(24 * 60 * default), min(5), min(7 * 24 * 60))?;
            core.users[u].preferred = Some((a.into(), act.into(), now + d));
        }
        "clearUserPreferredPresence" => core.users[u].preferred = None,
        _ => {
            return Err(gerr(
                400,
                "BadRequest",
                format!("Unknown action '{action}'."),
            ))
        }
    }
    core.recompute(u, now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("PT1H30M"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("P1DT1S"), Some(Duration::from_secs(86401)));
        assert_eq!(parse_duration("PT0.5S"), Some(Duration::from_millis(500)));
        for bad in ["", "P", "PT", "5M", "PT5", "PT5X", "P1H"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
