//! The inventory service: owns products and their stock, reserves all lines of an order or
//! none, releases reservations on compensation and turns them into deductions when the
//! order completes.

pub mod domain;
pub mod http;
pub mod reactions;
pub mod store;

use events::participants::Participant;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;

pub const IDENTITY: Identity = Identity {
    name: "inventory",
    default_http_port: 8081,
};

static MIGRATIONS: Migrator = sqlx::migrate!();

/// The service's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    runtime::openapi::document(http::api().into_openapi())
}

/// Connects, migrates and binds the inventory service, ready to run.
pub async fn build(settings: Settings) -> anyhow::Result<Service<reactions::Reactions>> {
    let platform = Platform::connect(IDENTITY, settings, &MIGRATIONS).await?;
    let routes = http::routes(http::AppState {
        pool: platform.pool.clone(),
        outbox: platform.outbox.clone(),
    });
    let domain = Domain {
        routes,
        publishes: Participant::Inventory.publishes(),
        subscriptions: Subscription::of(Participant::Inventory),
        handler: reactions::Reactions,
        workers: Vec::new(),
    };
    Service::build(platform, domain).await
}
