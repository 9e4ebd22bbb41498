//! The fulfillment service's HTTP API: `GET /shipments/{order_id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use runtime::http::ApiError;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Shipment, ShipmentStatus};
use crate::store;

/// The service's routes; health, metrics and middleware are added by the runtime.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/shipments/{order_id}", get(get_shipment))
        .with_state(pool)
}

/// A shipment as clients see it; fields that do not apply to its status are null.
#[derive(Debug, Serialize)]
pub struct ShipmentView {
    pub order_id: Uuid,
    /// `scheduled` or `failed`.
    pub status: &'static str,
    pub shipment_id: Option<Uuid>,
    pub carrier: Option<String>,
    /// Why the order cannot be shipped.
    pub reason: Option<String>,
}

impl From<Shipment> for ShipmentView {
    fn from(shipment: Shipment) -> ShipmentView {
        let status = shipment.status.as_str();
        let (shipment_id, carrier, reason) = match shipment.status {
            ShipmentStatus::Scheduled {
                shipment_id,
                carrier,
            } => (Some(shipment_id), Some(carrier), None),
            ShipmentStatus::Failed { reason } => (None, None, Some(reason)),
            ShipmentStatus::Cancelled {
                shipment_id,
                carrier,
            } => (shipment_id, carrier, None),
        };
        ShipmentView {
            order_id: shipment.order_id,
            status,
            shipment_id,
            carrier,
            reason,
        }
    }
}

async fn get_shipment(
    State(pool): State<PgPool>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ShipmentView>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::NotFound("no shipment for that order id".to_owned()))?;
    // Anything but a UUID cannot name an order, so it has no shipment either.
    let order_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound(format!("no shipment for order {id}")))?;
    show_shipment(&pool, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_shipment(pool: &PgPool, order_id: Uuid) -> Result<Json<ShipmentView>, ApiError> {
    let shipment = store::find_shipment(pool, order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no shipment for order {order_id}")))?;
    Ok(Json(ShipmentView::from(shipment)))
}
