//! The event channel's payload (reference §4): the per-application queue of undelivered
//! events with its merging rules, and the rendering of event responses.
//!
//! Merging: a `contactPresence`, `contactNote`, own `presence` or own `note` event that is
//! already queued (not yet delivered) is not queued again: the client GETs the resource and
//! sees the latest state, so intermediate states are skipped, as §4 allows. The merged event
//! keeps the position of the first one. `contact` and `presenceSubscription` events are never
//! merged.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Instant;

/// `type` of an event on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Added,
    Updated,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Updated => "updated",
            Kind::Deleted => "deleted",
        }
    }
}

/// One event. Contacts are user indexes of the engine, subscriptions their numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ev {
    /// `contact` added/deleted `in: subscribedContacts` (sender `people`).
    Contact(Kind, u32),
    /// `contactPresence` updated `in: contact` (sender `people`).
    ContactPresence(u32),
    /// `contactNote` updated `in: contact` (sender `people`).
    ContactNote(u32),
    /// `presenceSubscription` added/updated/deleted (sender `people`); `updated` (the
    /// expiry warning) embeds the subscription.
    Subscription(Kind, u32),
    /// Own `presence` added (after makeMeAvailable) / updated (sender `me`).
    MePresence(Kind),
    /// Own `note` updated (sender `me`).
    MeNote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    People,
    Me,
}

impl Ev {
    fn sender(self) -> Sender {
        match self {
            Ev::MePresence(_) | Ev::MeNote => Sender::Me,
            _ => Sender::People,
        }
    }
}

/// Undelivered events of one application, in order, with the merge sets.
#[derive(Debug, Default)]
pub struct Queue {
    evs: Vec<Ev>,
    presence: HashSet<u32>,
    notes: HashSet<u32>,
    me_presence: bool,
    me_note: bool,
    /// When the oldest undelivered event was queued (the start of the hold window).
    pub first_at: Option<Instant>,
}

impl Queue {
    /// Queues an event unless an equivalent one is already waiting. Returns whether it was
    /// queued.
    pub fn push(&mut self, ev: Ev, now: Instant) -> bool {
        let fresh = match ev {
            Ev::ContactPresence(c) => self.presence.insert(c),
            Ev::ContactNote(c) => self.notes.insert(c),
            Ev::MePresence(_) => !std::mem::replace(&mut self.me_presence, true),
            Ev::MeNote => !std::mem::replace(&mut self.me_note, true),
            Ev::Contact(..) | Ev::Subscription(..) => true,
        };
        if fresh {
            if self.evs.is_empty() {
                self.first_at = Some(now);
            }
            self.evs.push(ev);
        }
        fresh
    }

    pub fn is_empty(&self) -> bool {
        self.evs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.evs.len()
    }

    /// Takes every queued event (for a response) and resets the merge sets.
    pub fn take(&mut self) -> Vec<Ev> {
        self.presence.clear();
        self.notes.clear();
        self.me_presence = false;
        self.me_note = false;
        self.first_at = None;
        std::mem::take(&mut self.evs)
    }

    pub fn clear(&mut self) {
        self.take();
    }
}

/// A subscription id as it appears in hrefs (8 hex digits, like `97b6bd66`).
pub fn sub_id(id: u32) -> String {
    format!("{id:08x}")
}

/// Writes `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"rel":R,"href":H}` where the href is `base` followed by `parts`.
fn write_link(out: &mut String, rel: &str, base: &str, parts: &[&str]) {
    out.push_str("{\"rel\":");
    write_str(out, rel);
    out.push_str(",\"href\":");
    let mut href = String::with_capacity(base.len() + 64);
    href.push_str(base);
    for p in parts {
        href.push_str(p);
    }
    write_str(out, &href);
    out.push('}');
}

/// The presenceSubscription resource (as the create answer and the `updated` event embed it).
pub fn write_subscription(out: &mut String, base: &str, id: u32) {
    let sid = sub_id(id);
    let members =
        format!("{base}/people/presenceSubscriptionMemberships?presenceSubscriptionId={sid}");
    out.push_str("{\"rel\":\"presenceSubscription\",\"id\":");
    write_str(out, &sid);
    out.push_str(",\"_links\":{\"self\":{\"href\":");
    write_str(out, &format!("{base}/people/presenceSubscriptions/{sid}"));
    out.push_str("},\"memberships\":{\"href\":");
    write_str(out, &members);
    out.push_str("},\"addToPresenceSubscription\":{\"href\":");
    write_str(out, &members);
    out.push_str("}}}");
}

fn write_event<'a>(out: &mut String, base: &str, ev: Ev, key_of: &dyn Fn(u32) -> &'a str) {
    out.push_str("{\"link\":");
    let ty = match ev {
        Ev::Contact(kind, c) => {
            let k = key_of(c);
            write_link(out, "contact", base, &["/people/", k]);
            out.push_str(",\"in\":");
            write_link(
                out,
                "subscribedContacts",
                base,
                &["/people/subscribedContacts"],
            );
            kind
        }
        Ev::ContactPresence(c) => {
            let k = key_of(c);
            write_link(out, "contactPresence", base, &["/people/", k, "/presence"]);
            out.push_str(",\"in\":");
            write_link(out, "contact", base, &["/people/", k]);
            Kind::Updated
        }
        Ev::ContactNote(c) => {
            let k = key_of(c);
            write_link(out, "contactNote", base, &["/people/", k, "/note"]);
            out.push_str(",\"in\":");
            write_link(out, "contact", base, &["/people/", k]);
            Kind::Updated
        }
        Ev::Subscription(kind, id) => {
            let sid = sub_id(id);
            write_link(
                out,
                "presenceSubscription",
                base,
                &["/people/presenceSubscriptions/", &sid],
            );
            if kind == Kind::Updated {
                out.push_str(",\"_embedded\":{\"presenceSubscription\":");
                write_subscription(out, base, id);
                out.push('}');
            }
            kind
        }
        Ev::MePresence(kind) => {
            write_link(out, "presence", base, &["/me/presence"]);
            kind
        }
        Ev::MeNote => {
            write_link(out, "note", base, &["/me/note"]);
            Kind::Updated
        }
    };
    out.push_str(",\"type\":\"");
    out.push_str(ty.as_str());
    out.push_str("\"}");
}

fn write_href(out: &mut String, rel: &str, base: &str, ack: u64) {
    write_str(out, rel);
    out.push_str(":{\"href\":");
    write_str(out, &format!("{base}/events?ack={ack}"));
    out.push('}');
}

/// An event response: `_links` self (`ack`) and `next_rel` (`ack + 1`), then the events
/// grouped by sender; consecutive events of one sender share an entry, a sender repeats when
/// needed to keep the order. No events → no `sender` key (the timeout answer).
pub fn render<'a>(
    base: &str,
    ack: u64,
    next_rel: &str,
    evs: &[Ev],
    key_of: &dyn Fn(u32) -> &'a str,
) -> String {
    let mut out = String::with_capacity(160 + evs.len() * 260);
    out.push_str("{\"_links\":{");
    write_href(&mut out, "self", base, ack);
    out.push(',');
    write_href(&mut out, next_rel, base, ack + 1);
    out.push('}');
    if !evs.is_empty() {
        out.push_str(",\"sender\":[");
        let mut current: Option<Sender> = None;
        for &ev in evs {
            let s = ev.sender();
            if current != Some(s) {
                if current.is_some() {
                    out.push_str("]},");
                }
                let (rel, path) = match s {
                    Sender::People => ("people", "/people"),
                    Sender::Me => ("me", "/me"),
                };
                out.push_str("{\"rel\":\"");
                out.push_str(rel);
                out.push_str("\",\"href\":");
                write_str(&mut out, &format!("{base}{path}"));
                out.push_str(",\"events\":[");
                current = Some(s);
            } else {
                out.push(',');
            }
            write_event(&mut out, base, ev, key_of);
        }
        out.push_str("]}]");
    }
    out.push('}');
    out
}

/// The out-of-range answer: only a `resync` link (to the ack the server expects next).
pub fn render_resync(base: &str, ack: u64) -> String {
    let mut out = String::from("{\"_links\":{");
    write_href(&mut out, "resync", base, ack);
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn key(c: u32) -> &'static str {
        [
            "user00000@example.com",
            "user00001@example.com",
            "user00002@example.com",
        ][c as usize]
    }

    #[test]
    fn queue_merges_presence_per_contact() {
        let now = Instant::now();
        let mut q = Queue::default();
        assert!(q.push(Ev::ContactPresence(1), now));
        assert!(q.push(Ev::ContactPresence(2), now));
        assert!(!q.push(Ev::ContactPresence(1), now));
        assert!(q.push(Ev::ContactNote(1), now));
        assert!(!q.push(Ev::ContactNote(1), now));
        assert!(q.push(Ev::MePresence(Kind::Added), now));
        assert!(!q.push(Ev::MePresence(Kind::Updated), now));
        assert!(q.push(Ev::Contact(Kind::Added, 1), now));
        assert!(q.push(Ev::Contact(Kind::Added, 1), now));
        assert_eq!(q.len(), 6);
        assert_eq!(q.first_at, Some(now));
        assert_eq!(q.take().len(), 6);
        assert!(q.is_empty() && q.first_at.is_none());
        assert!(
            q.push(Ev::ContactPresence(1), now),
            "merge sets reset by take"
        );
    }

    #[test]
    fn render_groups_senders_in_order() {
        let base = "/ucwa/oauth/v1/applications/101";
        let evs = [
            Ev::Contact(Kind::Added, 2),
            Ev::Subscription(Kind::Added, 0x97b6bd66),
            Ev::ContactPresence(2),
            Ev::MePresence(Kind::Updated),
            Ev::ContactNote(2),
            Ev::Subscription(Kind::Updated, 0x97b6bd66),
        ];
        let body = render(base, 5, "next", &evs, &key);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["_links"]["self"]["href"], format!("{base}/events?ack=5"));
        assert_eq!(v["_links"]["next"]["href"], format!("{base}/events?ack=6"));
        let senders = v["sender"].as_array().unwrap();
        let rels: Vec<_> = senders.iter().map(|s| s["rel"].as_str().unwrap()).collect();
        assert_eq!(rels, ["people", "me", "people"]);
        let e = &senders[0]["events"];
        assert_eq!(e[0]["link"]["rel"], "contact");
        assert_eq!(e[0]["in"]["rel"], "subscribedContacts");
        assert_eq!(e[0]["type"], "added");
        assert_eq!(
            e[1]["link"]["href"],
            format!("{base}/people/presenceSubscriptions/97b6bd66")
        );
        assert_eq!(
            e[2]["link"]["href"],
            format!("{base}/people/user00002@example.com/presence")
        );
        assert_eq!(e[2]["in"]["rel"], "contact");
        assert_eq!(senders[1]["href"], format!("{base}/me"));
        let upd = &senders[2]["events"][1];
        assert_eq!(upd["_embedded"]["presenceSubscription"]["id"], "97b6bd66");
        assert!(
            upd["_embedded"]["presenceSubscription"]["_links"]["addToPresenceSubscription"]["href"]
                .as_str()
                .unwrap()
                .ends_with("presenceSubscriptionId=97b6bd66")
        );
    }

    #[test]
    fn empty_and_resync_answers() {
        let v: Value = serde_json::from_str(&render("/a", 3, "next", &[], &key)).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1, "only _links");
        assert_eq!(v["_links"].as_object().unwrap().len(), 2);
        let v: Value = serde_json::from_str(&render("/a", 3, "resume", &[], &key)).unwrap();
        assert_eq!(v["_links"]["resume"]["href"], "/a/events?ack=4");
        let v: Value = serde_json::from_str(&render_resync("/a", 9)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"_links":{"resync":{"href":"/a/events?ack=9"}}})
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\u{1}\n");
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\u{1}\n"
        );
    }
}
