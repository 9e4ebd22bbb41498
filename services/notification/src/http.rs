//! The notification service's HTTP API: `GET /notifications?order_id=`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use runtime::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, SentNotification};

/// The service's routes; health, metrics and middleware are added by the runtime.
pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/notifications", get(list_notifications))
        .with_state(pool)
}

/// A notification as clients see it.
#[derive(Debug, Serialize)]
pub struct NotificationView {
    /// `placed`, `shipment_scheduled`, `completed`, `cancelled` or `rejected`.
    pub kind: &'static str,
    pub recipient: String,
    pub sent_at: DateTime<Utc>,
}

impl From<SentNotification> for NotificationView {
    fn from(sent: SentNotification) -> NotificationView {
        NotificationView {
            kind: sent.kind.as_str(),
            recipient: sent.recipient,
            sent_at: sent.sent_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct NotificationsQuery {
    order_id: Option<String>,
}

async fn list_notifications(
    State(pool): State<PgPool>,
    query: Result<Query<NotificationsQuery>, QueryRejection>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let malformed = || ApiError::BadRequest("query parameter order_id must be a UUID".to_owned());
    let Query(query) = query.map_err(|_| malformed())?;
    let id = query
        .order_id
        .ok_or_else(|| ApiError::BadRequest("query parameter order_id is required".to_owned()))?;
    let order_id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::BadRequest(format!(
            "query parameter order_id must be a UUID, not {id:?}"
        ))
    })?;
    show_notifications(&pool, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_notifications(
    pool: &PgPool,
    order_id: Uuid,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let notifications = store::list(pool, order_id).await?;
    Ok(Json(
        notifications
            .into_iter()
            .map(NotificationView::from)
            .collect(),
    ))
}
