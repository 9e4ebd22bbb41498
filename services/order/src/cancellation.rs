//! Stopping a saga from the order service's side: the customer's cancel and the saga
//! deadline take the same path — mark the order `cancelling` and publish
//! `order.cancellation_requested` in one transaction. The deadline is a durable timer: a
//! column swept by every replica, so a restart loses nothing.

use std::time::Duration;

use chrono::Utc;
use runtime::outbox::{Cause, Outbox, Written};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{self, AlreadyFinished, Cancellation, Status};
use crate::reactions::announce;
use crate::store;

/// How many overdue orders one sweep cancels per transaction.
const SWEEP_BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no order with id {0}")]
    NotFound(Uuid),
    #[error("the order is already {}; it can no longer be cancelled", .0.as_str())]
    Finished(Status),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Contract(String),
}

/// Cancels one order inside the caller's transaction; returns its status afterwards, and the
/// outbox row of the request, for the caller to hand off once it has committed.
pub async fn cancel(
    tx: &mut PgConnection,
    outbox: &Outbox,
    order_id: Uuid,
    cancellation: Cancellation,
) -> Result<(Status, Written), CancelError> {
    let mut written = Written::default();
    let saga = store::saga_for_update(tx, order_id)
        .await?
        .ok_or(CancelError::NotFound(order_id))?;
    let step = domain::cancel(saga, cancellation)
        .map_err(|AlreadyFinished(status)| CancelError::Finished(status))?;
    if let Some(outcome) = step.outcome {
        let event = announce(order_id, outcome)
            .map_err(|error| CancelError::Contract(error.to_string()))?;
        let history = [(event.event_type(), Utc::now())];
        store::save_step(tx, order_id, Some(&step.saga), &history).await?;
        let cause = Cause {
            correlationid: order_id.to_string(),
            causationid: None,
        };
        // The cancellation belongs to the saga's trace, whoever asked for it.
        let span = tracing::info_span!(
            "cancel order",
            order.id = %order_id,
            cancellation = ?cancellation,
        );
        let traceparent = store::traceparent(tx, order_id).await?;
        runtime::telemetry::join_stored_trace(&span, traceparent.as_deref());
        let (_, row) = outbox
            .enqueue_handed_off(tx, &event, Some(&cause))
            .instrument(span)
            .await?;
        written.extend(row);
        tracing::info!(%order_id, ?cancellation, "cancellation requested");
    }
    Ok((step.saga.status, written))
}

/// The deadline timer: every `interval`, cancels the open orders whose deadline has passed.
pub async fn sweep_deadlines(
    pool: PgPool,
    outbox: Outbox,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        if let Err(error) = sweep_once(&pool, &outbox).await {
            tracing::warn!(error = %format!("{error:#}"), "deadline sweep failed; will retry");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn sweep_once(pool: &PgPool, outbox: &Outbox) -> Result<(), CancelError> {
    loop {
        let mut tx = pool.begin().await?;
        let overdue = store::overdue_orders(&mut tx, SWEEP_BATCH).await?;
        let mut written = Written::default();
        for order_id in &overdue {
            let (_, row) =
                cancel(&mut tx, outbox, *order_id, Cancellation::DeadlineExceeded).await?;
            written.extend(row);
        }
        tx.commit().await?;
        outbox.hand_off(written);
        if (overdue.len() as i64) < SWEEP_BATCH {
            return Ok(());
        }
    }
}
