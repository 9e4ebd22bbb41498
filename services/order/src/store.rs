//! The order service's SQL: orders and their saga progress, history, idempotency keys and
//! the catalogue read model.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::order::{OrderLineV2, Shipping};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use uuid::Uuid;

use crate::domain::{MAX_QUANTITY, NewOrder, Reason, Saga, Status};

/// Stores a new order in its first saga state.
pub async fn insert_order(
    tx: &mut PgConnection,
    order_id: Uuid,
    order: &NewOrder,
    deadline: Duration,
    traceparent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, email, items, total_cents, payment_method, \
         shipping, status, deadline_at, traceparent, currency) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9), $10, $11)",
    )
    .bind(order_id)
    .bind(&order.customer_id)
    .bind(&order.email)
    .bind(Json(order.wire_lines()))
    .bind(order.total_cents)
    .bind(&order.payment_method)
    .bind(Json(Shipping {
        country: order.country.clone(),
        address: order.address.clone(),
    }))
    .bind(Status::Pending.as_str())
    .bind(deadline.as_secs_f64())
    .bind(traceparent)
    .bind(&order.currency)
    .execute(tx)
    .await?;
    Ok(())
}

/// The saga state of an order, locked for update.
pub async fn saga_for_update(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Saga>, sqlx::Error> {
    let row: Option<(String, Option<String>, bool, bool, bool)> = sqlx::query_as(
        "SELECT status, reason, inventory_released, payment_refunded, fulfillment_cancelled \
         FROM orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(tx)
    .await?;
    row.map(
        |(status, reason, inventory_released, payment_refunded, fulfillment_cancelled)| {
            let corrupt = |what: &str, value: &str| {
                sqlx::Error::Decode(format!("unknown order {what} {value:?}").into())
            };
            Ok(Saga {
                status: Status::parse(&status).ok_or_else(|| corrupt("status", &status))?,
                reason: reason
                    .map(|reason| Reason::parse(&reason).ok_or_else(|| corrupt("reason", &reason)))
                    .transpose()?,
                inventory_released,
                payment_refunded,
                fulfillment_cancelled,
            })
        },
    )
    .transpose()
}

/// Saves a saga step in one statement, one round trip: the saga's new state when it changed
/// (`saga`), and the events to add to the order's history (one already there is kept).
pub async fn save_step(
    tx: &mut PgConnection,
    order_id: Uuid,
    saga: Option<&Saga>,
    history: &[(&str, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let (event_types, ats): (Vec<&str>, Vec<DateTime<Utc>>) = history.iter().copied().unzip();
    sqlx::query(
        "WITH saved AS ( \
             UPDATE orders SET status = $2, reason = $3, inventory_released = $4, \
             payment_refunded = $5, fulfillment_cancelled = $6, updated_at = now() \
             WHERE order_id = $1 AND $7 \
         ) \
         INSERT INTO order_history (order_id, event_type, at) \
         SELECT $1, event_type, at FROM unnest($8::text[], $9::timestamptz[]) AS h (event_type, at) \
         ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(saga.map(|saga| saga.status.as_str()))
    .bind(saga.and_then(|saga| saga.reason.map(Reason::as_str)))
    .bind(saga.map(|saga| saga.inventory_released))
    .bind(saga.map(|saga| saga.payment_refunded))
    .bind(saga.map(|saga| saga.fulfillment_cancelled))
    .bind(saga.is_some())
    .bind(&event_types)
    .bind(&ats)
    .execute(tx)
    .await?;
    Ok(())
}

/// Adds a saga event to the order's history; a second event of the same type is ignored.
pub async fn record_history(
    tx: &mut PgConnection,
    order_id: Uuid,
    event_type: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_history (order_id, event_type, at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(event_type)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

/// The saga's trace, as the request that placed the order left it.
pub async fn traceparent(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let traceparent: Option<Option<String>> =
        sqlx::query_scalar("SELECT traceparent FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(tx)
            .await?;
    Ok(traceparent.flatten())
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: String,
    #[schema(schema_with = Status::schema)]
    pub status: String,
    /// Why the order was rejected or cancelled; null otherwise.
    #[schema(schema_with = Reason::nullable_schema, required = true)]
    pub reason: Option<String>,
    #[schema(schema_with = order_lines_schema)]
    pub items: Vec<OrderLineV2>,
    /// What the customer pays: the lines' prices less their discounts.
    #[schema(minimum = 0)]
    pub total_cents: i64,
    /// ISO 4217 code of every amount of the order.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// The saga's trace (null when tracing was off when it was placed).
    #[schema(schema_with = trace_id_schema, required = true)]
    pub trace_id: Option<String>,
    /// Each saga step, in the order it happened.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct HistoryEntry {
    /// The event type of the step, e.g. `order.placed` or `inventory.reserved`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: DateTime<Utc>,
}

/// The lines of an order as `events::order::OrderLineV2` serialises them.
fn order_lines_schema() -> ArrayBuilder {
    let integer = |minimum: u32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(minimum))
    };
    let line = ObjectBuilder::new()
        .property("sku", runtime::openapi::subject_token())
        .property("quantity", integer(1).maximum(Some(MAX_QUANTITY)))
        .property("unit_price_cents", integer(0))
        .property("discount_cents", integer(0))
        .required("sku")
        .required("quantity")
        .required("unit_price_cents")
        .required("discount_cents");
    ArrayBuilder::new().items(line)
}

fn trace_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some("^[0-9a-fA-F]{32}$"))
        .build()
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    customer_id: String,
    status: String,
    reason: Option<String>,
    items: Json<Vec<OrderLineV2>>,
    total_cents: i64,
    currency: String,
    traceparent: Option<String>,
}

pub async fn order_view(pool: &PgPool, order_id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT customer_id, status, reason, items, total_cents, currency, traceparent FROM orders \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let history = sqlx::query_as(
        "SELECT event_type, at FROM order_history WHERE order_id = $1 ORDER BY at, event_type",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(OrderView {
        order_id,
        customer_id: row.customer_id,
        status: row.status,
        reason: row.reason,
        items: row.items.0,
        total_cents: row.total_cents,
        currency: row.currency,
        trace_id: row
            .traceparent
            .as_deref()
            .and_then(runtime::telemetry::trace_id_of)
            .map(str::to_owned),
        history,
    }))
}

/// What an idempotency key says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyClaim {
    /// First use: the key now belongs to this new order.
    Claimed,
    /// Used before with the same body, for this order.
    Replay(Uuid),
    /// Used before with another body.
    Mismatch,
}

/// Claims `key` for `order_id` and `request`. A concurrent request with the same key waits
/// for this transaction, then sees the key as used.
pub async fn claim_idempotency_key(
    tx: &mut PgConnection,
    customer_id: &str,
    key: &str,
    request: &serde_json::Value,
    order_id: Uuid,
) -> Result<KeyClaim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (customer_id, key, request, order_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, key) DO NOTHING",
    )
    .bind(customer_id)
    .bind(key)
    .bind(Json(request))
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(KeyClaim::Claimed);
    }
    let (existing, same): (Uuid, bool) = sqlx::query_as(
        "SELECT order_id, request = $3 FROM idempotency_keys \
         WHERE customer_id = $1 AND key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .bind(Json(request))
    .fetch_one(&mut *tx)
    .await?;
    Ok(if same {
        KeyClaim::Replay(existing)
    } else {
        KeyClaim::Mismatch
    })
}

/// The customer an order belongs to, if it exists.
pub async fn order_customer(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT customer_id FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.map(|(customer_id,)| customer_id))
}

pub async fn order_status(pool: &PgPool, order_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(status,)| status))
}

/// A product as the order service knows it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CatalogueEntry {
    pub sku: String,
    pub name: String,
    #[schema(minimum = 0)]
    pub price_cents: i64,
}

/// Applies a product update unless a newer one was applied already.
pub async fn upsert_catalogue(
    tx: &mut PgConnection,
    entry: &CatalogueEntry,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO catalogue (sku, name, price_cents, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, \
         updated_at = EXCLUDED.updated_at WHERE catalogue.updated_at <= EXCLUDED.updated_at",
    )
    .bind(&entry.sku)
    .bind(&entry.name)
    .bind(entry.price_cents)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn catalogue_entry(
    pool: &PgPool,
    sku: &str,
) -> Result<Option<CatalogueEntry>, sqlx::Error> {
    sqlx::query_as("SELECT sku, name, price_cents FROM catalogue WHERE sku = $1")
        .bind(sku)
        .fetch_optional(pool)
        .await
}

pub async fn catalogue(pool: &PgPool) -> Result<Vec<CatalogueEntry>, sqlx::Error> {
    sqlx::query_as("SELECT sku, name, price_cents FROM catalogue ORDER BY sku")
        .fetch_all(pool)
        .await
}

/// Unit prices of the given SKUs that the catalogue knows.
pub async fn prices(
    tx: &mut PgConnection,
    skus: &[String],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, price_cents FROM catalogue WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Open orders whose deadline has passed, locked (skipping those another replica holds).
pub async fn overdue_orders(tx: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT order_id FROM orders \
         WHERE status IN ('pending', 'reserved', 'paid') AND deadline_at <= now() \
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_order_line_has_the_fields_of_the_event_type() {
        let line = OrderLineV2 {
            sku: "MUG".to_owned(),
            quantity: 2,
            unit_price_cents: 1250,
            discount_cents: 0,
        };
        let serialised = serde_json::to_value(&line).expect("a line serialises");
        let documented =
            serde_json::to_value(order_lines_schema().build()).expect("a schema serialises");
        let keys = |value: &serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = value
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&serialised), keys(&documented["items"]["properties"]));
    }
}
