//! Integration tests of the notification service against a real Postgres: its reactions run in
//! a transaction as the consumer runs them, and its HTTP API answers from what they stored.
//! Each test gets its own database on `TEST_POSTGRES_URL` (else the local trust-auth server).

mod api;
mod harness;
mod openapi;
mod reactions;
