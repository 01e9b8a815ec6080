//! NOTIFY bodies: one parser per media type, chosen by the `Content-Type` of the message
//! (never by the `Accept` we sent: servers answer PIDF to XPIDF-only requests, reference
//! §14.10).
//!
//! | media type (essence, case-insensitive) | parser | result |
//! |---|---|---|
//! | `application/pidf+xml` | [`pidf`] (RFC 3863 + data model, RPID, legacy rpid-status) | [`Body::Pidf`] |
//! | `application/xpidf+xml` | [`xpidf`] (§4.1) | [`Body::Xpidf`] |
//! | `application/dialog-info+xml` | [`dialog`] (RFC 4235) | [`Body::Dialog`] |
//! | `application/simple-message-summary` | [`mwi`] (RFC 3842) | [`Body::Mwi`] |
//! | `multipart/related` (RFC 4662 `type="application/rlmi+xml"`) | [`rlmi`] | [`Body::List`] |
//! | `application/rlmi+xml` (an RLMI root alone, no state parts) | [`rlmi`] | [`Body::List`] |
//! | anything else | — | [`BodyError::Unsupported`] |
//!
//! Parameters are ignored except `boundary`, `start` and `type` of `multipart/related`.
//! An empty body ("no state", reference §2.3 rule 6) is the caller's business: it depends
//! on `Subscription-State`, not on the body.
//!
//! Every parser is bounded, because the input comes from the network: the body is at most
//! [`MAX_BODY`] bytes, XML nesting at most [`MAX_DEPTH`], at most [`MAX_ITEMS`] tuples,
//! persons, atoms, dialogs, resources or multipart parts, and every kept text value is cut
//! at [`MAX_TEXT`] bytes. Hostile input gives an error, never a panic; memory kept is
//! linear in the input (a multipart part referenced by several RLMI instances is parsed
//! once and shared). A DOCTYPE is skipped without being read and no entity other than the
//! predefined ones is ever expanded (see `xml.rs`).

pub mod dialog;
pub mod mwi;
pub mod pidf;
pub mod rlmi;
mod xml;
pub mod xpidf;

pub use dialog::{DialogInfo, DialogTracker, Telephony, TrackOutcome};
pub use mwi::MessageSummary;
pub use pidf::Pidf;
pub use rlmi::ResourceList;
pub use xpidf::Xpidf;

/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// Deepest XML element nesting accepted (PIDF needs 5, RPID inside a person 4).
pub const MAX_DEPTH: usize = 32;
/// Most tuples / persons / devices / atoms / addresses / dialogs / resources / instances /
/// multipart parts in one body.
pub const MAX_ITEMS: usize = 256;
/// Longest text or attribute value kept, in bytes; longer ones are cut (not refused).
pub const MAX_TEXT: usize = 1024;
/// Most activity tokens kept per element (distinct values).
pub const MAX_ACTIVITIES: usize = 64;
/// Most notes kept per element; further ones are ignored.
pub const MAX_NOTES: usize = 16;
/// Deepest `multipart/related` nesting: a list whose parts are lists, and no further.
pub const MAX_NESTING: usize = 2;

/// A parsed NOTIFY body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Pidf(Pidf),
    Xpidf(Xpidf),
    Dialog(DialogInfo),
    Mwi(MessageSummary),
    List(ResourceList),
}

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body of {len} bytes is larger than the {max} bytes accepted")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported content type {0:?}")]
    Unsupported(String),
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("reference to undefined entity &{0}; (DTDs are not read)")]
    UnknownEntity(String),
    #[error("elements nested deeper than {MAX_DEPTH} (at <{element}>)")]
    TooDeep { element: String },
    #[error("more than {limit} {element} in one body")]
    TooMany { element: &'static str, limit: usize },
    #[error("no root element")]
    NoRoot,
    #[error("document ends inside an element")]
    Truncated,
    #[error("root element is <{found}>, expected {expected}")]
    UnexpectedRoot {
        expected: &'static str,
        found: String,
    },
    #[error("<{element}> has no {attribute} attribute")]
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    #[error("<{element}> {attribute}={value:?} is not valid")]
    InvalidAttribute {
        element: &'static str,
        attribute: &'static str,
        value: String,
    },
    #[error("message-summary: {0}")]
    MessageSummary(String),
    #[error("multipart/related: {0}")]
    Multipart(String),
    #[error("multipart/related nested deeper than {MAX_NESTING} levels")]
    NestedTooDeep,
}

/// Parses a NOTIFY body by its `Content-Type` header value (see the module docs).
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<Body, BodyError> {
    parse_at(content_type, body, 0)
}

/// `parse_body` at multipart nesting `depth` (0 for a NOTIFY body itself).
fn parse_at(content_type: &str, body: &[u8], depth: usize) -> Result<Body, BodyError> {
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLarge {
            len: body.len(),
            max: MAX_BODY,
        });
    }
    let media = MediaType::parse(content_type);
    match media.essence.as_str() {
        "application/pidf+xml" => pidf::parse(body).map(Body::Pidf),
        "application/xpidf+xml" => xpidf::parse(body).map(Body::Xpidf),
        "application/dialog-info+xml" => dialog::parse(body).map(Body::Dialog),
        "application/simple-message-summary" => mwi::parse(body).map(Body::Mwi),
        "application/rlmi+xml" => rlmi::parse_rlmi(body).map(Body::List),
        "multipart/related" => {
            if depth >= MAX_NESTING {
                return Err(BodyError::NestedTooDeep);
            }
            rlmi::parse_multipart(&media, body, depth).map(Body::List)
        }
        _ => Err(BodyError::Unsupported(
            content_type.trim().chars().take(128).collect(),
        )),
    }
}

/// A `Content-Type` value: the essence (`type/subtype`, lower case) and the parameters
/// (names lower case, values unquoted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Lenient: a value without `/` gives that token as essence; malformed parameters are
    /// dropped. At most 16 parameters are kept.
    pub fn parse(value: &str) -> MediaType {
        let (essence, mut rest) = match value.find(';') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, ""),
        };
        let mut params = Vec::new();
        while !rest.trim().is_empty() && params.len() < 16 {
            let Some(eq) = rest.find('=') else { break };
            let name = rest[..eq].trim().to_ascii_lowercase();
            let after = rest[eq + 1..].trim_start();
            let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
                // quoted-string with backslash escapes
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => out.push(c),
                    }
                }
                let tail = &quoted[end.min(quoted.len())..];
                let next = tail.find(';').map_or("", |i| &tail[i + 1..]);
                (out, next)
            } else {
                match after.find(';') {
                    Some(i) => (after[..i].trim().to_string(), &after[i + 1..]),
                    None => (after.trim().to_string(), ""),
                }
            };
            if !name.is_empty() {
                params.push((name, val));
            }
            rest = next;
        }
        MediaType {
            essence: essence.trim().to_ascii_lowercase(),
            params,
        }
    }

    /// The first parameter `name` (lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let m = MediaType::parse(
            r#"Multipart/Related ;type="application/rlmi+xml";start="<rlmi-1@127.0.0.1>";boundary="rls\"b;42""#,
        );
        assert_eq!(m.essence, "multipart/related");
        assert_eq!(m.param("type"), Some("application/rlmi+xml"));
        assert_eq!(m.param("start"), Some("<rlmi-1@127.0.0.1>"));
        assert_eq!(m.param("boundary"), Some("rls\"b;42"));
        let m = MediaType::parse("application/pidf+xml; charset=UTF-8 ; x");
        assert_eq!(m.essence, "application/pidf+xml");
        assert_eq!(m.param("charset"), Some("UTF-8"));
        assert_eq!(MediaType::parse("").essence, "");
        assert_eq!(
            MediaType::parse("a;b=\"unterminated").param("b"),
            Some("unterminated")
        );
        assert_eq!(
            MediaType::parse("a;=x;b=1").params,
            [("b".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn dispatch() {
        for ct in [
            "text/plain",
            "application/xml",
            "",
            "application/pidf-diff+xml",
        ] {
            assert!(
                matches!(
                    parse_body(ct, b"<presence/>"),
                    Err(BodyError::Unsupported(_))
                ),
                "{ct}"
            );
        }
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(
            parse_body("application/pidf+xml", &big),
            Err(BodyError::TooLarge {
                len: MAX_BODY + 1,
                max: MAX_BODY
            })
        );
        let pidf = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@x"/>"#;
        assert!(matches!(
            parse_body("Application/PIDF+XML; charset=utf-8", pidf),
            Ok(Body::Pidf(_))
        ));
        let mwi = b"Messages-Waiting: no\r\n";
        assert!(matches!(
            parse_body("application/simple-message-summary", mwi),
            Ok(Body::Mwi(_))
        ));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let cases: Vec<(BodyError, &str)> = vec![
            (
                BodyError::TooMany {
                    element: "<tuple> elements",
                    limit: MAX_ITEMS,
                },
                "more than 256 <tuple> elements in one body",
            ),
            (
                BodyError::TooDeep {
                    element: "x".into(),
                },
                "elements nested deeper than 32 (at <x>)",
            ),
            (
                BodyError::MissingAttribute {
                    element: "dialog-info",
                    attribute: "version",
                },
                "<dialog-info> has no version attribute",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    const TYPES: [&str; 6] = [
        "application/pidf+xml",
        "application/xpidf+xml",
        "application/dialog-info+xml",
        "application/simple-message-summary",
        "multipart/related;type=\"application/rlmi+xml\";boundary=\"b\"",
        "application/rlmi+xml",
    ];

    /// Every parser on `body`, and the normalizer on whatever parses; none may panic.
    fn all_types(body: &[u8]) -> Vec<Result<Body, BodyError>> {
        use crate::connectors::sip::normalize::{normalize, PresenceDoc, SipNormalizeOptions};
        TYPES
            .iter()
            .map(|ct| {
                let got = parse_body(ct, body);
                if let Ok(b) = &got {
                    let opts = SipNormalizeOptions::default();
                    match b {
                        Body::Pidf(_) | Body::Xpidf(_) => {
                            let doc = PresenceDoc::from_body(b.clone()).unwrap();
                            normalize(Some(&doc), None, None, &opts);
                        }
                        Body::Dialog(d) => {
                            let mut t = DialogTracker::new();
                            t.apply(d);
                            normalize(None, Some(t.telephony()), None, &opts);
                        }
                        Body::Mwi(m) => {
                            normalize(None, None, Some(m), &opts);
                        }
                        Body::List(_) => {}
                    }
                }
                got
            })
            .collect()
    }

    /// Well-formed samples of every kind (the observed bodies of the reference).
    fn samples() -> Vec<(String, String)> {
        vec![
            ("application/pidf+xml".into(), pidf::tests::BARESIP.into()),
            ("application/pidf+xml".into(), pidf::tests::LEGACY.into()),
            ("application/pidf+xml".into(), pidf::tests::PUBLISHED.into()),
            (
                "application/xpidf+xml".into(),
                xpidf::tests::REFERENCE.into(),
            ),
            (
                "application/dialog-info+xml".into(),
                dialog::tests::KAMAILIO.into(),
            ),
            (
                "application/dialog-info+xml".into(),
                dialog::tests::SIPP[1].into(),
            ),
            (
                "application/rlmi+xml".into(),
                rlmi::tests::KAMAILIO_RLMI.into(),
            ),
            (rlmi::tests::SIPP_CT.into(), rlmi::tests::sipp_first()),
            (
                "application/simple-message-summary".into(),
                "Messages-Waiting: yes\r\nVoice-Message: 2/8 (1/2)\r\n".into(),
            ),
        ]
    }

    #[test]
    fn every_truncation_of_the_samples() {
        for (ct, body) in samples() {
            assert!(parse_body(&ct, body.as_bytes()).is_ok(), "{ct}");
            for cut in 0..body.len() {
                let _ = parse_body(&ct, &body.as_bytes()[..cut]);
                let _ = all_types(&body.as_bytes()[..cut]);
            }
            // And a byte flipped to non-UTF-8 at every position.
            for i in 0..body.len() {
                let mut b = body.clone().into_bytes();
                b[i] = 0xff;
                let _ = parse_body(&ct, &b);
            }
        }
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let pidf_open = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@x">"#;
        let deep_root = "<presence>".repeat(90_000);
        let deep_pidf = format!("{pidf_open}{}", "<tuple>".repeat(10_000));
        let deep_closed = format!(
            "{pidf_open}{}{}</presence>",
            "<x>".repeat(MAX_DEPTH + 1),
            "</x>".repeat(MAX_DEPTH + 1)
        );
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE presence [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="&lol9;"><note>&lol9;</note></presence>"#;
        let laughs_text = laughs.replace("entity=\"&lol9;\"", "entity=\"a\"");
        let external = r#"<?xml version="1.0"?><!DOCTYPE presence SYSTEM "file:///etc/passwd"><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a"><note>&xxe;</note></presence>"#;
        let huge_attr = format!(
            "{}\"/>",
            pidf_open.replace(
                "entity=\"sip:a@x\">",
                &format!("entity=\"{}", "a".repeat(900_000))
            )
        );
        let huge_text = format!("{pidf_open}<note>{}</note></presence>", "n".repeat(900_000));
        let tuples_10k = format!(
            "{pidf_open}{}</presence>",
            "<tuple id=\"t\"><status><basic>open</basic></status></tuple>".repeat(10_000)
        );
        let persons = format!(
            "{pidf_open}{}</presence>",
            "<dm:person id=\"p\"><r:activities><r:busy/></r:activities></dm:person>"
                .repeat(MAX_ITEMS + 1)
        );
        let dialogs_10k = format!(
            "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"1\" state=\"full\">{}</dialog-info>",
            "<dialog id=\"d\"><state>confirmed</state></dialog>".repeat(10_000)
        );
        let resources_10k = format!(
            "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" version=\"1\" fullState=\"true\">{}</list>",
            "<resource uri=\"u\"/>".repeat(10_000)
        );
        let many_attrs: String = (0..50_000).map(|i| format!(" a{i}=\"\"")).collect();
        let many_attrs =
            format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"{many_attrs} entity=\"z\"/>");
        let many_ns: String = (0..20_000)
            .map(|i| format!(" xmlns:p{i}=\"urn:x:{i}\""))
            .collect();
        let many_ns =
            format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"{many_ns} entity=\"z\"/>");
        let many_refs = format!(
            "{pidf_open}<note>{}</note></presence>",
            "&amp;".repeat(150_000)
        );
        let many_unknown = format!(
            "{pidf_open}{}</presence>",
            "<x:y xmlns:x=\"urn:x\" a=\"1\">t</x:y>".repeat(20_000)
        );
        let many_delims = "--b\r\n".repeat(200_000);
        let huge_header = format!(
            "--b\r\nContent-Type: {}\r\n\r\nx\r\n--b--",
            "x".repeat(900_000)
        );
        let mwi_lines = format!("Messages-Waiting: yes\r\n{}", "X: y\r\n".repeat(150_000));
        let nasty: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"<".to_vec(),
            b"<<<<>>>>".to_vec(),
            b"\0\0\0\0".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
            b"\xFE\xFF\0<\0p".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"\xff\"/>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>\xff\xfe</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><\xff/></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>&#0;</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>&#xD800;</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>&#xFFFFFFFFFF;</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>&;</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note>a & b</note></presence>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><note><![CDATA[x".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\"><!-- x".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=a/>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"a\" entity=\"b\"/>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:xml=\"urn:bad\" entity=\"a\"/>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:xmlns=\"urn:bad\"/>".to_vec(),
            b"<x:presence entity=\"a\"/>".to_vec(),
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"></tuple></presence>".to_vec(),
            b"</presence>".to_vec(),
            b"<:/>".to_vec(),
            b"<a:/>".to_vec(),
            b"<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"1\" state=\"full\"><dialog><state code=\"99999999\">x".to_vec(),
            b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/1\r\n".to_vec(),
            b"--b\r\n\r\n\r\n--b--".to_vec(),
            b"--b--".to_vec(),
            b"--b\r\nContent-Type: multipart/related;boundary=b\r\n\r\n--b".to_vec(),
            deep_root.into_bytes(),
            deep_pidf.into_bytes(),
            deep_closed.into_bytes(),
            laughs.as_bytes().to_vec(),
            laughs_text.into_bytes(),
            external.as_bytes().to_vec(),
            huge_attr.into_bytes(),
            huge_text.into_bytes(),
            tuples_10k.into_bytes(),
            persons.into_bytes(),
            dialogs_10k.into_bytes(),
            resources_10k.into_bytes(),
            many_attrs.into_bytes(),
            many_ns.into_bytes(),
            many_refs.into_bytes(),
            many_unknown.into_bytes(),
            many_delims.into_bytes(),
            huge_header.into_bytes(),
            mwi_lines.into_bytes(),
        ];
        for body in &nasty {
            assert!(body.len() <= MAX_BODY, "{}", body.len());
            all_types(body);
        }
        let pidf = |i: usize| parse_body(TYPES[0], &nasty[i]);
        let named = |name: &str| {
            nasty.len() - 19
                + [
                    "deep_root",
                    "deep_pidf",
                    "deep_closed",
                    "laughs",
                    "laughs_text",
                    "external",
                    "huge_attr",
                    "huge_text",
                    "tuples_10k",
                    "persons",
                    "dialogs_10k",
                    "resources_10k",
                    "many_attrs",
                    "many_ns",
                    "many_refs",
                    "many_unknown",
                    "many_delims",
                    "huge_header",
                    "mwi_lines",
                ]
                .iter()
                .position(|n| *n == name)
                .unwrap()
        };
        assert!(matches!(
            pidf(named("deep_root")),
            Err(BodyError::UnexpectedRoot { .. })
        ));
        assert!(matches!(
            parse_body(TYPES[1], &nasty[named("deep_root")]),
            Err(BodyError::TooDeep { .. })
        ));
        assert!(matches!(
            pidf(named("deep_pidf")),
            Err(BodyError::TooDeep { .. })
        ));
        assert!(matches!(
            pidf(named("deep_closed")),
            Err(BodyError::TooDeep { .. })
        ));
        assert_eq!(
            pidf(named("laughs")),
            Err(BodyError::UnknownEntity("lol9".into()))
        );
        assert_eq!(
            pidf(named("laughs_text")),
            Err(BodyError::UnknownEntity("lol9".into()))
        );
        assert_eq!(
            pidf(named("external")),
            Err(BodyError::UnknownEntity("xxe".into()))
        );
        let Ok(Body::Pidf(p)) = pidf(named("huge_attr")) else {
            panic!()
        };
        assert_eq!(p.entity.len(), MAX_TEXT);
        let Ok(Body::Pidf(p)) = pidf(named("huge_text")) else {
            panic!()
        };
        assert_eq!(p.notes[0].len(), MAX_TEXT);
        assert!(matches!(
            pidf(named("tuples_10k")),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            pidf(named("persons")),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            parse_body(TYPES[2], &nasty[named("dialogs_10k")]),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            parse_body(TYPES[5], &nasty[named("resources_10k")]),
            Err(BodyError::TooMany { .. })
        ));
        let Ok(Body::Pidf(p)) = pidf(named("many_attrs")) else {
            panic!()
        };
        assert_eq!(p.entity, "z");
        let Ok(Body::Pidf(p)) = pidf(named("many_ns")) else {
            panic!()
        };
        assert_eq!(p.entity, "z");
        let Ok(Body::Pidf(p)) = pidf(named("many_refs")) else {
            panic!()
        };
        assert_eq!(p.notes[0], "&".repeat(MAX_TEXT));
        let Ok(Body::Pidf(p)) = pidf(named("many_unknown")) else {
            panic!()
        };
        assert!(p.tuples.is_empty());
        assert!(matches!(
            parse_body(TYPES[4], &nasty[named("many_delims")]),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            parse_body(TYPES[4], &nasty[named("huge_header")]),
            Err(BodyError::Multipart(_))
        ));
        let Ok(Body::Mwi(m)) = parse_body(TYPES[3], &nasty[named("mwi_lines")]) else {
            panic!()
        };
        assert!(m.messages_waiting);
        // Non-UTF-8 in a kept value, an unknown prefix, a rebound `xml` prefix.
        assert!(matches!(pidf(6), Err(BodyError::Malformed { .. })));
        assert!(matches!(pidf(7), Err(BodyError::Malformed { .. })));
        assert!(matches!(pidf(18), Err(BodyError::Malformed { .. })));
        assert!(matches!(pidf(20), Err(BodyError::UnexpectedRoot { .. })));
        assert!(matches!(pidf(21), Err(BodyError::Malformed { .. })));
        // A multipart part that is itself the same multipart, truncated: bounded.
        assert!(parse_body(TYPES[4], &nasty[29]).is_err());
    }

    /// The fuzz seeds stay valid: first byte = content type (as in `fuzz/fuzz_targets/sip_body.rs`).
    #[test]
    fn fuzz_seeds_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/sip_body");
        let fuzz_types = [TYPES[0], TYPES[1], TYPES[2], TYPES[3], rlmi::tests::SIPP_CT];
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let ct = fuzz_types[usize::from(data[0]) % fuzz_types.len()];
            let got = parse_body(ct, &data[1..]);
            assert!(got.is_ok(), "{}: {got:?}", path.display());
            if let Ok(Body::List(l)) = got {
                for r in &l.resources {
                    for i in &r.instances {
                        assert!(
                            !matches!(i.body, rlmi::InstanceBody::Failed(_)),
                            "{}: {i:?}",
                            path.display()
                        );
                    }
                }
            }
            n += 1;
        }
        assert!(n >= 10, "{n} seeds");
    }
}
