//! Microsoft UCWA 2.0 (Lync / Skype for Business): sign in, create an application, keep
//! its event channel (pending GET) open, subscribe to contacts' presence, and on every
//! `contactPresence` event fetch the contact's presence. Commands set the presence of the
//! signed-in user only (UCWA cannot set anyone else's).
//!
//! The folder follows the connector layout. The pure edge comes first: [`json`] parses the
//! HAL-style JSON the server sends and builds the request bodies, and [`normalize`] maps
//! UCWA availabilities and activities to the normalized model and back. Neither does I/O,
//! so both are table-tested and fuzzed (`fuzz/`, target `ucwa_json`).
//!
//! UCWA is hypermedia: the connector never builds a URL, it follows `_links.*.href` from
//! autodiscovery on, which is why the parsers hand back links by relation name.

pub mod client;
pub mod config;
pub mod connector;
pub mod json;
pub mod normalize;
