//! SIP presence (RFC 3856/6665 subscriber, RFC 3903 publisher).
//!
//! The pure edge: [`body`] parses NOTIFY bodies (PIDF, XPIDF, dialog-info, message-summary,
//! RLMI multipart) and [`normalize`] maps them to the normalized model and builds the PIDF
//! we PUBLISH. Neither does I/O, so both are table-tested and fuzzed (`fuzz/`).

pub mod body;
pub mod normalize;
