//! Inventory's HTTP API: the product catalogue with stock levels. Writing a product also
//! publishes `inventory.product_updated`, in the same transaction.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use events::Event;
use events::inventory::ProductUpdated;
use events::streams::is_subject_token;
use runtime::http::{ApiError, JsonBody};
use runtime::outbox::Outbox;
use serde::Deserialize;
use sqlx::PgPool;

use crate::store::{self, Product, SaveProductError};

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{sku}", get(get_product).put(put_product))
        .with_state(state)
}

/// The body of `PUT /products/{sku}`.
#[derive(Debug, Deserialize)]
pub struct ProductRequest {
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
}

async fn list_products(State(state): State<AppState>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(store::products(&state.pool).await?))
}

async fn get_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Product>, ApiError> {
    store::product(&state.pool, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no product with SKU {sku:?}")))
}

#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn put_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    JsonBody(request): JsonBody<ProductRequest>,
) -> Result<Json<Product>, ApiError> {
    validate(&sku, &request)?;
    let name = request.name.trim();
    let mut tx = state.pool.begin().await?;
    let product = store::upsert_product(&mut tx, &sku, name, request.price_cents, request.on_hand)
        .await
        .map_err(|error| match error {
            SaveProductError::BelowReserved { reserved } => ApiError::Conflict(format!(
                "on_hand cannot go below the {reserved} units reserved for open orders"
            )),
            SaveProductError::Database(error) => error.into(),
        })?;
    let event = Event::ProductUpdated(ProductUpdated {
        sku: product.sku.clone(),
        name: product.name.clone(),
        price_cents: product.price_cents,
    });
    state.outbox.enqueue(&mut tx, &event, None).await?;
    tx.commit().await?;
    tracing::info!(on_hand = product.on_hand, "product saved");
    Ok(Json(product))
}

fn validate(sku: &str, request: &ProductRequest) -> Result<(), ApiError> {
    if !is_subject_token(sku) {
        return Err(ApiError::invalid(
            "sku",
            "must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    if request.price_cents < 0 {
        return Err(ApiError::invalid("price_cents", "must not be negative"));
    }
    if request.on_hand < 0 {
        return Err(ApiError::invalid("on_hand", "must not be negative"));
    }
    Ok(())
}
