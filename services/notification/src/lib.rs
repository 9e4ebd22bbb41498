//! The notification service: keeps each order's contact from `order.placed` and tells the
//! customer, exactly once per kind, that their order was placed, its shipment scheduled, or
//! the order completed, cancelled or rejected. It publishes nothing.
//!
//! [`domain`] holds the rules, [`reactions`] the event handler, [`store`] the SQL and
//! [`http`] the API; [`build`] wires them onto the runtime.

pub mod contacts;
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
    name: "notification",
    default_http_port: 8084,
};

/// The service's own tables (the runtime adds the outbox and inbox).
static MIGRATIONS: Migrator = sqlx::migrate!();

/// The notification service's settings: the shared ones, and an optional command.
#[derive(Debug, Clone, clap::Parser)]
#[command(about, version)]
pub struct Config {
    #[command(flatten)]
    pub runtime: Settings,

    /// What to do; without a command, run the service.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off operations on the service's data, run with the service's own settings.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Rebuilds the contacts read model from the start of the ORDER stream into a fresh table
    /// and switches it in; the running service keeps going meanwhile.
    RebuildContacts,
}

/// Runs a [`Command`] and prints what it did.
pub async fn run_command(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::RebuildContacts => {
            runtime::replay::rebuild_command(
                IDENTITY,
                settings,
                &MIGRATIONS,
                &contacts::ContactsProjection,
            )
            .await
        }
    }
}

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
            publishes: Participant::Notification.publishes(),
            subscriptions: Subscription::of(Participant::Notification),
            handler: Reactions {},
            workers: Vec::new(),
        },
    )
    .await
}
