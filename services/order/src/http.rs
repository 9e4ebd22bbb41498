//! The order service's HTTP API: placing an order (answered `202` at once, the saga runs on
//! events), reading it, and the catalogue read model it prices orders from.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use events::streams::is_subject_token;
use runtime::auth::Caller;
use runtime::http::{ApiError, ErrorBody, JsonBody};
use runtime::openapi::{OrderIdPath, SkuPath};
use runtime::outbox::{Cause, Outbox};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::cancellation::{self, CancelError};
use crate::domain::{self, Cancellation, Invalid, OrderRequest, PlacedVersion, Pricing, Status};
use crate::store::{self, CatalogueEntry, KeyClaim, OrderView};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// The document's head; its paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "order service",
        description = "Places orders (the saga then runs on events), shows their progress, \
                       cancels them, and serves the catalogue read model orders are priced from."
    ),
    tags(
        (name = "orders", description = "Placing, reading and cancelling orders"),
        (name = "catalogue", description = "The products orders can be placed for, as the \
                                            order service last heard of them from inventory"),
    )
)]
struct ApiDoc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// How long a new order has to reach a terminal state.
    pub deadline: Duration,
    pub pricing: Pricing,
    pub placed_version: PlacedVersion,
}

/// The service's routes with their documentation; health, metrics and middleware are added
/// by the runtime.
pub fn routes(state: AppState) -> OpenApiRouter {
    api().with_state(state)
}

/// The routes, each registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(place_order))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(list_catalogue))
        .routes(routes!(get_catalogue_entry))
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid(invalid.field, invalid.message)
    }
}

/// What `202` answers to placing or cancelling an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    /// The order's status now.
    #[schema(schema_with = Status::schema)]
    pub status: String,
}

fn accepted(order_id: Uuid, status: &str) -> Response {
    let location = format!("/orders/{order_id}");
    let body = OrderAccepted {
        order_id,
        status: status.to_owned(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The headers `POST /orders` reads, for the document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct PlaceOrderHeaders {
    #[param(rename = "Idempotency-Key", schema_with = idempotency_key_schema)]
    pub idempotency_key: Option<String>,
}

/// 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters, spaces and tabs only inside
/// (HTTP strips them around a header value).
fn idempotency_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Makes the request safe to retry: the same key with the same body answers with \
             the order the first request placed; with another body it is a 422",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY_LEN))
        .pattern(Some("^[!-~]([\\t -~]*[!-~])?$"))
        .build()
}

/// Places an order.
///
/// Answered at once: the saga runs on events, and `GET /orders/{order_id}` shows how far it
/// got.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    params(PlaceOrderHeaders),
    request_body = OrderRequest,
    responses(
        (status = 202, description = "Placed (or, for a repeated `Idempotency-Key`, placed \
                                      before); the saga runs on", body = OrderAccepted,
            headers(("Location" = String, description = "`/orders/{order_id}`"))),
        (status = 403, description = "`customer_id` names another customer than the token",
            body = ErrorBody),
        (status = 422, description = "A field is invalid, a SKU unknown, or the \
                                      `Idempotency-Key` was used with another body; `field` \
                                      names it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(order.id))]
async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let mut request: OrderRequest = serde_path_to_error::deserialize(body.clone())
        .map_err(|error| ApiError::invalid(field_of(&error), error.inner().to_string()))?;
    let claimed = Some(request.customer_id.as_str()).filter(|claimed| !claimed.is_empty());
    request.customer_id = caller.customer_for(claimed)?;
    domain::validate(&request)?;
    // The body is kept with its key as JSONB, which cannot hold NUL even in a field this
    // service ignores.
    if idempotency_key.is_some()
        && let Some(field) = nul_in(&body, "")
    {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }

    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order.id", tracing::field::display(order_id));
    let mut tx = state.pool.begin().await?;
    if let Some(key) = &idempotency_key {
        // Keys are the customer's own: another customer's identical key is another request.
        match store::claim_idempotency_key(&mut tx, &request.customer_id, key, &body, order_id)
            .await?
        {
            KeyClaim::Claimed => {}
            KeyClaim::Replay(existing) => {
                drop(tx);
                let status = store::order_status(&state.pool, existing)
                    .await?
                    .unwrap_or_else(|| "pending".to_owned());
                return Ok(accepted(existing, &status));
            }
            KeyClaim::Mismatch => {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    "was already used with a different request body",
                ));
            }
        }
    }
    let skus: Vec<String> = request.items.iter().map(|item| item.sku.clone()).collect();
    let prices = store::prices(&mut tx, &skus).await?;
    let order = domain::price(&request, &prices, &state.pricing)?;

    let traceparent = runtime::telemetry::traceparent(&tracing::Span::current());
    store::insert_order(
        &mut tx,
        order_id,
        &order,
        state.deadline,
        traceparent.as_deref(),
    )
    .await?;
    let event = domain::placed_event(order_id, &order, state.placed_version)
        .map_err(|error| anyhow::anyhow!("order.placed v1 cannot carry this order: {error}"))?;
    let cause = Cause {
        correlationid: order_id.to_string(),
        causationid: None,
    };
    let (envelope, written) = state
        .outbox
        .enqueue_handed_off(&mut tx, &event, Some(&cause))
        .await?;
    store::record_history(&mut tx, order_id, "order.placed", envelope.time).await?;
    tx.commit().await?;
    state.outbox.hand_off(written);
    tracing::info!(total_cents = order.total_cents, "order placed");
    Ok(accepted(order_id, domain::Status::Pending.as_str()))
}

/// The `Idempotency-Key` header, if present and usable.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// The path of the first string (or key) in `value` that holds a NUL, e.g. `extra[2]`.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    let field = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(values) => values
            .iter()
            .enumerate()
            .find_map(|(index, value)| nul_in(value, &format!("{path}[{index}]"))),
        Value::Object(fields) => fields.iter().find_map(|(name, value)| {
            if name.contains('\0') {
                Some(field(&name.replace('\0', "\\0")))
            } else {
                nul_in(value, &field(name))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// The field a body error is about, e.g. `items[0].quantity`; for a missing field, the
/// path of the object plus the name serde reports ("missing field `email`").
fn field_of(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let message = error.inner().to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path.as_str(), missing) {
        (".", Some(name)) => name.to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (".", None) => "body".to_owned(),
        (_, None) => path,
    }
}

/// Reads an order.
///
/// Its status, why it ended so, its lines and total, its trace, and each step of its saga.
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    tag = "orders",
    params(OrderIdPath),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No order of the caller's has this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let Path(order_id) = path.map_err(|_| no_such_order())?;
    let not_found = || ApiError::NotFound(format!("no order with id {order_id:?}"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    store::order_view(&state.pool, id)
        .await?
        // Another customer's order answers as if there were none: no hint that it exists.
        .filter(|order| caller.may_access(&order.customer_id))
        .map(Json)
        .ok_or_else(not_found)
}

/// A path that cannot even be read as text names no order.
fn no_such_order() -> ApiError {
    ApiError::NotFound("no order with that id".to_owned())
}

/// Cancels an order.
///
/// `202` while it can still be undone (again `202` while it is being undone), `409` once it
/// is terminal. Each participant undoes its step; the order is `cancelled` once all have
/// confirmed.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/cancel",
    tag = "orders",
    params(OrderIdPath),
    responses(
        (status = 202, description = "Being cancelled", body = OrderAccepted,
            headers(("Location" = String, description = "`/orders/{order_id}`"))),
        (status = 404, description = "No order of the caller's has this id", body = ErrorBody),
        (status = 409, description = "The order is already completed, rejected or cancelled",
            body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(order.id))]
async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(order_id) = path.map_err(|_| no_such_order())?;
    tracing::Span::current().record("order.id", order_id.as_str());
    let not_found = || ApiError::NotFound(format!("no order with id {order_id:?}"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    let mut tx = state.pool.begin().await?;
    // An order's customer never changes, so checking before cancelling is no race.
    match store::order_customer(&mut tx, id).await? {
        Some(owner) if caller.may_access(&owner) => {}
        _ => return Err(not_found()),
    }
    let (status, written) =
        cancellation::cancel(&mut tx, &state.outbox, id, Cancellation::CustomerRequest)
            .await
            .map_err(|error| match error {
                CancelError::NotFound(_) => ApiError::NotFound(error.to_string()),
                CancelError::Finished(_) => ApiError::Conflict(error.to_string()),
                CancelError::Database(error) => error.into(),
                CancelError::Contract(message) => ApiError::Internal(anyhow::anyhow!(message)),
            })?;
    tx.commit().await?;
    state.outbox.hand_off(written);
    Ok(accepted(id, status.as_str()))
}

/// Lists the catalogue, by SKU.
#[utoipa::path(
    get,
    path = "/catalogue",
    tag = "catalogue",
    responses((status = 200, description = "The catalogue", body = Vec<CatalogueEntry>))
)]
async fn list_catalogue(
    State(state): State<AppState>,
) -> Result<Json<Vec<CatalogueEntry>>, ApiError> {
    Ok(Json(store::catalogue(&state.pool).await?))
}

/// Reads one product of the catalogue.
#[utoipa::path(
    get,
    path = "/catalogue/{sku}",
    tag = "catalogue",
    params(SkuPath),
    responses(
        (status = 200, description = "The product", body = CatalogueEntry),
        (status = 404, description = "The catalogue has no product with this SKU",
            body = ErrorBody),
    )
)]
async fn get_catalogue_entry(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CatalogueEntry>, ApiError> {
    let not_found =
        |sku: &str| ApiError::NotFound(format!("no product with SKU {sku:?} in the catalogue"));
    let Path(sku) = path
        .map_err(|_| ApiError::NotFound("no product with that SKU in the catalogue".to_owned()))?;
    // Anything but a subject token cannot be a SKU (and NUL would fail the query).
    if !is_subject_token(&sku) {
        return Err(not_found(&sku));
    }
    store::catalogue_entry(&state.pool, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&sku))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nul_anywhere_in_the_body_is_found_with_its_path() {
        let body = json!({"customer_id": "c-1", "extra": [1, {"note": "a\0b"}]});
        assert_eq!(nul_in(&body, ""), Some("extra[1].note".to_owned()));
        assert_eq!(nul_in(&json!({"k\0": 1}), ""), Some("k\\0".to_owned()));
        assert_eq!(
            nul_in(&json!({"customer_id": "c-1", "n": [null, 2]}), ""),
            None
        );
    }
}
