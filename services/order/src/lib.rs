//! The order service: accepts orders over HTTP, starts their saga with `order.placed`, follows
//! the participants' outcomes to a terminal state, cancels on request or at the saga
//! deadline, and keeps its own catalogue read model.

pub mod cancellation;
pub mod catalogue;
pub mod dashboard;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod reactions;
pub mod store;

use std::time::Duration;

use clap::Parser;
use events::participants::Participant;
use runtime::consumer::Subscription;
use runtime::service::{Domain, Platform, Service, Worker};
use runtime::settings::{Identity, Settings};
use sqlx::migrate::Migrator;
use utoipa_axum::router::OpenApiRouter;

pub const IDENTITY: Identity = Identity {
    name: "order",
    default_http_port: 8080,
};

static MIGRATIONS: Migrator = sqlx::migrate!();

/// The order service's settings: the shared ones plus its saga deadline.
#[derive(Debug, Clone, Parser)]
#[command(about, version)]
pub struct Config {
    #[command(flatten)]
    pub runtime: Settings,

    /// An order not terminal this long after it was placed is cancelled with reason
    /// `deadline_exceeded`.
    #[arg(long, env = "ORDER_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,

    /// How often the deadline timer looks for overdue orders.
    #[arg(long, env = "ORDER_DEADLINE_SWEEP", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub deadline_sweep: Duration,

    /// The trace viewer the saga overview (`GET /dashboard`) links each order to, as
    /// `<url>/trace/<trace id>`; Jaeger's UI by default.
    #[arg(long, env = "TRACE_UI_URL", default_value = "http://localhost:16686")]
    pub trace_ui_url: String,

    /// ISO 4217 code of the catalogue's prices, and so of every order.
    #[arg(long, env = "CURRENCY", default_value = "EUR", value_parser = parse_currency)]
    pub currency: String,

    /// A discount on every order line of at least a quantity, as `<min quantity>:<percent>`
    /// (`10:5` takes 5% off lines of 10 units or more); none when unset.
    #[arg(long, env = "VOLUME_DISCOUNT", value_parser = domain::VolumeDiscount::parse)]
    pub volume_discount: Option<domain::VolumeDiscount>,

    /// The version of `order.placed` to publish: 2, or 1 while a consumer that reads only v1
    /// is still deployed (v1 carries euro orders without discounts only).
    #[arg(long, env = "ORDER_PLACED_VERSION", default_value = "2")]
    pub order_placed_version: domain::PlacedVersion,

    /// What to do; without a command, run the service.
    #[command(subcommand)]
    pub command: Option<Command>,
}

fn parse_currency(text: &str) -> Result<String, String> {
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an ISO 4217 code such as EUR"))
    }
}

/// One-off operations on the service's data, run with the service's own settings.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Rebuilds the catalogue read model from the start of the INVENTORY stream into a fresh
    /// table and switches it in; the running service keeps serving meanwhile.
    RebuildCatalogue,
}

/// Runs a [`Command`] and prints what it did.
pub async fn run_command(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::RebuildCatalogue => {
            runtime::replay::rebuild_command(
                IDENTITY,
                config.runtime,
                &MIGRATIONS,
                &catalogue::CatalogueProjection,
            )
            .await
        }
    }
}

/// The service's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = http::api().into_openapi();
    api.merge(dashboard::api().into_openapi());
    runtime::openapi::document(api)
}

/// The service's own HTTP routes, documented; the runtime adds the shared ones.
pub fn routes(state: http::AppState, trace_ui_url: String) -> OpenApiRouter {
    let pool = state.pool.clone();
    http::routes(state).merge(dashboard::routes(pool, trace_ui_url))
}

/// Connects, migrates and binds the order service, ready to run.
pub async fn build(config: Config) -> anyhow::Result<Service<reactions::Reactions>> {
    let pricing = domain::Pricing {
        currency: config.currency,
        volume_discount: config.volume_discount,
    };
    if !config.order_placed_version.can_carry(&pricing) {
        anyhow::bail!(
            "ORDER_PLACED_VERSION=1 publishes order.placed v1, which has neither a currency (it \
             is {}) nor discounts: set CURRENCY={} and unset VOLUME_DISCOUNT, or publish v2",
            events::order::V1_CURRENCY,
            events::order::V1_CURRENCY,
        );
    }
    let platform = Platform::connect(IDENTITY, config.runtime, &MIGRATIONS).await?;
    let saga_metrics = metrics::SagaMetrics::register(&platform.metrics, platform.pool.clone());
    let routes = routes(
        http::AppState {
            pool: platform.pool.clone(),
            outbox: platform.outbox.clone(),
            deadline: config.deadline,
            pricing,
            placed_version: config.order_placed_version,
        },
        config.trace_ui_url,
    );
    let (pool, outbox) = (platform.pool.clone(), platform.outbox.clone());
    let deadline_timer: Worker = Box::new(move |stop| {
        Box::pin(cancellation::sweep_deadlines(
            pool,
            outbox,
            config.deadline_sweep,
            stop,
        ))
    });
    let domain = Domain {
        routes,
        publishes: Participant::Order.publishes(),
        subscriptions: Subscription::of(Participant::Order),
        handler: reactions::Reactions {
            metrics: saga_metrics,
        },
        workers: vec![deadline_timer],
    };
    Service::build(platform, domain).await
}
