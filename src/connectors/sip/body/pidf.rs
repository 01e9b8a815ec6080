//! PIDF (RFC 3863) with the data model (RFC 4479), RPID (RFC 4480) and the pre-RFC
//! `rpid-status` activities (reference §3.2–§3.5).
//!
//! What is read, by namespace (any prefix, or a default namespace on any element):
//!
//! | where | element | kept as |
//! |---|---|---|
//! | `pidf:presence` | `@entity` | [`Pidf::entity`] (as sent: may lack a scheme, Kamailio pua_usrloc) |
//! | `pidf:presence` | `pidf:note` | [`Pidf::notes`] |
//! | `pidf:tuple` | `@id`, `pidf:status/pidf:basic`, `pidf:contact`, `pidf:note`, `pidf:timestamp`, `dm:deviceID`, `rpid:user-input` | [`Tuple`] |
//! | `pidf:tuple/pidf:status` or the tuple itself | `es:activities/es:activity` **text** (rpid-status) | [`Tuple::activities`] |
//! | `pidf:tuple` | `rpid:activities/*` (RFC form) | [`Tuple::activities`] |
//! | `dm:person` | `@id`, `rpid:activities/*`, `rpid:activities/rpid:other` text, `rpid:user-input`, `dm:note`, `dm:timestamp` | [`Person`] |
//! | `dm:device` | `@id`, `dm:deviceID`, `rpid:user-input`, `dm:timestamp` | [`Device`] |
//!
//! `basic` is kept as the raw (trimmed) string: `unknown` (baresip when unregistered) and
//! other values are not errors. Activity tokens are the local names of the RFC-form empty
//! elements (`busy`, `on-the-phone`, `other`…) or the texts of the legacy form, trimmed and
//! lower-cased, without duplicates. An RFC-namespace `rpid:activity` element *with text*
//! (a hybrid some clients send) contributes its text. Unknown elements and namespaces are
//! skipped; an element carrying `mustUnderstand="true"` sets [`Pidf::must_understand`].

use super::xml::{non_empty, token, Elem, Ns, Parser};
use super::{BodyError, MAX_ACTIVITIES, MAX_ITEMS, MAX_NOTES};
use crate::model::Millis;

/// One PIDF document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pidf {
    pub entity: String,
    pub tuples: Vec<Tuple>,
    pub persons: Vec<Person>,
    pub devices: Vec<Device>,
    /// `note`s directly under `presence`.
    pub notes: Vec<String>,
    /// Some extension said `mustUnderstand="true"`; we ignored it anyway (log-worthy).
    pub must_understand: bool,
}

/// A PIDF tuple: one service (way to reach the presentity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuple {
    pub id: String,
    /// `status/basic` as sent, trimmed: normally `open` | `closed`.
    pub basic: Option<String>,
    pub contact: Option<String>,
    pub contact_priority: Option<String>,
    pub notes: Vec<String>,
    pub timestamp: Option<String>,
    /// Legacy rpid-status activity texts and RFC-form RPID activities inside the tuple.
    pub activities: Vec<String>,
    pub user_input: Option<String>,
    pub device_id: Option<String>,
}

/// A data-model person: the human.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    /// RPID activity tokens, e.g. `["busy", "on-the-phone"]`; `[]` for `<rpid:activities/>`.
    pub activities: Vec<String>,
    /// The text of `rpid:other` (free-form activity).
    pub other: Option<String>,
    pub notes: Vec<String>,
    /// `rpid:user-input` value: `active` | `idle`.
    pub user_input: Option<String>,
    /// `rpid:user-input/@last-input` (xs:dateTime).
    pub last_input: Option<String>,
    pub timestamp: Option<String>,
}

/// A data-model device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub device_id: Option<String>,
    pub user_input: Option<String>,
    pub timestamp: Option<String>,
}

impl Pidf {
    /// The person that counts (§3.3): the one with the newest `dm:timestamp`; persons
    /// without a (parseable) timestamp lose to those with one; ties and the no-timestamp
    /// case go to the last one in the document.
    pub fn current_person(&self) -> Option<&Person> {
        let mut best: Option<(&Person, Option<Millis>)> = None;
        for person in &self.persons {
            let ts = person.timestamp.as_deref().and_then(parse_datetime);
            let take = match best {
                None => true,
                Some((_, best_ts)) => match (ts, best_ts) {
                    (Some(a), Some(b)) => a >= b,
                    (Some(_), None) | (None, None) => true,
                    (None, Some(_)) => false,
                },
            };
            if take {
                best = Some((person, ts));
            }
        }
        best.map(|(p, _)| p)
    }
}

/// Parses an `application/pidf+xml` body.
pub fn parse(body: &[u8]) -> Result<Pidf, BodyError> {
    let mut p = Parser::new(body);
    let root = p.root()?;
    if (root.ns, root.local()) != (Ns::Pidf, &b"presence"[..]) {
        return Err(BodyError::UnexpectedRoot {
            expected: "<presence> in urn:ietf:params:xml:ns:pidf",
            found: root.shown(),
        });
    }
    let [entity] = p.attrs(&root, [b"entity"])?;
    let mut pidf = Pidf {
        entity: entity.unwrap_or_default(),
        ..Pidf::default()
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::Pidf, b"tuple") => {
                check_count(pidf.tuples.len(), "<tuple> elements")?;
                let tuple = parse_tuple(&mut p, &child, &mut pidf.must_understand)?;
                pidf.tuples.push(tuple);
            }
            (Ns::Pidf, b"note") => push_note(&mut pidf.notes, p.text()?),
            (Ns::DataModel, b"person") => {
                check_count(pidf.persons.len(), "<dm:person> elements")?;
                let person = parse_person(&mut p, &child)?;
                pidf.persons.push(person);
            }
            (Ns::DataModel, b"device") => {
                check_count(pidf.devices.len(), "<dm:device> elements")?;
                let device = parse_device(&mut p, &child)?;
                pidf.devices.push(device);
            }
            _ => {
                pidf.must_understand |= p.must_understand(&child);
                p.skip()?;
            }
        }
    }
    Ok(pidf)
}

fn check_count(n: usize, element: &'static str) -> Result<(), BodyError> {
    if n >= MAX_ITEMS {
        return Err(BodyError::TooMany {
            element,
            limit: MAX_ITEMS,
        });
    }
    Ok(())
}

fn push_note(notes: &mut Vec<String>, text: String) {
    if !text.is_empty() && notes.len() < MAX_NOTES {
        notes.push(text);
    }
}

fn push_activity(list: &mut Vec<String>, value: &str) -> Result<(), BodyError> {
    let value = token(value);
    if value.is_empty() || list.contains(&value) {
        return Ok(());
    }
    if list.len() >= MAX_ACTIVITIES {
        return Err(BodyError::TooMany {
            element: "activities",
            limit: MAX_ACTIVITIES,
        });
    }
    list.push(value);
    Ok(())
}

fn parse_tuple(
    p: &mut Parser<'_>,
    e: &Elem<'_>,
    must_understand: &mut bool,
) -> Result<Tuple, BodyError> {
    let [id] = p.attrs(e, [b"id"])?;
    let mut tuple = Tuple {
        id: id.unwrap_or_default(),
        ..Tuple::default()
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::Pidf, b"status") => {
                while let Some(status) = p.child()? {
                    match (status.ns, status.local()) {
                        (Ns::Pidf, b"basic") => tuple.basic = non_empty(p.text()?),
                        (Ns::RpidStatus, b"activities") => {
                            parse_legacy_activities(p, &mut tuple.activities)?
                        }
                        (Ns::Rpid, b"activities") => {
                            parse_rpid_activities(p, &mut tuple.activities, &mut None)?
                        }
                        _ => {
                            *must_understand |= p.must_understand(&status);
                            p.skip()?
                        }
                    }
                }
            }
            (Ns::Pidf, b"contact") => {
                let [priority] = p.attrs(&child, [b"priority"])?;
                tuple.contact_priority = priority;
                tuple.contact = non_empty(p.text()?);
            }
            (Ns::Pidf, b"note") => push_note(&mut tuple.notes, p.text()?),
            (Ns::Pidf, b"timestamp") => tuple.timestamp = non_empty(p.text()?),
            (Ns::DataModel, b"deviceID") => tuple.device_id = non_empty(p.text()?),
            (Ns::Rpid, b"user-input") => tuple.user_input = non_empty(token(&p.text()?)),
            (Ns::RpidStatus, b"activities") => parse_legacy_activities(p, &mut tuple.activities)?,
            (Ns::Rpid, b"activities") => {
                parse_rpid_activities(p, &mut tuple.activities, &mut None)?
            }
            _ => {
                *must_understand |= p.must_understand(&child);
                p.skip()?
            }
        }
    }
    Ok(tuple)
}

/// `es:activities` (rpid-status): `es:activity` children with text values.
fn parse_legacy_activities(p: &mut Parser<'_>, out: &mut Vec<String>) -> Result<(), BodyError> {
    while let Some(child) = p.child()? {
        if (child.ns, child.local()) == (Ns::RpidStatus, &b"activity"[..]) {
            push_activity(out, &p.text()?)?;
        } else {
            p.skip()?;
        }
    }
    Ok(())
}

/// `rpid:activities` (RFC 4480): each RPID child is an activity named by its local name;
/// `other` also yields its text; `activity` with text (hybrid form) yields the text.
fn parse_rpid_activities(
    p: &mut Parser<'_>,
    out: &mut Vec<String>,
    other: &mut Option<String>,
) -> Result<(), BodyError> {
    while let Some(child) = p.child()? {
        if child.ns != Ns::Rpid {
            p.skip()?;
            continue;
        }
        let name = child.shown();
        let text = p.text()?;
        match name.as_str() {
            // The activities' own note describes them; it is no activity.
            "note" => {}
            "activity" => push_activity(out, &text)?,
            "other" => {
                push_activity(out, "other")?;
                if other.is_none() {
                    *other = non_empty(text);
                }
            }
            _ => push_activity(out, &name)?,
        }
    }
    Ok(())
}

fn parse_person(p: &mut Parser<'_>, e: &Elem<'_>) -> Result<Person, BodyError> {
    let [id] = p.attrs(e, [b"id"])?;
    let mut person = Person {
        id: id.unwrap_or_default(),
        ..Person::default()
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::Rpid, b"activities") => {
                parse_rpid_activities(p, &mut person.activities, &mut person.other)?
            }
            (Ns::Rpid, b"user-input") => {
                let [last] = p.attrs(&child, [b"last-input"])?;
                person.last_input = last.and_then(non_empty);
                person.user_input = non_empty(token(&p.text()?));
            }
            (Ns::DataModel, b"note") => push_note(&mut person.notes, p.text()?),
            (Ns::DataModel, b"timestamp") => person.timestamp = non_empty(p.text()?),
            _ => p.skip()?,
        }
    }
    Ok(person)
}

fn parse_device(p: &mut Parser<'_>, e: &Elem<'_>) -> Result<Device, BodyError> {
    let [id] = p.attrs(e, [b"id"])?;
    let mut device = Device {
        id: id.unwrap_or_default(),
        ..Device::default()
    };
    while let Some(child) = p.child()? {
        match (child.ns, child.local()) {
            (Ns::DataModel, b"deviceID") => device.device_id = non_empty(p.text()?),
            (Ns::Rpid, b"user-input") => device.user_input = non_empty(token(&p.text()?)),
            (Ns::DataModel, b"timestamp") => device.timestamp = non_empty(p.text()?),
            _ => p.skip()?,
        }
    }
    Ok(device)
}

// ---------------------------------------------------------------------------------------
// xs:dateTime

/// An `xs:dateTime` (`2024-05-01T09:00:00Z`, `2024-05-01T11:00:00.250+02:00`) as
/// milliseconds since the epoch. No zone is read as UTC. `None` when it does not parse.
pub fn parse_datetime(s: &str) -> Option<Millis> {
    let s = s.trim().as_bytes();
    let num = |b: &[u8]| -> Option<i64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (hour, min, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 24 || min > 59 {
        return None;
    }
    // 60 allows a leap second; it simply counts as the next second.
    if sec > 60 || (hour == 24 && (min, sec) != (0, 0)) {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut digits = frac[..n.min(3)].to_vec();
        digits.resize(3, b'0');
        millis = num(&digits)?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = num(&[*h1, *h2])?;
            let m = num(&[*m1, *m2])?;
            if h > 14 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Milliseconds since the epoch as `xs:dateTime` in UTC: `2024-05-01T09:00:00Z`, with
/// `.mmm` only when the milliseconds are not zero.
pub fn format_datetime(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (tod / 3600, tod % 3600 / 60, tod % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::connectors::sip::body::{MAX_DEPTH, MAX_TEXT};

    /// baresip 1.0 when not registered (§3.2, observed): `basic` unknown, empty activities.
    pub const BARESIP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="sip:alice@127.0.0.1">
  <dm:person id="p4159"><rpid:activities/></dm:person>
  <tuple id="t4109"><status><basic>unknown</basic></status><contact>sip:alice@127.0.0.1</contact></tuple>
</presence>"#;

    /// Kamailio pua_usrloc after REGISTER (observed): scheme-less entity, bare tuple.
    pub const PUA_USRLOC: &str = r#"<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:c="urn:ietf:params:xml:ns:pidf:cipid" entity="carol@127.0.0.1">
  <tuple xmlns="urn:ietf:params:xml:ns:pidf" id="0x7f0c7c2f9f28">
    <status>
      <basic>open</basic>
    </status>
  </tuple>
</presence>"#;

    /// Legacy rpid-status (§3.5), verbatim from the reference.
    pub const LEGACY: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:bob@example.com">
  <tuple id="sg89ae"><status><basic>open</basic>
      <es:activities><es:activity>busy</es:activity></es:activities></status>
    <contact priority="0.8">sip:bob@example.com</contact><note>busy</note></tuple>
</presence>"#;

    /// The document of §3.6 (what we publish).
    pub const PUBLISHED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
          entity="sip:alice@example.com">
  <tuple id="bridge-t1">
    <status><basic>open</basic></status>
    <timestamp>2024-05-01T09:00:00Z</timestamp>
  </tuple>
  <dm:person id="bridge-p1">
    <rpid:activities><rpid:meeting/></rpid:activities>
    <dm:note>In a meeting</dm:note>
    <dm:timestamp>2024-05-01T09:00:00Z</dm:timestamp>
  </dm:person>
</presence>"#;

    /// The three PIDF NOTIFYs of `shared/peers/sipp/notifier.xml` ([local_ip] filled in).
    pub const SIPP_NOTIFIER: [&str; 3] = [
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@127.0.0.1">
  <tuple id="pc"><status><basic>open</basic></status><contact priority="0.8">sip:alice@127.0.0.1</contact><timestamp>2024-05-01T09:00:00Z</timestamp></tuple>
  <dm:person id="p1"><dm:note>Available</dm:note></dm:person>
</presence>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@127.0.0.1">
  <tuple id="pc"><status><basic>open</basic></status><contact priority="0.8">sip:alice@127.0.0.1</contact><timestamp>2024-05-01T09:05:00Z</timestamp></tuple>
  <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities><dm:note>On the phone</dm:note></dm:person>
</presence>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@127.0.0.1">
  <tuple id="pc"><status><basic>closed</basic></status><timestamp>2024-05-01T18:00:00Z</timestamp></tuple>
</presence>"#,
    ];

    fn parse_str(s: &str) -> Pidf {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn observed_bodies() {
        let b = parse_str(BARESIP);
        assert_eq!(b.entity, "sip:alice@127.0.0.1");
        assert_eq!(b.tuples.len(), 1);
        assert_eq!(b.tuples[0].basic.as_deref(), Some("unknown"));
        assert_eq!(b.tuples[0].contact.as_deref(), Some("sip:alice@127.0.0.1"));
        assert_eq!(b.persons.len(), 1);
        assert_eq!(b.persons[0].id, "p4159");
        assert!(b.persons[0].activities.is_empty());

        let k = parse_str(PUA_USRLOC);
        assert_eq!(k.entity, "carol@127.0.0.1");
        assert_eq!(k.tuples[0].id, "0x7f0c7c2f9f28");
        assert_eq!(k.tuples[0].basic.as_deref(), Some("open"));
        assert!(k.persons.is_empty());

        let l = parse_str(LEGACY);
        let t = &l.tuples[0];
        assert_eq!(
            (t.id.as_str(), t.basic.as_deref(), t.contact.as_deref()),
            ("sg89ae", Some("open"), Some("sip:bob@example.com"))
        );
        assert_eq!(t.contact_priority.as_deref(), Some("0.8"));
        assert_eq!(t.activities, ["busy"]);
        assert_eq!(t.notes, ["busy"]);

        let p = parse_str(PUBLISHED);
        let person = p.current_person().unwrap();
        assert_eq!(person.activities, ["meeting"]);
        assert_eq!(person.notes, ["In a meeting"]);
        assert_eq!(person.timestamp.as_deref(), Some("2024-05-01T09:00:00Z"));
        assert_eq!(
            p.tuples[0].timestamp.as_deref(),
            Some("2024-05-01T09:00:00Z")
        );

        let n: Vec<Pidf> = SIPP_NOTIFIER.iter().map(|s| parse_str(s)).collect();
        assert_eq!(n[0].persons[0].notes, ["Available"]);
        assert!(n[0].persons[0].activities.is_empty());
        assert_eq!(n[1].persons[0].activities, ["on-the-phone"]);
        assert_eq!(n[2].tuples[0].basic.as_deref(), Some("closed"));
        assert!(n[2].persons.is_empty());
    }

    #[test]
    fn any_prefix_and_default_namespaces() {
        // `r:` for RPID, `d:` for the data model, PIDF by prefix, default namespaces on
        // children, a foreign namespace reusing the `rpid` prefix, unknown extensions.
        let doc = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid"
              xmlns:rpid="urn:example:not-rpid" entity="pres:dave@example.com">
  <p:tuple id="t1"><p:status><p:basic> open </p:basic><x:y xmlns:x="urn:x"/></p:status>
    <r:user-input>IDLE</r:user-input><p:note xml:lang="en">desk</p:note></p:tuple>
  <person xmlns="urn:ietf:params:xml:ns:pidf:data-model" id="p1">
    <activities xmlns="urn:ietf:params:xml:ns:pidf:rpid"><Busy/><on-the-phone/><busy/></activities>
    <rpid:activities><rpid:vacation/></rpid:activities>
    <note>call me</note>
    <timestamp>2024-05-01T09:00:00Z</timestamp>
  </person>
  <d:person xmlns:d="urn:ietf:params:xml:ns:pidf:data-model" id="p0">
    <r:activities><r:other> Gone fishing </r:other><r:activity>lunch</r:activity><r:note>x</r:note><e:ext xmlns:e="urn:e"/></r:activities>
    <r:user-input last-input="2024-05-01T08:00:00Z">idle</r:user-input>
    <d:timestamp>2024-05-01T08:59:59+00:00</d:timestamp>
  </d:person>
  <p:note>top</p:note>
  <d:device xmlns:d="urn:ietf:params:xml:ns:pidf:data-model" id="dev1"><d:deviceID>urn:uuid:1</d:deviceID><r:user-input>active</r:user-input></d:device>
</p:presence>"#;
        let p = parse_str(doc);
        assert_eq!(p.entity, "pres:dave@example.com");
        assert_eq!(p.tuples[0].basic.as_deref(), Some("open"));
        assert_eq!(p.tuples[0].user_input.as_deref(), Some("idle"));
        assert_eq!(p.tuples[0].notes, ["desk"]);
        assert_eq!(p.persons.len(), 2);
        assert_eq!(p.persons[0].activities, ["busy", "on-the-phone"]);
        assert_eq!(p.persons[0].notes, ["call me"]);
        assert_eq!(p.persons[1].activities, ["other", "lunch"]);
        assert_eq!(p.persons[1].other.as_deref(), Some("Gone fishing"));
        assert_eq!(p.persons[1].user_input.as_deref(), Some("idle"));
        assert_eq!(
            p.persons[1].last_input.as_deref(),
            Some("2024-05-01T08:00:00Z")
        );
        assert_eq!(p.notes, ["top"]);
        assert_eq!(p.devices[0].device_id.as_deref(), Some("urn:uuid:1"));
        assert_eq!(p.devices[0].user_input.as_deref(), Some("active"));
        // p1 (09:00:00Z) is newer than p0 (08:59:59), although p0 comes last.
        assert_eq!(p.current_person().unwrap().id, "p1");
        assert!(!p.must_understand);
    }

    #[test]
    fn wrong_namespace_or_root() {
        for doc in [
            "<presence entity=\"x\"/>",
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf:rpid\"/>",
            "<pidf:presence xmlns:pidf=\"urn:other\"/>",
            "<tuple xmlns=\"urn:ietf:params:xml:ns:pidf\"/>",
        ] {
            assert!(
                matches!(parse(doc.as_bytes()), Err(BodyError::UnexpectedRoot { .. })),
                "{doc}"
            );
        }
        // Elements of the right name in the wrong namespace are not read.
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:o="urn:o" entity="a">
            <o:tuple id="x"/><person id="not-dm"><activities/></person><tuple id="t"><o:status><basic>open</basic></o:status></tuple></presence>"#;
        let p = parse_str(doc);
        assert_eq!(p.tuples.len(), 1);
        assert_eq!(p.tuples[0].basic, None);
        assert!(p.persons.is_empty());
    }

    #[test]
    fn person_choice() {
        let person = |id: &str, ts: Option<&str>| Person {
            id: id.into(),
            timestamp: ts.map(Into::into),
            ..Person::default()
        };
        let pick = |persons: Vec<Person>| {
            Pidf {
                persons,
                ..Pidf::default()
            }
            .current_person()
            .map(|p| p.id.clone())
        };
        assert_eq!(pick(vec![]), None);
        assert_eq!(
            pick(vec![person("a", None), person("b", None)]).as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(vec![
                person("a", Some("2024-05-01T10:00:00Z")),
                person("b", None),
                person("c", Some("2024-05-01T11:00:00+02:00")),
            ])
            .as_deref(),
            Some("a")
        );
        assert_eq!(
            pick(vec![
                person("a", Some("2024-05-01T10:00:00Z")),
                person("b", Some("2024-05-01T10:00:00.000Z")),
            ])
            .as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(vec![
                person("a", Some("garbage")),
                person("b", Some("2024-01-01T00:00:00Z")),
                person("c", Some("nope"))
            ])
            .as_deref(),
            Some("b")
        );
    }

    #[test]
    fn datetimes() {
        for (s, want) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-05-01T09:00:00Z", Some(1_714_554_000_000)),
            ("2024-05-01T11:00:00+02:00", Some(1_714_554_000_000)),
            ("2024-05-01T08:30:00-00:30", Some(1_714_554_000_000)),
            ("2024-05-01T09:00:00.5Z", Some(1_714_554_000_500)),
            ("2024-05-01T09:00:00.123456Z", Some(1_714_554_000_123)),
            ("2024-05-01T09:00:00", Some(1_714_554_000_000)),
            (" 2024-05-01t09:00:00z ", Some(1_714_554_000_000)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("1969-12-31T23:59:59Z", Some(-1000)),
            ("2024-13-01T09:00:00Z", None),
            ("2024-05-01T09:00:00.Z", None),
            ("2024-05-01T09:00:00+2:00", None),
            ("2024-05-01", None),
            ("2024-05-01T09:00:0xZ", None),
            ("+024-05-01T09:00:00Z", None),
            ("2024-05-01T09:00:00Zjunk", None),
            ("é024-05-01T09:00:00Z", None),
            ("", None),
        ] {
            assert_eq!(parse_datetime(s), want, "{s}");
        }
        for ms in [
            0,
            1_714_554_000_000,
            1_714_554_000_007,
            -1,
            951_782_400_000,
            253_402_300_799_000,
        ] {
            assert_eq!(parse_datetime(&format_datetime(ms)), Some(ms), "{ms}");
        }
        assert_eq!(format_datetime(1_714_554_000_000), "2024-05-01T09:00:00Z");
        assert_eq!(
            format_datetime(1_714_554_000_250),
            "2024-05-01T09:00:00.250Z"
        );
    }

    #[test]
    fn limits() {
        let many = |n: usize| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a">{}</presence>"#,
                r#"<tuple id="t"><status><basic>open</basic></status></tuple>"#.repeat(n)
            )
        };
        assert_eq!(
            parse(many(MAX_ITEMS).as_bytes()).unwrap().tuples.len(),
            MAX_ITEMS
        );
        assert!(matches!(
            parse(many(MAX_ITEMS + 1).as_bytes()),
            Err(BodyError::TooMany {
                element: "<tuple> elements",
                limit: MAX_ITEMS
            })
        ));
        assert!(matches!(
            parse(many(10_000).as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
        let acts: String = (0..=MAX_ACTIVITIES).map(|i| format!("<r:a{i}/>")).collect();
        let doc = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="a"><dm:person id="p"><r:activities>{acts}</r:activities></dm:person></presence>"#
        );
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(BodyError::TooMany {
                element: "activities",
                ..
            })
        ));
        // Long values are cut, not refused.
        let doc = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{}"><note>{}</note></presence>"#,
            "e".repeat(100_000),
            "n".repeat(100_000)
        );
        let p = parse(doc.as_bytes()).unwrap();
        assert_eq!(p.entity.len(), MAX_TEXT);
        assert_eq!(p.notes[0].len(), MAX_TEXT);
        let notes = "<note>n</note>".repeat(1000);
        let doc = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a">{notes}</presence>"#
        );
        assert_eq!(
            parse(doc.as_bytes()).unwrap().notes.len(),
            crate::connectors::sip::body::MAX_NOTES
        );
        let deep = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a">{}"#,
            "<x>".repeat(MAX_DEPTH)
        );
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(BodyError::TooDeep { .. })
        ));
    }

    #[test]
    fn must_understand_is_flagged() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:x" entity="a">
            <tuple id="t"><x:geo mustUnderstand="true"/></tuple></presence>"#;
        assert!(parse_str(doc).must_understand);
    }
}
