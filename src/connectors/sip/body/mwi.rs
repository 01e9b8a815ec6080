//! Message summary (RFC 3842, reference §6): `application/simple-message-summary`, a text
//! body of header-like lines.
//!
//! ```text
//! Messages-Waiting: yes                 required: yes | no (case-insensitive)
//! Message-Account: sip:alice@vm.example.com
//! Voice-Message: 2/8 (1/2)              <class>-Message: new/old (urgent_new/urgent_old)
//! ```
//!
//! Header names are case-insensitive; lines end in CRLF or LF; the summary ends at the
//! first blank line (per-message headers follow it and are ignored). A class line whose
//! counts do not parse is skipped, not fatal; any `<token>-Message` name is a class (the
//! RFC's are `Voice`, `Fax`, `Pager`, `Multimedia`, `Text`, `None`). Not presence: the
//! normalizer only keeps it as a raw attribute.

use super::{BodyError, MAX_ITEMS, MAX_TEXT};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageSummary {
    pub messages_waiting: bool,
    pub account: Option<String>,
    pub classes: Vec<MessageClass>,
}

/// One `<class>-Message: new/old (urgent_new/urgent_old)` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageClass {
    /// As sent, e.g. `Voice`.
    pub class: String,
    pub new: u32,
    pub old: u32,
    pub urgent_new: Option<u32>,
    pub urgent_old: Option<u32>,
}

impl MessageSummary {
    /// The class that best summarises the mailbox: `Voice` if present, else the first.
    pub fn main_class(&self) -> Option<&MessageClass> {
        self.classes
            .iter()
            .find(|c| c.class.eq_ignore_ascii_case("voice"))
            .or(self.classes.first())
    }
}

/// Parses an `application/simple-message-summary` body.
pub fn parse(body: &[u8]) -> Result<MessageSummary, BodyError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| BodyError::MessageSummary(format!("not UTF-8 text ({e})")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut waiting = None;
    let mut out = MessageSummary::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            // A blank line before anything (leading CRLF) is padding; after, the end.
            if waiting.is_some() || out.account.is_some() || !out.classes.is_empty() {
                break;
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Messages-Waiting") {
            waiting = Some(match value.to_ascii_lowercase().as_str() {
                "yes" => true,
                "no" => false,
                _ => {
                    return Err(BodyError::MessageSummary(format!(
                        "Messages-Waiting is {:?}, expected yes or no",
                        cut(value, 64)
                    )))
                }
            });
        } else if name.eq_ignore_ascii_case("Message-Account") {
            if !value.is_empty() {
                out.account = Some(cut(value, MAX_TEXT).to_string());
            }
        } else if let Some(class) = strip_suffix_ignore_case(name, "-Message") {
            if class.is_empty() {
                continue;
            }
            if let Some(mut counts) = parse_counts(value) {
                if out.classes.len() >= MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "message class lines",
                        limit: MAX_ITEMS,
                    });
                }
                counts.class = cut(class, 64).to_string();
                out.classes.push(counts);
            }
        }
    }
    out.messages_waiting = waiting.ok_or_else(|| {
        BodyError::MessageSummary("the required Messages-Waiting line is missing".into())
    })?;
    Ok(out)
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// `new/old` optionally followed by `(urgent_new/urgent_old)`.
fn parse_counts(value: &str) -> Option<MessageClass> {
    let (main, urgent) = match value.split_once('(') {
        Some((main, rest)) => (main, Some(rest.strip_suffix(')')?)),
        None => (value, None),
    };
    let pair = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.split_once('/')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    let (new, old) = pair(main)?;
    let urgent = match urgent {
        Some(u) => Some(pair(u)?),
        None => None,
    };
    Some(MessageClass {
        class: String::new(),
        new,
        old,
        urgent_new: urgent.map(|u| u.0),
        urgent_old: urgent.map(|u| u.1),
    })
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const REFERENCE: &str =
        "Messages-Waiting: yes\r\nMessage-Account: sip:alice@vm.example.com\r\nVoice-Message: 2/8 (1/2)\r\n";

    #[test]
    fn reference_example() {
        let m = parse(REFERENCE.as_bytes()).unwrap();
        assert!(m.messages_waiting);
        assert_eq!(m.account.as_deref(), Some("sip:alice@vm.example.com"));
        assert_eq!(
            m.classes,
            [MessageClass {
                class: "Voice".into(),
                new: 2,
                old: 8,
                urgent_new: Some(1),
                urgent_old: Some(2),
            }]
        );
        assert_eq!(m.main_class().unwrap().new, 2);
    }

    #[test]
    fn variants() {
        let m = parse(
            b"\r\nmessages-waiting:NO\nfax-message: 0/1\nVOICE-MESSAGE: 3 / 4\nText-Message: x/1\n\
              Pager-Message: 1/1 (2/2\n-Message: 1/1\n\nVoice-Message: 9/9\n",
        )
        .unwrap();
        assert!(!m.messages_waiting);
        assert_eq!(m.account, None);
        let classes: Vec<(&str, u32, u32)> = m
            .classes
            .iter()
            .map(|c| (c.class.as_str(), c.new, c.old))
            .collect();
        assert_eq!(classes, [("fax", 0, 1), ("VOICE", 3, 4)]);
        assert_eq!(m.main_class().unwrap().class, "VOICE");
        let m = parse(b"Messages-Waiting: yes\r\nFax-Message: 1/0\r\n").unwrap();
        assert_eq!(m.main_class().unwrap().class, "Fax");
        assert_eq!(parse(b"Messages-Waiting: yes").unwrap().main_class(), None);
    }

    #[test]
    fn errors() {
        assert!(matches!(parse(b""), Err(BodyError::MessageSummary(_))));
        assert!(matches!(
            parse(b"Voice-Message: 1/2\r\n"),
            Err(BodyError::MessageSummary(_))
        ));
        let e = parse(b"Messages-Waiting: maybe\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "message-summary: Messages-Waiting is \"maybe\", expected yes or no"
        );
        assert!(matches!(
            parse(b"Messages-Waiting: yes\xff\r\n"),
            Err(BodyError::MessageSummary(_))
        ));
        let many = format!(
            "Messages-Waiting: yes\r\n{}",
            "Voice-Message: 1/1\r\n".repeat(MAX_ITEMS + 1)
        );
        assert!(matches!(
            parse(many.as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
        let long = format!(
            "Messages-Waiting: yes\r\nMessage-Account: {}\r\n",
            "é".repeat(MAX_TEXT)
        );
        assert!(parse(long.as_bytes()).unwrap().account.unwrap().len() <= MAX_TEXT);
    }
}
