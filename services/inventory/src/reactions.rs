//! Inventory's reactions to the saga: reserve on `order.placed`, release on a compensation,
//! deduct on `order.completed`. Each runs in the consumer's transaction.

use events::Event;
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, ReserveDecision};
use crate::store::{self, StockMove};

#[derive(Debug, Clone, Copy)]
pub struct Reactions;

/// The shared lock every write of products takes first.
pub const PRODUCTS_LOCK: &str = "products";

impl Handler for Reactions {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        match &incoming.event {
            Event::OrderPlacedV2(placed) => {
                let lines = domain::merge_lines(
                    placed
                        .items
                        .iter()
                        .map(|line| (line.sku.as_str(), line.quantity)),
                );
                reserve(tx, placed.order_id, lines).await
            }
            Event::PaymentDeclined(declined) => release(tx, declined.order_id).await,
            Event::FulfillmentFailed(failed) => release(tx, failed.order_id).await,
            Event::OrderCompleted(completed) => commit(tx, completed.order_id).await,
            Event::OrderCancellationRequested(request) => cancel(tx, request.order_id).await,
            _ => Ok(vec![]),
        }
    }

    /// Every reaction may change product rows (reserving, releasing, deducting), which orders
    /// share. One lock for all of them, taken before any handler runs (and by the HTTP API
    /// before it writes a product), makes this service's writes take turns: a reservation
    /// decides on the stock it read, and two orders' events, or one order's events arriving
    /// through different consumers (a cancellation racing its reservation), never interleave.
    /// So the handlers take no row locks on products.
    fn shared_locks(&self, _incoming: &Incoming) -> &'static [&'static str] {
        &[PRODUCTS_LOCK]
    }
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn reserve(
    tx: &mut PgConnection,
    order_id: Uuid,
    lines: Vec<events::inventory::StockLine>,
) -> Result<Vec<Event>, HandlerError> {
    let skus: Vec<String> = lines.iter().map(|line| line.sku.clone()).collect();
    let inputs = store::reserve_inputs(tx, order_id, &skus).await?;
    if inputs.decided {
        // The same order placed again under a new event id: decided already.
        return Ok(vec![]);
    }
    if inputs.cancelled {
        // The cancellation overtook the order: never hold stock for it.
        tracing::info!("order cancelled before it was reserved; not reserving");
        return Ok(vec![]);
    }
    match domain::reserve(order_id, lines, &inputs.available) {
        ReserveDecision::Reserve { reservation, event } => {
            store::save_reservation(tx, &reservation, StockMove::Hold).await?;
            tracing::info!("reserved");
            Ok(vec![event])
        }
        ReserveDecision::Reject { reservation, event } => {
            store::save_reservation(tx, &reservation, StockMove::None).await?;
            tracing::info!("rejected: out of stock");
            Ok(vec![event])
        }
    }
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn release(tx: &mut PgConnection, order_id: Uuid) -> Result<Vec<Event>, HandlerError> {
    let Some(reservation) = store::reservation_for_update(tx, order_id).await? else {
        // A compensation can only follow our own `inventory.reserved`; wait for the order.
        return Err(HandlerError::NotYet(format!(
            "no reservation for order {order_id} yet"
        )));
    };
    let Some((released, event)) = domain::release(&reservation) else {
        return Ok(vec![]);
    };
    store::save_reservation(tx, &released, StockMove::GiveBack).await?;
    tracing::info!("released");
    Ok(vec![event])
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn cancel(tx: &mut PgConnection, order_id: Uuid) -> Result<Vec<Event>, HandlerError> {
    if !store::remember_cancellation(tx, order_id).await? {
        return Ok(vec![]);
    }
    let reservation = store::reservation_for_update(tx, order_id).await?;
    let (released, confirmation) = domain::cancel(order_id, reservation.as_ref());
    if let Some(released) = released {
        store::save_reservation(tx, &released, StockMove::GiveBack).await?;
        tracing::info!("released on cancellation");
    }
    Ok(vec![confirmation])
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn commit(tx: &mut PgConnection, order_id: Uuid) -> Result<Vec<Event>, HandlerError> {
    let Some(reservation) = store::reservation_for_update(tx, order_id).await? else {
        return Err(HandlerError::NotYet(format!(
            "no reservation for order {order_id} yet"
        )));
    };
    if let Some(committed) = domain::commit(&reservation) {
        store::save_reservation(tx, &committed, StockMove::Deduct).await?;
        tracing::info!("deducted");
    }
    Ok(vec![])
}
