//! XPIDF (`application/xpidf+xml`, reference §4.1): the pre-standard format of Asterisk,
//! Polycom, Windows Messenger and old eXosip clients, with Microsoft's `msnsubstatus`.
//!
//! XPIDF has no namespace and a DOCTYPE (skipped, never read), so elements are matched by
//! **local name** in any namespace:
//!
//! ```text
//! presence
//!   presentity @uri                     -> Xpidf::presentity
//!   atom @id | @atomid                  -> Atom::id
//!     address @uri @priority            -> Address
//!       status @status                  -> Address::status   (open|closed|inuse|inactive)
//!       msnsubstatus @substatus         -> Address::substatus (online|away|idle|busy|berightback|onthephone|outtolunch|…)
//!       note                            -> Address::note
//!   display @name                       -> Xpidf::display_name
//! ```
//!
//! Status values are kept trimmed and lower-cased. A `note` directly under the atom is
//! given to the atom's addresses that have none.

use super::xml::{non_empty, token, Elem, Parser};
use super::{BodyError, MAX_ITEMS};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xpidf {
    pub presentity: Option<String>,
    pub display_name: Option<String>,
    pub atoms: Vec<Atom>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Atom {
    pub id: String,
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub uri: String,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub note: Option<String>,
}

impl Address {
    /// Rank for "most present" (§4.1): `inuse` > `open` > `inactive` > `closed` > other.
    pub fn presence_rank(&self) -> u8 {
        match self.status.as_deref() {
            Some("inuse") => 4,
            Some("open") => 3,
            Some("inactive") => 2,
            Some("closed") => 1,
            _ => 0,
        }
    }
}

impl Xpidf {
    /// The "most present" address over all atoms; the first one on ties.
    pub fn best_address(&self) -> Option<&Address> {
        let mut best: Option<&Address> = None;
        for a in self.atoms.iter().flat_map(|a| &a.addresses) {
            if best.is_none_or(|b| a.presence_rank() > b.presence_rank()) {
                best = Some(a);
            }
        }
        best
    }
}

/// Parses an `application/xpidf+xml` body.
pub fn parse(body: &[u8]) -> Result<Xpidf, BodyError> {
    let mut p = Parser::new(body);
    let root = p.root()?;
    if root.local() != b"presence" {
        return Err(BodyError::UnexpectedRoot {
            expected: "<presence> (XPIDF)",
            found: root.shown(),
        });
    }
    let mut out = Xpidf::default();
    let mut addresses = 0usize;
    while let Some(child) = p.child()? {
        match child.local() {
            b"presentity" => {
                let [uri] = p.attrs(&child, [b"uri"])?;
                out.presentity = out.presentity.or(uri.and_then(non_empty));
                p.skip()?;
            }
            b"display" => {
                let [name] = p.attrs(&child, [b"name"])?;
                out.display_name = out.display_name.or(name.and_then(non_empty));
                p.skip()?;
            }
            b"atom" => {
                if out.atoms.len() >= MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "<atom> elements",
                        limit: MAX_ITEMS,
                    });
                }
                let atom = parse_atom(&mut p, &child, &mut addresses)?;
                out.atoms.push(atom);
            }
            _ => p.skip()?,
        }
    }
    Ok(out)
}

fn parse_atom(p: &mut Parser<'_>, e: &Elem<'_>, count: &mut usize) -> Result<Atom, BodyError> {
    let [id, atomid] = p.attrs(e, [b"id", b"atomid"])?;
    let mut atom = Atom {
        id: id.or(atomid).unwrap_or_default(),
        addresses: Vec::new(),
    };
    let mut atom_note = None;
    while let Some(child) = p.child()? {
        match child.local() {
            b"address" => {
                *count += 1;
                if *count > MAX_ITEMS {
                    return Err(BodyError::TooMany {
                        element: "<address> elements",
                        limit: MAX_ITEMS,
                    });
                }
                let address = parse_address(p, &child)?;
                atom.addresses.push(address);
            }
            b"note" => atom_note = atom_note.or(non_empty(p.text()?)),
            _ => p.skip()?,
        }
    }
    if let Some(note) = atom_note {
        for a in atom.addresses.iter_mut().filter(|a| a.note.is_none()) {
            a.note = Some(note.clone());
        }
    }
    Ok(atom)
}

fn parse_address(p: &mut Parser<'_>, e: &Elem<'_>) -> Result<Address, BodyError> {
    let [uri, priority] = p.attrs(e, [b"uri", b"priority"])?;
    let mut address = Address {
        uri: uri.unwrap_or_default(),
        priority,
        ..Address::default()
    };
    while let Some(child) = p.child()? {
        match child.local() {
            b"status" => {
                let [status] = p.attrs(&child, [b"status"])?;
                address.status = status.map(|s| token(&s)).and_then(non_empty);
                p.skip()?;
            }
            b"msnsubstatus" => {
                let [sub] = p.attrs(&child, [b"substatus"])?;
                address.substatus = sub.map(|s| token(&s)).and_then(non_empty);
                p.skip()?;
            }
            b"note" => address.note = address.note.or(non_empty(p.text()?)),
            _ => p.skip()?,
        }
    }
    Ok(address)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example of §4.1, verbatim.
    pub const REFERENCE: &str = r#"<?xml version="1.0"?>
<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">
<presence>
  <presentity uri="sip:alice@example.com;method=SUBSCRIBE"/>
  <atom id="1000">                       <!-- MS schema calls the attribute atomid -->
    <address uri="sip:alice@example.com;user=ip" priority="0.800000">
      <status status="inuse"/>           <!-- open | closed | inuse | inactive -->
      <msnsubstatus substatus="onthephone"/>
      <note>On the phone</note>          <!-- optional -->
    </address>
  </atom>
  <display name="Alice"/>                 <!-- optional, MS extension -->
</presence>"#;

    /// The bodies of `shared/peers/sipp/notifier-xpidf.xml`, as (status, substatus).
    pub fn sipp(status: &str, substatus: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>
<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">
<presence>
<presentity uri="sip:alice@127.0.0.1;method=SUBSCRIBE"/>
<atom id="1000">
<address uri="sip:alice@127.0.0.1;user=ip" priority="0.800000">
<status status="{status}"/>
<msnsubstatus substatus="{substatus}"/>
</address>
</atom>
</presence>"#
        )
    }

    #[test]
    fn reference_example() {
        let x = parse(REFERENCE.as_bytes()).unwrap();
        assert_eq!(
            x.presentity.as_deref(),
            Some("sip:alice@example.com;method=SUBSCRIBE")
        );
        assert_eq!(x.display_name.as_deref(), Some("Alice"));
        assert_eq!(x.atoms.len(), 1);
        assert_eq!(x.atoms[0].id, "1000");
        let a = &x.atoms[0].addresses[0];
        assert_eq!(a.uri, "sip:alice@example.com;user=ip");
        assert_eq!(a.priority.as_deref(), Some("0.800000"));
        assert_eq!(a.status.as_deref(), Some("inuse"));
        assert_eq!(a.substatus.as_deref(), Some("onthephone"));
        assert_eq!(a.note.as_deref(), Some("On the phone"));
    }

    #[test]
    fn sipp_bodies() {
        for (status, sub) in [
            ("open", "online"),
            ("inuse", "onthephone"),
            ("closed", "offline"),
            ("open", "berightback"),
        ] {
            let x = parse(sipp(status, sub).as_bytes()).unwrap();
            let a = x.best_address().unwrap();
            assert_eq!(a.status.as_deref(), Some(status));
            assert_eq!(a.substatus.as_deref(), Some(sub));
        }
    }

    #[test]
    fn most_present_address_and_atomid() {
        let doc = r#"<presence><atom atomid="7">
              <address uri="sip:a@pc"><status status="CLOSED"/></address>
              <address uri="sip:a@phone"><status status="inactive"/></address>
              <note>atom note</note>
            </atom><atom id="8">
              <address uri="sip:a@desk"><status status="open"/><note>desk</note></address>
              <address uri="sip:a@desk2"><status status="open"/></address>
              <address uri="sip:a@x"/>
            </atom></presence>"#;
        let x = parse(doc.as_bytes()).unwrap();
        assert_eq!(x.atoms[0].id, "7");
        assert_eq!(x.atoms[0].addresses[0].status.as_deref(), Some("closed"));
        assert_eq!(x.atoms[0].addresses[1].note.as_deref(), Some("atom note"));
        assert_eq!(x.best_address().unwrap().uri, "sip:a@desk");
        assert!(Xpidf::default().best_address().is_none());
    }

    #[test]
    fn hostile() {
        let atoms = "<atom id=\"1\"/>".repeat(MAX_ITEMS + 1);
        assert!(matches!(
            parse(format!("<presence>{atoms}</presence>").as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
        let addrs = "<address uri=\"x\"/>".repeat(MAX_ITEMS / 2 + 1);
        let doc = format!("<presence><atom>{addrs}</atom><atom>{addrs}</atom></presence>");
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            parse(b"<presentity/>"),
            Err(BodyError::UnexpectedRoot { .. })
        ));
        assert!(matches!(
            parse(b"<presence><atom>"),
            Err(BodyError::Truncated)
        ));
        // The DOCTYPE's internal subset defines entities; none is ever expanded.
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE presence [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<presence><atom id="1"><address uri="x"><note>&lol3;</note></address></atom></presence>"#;
        assert_eq!(
            parse(laughs.as_bytes()),
            Err(BodyError::UnknownEntity("lol3".into()))
        );
        let in_attr = laughs
            .replace("<note>&lol3;</note>", "")
            .replace("uri=\"x\"", "uri=\"&lol3;\"");
        assert_eq!(
            parse(in_attr.as_bytes()),
            Err(BodyError::UnknownEntity("lol3".into()))
        );
    }
}
