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
}
