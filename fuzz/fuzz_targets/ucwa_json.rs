//! Every UCWA parser on arbitrary bytes: no panic, no unbounded memory (libFuzzer's
//! `-rss_limit_mb` catches the latter), and normalization accepts whatever parsing returns.
//! When the input is text, it also checks the request builders: every body built with the
//! input in it is valid JSON, and a presence body reads back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_bridge::connectors::ucwa::json::{
    add_members_body, application_body, parse_application, parse_contact_note,
    parse_contact_presence, parse_error, parse_events, parse_links, parse_ms_date,
    parse_oauth_challenge, parse_subscription, parse_token, set_presence_body, subscription_body,
    user_from_href,
};
use presence_bridge::connectors::ucwa::normalize::normalize;
use presence_bridge::model::canonical_user;

fuzz_target!(|data: &[u8]| {
    let _ = parse_links(data);
    let _ = parse_token(data);
    let _ = parse_application(data);
    let _ = parse_subscription(data);
    let _ = parse_error(data);
    if let Ok(page) = parse_events(data) {
        assert!(page.next.is_some() || page.resume.is_some() || page.resync.is_some());
        for ev in &page.events {
            assert!(!ev.link_rel.is_empty() && !ev.link_href.is_empty());
            assert_eq!(ev.kind, ev.kind.trim().to_ascii_lowercase());
            let _ = user_from_href(&ev.link_href);
        }
    }
    let note = parse_contact_note(data).ok().flatten();
    if let Ok(p) = parse_contact_presence(data) {
        let state = normalize(&p, note.as_deref());
        assert_eq!(state.raw.get("ucwa.availability"), p.availability.as_ref());
        assert_eq!(state.last_active, p.last_active);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_oauth_challenge(text);
    let _ = parse_ms_date(text);
    if let Some(user) = user_from_href(text) {
        assert!(user.contains('@'));
        assert_eq!(user, canonical_user(&user));
    }
    // Request bodies escape: a contactNote parse succeeds exactly on a JSON object.
    let valid = |body: String| {
        assert!(parse_contact_note(body.as_bytes()).is_ok(), "{body}");
    };
    valid(application_body(text, text, text));
    valid(subscription_body(15, &[text.to_string()]));
    valid(add_members_body(&[text.to_string(), text.to_string()]));
    let presence = parse_contact_presence(set_presence_body(Some(text)).as_bytes())
        .expect("own presence body parses");
    assert_eq!(presence.availability.as_deref(), Some(text));
});
