//! Integration tests of the order service against a real Postgres. Each test gets its own
//! database on `TEST_POSTGRES_URL` (else the local trust-auth server).

mod dashboard;
mod openapi;
mod ownership;
