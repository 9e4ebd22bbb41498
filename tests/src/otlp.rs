//! An OTLP/HTTP trace receiver inside the test process: services started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it export their spans here, and a test asserts
//! on what arrived (names, parents, links, attributes) instead of needing a real collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use prost::Message as _;
use tokio::task::JoinHandle;

use crate::polling::{Check, wait_for};

/// The path the OTLP/HTTP exporter appends to `OTEL_EXPORTER_OTLP_ENDPOINT` for traces.
const TRACES_PATH: &str = "/v1/traces";

/// axum's default of 2 MiB could reject a large batch from a busy service, and a rejected
/// batch would look like spans that were never emitted.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The `kind` of a span, as OTLP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// One span as received, flattened with its resource's `service.name` so a test can look at
/// it without knowing how OTLP nests resources and scopes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Lowercase hex, 32 characters.
    pub trace_id: String,
    /// Lowercase hex, 16 characters.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// The resource attribute `service.name`, `""` if the resource has none.
    pub service_name: String,
    /// Values stringified: see [`stringify`].
    pub attributes: BTreeMap<String, String>,
    /// `(trace_id, span_id)` of each linked span, in hex.
    pub links: Vec<(String, String)>,
    /// Event names, in the order the span recorded them.
    pub events: Vec<String>,
    /// The span's status code is `ERROR`.
    pub status_error: bool,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }
}

/// A receiver serving on a free port until it is dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the OTLP receiver")?;
        let address = listener
            .local_addr()
            .context("failed to read the OTLP receiver's address")?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(TRACES_PATH, post(export))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::clone(&spans));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("the OTLP receiver stopped: {error:#}");
            }
        });
        Ok(OtlpReceiver {
            address,
            spans,
            server,
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://127.0.0.1:41234`; the
    /// exporter appends `/v1/traces` itself.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.spans).clone()
    }

    /// Polls until `done(&spans)` is true or `timeout` passes; the error then lists what was
    /// received, which is usually enough to see which span is missing.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        wait_for("the expected spans", timeout, || {
            let spans = self.spans();
            let check = if done(&spans) {
                Check::Done(spans)
            } else {
                Check::NotYet(summarize(&spans))
            };
            async move { Ok(check) }
        })
        .await
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One line per span (`service: name [kind] trace/span <- parent`), for failure messages.
pub fn summarize(spans: &[ReceivedSpan]) -> String {
    let mut summary = format!("{} spans", spans.len());
    for span in spans {
        let _ = write!(
            summary,
            "\n  {}: {} [{:?}] {}/{}",
            span.service_name, span.name, span.kind, span.trace_id, span.span_id
        );
        if let Some(parent) = &span.parent_span_id {
            let _ = write!(summary, " <- {parent}");
        }
        if span.status_error {
            summary.push_str(" ERROR");
        }
    }
    summary
}

fn lock(spans: &Mutex<Vec<ReceivedSpan>>) -> std::sync::MutexGuard<'_, Vec<ReceivedSpan>> {
    // A test that panicked while holding the lock has already failed; the spans are still
    // worth reading.
    spans.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn export(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match receive(&headers, &body) {
        Ok(received) => {
            lock(&spans).extend(received);
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err((status, message)) => (status, message).into_response(),
    }
}

/// Checks the headers, decompresses and decodes one export request. Nothing is stored
/// unless the whole request is valid, so a rejected batch never leaves half its spans.
fn receive(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ReceivedSpan>, (StatusCode, String)> {
    let content_type = header_str(headers, &header::CONTENT_TYPE);
    // The exporter's default is protobuf; a service configured for `http/json` would
    // otherwise fail here with a confusing decode error.
    if !content_type.is_empty() && !content_type.starts_with("application/x-protobuf") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this receiver accepts only application/x-protobuf (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf), not {content_type:?}"
            ),
        ));
    }
    let decompressed;
    let body = match header_str(headers, &header::CONTENT_ENCODING) {
        "" | "identity" => body,
        "gzip" => {
            let mut buffer = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut buffer)
                .map_err(|error| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the gzip body does not decompress: {error}"),
                    )
                })?;
            decompressed = buffer;
            &decompressed[..]
        }
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("this receiver accepts gzip or no content-encoding, not {other:?}"),
            ));
        }
    };
    let request = ExportTraceServiceRequest::decode(body).map_err(|error| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not an ExportTraceServiceRequest: {error}"),
        )
    })?;
    flatten(request).map_err(|message| (StatusCode::BAD_REQUEST, message))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .trim()
}

fn flatten(request: ExportTraceServiceRequest) -> Result<Vec<ReceivedSpan>, String> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .map(|attribute| stringify(attribute.value.as_ref()))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(convert(span, &service_name)?);
            }
        }
    }
    Ok(received)
}

fn convert(span: Span, service_name: &str) -> Result<ReceivedSpan, String> {
    // Wrong id lengths are an exporter bug that would otherwise surface as spans that
    // silently fail to join their trace.
    let trace_id = id(&span.trace_id, 16, "trace_id", &span.name)?;
    let span_id = id(&span.span_id, 8, "span_id", &span.name)?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(id(&span.parent_span_id, 8, "parent_span_id", &span.name)?)
    };
    let links = span
        .links
        .iter()
        .map(|link| {
            Ok((
                id(&link.trace_id, 16, "link trace_id", &span.name)?,
                id(&link.span_id, 8, "link span_id", &span.name)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let kind = match span::SpanKind::try_from(span.kind) {
        Ok(span::SpanKind::Internal) => SpanKind::Internal,
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        Ok(span::SpanKind::Unspecified) | Err(_) => SpanKind::Unspecified,
    };
    Ok(ReceivedSpan {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        service_name: service_name.to_owned(),
        attributes: attributes(&span.attributes),
        links,
        events: span.events.into_iter().map(|event| event.name).collect(),
        status_error: span
            .status
            .is_some_and(|status| status.code == status::StatusCode::Error as i32),
        name: span.name,
    })
}

fn id(bytes: &[u8], length: usize, field: &str, span_name: &str) -> Result<String, String> {
    if bytes.len() != length {
        return Err(format!(
            "span {span_name:?}: {field} has {} bytes, expected {length}",
            bytes.len()
        ));
    }
    Ok(hex(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn attributes(key_values: &[KeyValue]) -> BTreeMap<String, String> {
    key_values
        .iter()
        .map(|attribute| (attribute.key.clone(), stringify(attribute.value.as_ref())))
        .collect()
}

/// Strings as they are; integers, booleans and doubles with `to_string`; arrays as their
/// elements joined with `,`; key-value lists as `key=value` joined with `,`; bytes in hex.
fn stringify(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(string)) => string.clone(),
        Some(any_value::Value::BoolValue(boolean)) => boolean.to_string(),
        Some(any_value::Value::IntValue(integer)) => integer.to_string(),
        Some(any_value::Value::DoubleValue(double)) => double.to_string(),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(|element| stringify(Some(element)))
            .collect::<Vec<_>>()
            .join(","),
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|entry| format!("{}={}", entry.key, stringify(entry.value.as_ref())))
            .collect::<Vec<_>>()
            .join(","),
        Some(any_value::Value::BytesValue(bytes)) => hex(bytes),
        // Only profiles use a string table; a trace carrying an index has nothing to name.
        Some(any_value::Value::StringValueStrindex(_)) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    const TRACE_ID: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const ROOT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
    const CHILD_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];
    const LINKED_TRACE_ID: [u8; 16] = [0xab; 16];
    const LINKED_SPAN_ID: [u8; 8] = [0xcd; 8];

    fn key_value(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn two_spans_of_the_order_service() -> ExportTraceServiceRequest {
        let root = Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: ROOT_ID.to_vec(),
            name: "POST /orders".into(),
            kind: span::SpanKind::Server as i32,
            attributes: vec![
                key_value(
                    "http.request.method",
                    any_value::Value::StringValue("POST".into()),
                ),
                key_value("http.response.status_code", any_value::Value::IntValue(201)),
                key_value("retried", any_value::Value::BoolValue(false)),
                key_value("ratio", any_value::Value::DoubleValue(0.5)),
                key_value(
                    "skus",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(any_value::Value::StringValue("A-1".into())),
                            },
                            AnyValue {
                                value: Some(any_value::Value::IntValue(2)),
                            },
                        ],
                    }),
                ),
            ],
            ..Default::default()
        };
        let child = Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: CHILD_ID.to_vec(),
            parent_span_id: ROOT_ID.to_vec(),
            name: "publish order.placed".into(),
            kind: span::SpanKind::Producer as i32,
            links: vec![span::Link {
                trace_id: LINKED_TRACE_ID.to_vec(),
                span_id: LINKED_SPAN_ID.to_vec(),
                ..Default::default()
            }],
            events: vec![span::Event {
                name: "exception".into(),
                ..Default::default()
            }],
            status: Some(Status {
                code: status::StatusCode::Error as i32,
                message: "no ack".into(),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![key_value(
                        "service.name",
                        any_value::Value::StringValue("order".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![root, child],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    async fn post(
        receiver: &OtlpReceiver,
        body: Vec<u8>,
        content_encoding: Option<&str>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}{TRACES_PATH}", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(body);
        if let Some(encoding) = content_encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send().await.expect("the receiver answers")
    }

    #[tokio::test]
    async fn an_export_request_is_decoded_into_flat_spans() {
        let receiver = OtlpReceiver::start().await.expect("receiver starts");

        let response = post(
            &receiver,
            two_spans_of_the_order_service().encode_to_vec(),
            None,
        )
        .await;

        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-protobuf");
        let body = response.bytes().await.expect("response body");
        assert_eq!(
            ExportTraceServiceResponse::decode(body).expect("an ExportTraceServiceResponse"),
            ExportTraceServiceResponse::default()
        );
        let spans = receiver
            .wait_until(Duration::from_secs(5), |spans| spans.len() == 2)
            .await
            .expect("both spans");
        let (root, child) = (&spans[0], &spans[1]);

        assert_eq!(root.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(root.span_id, "00f067aa0ba902b7");
        assert_eq!(root.parent_span_id, None);
        assert!(root.is_root());
        assert_eq!(root.name, "POST /orders");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(root.service_name, "order");
        assert_eq!(root.attribute("http.request.method"), Some("POST"));
        assert_eq!(root.attribute("http.response.status_code"), Some("201"));
        assert_eq!(root.attribute("retried"), Some("false"));
        assert_eq!(root.attribute("ratio"), Some("0.5"));
        assert_eq!(root.attribute("skus"), Some("A-1,2"));
        assert_eq!(root.attribute("missing"), None);
        assert!(root.links.is_empty());
        assert!(root.events.is_empty());
        assert!(!root.status_error);

        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.span_id, "53995c3f42cd8ad8");
        assert_eq!(child.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(child.name, "publish order.placed");
        assert_eq!(child.kind, SpanKind::Producer);
        assert_eq!(child.service_name, "order");
        assert!(child.attributes.is_empty());
        assert_eq!(child.links, vec![("ab".repeat(16), "cd".repeat(8))],);
        assert_eq!(child.events, vec!["exception".to_owned()]);
        assert!(child.status_error);
    }

    #[tokio::test]
    async fn a_gzip_body_is_accepted() {
        let receiver = OtlpReceiver::start().await.expect("receiver starts");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(&two_spans_of_the_order_service().encode_to_vec())
            .expect("gzip");
        let body = encoder.finish().expect("gzip");

        let response = post(&receiver, body, Some("gzip")).await;

        assert_eq!(response.status(), 200);
        assert_eq!(receiver.spans().len(), 2);
    }

    #[tokio::test]
    async fn a_garbage_body_is_rejected_and_nothing_is_stored() {
        let receiver = OtlpReceiver::start().await.expect("receiver starts");

        let response = post(&receiver, b"\xff\xff\xff not protobuf".to_vec(), None).await;

        assert_eq!(response.status(), 400);
        assert!(receiver.spans().is_empty());
    }

    #[tokio::test]
    async fn an_unsupported_encoding_is_refused_with_415() {
        let receiver = OtlpReceiver::start().await.expect("receiver starts");

        let response = post(
            &receiver,
            two_spans_of_the_order_service().encode_to_vec(),
            Some("zstd"),
        )
        .await;

        assert_eq!(response.status(), 415);
        let message = response.text().await.expect("response body");
        assert!(message.contains("zstd"), "{message}");
    }

    #[tokio::test]
    async fn waiting_for_spans_that_never_come_reports_what_arrived() {
        let receiver = OtlpReceiver::start().await.expect("receiver starts");
        post(
            &receiver,
            two_spans_of_the_order_service().encode_to_vec(),
            None,
        )
        .await;

        let error = receiver
            .wait_until(Duration::from_millis(100), |spans| spans.len() > 2)
            .await
            .expect_err("only two spans arrive");

        let message = format!("{error:#}");
        assert!(message.contains("2 spans"), "{message}");
        assert!(message.contains("order: publish order.placed"), "{message}");
    }
}
