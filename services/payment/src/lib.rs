//! The payment service: learns each order's amount and payment method from `order.placed`,
//! charges it through the payment gateway once `inventory.reserved` says the stock is held,
//! refunds it when `fulfillment.failed`, and publishes the outcomes to the PAYMENT stream.
//!
//! [`domain`] holds the rules, [`gateway`] the payment gateway, [`reactions`] the event
//! handler, [`store`] the SQL and [`http`] the API; [`build`] wires them onto the runtime.

pub mod domain;
pub mod gateway;
pub mod http;
pub mod reactions;
pub mod store;

use events::streams::Context;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;

use crate::gateway::Gateway;
use crate::reactions::Reactions;

/// Who this service is: its database, consumers and event source are named after it.
pub const IDENTITY: Identity = Identity {
    name: "payment",
    default_http_port: 8082,
};

/// The service's own tables (the runtime adds the outbox and inbox).
static MIGRATIONS: Migrator = sqlx::migrate!();

/// Connects the database (creating and migrating it) and NATS, creates the streams and binds
/// the HTTP listener. Run the result with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> anyhow::Result<Service<Reactions>> {
    let platform = Platform::connect(IDENTITY, settings, &MIGRATIONS).await?;
    let routes = http::routes(platform.pool.clone());
    Service::build(
        platform,
        Domain {
            routes,
            publishes: Some(Context::Payment),
            subscriptions: vec![
                Subscription {
                    stream: Context::Order,
                    event_types: vec!["order.placed", "order.cancellation_requested"],
                },
                Subscription {
                    stream: Context::Inventory,
                    event_types: vec!["inventory.reserved"],
                },
                Subscription {
                    stream: Context::Fulfillment,
                    event_types: vec!["fulfillment.failed"],
                },
            ],
            handler: Reactions {
                gateway: Gateway::simulated(),
            },
            workers: Vec::new(),
        },
    )
    .await
}
