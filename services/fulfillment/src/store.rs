//! All SQL of the fulfillment service: destinations and shipment decisions, written inside a
//! reaction's transaction, and shipments read on the pool for the HTTP API.

use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{Destination, Shipment, ShipmentStatus};

/// Remembers where an order ships to and for which customer; a destination already known is
/// kept as it is.
pub async fn insert_destination(
    tx: &mut PgConnection,
    order_id: Uuid,
    customer_id: &str,
    destination: &Destination,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO destinations (order_id, customer_id, country, address) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(&destination.country)
    .bind(&destination.address)
    .execute(tx)
    .await?;
    Ok(())
}

/// Where the order ships to, locked until the transaction ends: the destination row stands
/// for the order, so concurrent reactions to one order take turns even before it has a
/// shipment row to lock.
pub async fn load_destination_for_update(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Destination>, sqlx::Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT country, address FROM destinations WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(tx)
            .await?;
    Ok(row.map(|(country, address)| Destination { country, address }))
}

/// Records an order's shipment decision, or its cancellation.
pub async fn save_shipment(tx: &mut PgConnection, shipment: &Shipment) -> Result<(), sqlx::Error> {
    let (shipment_id, carrier, reason) = match &shipment.status {
        ShipmentStatus::Scheduled {
            shipment_id,
            carrier,
        } => (Some(*shipment_id), Some(carrier.as_str()), None),
        ShipmentStatus::Failed { reason } => (None, None, Some(reason.as_str())),
        ShipmentStatus::Cancelled {
            shipment_id,
            carrier,
        } => (*shipment_id, carrier.as_deref(), None),
    };
    sqlx::query(
        "INSERT INTO shipments (order_id, status, shipment_id, carrier, reason) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
         shipment_id = EXCLUDED.shipment_id, carrier = EXCLUDED.carrier, reason = EXCLUDED.reason",
    )
    .bind(shipment.order_id)
    .bind(shipment.status.as_str())
    .bind(shipment_id)
    .bind(carrier)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// The order's shipment decision, if it has one, inside a reaction's transaction.
pub async fn load_shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Shipment>, sqlx::Error> {
    fetch_shipment(tx, order_id).await
}

/// The order's shipment decision, for reading, with the customer who placed the order (`None`
/// for orders recorded before it was kept).
pub async fn find_shipment(
    pool: &PgPool,
    order_id: Uuid,
) -> Result<Option<(Shipment, Option<String>)>, sqlx::Error> {
    let row: Option<OwnedShipmentRow> = sqlx::query_as(
        "SELECT order_id, s.status, s.shipment_id, s.carrier, s.reason, d.customer_id \
         FROM shipments s JOIN destinations d USING (order_id) WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((Shipment::try_from(row.shipment)?, row.customer_id)))
        .transpose()
}

#[derive(Debug, sqlx::FromRow)]
struct OwnedShipmentRow {
    #[sqlx(flatten)]
    shipment: ShipmentRow,
    customer_id: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct ShipmentRow {
    order_id: Uuid,
    status: String,
    shipment_id: Option<Uuid>,
    carrier: Option<String>,
    reason: Option<String>,
}

async fn fetch_shipment<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<Shipment>, sqlx::Error> {
    let row: Option<ShipmentRow> = sqlx::query_as(
        "SELECT order_id, status, shipment_id, carrier, reason FROM shipments \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(executor)
    .await?;
    row.map(Shipment::try_from).transpose()
}

impl TryFrom<ShipmentRow> for Shipment {
    type Error = sqlx::Error;

    fn try_from(row: ShipmentRow) -> Result<Shipment, sqlx::Error> {
        let status = match (
            row.status.as_str(),
            row.shipment_id,
            row.carrier,
            row.reason,
        ) {
            ("scheduled", Some(shipment_id), Some(carrier), _) => ShipmentStatus::Scheduled {
                shipment_id,
                carrier,
            },
            ("failed", _, _, Some(reason)) => ShipmentStatus::Failed { reason },
            ("cancelled", shipment_id, carrier, _) => ShipmentStatus::Cancelled {
                shipment_id,
                carrier,
            },
            // The table's checks rule this out; say so rather than guess.
            (status, ..) => {
                return Err(sqlx::Error::Decode(
                    format!(
                        "shipment of order {} has an inconsistent status {status:?}",
                        row.order_id
                    )
                    .into(),
                ));
            }
        };
        Ok(Shipment {
            order_id: row.order_id,
            status,
        })
    }
}
