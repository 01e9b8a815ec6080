//! The `sip` connector: SUBSCRIBE/NOTIFY presence and dialog state from SIP presence
//! servers and phones, inbound PUBLISH, and PUBLISH for commands (reference `sip.md`).
//!
//! | module | role |
//! |---|---|
//! | [`message`] | our SIP message type: bounded parser, builder, header accessors |
//! | [`digest`] | RFC 8760 digest (MD5, SHA-256, -sess), 401 and 407 |
//! | [`stack`] | transport + transactions behind the `SipStack` trait (rsipstack 0.7.14) |
//! | [`body`] | NOTIFY body parsers by Content-Type (PIDF, XPIDF, dialog-info, MWI, RLMI) |
//! | [`normalize`] | the pure §11 mapper and the PIDF we publish |
//! | [`subscription`] | RFC 6665 subscriber: dialogs, refresh, Timer N, terminated reasons |
//! | [`presentity`] | per-user presence + dialog + MWI combined |
//! | [`publish`] | commands: PUBLISH with ETag refresh and 412 recovery |
//! | [`esc`] | inbound PUBLISH (we as event state compositor) |
//! | [`connector`] | the connector task and the request dispatcher |

pub mod body;
pub mod config;
pub mod connector;
pub mod digest;
pub mod esc;
pub mod message;
pub mod normalize;
pub mod presentity;
pub mod publish;
pub mod stack;
pub mod subscription;

pub use connector::SipCore;

#[cfg(test)]
mod tests;
