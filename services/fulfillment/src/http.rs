//! The fulfillment service's HTTP API: `GET /shipments/{order_id}`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use runtime::auth::Caller;
use runtime::http::{ApiError, ErrorBody};
use runtime::openapi::OrderIdPath;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::openapi::schema::Object;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{Shipment, ShipmentStatus};
use crate::store;

/// The document's head; its paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fulfillment service",
        description = "The shipment of each paid order: scheduled with a carrier, or failed \
                       for a destination no carrier serves."
    ),
    tags((name = "shipments", description = "Shipments, by order")),
)]
struct ApiDoc;

/// The service's routes with their documentation; health, metrics and middleware are added
/// by the runtime.
pub fn routes(pool: PgPool) -> OpenApiRouter {
    api().with_state(pool)
}

/// The routes, each registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(get_shipment))
}

/// Every status `ShipmentStatus::as_str` spells.
const STATUSES: [&str; 3] = ["scheduled", "failed", "cancelled"];

fn status_schema() -> Object {
    runtime::openapi::string_enum(STATUSES)
}

/// A shipment as clients see it; fields that do not apply to its status are null.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentView {
    pub order_id: Uuid,
    #[schema(schema_with = status_schema)]
    pub status: &'static str,
    /// Set once scheduled (and kept when cancelled after that).
    #[schema(required = true)]
    pub shipment_id: Option<Uuid>,
    /// Set once scheduled (and kept when cancelled after that).
    #[schema(required = true)]
    pub carrier: Option<String>,
    /// Why the order cannot be shipped; set when failed.
    #[schema(required = true)]
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

/// Reads an order's shipment.
///
/// A customer reads only the shipments of their own orders; another customer's is answered
/// like an unknown order's.
#[utoipa::path(
    get,
    path = "/shipments/{order_id}",
    tag = "shipments",
    params(OrderIdPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The shipment", body = ShipmentView),
        (status = 404, description = "No shipment for this order (yet), or the order is \
                                      not the caller's", body = ErrorBody),
    )
)]
async fn get_shipment(
    State(pool): State<PgPool>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ShipmentView>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::NotFound("no shipment for that order id".to_owned()))?;
    // Anything but a UUID cannot name an order, so it has no shipment either.
    let order_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound(format!("no shipment for order {id}")))?;
    show_shipment(&pool, &caller, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_shipment(
    pool: &PgPool,
    caller: &Caller,
    order_id: Uuid,
) -> Result<Json<ShipmentView>, ApiError> {
    // Another customer's shipment is answered exactly like a missing one, so that the answer
    // does not tell which orders exist.
    store::find_shipment(pool, order_id)
        .await?
        .filter(|(_, owner)| may_read(caller, owner.as_deref()))
        .map(|(shipment, _)| Json(ShipmentView::from(shipment)))
        .ok_or_else(|| ApiError::NotFound(format!("no shipment for order {order_id}")))
}

/// Whether `caller` may see what belongs to `owner`. An order without a known owner (recorded
/// before owners were kept) is nobody's: only an admin or an unverified caller may see it.
fn may_read(caller: &Caller, owner: Option<&str>) -> bool {
    match owner {
        Some(owner) => caller.may_access(owner),
        None => caller.require_admin().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_status() {
        let every = [
            ShipmentStatus::Scheduled {
                shipment_id: Uuid::nil(),
                carrier: "postnl".to_owned(),
            },
            ShipmentStatus::Failed {
                reason: "unservable".to_owned(),
            },
            ShipmentStatus::Cancelled {
                shipment_id: None,
                carrier: None,
            },
        ];
        let spelt: Vec<&str> = every.iter().map(ShipmentStatus::as_str).collect();
        assert_eq!(spelt, STATUSES);
    }
}
