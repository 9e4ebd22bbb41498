//! The pruner against a real Postgres: inbox rows older than the retention go, in batches,
//! and newer ones stay; outbox rows an earlier relay marked published go, pending ones stay;
//! the worker prunes on its own and stops when asked.

use std::time::Duration;

use runtime::metrics::Metrics;
use runtime::pruning::{BATCH_SIZE, Pruned, Pruner};
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::polling::eventually;

const RETENTION: Duration = Duration::from_secs(60 * 60);

/// Two and a half batches: the round has to go back for more, twice.
const OLD_ROWS: i64 = 25_000;
const _: () = assert!(OLD_ROWS > 2 * BATCH_SIZE);

#[tokio::test]
async fn inbox_rows_older_than_the_retention_are_deleted_in_batches_and_newer_ones_kept() {
    let database = scratch_database().await;
    insert_inbox_rows(&database, "old", OLD_ROWS, "2 hours").await;
    // Just inside the retention: still needed to recognise a late copy.
    insert_inbox_rows(&database, "recent", 100, "59 minutes").await;
    insert_inbox_rows(&database, "fresh", 100, "0 seconds").await;
    let metrics = Metrics::new();
    let pruner = pruner(&database, metrics.clone(), Duration::from_secs(60));

    let pruned = pruner
        .prune(&CancellationToken::new())
        .await
        .expect("failed to prune");

    assert_eq!(
        pruned,
        Pruned {
            inbox_rows: OLD_ROWS.unsigned_abs(),
            inbox_batches: 3,
            outbox_rows: 0,
        }
    );
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT consumer, count(*) FROM inbox GROUP BY consumer ORDER BY consumer")
            .fetch_all(&database.pool)
            .await
            .expect("failed to count the inbox");
    assert_eq!(
        left,
        vec![("fresh".to_owned(), 100), ("recent".to_owned(), 100)]
    );
    let text = metrics.encode();
    assert!(
        text.contains(&format!(
            r#"messaging_rows_pruned_total{{table="inbox"}} {OLD_ROWS}"#
        )),
        "{text}"
    );

    let again = pruner
        .prune(&CancellationToken::new())
        .await
        .expect("failed to prune");
    assert_eq!(again.inbox_rows, 0, "a second round finds nothing more");
}

#[tokio::test]
async fn the_inbox_has_a_brin_index_on_processed_at() {
    let database = scratch_database().await;
    let definition: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_processed_at'",
    )
    .fetch_one(&database.pool)
    .await
    .expect("the index is missing");
    assert!(
        definition.contains("USING brin (processed_at)"),
        "{definition}"
    );
}

#[tokio::test]
async fn outbox_rows_an_earlier_relay_marked_published_are_deleted_and_pending_ones_kept() {
    let database = scratch_database().await;
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, payload, published_at)
         SELECT gen_random_uuid(), 'order.completed.x', '\\x00'::bytea,
                CASE WHEN n <= 30 THEN now() END
         FROM generate_series(1, 33) AS n",
    )
    .execute(&database.pool)
    .await
    .expect("failed to fill the outbox");

    let pruned = pruner(&database, Metrics::new(), Duration::from_secs(60))
        .prune(&CancellationToken::new())
        .await
        .expect("failed to prune");

    assert_eq!(pruned.outbox_rows, 30);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&database.pool)
        .await
        .expect("failed to count the outbox");
    assert_eq!(pending, 3);
}

#[tokio::test]
async fn the_worker_prunes_every_interval_and_stops_when_asked() {
    let database = scratch_database().await;
    insert_inbox_rows(&database, "old", 10, "2 hours").await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        pruner(&database, Metrics::new(), Duration::from_millis(100)).run(stop.clone()),
    );
    eventually("the worker to prune the old rows", || async {
        inbox_rows(&database).await == 0
    })
    .await;
    // Rows that grow old later go in a later round.
    insert_inbox_rows(&database, "old", 10, "2 hours").await;
    eventually("a later round to prune them too", || async {
        inbox_rows(&database).await == 0
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker did not stop")
        .expect("the worker panicked");
}

#[tokio::test]
async fn the_worker_stops_at_once_while_waiting_for_its_next_round() {
    let database = scratch_database().await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        pruner(&database, Metrics::new(), Duration::from_secs(60 * 60)).run(stop.clone()),
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), worker)
        .await
        .expect("the worker waited for its next round instead of stopping")
        .expect("the worker panicked");
}

async fn scratch_database() -> ScratchDatabase {
    ScratchDatabase::create("pruning", &Migrator::with_migrations(Vec::new())).await
}

fn pruner(database: &ScratchDatabase, metrics: Metrics, interval: Duration) -> Pruner {
    Pruner {
        pool: database.pool.clone(),
        retention: RETENTION,
        interval,
        metrics,
    }
}

/// `rows` inbox rows of `consumer`, processed `age` ago (an SQL interval) and a little more.
async fn insert_inbox_rows(database: &ScratchDatabase, consumer: &str, rows: i64, age: &str) {
    sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at)
         SELECT $1, gen_random_uuid(), now() - $3::interval - n * interval '1 millisecond'
         FROM generate_series(1, $2) AS n",
    )
    .bind(consumer)
    .bind(rows)
    .bind(age)
    .execute(&database.pool)
    .await
    .expect("failed to fill the inbox");
}

async fn inbox_rows(database: &ScratchDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&database.pool)
        .await
        .expect("failed to count the inbox")
}
