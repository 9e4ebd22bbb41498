//! The order service's own series: saga outcomes and saga durations, counted once the
//! transaction announcing the outcome has committed, and sagas in flight by status, read
//! from the orders table at scrape time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use events::Event;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use runtime::metrics::Metrics;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Status;

/// The statuses of a saga that has not ended.
const IN_FLIGHT: [Status; 4] = [
    Status::Pending,
    Status::Reserved,
    Status::Paid,
    Status::Cancelling,
];

/// Saga duration buckets (seconds): 50 ms up to well past the default 30 s deadline.
const SAGA_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    status: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// The exemplar of a saga duration: the saga's trace, so a dashboard leads from a slow
/// bucket to one trace that landed in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: String,
}

type SagaHistogram = HistogramWithExemplars<TraceExemplar>;

fn saga_histogram() -> SagaHistogram {
    HistogramWithExemplars::new(SAGA_BUCKETS.into_iter())
}

/// The saga series, registered in the service's registry.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    durations: Family<StatusLabels, SagaHistogram, fn() -> SagaHistogram>,
}

impl SagaMetrics {
    /// Registers the saga series, and the in-flight gauges read from `pool` at each scrape.
    pub fn register(metrics: &Metrics, pool: PgPool) -> SagaMetrics {
        let saga = SagaMetrics {
            outcomes: Family::default(),
            durations: Family::new_with_constructor(saga_histogram),
        };
        metrics.register(
            "saga_outcomes",
            "Sagas ended, by terminal status (completed, rejected, cancelled) and reason (none for completed)",
            saga.outcomes.clone(),
        );
        metrics.register(
            "saga_duration_seconds",
            "Time from accepting an order to the commit of its terminal outcome, by terminal status",
            saga.durations.clone(),
        );
        let in_flight: Family<StatusLabels, Gauge> = Family::default();
        let oldest: Family<StatusLabels, Gauge<f64, AtomicU64>> = Family::default();
        metrics.register(
            "sagas_in_flight",
            "Orders not yet terminal, by status (read from the orders table at scrape time)",
            in_flight.clone(),
        );
        metrics.register(
            "saga_in_flight_oldest_age_seconds",
            "Age of the oldest order in each non-terminal status, 0 when none (read at scrape time); a stuck saga shows here",
            oldest.clone(),
        );
        metrics.on_scrape(Arc::new(move || {
            let (pool, in_flight, oldest) = (pool.clone(), in_flight.clone(), oldest.clone());
            Box::pin(async move { read_in_flight(&pool, &in_flight, &oldest).await })
        }));
        saga
    }

    /// Counts the saga outcome an outgoing event announces, if it announces one.
    pub fn announced(&self, event: &Event) {
        let (status, reason, order_id) = match event {
            Event::OrderCompleted(completed) => ("completed", "none", completed.order_id),
            Event::OrderRejected(rejected) => {
                ("rejected", rejected.reason.as_str(), rejected.order_id)
            }
            Event::OrderCancelled(cancelled) => {
                ("cancelled", cancelled.reason.as_str(), cancelled.order_id)
            }
            _ => return,
        };
        self.outcomes
            .get_or_create(&OutcomeLabels { status, reason })
            .inc();
        if let Some(age) = age_of(order_id) {
            // Called while processing the event that ended the saga, so the current span is
            // in the saga's trace.
            let exemplar = runtime::telemetry::trace_id(&tracing::Span::current())
                .map(|trace_id| TraceExemplar { trace_id });
            self.durations
                .get_or_create(&StatusLabels { status })
                .observe(age.as_secs_f64(), exemplar, None);
        }
    }
}

/// How long ago the order was accepted: its id is a UUIDv7 minted by `POST /orders`, whose
/// leading bits are that moment.
fn age_of(order_id: Uuid) -> Option<Duration> {
    let (seconds, nanos) = order_id.get_timestamp()?.to_unix();
    let accepted = UNIX_EPOCH + Duration::new(seconds, nanos);
    SystemTime::now().duration_since(accepted).ok()
}

async fn read_in_flight(
    pool: &PgPool,
    in_flight: &Family<StatusLabels, Gauge>,
    oldest: &Family<StatusLabels, Gauge<f64, AtomicU64>>,
) {
    let statuses: Vec<&str> = IN_FLIGHT.iter().map(|status| status.as_str()).collect();
    let rows: Result<Vec<(String, i64, f64)>, sqlx::Error> = sqlx::query_as(
        "SELECT status, count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
         FROM orders WHERE status = ANY($1) GROUP BY status",
    )
    .bind(&statuses)
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, "cannot read sagas in flight for metrics");
            return;
        }
    };
    // Every status is reported, 0 when no order has it, so a drained status reads 0.
    for status in IN_FLIGHT {
        let row = rows.iter().find(|(name, _, _)| name == status.as_str());
        let labels = StatusLabels {
            status: status.as_str(),
        };
        in_flight
            .get_or_create(&labels)
            .set(row.map_or(0, |(_, count, _)| *count));
        oldest
            .get_or_create(&labels)
            .set(row.map_or(0.0, |(_, _, age)| age.max(0.0)));
    }
}

#[cfg(test)]
mod tests {
    use events::order::{CancelReason, OrderCancellationRequested, OrderCancelled};

    use super::*;

    #[tokio::test]
    async fn a_cancellation_is_counted_with_its_reason_and_duration() {
        let metrics = Metrics::new();
        let saga = SagaMetrics::register(&metrics, lazy_pool());
        saga.announced(&Event::OrderCancelled(OrderCancelled {
            order_id: Uuid::now_v7(),
            reason: CancelReason::PaymentDeclined,
        }));
        let text = metrics.encode();
        assert!(
            text.contains(r#"saga_outcomes_total{status="cancelled",reason="payment_declined"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"saga_duration_seconds_count{status="cancelled"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_cancellation_request_ends_no_saga() {
        let metrics = Metrics::new();
        let saga = SagaMetrics::register(&metrics, lazy_pool());
        saga.announced(&Event::OrderCancellationRequested(
            OrderCancellationRequested {
                order_id: Uuid::now_v7(),
                reason: CancelReason::CustomerRequest,
            },
        ));
        assert!(!metrics.encode().contains("saga_outcomes_total{"));
    }

    fn lazy_pool() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool only parses its URL")
    }
}
