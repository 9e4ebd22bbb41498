//! Integration tests of the inventory service against a real Postgres. Each test gets its
//! own database on `TEST_POSTGRES_URL` (else the local trust-auth server).

mod openapi;
mod reactions;
