//! All SQL of the payment service: payments loaded and saved inside a reaction's transaction,
//! and read on the pool for the HTTP API.

use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{Payment, PaymentStatus};

#[derive(Debug, sqlx::FromRow)]
struct PaymentRow {
    order_id: Uuid,
    amount_cents: i64,
    currency: String,
    payment_method: String,
    customer_id: Option<String>,
    status: String,
    authorization_id: Option<String>,
    decline_reason: Option<String>,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = sqlx::Error;

    fn try_from(row: PaymentRow) -> Result<Payment, sqlx::Error> {
        let status = match (
            row.status.as_str(),
            row.authorization_id,
            row.decline_reason,
        ) {
            ("pending", _, _) => PaymentStatus::Pending,
            ("authorized", Some(authorization_id), _) => {
                PaymentStatus::Authorized { authorization_id }
            }
            ("declined", _, Some(reason)) => PaymentStatus::Declined { reason },
            ("refunded", Some(authorization_id), _) => PaymentStatus::Refunded { authorization_id },
            ("cancelled", _, _) => PaymentStatus::Cancelled,
            // The table's checks rule this out; say so rather than guess.
            (status, _, _) => {
                return Err(sqlx::Error::Decode(
                    format!(
                        "payment {} has an inconsistent status {status:?}",
                        row.order_id
                    )
                    .into(),
                ));
            }
        };
        Ok(Payment {
            order_id: row.order_id,
            amount_cents: row.amount_cents,
            currency: row.currency,
            payment_method: row.payment_method,
            customer_id: row.customer_id,
            status,
        })
    }
}

const SELECT_PAYMENT: &str = "SELECT order_id, amount_cents, currency, payment_method, \
     customer_id, status, authorization_id, decline_reason FROM payments WHERE order_id = $1";
const SELECT_PAYMENT_FOR_UPDATE: &str = "SELECT order_id, amount_cents, currency, payment_method, \
     customer_id, status, authorization_id, decline_reason FROM payments WHERE order_id = $1 \
     FOR UPDATE";

/// Records a new payment; a payment already recorded for the order is kept as it is.
pub async fn insert(tx: &mut PgConnection, payment: &Payment) -> Result<(), sqlx::Error> {
    let (authorization_id, decline_reason) = gateway_facts(&payment.status);
    sqlx::query(
        "INSERT INTO payments \
         (order_id, amount_cents, currency, payment_method, customer_id, status, \
          authorization_id, decline_reason, refunded_cents) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment.order_id)
    .bind(payment.amount_cents)
    .bind(&payment.currency)
    .bind(&payment.payment_method)
    .bind(&payment.customer_id)
    .bind(payment.status.as_str())
    .bind(authorization_id)
    .bind(decline_reason)
    .bind(payment.refunded_cents())
    .execute(tx)
    .await?;
    Ok(())
}

/// The order's payment, locked until the transaction ends so concurrent reactions to the same
/// order take turns (and the second sees what the first decided).
pub async fn load_for_update(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Payment>, sqlx::Error> {
    fetch(tx, SELECT_PAYMENT_FOR_UPDATE, order_id).await
}

/// Writes a payment's new status.
pub async fn save(tx: &mut PgConnection, payment: &Payment) -> Result<(), sqlx::Error> {
    let (authorization_id, decline_reason) = gateway_facts(&payment.status);
    sqlx::query(
        "UPDATE payments SET status = $2, authorization_id = $3, decline_reason = $4, \
         refunded_cents = $5, updated_at = now() WHERE order_id = $1",
    )
    .bind(payment.order_id)
    .bind(payment.status.as_str())
    .bind(authorization_id)
    .bind(decline_reason)
    .bind(payment.refunded_cents())
    .execute(tx)
    .await?;
    Ok(())
}

/// The order's payment, for reading.
pub async fn find(pool: &PgPool, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    fetch(pool, SELECT_PAYMENT, order_id).await
}

async fn fetch<'e>(
    executor: impl PgExecutor<'e>,
    sql: &'static str,
    order_id: Uuid,
) -> Result<Option<Payment>, sqlx::Error> {
    let row: Option<PaymentRow> = sqlx::query_as(sql)
        .bind(order_id)
        .fetch_optional(executor)
        .await?;
    row.map(Payment::try_from).transpose()
}

/// The authorization id and decline reason columns of a status.
fn gateway_facts(status: &PaymentStatus) -> (Option<&str>, Option<&str>) {
    match status {
        PaymentStatus::Pending | PaymentStatus::Cancelled => (None, None),
        PaymentStatus::Authorized { authorization_id }
        | PaymentStatus::Refunded { authorization_id } => (Some(authorization_id), None),
        PaymentStatus::Declined { reason } => (None, Some(reason)),
    }
}
