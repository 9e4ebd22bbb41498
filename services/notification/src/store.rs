//! All SQL of the notification service: contacts and sent notifications, written inside a
//! reaction's transaction, and an order's notifications read on the pool for the HTTP API.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Contact, Correspondence, Notification, NotificationKind};

/// Remembers whom to tell about an order; a contact already known is kept as it is.
pub async fn insert_contact(
    tx: &mut PgConnection,
    order_id: Uuid,
    contact: &Contact,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO contacts (order_id, customer_id, email) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(&contact.customer_id)
    .bind(&contact.email)
    .execute(tx)
    .await?;
    Ok(())
}

/// What is known of an order: its contact, locked until the transaction ends so concurrent
/// reactions to one order take turns, and the kinds already sent.
pub async fn load_correspondence_for_update(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Correspondence, sqlx::Error> {
    let contact: Option<(String, String)> =
        sqlx::query_as("SELECT customer_id, email FROM contacts WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM notifications WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&mut *tx)
            .await?;
    let sent = kinds
        .iter()
        .map(|kind| decode_kind(order_id, kind))
        .collect::<Result<_, _>>()?;
    Ok(Correspondence {
        contact: contact.map(|(customer_id, email)| Contact { customer_id, email }),
        sent,
    })
}

/// Records a notification as sent. Returns false when that kind was already sent for the
/// order, which then keeps its first one.
pub async fn record(
    tx: &mut PgConnection,
    notification: &Notification,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (order_id, kind, recipient) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(notification.order_id)
    .bind(notification.kind.as_str())
    .bind(&notification.recipient)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A notification that went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotification {
    pub kind: NotificationKind,
    pub recipient: String,
    pub sent_at: DateTime<Utc>,
}

/// The customer who placed the order; `None` for an order never heard of.
pub async fn customer_of(pool: &PgPool, order_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer_id FROM contacts WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
}

/// The order's notifications, oldest first; none for an order never heard of.
pub async fn list(pool: &PgPool, order_id: Uuid) -> Result<Vec<SentNotification>, sqlx::Error> {
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT kind, recipient, sent_at FROM notifications WHERE order_id = $1 \
         ORDER BY sent_at, kind",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(kind, recipient, sent_at)| {
            Ok(SentNotification {
                kind: decode_kind(order_id, &kind)?,
                recipient,
                sent_at,
            })
        })
        .collect()
}

fn decode_kind(order_id: Uuid, kind: &str) -> Result<NotificationKind, sqlx::Error> {
    // The table's check rules an unknown kind out; say so rather than guess.
    NotificationKind::from_name(kind).ok_or_else(|| {
        sqlx::Error::Decode(
            format!("order {order_id} has a notification of unknown kind {kind:?}").into(),
        )
    })
}
