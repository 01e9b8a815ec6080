//! Cisco IM&P Presence Web Service (PWS): log in, register a callback endpoint, subscribe,
//! and on every callback fetch the contacts that changed.
//!
//! The folder follows the connector layout. The pure edge comes first: [`xml`] parses and
//! builds the REST bodies and [`normalize`] maps PWS states to the normalized model and
//! back. Neither does I/O, so both are table-tested and fuzzed (`fuzz/`).

pub mod client;
pub mod config;
pub mod connector;
pub mod normalize;
pub mod xml;
