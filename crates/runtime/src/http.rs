//! HTTP basics every service shares: the JSON error type, a JSON body extractor whose
//! rejections are JSON errors naming the problem, health, metrics and OpenAPI endpoints,
//! middleware.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use thiserror::Error;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticator;
use crate::consumer::ConsumerHealth;
use crate::metrics::{Scrape, serve_metrics, track_http};
use crate::rate_limit::{self, RateLimit};
use crate::telemetry;

/// Largest request body any service accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A request still unanswered after this is answered `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to act on.
    pub error: String,
    /// The request field at fault (e.g. `items[0].quantity`), when one field is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// An error answered to an HTTP client as `{"error": "..."}`. Client errors say what to fix;
/// server errors are logged here, once, and answered opaquely.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No caller could be established (no or a bad bearer token): `401`.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but may not do this: `403`.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request field is invalid; the body names it in `field`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// The client is over its rate; `Retry-After` says when to come back.
    #[error("too many requests from this client; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
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
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let field = match &self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            field,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
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
    Router::from(health_api().with_state(readiness))
}

pub(crate) fn health_api() -> OpenApiRouter<Readiness> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(ready))
}

/// What `/healthz` answers.
#[derive(Debug, Serialize, ToSchema)]
struct Liveness {
    #[schema(inline)]
    status: Alive,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Alive {
    Ok,
}

/// What `/readyz` answers: which dependency is reachable.
#[derive(Debug, Serialize, ToSchema)]
struct ReadinessReport {
    database: bool,
    nats: bool,
    consumers: bool,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = crate::openapi::OPERATIONS, responses(
    (status = 200, description = "The process answers", body = Liveness),
))]
async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: Alive::Ok })
}

/// The database and NATS are reachable and every consumer is pulling.
#[utoipa::path(get, path = "/readyz", tag = crate::openapi::OPERATIONS, responses(
    (status = 200, description = "Ready for traffic", body = ReadinessReport),
    (status = 503, description = "Not ready; the body says what is missing",
        body = ReadinessReport),
))]
async fn ready(State(readiness): State<Readiness>) -> Response {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&readiness.pool),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let nats = readiness.nats.connection_state() == async_nats::connection::State::Connected;
    let consumers = readiness.consumers.all_running();
    let body = Json(ReadinessReport {
        database,
        nats,
        consumers,
    });
    if database && nats && consumers {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

pub(crate) fn metrics_api() -> OpenApiRouter<Scrape> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The service's Prometheus metrics; OpenMetrics when the `Accept` header asks for it.
// A wrapper, so that the route's documentation sits with the other shared routes'.
#[utoipa::path(get, path = "/metrics", tag = crate::openapi::OPERATIONS, responses(
    (status = 200, description = "The metrics, as Prometheus text or OpenMetrics", content(
        (String = "text/plain; version=0.0.4; charset=utf-8"),
        (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    )),
))]
async fn metrics(scrape: State<Scrape>, headers: HeaderMap) -> Response {
    serve_metrics(scrape, headers).await
}

pub(crate) fn document_api() -> OpenApiRouter<Arc<OpenApi>> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = crate::openapi::OPERATIONS, responses(
    (status = 200, description = "The service's OpenAPI document", content(
        (Object = "application/json"),
    )),
    (status = 500, description = "The document could not be serialised", body = ErrorBody),
))]
async fn openapi_json(State(document): State<Arc<OpenApi>>) -> Result<Response, ApiError> {
    let body = document
        .to_json()
        .context("failed to serialise the OpenAPI document")?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Who may call a service's own routes, and how often.
#[derive(Debug, Clone)]
pub struct Access {
    /// Establishes each request's [`crate::auth::Caller`].
    pub authenticator: Arc<Authenticator>,
    /// Per-client limit; `None` for none.
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// Adds `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (the routes' documentation,
/// completed by [`crate::openapi::document`]), the shared middleware and JSON fallbacks to a
/// service's routes, which alone are authenticated and rate limited.
pub fn finish(
    routes: OpenApiRouter,
    readiness: Readiness,
    scrape: Scrape,
    access: Access,
) -> Router {
    let metrics = scrape.metrics.clone();
    let (routes, api) = routes.split_for_parts();
    let document = Arc::new(crate::openapi::document(api));
    let mut routes = routes.layer(axum::Extension(access.authenticator));
    if let Some(limit) = access.rate_limit {
        routes = routes.layer(axum::middleware::from_fn_with_state(
            limit,
            rate_limit::limit,
        ));
    }
    routes
        .merge(health_routes(readiness))
        .merge(Router::from(metrics_api().with_state(scrape)))
        .merge(Router::from(document_api().with_state(document)))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
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
