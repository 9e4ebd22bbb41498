//! The outbox relay against a real `nats-server` and Postgres: what it publishes leaves the
//! outbox, and what the stream did not ack stays there, pending.

use std::time::Duration;

use events::Event;
use events::order::{CancelReason, OrderCancelled};
use events::streams::Context;
use runtime::metrics::Metrics;
use runtime::outbox::{Outbox, Relay};
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::nats_server::NatsServer;
use crate::polling::eventually;

/// More than one relay round (256 rows), so that draining takes several.
const PUBLISHABLE: usize = 300;

#[tokio::test]
async fn published_rows_leave_the_outbox_and_only_what_is_pending_stays() {
    let nats = NatsServer::start().await;
    // INVENTORY only: an order event has no stream to ack it, so its publish fails.
    let jetstream = nats
        .jetstream(vec![runtime::jetstream::context_stream(
            Context::Inventory,
            1,
        )])
        .await;
    let database = ScratchDatabase::create("relay", &Migrator::with_migrations(Vec::new())).await;

    let outbox = Outbox::new("relay-test");
    let mut tx = database.pool.begin().await.expect("failed to begin");
    runtime::testing::enqueue_product_updates(&mut tx, &outbox, PUBLISHABLE).await;
    let unroutable = Event::OrderCancelled(OrderCancelled {
        order_id: Uuid::now_v7(),
        reason: CancelReason::CustomerRequest,
    });
    let unroutable_id = outbox
        .enqueue(&mut tx, &unroutable, None)
        .await
        .expect("failed to enqueue")
        .id;
    tx.commit().await.expect("failed to commit");

    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        Relay {
            pool: database.pool.clone(),
            jetstream: jetstream.clone(),
            poll_interval: Duration::from_millis(50),
            metrics: Metrics::new(),
            crash_after_publish_ack: None,
        }
        .run(stop.clone()),
    );
    eventually("the published rows to leave the outbox", || async {
        count(&database, "SELECT count(*) FROM outbox").await == 1
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), relay)
        .await
        .expect("the relay did not stop")
        .expect("the relay panicked");

    let stored = jetstream
        .get_stream(Context::Inventory.stream())
        .await
        .expect("failed to get the stream")
        .info()
        .await
        .expect("failed to read the stream's info")
        .state
        .messages;
    assert_eq!(
        stored, PUBLISHABLE as u64,
        "every publishable row is in the stream"
    );
    let (left, published_at): (Uuid, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT event_id, published_at FROM outbox")
            .fetch_one(&database.pool)
            .await
            .expect("failed to read the outbox");
    assert_eq!(left, unroutable_id, "only the unacked row stays");
    assert_eq!(published_at, None, "the row left behind is still pending");
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        1,
        "the pending query sees it"
    );
}

async fn count(database: &ScratchDatabase, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&database.pool)
        .await
        .expect("failed to count")
}
