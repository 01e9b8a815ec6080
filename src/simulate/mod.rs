//! Protocol-faithful simulators of the presence servers the connectors talk to.
//!
//! They are product code, not test fixtures: the integration tests, the demo and the benches
//! all start one in-process on a free port and point a real connector at it. Each simulator
//! speaks the wire protocol exactly as the protocol reference describes it (paths, headers,
//! status codes, XML bodies, error codes, notification behaviour) and adds a small JSON
//! control API under `/_sim/` plus a Rust handle to change user states and inject faults.
//!
//! - [`pws`]: Cisco IM&P Presence Web Service (REST/XML, notification callbacks).
//! - [`sip`]: a Kamailio-like SIP presence server (SUBSCRIBE/NOTIFY, PUBLISH), control API
//!   on its own HTTP port.

pub mod graph;
pub mod pws;
pub mod sip;
pub mod ucwa;
