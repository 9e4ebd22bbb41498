//! One trace per saga: with the services exporting to an OTLP receiver inside the test, every
//! order's saga — the HTTP request, each reaction in all five services, every compensation —
//! is one trace; each consumer span is the child of the publish that sent its message; the
//! outbox keeps the trace across a restart of the relay; a customer's cancel joins the
//! saga's trace; and no customer data is in a span.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use e2e::api::{COUNTRY_UNSERVED, OrderRequest, PAYMENT_DECLINED};
use e2e::faults::{EMPTY_SKU, STOCKED_SKU, stock_products};
use e2e::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, summarize};
use e2e::polling::{Check, SAGA_TIMEOUT, wait_for};
use e2e::system::{Service, System, SystemOptions};

/// How long the services' batch exporters may take to deliver the last spans.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment that makes a service export its spans to `receiver`, quickly.
fn tracing_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

async fn start_traced(receiver: &OtlpReceiver) -> anyhow::Result<System> {
    // JSON logs for the order service, to find the trace ids in them.
    let mut options = SystemOptions::default().with_env(Service::Order, "LOG_FORMAT", "json");
    for service in Service::ALL {
        for (key, value) in tracing_env(receiver) {
            options = options.with_env(service, key, &value);
        }
    }
    System::start(options).await
}

/// The spans of one trace.
fn trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect()
}

fn services_in(spans: &[&ReceivedSpan]) -> BTreeSet<String> {
    spans.iter().map(|span| span.service_name.clone()).collect()
}

fn has_span(spans: &[&ReceivedSpan], service: &str, name: &str) -> bool {
    spans
        .iter()
        .any(|span| span.service_name == service && span.name == name)
}

/// Every consumer span in the trace is the child of the producer span that published the
/// message it processed (same message id), and also links to it.
fn check_consumer_parents(spans: &[&ReceivedSpan]) -> anyhow::Result<()> {
    for consumer in spans.iter().filter(|span| span.kind == SpanKind::Consumer) {
        let message_id = consumer
            .attribute("messaging.message.id")
            .with_context(|| format!("{} has no messaging.message.id", consumer.name))?;
        let parent = spans
            .iter()
            .find(|span| Some(&span.span_id) == consumer.parent_span_id.as_ref())
            .with_context(|| {
                format!(
                    "the parent of {} in {} was not received",
                    consumer.name, consumer.service_name
                )
            })?;
        ensure!(
            parent.kind == SpanKind::Producer
                && parent.attribute("messaging.message.id") == Some(message_id),
            "the parent of {} ({}) is {} [{:?}], not the publish of message {message_id}",
            consumer.name,
            consumer.service_name,
            parent.name,
            parent.kind
        );
        ensure!(
            consumer
                .links
                .iter()
                .any(|(trace_id, span_id)| *trace_id == parent.trace_id
                    && *span_id == parent.span_id),
            "{} does not link to the publish that is its parent",
            consumer.name
        );
    }
    Ok(())
}

const ALL_SERVICES: [&str; 5] = [
    "order-service",
    "inventory-service",
    "payment-service",
    "fulfillment-service",
    "notification-service",
];

/// Whether the trace has reached the end of the saga: all five services, the notification
/// of the terminal event, and the parent of every span (each service exports on its own
/// schedule, so a child can arrive before its parent).
fn saga_trace_complete(spans: &[ReceivedSpan], trace_id: &str, terminal_event: &str) -> bool {
    let spans = trace(spans, trace_id);
    let terminal = format!("process {terminal_event}.*");
    let parents_received = spans.iter().all(|span| {
        span.parent_span_id
            .as_ref()
            .is_none_or(|parent| spans.iter().any(|other| other.span_id == *parent))
    });
    services_in(&spans).len() == ALL_SERVICES.len()
        && has_span(&spans, "notification-service", &terminal)
        && parents_received
}

#[tokio::test]
async fn every_saga_is_one_trace_across_all_five_services() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let system = start_traced(&receiver).await?;
    stock_products(&system).await?;

    let email = "trace-me@example.com";
    let address = "Secret Lane 7";
    let paths = [
        (
            "happy",
            OrderRequest::new(STOCKED_SKU, 1),
            "order.completed",
        ),
        (
            "out of stock",
            OrderRequest::new(EMPTY_SKU, 1),
            "order.rejected",
        ),
        (
            "declined",
            OrderRequest::new(STOCKED_SKU, 1).with_payment_method(PAYMENT_DECLINED),
            "order.cancelled",
        ),
        (
            "cannot ship",
            OrderRequest::new(STOCKED_SKU, 1).with_country(COUNTRY_UNSERVED),
            "order.cancelled",
        ),
    ];
    let mut placed = Vec::new();
    for (path, request, terminal_event) in paths {
        let mut request = request.with_customer("c-trace", email);
        request.shipping.address = address.to_owned();
        let order_id = system.place_accepted_order(&request).await?;
        placed.push((path, order_id, terminal_event));
    }

    let mut traces = Vec::new();
    for (path, order_id, terminal_event) in &placed {
        let order = system.wait_terminal(*order_id, SAGA_TIMEOUT).await?;
        let trace_id = order
            .trace_id
            .with_context(|| format!("GET /orders/{order_id} ({path}) has no trace_id"))?;
        traces.push((*path, *order_id, trace_id, *terminal_event));
    }
    let spans = receiver
        .wait_until(EXPORT_TIMEOUT, |spans| {
            traces.iter().all(|(_, _, trace_id, terminal_event)| {
                saga_trace_complete(spans, trace_id, terminal_event)
            })
        })
        .await?;

    for (path, order_id, trace_id, _) in &traces {
        let in_trace = trace(&spans, trace_id);
        let context = || format!("the {path} saga's trace:\n{}", summarize_refs(&in_trace));

        // One trace per order: every span naming the order is in the order's trace.
        let order_id = order_id.to_string();
        for span in spans
            .iter()
            .filter(|span| span.attribute("order.id") == Some(&order_id))
        {
            ensure!(
                span.trace_id == *trace_id,
                "{} of {} names order {order_id} ({path}) but is in trace {}, not {trace_id}",
                span.name,
                span.service_name,
                span.trace_id
            );
        }
        // It starts at the HTTP request that placed the order.
        let roots: Vec<_> = in_trace.iter().filter(|span| span.is_root()).collect();
        ensure!(
            roots.len() == 1
                && roots[0].name == "POST /orders"
                && roots[0].kind == SpanKind::Server
                && roots[0].service_name == "order-service",
            "expected one root, the POST /orders server span; {}",
            context()
        );
        ensure!(
            services_in(&in_trace) == ALL_SERVICES.iter().map(|s| s.to_string()).collect(),
            "not all five services are in {}",
            context()
        );
        ensure!(
            has_span(&in_trace, "order-service", "publish order.placed.*")
                && has_span(&in_trace, "inventory-service", "process order.placed.*")
                && in_trace
                    .iter()
                    .any(|span| span.name.starts_with("postgresql ")),
            "the publish of order.placed, its processing or the database work is missing from {}",
            context()
        );
        check_consumer_parents(&in_trace).with_context(context)?;
    }

    // Compensations are in the saga's trace: a declined payment releases the stock, a
    // shipment that cannot be made also refunds the payment.
    let (_, _, declined, _) = &traces[2];
    let declined = trace(&spans, declined);
    ensure!(
        has_span(&declined, "inventory-service", "process payment.declined.*")
            && has_span(
                &declined,
                "inventory-service",
                "publish inventory.released.*"
            ),
        "the declined saga's release is not in its trace:\n{}",
        summarize_refs(&declined)
    );
    let (_, _, unserved, _) = &traces[3];
    let unserved = trace(&spans, unserved);
    ensure!(
        has_span(&unserved, "payment-service", "process fulfillment.failed.*")
            && has_span(&unserved, "payment-service", "publish payment.refunded.*")
            && has_span(&unserved, "payment-service", "POST /v1/refunds"),
        "the unshippable saga's refund is not in its trace:\n{}",
        summarize_refs(&unserved)
    );

    // A log line leads to its trace: the order service's "order placed" line of the happy
    // saga carries the saga's trace id.
    let (_, _, happy, _) = &traces[0];
    let log = std::fs::read_to_string(system.log_path(Service::Order))?;
    let needle = format!("\"trace_id\":\"{happy}\"");
    ensure!(
        log.lines().any(|line| line.contains(&needle)
            && line.contains("order placed")
            && line.contains("\"span_id\":\"")),
        "no JSON log line of the order service carries the happy saga's trace and span ids"
    );

    // The saga duration histogram carries exemplars: a dashboard leads from a bucket to a
    // trace of a saga that landed in it.
    let scrape = system
        .http_client()
        .get(format!("{}/metrics", system.base_url(Service::Order)))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await?
        .text()
        .await?;
    let exemplars: Vec<&str> = scrape
        .lines()
        .filter(|line| line.starts_with("saga_duration_seconds_bucket"))
        .filter_map(|line| line.split_once(" # ").map(|(_, exemplar)| exemplar))
        .collect();
    ensure!(
        traces.iter().any(|(_, _, trace_id, _)| {
            exemplars
                .iter()
                .any(|exemplar| exemplar.contains(&format!("trace_id=\"{trace_id}\"")))
        }),
        "no saga duration exemplar names one of the sagas' traces:\n{}",
        scrape
            .lines()
            .filter(|line| line.starts_with("saga_duration"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No customer data in any span.
    for span in &spans {
        for (key, value) in &span.attributes {
            ensure!(
                !value.contains(email) && !value.contains(address),
                "{} of {} carries customer data in {key}: {value}",
                span.name,
                span.service_name
            );
        }
    }
    system.shutdown().await
}

#[tokio::test]
async fn the_outbox_keeps_the_trace_across_a_relay_restart() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut system = start_traced(&receiver).await?;
    stock_products(&system).await?;

    // With the broker down the order is accepted and its order.placed waits in the outbox;
    // the order service then dies before it could publish it.
    system.stop_nats()?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new(STOCKED_SKU, 1))
        .await?;
    let order = system.order(order_id).await?;
    let trace_id = order.trace_id.context("the order has no trace_id")?;
    let request_spans = receiver
        .wait_until(EXPORT_TIMEOUT, |spans| {
            let spans = trace(spans, &trace_id);
            has_span(&spans, "order-service", "place_order")
                && has_span(&spans, "order-service", "POST /orders")
        })
        .await?;
    let place_order = trace(&request_spans, &trace_id)
        .into_iter()
        .find(|span| span.name == "place_order")
        .cloned()
        .context("no place_order span")?;
    system.kill(Service::Order);
    let published_before_restart = receiver.spans().iter().any(|span| {
        span.trace_id == trace_id && span.name == "publish order.placed.*" && !span.status_error
    });
    ensure!(
        !published_before_restart,
        "order.placed was published although NATS was down"
    );

    system.start_nats().await?;
    let env = tracing_env(&receiver);
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    system.restart(Service::Order, &env).await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(
        order.status == "completed",
        "the order ended {}",
        order.outcome()
    );

    let spans = receiver
        .wait_until(EXPORT_TIMEOUT, |spans| {
            saga_trace_complete(spans, &trace_id, "order.completed")
        })
        .await?;
    let in_trace = trace(&spans, &trace_id);
    let publish = in_trace
        .iter()
        .find(|span| span.name == "publish order.placed.*" && !span.status_error)
        .with_context(|| {
            format!(
                "no successful publish of order.placed:\n{}",
                summarize_refs(&in_trace)
            )
        })?;
    ensure!(
        publish.parent_span_id.as_ref() == Some(&place_order.span_id),
        "the restarted relay's publish is not a child of the request that wrote the row:\n{}",
        summarize_refs(&in_trace)
    );
    check_consumer_parents(&in_trace)?;
    ensure!(
        services_in(&in_trace).len() == ALL_SERVICES.len(),
        "not all services joined the trace:\n{}",
        summarize_refs(&in_trace)
    );
    system.shutdown().await
}

fn summarize_refs(spans: &[&ReceivedSpan]) -> String {
    let owned: Vec<ReceivedSpan> = spans.iter().map(|span| (*span).clone()).collect();
    summarize(&owned)
}

#[tokio::test]
async fn a_customers_cancel_joins_the_sagas_trace() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut system = start_traced(&receiver).await?;
    stock_products(&system).await?;

    // Payment is held up, so the cancel finds the order reserved and undoes the reservation.
    system.pause(Service::Payment)?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new(STOCKED_SKU, 1))
        .await?;
    wait_for("the reservation", SAGA_TIMEOUT, || async {
        let order = system.order(order_id).await?;
        Ok(if order.history_types().contains(&"inventory.reserved") {
            Check::Done(())
        } else {
            Check::NotYet(format!("{:?}", order.history_types()))
        })
    })
    .await?;
    let cancel = system.cancel_order(order_id).await?;
    ensure!(
        cancel.status == 202,
        "cancel answered {}: {}",
        cancel.status,
        cancel.text
    );
    system.resume(Service::Payment)?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(
        order.status == "cancelled" && order.reason.as_deref() == Some("customer_request"),
        "the order ended {}",
        order.outcome()
    );
    let trace_id = order.trace_id.context("the order has no trace_id")?;

    let spans = receiver
        .wait_until(EXPORT_TIMEOUT, |spans| {
            saga_trace_complete(spans, &trace_id, "order.cancelled")
                && has_span(
                    &trace(spans, &trace_id),
                    "fulfillment-service",
                    "process order.cancellation_requested.*",
                )
        })
        .await?;
    let in_trace = trace(&spans, &trace_id);
    let summary = || summarize_refs(&in_trace);
    let place_order = in_trace
        .iter()
        .find(|span| span.name == "place_order")
        .with_context(|| format!("no place_order span:\n{}", summary()))?;
    let cancel_span = in_trace
        .iter()
        .find(|span| span.name == "cancel order")
        .with_context(|| format!("no cancel order span:\n{}", summary()))?;
    ensure!(
        cancel_span.parent_span_id.as_ref() == Some(&place_order.span_id),
        "the cancellation is not a child of the request that placed the order:\n{}",
        summary()
    );
    // The cancel request is a trace of its own, which the saga's cancellation links to.
    let request = spans
        .iter()
        .find(|span| span.name == "POST /orders/{order_id}/cancel")
        .context("no span of the cancel request")?;
    ensure!(
        request.trace_id != trace_id
            && cancel_span
                .links
                .iter()
                .any(|(trace, _)| *trace == request.trace_id),
        "the cancellation does not link to the cancel request"
    );
    for service in [
        "inventory-service",
        "payment-service",
        "fulfillment-service",
    ] {
        ensure!(
            has_span(&in_trace, service, "process order.cancellation_requested.*"),
            "{service} did not process the cancellation in the saga's trace:\n{}",
            summary()
        );
    }
    check_consumer_parents(&in_trace)?;
    system.shutdown().await
}
