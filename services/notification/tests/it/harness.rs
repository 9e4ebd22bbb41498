//! A fresh, migrated database per test (dropped when the test ends, pass or fail), the events
//! the tests deliver, and a way to deliver one as the consumer would.

use std::time::Duration;

use chrono::Utc;
use events::Event;
use events::envelope::{Envelope, Metadata};
use events::fulfillment::FulfillmentScheduled;
use events::order::{
    OrderCompleted, OrderLine, OrderPlaced, OrderRejected, RejectReason, Shipping,
};
use notification::reactions::Reactions;
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database of the service's own, with the runtime's tables and the service's.
pub struct TestDatabase {
    pub pool: PgPool,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let name = format!("scratch_notification_{}", Uuid::now_v7().simple());
        let pool = runtime::database::connect_and_migrate(
            &format!("{}/{name}", server_url()),
            4,
            &MIGRATIONS,
        )
        .await
        .expect("failed to create the test database");
        TestDatabase { pool, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and blocking inside the test's runtime would panic: use a thread
        // with a runtime of its own. FORCE closes the pool's connections.
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection =
                    PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("failed to drop test database {}", self.name);
        }
    }
}

/// Hands `event` to the service's handler in a transaction, committed if the handler
/// succeeds, as the consumer does. Every delivery has a new event id, as a duplicate
/// published twice would.
pub async fn deliver(pool: &PgPool, event: Event) -> Result<Vec<Event>, HandlerError> {
    let incoming = Incoming {
        envelope: Envelope::wrap(
            &event,
            Metadata {
                id: Uuid::now_v7(),
                source: "/tests".to_owned(),
                time: Utc::now(),
                correlationid: event.key(),
                causationid: None,
            },
        ),
        subject: event.subject(),
        event,
        delivery: 1,
    };
    let reactions = Reactions {};
    let mut tx = pool.begin().await.expect("failed to begin");
    let outcome = reactions.handle(&mut tx, &incoming).await;
    if outcome.is_ok() {
        tx.commit().await.expect("failed to commit");
    }
    outcome
}

/// Delivers `events` concurrently while the test holds the order's row lock (`lock`, a
/// `SELECT ... FOR UPDATE` taking the order id), and lets go only once every delivery waits on
/// a lock: however the handler is written, the deliveries then overlap.
pub async fn deliver_concurrently(
    pool: &PgPool,
    lock: &'static str,
    order_id: Uuid,
    events: Vec<Event>,
) -> Vec<Result<Vec<Event>, HandlerError>> {
    let mut holder = pool.begin().await.expect("failed to begin");
    sqlx::query(lock)
        .bind(order_id)
        .execute(&mut *holder)
        .await
        .expect("failed to lock the order");
    let expected = events.len() as i64;
    let deliveries: Vec<_> = events
        .into_iter()
        .map(|event| {
            let pool = pool.clone();
            tokio::spawn(async move { deliver(&pool, event).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("failed to look at pg_stat_activity");
        if waiting >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {waiting} of {expected} deliveries ever waited on a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder
        .rollback()
        .await
        .expect("failed to let go of the order");
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.expect("a delivery panicked"));
    }
    outcomes
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
