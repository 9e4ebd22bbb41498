//! Inventory's HTTP API: the product catalogue with stock levels. Writing a product also
//! publishes `inventory.product_updated`, in the same transaction.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use events::Event;
use events::inventory::ProductUpdated;
use events::streams::is_subject_token;
use runtime::auth::Caller;
use runtime::http::{ApiError, ErrorBody, JsonBody};
use runtime::openapi::{SkuPath, trimmed_text};
use runtime::outbox::Outbox;
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{self, Product, SaveProductError};

/// Longest product name, in characters, once trimmed.
const MAX_NAME_CHARS: usize = 200;

/// The document's head; its paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "inventory service",
        description = "The product catalogue with stock levels. Writing a product publishes \
                       `inventory.product_updated`, which the order service prices orders from."
    ),
    tags((name = "products", description = "Products, their prices and stock")),
)]
struct ApiDoc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
}

/// The service's routes with their documentation; health, metrics and middleware are added
/// by the runtime.
pub fn routes(state: AppState) -> OpenApiRouter {
    api().with_state(state)
}

/// The routes, each registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_products))
        .routes(routes!(get_product, put_product))
}

/// A product's name, price and stock.
// The body of `PUT /products/{sku}`; its schema in the API document says what `validate`
// accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Mug", "price_cents": 1250, "on_hand": 10}))]
pub struct ProductRequest {
    #[schema(schema_with = name_schema)]
    pub name: String,
    #[schema(schema_with = non_negative)]
    pub price_cents: i64,
    #[schema(schema_with = on_hand_schema)]
    pub on_hand: i64,
}

fn name_schema() -> Object {
    let mut schema = trimmed_text(MAX_NAME_CHARS);
    schema.description = Some(format!(
        "1 to {MAX_NAME_CHARS} characters once trimmed; stored trimmed"
    ));
    schema
}

fn on_hand_schema() -> Object {
    let mut schema = non_negative();
    schema.description = Some("Units in stock; not below what open orders have reserved".into());
    schema
}

fn non_negative() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .maximum(Some(i64::MAX))
        .build()
}

/// Lists every product, by SKU.
#[utoipa::path(
    get,
    path = "/products",
    tag = "products",
    responses((status = 200, description = "The products", body = Vec<Product>))
)]
async fn list_products(State(state): State<AppState>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(store::products(&state.pool).await?))
}

/// Reads one product.
#[utoipa::path(
    get,
    path = "/products/{sku}",
    tag = "products",
    params(SkuPath),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No product has this SKU", body = ErrorBody),
    )
)]
async fn get_product(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Product>, ApiError> {
    let not_found = |sku: &str| ApiError::NotFound(format!("no product with SKU {sku:?}"));
    let Path(sku) = path.map_err(|_| ApiError::NotFound("no product with that SKU".to_owned()))?;
    // Anything but a subject token cannot be a SKU (and NUL would fail the query).
    if !is_subject_token(&sku) {
        return Err(not_found(&sku));
    }
    store::product(&state.pool, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&sku))
}

/// Creates or replaces a product.
///
/// Sets its name, price and units on hand; what open orders have reserved stays. Publishes
/// `inventory.product_updated`.
#[utoipa::path(
    put,
    path = "/products/{sku}",
    tag = "products",
    params(SkuPath),
    request_body = ProductRequest,
    responses(
        (status = 200, description = "The product as saved", body = Product),
        (status = 409, description = "`on_hand` is below what open orders have reserved",
            body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
        (status = 422, description = "The SKU or a field is invalid; `field` names it",
            body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(sku))]
async fn put_product(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<ProductRequest>,
) -> Result<Json<Product>, ApiError> {
    caller.require_admin()?;
    let Path(sku) = path.map_err(|_| ApiError::invalid("sku", SKU_RULE))?;
    tracing::Span::current().record("sku", sku.as_str());
    validate(&sku, &request)?;
    let name = request.name.trim();
    let mut tx = state.pool.begin().await?;
    // Take turns with the reactions, which read stock and then change it (see
    // `Reactions::shared_locks`).
    runtime::consumer::lock_shared(&mut tx, crate::reactions::PRODUCTS_LOCK).await?;
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
    let (_, written) = state
        .outbox
        .enqueue_handed_off(&mut tx, &event, None)
        .await?;
    tx.commit().await?;
    state.outbox.hand_off(written);
    tracing::info!(on_hand = product.on_hand, "product saved");
    Ok(Json(product))
}

const SKU_RULE: &str = "must be 1 to 64 letters, digits, '-' or '_'";

fn validate(sku: &str, request: &ProductRequest) -> Result<(), ApiError> {
    if !is_subject_token(sku) {
        return Err(ApiError::invalid("sku", SKU_RULE));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    // Postgres text cannot hold NUL; storing it would fail the request with a 500.
    if name.contains('\0') {
        return Err(ApiError::invalid("name", "must not contain NUL characters"));
    }
    if request.price_cents < 0 {
        return Err(ApiError::invalid("price_cents", "must not be negative"));
    }
    if request.on_hand < 0 {
        return Err(ApiError::invalid("on_hand", "must not be negative"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_field(sku: &str, name: &str) -> Option<String> {
        let request = ProductRequest {
            name: name.to_owned(),
            price_cents: 1250,
            on_hand: 10,
        };
        match validate(sku, &request) {
            Err(ApiError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn a_name_is_judged_trimmed_and_without_nul() {
        assert_eq!(invalid_field("MUG", "  Mug  "), None);
        assert_eq!(
            invalid_field("MUG", &format!(" {} ", "m".repeat(200))),
            None
        );
        assert_eq!(invalid_field("MUG", &"m".repeat(201)), Some("name".into()));
        assert_eq!(invalid_field("MUG", " \t "), Some("name".into()));
        assert_eq!(invalid_field("MUG", "Mug\0"), Some("name".into()));
        assert_eq!(invalid_field("a.b", "Mug"), Some("sku".into()));
    }
}
