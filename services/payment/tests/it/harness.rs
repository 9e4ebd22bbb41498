//! The payment service on top of `runtime::testing`: its scratch database, its handler, and
//! the events the tests deliver.

use events::Event;
use events::fulfillment::FulfillmentFailed;
use events::inventory::{InventoryReserved, StockLine};
use events::order::{OrderLine, OrderPlaced, Shipping};
use payment::gateway::Gateway;
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

/// The handler as the service builds it, with the simulated card gateway.
pub fn reactions() -> Reactions {
    Reactions {
        gateway: Gateway::simulated(),
    }
}

/// Hands `event` to the service's handler as the consumer would; see [`testing::deliver`].
pub async fn deliver(pool: &PgPool, event: Event) -> Result<Vec<Event>, HandlerError> {
    testing::deliver(pool, &reactions(), event).await
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
