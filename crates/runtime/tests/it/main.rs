//! The runtime's integration tests, against a real `nats-server` (`NATS_SERVER_BIN`, else the
//! one on `PATH`; at least 2.10) and Postgres (`TEST_POSTGRES_URL`, else the local server).
//! They need the `testing` feature: `cargo test -p runtime --all-features`.
#![cfg(feature = "testing")]

mod inbox;
mod nats_server;
mod ordering;
mod polling;
mod pruning;
mod relay;
