//! A consumer added later reads history from the start: a small analytics projection, created
//! after orders have already ended, counts every saga outcome the `ORDER` stream holds and
//! then keeps counting live ones, without any change to a producer. It uses the same
//! consumer loop as the services (`runtime::consumer`), with a database of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use e2e::api::{OrderRequest, PAYMENT_DECLINED};
use e2e::polling::{Check, SAGA_TIMEOUT, wait_for};
use e2e::system::{System, SystemOptions};
use events::Event;
use events::streams::Context;
use runtime::consumer::{
    Consumer, ConsumerHealth, ConsumerOptions, Handler, HandlerError, Incoming, Subscription,
};
use runtime::metrics::Metrics;
use runtime::outbox::Outbox;
use runtime::testing::ScratchDatabase;
use sqlx::PgConnection;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

/// Saga outcomes counted by terminal status.
struct Analytics;

impl Handler for Analytics {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        let outcome = match &incoming.event {
            Event::OrderCompleted(_) => "completed",
            Event::OrderRejected(_) => "rejected",
            Event::OrderCancelled(_) => "cancelled",
            _ => return Ok(vec![]),
        };
        sqlx::query(
            "INSERT INTO outcomes (outcome, orders) VALUES ($1, 1) \
             ON CONFLICT (outcome) DO UPDATE SET orders = outcomes.orders + 1",
        )
        .bind(outcome)
        .execute(tx)
        .await?;
        Ok(vec![])
    }
}

async fn outcomes(database: &ScratchDatabase) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT outcome, orders FROM outcomes")
        .fetch_all(&database.pool)
        .await?;
    Ok(rows.into_iter().collect())
}

async fn wait_outcomes(database: &ScratchDatabase, expected: &[(&str, i64)]) -> anyhow::Result<()> {
    let expected: BTreeMap<String, i64> = expected
        .iter()
        .map(|(outcome, orders)| ((*outcome).to_owned(), *orders))
        .collect();
    wait_for("the analytics projection", SAGA_TIMEOUT, || async {
        let counted = outcomes(database).await?;
        Ok(if counted == expected {
            Check::Done(())
        } else {
            Check::NotYet(format!("{counted:?}, expected {expected:?}"))
        })
    })
    .await
}

#[tokio::test]
async fn a_projection_added_later_reads_the_whole_history_then_keeps_up() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("HISTORY-MUG", "Mug", 700, 10)
        .await?;
    system
        .put_product_and_wait_catalogue("HISTORY-NONE", "Sold out", 700, 0)
        .await?;
    let history = [
        OrderRequest::new("HISTORY-MUG", 1),
        OrderRequest::new("HISTORY-MUG", 1).with_payment_method(PAYMENT_DECLINED),
        OrderRequest::new("HISTORY-NONE", 1),
    ];
    for request in &history {
        let order_id = system.place_accepted_order(request).await?;
        system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    }

    // Added now, after those sagas ended: nothing about it existed when they ran.
    let database = ScratchDatabase::create("analytics", &Migrator::DEFAULT).await;
    sqlx::query("CREATE TABLE outcomes (outcome TEXT PRIMARY KEY, orders BIGINT NOT NULL)")
        .execute(&database.pool)
        .await?;
    let jetstream = system.jetstream().await?;
    let consumer = Consumer {
        name: "analytics-order".to_owned(),
        subscription: Subscription {
            stream: Context::Order,
            event_types: vec!["order.completed", "order.rejected", "order.cancelled"],
        },
        pool: database.pool.clone(),
        jetstream,
        outbox: Outbox::new("analytics"),
        handler: Arc::new(Analytics),
        options: ConsumerOptions {
            concurrency: 4,
            batch: 32,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            crash_after_commit: None,
        },
        metrics: Metrics::new(),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone(), Arc::new(ConsumerHealth::default())));

    wait_outcomes(
        &database,
        &[("completed", 1), ("cancelled", 1), ("rejected", 1)],
    )
    .await?;

    // And then it keeps up with new sagas.
    let order_id = system
        .place_accepted_order(&OrderRequest::new("HISTORY-MUG", 2))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(
        order.status == "completed",
        "the new order ended {}",
        order.outcome()
    );
    wait_outcomes(
        &database,
        &[("completed", 2), ("cancelled", 1), ("rejected", 1)],
    )
    .await?;

    stop.cancel();
    running.await?;
    system.shutdown().await
}
