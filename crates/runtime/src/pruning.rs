//! Keeping the messaging tables small: the worker every service runs, which deletes the inbox
//! rows no duplicate can reach any more, and the outbox rows an earlier relay marked published
//! instead of deleting them.
//!
//! An inbox row exists to make a consumer drop a second copy of an event it applied. Copies
//! with the same event id come from a redelivery of a message whose ack was lost (within
//! `CONSUMER_MAX_DELIVER` × `CONSUMER_ACK_WAIT` while the consumer runs), and from an outbox
//! row published again by a relay that crashed between the publish ack and deleting the row
//! (JetStream itself drops those within its duplicate window). So a row is kept for
//! `INBOX_RETENTION`, which is at least both of those (see [`crate::settings::Settings`]), and
//! then deleted. A copy that arrives later still — a dead letter redriven after that, or a
//! redelivery or republish after an outage longer than that — is no longer recognised by its
//! id; it changes nothing all the same, because every reaction is idempotent on the state too
//! (ARCHITECTURE.md), which is what covers a copy under a new id anyway.
//!
//! Rows are deleted [`BATCH_SIZE`] at a time, each statement its own transaction, so however
//! much there is to delete the pruner never holds many row locks, nor one long transaction
//! that would hold back vacuum. Replicas each run a pruner; two that pick the same rows only
//! wait on each other's row locks for a moment.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Rows deleted per statement.
pub const BATCH_SIZE: i64 = 10_000;

/// One batch of `$1` inbox rows older than the retention (`$2`, in seconds). The rows are
/// picked by their physical address (`ctid`), so the delete fetches exactly those rows
/// whatever plan serves the `SELECT` (the BRIN index on `processed_at`, or a scan that stops
/// after `$1` rows), never joining the whole table against the batch.
const DELETE_OLD_INBOX_ROWS: &str = "DELETE FROM inbox WHERE ctid = ANY(ARRAY( \
     SELECT ctid FROM inbox WHERE processed_at < now() - make_interval(secs => $2) LIMIT $1))";

/// One batch of outbox rows a relay of an earlier version marked published instead of
/// deleting them: acked by the stream, so nothing needs them (the relay never claims them).
/// Only an upgraded database has any; afterwards this finds nothing in a table that holds
/// only pending rows.
const DELETE_PUBLISHED_OUTBOX_ROWS: &str = "DELETE FROM outbox WHERE ctid = ANY(ARRAY( \
     SELECT ctid FROM outbox WHERE published_at IS NOT NULL LIMIT $1))";

/// Deletes, every `interval`, the inbox rows older than `retention` and the outbox rows
/// already published, until cancelled.
#[derive(Debug)]
pub struct Pruner {
    pub pool: PgPool,
    /// `INBOX_RETENTION`.
    pub retention: Duration,
    /// `INBOX_PRUNE_INTERVAL`; more than zero.
    pub interval: Duration,
    /// Counts the rows deleted.
    pub metrics: Metrics,
}

/// What one round deleted, and in how many statements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub inbox_rows: u64,
    pub inbox_batches: u32,
    pub outbox_rows: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Deleted {
    rows: u64,
    batches: u32,
}

impl Pruner {
    /// Prunes every `interval` until `stop` is cancelled; returns within one batch of it.
    pub async fn run(self, stop: CancellationToken) {
        // The first round only after one interval: a service that comes back after a long
        // outage first takes the redeliveries of what it applied but never acked, while their
        // inbox rows are still there to recognise them.
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.prune(&stop).await {
                Ok(pruned) if pruned.inbox_rows + pruned.outbox_rows > 0 => tracing::info!(
                    inbox_rows = pruned.inbox_rows,
                    outbox_rows = pruned.outbox_rows,
                    batches = pruned.inbox_batches,
                    retention = %humantime::format_duration(self.retention),
                    "pruned the messaging tables"
                ),
                Ok(_) => tracing::debug!("pruning round found nothing to delete"),
                Err(error) => {
                    tracing::warn!(%error, "pruning round failed; the next one will retry");
                }
            }
        }
    }

    /// One round: the inbox rows older than the retention, then the published outbox rows,
    /// batch after batch until a batch comes back short or `stop` is cancelled.
    pub async fn prune(&self, stop: &CancellationToken) -> Result<Pruned, sqlx::Error> {
        let retention = self.retention.as_secs_f64();
        let inbox = self
            .delete_in_batches("inbox", stop, || {
                sqlx::query(DELETE_OLD_INBOX_ROWS)
                    .bind(BATCH_SIZE)
                    .bind(retention)
            })
            .await?;
        let outbox = self
            .delete_in_batches("outbox", stop, || {
                sqlx::query(DELETE_PUBLISHED_OUTBOX_ROWS).bind(BATCH_SIZE)
            })
            .await?;
        Ok(Pruned {
            inbox_rows: inbox.rows,
            inbox_batches: inbox.batches,
            outbox_rows: outbox.rows,
        })
    }

    async fn delete_in_batches(
        &self,
        table: &'static str,
        stop: &CancellationToken,
        batch: impl Fn() -> Query<'static, Postgres, PgArguments>,
    ) -> Result<Deleted, sqlx::Error> {
        let mut deleted = Deleted::default();
        while !stop.is_cancelled() {
            let rows = batch().execute(&self.pool).await?.rows_affected();
            deleted.rows += rows;
            deleted.batches += 1;
            self.metrics.rows_pruned(table, rows);
            if rows < BATCH_SIZE.unsigned_abs() {
                break;
            }
        }
        Ok(deleted)
    }
}
