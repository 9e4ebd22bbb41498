//! What every service needs, written once: configuration, the database and its migrations,
//! JetStream setup, the transactional outbox and its relay, the inbox, the pruning of both,
//! the consumer loop with retries and dead letters, HTTP basics and the OpenAPI document,
//! Prometheus metrics, logs, and the service lifecycle.
//!
//! A service supplies its domain (an HTTP router and a [`consumer::Handler`]) and gets the
//! rest from here; see [`service::Service`].

pub mod auth;
pub mod consumer;
pub mod database;
pub mod fault;
pub mod http;
pub mod inbox;
pub mod jetstream;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod pruning;
pub mod rate_limit;
pub mod replay;
pub mod service;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
