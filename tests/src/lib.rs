//! The end-to-end harness: starts a real `nats-server`, the five service binaries on fresh
//! Postgres databases, and drives them only from outside, through HTTP and NATS.
//!
//! A test starts its own [`system::System`], places orders through the typed HTTP helpers in
//! [`api`], waits for terminal states by polling with a deadline ([`polling`]), and finishes
//! with [`system::System::check_invariants`] and [`system::System::shutdown`]. The scenarios
//! live in `tests/it`; `src/bin/demo.rs` tells the same story to a person.

pub mod api;
pub mod databases;
pub mod faults;
pub mod gateway;
pub mod invariants;
pub mod jetstream;
pub mod logs;
pub mod nats_server;
pub mod otlp;
pub mod polling;
pub mod ports;
pub mod postgres_server;
pub mod system;
pub mod tokens;
