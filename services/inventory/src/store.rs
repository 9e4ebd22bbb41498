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

/// What deciding on an order's reservation needs to know.
#[derive(Debug, Default)]
pub struct ReserveInputs {
    /// The order has a reservation already: it was decided on.
    pub decided: bool,
    /// The order's cancellation arrived first.
    pub cancelled: bool,
    /// The units available for each of its SKUs that exists.
    pub available: HashMap<String, i64>,
}

/// Everything `reserve` reads, in one statement (one round trip, made while holding the
/// `products` lock). Read without row locks: the consumer's lock on the order's key keeps
/// other messages of the order out, and the service's `products` lock (see
/// `Reactions::shared_locks`) every writer of stock, until the transaction ends. Row locks as
/// well would be redundant, and costly: a batch applies each message in its own savepoint,
/// and locking a row version that a sibling savepoint wrote makes Postgres record the lockers
/// in a MultiXact, one more per message on a hot product (measured: a third of the inventory
/// database's CPU under load).
pub async fn reserve_inputs(
    tx: &mut PgConnection,
    order_id: Uuid,
    skus: &[String],
) -> Result<ReserveInputs, sqlx::Error> {
    // The flags come on every row, and on one row with no SKU when no product matches.
    let rows: Vec<(bool, bool, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT o.decided, o.cancelled, p.sku, p.available \
         FROM (SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1) AS decided, \
                      EXISTS (SELECT 1 FROM cancellations WHERE order_id = $1) AS cancelled) AS o \
         LEFT JOIN (SELECT sku, on_hand - reserved AS available FROM products \
                    WHERE sku = ANY($2)) AS p ON true",
    )
    .bind(order_id)
    .bind(skus)
    .fetch_all(tx)
    .await?;
    let mut inputs = ReserveInputs::default();
    for (decided, cancelled, sku, available) in rows {
        inputs.decided = decided;
        inputs.cancelled = cancelled;
        if let (Some(sku), Some(available)) = (sku, available) {
            inputs.available.insert(sku, available);
        }
    }
    Ok(inputs)
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

/// What saving a reservation in its new status does to the stock of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockMove {
    /// Nothing (a rejection: nothing was held).
    None,
    /// Held: reserved.
    Hold,
    /// Given back: no longer reserved.
    GiveBack,
    /// Shipped: no longer reserved and no longer on hand.
    Deduct,
}

/// Inserts or updates the reservation and moves its lines' stock as `stock` says, in one
/// statement: every statement is a round trip made while holding the `products` lock, which
/// every inventory transaction takes, so they are what the service's throughput waits for.
/// Lines of one SKU are summed first: an `UPDATE … FROM` changes a row once, for one of them.
pub async fn save_reservation(
    tx: &mut PgConnection,
    reservation: &Reservation,
    stock: StockMove,
) -> Result<(), sqlx::Error> {
    let (reserved_sign, deduct): (i64, bool) = match stock {
        StockMove::None => (0, false),
        StockMove::Hold => (1, false),
        StockMove::GiveBack => (-1, false),
        StockMove::Deduct => (-1, true),
    };
    let lines = if stock == StockMove::None {
        &[][..]
    } else {
        &reservation.items[..]
    };
    let skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
    let quantities: Vec<i64> = lines.iter().map(|line| i64::from(line.quantity)).collect();
    sqlx::query(
        "WITH moved AS ( \
           UPDATE products SET reserved = reserved + $4 * line.quantity, \
           on_hand = on_hand - CASE WHEN $5 THEN line.quantity ELSE 0 END, updated_at = now() \
           FROM (SELECT sku, sum(quantity)::bigint AS quantity \
                 FROM unnest($6::text[], $7::bigint[]) AS lines (sku, quantity) GROUP BY sku) AS line \
           WHERE products.sku = line.sku) \
         INSERT INTO reservations (order_id, status, items) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
    )
    .bind(reservation.order_id)
    .bind(reservation.status.as_str())
    .bind(Json(&reservation.items))
    .bind(reserved_sign)
    .bind(deduct)
    .bind(&skus)
    .bind(&quantities)
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
