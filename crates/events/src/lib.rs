//! The contract between the services: the CloudEvents envelope, one typed and versioned
//! struct per event in the catalogue, and the subjects and streams they travel on.
//!
//! This crate does no IO and knows nothing of NATS, Postgres or HTTP; services convert
//! these wire types into their own domain types at the edge. `schemas/` is generated from it
//! (`contracts`, `asyncapi`) and guarded by the compatibility rules in `compat`.

pub mod asyncapi;
pub mod catalogue;
pub mod compat;
pub mod contracts;
pub mod envelope;
pub mod fulfillment;
pub mod inventory;
pub mod order;
pub mod participants;
pub mod payment;
pub mod streams;
pub mod validation;

pub use catalogue::{DecodeError, Event};
pub use envelope::Envelope;
