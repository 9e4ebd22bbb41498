//! The outbox relay against a real `nats-server` and Postgres: what it publishes leaves the
//! outbox, and what the stream did not ack stays there, pending.

use std::time::Duration;

use events::order::{CancelReason, OrderCancelled};
use events::streams::Context;
use events::{Envelope, Event};
use runtime::metrics::Metrics;
use runtime::outbox::{HandedOff, Outbox, Relay, Written};
use runtime::testing::ScratchDatabase;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::nats_server::NatsServer;
use crate::polling::eventually;

/// More than one relay round (256 rows), so that draining takes several.
const PUBLISHABLE: usize = 300;

#[tokio::test]
async fn published_rows_leave_the_outbox_and_only_what_is_pending_stays() {
    // INVENTORY only: an order event has no stream to ack it, so its publish fails.
    let (_nats, jetstream) = inventory_stream().await;
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
        relay(&database, &jetstream, Duration::from_millis(50), None).run(stop.clone()),
    );
    eventually("the published rows to leave the outbox", || async {
        count(&database, "SELECT count(*) FROM outbox").await == 1
    })
    .await;
    stop_relay(stop, relay).await;

    assert_eq!(
        stored(&jetstream).await,
        PUBLISHABLE as u64,
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

/// A NATS server with the INVENTORY stream, and its JetStream context.
async fn inventory_stream() -> (NatsServer, async_nats::jetstream::Context) {
    let nats = NatsServer::start().await;
    let jetstream = nats
        .jetstream(vec![runtime::jetstream::context_stream(
            Context::Inventory,
            1,
        )])
        .await;
    (nats, jetstream)
}

fn relay(
    database: &ScratchDatabase,
    jetstream: &async_nats::jetstream::Context,
    poll_interval: Duration,
    handed_off: Option<HandedOff>,
) -> Relay {
    Relay {
        pool: database.pool.clone(),
        jetstream: jetstream.clone(),
        poll_interval,
        metrics: Metrics::new(),
        crash_after_publish_ack: None,
        handed_off,
    }
}

/// Writes `event` for a hand-off in a transaction of its own and commits; handing it off is
/// the caller's.
async fn commit_handed_off(pool: &PgPool, outbox: &Outbox, event: &Event) -> (Envelope, Written) {
    let mut tx = pool.begin().await.expect("failed to begin");
    let written = outbox
        .enqueue_handed_off(&mut tx, event, None)
        .await
        .expect("failed to enqueue");
    tx.commit().await.expect("failed to commit");
    written
}

async fn stop_relay(stop: CancellationToken, relay: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), relay)
        .await
        .expect("the relay did not stop")
        .expect("the relay panicked");
}

async fn count(database: &ScratchDatabase, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&database.pool)
        .await
        .expect("failed to count")
}

/// A product update of `sku`, the kind of event the INVENTORY stream takes.
fn product_update(sku: &str) -> Event {
    Event::ProductUpdated(events::inventory::ProductUpdated {
        sku: sku.to_owned(),
        name: format!("Product {sku}"),
        price_cents: 100,
    })
}

async fn stored(jetstream: &async_nats::jetstream::Context) -> u64 {
    jetstream
        .get_stream(Context::Inventory.stream())
        .await
        .expect("failed to get the stream")
        .info()
        .await
        .expect("failed to read the stream's info")
        .state
        .messages
}

#[tokio::test]
async fn handed_off_rows_are_published_at_once_and_rows_whose_hand_off_was_lost_after_the_grace() {
    let (_nats, jetstream) = inventory_stream().await;
    let database = ScratchDatabase::create("handoff", &Migrator::with_migrations(Vec::new())).await;
    let outbox = Outbox::with_handoff("handoff-test");
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        relay(
            &database,
            &jetstream,
            Duration::from_millis(50),
            outbox.take_handed_off(),
        )
        .run(stop.clone()),
    );
    assert!(
        outbox.take_handed_off().is_none(),
        "one relay takes the hand-off"
    );

    let mut tx = database.pool.begin().await.expect("failed to begin");
    let mut written = Written::default();
    for sku in ["a", "b", "c"] {
        let (_, row) = outbox
            .enqueue_handed_off(&mut tx, &product_update(sku), None)
            .await
            .expect("failed to enqueue");
        written.extend(row);
    }
    tx.commit().await.expect("failed to commit");
    outbox.hand_off(written);

    // Written for a hand-off that never comes, as when the writer dies after its commit.
    let (lost, never_handed_off) =
        commit_handed_off(&database.pool, &outbox, &product_update("lost")).await;
    drop(never_handed_off);

    eventually("the handed-off rows to be published", || async {
        stored(&jetstream).await == 3
    })
    .await;
    eventually("the handed-off rows to leave the outbox", || async {
        count(&database, "SELECT count(*) FROM outbox").await == 1
    })
    .await;
    let left: Uuid = sqlx::query_scalar("SELECT event_id FROM outbox WHERE relay_after > now()")
        .fetch_one(&database.pool)
        .await
        .expect("the lost row is left alone during its grace");
    assert_eq!(left, lost.id);

    // Meanwhile other writers keep handing off, so the relay is never idle for a whole poll
    // interval: the lost row must be claimed all the same.
    let writing = CancellationToken::new();
    let writer = tokio::spawn({
        let (pool, outbox, writing) = (database.pool.clone(), outbox.clone(), writing.clone());
        async move {
            let mut written: u64 = 0;
            while !writing.is_cancelled() {
                let event = product_update(&format!("busy-{written}"));
                let (_, row) = commit_handed_off(&pool, &outbox, &event).await;
                outbox.hand_off(row);
                written += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            written
        }
    });
    eventually("the lost row to be claimed after its grace", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE event_id = $1")
            .bind(lost.id)
            .fetch_one(&database.pool)
            .await
            .expect("failed to count")
            == 0
    })
    .await;
    writing.cancel();
    let busy = writer.await.expect("the writer panicked");
    eventually("every row to leave the outbox", || async {
        count(&database, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    assert_eq!(
        stored(&jetstream).await,
        4 + busy,
        "each row is in the stream once"
    );
    stop_relay(stop, relay).await;
}

#[tokio::test]
async fn a_stopping_relay_publishes_rows_still_in_their_grace() {
    let (_nats, jetstream) = inventory_stream().await;
    let database =
        ScratchDatabase::create("handoff_stop", &Migrator::with_migrations(Vec::new())).await;
    let outbox = Outbox::with_handoff("handoff-stop-test");
    let (_, not_handed_off) =
        commit_handed_off(&database.pool, &outbox, &product_update("a")).await;
    drop(not_handed_off);

    let stop = CancellationToken::new();
    stop.cancel();
    tokio::time::timeout(
        Duration::from_secs(30),
        // Polling far beyond the test: only the drain at stop can publish the row.
        relay(
            &database,
            &jetstream,
            Duration::from_secs(3600),
            outbox.take_handed_off(),
        )
        .run(stop),
    )
    .await
    .expect("the relay did not stop");
    assert_eq!(stored(&jetstream).await, 1);
    assert_eq!(count(&database, "SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn handed_off_rows_whose_publish_failed_are_due_at_once() {
    // INVENTORY only: an order event has no stream to ack it, so its publish fails.
    let (_nats, jetstream) = inventory_stream().await;
    let database =
        ScratchDatabase::create("handoff_failed", &Migrator::with_migrations(Vec::new())).await;
    let outbox = Outbox::with_handoff("handoff-failed-test");
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        relay(
            &database,
            &jetstream,
            Duration::from_secs(3600),
            outbox.take_handed_off(),
        )
        .run(stop.clone()),
    );
    let unroutable = Event::OrderCancelled(OrderCancelled {
        order_id: Uuid::now_v7(),
        reason: CancelReason::CustomerRequest,
    });
    let (_, row) = commit_handed_off(&database.pool, &outbox, &unroutable).await;
    outbox.hand_off(row);

    eventually("the failed row to be due", || async {
        count(
            &database,
            "SELECT count(*) FROM outbox WHERE relay_after <= now()",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM outbox WHERE relay_after < created_at + interval '3 seconds'"
        )
        .await,
        1,
        "made due by the failed hand-off, not by its grace running out"
    );
    stop_relay(stop, relay).await;
}
