//! HTTP basics every service shares: the JSON error type, a JSON body extractor whose
//! rejections are JSON errors naming the problem, health and metrics endpoints, middleware.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use sqlx::PgPool;
use thiserror::Error;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use crate::consumer::ConsumerHealth;
use crate::metrics::{Scrape, serve_metrics, track_http};
use crate::telemetry;

/// Largest request body any service accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answered to an HTTP client as `{"error": "..."}`. Client errors say what to fix;
/// server errors are logged here, once, and answered opaquely.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request field is invalid; the body names it in `field`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 naming the invalid field, e.g. `items[0].quantity`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection {
            // A body that is JSON but not the expected shape names the field: 422.
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => rejection.status(),
        };
        ApiError::Rejected {
            status,
            message: rejection.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match &self {
            ApiError::Invalid { field, .. } => json!({ "error": self.to_string(), "field": field }),
            _ => json!({ "error": self.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

/// `axum::Json`, but a malformed body is answered with an [`ApiError`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

/// What readiness checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub consumers: Arc<ConsumerHealth>,
}

/// `/healthz` (the process is alive) and `/readyz` (database and NATS reachable, every
/// consumer pulling).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&readiness.pool),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let nats = readiness.nats.connection_state() == async_nats::connection::State::Connected;
    let consumers = readiness.consumers.all_running();
    let body = Json(json!({ "database": database, "nats": nats, "consumers": consumers }));
    if database && nats && consumers {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// Adds `/metrics`, the shared middleware and JSON fallbacks to a service's routes.
pub fn finish(routes: Router, readiness: Readiness, scrape: Scrape) -> Router {
    let metrics = scrape.metrics.clone();
    routes
        .merge(health_routes(readiness))
        .route("/metrics", get(serve_metrics).with_state(scrape))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        // Server errors are logged once, by `ApiError`; a 503 from /readyz is no failure.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status)
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        // Outermost, so a request cut off by the timeout is counted as the 408 it becomes.
        // `Router::layer` wraps each route after routing, so the route template is known.
        .layer(axum::middleware::from_fn_with_state(metrics, track_http))
}

/// Probes and scrapes every few seconds would bury the sagas' traces; they get no span.
const UNTRACED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A SERVER span per request, named `<method> <route>`, continuing the caller's trace when
/// the request carries W3C `traceparent`.
fn request_span<B>(request: &axum::http::Request<B>) -> Span {
    let path = request.uri().path();
    if UNTRACED_PATHS.contains(&path) {
        return Span::none();
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = request.method();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    telemetry::set_remote_parent(
        &span,
        telemetry::extract(&telemetry::HttpHeaders(request.headers())),
        false,
    );
    span
}

fn record_status<B>(response: &axum::http::Response<B>, _latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Per the HTTP conventions a server span is an error for 5xx only: a 4xx is the
    // client's mistake, answered correctly.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
