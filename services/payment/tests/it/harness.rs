//! The payment service on top of `runtime::testing`: its scratch database, its handler, and
//! the events the tests deliver.

use events::Event;
use events::fulfillment::FulfillmentFailed;
use events::inventory::{InventoryReserved, StockLine};
use events::order::{OrderLine, OrderPlaced, Shipping};
use std::time::Duration;

use payment::gateway::{Gateway, GatewayOptions};
use payment::reactions::Reactions;
use runtime::consumer::HandlerError;
use runtime::testing::{self, ScratchDatabase};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

pub async fn scratch_database() -> ScratchDatabase {
    ScratchDatabase::create("payment", &MIGRATIONS).await
}

/// The handler as the service builds it, talking over HTTP to a gateway simulator of its own
/// running in this test (it lives as long as the test's runtime).
pub async fn reactions() -> Reactions {
    let simulator = gateway_simulator::Simulator::bind(gateway_simulator::Config {
        http_addr: "127.0.0.1:0".parse().expect("a socket address"),
        latency: Duration::ZERO,
        error_rate: 0.0,
        log_format: runtime::settings::LogFormat::Pretty,
    })
    .await
    .expect("failed to bind the gateway simulator");
    let url = format!(
        "http://{}",
        simulator.local_addr().expect("a bound address")
    );
    tokio::spawn(simulator.run_until_stopped(std::future::pending()));
    let gateway = Gateway::new(&GatewayOptions {
        url,
        timeout: Duration::from_secs(2),
        attempts: 3,
        breaker_failures: 5,
        breaker_open_for: Duration::from_secs(5),
    })
    .expect("a gateway client");
    Reactions { gateway }
}

/// Hands `event` to the service's handler as the consumer would; see [`testing::deliver`].
pub async fn deliver(pool: &PgPool, event: Event) -> Result<Vec<Event>, HandlerError> {
    testing::deliver(pool, &reactions().await, event).await
}

pub fn order_placed(order_id: Uuid, payment_method: &str, total_cents: i64) -> Event {
    Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: "c-1".to_owned(),
        email: "c1@example.com".to_owned(),
        items: vec![OrderLine {
            sku: "MUG".to_owned(),
            quantity: 2,
            unit_price_cents: total_cents / 2,
        }],
        total_cents,
        payment_method: payment_method.to_owned(),
        shipping: Shipping {
            country: "NL".to_owned(),
            address: "Damrak 1, Amsterdam".to_owned(),
        },
    })
}

pub fn inventory_reserved(order_id: Uuid) -> Event {
    Event::InventoryReserved(InventoryReserved {
        order_id,
        items: vec![StockLine {
            sku: "MUG".to_owned(),
            quantity: 2,
        }],
    })
}

pub fn fulfillment_failed(order_id: Uuid) -> Event {
    Event::FulfillmentFailed(FulfillmentFailed {
        order_id,
        reason: "cannot ship to AQ".to_owned(),
    })
}
