//! The SIP message parser, stream framer and every typed accessor on arbitrary bytes: no
//! panic, no unbounded memory. Invariants checked on the way:
//! * a frame `frame` reports as complete parses as one message;
//! * a parsed message's wire form parses back to the same message (up to the one
//!   normalization `to_bytes` makes: a single, correct Content-Length);
//! * the digest client answers whatever challenges it accepted without panicking, and its
//!   own Authorization verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_bridge::connectors::sip::digest::{
    challenges, parse_credentials, verify, Credentials, DigestClient,
};
use presence_bridge::connectors::sip::message::{
    frame, uri_aor, uri_host_port, uri_param, Frame, NameAddr, SipMessage, MAX_MESSAGE,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(Frame::Message(n))) = frame(data) {
        assert!(n <= data.len() && n <= MAX_MESSAGE);
        SipMessage::parse(&data[..n]).expect("a complete frame parses");
    }

    let Ok(m) = SipMessage::parse(data) else {
        return;
    };
    let _ = (m.subscription_state(), m.event(), m.from_hdr(), m.to_hdr());
    let _ = (m.contact(), m.content_type(), m.cseq(), m.call_id());
    let _ = (
        m.expires(),
        m.min_expires(),
        m.retry_after(),
        m.via_branch(),
    );
    let _ = (m.header_list("Via"), m.header_list("Record-Route"));
    let _ = (m.method(), m.code(), m.is_request());
    if let Some(uri) = m.request_uri() {
        let _ = (
            uri_aor(uri),
            uri_host_port(uri),
            uri_param(uri, "transport"),
        );
    }
    for (_, value) in &m.headers {
        if let Ok(na) = NameAddr::parse(value) {
            let _ = na.to_string_with_tag("t");
            let _ = (uri_aor(&na.uri), uri_host_port(&na.uri));
        }
        if let Some(c) = parse_credentials(value) {
            let _ = verify(value, "SUBSCRIBE", "secret", &c.realm, &c.nonce);
        }
    }

    // The message against itself as a challenge, then our answer checked by the server side.
    let offered = challenges(&m);
    let mut client = DigestClient::new(Credentials {
        username: "watcher".into(),
        password: "secret".into(),
    });
    if client.on_challenge(&m, &m).is_ok() {
        let mut req = SipMessage::request("SUBSCRIBE", "sip:alice@127.0.0.1");
        client.authorize(&mut req);
        for (name, value) in &req.headers {
            let c = parse_credentials(value).expect("own credentials parse");
            let proxy = name == "Proxy-Authorization";
            assert!(offered
                .iter()
                .any(|o| o.realm == c.realm && o.proxy == proxy));
            // auth-int covers the (empty) body, so verify's empty body fits too.
            assert!(
                verify(value, "SUBSCRIBE", "secret", &c.realm, &c.nonce),
                "{value}"
            );
        }
    }

    let wire = m.to_bytes();
    if wire.len() <= MAX_MESSAGE {
        let mut expected = m.clone();
        let len = m.body.len().to_string();
        let mut seen = false;
        expected.headers.retain_mut(|(n, v)| {
            let is_length = n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l");
            if !is_length {
                return true;
            }
            *v = len.clone();
            !std::mem::replace(&mut seen, true)
        });
        if !seen {
            expected.add("Content-Length", len);
        }
        assert_eq!(SipMessage::parse(&wire), Ok(expected));
    }
});
