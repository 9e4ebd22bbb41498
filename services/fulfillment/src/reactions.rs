//! How the fulfillment service reacts to other services' facts: remember where each order
//! ships to from `order.placed`, and decide its one shipment when `payment.authorized` arrives.
//! Each reaction runs in the consumer's transaction, which also holds the inbox row and the
//! outgoing events.

use events::Event;
use events::order::OrderPlacedV2;
use events::payment::PaymentAuthorized;
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Decision};
use crate::store;

/// The fulfillment service's event handler.
#[derive(Debug, Clone, Default)]
pub struct Reactions {}

impl Handler for Reactions {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        match &incoming.event {
            Event::OrderPlacedV2(placed) => order_placed(tx, placed).await,
            Event::PaymentAuthorized(authorized) => payment_authorized(tx, authorized).await,
            Event::OrderCancellationRequested(request) => cancel(tx, request.order_id).await,
            _ => Ok(vec![]),
        }
    }
}

/// Remembers where the order ships to, and for whom. Nothing to publish yet.
#[tracing::instrument(skip_all, fields(order_id = %placed.order_id))]
async fn order_placed(
    tx: &mut PgConnection,
    placed: &OrderPlacedV2,
) -> Result<Vec<Event>, HandlerError> {
    store::insert_destination(
        tx,
        placed.order_id,
        &placed.customer_id,
        &domain::destination_of(placed),
    )
    .await?;
    Ok(vec![])
}

/// The order's destination, locked: the row stands for the order, so reactions to one order
/// take turns. Not known yet is worth a retry: `order.placed` travels on another stream (or
/// behind other messages) and may simply be late.
async fn locked_destination(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<domain::Destination, HandlerError> {
    store::load_destination_for_update(tx, order_id)
        .await?
        .ok_or_else(|| {
            HandlerError::NotYet(format!(
                "no destination for order {order_id} yet: order.placed has not arrived"
            ))
        })
}

/// Cancels the order's shipment, booked or not, and confirms to the order service.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn cancel(tx: &mut PgConnection, order_id: Uuid) -> Result<Vec<Event>, HandlerError> {
    locked_destination(tx, order_id).await?;
    let existing = store::load_shipment(tx, order_id).await?;
    match domain::cancel(order_id, existing.as_ref()) {
        domain::Cancel::Cancel { shipment, event } => {
            store::save_shipment(tx, &shipment).await?;
            tracing::info!("shipment cancelled");
            Ok(vec![event])
        }
        domain::Cancel::Confirm(event) => Ok(vec![event]),
        domain::Cancel::AlreadyCancelled => Ok(vec![]),
    }
}

/// Books the paid order's shipment, or fails it when no carrier can take it.
#[tracing::instrument(skip_all, fields(order_id = %authorized.order_id))]
async fn payment_authorized(
    tx: &mut PgConnection,
    authorized: &PaymentAuthorized,
) -> Result<Vec<Event>, HandlerError> {
    let order_id = authorized.order_id;
    let destination = locked_destination(tx, order_id).await?;
    let existing = store::load_shipment(tx, order_id).await?;
    match domain::ship(order_id, &destination, existing.as_ref(), Uuid::now_v7()) {
        Decision::Decided { shipment, events } => {
            store::save_shipment(tx, &shipment).await?;
            tracing::info!(status = shipment.status.as_str(), "shipment decided");
            Ok(events)
        }
        Decision::AlreadyDecided => {
            tracing::info!("shipment already decided; not booking another");
            Ok(vec![])
        }
    }
}
