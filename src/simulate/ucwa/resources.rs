//! JSON renderings of the resources (reference §2, §3, §5, §6, §7). Hrefs inside the UCWA
//! resources are relative to the server origin (`/ucwa/oauth/v1/applications/{id}/…`), as
//! the documentation's samples show; discovery links are absolute.

use super::engine::{App, User};
use super::events::{self, sub_id};
use super::presence::Presence;
use serde_json::{json, Value};

/// Path of the UCWA root (the `applications` resource).
pub const APPLICATIONS: &str = "/ucwa/oauth/v1/applications";
pub const AUTODISCOVER_ROOT: &str = "/Autodiscover/AutodiscoverService.svc/root";
pub const USER: &str = "/Autodiscover/AutodiscoverService.svc/root/oauth/user";
pub const XFRAME: &str = "/Autodiscover/XFrame/XFrame.html";
pub const TOKEN: &str = "/WebTicket/oauthtoken";

fn link(href: impl Into<String>) -> Value {
    json!({ "href": href.into() })
}

/// The autodiscover root (§2.1).
pub fn root(origin: &str, domain: &str) -> String {
    json!({"_links": {
        "self": link(format!("{origin}{AUTODISCOVER_ROOT}?originalDomain={domain}")),
        "user": link(format!("{origin}{USER}?originalDomain={domain}")),
        "xframe": link(format!("{origin}{XFRAME}")),
    }})
    .to_string()
}

/// The user resource with a valid token (§2.4).
pub fn user(origin: &str, domain: &str) -> String {
    json!({"_links": {
        "self": link(format!("{origin}{USER}?originalDomain={domain}")),
        "applications": link(format!("{origin}{APPLICATIONS}")),
        "xframe": link(format!("{origin}{XFRAME}")),
    }})
    .to_string()
}

/// The `WWW-Authenticate` challenge of §2.2.
pub fn challenge(origin: &str) -> String {
    format!(
        "MsRtcOAuth href=\"{origin}{TOKEN}\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\""
    )
}

pub fn me(app: &App, user: &User) -> Value {
    let b = format!("{}/me", app.base);
    let mut links = json!({ "self": link(&b) });
    if app.available {
        links["presence"] = link(format!("{b}/presence"));
        links["note"] = link(format!("{b}/note"));
        links["location"] = link(format!("{b}/location"));
        links["reportMyActivity"] = link(format!("{b}/reportMyActivity"));
    } else {
        links["makeMeAvailable"] = link(format!("{b}/makeMeAvailable"));
    }
    json!({
        "rel": "me",
        "uri": user.uri,
        "name": user.name,
        "emailAddresses": [user.key],
        "_links": links,
    })
}

pub fn people(base: &str) -> Value {
    let p = format!("{base}/people");
    json!({"rel": "people", "_links": {
        "self": link(&p),
        "presenceSubscriptions": link(format!("{p}/presenceSubscriptions")),
        "presenceSubscriptionMemberships": link(format!("{p}/presenceSubscriptionMemberships")),
        "subscribedContacts": link(format!("{p}/subscribedContacts")),
        "myContacts": link(format!("{p}/myContacts")),
        "myGroups": link(format!("{p}/myGroups")),
        "search": link(format!("{p}/search")),
    }})
}

/// A resource that is only a name and a self link (`communication`, `policies`, …).
pub fn bare(base: &str, rel: &str) -> Value {
    json!({"rel": rel, "_links": {"self": link(format!("{base}/{rel}"))}})
}

/// The application (§3), with `me`, `people`, `communication` and `onlineMeetings`
/// embedded. The `events` link carries the ack the server expects next.
pub fn application(app: &App, user: &User) -> String {
    let b = &app.base;
    let mut v = json!({
        "rel": "application",
        "id": app.id.to_string(),
        "culture": app.culture,
        "userAgent": app.user_agent,
        "_links": {
            "self": link(b.as_str()),
            "events": link(format!("{b}/events?ack={}", app.next_ack())),
            "batch": link(format!("{b}/batch")),
            "policies": link(format!("{b}/policies")),
        },
        "_embedded": {
            "me": me(app, user),
            "people": people(b),
            "communication": bare(b, "communication"),
            "onlineMeetings": bare(b, "onlineMeetings"),
        },
    });
    if let Some(i) = &app.instance_id {
        v["instanceId"] = json!(i);
    }
    v.to_string()
}

pub fn contact(base: &str, c: &User) -> Value {
    let p = format!("{base}/people/{}", c.key);
    let mut v = json!({
        "rel": "contact",
        "uri": c.uri,
        "name": c.name,
        "type": "User",
        "sourceNetwork": if c.directory { "SameEnterprise" } else { "Unknown" },
        "_links": {
            "self": link(&p),
            "contactPresence": link(format!("{p}/presence")),
            "contactNote": link(format!("{p}/note")),
        },
    });
    if c.directory {
        v["emailAddresses"] = json!([c.key]);
    }
    v
}

/// Writes `/Date(ms)/` the way the server does, with escaped slashes (`"\/Date(…)\/"`);
/// any JSON parser reads it as `/Date(ms)/`.
fn with_dates(v: &Value) -> String {
    v.to_string()
        .replace("\"/Date(", "\"\\/Date(")
        .replace(")/\"", ")\\/\"")
}

/// contactPresence (§6): no URI of the user in it.
pub fn contact_presence(base: &str, c: &User) -> String {
    let p = &c.presence;
    let mut v = json!({
        "rel": "contactPresence",
        "availability": p.availability.as_str(),
        "deviceType": p.shown_device().as_str(),
        "_links": {"self": link(format!("{base}/people/{}/presence", c.key))},
    });
    if let Some(a) = &p.activity {
        v["activity"] = json!(a);
    }
    if p.last_active_ms > 0 {
        v["lastActive"] = json!(format!("/Date({})/", p.last_active_ms));
    }
    with_dates(&v)
}

/// contactNote: the personal note; `message` absent when there is none.
pub fn contact_note(base: &str, c: &User) -> String {
    let mut v = json!({
        "rel": "contactNote",
        "type": "Personal",
        "_links": {"self": link(format!("{base}/people/{}/note", c.key))},
    });
    if let Some(n) = &c.presence.note {
        v["message"] = json!(n);
    }
    v.to_string()
}

/// Own presence (`me/presence`, §7.2).
pub fn own_presence(base: &str, p: &Presence) -> String {
    let mut v = json!({
        "rel": "presence",
        "availability": p.availability.as_str(),
        "_links": {"self": link(format!("{base}/me/presence"))},
    });
    if let Some(a) = &p.activity {
        v["activity"] = json!(a);
    }
    v.to_string()
}

pub fn own_note(base: &str, p: &Presence) -> String {
    json!({
        "rel": "note",
        "message": p.note.clone().unwrap_or_default(),
        "type": "Personal",
        "_links": {"self": link(format!("{base}/me/note"))},
    })
    .to_string()
}

pub fn subscription(base: &str, sid: u32) -> String {
    let mut out = String::with_capacity(400);
    events::write_subscription(&mut out, base, sid);
    out
}

pub fn subscriptions(app: &App) -> String {
    let mut out =
        String::from("{\"rel\":\"presenceSubscriptions\",\"_links\":{\"self\":{\"href\":");
    events::write_str(
        &mut out,
        &format!("{}/people/presenceSubscriptions", app.base),
    );
    out.push_str("}},\"_embedded\":{\"presenceSubscription\":[");
    for (i, sid) in app.subs.keys().enumerate() {
        if i > 0 {
            out.push(',');
        }
        events::write_subscription(&mut out, &app.base, *sid);
    }
    out.push_str("]}}");
    out
}

/// The membership id in its href: `{subscription id}~{contact key}`.
pub fn membership_id(sid: u32, c: &User) -> String {
    format!("{}~{}", sub_id(sid), c.key)
}

fn membership(base: &str, sid: u32, c: &User) -> Value {
    json!({"rel": "presenceSubscriptionMembership", "_links": {
        "self": link(format!("{base}/people/presenceSubscriptionMemberships/{}", membership_id(sid, c))),
        "contact": link(format!("{base}/people/{}", c.key)),
        "presenceSubscription": link(format!("{base}/people/presenceSubscriptions/{}", sub_id(sid))),
    }})
}

pub fn membership_resource(base: &str, sid: u32, c: &User) -> String {
    membership(base, sid, c).to_string()
}

/// presenceSubscriptionMemberships: of one subscription, or of all when `only` is `None`.
pub fn memberships(app: &App, users: &[User], only: Option<u32>) -> String {
    let mut items = Vec::new();
    for (&sid, s) in &app.subs {
        if only.is_some_and(|o| o != sid) {
            continue;
        }
        for &c in &s.members {
            items.push(membership(&app.base, sid, &users[c as usize]));
        }
    }
    let mut self_href = format!("{}/people/presenceSubscriptionMemberships", app.base);
    if let Some(o) = only {
        self_href.push_str(&format!("?presenceSubscriptionId={}", sub_id(o)));
    }
    json!({
        "rel": "presenceSubscriptionMemberships",
        "_links": {"self": link(self_href)},
        "_embedded": {"presenceSubscriptionMembership": items},
    })
    .to_string()
}

/// A collection of contacts (`subscribedContacts`, `myContacts`, `search`).
pub fn contacts<'a>(base: &str, rel: &str, list: impl Iterator<Item = &'a User>) -> String {
    let items: Vec<Value> = list.map(|c| contact(base, c)).collect();
    json!({
        "rel": rel,
        "_links": {"self": link(format!("{base}/people/{rel}"))},
        "_embedded": {"contact": items},
    })
    .to_string()
}

pub fn groups(base: &str) -> String {
    json!({
        "rel": "myGroups",
        "_links": {"self": link(format!("{base}/people/myGroups"))},
        "_embedded": {"group": []},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_escaped_slashes() {
        let v = json!({"lastActive": "/Date(1358827096000)/", "activity": "/Date(1)/ x"});
        let s = with_dates(&v);
        assert!(s.contains(r#""\/Date(1358827096000)\/""#), "{s}");
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v, "the escaping does not change the values");
    }

    #[test]
    fn challenge_header() {
        assert_eq!(
            challenge("http://127.0.0.1:1"),
            "MsRtcOAuth href=\"http://127.0.0.1:1/WebTicket/oauthtoken\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\""
        );
    }
}
