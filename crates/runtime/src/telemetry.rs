//! Logs and traces. Logs: `tracing` to stdout as JSON (or pretty for local runs), filtered by
//! `RUST_LOG`. Traces: OpenTelemetry over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with W3C Trace Context carried over HTTP
//! headers, outbox rows and NATS headers; without an endpoint there is no exporter and no
//! OpenTelemetry layer at all.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::span::Id;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::LogFormat;

/// The W3C header naming the trace and the parent span.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes what is still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered. Call once, after the service has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

/// Installs the global subscriber: logs always, traces when an OTLP endpoint is configured.
/// `service` names the service unless `OTEL_SERVICE_NAME` does. Call once, first thing in
/// `main`; a second call (two services in one test process) keeps the first subscriber.
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let provider = otlp_endpoint_configured()
        .then(|| tracer_provider(service))
        .and_then(|built| match built {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("tracing disabled: cannot build the OTLP exporter: {error}");
                None
            }
        });
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .map_event_format(WithTraceIds)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .fmt_fields(without_span_attributes())
            .with_filter(log_filter)
            .boxed(),
    };
    // Spans are exported whatever RUST_LOG says about logs: turning logs down must not cut
    // the saga's trace into pieces.
    let traces = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("order-saga");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new("info"))
            .and_then(TraceIdsLayer)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && let Some(provider) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Telemetry { provider }
}

/// Fields named by the OpenTelemetry conventions (`otel.kind`, `messaging.system`, ...) are
/// for the trace; on a terminal they would drown each log line, so pretty logs leave them out.
fn without_span_attributes() -> impl for<'writer> FormatFields<'writer> + 'static {
    const TRACE_ONLY: [&str; 6] = ["otel.", "messaging.", "db.", "http.", "url.", "error.type"];
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let name = field.name();
        if TRACE_ONLY.iter().any(|prefix| name.starts_with(prefix)) {
            return Ok(());
        }
        // Each kept field brings its own leading space, so skipped ones leave no gap.
        if name == "message" {
            write!(writer, " {value:?}")
        } else {
            write!(writer, " {name}={value:?}")
        }
    })
}

fn otlp_endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    // The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let resource = if std::env::var("OTEL_SERVICE_NAME").is_ok() {
        Resource::builder().build()
    } else {
        Resource::builder()
            .with_service_name(format!("{service}-service"))
            .build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The trace and span ids of an entered span, kept in its extensions for the log formatter.
#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Records the OpenTelemetry ids of each span when it is first entered.
#[derive(Debug, Default)]
struct TraceIdsLayer;

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        // Entering a span calls the subscriber directly, not from inside another dispatch,
        // so the default dispatcher is the one this layer belongs to.
        let context = tracing::dispatcher::get_default(|dispatch| {
            tracing_opentelemetry::get_otel_context(id, dispatch)
        });
        let Some(context) = context else { return };
        let span_context = context.span().span_context().clone();
        if span_context.is_valid() {
            span.extensions_mut().insert(TraceIds {
                trace_id: span_context.trace_id().to_string(),
                span_id: span_context.span_id().to_string(),
            });
        }
    }
}

/// The JSON log format with `trace_id` and `span_id` of the current span first, so a log line
/// leads to its trace.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx
            .lookup_current()
            .and_then(|span| span.extensions().get::<TraceIds>().cloned());
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        // The JSON formatter writes one object per line; splicing two fields in after its
        // opening brace is simpler than re-implementing the formatter.
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The W3C trace context of `span` as headers (`traceparent`, `tracestate`); empty when
/// tracing is off or the span is not sampled.
pub fn context_headers(span: &tracing::Span) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut headers);
    }
    headers
}

/// The trace id of `span`, if it is in a trace (tracing on and the span sampled).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The `traceparent` of `span`, if it has one.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    context_headers(span).remove(TRACEPARENT)
}

/// The remote context carried by `carrier` (headers of a message, a request, an outbox row).
pub fn extract(carrier: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(carrier)
}

/// The remote context of a stored `traceparent`.
pub fn context_of_traceparent(traceparent: &str) -> opentelemetry::Context {
    let headers = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    extract(&headers)
}

/// Makes `span` a child of `parent` when `parent` carries a valid remote span; with `link`,
/// also links to it, as the messaging conventions ask of consumers. Call before entering.
pub fn set_remote_parent(span: &tracing::Span, parent: opentelemetry::Context, link: bool) {
    let remote = parent.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    if link {
        span.add_link(remote);
    }
    // Fails only when tracing is off (no layer) or the span already started: nothing to join.
    let _ = span.set_parent(parent);
}

/// Puts `span`, work started later on behalf of an earlier request (a timer firing, a second
/// request about the same saga), into the trace of that earlier request, stored as
/// `traceparent`, linking to the work that started it. Call before entering.
pub fn join_stored_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let starter = tracing::Span::current().context();
    let starter = starter.span().span_context().clone();
    if starter.is_valid() {
        span.add_link(starter);
    }
    set_remote_parent(span, context_of_traceparent(traceparent), false);
}

/// The trace id of a stored `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let trace_id = traceparent.split('-').nth(1)?;
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
}

/// W3C trace context in NATS message headers.
pub struct NatsHeaders<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads W3C trace context from NATS message headers.
pub struct NatsHeadersRef<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Reads W3C trace context from HTTP request headers.
pub struct HttpHeaders<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The subject template of a subject (`order.placed.<order id>` → `order.placed.*`), the
/// low-cardinality destination name spans are named after.
pub fn subject_template(subject: &str) -> String {
    match subject.rsplit_once('.') {
        Some((event_type, _key)) => format!("{event_type}.*"),
        None => subject.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_templates_hide_the_key() {
        assert_eq!(subject_template("order.placed.0191-abc"), "order.placed.*");
        assert_eq!(
            subject_template("inventory.product_updated.MUG"),
            "inventory.product_updated.*"
        );
        assert_eq!(subject_template("plain"), "plain");
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(traceparent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn a_stored_traceparent_becomes_a_remote_parent() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_of_traceparent(traceparent);
        let span = context.span();
        let remote = span.span_context();
        assert!(remote.is_valid() && remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            !context_of_traceparent("nonsense")
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn nats_headers_carry_the_context_both_ways() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(
            &context_of_traceparent(traceparent),
            &mut NatsHeaders(&mut headers),
        );
        assert_eq!(
            headers.get(TRACEPARENT).map(|v| v.as_str()),
            Some(traceparent)
        );
        let back = extract(&NatsHeadersRef(&headers));
        assert_eq!(
            back.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }
}
