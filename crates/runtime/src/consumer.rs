//! The consumer loop: durable pull consumers with explicit acks, the messages of one key in
//! order and different keys concurrently, the inbox and the handler's effect in one
//! transaction, acks only after commit, retries with backoff for transient errors, and the
//! dead-letter stream for what can never be processed.
//!
//! # Batching
//!
//! A commit is a WAL flush, and under load flushes, not statements, are what a consumer
//! waits for. So the loop runs up to `concurrency` transactions at once, and a message whose
//! key is free waits for a transaction slot in a ready list; a slot that frees takes
//! everything ready, up to `batch` messages, into one transaction, each message in its own
//! savepoint. Idle, a message goes alone and at once; under load, one commit serves many
//! messages. A message whose handler fails is rolled back to its savepoint alone, and once the
//! others have committed it is processed alone, with the usual retries and dead-lettering; if
//! the transaction as a whole fails, every message in it is. Nothing is acked before the
//! commit that applied it. A batch never holds two messages of one key.
//!
//! Round trips, not statements, are what a transaction waits for, so the statements without
//! parameters ride together: `BEGIN` with the advisory locks (and, for a message alone, its
//! inbox row), and each message's savepoint with the end of the previous one and its own
//! inbox row ([`inbox::record`]).
//!
//! # Ordering
//!
//! A message's key is the last token of its subject, `<type>.<key>`: the order id, or the SKU
//! of a catalogue event. The loop processes the messages of one key one after another, in the
//! order it received them, and different keys concurrently, up to `concurrency` at once. A
//! message whose key is busy waits in that key's queue without taking a slot, so it holds up
//! the messages of its own key and no others.
//!
//! What this promises: within one consumer — one service's durable consumer on one stream, in
//! one process — a message's handler starts only after the previous message of its key has
//! been settled (committed and acked, Nak'ed for a retry, or dead-lettered). Without failures
//! JetStream delivers in stream order, so the events of one order on one stream take effect in
//! the order they were stored, and two of them never contend for the order's rows.
//!
//! What it does not promise:
//! - Order across a redelivery. A message that fails transiently is Nak'ed with a delay and
//!   its key moves on to the next message, so the retry lands after later events of the key
//!   (holding the key instead would stall an order behind a message that may end in `DLQ`).
//!   Messages left unacked by a crash, or prefetched by the client but not yet taken by the
//!   loop when it stops, are redelivered after `ack_wait`, after later ones too.
//! - Order across streams: a service has one consumer per stream, so one order's
//!   `inventory.reserved` and `payment.authorized` are consumed independently of each other.
//! - Order across replicas: replicas of a service share the durable consumer, and each gets
//!   some of a key's messages.
//!
//! So handlers stay idempotent and fold facts monotonically ("facts may arrive in any order",
//! ARCHITECTURE.md); per-key order makes the usual case deterministic, it is not what
//! correctness rests on.
//!
//! # Bounds
//!
//! The loop holds at most `concurrency` × `batch` messages (processing, ready and waiting
//! for their key), one pull batch, and pulls nothing more while it is full; the client
//! requests at most one and a half batches ahead of what the loop has pulled, so what is
//! taken from the server stays bounded. A message waiting for its key or a slot is sent
//! `AckKind::Progress` every third of `ack_wait`, so queueing alone never makes JetStream
//! redeliver it. The price of the bound: one busy key
//! can fill the whole window, and the consumer then goes at that key's pace until it drains.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hasher;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, Message, consumer::pull, message::PublishMessage};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use events::participants::Participant;
use events::streams::{Context, dlq_subject, type_filter};
use events::{Envelope, Event};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::database::{self, RawTransaction, is_transient};
use crate::inbox;
use crate::metrics::{Metrics, Processed};
use crate::outbox::{Cause, Outbox, Written};
use crate::telemetry::{self, NatsHeadersRef};

/// Headers a dead letter carries besides the original message's own.
pub mod dead_letter_headers {
    pub const REASON: &str = "Dlq-Reason";
    pub const ORIGINAL_SUBJECT: &str = "Dlq-Original-Subject";
    pub const CONSUMER: &str = "Dlq-Consumer";
    pub const STREAM_SEQUENCE: &str = "Dlq-Stream-Sequence";
    pub const DELIVERIES: &str = "Dlq-Deliveries";
}

/// The events one durable consumer receives from one context's stream.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub stream: Context,
    pub event_types: Vec<&'static str>,
}

impl Subscription {
    /// What `participant` consumes, one subscription per stream, from the events crate's table
    /// of who publishes and who consumes each event type (the table the AsyncAPI document is
    /// generated from), so a service's wiring and its documentation cannot drift apart.
    pub fn of(participant: Participant) -> Vec<Subscription> {
        participant
            .subscriptions()
            .into_iter()
            .map(|(stream, event_types)| Subscription {
                stream,
                event_types,
            })
            .collect()
    }
}

/// A decoded message, as handed to a [`Handler`].
#[derive(Debug)]
pub struct Incoming {
    pub envelope: Envelope,
    pub event: Event,
    pub subject: String,
    /// 1 on the first delivery.
    pub delivery: i64,
}

/// Why a handler could not apply an event.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// May succeed later (database down): retried with backoff, then dead-lettered once the
    /// delivery limit is reached.
    #[error(transparent)]
    Transient(anyhow::Error),
    /// A fact the event depends on has not arrived yet. It travels on another stream, through
    /// another consumer, and usually lands within milliseconds: retried in place a few times
    /// first (a redelivery would wait at least half a second), then like `Transient`.
    #[error("{0}")]
    NotYet(String),
    /// Can never succeed (the event contradicts what this service knows): dead-lettered now.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        HandlerError::Transient(error.into())
    }
}

impl HandlerError {
    /// Worth retrying at once, within this delivery (serialization failure, deadlock, a
    /// fact about to arrive, ...).
    fn is_retryable_now(&self) -> bool {
        match self {
            HandlerError::Transient(error) => error
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_transient),
            HandlerError::NotYet(_) => true,
            HandlerError::Permanent(_) => false,
        }
    }
}

/// A service's reactions to events. `handle` runs inside the transaction that also records
/// the event in the inbox; the events it returns are written to the outbox in that same
/// transaction, caused by the incoming event. Under load the transaction is shared with
/// other messages' handlers (each in a savepoint), so row locks a handler takes are held
/// until the whole batch commits.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> impl Future<Output = Result<Vec<Event>, HandlerError>> + Send + 'a;

    /// What `handle` may lock besides rows of the message's own key (the order): rows that
    /// messages of other keys lock too, such as inventory's products. A transaction takes an
    /// advisory lock on each name, and on each message's key, sorted, before any handler runs,
    /// so transactions that would lock such rows in different orders — two batches, each
    /// with several orders for several products — queue instead of deadlocking.
    fn shared_locks(&self, _incoming: &Incoming) -> &'static [&'static str] {
        &[]
    }

    /// Called once the transaction that applied `incoming` has committed, with the events it
    /// wrote to the outbox: the place to count what really happened (metrics), since `handle`
    /// may run again when its transaction is retried.
    fn committed(&self, _incoming: &Incoming, _outgoing: &[Event]) {}
}

/// Tuning shared by every consumer of a service.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Transactions in flight at once.
    pub concurrency: usize,
    /// Most messages applied in one transaction.
    pub batch: usize,
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// See `Settings::fault_crash_after_commit`.
    pub crash_after_commit: Option<String>,
}

/// How many of a service's consumers are currently pulling; readiness needs all of them.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    running: AtomicUsize,
    expected: AtomicUsize,
}

impl ConsumerHealth {
    pub fn all_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) == self.expected.load(Ordering::SeqCst)
    }
}

/// One durable consumer and everything it needs to process its messages.
pub struct Consumer<H> {
    pub name: String,
    pub subscription: Subscription,
    pub pool: PgPool,
    pub jetstream: jetstream::Context,
    pub outbox: Outbox,
    pub handler: Arc<H>,
    pub options: ConsumerOptions,
    pub metrics: Metrics,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .finish()
    }
}

enum Applied {
    /// Applied now: the events the handler wrote, and their outbox rows to hand to the relay
    /// once committed.
    Fresh(Vec<Event>, Written),
    Duplicate,
}

impl<H: Handler> Consumer<H> {
    /// The durable consumer name of `service` on `stream`, e.g. `payment-inventory`.
    pub fn durable_name(service: &str, stream: Context) -> String {
        format!("{service}-{}", stream.prefix())
    }

    /// Consumes until `stop` is cancelled, recreating the consumer and its message stream
    /// whenever they fail (a deleted consumer, a lost connection), with backoff in between.
    pub async fn run(self, stop: CancellationToken, health: Arc<ConsumerHealth>) {
        health.expected.fetch_add(1, Ordering::SeqCst);
        let mut backoff = restart_backoff();
        while !stop.is_cancelled() {
            let mut consumed = false;
            match self.consume(&stop, &health, &mut consumed).await {
                Ok(()) => break,
                Err(error) => {
                    // A consumer that had been running failed afresh: start the backoff over,
                    // so one bad hour does not slow every later recovery to the cap.
                    if consumed {
                        backoff = restart_backoff();
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(consumer = %self.name, error = %format!("{error:#}"), ?delay, "consumer failed; recreating it");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn consume(
        &self,
        stop: &CancellationToken,
        health: &ConsumerHealth,
        consumed: &mut bool,
    ) -> anyhow::Result<()> {
        let stream = self
            .jetstream
            .get_stream(self.subscription.stream.stream())
            .await?;
        // Create or update: a changed setting (filters, ack wait, deliveries) reaches a
        // durable consumer that already exists.
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(self.name.clone()),
                filter_subjects: self
                    .subscription
                    .event_types
                    .iter()
                    .map(|event_type| type_filter(event_type))
                    .collect(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: self.options.ack_wait,
                // One more than the loop's own limit: if the process dies during the last
                // delivery the loop allows, the server still redelivers once, so the message
                // is dead-lettered instead of dropped with only an advisory left behind.
                max_deliver: self.options.max_deliver + 1,
                ..Default::default()
            })
            .await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.window())
            .messages()
            .await?;

        health.running.fetch_add(1, Ordering::SeqCst);
        *consumed = true;
        tracing::info!(consumer = %self.name, "consuming");
        // Stop pulling when asked; messages already taken finish before this returns.
        let result = self
            .process_in_key_order(messages.take_until(stop.cancelled()))
            .await;
        health.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Messages asked of the server per pull request, and the most the loop holds at once:
    /// enough for every transaction slot to take a full batch.
    fn window(&self) -> usize {
        self.options.concurrency.max(1) * self.options.batch.max(1)
    }

    /// Processes what `messages` yields until it ends or fails: one message at a time per
    /// key, in up to `concurrency` transactions at once of up to `batch` messages each (see
    /// the module's documentation). Returns once every message it took has been processed,
    /// then the stream's error if there was one.
    ///
    /// Everything runs in this one task, as `for_each_concurrent` would: the transactions
    /// borrow the consumer, and only this loop touches the key queues, so they need no lock.
    async fn process_in_key_order<E>(
        &self,
        messages: impl Stream<Item = Result<Message, E>>,
    ) -> anyhow::Result<()>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let concurrency = self.options.concurrency.max(1);
        let batch_limit = self.options.batch.max(1);
        let held_limit = self.window();
        let mut messages = pin!(messages);
        let mut keys: KeyQueues<Message> = KeyQueues::default();
        // Messages whose key is theirs (busy), waiting for a transaction slot.
        let mut ready: Vec<(String, Message)> = Vec::new();
        // One transaction per entry; each hands its messages' keys back when done.
        let mut processing = FuturesUnordered::new();
        let mut pulling = true;
        let mut failure = None;
        let mut progress = tokio::time::interval(progress_interval(self.options.ack_wait));
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // A free slot takes everything ready, up to a batch: alone when the consumer is
            // idle (no waiting), together when messages queued while every slot was busy.
            while processing.len() < concurrency && !ready.is_empty() {
                let batch: Vec<_> = ready.drain(..ready.len().min(batch_limit)).collect();
                processing.push(self.process_batch(batch));
            }
            // Pull only while what the loop holds stays within the window.
            let room = keys.held() < held_limit;
            tokio::select! {
                Some(done) = processing.next(), if !processing.is_empty() => {
                    for key in done {
                        if let Some(next) = keys.finish(key) {
                            ready.push(next);
                        }
                    }
                }
                pulled = messages.next(), if pulling && room => match pulled {
                    Some(Ok(message)) => {
                        let key = ordering_key(&message.subject).to_owned();
                        if let Some(arrived) = keys.arrive(key, message) {
                            ready.push(arrived);
                        }
                    }
                    // The stream is broken (a deleted consumer, a lost connection): take
                    // nothing more, finish what was taken, then let `run` recreate it.
                    Some(Err(error)) => {
                        pulling = false;
                        failure = Some(error);
                    }
                    None => pulling = false,
                },
                _ = progress.tick(), if keys.waiting() > 0 || !ready.is_empty() => {
                    // Waiting for its key or a slot is no reason for JetStream to redeliver it.
                    for message in keys.waiting_messages().chain(ready.iter().map(|(_, m)| m)) {
                        ack(message, AckKind::Progress).await;
                    }
                }
                else => break,
            }
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Processes a batch of messages, each of another key, and hands their keys back so
    /// their next messages can start. One message goes alone; several share a transaction,
    /// each in a savepoint of its own, so one that fails is rolled back alone and then
    /// processed alone, with the usual retries and dead-lettering.
    async fn process_batch(&self, batch: Vec<(String, Message)>) -> Vec<String> {
        let (keys, messages): (Vec<String>, Vec<Message>) = batch.into_iter().unzip();
        if let [message] = messages.as_slice() {
            self.process(message).await;
            return keys;
        }
        let started = Instant::now();
        let mut together = Vec::with_capacity(messages.len());
        let mut alone = Vec::new();
        for message in &messages {
            let span = self.process_span(message);
            match span.in_scope(|| self.decode(message)) {
                Ok(incoming) => together.push((message, span, incoming)),
                // Dead-lettered on its own, with its reason.
                Err(_) => alone.push(message),
            }
        }
        match self.apply_together(&together).await {
            Ok(outcomes) => {
                for ((message, span, incoming), outcome) in together.iter().zip(outcomes) {
                    match outcome {
                        Ok(applied) => {
                            let processed = self
                                .settle(message, incoming, applied)
                                .instrument(span.clone())
                                .await;
                            self.metrics.event_processed(
                                &self.name,
                                &message.subject,
                                processed,
                                started.elapsed(),
                            );
                        }
                        Err(_) => alone.push(message),
                    }
                }
            }
            // The transaction as a whole failed (its connection, its commit): every message
            // goes alone, and the inbox settles a commit whose outcome was lost.
            Err(error) => {
                tracing::info!(consumer = %self.name, error = %format!("{error:#}"), messages = together.len(), "batch transaction failed; processing its messages one by one");
                alone.extend(together.iter().map(|(message, _, _)| *message));
            }
        }
        for message in alone {
            self.process(message).await;
        }
        keys
    }

    /// Applies decoded messages in one transaction, each in its own savepoint (its inbox
    /// row, its handler's effect, its outgoing events), and commits once: one WAL flush for
    /// all of them. Returns each message's outcome; a failed one was rolled back alone.
    ///
    /// The statements without parameters share round trips (see [`inbox::record`]): `BEGIN`
    /// with the advisory locks and the first message's savepoint and inbox row
    /// ([`RawTransaction`]), each later message's savepoint with the previous one's end and
    /// its own inbox row, and the last message's rollback, if it failed, with `COMMIT`, which
    /// releases the last savepoint.
    async fn apply_together(
        &self,
        together: &[(&Message, Span, Incoming)],
    ) -> Result<Vec<Result<Applied, HandlerError>>, sqlx::Error> {
        // Messages of one order reach a service through several consumers, so two batches
        // that each locked one order's rows and then wanted the other's would deadlock:
        // every key, and every shared lock, first, in one order.
        let mut locks: Vec<String> = Vec::new();
        for (message, _, incoming) in together {
            locks.push(format!("key:{}", ordering_key(&message.subject)));
            locks.extend(self.shared_locks_of(incoming));
        }
        let Some((_, _, first)) = together.first() else {
            return Ok(Vec::new());
        };
        let begin = format!(
            "{}SAVEPOINT message; {}",
            lock_statements(locks),
            inbox::insert(&self.name, first.envelope.id)
        );
        let (mut tx, results) = RawTransaction::begin(&self.pool, &begin).await?;
        let mut first_recorded = Some(inbox::inserted(&results));
        let mut outcomes: Vec<Result<Applied, HandlerError>> = Vec::with_capacity(together.len());
        for (_, span, incoming) in together {
            let transaction_span =
                span.in_scope(|| database::transaction_span(&self.pool, "apply event"));
            // Savepoints by hand, not sqlx's nested transactions: when a savepoint cannot be
            // started on a broken connection, sqlx's bookkeeping takes the failure for the
            // outer transaction's, and the outer commit then returns Ok without sending
            // COMMIT. Here any failure of the savepoint statements, or of the inbox row sent
            // with them, fails the whole batch.
            let before = match outcomes.last() {
                None => "SAVEPOINT message; ",
                Some(Ok(_)) => "RELEASE SAVEPOINT message; SAVEPOINT message; ",
                Some(Err(_)) => {
                    "ROLLBACK TO SAVEPOINT message; RELEASE SAVEPOINT message; SAVEPOINT message; "
                }
            };
            let outcome = async {
                let recorded = match first_recorded.take() {
                    Some(recorded) => recorded,
                    None => {
                        inbox::record(&mut tx, before, &self.name, incoming.envelope.id).await?
                    }
                };
                if !recorded {
                    return Ok(Ok(Applied::Duplicate));
                }
                Ok::<_, sqlx::Error>(
                    self.apply_effects(&mut tx, incoming)
                        .await
                        .map(|(outgoing, written)| Applied::Fresh(outgoing, written)),
                )
            }
            .instrument(transaction_span)
            .await?;
            outcomes.push(outcome);
        }
        let last = match outcomes.last() {
            Some(Err(_)) => "ROLLBACK TO SAVEPOINT message; ",
            _ => "",
        };
        tx.commit(last).await?;
        Ok(outcomes)
    }

    async fn process(&self, message: &Message) {
        let started = Instant::now();
        let span = self.process_span(message);
        let outcome = self.process_delivery(message).instrument(span).await;
        self.metrics
            .event_processed(&self.name, &message.subject, outcome, started.elapsed());
    }

    /// A CONSUMER span per delivery, following the OpenTelemetry messaging conventions: the
    /// span that published the message is its parent and also its link.
    fn process_span(&self, message: &Message) -> Span {
        let template = telemetry::subject_template(&message.subject);
        let span = tracing::info_span!(
            "process",
            otel.name = %format_args!("process {template}"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = %message.subject,
            messaging.destination.template = %template,
            messaging.consumer.group.name = %self.name,
            messaging.message.id = tracing::field::Empty,
            messaging.message.delivery_count = tracing::field::Empty,
            order.id = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if let Some(headers) = &message.headers {
            telemetry::set_remote_parent(&span, telemetry::extract(&NatsHeadersRef(headers)), true);
        }
        span
    }

    /// The message as an [`Incoming`], described on the current (its process) span; or why
    /// it cannot be decoded.
    fn decode(&self, message: &Message) -> Result<Incoming, String> {
        let delivery = delivery_of(message);
        let envelope = Envelope::from_slice(&message.payload).map_err(|e| e.to_string())?;
        let event = envelope.event().map_err(|e| e.to_string())?;
        let span = Span::current();
        span.record("messaging.message.id", tracing::field::display(envelope.id));
        span.record("messaging.message.delivery_count", delivery);
        if let Some(order_id) = event.order_id() {
            span.record("order.id", tracing::field::display(order_id));
        }
        Ok(Incoming {
            subject: message.subject.to_string(),
            envelope,
            event,
            delivery,
        })
    }

    async fn process_delivery(&self, message: &Message) -> Processed {
        let incoming = match self.decode(message) {
            Ok(incoming) => incoming,
            Err(reason) => {
                return self
                    .dead_letter(message, delivery_of(message), &reason)
                    .await;
            }
        };
        let delivery = incoming.delivery;

        let applied = (|| self.apply(&incoming))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .when(HandlerError::is_retryable_now)
            .notify(|error, delay| match error {
                HandlerError::NotYet(reason) => {
                    tracing::debug!(%reason, ?delay, "event came early; retrying it now");
                }
                _ => {
                    tracing::info!(error = %format!("{error:#}"), ?delay, "transaction failed; retrying it now");
                }
            })
            .await;

        match applied {
            Ok(applied) => self.settle(message, &incoming, applied).await,
            Err(HandlerError::Permanent(reason)) => {
                self.dead_letter(message, delivery, &reason).await
            }
            Err(error) if delivery >= self.options.max_deliver => {
                let reason = format!("gave up after {delivery} deliveries: {error:#}");
                self.dead_letter(message, delivery, &reason).await
            }
            Err(error) => {
                let delay = redelivery_delay(delivery);
                tracing::warn!(event_id = %incoming.envelope.id, delivery, ?delay, error = %format!("{error:#}"), "event not applied; will retry");
                ack(message, AckKind::Nak(Some(delay))).await;
                Processed::Retried
            }
        }
    }

    /// Acks a message once what it asked for is committed (now, or by an earlier delivery).
    async fn settle(&self, message: &Message, incoming: &Incoming, applied: Applied) -> Processed {
        match applied {
            Applied::Fresh(outgoing, written) => {
                // Before the ack: the next message of this key, and what it causes, comes
                // after these events on their stream.
                self.outbox.hand_off(written);
                self.handler.committed(incoming, &outgoing);
                self.crash_if_asked(incoming);
                ack(message, AckKind::Ack).await;
                Processed::Ok
            }
            Applied::Duplicate => {
                tracing::debug!(event_id = %incoming.envelope.id, "duplicate event ignored");
                ack(message, AckKind::Ack).await;
                Processed::Duplicate
            }
        }
    }

    /// The inbox row, the handler's effect and its outgoing events, in one transaction.
    async fn apply(&self, incoming: &Incoming) -> Result<Applied, HandlerError> {
        self.apply_in_transaction(incoming)
            .instrument(database::transaction_span(&self.pool, "apply event"))
            .await
    }

    /// One message in a transaction of its own: `BEGIN`, the advisory locks and the inbox row
    /// go in one round trip ([`RawTransaction`]).
    async fn apply_in_transaction(&self, incoming: &Incoming) -> Result<Applied, HandlerError> {
        let first = format!(
            "{}{}",
            lock_statements(self.shared_locks_of(incoming).collect()),
            inbox::insert(&self.name, incoming.envelope.id)
        );
        let (mut tx, results) = RawTransaction::begin(&self.pool, &first).await?;
        let applied = if inbox::inserted(&results) {
            match self.apply_effects(&mut tx, incoming).await {
                Ok((outgoing, written)) => Applied::Fresh(outgoing, written),
                Err(error) => {
                    // Back to the pool rolled back; should the rollback fail, dropping the
                    // transaction closes its connection instead.
                    let _ = tx.rollback().await;
                    return Err(error);
                }
            }
        } else {
            Applied::Duplicate
        };
        // Only an Ok commit lets the caller ack: a lost connection during COMMIT leaves the
        // outcome unknown, and redelivery plus the inbox settle it.
        tx.commit("").await?;
        Ok(applied)
    }

    /// The handler's effect and its outgoing events, on the caller's transaction, for an
    /// event the inbox has just recorded as new; with their outbox rows, to hand off once
    /// the transaction has committed.
    async fn apply_effects(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming,
    ) -> Result<(Vec<Event>, Written), HandlerError> {
        let outgoing = self.handler.handle(tx, incoming).await?;
        let cause = Cause {
            correlationid: incoming.envelope.correlationid.clone(),
            causationid: Some(incoming.envelope.id),
        };
        let mut written = Written::default();
        for event in &outgoing {
            let (_, row) = self
                .outbox
                .enqueue_handed_off(tx, event, Some(&cause))
                .await?;
            written.extend(row);
        }
        Ok((outgoing, written))
    }

    fn shared_locks_of(&self, incoming: &Incoming) -> impl Iterator<Item = String> + use<H> {
        self.handler
            .shared_locks(incoming)
            .iter()
            .map(|name| shared_lock(name))
    }

    /// Publishes the message to the DLQ stream with the reason, then terminates it. If the
    /// dead letter cannot be stored, the message is left for redelivery instead of lost.
    async fn dead_letter(&self, message: &Message, delivery: i64, reason: &str) -> Processed {
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                // JetStream's own headers (e.g. the dedup id) belong to the original publish.
                if name.to_string().starts_with("Nats-") {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.as_str());
                }
            }
        }
        let single_line_reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert(dead_letter_headers::REASON, single_line_reason.as_str());
        headers.insert(
            dead_letter_headers::ORIGINAL_SUBJECT,
            message.subject.as_str(),
        );
        headers.insert(dead_letter_headers::CONSUMER, self.name.as_str());
        headers.insert(
            dead_letter_headers::STREAM_SEQUENCE,
            sequence.to_string().as_str(),
        );
        headers.insert(
            dead_letter_headers::DELIVERIES,
            delivery.to_string().as_str(),
        );
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("{}:{sequence}", self.name));
        let stored = match self
            .jetstream
            .send_publish(dlq_subject(&self.name, &message.subject), publish)
            .await
        {
            Ok(ack_future) => ack_future.await.map(|_| ()).map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        match stored {
            Ok(()) => {
                let span = Span::current();
                span.record("otel.status_code", "ERROR");
                span.record("error.type", "dead_lettered");
                tracing::error!(reason = %single_line_reason, delivery, "message moved to the dead-letter stream");
                ack(message, AckKind::Term).await;
                Processed::DeadLettered
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot store dead letter; leaving message for redelivery");
                ack(message, AckKind::Nak(Some(redelivery_delay(delivery)))).await;
                Processed::Retried
            }
        }
    }

    fn crash_if_asked(&self, incoming: &Incoming) {
        if self.options.crash_after_commit.as_deref() == Some(incoming.envelope.event_type.as_str())
        {
            tracing::warn!(event_id = %incoming.envelope.id, "crashing after commit, before ack");
            crate::fault::kill_this_process("after commit, before ack");
        }
    }
}

/// Takes the shared lock `name` (see [`Handler::shared_locks`]) in a transaction outside the
/// consumer, e.g. an HTTP request writing the rows a handler's shared lock guards, so that it
/// takes turns with the handlers.
pub async fn lock_shared(tx: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let statements = lock_statements(vec![shared_lock(name)]);
    sqlx::raw_sql(AssertSqlSafe(statements)).execute(tx).await?;
    Ok(())
}

/// The lock name of the shared lock `name`, apart from the keys' (`key:<key>`), the same in
/// the consumer and in [`lock_shared`].
fn shared_lock(name: &str) -> String {
    format!("shared:{name}")
}

/// Statements taking a transaction-level advisory lock on each name, sorted and once each:
/// the one order every transaction of the service takes them in. One statement per lock, so
/// they are taken one after another whatever the planner does. Each name becomes its 64-bit
/// FNV-1a hash, computed here so the statements carry numbers, never text.
fn lock_statements(mut names: Vec<String>) -> String {
    names.sort_unstable();
    names.dedup();
    names
        .iter()
        .map(|name| {
            let mut hasher = fnv::FnvHasher::default();
            hasher.write(name.as_bytes());
            // The hash's bits as Postgres's bigint; the sign carries no meaning.
            let key = hasher.finish() as i64;
            format!("SELECT pg_advisory_xact_lock({key}); ")
        })
        .collect()
}

/// Which delivery of its message this is: 1 on the first.
fn delivery_of(message: &Message) -> i64 {
    message.info().map(|info| info.delivered).unwrap_or(1)
}

async fn ack(message: &Message, kind: AckKind) {
    // A lost ack means a redelivery, which the inbox turns into a no-op.
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "failed to ack message; it will be redelivered");
    }
}

/// The key that orders a message: the last token of its subject (`<type>.<key>`), the order
/// id or the SKU, shared by every event type of one order.
fn ordering_key(subject: &str) -> &str {
    subject.rsplit_once('.').map_or(subject, |(_, key)| key)
}

/// How often a message waiting for its key tells JetStream it is still being worked on:
/// three times per `ack_wait`, so one late tick still comes in time.
fn progress_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(10))
}

/// The messages of every busy key — one with a message being processed — that arrived after
/// that message, in delivery order. A key is in the map exactly while it is busy, so the map
/// has at most `concurrency` entries and forgets keys as soon as they go idle.
#[derive(Debug)]
struct KeyQueues<T> {
    waiting_by_key: HashMap<String, VecDeque<T>>,
    waiting: usize,
}

impl<T> Default for KeyQueues<T> {
    fn default() -> Self {
        KeyQueues {
            waiting_by_key: HashMap::new(),
            waiting: 0,
        }
    }
}

impl<T> KeyQueues<T> {
    /// A message of `key` arrived: handed back to be processed now if its key was idle (the
    /// key is busy from then on), else kept to wait behind the messages of its key.
    fn arrive(&mut self, key: String, message: T) -> Option<(String, T)> {
        match self.waiting_by_key.get_mut(&key) {
            Some(queue) => {
                queue.push_back(message);
                self.waiting += 1;
                None
            }
            None => {
                self.waiting_by_key.insert(key.clone(), VecDeque::new());
                Some((key, message))
            }
        }
    }

    /// The message of `key` being processed is done: hands back the key's next message to
    /// process, or `None` and the key is idle again.
    fn finish(&mut self, key: String) -> Option<(String, T)> {
        let queue = self.waiting_by_key.get_mut(&key)?;
        match queue.pop_front() {
            Some(next) => {
                self.waiting -= 1;
                Some((key, next))
            }
            None => {
                self.waiting_by_key.remove(&key);
                None
            }
        }
    }

    /// Messages waiting for their key.
    fn waiting(&self) -> usize {
        self.waiting
    }

    /// Messages held: one being processed per busy key, plus those waiting.
    fn held(&self) -> usize {
        self.waiting_by_key.len() + self.waiting
    }

    fn waiting_messages(&self) -> impl Iterator<Item = &T> {
        self.waiting_by_key.values().flatten()
    }
}

/// Backoff between deliveries of a message that failed: 0.5 s, 1 s, 2 s, ... up to 30 s.
fn redelivery_delay(delivery: i64) -> Duration {
    let attempt = usize::try_from(delivery.max(1) - 1).unwrap_or(0);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build()
        .nth(attempt)
        .unwrap_or(Duration::from_secs(30))
}

fn restart_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backs_off_exponentially_and_is_capped() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(500));
        assert_eq!(redelivery_delay(2), Duration::from_secs(1));
        assert_eq!(redelivery_delay(3), Duration::from_secs(2));
        assert_eq!(redelivery_delay(50), Duration::from_secs(30));
    }

    #[test]
    fn the_ordering_key_is_the_last_token_of_the_subject() {
        let order_id = "0199a8f2-7c1e-7b3a-9d4e-2f6a1b3c4d5e";
        assert_eq!(ordering_key(&format!("order.placed.{order_id}")), order_id);
        assert_eq!(
            ordering_key(&format!("order.cancellation_requested.{order_id}")),
            order_id
        );
        assert_eq!(
            ordering_key("inventory.product_updated.MUG-01_b"),
            "MUG-01_b"
        );
        assert_eq!(ordering_key("no-dots"), "no-dots");
        assert_eq!(ordering_key("trailing."), "");
    }

    #[test]
    fn every_event_type_of_one_order_shares_its_key() {
        let order_id = uuid::Uuid::now_v7().to_string();
        let subjects = [
            events::streams::subject("order.placed", &order_id),
            events::streams::subject("order.cancellation_requested", &order_id),
            events::streams::subject("order.completed", &order_id),
        ];
        for subject in &subjects {
            assert_eq!(ordering_key(subject), order_id);
        }
    }

    /// Hands `message` of `key` to `keys`; returns it if it may start now.
    fn arrive(keys: &mut KeyQueues<u32>, key: &str, message: u32) -> Option<u32> {
        keys.arrive(key.to_owned(), message)
            .map(|(_, message)| message)
    }

    /// Tells `keys` the message of `key` is done; returns the key's next message, if any.
    fn finish(keys: &mut KeyQueues<u32>, key: &str) -> Option<u32> {
        keys.finish(key.to_owned()).map(|(_, message)| message)
    }

    #[test]
    fn a_message_of_an_idle_key_starts_at_once() {
        let mut keys = KeyQueues::default();
        assert_eq!(arrive(&mut keys, "a", 1), Some(1));
        assert_eq!(arrive(&mut keys, "b", 2), Some(2));
        assert_eq!((keys.held(), keys.waiting()), (2, 0));
    }

    #[test]
    fn messages_of_a_busy_key_wait_and_come_out_in_arrival_order() {
        let mut keys = KeyQueues::default();
        assert_eq!(arrive(&mut keys, "a", 1), Some(1));
        assert_eq!(arrive(&mut keys, "a", 2), None);
        assert_eq!(arrive(&mut keys, "b", 10), Some(10));
        assert_eq!(arrive(&mut keys, "a", 3), None);
        assert_eq!((keys.held(), keys.waiting()), (4, 2));
        let mut waiting: Vec<_> = keys.waiting_messages().copied().collect();
        waiting.sort_unstable();
        assert_eq!(waiting, [2, 3]);

        assert_eq!(finish(&mut keys, "a"), Some(2));
        assert_eq!(finish(&mut keys, "b"), None);
        assert_eq!(finish(&mut keys, "a"), Some(3));
        assert_eq!((keys.held(), keys.waiting()), (1, 0));
        assert_eq!(finish(&mut keys, "a"), None);
        assert_eq!(keys.held(), 0);
    }

    #[test]
    fn a_key_is_forgotten_once_its_queue_drains() {
        let mut keys = KeyQueues::default();
        assert_eq!(arrive(&mut keys, "a", 1), Some(1));
        assert_eq!(finish(&mut keys, "a"), None);
        assert!(keys.waiting_by_key.is_empty());
        // Idle again: the next message of the key starts at once.
        assert_eq!(arrive(&mut keys, "a", 2), Some(2));
        // A key that is not busy has nothing to hand over.
        assert_eq!(finish(&mut keys, "unknown"), None);
    }

    #[test]
    fn waiting_messages_are_kept_alive_several_times_per_ack_wait() {
        assert_eq!(
            progress_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert!(progress_interval(Duration::from_secs(2)) < Duration::from_secs(1));
        assert!(!progress_interval(Duration::ZERO).is_zero());
    }

    #[test]
    fn only_database_hiccups_and_early_events_are_retried_within_a_delivery() {
        assert!(HandlerError::from(sqlx::Error::PoolTimedOut).is_retryable_now());
        assert!(!HandlerError::from(sqlx::Error::RowNotFound).is_retryable_now());
        assert!(!HandlerError::Permanent("no".into()).is_retryable_now());
        assert!(HandlerError::NotYet("order.placed has not arrived".into()).is_retryable_now());
    }
}
