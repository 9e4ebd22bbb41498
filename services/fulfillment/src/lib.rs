//! The fulfillment service: learns where each order ships to from `order.placed`, books one
//! shipment per order once `payment.authorized` arrives (or fails it when no carrier serves
//! the country), and publishes the outcome to the FULFILLMENT stream.
//!
//! [`domain`] holds the rules, [`reactions`] the event handler, [`store`] the SQL and
//! [`http`] the API; [`build`] wires them onto the runtime.

pub mod domain;
pub mod http;
pub mod reactions;
pub mod store;

use events::participants::Participant;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;

use crate::reactions::Reactions;

/// Who this service is: its database, consumers and event source are named after it.
pub const IDENTITY: Identity = Identity {
    name: "fulfillment",
    default_http_port: 8083,
};

/// The service's own tables (the runtime adds the outbox and inbox).
static MIGRATIONS: Migrator = sqlx::migrate!();

/// The service's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    runtime::openapi::document(http::api().into_openapi())
}

/// Connects the database (creating and migrating it) and NATS, creates the streams and binds
/// the HTTP listener. Run the result with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> anyhow::Result<Service<Reactions>> {
    let platform = Platform::connect(IDENTITY, settings, &MIGRATIONS).await?;
    let routes = http::routes(platform.pool.clone());
    Service::build(
        platform,
        Domain {
            routes,
            publishes: Participant::Fulfillment.publishes(),
            subscriptions: Subscription::of(Participant::Fulfillment),
            handler: Reactions {},
            workers: Vec::new(),
        },
    )
    .await
}
