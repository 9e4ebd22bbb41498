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

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use chrono::Utc;
use events::Event;
use events::envelope::{Envelope, Metadata};
use futures::future::join_all;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::telemetry;

/// Rows claimed and published per relay round.
const BATCH_SIZE: i64 = 256;

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

#[derive(Debug, sqlx::FromRow)]
struct PendingRow {
    id: i64,
    event_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: sqlx::types::Json<HashMap<String, String>>,
}

impl Relay {
    /// Runs the relay until `stop` is cancelled, then publishes what is left once more.
    pub async fn run(self, stop: CancellationToken) {
        let mut listener = self.listen().await;
        loop {
            self.drain().await;
            tokio::select! {
                () = stop.cancelled() => break,
                woken = wait_for_notification(&mut listener) => {
                    if !woken {
                        // The listening connection broke: notifications sent meanwhile are
                        // lost, so reconnect and rely on the full drain at the top.
                        listener = self.listen().await;
                    }
                }
                () = tokio::time::sleep(self.poll_interval) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
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

    /// Publishes rounds until fewer rows than a full batch are pending.
    async fn drain(&self) {
        loop {
            match self.publish_batch().await {
                // A full batch, all published: there may be more.
                Ok(Round { claimed, published })
                    if claimed == BATCH_SIZE && published == claimed =>
                {
                    continue;
                }
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "outbox relay round failed; will retry");
                    return;
                }
            }
        }
    }

    /// One round: claim, publish, await acks, delete the acked rows.
    async fn publish_batch(&self) -> anyhow::Result<Round> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, event_id, subject, payload, headers FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH_SIZE)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Round::default());
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
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&acked)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(published = acked.len(), "outbox relay round");
        Ok(Round {
            claimed: rows.len() as i64,
            published: acked.len() as i64,
        })
    }
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

#[derive(Debug, Default)]
struct Round {
    claimed: i64,
    published: i64,
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
