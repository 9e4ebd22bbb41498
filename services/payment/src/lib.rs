//! The payment service: learns each order's amount and payment method from `order.placed`,
//! charges it through the payment gateway once `inventory.reserved` says the stock is held,
//! refunds it when `fulfillment.failed`, and publishes the outcomes to the PAYMENT stream.
//!
//! [`domain`] holds the rules, [`gateway`] the payment gateway, [`reactions`] the event
//! handler, [`store`] the SQL and [`http`] the API; [`build`] wires them onto the runtime.

pub mod breaker;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod reactions;
pub mod store;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use events::participants::Participant;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;

use crate::gateway::{Gateway, GatewayOptions};
use crate::reactions::Reactions;

/// Who this service is: its database, consumers and event source are named after it.
pub const IDENTITY: Identity = Identity {
    name: "payment",
    default_http_port: 8082,
};

/// The service's own tables (the runtime adds the outbox and inbox).
static MIGRATIONS: Migrator = sqlx::migrate!();

/// The payment service's settings: the shared ones plus how to reach the payment gateway.
#[derive(Debug, Clone, Parser)]
#[command(about, version)]
pub struct Config {
    #[command(flatten)]
    pub runtime: Settings,

    /// Base URL of the payment gateway (the workspace's `gateway-simulator` locally).
    #[arg(
        long,
        env = "PAYMENT_GATEWAY_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub gateway_url: String,

    /// Time limit of one gateway call.
    #[arg(long, env = "PAYMENT_GATEWAY_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub gateway_timeout: Duration,

    /// Attempts per gateway call (the first included), all with the same idempotency key.
    #[arg(long, env = "PAYMENT_GATEWAY_ATTEMPTS", default_value_t = 3)]
    pub gateway_attempts: usize,

    /// Consecutive failed calls that open the circuit breaker.
    #[arg(long, env = "PAYMENT_GATEWAY_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long an open breaker fails calls fast before letting a probe through.
    #[arg(long, env = "PAYMENT_GATEWAY_BREAKER_OPEN_FOR", default_value = "5s", value_parser = humantime::parse_duration)]
    pub breaker_open_for: Duration,
}

impl Config {
    /// Checks what parsing each setting alone cannot: a reaction holds its transaction open
    /// across a gateway call, so Postgres must not end idle transactions before the longest
    /// call is over (it would roll back the reaction and cut the connection every time).
    pub fn validate(&self) -> anyhow::Result<()> {
        let idle = self.runtime.db_idle_in_transaction_timeout;
        let longest_call = self.gateway().longest_call();
        anyhow::ensure!(
            idle > longest_call,
            "DB_IDLE_IN_TRANSACTION_TIMEOUT ({}) must exceed the longest payment gateway call \
             ({}: PAYMENT_GATEWAY_ATTEMPTS × PAYMENT_GATEWAY_TIMEOUT and the backoff between \
             them), because the payment is charged inside its transaction",
            humantime::format_duration(idle),
            humantime::format_duration(longest_call),
        );
        Ok(())
    }

    pub fn gateway(&self) -> GatewayOptions {
        GatewayOptions {
            url: self.gateway_url.clone(),
            timeout: self.gateway_timeout,
            attempts: self.gateway_attempts,
            breaker_failures: self.breaker_failures,
            breaker_open_for: self.breaker_open_for,
        }
    }
}

/// The service's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    runtime::openapi::document(http::api().into_openapi())
}

/// Connects the database (creating and migrating it) and NATS, creates the streams and binds
/// the HTTP listener. Run the result with [`Service::run_until_stopped`].
pub async fn build(config: Config) -> anyhow::Result<Service<Reactions>> {
    config.validate()?;
    let gateway = Gateway::new(&config.gateway()).context("failed to set up the gateway client")?;
    let platform = Platform::connect(IDENTITY, config.runtime, &MIGRATIONS).await?;
    let routes = http::routes(platform.pool.clone());
    Service::build(
        platform,
        Domain {
            routes,
            publishes: Participant::Payment.publishes(),
            subscriptions: Subscription::of(Participant::Payment),
            handler: Reactions { gateway },
            workers: Vec::new(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_idle_transaction_timeout_outlasts_the_longest_gateway_call() {
        let config = Config::parse_from(["payment-service"]);
        // 3 attempts of 2 s, and at most 0.2 s + 0.4 s of backoff between them.
        assert_eq!(
            config.gateway().longest_call(),
            Duration::from_millis(6_600)
        );
        config.validate().expect("the defaults are valid");
    }

    #[test]
    fn an_idle_transaction_timeout_shorter_than_a_gateway_call_is_refused() {
        let config = Config::parse_from([
            "payment-service",
            "--gateway-timeout",
            "30s",
            "--db-idle-in-transaction-timeout",
            "1m",
        ]);
        let error = config.validate().expect_err("the timeout was accepted");
        assert!(
            error.to_string().starts_with(
                "DB_IDLE_IN_TRANSACTION_TIMEOUT (1m) must exceed the longest payment gateway \
                 call (1m 30s 600ms"
            ),
            "{error}"
        );
    }
}
