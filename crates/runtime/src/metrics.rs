//! Prometheus metrics: the series every service serves on `GET /metrics`, counted by hooks in
//! the consumer loop, the outbox relay, the pruner and the HTTP middleware, plus the backlog
//! gauges (outbox, consumer lag, dead letters, database pool) read from Postgres and
//! JetStream when Prometheus scrapes.
//!
//! The registry belongs to the service (its [`crate::service::Platform`]), not to the
//! process: replicas, and several services started by one test, never share a series.
//! Labels are bounded: consumer names, event types and route templates come from code, never
//! from an order id or a subject's key.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use events::streams::{Context, DLQ_PREFIX, DLQ_STREAM};
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use sqlx::PgPool;

/// How long one scrape-time reading (a query, a JetStream request) may take before the
/// scrape goes on without it; Prometheus's own scrape timeout is 10 s by default.
const READING_TIMEOUT: Duration = Duration::from_secs(2);

/// Latency buckets (seconds) for handlers and HTTP requests: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A reading taken when Prometheus scrapes, e.g. a gauge computed from a service's tables.
pub type ScrapeReading = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PublishedLabels {
    r#type: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProcessedLabels {
    consumer: String,
    r#type: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandlerLabels {
    consumer: String,
    r#type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
    stream: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeadLetterLabels {
    consumer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PrunedLabels {
    table: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What became of one delivery of a message to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Applied and acked.
    Ok,
    /// Already in the inbox: acked without effect.
    Duplicate,
    /// Not applied this time; left for redelivery with backoff.
    Retried,
    /// Moved to the `DLQ` stream.
    DeadLettered,
}

impl Processed {
    fn as_str(self) -> &'static str {
        match self {
            Processed::Ok => "ok",
            Processed::Duplicate => "duplicate",
            Processed::Retried => "retried",
            Processed::DeadLettered => "dead_lettered",
        }
    }
}

/// A service's metrics. Cloning shares the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    readings: Arc<Mutex<Vec<ScrapeReading>>>,
    events_published: Family<PublishedLabels, Counter>,
    events_processed: Family<ProcessedLabels, Counter>,
    handler_duration: HistogramFamily<HandlerLabels>,
    outbox_pending: Gauge,
    outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    consumer_pending: Family<ConsumerLabels, Gauge>,
    consumer_ack_pending: Family<ConsumerLabels, Gauge>,
    dead_letters: Family<DeadLetterLabels, Gauge>,
    rows_pruned: Family<PrunedLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max_connections: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with the series every service has.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Arc::default(),
            readings: Arc::default(),
            events_published: Family::default(),
            events_processed: Family::default(),
            handler_duration: Family::new_with_constructor(latency_histogram),
            outbox_pending: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            consumer_pending: Family::default(),
            consumer_ack_pending: Family::default(),
            dead_letters: Family::default(),
            rows_pruned: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            pool_connections: Family::default(),
            pool_max_connections: Gauge::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        {
            let mut registry = metrics
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            registry.register(
                "events_published",
                "Outbox events sent to JetStream, by event type and outcome (ok: acked by the stream; failed: not sent or not acked, retried by the next relay round)",
                metrics.events_published.clone(),
            );
            registry.register(
                "events_processed",
                "Deliveries handled by a consumer, by consumer, event type and outcome (ok, duplicate, retried, dead_lettered)",
                metrics.events_processed.clone(),
            );
            registry.register(
                "event_handler_duration_seconds",
                "Time to handle one delivery, from receipt to ack: decode, the transaction (inbox row, handler, outbox rows, commit), then the ack, redelivery request or dead letter; by consumer and event type",
                metrics.handler_duration.clone(),
            );
            registry.register(
                "outbox_pending_events",
                "Outbox rows not yet published (read at scrape time)",
                metrics.outbox_pending.clone(),
            );
            registry.register(
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest unpublished outbox row, 0 when none (read at scrape time)",
                metrics.outbox_oldest_age.clone(),
            );
            registry.register(
                "consumer_pending_messages",
                "Messages of the stream not yet delivered to this durable consumer (JetStream num_pending, read at scrape time)",
                metrics.consumer_pending.clone(),
            );
            registry.register(
                "consumer_ack_pending_messages",
                "Messages delivered to this durable consumer and not yet acked (JetStream num_ack_pending, read at scrape time)",
                metrics.consumer_ack_pending.clone(),
            );
            registry.register(
                "dead_letters",
                "Messages of this consumer held in the DLQ stream (read at scrape time)",
                metrics.dead_letters.clone(),
            );
            registry.register(
                "messaging_rows_pruned",
                "Rows the pruner deleted, by table (inbox: applied longer ago than INBOX_RETENTION; outbox: marked published by an earlier relay version)",
                metrics.rows_pruned.clone(),
            );
            registry.register(
                "http_requests",
                "HTTP requests answered, by method, route template and status class",
                metrics.http_requests.clone(),
            );
            registry.register(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route template",
                metrics.http_duration.clone(),
            );
            registry.register(
                "db_pool_connections",
                "Open database connections of the pool, by state (idle, in_use)",
                metrics.pool_connections.clone(),
            );
            registry.register(
                "db_pool_max_connections",
                "The most connections the database pool opens (DB_MAX_CONNECTIONS)",
                metrics.pool_max_connections.clone(),
            );
        }
        metrics
    }

    /// Adds a series of the service's own (e.g. the order service's saga outcomes).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .register(name, help, metric);
    }

    /// Adds a reading taken at every scrape, before the series are encoded.
    pub fn on_scrape(&self, reading: ScrapeReading) {
        self.readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(reading);
    }

    /// Counts one outbox row sent by the relay; `acked` is false when it stays pending.
    pub fn event_published(&self, subject: &str, acked: bool) {
        let labels = PublishedLabels {
            r#type: event_type_of(subject).to_owned(),
            outcome: if acked { "ok" } else { "failed" },
        };
        self.events_published.get_or_create(&labels).inc();
    }

    /// Counts rows the pruner deleted from `table` (`inbox` or `outbox`).
    pub fn rows_pruned(&self, table: &'static str, rows: u64) {
        self.rows_pruned
            .get_or_create(&PrunedLabels { table })
            .inc_by(rows);
    }

    /// Counts one delivery to `consumer` and how long it took.
    pub fn event_processed(
        &self,
        consumer: &str,
        subject: &str,
        outcome: Processed,
        took: Duration,
    ) {
        let event_type = event_type_of(subject);
        self.events_processed
            .get_or_create(&ProcessedLabels {
                consumer: consumer.to_owned(),
                r#type: event_type.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.handler_duration
            .get_or_create(&HandlerLabels {
                consumer: consumer.to_owned(),
                r#type: event_type.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The series in the Prometheus text format (0.0.4).
    /// Every series in the OpenMetrics text format, exemplars included.
    pub fn encode_openmetrics(&self) -> String {
        self.encode_with(prometheus_client::encoding::text::encode)
    }

    /// Every series in the classic Prometheus text format.
    pub fn encode(&self) -> String {
        self.encode_with(prometheus_text::encode)
    }

    fn encode_with(&self, encode: fn(&mut String, &Registry) -> std::fmt::Result) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = encode(&mut text, &registry) {
            // Only a failing writer errors, and a String never fails; keep what we have.
            let _ = writeln!(text, "# encoding failed: {error}");
        }
        text
    }
}

/// The event type of a subject `<context>.<event>.<key>`, e.g. `order.placed`: a bounded
/// label, unlike the subject, which carries the aggregate's id.
pub fn event_type_of(subject: &str) -> &str {
    match subject.match_indices('.').nth(1) {
        Some((end, _)) => &subject[..end],
        None => subject,
    }
}

/// Everything the `/metrics` endpoint reads from at scrape time.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub metrics: Metrics,
    pub pool: PgPool,
    pub jetstream: jetstream::Context,
    /// The service's durable consumers and the streams they read.
    pub consumers: Vec<(String, Context)>,
}

/// `GET /metrics`: refresh the scrape-time gauges, then encode every series: as OpenMetrics
/// when the scraper accepts it (Prometheus does), which carries the exemplars that link a
/// saga duration to its trace; otherwise as the classic Prometheus text format.
pub async fn serve_metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    scrape.refresh().await;
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains(OPENMETRICS));
    if openmetrics {
        (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            scrape.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            scrape.metrics.encode(),
        )
            .into_response()
    }
}

const OPENMETRICS: &str = "application/openmetrics-text";

impl Scrape {
    async fn refresh(&self) {
        let readings: Vec<ScrapeReading> = self
            .metrics
            .readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut pending: Vec<BoxFuture<'_, ()>> = vec![
            Box::pin(self.read_outbox()),
            Box::pin(self.read_dead_letters()),
        ];
        for (consumer, stream) in &self.consumers {
            pending.push(Box::pin(self.read_consumer(consumer, *stream)));
        }
        pending.extend(readings.iter().map(|reading| reading()));
        let bounded = pending
            .into_iter()
            .map(|reading| tokio::time::timeout(READING_TIMEOUT, reading));
        join_all(bounded).await;
        self.read_pool();
    }

    async fn read_outbox(&self) {
        // The relay deletes what it publishes, so every row is pending; the predicate still
        // leaves out rows an earlier relay version marked published until the pruner deletes
        // them, and lets the count read the small partial index `outbox_pending`.
        let backlog: Result<(i64, f64), sqlx::Error> = sqlx::query_as(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        match backlog {
            Ok((pending, oldest_age)) => {
                self.metrics.outbox_pending.set(pending);
                self.metrics.outbox_oldest_age.set(oldest_age.max(0.0));
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox backlog for metrics"),
        }
    }

    async fn read_consumer(&self, consumer: &str, stream: Context) {
        let info = match self.jetstream.get_stream(stream.stream()).await {
            Ok(handle) => handle
                .consumer_info(consumer)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let labels = ConsumerLabels {
            consumer: consumer.to_owned(),
            stream: stream.stream(),
        };
        match info {
            Ok(info) => {
                let pending = i64::try_from(info.num_pending).unwrap_or(i64::MAX);
                let ack_pending = i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX);
                self.metrics
                    .consumer_pending
                    .get_or_create(&labels)
                    .set(pending);
                self.metrics
                    .consumer_ack_pending
                    .get_or_create(&labels)
                    .set(ack_pending);
            }
            Err(error) => {
                tracing::debug!(consumer, %error, "cannot read consumer info for metrics")
            }
        }
    }

    async fn read_dead_letters(&self) {
        let Ok(stream) = self.jetstream.get_stream(DLQ_STREAM).await else {
            return;
        };
        for (consumer, _) in &self.consumers {
            match dead_letters_of(&stream, consumer).await {
                Ok(count) => {
                    let labels = DeadLetterLabels {
                        consumer: consumer.clone(),
                    };
                    self.metrics.dead_letters.get_or_create(&labels).set(count);
                }
                Err(error) => {
                    tracing::debug!(consumer, %error, "cannot read dead letters for metrics");
                }
            }
        }
    }

    fn read_pool(&self) {
        let open = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(open);
        let connections = &self.metrics.pool_connections;
        connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        connections
            .get_or_create(&PoolLabels { state: "in_use" })
            .set((open - idle).max(0));
        let max = self.pool.options().get_max_connections();
        self.metrics.pool_max_connections.set(i64::from(max));
    }
}

/// How many letters of `consumer` the DLQ stream holds: the per-subject counts of
/// `dlq.<consumer>.>`, one entry per original subject.
async fn dead_letters_of(
    stream: &jetstream::stream::Stream,
    consumer: &str,
) -> Result<i64, jetstream::stream::InfoError> {
    let mut subjects = stream
        .info_with_subjects(format!("{DLQ_PREFIX}.{consumer}.>"))
        .await?;
    let mut total = 0i64;
    while let Some(subject) = subjects.next().await {
        let (_, messages) = subject?;
        total = total.saturating_add(i64::try_from(messages).unwrap_or(i64::MAX));
    }
    Ok(total)
}

/// Middleware counting every request by its route template (`/orders/{id}`, not the path),
/// and timing it. Requests no route matched share the route label `unmatched`.
pub async fn track_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status_class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status_class,
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_type_label_drops_the_subjects_key() {
        assert_eq!(event_type_of("order.placed.0190aa"), "order.placed");
        assert_eq!(
            event_type_of("inventory.product_updated.MUG"),
            "inventory.product_updated"
        );
        assert_eq!(event_type_of("odd"), "odd");
    }

    #[test]
    fn counters_are_encoded_as_prometheus_text_with_their_labels() {
        let metrics = Metrics::new();
        metrics.event_published("order.placed.0190aa", true);
        metrics.event_processed(
            "payment-order",
            "order.placed.0190aa",
            Processed::DeadLettered,
            Duration::from_millis(3),
        );
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE events_published_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"events_published_total{type="order.placed",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"events_processed_total{consumer="payment-order",type="order.placed",outcome="dead_lettered"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"event_handler_duration_seconds_count{consumer="payment-order",type="order.placed"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("0190aa"),
            "no series may carry an id: {text}"
        );
    }
}
