//! The fulfillment service on top of `runtime::testing`: its scratch database, its handler, and
//! the events the tests deliver.

use events::Event;
use events::order::{OrderLine, OrderPlaced, Shipping};
use events::payment::PaymentAuthorized;
use fulfillment::reactions::Reactions;
use runtime::consumer::HandlerError;
use runtime::testing::{self, ScratchDatabase};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

pub async fn scratch_database() -> ScratchDatabase {
    ScratchDatabase::create("fulfillment", &MIGRATIONS).await
}

/// The handler as the service builds it.
pub fn reactions() -> Reactions {
    Reactions {}
}

/// Hands `event` to the service's handler as the consumer would; see [`testing::deliver`].
pub async fn deliver(pool: &PgPool, event: Event) -> Result<Vec<Event>, HandlerError> {
    testing::deliver(pool, &reactions(), event).await
}

pub fn order_placed(order_id: Uuid, country: &str) -> Event {
    Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: "c-1".to_owned(),
        email: "c1@example.com".to_owned(),
        items: vec![OrderLine {
            sku: "MUG".to_owned(),
            quantity: 2,
            unit_price_cents: 1250,
        }],
        total_cents: 2500,
        payment_method: "tok_ok".to_owned(),
        shipping: Shipping {
            country: country.to_owned(),
            address: "Damrak 1".to_owned(),
        },
    })
}

pub fn payment_authorized(order_id: Uuid) -> Event {
    Event::PaymentAuthorized(PaymentAuthorized {
        order_id,
        amount_cents: 2500,
        authorization_id: format!("auth_{}", order_id.simple()),
    })
}
