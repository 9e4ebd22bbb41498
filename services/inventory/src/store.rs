//! Inventory's SQL: products, their stock levels and reservations.

use std::collections::HashMap;

use events::inventory::StockLine;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Reservation, ReservationStatus};

/// A product as the HTTP API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    #[schema(minimum = 0)]
    pub price_cents: i64,
    /// Units in stock.
    #[schema(minimum = 0)]
    pub on_hand: i64,
    /// Units held for open orders.
    #[schema(minimum = 0)]
    pub reserved: i64,
    /// `on_hand - reserved`: what new orders can have.
    #[schema(minimum = 0)]
    pub available: i64,
}

pub async fn product(pool: &PgPool, sku: &str) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available \
         FROM products WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(pool)
    .await
}

pub async fn products(pool: &PgPool) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available \
         FROM products ORDER BY sku",
    )
    .fetch_all(pool)
    .await
}

/// Why a product could not be saved.
#[derive(Debug)]
pub enum SaveProductError {
    /// The new on-hand count is below what is already reserved.
    BelowReserved {
        reserved: i64,
    },
    Database(sqlx::Error),
}

/// Creates or replaces a product's name, price and on-hand count; what is reserved stays.
pub async fn upsert_product(
    tx: &mut PgConnection,
    sku: &str,
    name: &str,
    price_cents: i64,
    on_hand: i64,
) -> Result<Product, SaveProductError> {
    let current: Option<(i64,)> =
        sqlx::query_as("SELECT reserved FROM products WHERE sku = $1 FOR UPDATE")
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await
            .map_err(SaveProductError::Database)?;
    if let Some((reserved,)) = current
        && on_hand < reserved
    {
        return Err(SaveProductError::BelowReserved { reserved });
    }
    sqlx::query_as(
        "INSERT INTO products (sku, name, price_cents, on_hand) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, \
         on_hand = EXCLUDED.on_hand, updated_at = now() \
         RETURNING sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available",
    )
    .bind(sku)
    .bind(name)
    .bind(price_cents)
    .bind(on_hand)
    .fetch_one(&mut *tx)
    .await
    .map_err(SaveProductError::Database)
}

/// The units available for each SKU that exists. Read without a row lock: the service's
/// `products` lock (see `Reactions::shared_locks`) already keeps every writer out until the
/// transaction ends. A row lock as well would be redundant, and costly: a batch applies each
/// message in its own savepoint, and locking a row version that a sibling savepoint wrote
/// makes Postgres record the lockers in a MultiXact, one more per message on a hot product
/// (measured: a third of the inventory database's CPU under load).
pub async fn available(
    tx: &mut PgConnection,
    skus: &[String],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, on_hand - reserved FROM products WHERE sku = ANY($1)")
            .bind(skus)
            .fetch_all(tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Adds `sign × quantity` to `reserved`, and when `deduct` also removes it from `on_hand`,
/// for every line in one statement (an order may have a hundred lines, and every statement
/// is a round trip made while holding the `products` lock). Lines of one SKU are summed
/// first: an `UPDATE … FROM` would change the row once, for one of them.
async fn adjust(
    tx: &mut PgConnection,
    lines: &[StockLine],
    reserved_delta_sign: i64,
    deduct: bool,
) -> Result<(), sqlx::Error> {
    let skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
    let quantities: Vec<i64> = lines.iter().map(|line| i64::from(line.quantity)).collect();
    sqlx::query(
        "UPDATE products SET reserved = reserved + $3 * line.quantity, \
         on_hand = on_hand - CASE WHEN $4 THEN line.quantity ELSE 0 END, updated_at = now() \
         FROM (SELECT sku, sum(quantity)::bigint AS quantity \
               FROM unnest($1::text[], $2::bigint[]) AS lines (sku, quantity) GROUP BY sku) AS line \
         WHERE products.sku = line.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .bind(reserved_delta_sign)
    .bind(deduct)
    .execute(tx)
    .await?;
    Ok(())
}

/// Holds the reservation's units.
pub async fn hold(tx: &mut PgConnection, lines: &[StockLine]) -> Result<(), sqlx::Error> {
    adjust(tx, lines, 1, false).await
}

/// Gives the reservation's units back.
pub async fn give_back(tx: &mut PgConnection, lines: &[StockLine]) -> Result<(), sqlx::Error> {
    adjust(tx, lines, -1, false).await
}

/// The reservation's units leave the warehouse: no longer reserved, no longer on hand.
pub async fn deduct(tx: &mut PgConnection, lines: &[StockLine]) -> Result<(), sqlx::Error> {
    adjust(tx, lines, -1, true).await
}

/// The order's reservation, locked for update.
pub async fn reservation_for_update(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Reservation>, sqlx::Error> {
    let row: Option<(String, Json<Vec<StockLine>>)> =
        sqlx::query_as("SELECT status, items FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(tx)
            .await?;
    row.map(|(status, Json(items))| {
        let status = ReservationStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown reservation status {status:?}").into())
        })?;
        Ok(Reservation {
            order_id,
            status,
            items,
        })
    })
    .transpose()
}

/// Inserts or updates the reservation.
pub async fn save_reservation(
    tx: &mut PgConnection,
    reservation: &Reservation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservations (order_id, status, items) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
    )
    .bind(reservation.order_id)
    .bind(reservation.status.as_str())
    .bind(Json(&reservation.items))
    .execute(tx)
    .await?;
    Ok(())
}

/// Remembers that the order is cancelled; false when it was already.
pub async fn remember_cancellation(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted =
        sqlx::query("INSERT INTO cancellations (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(order_id)
            .execute(tx)
            .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn is_cancelled(tx: &mut PgConnection, order_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cancellations WHERE order_id = $1)")
        .bind(order_id)
        .fetch_one(tx)
        .await
}
