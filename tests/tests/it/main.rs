//! The end-to-end saga suite: every test starts its own NATS server, five service processes
//! and databases (see the `e2e` library), drives them over HTTP and NATS, and checks terminal
//! states and the cross-service invariants. Run `cargo build --workspace --bins` first.

mod api_fuzz;
mod api_security;
mod audit;
mod bench;
mod cancellation;
mod cluster;
mod concurrency;
mod crash;
mod database_roles;
mod dead_letters;
mod duplicates;
mod evolution;
mod faults;
mod gateway;
mod hardening;
mod harness;
mod idempotency;
mod metrics;
mod nats_permissions;
mod outbox_relay;
mod projection;
mod redrive;
mod replay;
mod saga_paths;
mod startup;
mod traces;
mod validation;
