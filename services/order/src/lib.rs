//! The order service: accepts orders over HTTP, starts their saga with `order.placed`, follows
//! the participants' outcomes to a terminal state, and keeps its own catalogue read model.

pub mod domain;
pub mod http;
pub mod reactions;
pub mod store;

use events::streams::Context;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;

pub const IDENTITY: Identity = Identity {
    name: "order",
    default_http_port: 8080,
};

static MIGRATIONS: Migrator = sqlx::migrate!();

/// Connects, migrates and binds the order service, ready to run.
pub async fn build(settings: Settings) -> anyhow::Result<Service<reactions::Reactions>> {
    let platform = Platform::connect(IDENTITY, settings, &MIGRATIONS).await?;
    let routes = http::routes(http::AppState {
        pool: platform.pool.clone(),
        outbox: platform.outbox.clone(),
    });
    let domain = Domain {
        routes,
        publishes: Some(Context::Order),
        subscriptions: vec![
            Subscription {
                stream: Context::Inventory,
                event_types: vec![
                    "inventory.product_updated",
                    "inventory.reserved",
                    "inventory.rejected",
                    "inventory.released",
                ],
            },
            Subscription {
                stream: Context::Payment,
                event_types: vec!["payment.authorized", "payment.declined", "payment.refunded"],
            },
            Subscription {
                stream: Context::Fulfillment,
                event_types: vec!["fulfillment.scheduled", "fulfillment.failed"],
            },
        ],
        handler: reactions::Reactions,
    };
    Service::build(platform, domain).await
}
