//! The payment service's HTTP API: `GET /payments/{order_id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use runtime::http::ApiError;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Payment;
use crate::store;

/// The service's routes; health, metrics and middleware are added by the runtime.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/payments/{order_id}", get(get_payment))
        .with_state(pool)
}

/// A payment as clients see it.
#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub order_id: Uuid,
    /// `pending`, `authorized`, `declined` or `refunded`.
    pub status: &'static str,
    pub amount_cents: i64,
    pub refunded_cents: i64,
}

impl From<&Payment> for PaymentView {
    fn from(payment: &Payment) -> PaymentView {
        PaymentView {
            order_id: payment.order_id,
            status: payment.status.as_str(),
            amount_cents: payment.amount_cents,
            refunded_cents: payment.refunded_cents(),
        }
    }
}

async fn get_payment(
    State(pool): State<PgPool>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::NotFound("no payment for that order id".to_owned()))?;
    // Anything but a UUID cannot name an order, so it has no payment either.
    let order_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound(format!("no payment for order {id}")))?;
    show_payment(&pool, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_payment(pool: &PgPool, order_id: Uuid) -> Result<Json<PaymentView>, ApiError> {
    let payment = store::find(pool, order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))?;
    Ok(Json(PaymentView::from(&payment)))
}
