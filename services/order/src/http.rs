//! The order service's HTTP API: placing an order (answered `202` at once, the saga runs on
//! events), reading it, and the catalogue read model it prices orders from.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::Event;
use events::order::{OrderPlaced, Shipping};
use runtime::http::{ApiError, JsonBody};
use runtime::outbox::{Cause, Outbox};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cancellation::{self, CancelError};
use crate::domain::{self, Cancellation, Invalid, OrderRequest};
use crate::store::{self, CatalogueEntry, KeyClaim, OrderView};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// How long a new order has to reach a terminal state.
    pub deadline: Duration,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(get_order))
        .route("/orders/{order_id}/cancel", post(cancel_order))
        .route("/catalogue", get(list_catalogue))
        .route("/catalogue/{sku}", get(get_catalogue_entry))
        .with_state(state)
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid(invalid.field, invalid.message)
    }
}

fn accepted(order_id: Uuid, status: &str) -> Response {
    let location = format!("/orders/{order_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "status": status })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[tracing::instrument(skip_all, fields(order.id))]
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let request: OrderRequest = serde_path_to_error::deserialize(body.clone())
        .map_err(|error| ApiError::invalid(field_of(&error), error.inner().to_string()))?;
    domain::validate(&request)?;

    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order.id", tracing::field::display(order_id));
    let mut tx = state.pool.begin().await?;
    if let Some(key) = &idempotency_key {
        match store::claim_idempotency_key(&mut tx, key, &body, order_id).await? {
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
    let order = domain::price(&request, &prices)?;

    let traceparent = runtime::telemetry::traceparent(&tracing::Span::current());
    store::insert_order(
        &mut tx,
        order_id,
        &order,
        state.deadline,
        traceparent.as_deref(),
    )
    .await?;
    let event = Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: order.customer_id.clone(),
        email: order.email.clone(),
        items: store::lines(&order),
        total_cents: order.total_cents,
        payment_method: order.payment_method.clone(),
        shipping: Shipping {
            country: order.country.clone(),
            address: order.address.clone(),
        },
    });
    let cause = Cause {
        correlationid: order_id.to_string(),
        causationid: None,
    };
    let envelope = state.outbox.enqueue(&mut tx, &event, Some(&cause)).await?;
    store::record_history(&mut tx, order_id, "order.placed", envelope.time).await?;
    tx.commit().await?;
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

async fn get_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order with id {order_id:?}"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    store::order_view(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}

/// `202` while the order can still be undone (again `202` while it is being undone), `409`
/// once it is terminal.
#[tracing::instrument(skip_all, fields(order.id = %order_id))]
async fn cancel_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&order_id)
        .map_err(|_| ApiError::NotFound(format!("no order with id {order_id:?}")))?;
    let mut tx = state.pool.begin().await?;
    let status = cancellation::cancel(&mut tx, &state.outbox, id, Cancellation::CustomerRequest)
        .await
        .map_err(|error| match error {
            CancelError::NotFound(_) => ApiError::NotFound(error.to_string()),
            CancelError::Finished(_) => ApiError::Conflict(error.to_string()),
            CancelError::Database(error) => error.into(),
            CancelError::Contract(message) => ApiError::Internal(anyhow::anyhow!(message)),
        })?;
    tx.commit().await?;
    Ok(accepted(id, status.as_str()))
}

async fn list_catalogue(
    State(state): State<AppState>,
) -> Result<Json<Vec<CatalogueEntry>>, ApiError> {
    Ok(Json(store::catalogue(&state.pool).await?))
}

async fn get_catalogue_entry(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<CatalogueEntry>, ApiError> {
    store::catalogue_entry(&state.pool, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no product with SKU {sku:?} in the catalogue")))
}
