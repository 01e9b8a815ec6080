//! SIP presence connector (subscriber of RFC 6665 presence, publisher of RFC 3903).

pub mod digest;
pub mod message;
