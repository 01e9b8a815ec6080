//! Small helpers: percent coding, form bodies, GUIDs and Graph timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Decodes `%XX` escapes and (form style) `+` as space. Invalid escapes stay verbatim.
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but the RFC 3986 unreserved characters.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// `a=1&b=2` → pairs, decoded.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

pub fn form_get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The raw (still encoded) value of `key` in a query string.
pub fn parse_form_raw(s: &str, key: &str) -> Option<String> {
    s.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// A random GUID-shaped string (`8-4-4-4-12` lower-case hex).
pub fn guid(rng: &mut fastrand::Rng) -> String {
    let v = rng.u128(..);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Graph's 7-digit fractional form: `2026-01-10T10:59:00.0000000Z` (whole seconds).
pub fn graph_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}.0000000Z", s.trim_end_matches('Z'))
}

/// Rounds down to whole seconds.
pub fn floor_secs(t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(d.as_secs())
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let s = "Validation: Testing a+b/c?d=e&f %";
        assert_eq!(pct_decode(&pct_encode(s)), s);
        assert_eq!(pct_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
        let f = parse_form("grant_type=password&scope=a%20b+c&x");
        assert_eq!(form_get(&f, "scope"), Some("a b c"));
        assert_eq!(form_get(&f, "x"), Some(""));
    }

    #[test]
    fn times() {
        let t = parse_time("2026-01-10T10:59:00.1234567Z").unwrap();
        assert_eq!(graph_time(floor_secs(t)), "2026-01-10T10:59:00.0000000Z");
    }
}
