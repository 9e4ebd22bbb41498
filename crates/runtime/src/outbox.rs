//! The transactional outbox: events are written in the same transaction as the state change
//! that caused them, and a relay publishes them to JetStream afterwards.
//!
//! The relay claims pending rows with `FOR UPDATE SKIP LOCKED` (so replicas share the work
//! without publishing a row twice at once), publishes the whole batch with `Nats-Msg-Id` set
//! to the event id (so JetStream drops the duplicate if a row is ever published again), waits
//! for every publish ack, then deletes the acked rows in the claiming transaction.
//!
//! Deleted, not marked: once the stream has acked an event, the stream is its record, and the
//! outbox holds only what is still pending. Marking a row published (an `UPDATE`) would leave
//! a dead tuple behind for every event and the row itself forever, a table that only grows.
//! A crash between the ack and the commit leaves the row pending; it is published again, and
//! JetStream drops it as a duplicate within its window (the consumers' inboxes after that).
//! The `published_at` column stays in the schema but is no longer set: a row is pending
//! exactly when it exists, and `published_at IS NULL` still selects the pending ones.
//!
//! A round is two round trips to Postgres: `BEGIN` goes with the claim, and the `DELETE` with
//! `COMMIT` ([`RawTransaction`]). Each hop of a saga waits for one relay round, so what a round waits
//! for is on every saga's critical path.

use std::collections::HashMap;
use std::pin::pin;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use chrono::Utc;
use events::Event;
use events::envelope::{Envelope, Metadata};
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use sqlx::postgres::PgListener;
use sqlx::{FromRow, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::database::RawTransaction;
use crate::metrics::Metrics;
use crate::telemetry;

/// Rows claimed and published per relay round.
const BATCH_SIZE: i64 = 256;

/// Rounds whose publishes are out and whose acks are awaited at once; see [`Relay::run`].
const ROUNDS_IN_FLIGHT: usize = 2;

/// Writes events into the outbox; `source` names the producing service.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
}

/// Where an event comes from in the saga: its correlation (the order) and its cause.
#[derive(Debug, Clone)]
pub struct Cause {
    pub correlationid: String,
    pub causationid: Option<Uuid>,
}

impl Outbox {
    pub fn new(service: &str) -> Outbox {
        Outbox {
            source: format!("/services/{service}"),
        }
    }

    /// Appends an event to the outbox inside the caller's transaction and returns its
    /// envelope. Without a cause, the event starts its own correlation (its key).
    pub async fn enqueue(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        cause: Option<&Cause>,
    ) -> Result<Envelope, sqlx::Error> {
        let (correlationid, causationid) = match cause {
            Some(cause) => (cause.correlationid.clone(), cause.causationid),
            None => (event.key(), None),
        };
        let envelope = Envelope::wrap(
            event,
            Metadata {
                id: Uuid::now_v7(),
                source: self.source.clone(),
                time: Utc::now(),
                correlationid,
                causationid,
            },
        );
        // The trace context of the work that wrote the event travels with the row, so the
        // relay's publish, however late, joins the trace of what caused it.
        let headers = telemetry::context_headers(&Span::current());
        sqlx::query(
            "INSERT INTO outbox (event_id, subject, payload, headers) VALUES ($1, $2, $3, $4)",
        )
        .bind(envelope.id)
        .bind(event.subject())
        .bind(envelope.to_vec())
        .bind(sqlx::types::Json(headers))
        .execute(tx)
        .await?;
        Ok(envelope)
    }
}

/// Publishes pending outbox rows until cancelled.
#[derive(Debug)]
pub struct Relay {
    pub pool: PgPool,
    pub jetstream: jetstream::Context,
    pub poll_interval: Duration,
    /// Counts every publish and its outcome.
    pub metrics: Metrics,
    /// See `Settings::fault_crash_after_publish_ack`.
    pub crash_after_publish_ack: Option<String>,
}

#[derive(Debug, FromRow)]
struct PendingRow {
    id: i64,
    event_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: sqlx::types::Json<HashMap<String, String>>,
}

impl Relay {
    /// Runs the relay until `stop` is cancelled, then publishes what is left once more.
    ///
    /// Rounds overlap: once a round's publishes are out, the next may claim and send while
    /// the first waits for its acks (`ROUNDS_IN_FLIGHT`), so an event committed meanwhile
    /// does not wait for them too. The next round skips the rows still locked by the first,
    /// and its publishes go out on the same connection after the first's, so the stream
    /// stores them in outbox order.
    pub async fn run(self, stop: CancellationToken) {
        let mut listener = self.listen().await;
        let mut settling = FuturesUnordered::new();
        // Rows may be pending: at start, after a wake-up, after a full round.
        let mut more = true;
        loop {
            if more && settling.len() < ROUNDS_IN_FLIGHT {
                more = false;
                // The rounds in flight go on meanwhile: the claim may be waiting for a pooled
                // connection that only one of them can give back.
                let mut claiming = pin!(self.claim_and_send());
                let claimed = loop {
                    tokio::select! {
                        claimed = &mut claiming => break claimed,
                        Some(settled) = settling.next(), if !settling.is_empty() => {
                            settled_round(settled);
                        }
                    }
                };
                match claimed {
                    Ok(Some(sent)) => {
                        more = sent.rows.len() as i64 == BATCH_SIZE;
                        settling.push(self.settle(sent));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        settled_round(Err(error));
                    }
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(settled) = settling.next(), if !settling.is_empty() => {
                    // Rows left pending are retried on the next wake-up, not in a tight loop.
                    if !settled_round(settled) {
                        more = false;
                    }
                }
                woken = wait_for_notification(&mut listener) => {
                    if !woken {
                        // The listening connection broke: notifications sent meanwhile are
                        // lost, so reconnect and claim whatever is pending.
                        listener = self.listen().await;
                    }
                    more = true;
                }
                () = tokio::time::sleep(self.poll_interval) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                    more = true;
                }
            }
        }
        while let Some(settled) = settling.next().await {
            settled_round(settled);
        }
        self.drain().await;
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot listen for notifications; polling only");
                return None;
            }
        };
        match listener.listen("outbox").await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot listen for notifications; polling only");
                None
            }
        }
    }

    /// Publishes rounds, one at a time, until fewer rows than a full batch are pending.
    async fn drain(&self) {
        loop {
            let round = self.publish_batch().await;
            let full = matches!(&round, Ok(round) if round.claimed == BATCH_SIZE);
            // Only a full batch, all published, may have more behind it.
            if !(settled_round(round) && full) {
                return;
            }
        }
    }

    /// One round: claim, publish, await acks, delete the acked rows.
    async fn publish_batch(&self) -> anyhow::Result<Round> {
        match self.claim_and_send().await? {
            Some(sent) => self.settle(sent).await,
            None => Ok(Round::default()),
        }
    }

    /// The first half of a round: claims pending rows and sends their publishes, without
    /// waiting for the acks. `None` when nothing is pending.
    async fn claim_and_send(&self) -> anyhow::Result<Option<Sent>> {
        let (claim, rows) = begin_claim(&self.pool).await?;
        if rows.is_empty() {
            end_claim(claim, &[]).await?;
            return Ok(None);
        }

        // Send every publish before awaiting any ack, so the batch costs one round trip.
        let mut pending: Vec<(i64, Span, PublishAckFuture)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let span = publish_span(row);
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in row.headers.iter() {
                headers.insert(name.as_str(), value.as_str());
            }
            // The consumer's parent is this publish, not the transaction that wrote the row.
            inject_context(&span, &mut headers);
            // Headers first: `headers` replaces the whole map, the dedup id included.
            let message = PublishMessage::build()
                .payload(row.payload.clone().into())
                .headers(headers)
                .message_id(row.event_id.to_string());
            let sent = self
                .jetstream
                .send_publish(row.subject.clone(), message)
                .instrument(span.clone())
                .await;
            match sent {
                Ok(ack) => pending.push((row.id, span, ack)),
                Err(error) => {
                    // Stop here: later rows would overtake this one. It stays pending.
                    span.in_scope(
                        || tracing::warn!(%error, subject = %row.subject, "publish failed"),
                    );
                    span.record("otel.status_code", "ERROR");
                    self.metrics.event_published(&row.subject, false);
                    break;
                }
            }
        }
        Ok(Some(Sent {
            claim,
            rows,
            pending,
        }))
    }

    /// The second half of a round: awaits the acks, then deletes the acked rows and commits.
    async fn settle(&self, sent: Sent) -> anyhow::Result<Round> {
        let Sent {
            claim,
            rows,
            pending,
        } = sent;
        let (ids, spans): (Vec<i64>, Vec<Span>) = pending
            .iter()
            .map(|(id, span, _)| (*id, span.clone()))
            .unzip();
        let results = join_all(pending.into_iter().map(|(_, _, ack)| ack.into_future())).await;
        let mut acked = Vec::with_capacity(ids.len());
        // One warning per round, not per row: during a leader election every row of a batch
        // fails the same way, and all of them stay pending for the next round.
        let mut not_acked = 0;
        let mut last_error = None;
        for (((id, result), row), span) in ids.into_iter().zip(results).zip(&rows).zip(spans) {
            self.metrics.event_published(&row.subject, result.is_ok());
            match result {
                Ok(_) => acked.push(id),
                Err(error) => {
                    span.in_scope(
                        || tracing::warn!(%error, "publish not acked; the row stays pending"),
                    );
                    span.record("otel.status_code", "ERROR");
                    not_acked += 1;
                    last_error = Some(error);
                }
            }
        }
        if let Some(error) = last_error {
            tracing::warn!(%error, not_acked, "publishes were not acked; the rows stay pending");
        }
        if let Some(event_type) = &self.crash_after_publish_ack {
            let prefix = format!("{event_type}.");
            if rows.iter().any(|row| row.subject.starts_with(&prefix)) {
                crate::fault::kill_this_process(
                    "after publish ack, before deleting the outbox row",
                );
            }
        }

        // In the claiming transaction: the rows stay locked until they are gone, so no other
        // relay can claim an acked row in between. Rows whose publish failed stay pending.
        end_claim(claim, &acked).await?;
        tracing::debug!(published = acked.len(), "outbox relay round");
        Ok(Round {
            claimed: rows.len() as i64,
            published: acked.len() as i64,
        })
    }
}

/// Begins a relay round's transaction with its claim of up to a batch of pending rows,
/// oldest first, in one round trip.
async fn begin_claim(pool: &PgPool) -> Result<(RawTransaction, Vec<PendingRow>), sqlx::Error> {
    // A simple query takes no parameters: the limit is written in.
    let (claim, rows) = RawTransaction::begin_fetching(
        pool,
        &format!(
            "SELECT id, event_id, subject, payload, headers FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT {BATCH_SIZE} FOR UPDATE SKIP LOCKED"
        ),
    )
    .await?;
    let rows = rows
        .iter()
        .map(PendingRow::from_row)
        .collect::<Result<_, _>>()?;
    Ok((claim, rows))
}

/// Deletes the rows `published` and commits, in one round trip.
async fn end_claim(claim: RawTransaction, published: &[i64]) -> Result<(), sqlx::Error> {
    if published.is_empty() {
        return claim.commit("").await;
    }
    // Ids the claim read back, so nothing but digits and commas goes into the text.
    let ids: Vec<String> = published.iter().map(i64::to_string).collect();
    claim
        .commit(&format!(
            "DELETE FROM outbox WHERE id IN ({}); ",
            ids.join(",")
        ))
        .await
}

/// A PRODUCER span per published row, a child of the work that wrote the row.
fn publish_span(row: &PendingRow) -> Span {
    let template = telemetry::subject_template(&row.subject);
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {template}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = %row.subject,
        messaging.destination.template = %template,
        messaging.message.id = %row.event_id,
    );
    telemetry::set_remote_parent(&span, telemetry::extract(&row.headers.0), false);
    span
}

fn inject_context(span: &Span, headers: &mut async_nats::HeaderMap) {
    for (name, value) in telemetry::context_headers(span) {
        headers.insert(name.as_str(), value.as_str());
    }
}

/// A round whose publishes are out: its claim, its rows, and the acks still to come (for
/// the rows up to the first publish that could not be sent).
struct Sent {
    claim: RawTransaction,
    rows: Vec<PendingRow>,
    pending: Vec<(i64, Span, PublishAckFuture)>,
}

#[derive(Debug, Default)]
struct Round {
    claimed: i64,
    published: i64,
}

/// Reports how a round ended (a failed claim too); true when it published every row it
/// claimed.
fn settled_round(settled: anyhow::Result<Round>) -> bool {
    match settled {
        Ok(round) => round.published == round.claimed,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "outbox relay round failed; will retry");
            false
        }
    }
}

/// Waits for the next notification; false when the listener is missing or broke.
async fn wait_for_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        // `try_recv` (unlike `recv`) tells when the connection was lost: notifications sent
        // meanwhile are gone, so the caller listens again and drains everything pending.
        Some(listener) => matches!(listener.try_recv().await, Ok(Some(_))),
        None => std::future::pending().await,
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::testing::ScratchDatabase;

    async fn enqueue(pool: &PgPool, count: usize) {
        let outbox = Outbox::new("claim-test");
        let mut tx = pool.begin().await.expect("failed to begin");
        crate::testing::enqueue_product_updates(&mut tx, &outbox, count).await;
        tx.commit().await.expect("failed to commit");
    }

    /// Claims again until the rows a dropped claim held are free (its connection closes in
    /// the background) or a few seconds pass.
    async fn claim_eventually(pool: &PgPool, expected: usize) -> (RawTransaction, Vec<PendingRow>) {
        for _ in 0..50 {
            let (claim, rows) = begin_claim(pool).await.expect("failed to claim");
            if rows.len() == expected {
                return (claim, rows);
            }
            end_claim(claim, &[])
                .await
                .expect("failed to end an empty claim");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the rows were not released");
    }

    #[tokio::test]
    async fn a_claim_dropped_before_its_end_releases_its_rows_and_leaves_no_open_transaction() {
        let database =
            ScratchDatabase::create("claim", &Migrator::with_migrations(Vec::new())).await;
        enqueue(&database.pool, 3).await;

        let (claim, rows) = begin_claim(&database.pool).await.expect("failed to claim");
        assert_eq!(rows.len(), 3);
        // A second claim meanwhile skips the locked rows.
        let (other, none) = begin_claim(&database.pool).await.expect("failed to claim");
        assert!(none.is_empty());
        end_claim(other, &[]).await.expect("failed to end");
        drop(claim);

        let (claim, rows) = claim_eventually(&database.pool, 3).await;
        let first: Vec<i64> = rows.iter().take(2).map(|row| row.id).collect();
        end_claim(claim, &first).await.expect("failed to end");
        let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox")
            .fetch_all(&database.pool)
            .await
            .expect("failed to read the outbox");
        assert_eq!(left, [rows[2].id]);

        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&database.pool)
        .await
        .expect("failed to read pg_stat_activity");
        assert_eq!(open, 0);
    }
}
