//! The notification service's HTTP API: `GET /notifications?order_id=`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use runtime::auth::Caller;
use runtime::http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::openapi::schema::Object;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::NotificationKind;
use crate::store::{self, SentNotification};

/// The document's head; its paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification service",
        description = "What each customer was told about their order, once per kind of news."
    ),
    tags((name = "notifications", description = "Notifications sent, by order")),
)]
struct ApiDoc;

/// The service's routes with their documentation; health, metrics and middleware are added
/// by the runtime.
pub fn routes(pool: PgPool) -> OpenApiRouter {
    api().with_state(pool)
}

/// The routes, each registered at the path and method its annotation documents.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(list_notifications))
}

fn kind_schema() -> Object {
    runtime::openapi::string_enum(NotificationKind::ALL.map(NotificationKind::as_str))
}

/// A notification as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// The customer's e-mail address.
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

/// The query of `GET /notifications`, for the document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsParams {
    /// The order whose notifications to list.
    pub order_id: Uuid,
}

/// Lists the notifications sent about an order.
///
/// A customer sees only those of their own orders; another customer's order is answered like
/// an unknown one, with none.
#[utoipa::path(
    get,
    path = "/notifications",
    tag = "notifications",
    params(NotificationsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The notifications, oldest first; none for an unknown \
                                      order or one not the caller's", body = Vec<NotificationView>),
        (status = 400, description = "`order_id` is missing or not a UUID", body = ErrorBody),
    )
)]
async fn list_notifications(
    State(pool): State<PgPool>,
    caller: Caller,
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
    show_notifications(&pool, &caller, order_id).await
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn show_notifications(
    pool: &PgPool,
    caller: &Caller,
    order_id: Uuid,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    // Another customer's order is answered exactly like an unknown one (no notifications), so
    // that the answer does not tell which orders exist. An order never heard of has no
    // contact, and so no notifications to hide.
    if let Some(owner) = store::customer_of(pool, order_id).await?
        && !caller.may_access(&owner)
    {
        return Ok(Json(Vec::new()));
    }
    let notifications = store::list(pool, order_id).await?;
    Ok(Json(
        notifications
            .into_iter()
            .map(NotificationView::from)
            .collect(),
    ))
}
