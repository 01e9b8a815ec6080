//! Microsoft Graph presence (Teams): app-only token for `getPresencesByUserId` reads and
//! set* commands, a delegated subscriber account per shard of ≤650 users for the presence
//! subscription, webhook + lifecycle notifications (reference `graph.md`).
//!
//! The pure edge comes first: [`json`] parses what Graph sends (tokens, presences, change
//! and lifecycle notifications, subscriptions, error envelopes, `Retry-After`) and builds
//! the request bodies; [`normalize`] maps Graph availability/activity pairs to the
//! normalized model and validates command pairs. Neither does I/O, so both are table-tested
//! and fuzzed (`fuzz/`, target `graph_json`).

pub mod config;
pub mod connector;
pub mod crypto;
pub mod json;
pub mod normalize;
