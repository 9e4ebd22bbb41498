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
//!
//! # Hand-off
//!
//! A writer (a consumer, an HTTP handler, a timer) knows the events it wrote: after its
//! commit it hands the rows to this process's relay ([`Outbox::hand_off`]), which publishes
//! them at once, with no notification, claim or poll in between, and deletes them a little
//! later, many rows a statement ([`DELETE_DELAY`]). Such rows are written with `relay_after`
//! a few seconds ahead ([`HANDOFF_GRACE`]); claims skip them until then, and their insert
//! wakes no relay at all, so they are not published twice. If the hand-off never happens
//! (the process died after its commit, the channel was full), the relay's poll claims them
//! once `relay_after` has passed; if their publish fails, they are due at once and the next
//! poll claims them. Either way, `Nats-Msg-Id` and the consumers' inboxes drop a second copy.
//!
//! Order: the rows of one transaction go out in the order they were written, and a consumer
//! hands off before it acks, so one key's events from one consumer go out in the order they
//! were caused. A row whose publish failed is made due at once and claimed at the next poll,
//! by which time later rows may have gone out: as with a claimed row whose ack failed while
//! the next round was already sent, failures can reorder, and consumers do not depend on the
//! order (see the consumer module).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use chrono::Utc;
use events::Event;
use events::envelope::{Envelope, Metadata};
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::database::RawTransaction;
use crate::metrics::Metrics;
use crate::telemetry;

/// Rows claimed and published per relay round; also how many published handed-off rows make
/// the relay delete them at once instead of after [`DELETE_DELAY`].
pub const BATCH_SIZE: i64 = 256;

/// Rounds whose publishes are out and whose acks are awaited at once; see [`Relay::run`].
const ROUNDS_IN_FLIGHT: usize = 2;

/// How long claims leave a handed-off row to the hand-off (see "Hand-off" above): far more
/// than a publish takes, short enough that a row whose hand-off was lost is not late by much.
pub const HANDOFF_GRACE: Duration = Duration::from_secs(3);

/// How long the relay gathers published handed-off rows before deleting them in one
/// statement: a delete is a commit, and one per row would cost as much as the claim the
/// hand-off saves. Rows waiting for it are in their grace, so no claim takes them.
pub const DELETE_DELAY: Duration = Duration::from_millis(100);

/// Handed-off transactions that may wait for the relay; beyond that a writer's rows wait for
/// the grace to pass instead (see [`Outbox::hand_off`]).
const HANDOFF_CAPACITY: usize = 4096;

/// Writes events into the outbox; `source` names the producing service.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
    handoff: Option<Handoff>,
}

/// Both ends of the hand-off channel: writers send, and the relay takes the receiving end
/// once ([`Outbox::take_handed_off`]).
#[derive(Debug, Clone)]
struct Handoff {
    sender: mpsc::Sender<Vec<PendingRow>>,
    receiver: Arc<Mutex<Option<HandedOff>>>,
}

/// The relay's end of the hand-off: rows committed by this process, to publish at once.
#[derive(Debug)]
pub struct HandedOff(mpsc::Receiver<Vec<PendingRow>>);

/// Outbox rows written by [`Outbox::enqueue_handed_off`], for [`Outbox::hand_off`] once
/// their transaction has committed.
#[derive(Debug, Default)]
#[must_use = "rows not handed off wait HANDOFF_GRACE for the relay's claim"]
pub struct Written(Vec<PendingRow>);

impl Written {
    pub fn extend(&mut self, other: Written) {
        self.0.extend(other.0);
    }

    /// The rows' ids, for a caller that deletes them itself (the bench's bound, which
    /// publishes nothing but deletes as the relay does, with [`delete_published`]).
    pub fn ids(&self) -> Vec<i64> {
        self.0.iter().map(|row| row.id).collect()
    }
}

/// Where an event comes from in the saga: its correlation (the order) and its cause.
#[derive(Debug, Clone)]
pub struct Cause {
    pub correlationid: String,
    pub causationid: Option<Uuid>,
}

impl Outbox {
    /// An outbox whose rows only the relay's claims publish.
    pub fn new(service: &str) -> Outbox {
        Outbox {
            source: format!("/services/{service}"),
            handoff: None,
        }
    }

    /// An outbox whose writers may hand their committed rows to this process's relay
    /// ([`Outbox::hand_off`]); the relay takes the other end with
    /// [`Outbox::take_handed_off`].
    pub fn with_handoff(service: &str) -> Outbox {
        let (sender, receiver) = mpsc::channel(HANDOFF_CAPACITY);
        Outbox {
            handoff: Some(Handoff {
                sender,
                receiver: Arc::new(Mutex::new(Some(HandedOff(receiver)))),
            }),
            ..Outbox::new(service)
        }
    }

    /// The relay's end of the hand-off, to the first caller; `None` after that or without
    /// a hand-off.
    pub fn take_handed_off(&self) -> Option<HandedOff> {
        let handoff = self.handoff.as_ref()?;
        handoff
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Appends an event to the outbox inside the caller's transaction and returns its
    /// envelope; the relay claims it once the transaction commits. Without a cause, the event
    /// starts its own correlation (its key).
    pub async fn enqueue(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        cause: Option<&Cause>,
    ) -> Result<Envelope, sqlx::Error> {
        let (envelope, _) = self.write(tx, event, cause, Duration::ZERO).await?;
        Ok(envelope)
    }

    /// [`Outbox::enqueue`] for a writer that hands the row to the relay itself once its
    /// transaction has committed ([`Outbox::hand_off`]): published straight away instead of
    /// after a notification and a claim. Without a hand-off, the same as `enqueue`.
    pub async fn enqueue_handed_off(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        cause: Option<&Cause>,
    ) -> Result<(Envelope, Written), sqlx::Error> {
        if self.handoff.is_none() {
            return Ok((self.enqueue(tx, event, cause).await?, Written::default()));
        }
        let (envelope, row) = self.write(tx, event, cause, HANDOFF_GRACE).await?;
        Ok((envelope, Written(vec![row])))
    }

    /// Hands rows whose transaction has committed to the relay. Never waits: should the relay
    /// be that far behind, the rows are claimed once their grace has passed.
    pub fn hand_off(&self, written: Written) {
        let (Some(handoff), false) = (&self.handoff, written.0.is_empty()) else {
            return;
        };
        if let Err(error) = handoff.sender.try_send(written.0) {
            tracing::debug!(%error, "outbox hand-off refused; the relay claims the rows later");
        }
    }

    /// Inserts the row, claimable by the relay `relay_after` after this statement: not after
    /// the transaction's start, which may be long before its commit (a batch, a lock).
    async fn write(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        cause: Option<&Cause>,
        relay_after: Duration,
    ) -> Result<(Envelope, PendingRow), sqlx::Error> {
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
        let headers = sqlx::types::Json(telemetry::context_headers(&Span::current()));
        let (subject, payload) = (event.subject(), envelope.to_vec());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (event_id, subject, payload, headers, relay_after) \
             VALUES ($1, $2, $3, $4, statement_timestamp() + make_interval(secs => $5)) \
             RETURNING id",
        )
        .bind(envelope.id)
        .bind(&subject)
        .bind(&payload)
        .bind(&headers)
        .bind(relay_after.as_secs_f64())
        .fetch_one(tx)
        .await?;
        let row = PendingRow {
            id,
            event_id: envelope.id,
            subject,
            payload,
            headers,
        };
        Ok((envelope, row))
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
    /// Rows this process's writers committed and hand over to publish at once
    /// ([`Outbox::take_handed_off`]); `None`: claims only.
    pub handed_off: Option<HandedOff>,
}

/// An outbox row as the relay publishes it.
#[derive(Debug, FromRow)]
pub struct PendingRow {
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
    /// and its publishes go out on the same connection after the first's, so without failures
    /// the stream stores them in outbox order.
    ///
    /// Handed-off rows ("Hand-off" above) are a round of their own, with no claim: taken from
    /// the channel as they come, many transactions' rows at once when they queue, and before
    /// a claim, since they were committed before anything a notification announces now.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut handed_off = self.handed_off.take();
        let mut listener = self.listen().await;
        let mut settling = FuturesUnordered::new();
        // One timer for the whole run, not a sleep per pass: hand-offs keep the loop busy
        // under load, and a sleep begun afresh on each pass would never end, while rows whose
        // hand-off failed wake no one and wait for this poll.
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.reset();
        let mut deletions = Deletions::default();
        // Rows may be pending: at start, after a wake-up, after a full round.
        let mut more = true;
        loop {
            if settling.len() < ROUNDS_IN_FLIGHT
                && let Some(rows) = try_handed_off(&mut handed_off)
            {
                let sent = self.send(None, gather(rows, handed_off.as_mut())).await;
                settling.push(self.settle(sent));
                continue;
            }
            if more && settling.len() < ROUNDS_IN_FLIGHT {
                more = false;
                // The rounds in flight go on meanwhile: the claim may be waiting for a pooled
                // connection that only one of them can give back.
                let mut claiming = pin!(self.claim_and_send(Claim::Due));
                let claimed = loop {
                    tokio::select! {
                        claimed = &mut claiming => break claimed,
                        Some(settled) = settling.next(), if !settling.is_empty() => {
                            settled_round(settled, &mut deletions);
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
                        settled_round(Err(error), &mut deletions);
                    }
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(rows) = next_handed_off(&mut handed_off), if settling.len() < ROUNDS_IN_FLIGHT => {
                    let sent = self.send(None, gather(rows, handed_off.as_mut())).await;
                    settling.push(self.settle(sent));
                }
                Some(settled) = settling.next(), if !settling.is_empty() => {
                    // Rows left pending are retried on the next wake-up, not in a tight loop.
                    if !settled_round(settled, &mut deletions) {
                        more = false;
                    }
                    if deletions.full() {
                        self.delete_later(deletions.take());
                    }
                }
                () = sleep_until_due(&deletions) => {
                    self.delete_later(deletions.take());
                }
                woken = wait_for_notification(&mut listener) => {
                    if !woken {
                        // The listening connection broke: notifications sent meanwhile are
                        // lost, so reconnect and claim whatever is pending.
                        listener = self.listen().await;
                    }
                    more = true;
                }
                _ = poll.tick() => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                    more = true;
                }
            }
        }
        while let Some(settled) = settling.next().await {
            settled_round(settled, &mut deletions);
        }
        // Deleted before the drain, which would otherwise publish them again.
        delete_published(&self.pool, &deletions.take()).await;
        // What was handed off and not yet taken is in the outbox too: the drain claims it,
        // grace or not.
        drop(handed_off);
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

    /// Deletes published handed-off rows in the background: nothing waits for it, and should
    /// it fail, the rows are published again after their grace and dropped as duplicates.
    fn delete_later(&self, published: Vec<i64>) {
        let pool = self.pool.clone();
        tokio::spawn(async move { delete_published(&pool, &published).await });
    }

    /// Publishes rounds, one at a time, until fewer rows than a full batch are pending.
    async fn drain(&self) {
        loop {
            let round = self.publish_batch(Claim::Everything).await;
            let full = matches!(&round, Ok(round) if round.claimed == BATCH_SIZE);
            // Only a full batch, all published, may have more behind it. A claimed round
            // deletes its own rows.
            if !(settled_round(round, &mut Deletions::default()) && full) {
                return;
            }
        }
    }

    /// One round: claim, publish, await acks, delete the acked rows.
    async fn publish_batch(&self, claim: Claim) -> anyhow::Result<Round> {
        match self.claim_and_send(claim).await? {
            Some(sent) => self.settle(sent).await,
            None => Ok(Round::default()),
        }
    }

    /// The first half of a round: claims pending rows and sends their publishes, without
    /// waiting for the acks. `None` when nothing is pending.
    async fn claim_and_send(&self, claim: Claim) -> anyhow::Result<Option<Sent>> {
        let (claim, rows) = begin_claim(&self.pool, claim).await?;
        if rows.is_empty() {
            end_claim(claim, &[]).await?;
            return Ok(None);
        }
        Ok(Some(self.send(Some(claim), rows).await))
    }

    /// Sends the publishes of `rows`, claimed or handed off, without waiting for the acks.
    async fn send(&self, claim: Option<RawTransaction>, rows: Vec<PendingRow>) -> Sent {
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
        Sent {
            claim,
            rows,
            pending,
        }
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

        let published = acked.len() as i64;
        let to_delete = match claim {
            // In the claiming transaction: the rows stay locked until they are gone, so no
            // other relay can claim an acked row in between. Rows whose publish failed stay
            // pending.
            Some(claim) => {
                end_claim(claim, &acked).await?;
                Vec::new()
            }
            // Handed off: no claim to end; a claim that took a row meanwhile (its grace had
            // passed) published a copy that JetStream dropped. Rows not published are due at
            // once, for the next poll's claim to take in outbox order; the published ones are
            // deleted a little later, with others ([`DELETE_DELAY`]).
            None => {
                if acked.len() < rows.len() {
                    let unpublished: Vec<i64> = rows
                        .iter()
                        .map(|row| row.id)
                        .filter(|id| !acked.contains(id))
                        .collect();
                    make_due(&self.pool, &unpublished).await?;
                }
                acked
            }
        };
        tracing::debug!(published, "outbox relay round");
        Ok(Round {
            claimed: rows.len() as i64,
            published,
            to_delete,
        })
    }
}

/// Which pending rows a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Those not left to a hand-off (`relay_after` has passed).
    Due,
    /// All of them: the relay is stopping, and so is every hand-off of this process.
    Everything,
}

/// Begins a relay round's transaction with its claim of up to a batch of pending rows,
/// oldest first, in one round trip.
async fn begin_claim(
    pool: &PgPool,
    claim: Claim,
) -> Result<(RawTransaction, Vec<PendingRow>), sqlx::Error> {
    let due = match claim {
        Claim::Due => "AND relay_after <= now() ",
        Claim::Everything => "",
    };
    // A simple query takes no parameters: the limit is written in.
    let (claim, rows) = RawTransaction::begin_fetching(
        pool,
        &format!(
            "SELECT id, event_id, subject, payload, headers FROM outbox \
             WHERE published_at IS NULL {due}ORDER BY id LIMIT {BATCH_SIZE} FOR UPDATE SKIP LOCKED"
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
    claim.commit(&delete_statement(published)).await
}

/// Makes the handed-off rows `unpublished` due for the next claim.
async fn make_due(pool: &PgPool, unpublished: &[i64]) -> Result<(), sqlx::Error> {
    let statement = format!(
        "UPDATE outbox SET relay_after = now() WHERE id IN ({})",
        id_list(unpublished)
    );
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the handed-off rows `published`, in a transaction of its own. Should that fail,
/// the rows are published again after their grace and dropped as duplicates.
pub async fn delete_published(pool: &PgPool, published: &[i64]) {
    if published.is_empty() {
        return;
    }
    let deleted = sqlx::raw_sql(AssertSqlSafe(delete_statement(published)))
        .execute(pool)
        .await;
    if let Err(error) = deleted {
        tracing::warn!(%error, rows = published.len(), "cannot delete published outbox rows; they will be published again, and dropped as duplicates");
    }
}

/// Published handed-off rows waiting to be deleted together ([`DELETE_DELAY`]).
#[derive(Debug, Default)]
struct Deletions {
    ids: Vec<i64>,
    /// When the oldest of them has waited long enough.
    due: Option<tokio::time::Instant>,
}

impl Deletions {
    fn add(&mut self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        self.due
            .get_or_insert_with(|| tokio::time::Instant::now() + DELETE_DELAY);
        self.ids.extend(ids);
    }

    /// Enough for a statement of its own at once.
    fn full(&self) -> bool {
        self.ids.len() as i64 >= BATCH_SIZE
    }

    fn take(&mut self) -> Vec<i64> {
        self.due = None;
        std::mem::take(&mut self.ids)
    }
}

/// Ready when the deletions waiting are due; never when none wait.
async fn sleep_until_due(deletions: &Deletions) {
    match deletions.due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The statement deleting the rows `ids`, as text.
fn delete_statement(ids: &[i64]) -> String {
    format!("DELETE FROM outbox WHERE id IN ({}); ", id_list(ids))
}

/// Ids of rows read back from the outbox, as text: nothing but digits and commas.
fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(",")
}

/// Rows already handed off, without waiting.
fn try_handed_off(handed_off: &mut Option<HandedOff>) -> Option<Vec<PendingRow>> {
    handed_off.as_mut()?.0.try_recv().ok()
}

/// The next handed-off rows; never ready without a hand-off or once every writer is gone.
async fn next_handed_off(handed_off: &mut Option<HandedOff>) -> Option<Vec<PendingRow>> {
    match handed_off {
        Some(HandedOff(receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// `rows` and whatever else is already handed off, up to a batch (or one transaction's rows,
/// if they alone are more).
fn gather(mut rows: Vec<PendingRow>, handed_off: Option<&mut HandedOff>) -> Vec<PendingRow> {
    if let Some(HandedOff(receiver)) = handed_off {
        while (rows.len() as i64) < BATCH_SIZE {
            match receiver.try_recv() {
                Ok(more) => rows.extend(more),
                Err(_) => break,
            }
        }
    }
    rows
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
    /// `None` for handed-off rows.
    claim: Option<RawTransaction>,
    rows: Vec<PendingRow>,
    pending: Vec<(i64, Span, PublishAckFuture)>,
}

#[derive(Debug, Default)]
struct Round {
    claimed: i64,
    published: i64,
    /// Handed-off rows published, for the relay to delete a little later.
    to_delete: Vec<i64>,
}

/// Reports how a round ended (a failed claim too); true when it published every row it
/// claimed.
fn settled_round(settled: anyhow::Result<Round>, deletions: &mut Deletions) -> bool {
    match settled {
        Ok(round) => {
            let all = round.published == round.claimed;
            deletions.add(round.to_delete);
            all
        }
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

#[cfg(test)]
mod deletion_tests {
    use super::*;

    #[test]
    fn deletions_are_due_a_delay_after_the_first_and_full_at_a_batch() {
        let mut deletions = Deletions::default();
        deletions.add(Vec::new());
        assert_eq!(deletions.due, None, "nothing to delete is never due");

        deletions.add(vec![1, 2]);
        let due = deletions.due.expect("due once rows wait");
        assert!(due <= tokio::time::Instant::now() + DELETE_DELAY);
        deletions.add(vec![3]);
        assert_eq!(deletions.due, Some(due), "the oldest row sets the time");
        assert!(!deletions.full());

        assert_eq!(deletions.take(), [1, 2, 3]);
        assert_eq!(deletions.due, None);
        deletions.add((0..BATCH_SIZE).collect());
        assert!(deletions.full());
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
            let (claim, rows) = begin_claim(pool, Claim::Due)
                .await
                .expect("failed to claim");
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

        let (claim, rows) = begin_claim(&database.pool, Claim::Due)
            .await
            .expect("failed to claim");
        assert_eq!(rows.len(), 3);
        // A second claim meanwhile skips the locked rows.
        let (other, none) = begin_claim(&database.pool, Claim::Due)
            .await
            .expect("failed to claim");
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
