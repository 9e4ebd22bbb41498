//! How the notification service reacts to other services' facts: remember whom to tell from
//! `order.placed`, and tell the customer, once per kind, that the order was placed, its
//! shipment scheduled, or the order completed, cancelled or rejected. "Telling" is recording
//! the notification and logging that it went out (without the address).

use events::Event;
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Decision};
use crate::store;

/// The notification service's event handler.
#[derive(Debug, Clone, Default)]
pub struct Reactions {}

impl Handler for Reactions {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        let event = &incoming.event;
        match event {
            Event::OrderPlacedV2(placed) => {
                apply_to_contacts(tx, incoming).await?;
                notify(tx, placed.order_id, event).await
            }
            Event::FulfillmentScheduled(e) => notify(tx, e.order_id, event).await,
            Event::OrderCompleted(e) => notify(tx, e.order_id, event).await,
            Event::OrderCancelled(e) => notify(tx, e.order_id, event).await,
            Event::OrderRejected(e) => notify(tx, e.order_id, event).await,
            _ => Ok(vec![]),
        }
    }
}

/// Folds an `order.placed` into the contacts read model: the live consumer and a rebuild from
/// the stream (`contacts::ContactsProjection`) run this same code.
pub async fn apply_to_contacts(
    tx: &mut PgConnection,
    incoming: &Incoming,
) -> Result<(), HandlerError> {
    if let Event::OrderPlacedV2(placed) = &incoming.event {
        store::insert_contact(tx, placed.order_id, &domain::contact_of(placed)).await?;
    }
    Ok(())
}

/// Tells the customer about `event`, unless they were told already. Publishes nothing.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn notify(
    tx: &mut PgConnection,
    order_id: Uuid,
    event: &Event,
) -> Result<Vec<Event>, HandlerError> {
    let correspondence = store::load_correspondence_for_update(tx, order_id).await?;
    match domain::decide(&correspondence, event) {
        Decision::Send(notification) => {
            if store::record(tx, &notification).await? {
                tracing::info!(kind = notification.kind.as_str(), "notification sent");
            }
        }
        Decision::AlreadySent => {
            tracing::info!(event_type = event.event_type(), "customer already notified");
        }
        // `order.placed` travels on its own stream and may simply be late: worth a retry.
        Decision::ContactUnknown => {
            return Err(HandlerError::NotYet(format!(
                "no contact for order {order_id} yet: order.placed has not arrived"
            )));
        }
        Decision::Irrelevant => {}
    }
    Ok(vec![])
}
