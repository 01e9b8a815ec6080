//! Every Graph parser on arbitrary bytes: no panic, no unbounded memory (libFuzzer's
//! `-rss_limit_mb` catches the latter), and normalization accepts whatever parsing returns.
//! When the input is text, it also checks the pure helpers and request builders: RFC 3339
//! values round-trip, every body built with the input in it is valid JSON, and the filter quoting never lets an id out of its quotes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_bridge::connectors::graph::json::{
    clear_presence_body, format_rfc3339_ms, get_presences_body, parse_error, parse_notifications,
    parse_presences, parse_retry_after, parse_rfc3339_ms, parse_subscription, parse_token,
    presence_filter_resource, renew_body, set_preferred_presence_body, set_presence_body,
    subscription_body, user_id_from_resource, GraphJsonError,
};
use presence_bridge::connectors::graph::normalize::normalize;

fuzz_target!(|data: &[u8]| {
    let _ = parse_token(data);
    let _ = parse_subscription(data);
    let _ = parse_error(data);
    if let Ok(ps) = parse_presences(data) {
        for p in &ps {
            assert!(!p.id.trim().is_empty());
            let state = normalize(p);
            assert_eq!(state.raw.get("graph.availability"), p.availability.as_ref());
            assert_eq!(state.raw.get("graph.activity"), p.activity.as_ref());
        }
    }
    if let Ok(n) = parse_notifications(data) {
        for item in &n.items {
            assert!(!item.subscription_id.trim().is_empty());
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = parse_retry_after(text) {
        assert!(d.as_secs_f64().is_finite());
    }
    if let Some(ms) = parse_rfc3339_ms(text) {
        let formatted = format_rfc3339_ms(ms);
        assert_eq!(
            parse_rfc3339_ms(&formatted),
            Some(ms),
            "{text} → {formatted}"
        );
    }
    if let Some(id) = user_id_from_resource(text) {
        assert!(!id.is_empty() && !id.contains(['/', '\'']));
    }
    let ids = vec![text.to_string(), "b".to_string()];
    let filter = presence_filter_resource(&ids);
    let inner = filter
        .strip_prefix("/communications/presences?$filter=id in (")
        .and_then(|r| r.strip_suffix(')'))
        .expect("filter shape");
    assert!(inner.ends_with(",'b'"));
    let first = &inner[..inner.len() - 4];
    assert!(first.starts_with('\'') && first.ends_with('\'') && first.len() >= 2);
    assert!(!first[1..first.len() - 1].replace("''", "").contains('\''));

    // Request bodies escape: each is a complete JSON object (it parses, then lacks the
    // `value` a notification collection needs).
    let valid = |body: String| {
        assert!(
            matches!(
                parse_notifications(body.as_bytes()),
                Err(GraphJsonError::Missing("value"))
            ),
            "{body}"
        );
    };
    valid(subscription_body(&filter, text, Some(text), text, text));
    valid(renew_body(text));
    valid(get_presences_body(&ids).expect("two ids"));
    valid(set_presence_body(text, text, text, Some(text)));
    valid(set_preferred_presence_body(text, text, None));
    valid(clear_presence_body(text));
});
