//! Every SIP body parser on arbitrary bytes, then the normalizer on whatever parses: no
//! panic, no unbounded memory (libFuzzer's `-rss_limit_mb` catches the latter). The first
//! byte picks the content type (modulo 5), the rest is the body. When the body is text it
//! also checks that the PIDF we publish escapes it: built with the text as entity and note,
//! it parses back to the same values.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_bridge::connectors::sip::body::{parse_body, Body, DialogTracker, MAX_TEXT};
use presence_bridge::connectors::sip::normalize::{
    normalize, pidf_for_command, user_from_uri, PresenceDoc, SipNormalizeOptions,
};
use presence_bridge::model::{Activity, Availability};

/// The seeds' multipart boundary is `rlsbound42` (as in shared/peers/sipp/notifier-rls.xml).
const TYPES: [&str; 5] = [
    "application/pidf+xml",
    "application/xpidf+xml",
    "application/dialog-info+xml",
    "application/simple-message-summary",
    "multipart/related;type=\"application/rlmi+xml\";start=\"<rlmi-1@127.0.0.1>\";boundary=\"rlsbound42\"",
];

fn check(body: &Body, opts: &SipNormalizeOptions, tracker: &mut DialogTracker) {
    match body {
        Body::Pidf(_) | Body::Xpidf(_) => {
            let doc = PresenceDoc::from_body(body.clone()).expect("presence body");
            normalize(Some(&doc), Some(tracker.telephony()), None, opts);
        }
        Body::Dialog(d) => {
            tracker.apply(d);
            normalize(None, Some(tracker.telephony()), None, opts);
        }
        Body::Mwi(m) => {
            normalize(Some(&PresenceDoc::EmptyActive), None, Some(m), opts);
        }
        Body::List(l) => {
            for r in &l.resources {
                let _ = user_from_uri(&r.uri);
                for i in &r.instances {
                    if let Some(b) = i.body() {
                        check(b, opts, tracker);
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[usize::from(selector) % TYPES.len()];
    let opts = SipNormalizeOptions {
        empty_active_is_offline: selector & 0x80 == 0,
        dialing_is_on_the_phone: selector & 0x40 == 0,
    };
    let mut tracker = DialogTracker::new();
    if let Ok(parsed) = parse_body(ct, body) {
        check(&parsed, &opts, &mut tracker);
    }

    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let _ = user_from_uri(text);
    // Parsers trim, turn CRLF into LF and cut at MAX_TEXT; compare only where that is
    // the identity. Control characters XML cannot carry are dropped by the builder.
    let trimmed = text.trim();
    if trimmed.len() != text.len()
        || text.len() > MAX_TEXT
        || text
            .chars()
            .any(|c| c.is_control() && c != '\t' && c != '\n')
        || text.contains('\u{FFFE}')
        || text.contains('\u{FFFF}')
    {
        return;
    }
    let xml = pidf_for_command(
        text,
        Availability::DoNotDisturb,
        Some(Activity::InAMeeting),
        Some(text),
        text,
        text,
        i64::from(selector) * 1_000_000_007,
    );
    let Ok(Body::Pidf(p)) = parse_body(TYPES[0], xml.as_bytes()) else {
        panic!("own PIDF does not parse: {xml}");
    };
    assert_eq!(p.entity, text);
    if !text.is_empty() {
        assert_eq!(p.persons[0].notes, [text]);
    }
    assert_eq!(p.persons[0].activities[..2], ["busy", "meeting"]);
});
