//! The payment service's HTTP API: `GET /payments/{order_id}`.

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

use crate::domain::Payment;
use crate::store;

/// The document's head; its paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment service",
        description = "The payment of each order: authorized through the payment gateway once \
                       its stock is reserved, refunded when the order is undone."
    ),
    tags((name = "payments", description = "Payments, by order")),
)]
struct ApiDoc;

/// The service's routes with their documentation; health, metrics and middleware are added
/// by the runtime.
pub fn routes(pool: PgPool) -> OpenApiRouter {
    api().with_state(pool)
}

/// The routes, each registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(get_payment))
}

/// Every status `PaymentStatus::as_str` spells.
const STATUSES: [&str; 5] = ["pending", "authorized", "declined", "refunded", "cancelled"];

fn status_schema() -> Object {
    runtime::openapi::string_enum(STATUSES)
}

/// A payment as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub order_id: Uuid,
    #[schema(schema_with = status_schema)]
    pub status: &'static str,
    #[schema(minimum = 0)]
    pub amount_cents: i64,
    /// ISO 4217 code of the amounts, from `order.placed` (`EUR` for v1 events).
    #[schema(example = "EUR")]
    pub currency: String,
    /// The whole amount once refunded, else 0.
    #[schema(minimum = 0)]
    pub refunded_cents: i64,
}

impl From<&Payment> for PaymentView {
    fn from(payment: &Payment) -> PaymentView {
        PaymentView {
            order_id: payment.order_id,
            status: payment.status.as_str(),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            refunded_cents: payment.refunded_cents(),
        }
    }
}

/// Reads an order's payment.
///
/// A customer reads only the payments of their own orders; another customer's is answered
/// like an unknown order's.
#[utoipa::path(
    get,
    path = "/payments/{order_id}",
    tag = "payments",
    params(OrderIdPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 404, description = "No payment for this order (yet), or the order is \
                                      not the caller's", body = ErrorBody),
    )
)]
async fn get_payment(
    State(pool): State<PgPool>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::NotFound("no payment for that order id".to_owned()))?;
    // Anything but a UUID cannot name an order, so it has no payment either.
    let order_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound(format!("no payment for order {id}")))?;
    show_payment(&pool, &caller, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_payment(
    pool: &PgPool,
    caller: &Caller,
    order_id: Uuid,
) -> Result<Json<PaymentView>, ApiError> {
    // Another customer's payment is answered exactly like a missing one, so that the answer
    // does not tell which orders exist.
    store::find(pool, order_id)
        .await?
        .filter(|payment| may_read(caller, payment.customer_id.as_deref()))
        .map(|payment| Json(PaymentView::from(&payment)))
        .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))
}

/// Whether `caller` may see what belongs to `owner`. A payment without a known owner
/// (recorded before owners were kept) is nobody's: only an admin or an unverified caller may
/// see it.
fn may_read(caller: &Caller, owner: Option<&str>) -> bool {
    match owner {
        Some(owner) => caller.may_access(owner),
        None => caller.require_admin().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PaymentStatus;

    #[test]
    fn the_document_lists_every_status() {
        let every = [
            PaymentStatus::Pending,
            PaymentStatus::Authorized {
                authorization_id: "auth-1".to_owned(),
            },
            PaymentStatus::Declined {
                reason: "card_declined".to_owned(),
            },
            PaymentStatus::Refunded {
                authorization_id: "auth-1".to_owned(),
            },
            PaymentStatus::Cancelled,
        ];
        let spelt: Vec<&str> = every.iter().map(PaymentStatus::as_str).collect();
        assert_eq!(spelt, STATUSES);
    }
}
