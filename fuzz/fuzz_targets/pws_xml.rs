//! Every PWS body parser on arbitrary bytes: no panic, no unbounded memory (libFuzzer's
//! `-rss_limit_mb` catches the latter), and normalization accepts whatever parsing returns.
//! When the input is text, it also checks that request bodies escape it: a rich presence
//! body built with the input as entity and note parses back to the same values.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_bridge::connectors::pws::normalize::{normalize_basic, normalize_rich};
use presence_bridge::connectors::pws::xml::{
    id_from_location, parse_basic_list, parse_error, parse_redirect, parse_rich_list,
    parse_session_key, rich_presence_body, MAX_TEXT,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_session_key(data);
    let _ = parse_redirect(data);
    let _ = parse_error(data);
    if let Ok(contacts) = parse_basic_list(data) {
        for c in &contacts {
            normalize_basic(&c.status);
        }
    }
    if let Ok(docs) = parse_rich_list(data) {
        for doc in &docs {
            normalize_rich(doc);
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = id_from_location(text);
    // Line ends are normalized by any XML reader; that is not an escaping fault. Escaping
    // grows a value up to 6×, and the size cap applies to the escaped form.
    if text.contains('\r') || text.len() * 6 > MAX_TEXT {
        return;
    }
    let body = rich_presence_body(text, "away", Some(text), false).expect("valid activity");
    let docs = parse_rich_list(body.as_bytes()).expect("own rich body parses");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        assert!(docs.is_empty());
    } else {
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].entity, trimmed);
        assert_eq!(docs[0].note.as_deref(), Some(trimmed));
        assert_eq!(docs[0].activities, ["away"]);
    }
});
