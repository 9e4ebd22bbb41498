//! The notification service on top of `runtime::testing`: its scratch database, its handler, and
//! the events the tests deliver.

use events::Event;
use events::fulfillment::FulfillmentScheduled;
use events::order::{
    OrderCompleted, OrderLine, OrderPlaced, OrderRejected, RejectReason, Shipping,
};
use notification::reactions::Reactions;
use runtime::consumer::HandlerError;
use runtime::testing::{self, ScratchDatabase};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

pub async fn scratch_database() -> ScratchDatabase {
    ScratchDatabase::create("notification", &MIGRATIONS).await
}

/// The handler as the service builds it.
pub fn reactions() -> Reactions {
    Reactions {}
}

/// Hands `event` to the service's handler as the consumer would; see [`testing::deliver`].
pub async fn deliver(pool: &PgPool, event: Event) -> Result<Vec<Event>, HandlerError> {
    testing::deliver(pool, &reactions(), event).await
}

pub fn order_placed(order_id: Uuid, email: &str) -> Event {
    Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: "c-1".to_owned(),
        email: email.to_owned(),
        items: vec![OrderLine {
            sku: "MUG".to_owned(),
            quantity: 2,
            unit_price_cents: 1250,
        }],
        total_cents: 2500,
        payment_method: "tok_ok".to_owned(),
        shipping: Shipping {
            country: "NL".to_owned(),
            address: "Damrak 1".to_owned(),
        },
    })
}

pub fn fulfillment_scheduled(order_id: Uuid) -> Event {
    Event::FulfillmentScheduled(FulfillmentScheduled {
        order_id,
        shipment_id: Uuid::now_v7(),
        carrier: "PostNL".to_owned(),
    })
}

pub fn order_completed(order_id: Uuid) -> Event {
    Event::OrderCompleted(OrderCompleted { order_id })
}

pub fn order_rejected(order_id: Uuid) -> Event {
    Event::OrderRejected(OrderRejected {
        order_id,
        reason: RejectReason::OutOfStock,
    })
}
