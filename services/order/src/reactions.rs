//! The order service's reactions: the catalogue read model from `inventory.product_updated`,
//! and the saga moved by each participant's outcome, announcing terminal outcomes.

use chrono::Utc;
use events::Event;
use events::order::{
    CancelReason, OrderCancellationRequested, OrderCancelled, OrderCompleted, OrderRejected,
    RejectReason,
};
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Fact, Outcome, Reason};
use crate::metrics::SagaMetrics;
use crate::store::{self, CatalogueEntry};

#[derive(Debug, Clone)]
pub struct Reactions {
    pub metrics: SagaMetrics,
}

impl Handler for Reactions {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        incoming: &Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        if let Event::ProductUpdated(_) = &incoming.event {
            apply_to_catalogue(tx, incoming).await?;
            return Ok(vec![]);
        }
        match (fact_of(&incoming.event), incoming.event.order_id()) {
            (Some(fact), Some(order_id)) => advance(tx, order_id, fact, incoming).await,
            _ => Ok(vec![]),
        }
    }

    fn committed(&self, _incoming: &Incoming, outgoing: &[Event]) {
        for event in outgoing {
            self.metrics.announced(event);
        }
    }
}

/// Folds a product update into the catalogue read model: the live consumer and a rebuild
/// from the stream (`catalogue::CatalogueProjection`) run this same code.
pub async fn apply_to_catalogue(
    tx: &mut PgConnection,
    incoming: &Incoming,
) -> Result<(), HandlerError> {
    if let Event::ProductUpdated(product) = &incoming.event {
        let entry = CatalogueEntry {
            sku: product.sku.clone(),
            name: product.name.clone(),
            price_cents: product.price_cents,
        };
        store::upsert_catalogue(tx, &entry, incoming.envelope.time).await?;
    }
    Ok(())
}

/// The saga fact a participant's event stands for (conversion at the edge).
fn fact_of(event: &Event) -> Option<Fact> {
    Some(match event {
        Event::InventoryReserved(_) => Fact::InventoryReserved,
        Event::InventoryRejected(_) => Fact::InventoryRejected,
        Event::InventoryReleased(_) => Fact::InventoryReleased,
        Event::PaymentAuthorized(_) => Fact::PaymentAuthorized,
        Event::PaymentDeclined(_) => Fact::PaymentDeclined,
        Event::PaymentRefunded(_) => Fact::PaymentRefunded,
        Event::FulfillmentScheduled(_) => Fact::FulfillmentScheduled,
        Event::FulfillmentFailed(_) => Fact::FulfillmentFailed,
        Event::FulfillmentCancelled(_) => Fact::FulfillmentCancelled,
        _ => return None,
    })
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, fact = ?fact))]
async fn advance(
    tx: &mut PgConnection,
    order_id: Uuid,
    fact: Fact,
    incoming: &Incoming,
) -> Result<Vec<Event>, HandlerError> {
    let Some(saga) = store::saga_for_update(tx, order_id).await? else {
        // Every saga event follows an order.placed that this service wrote itself.
        return Err(HandlerError::Permanent(format!(
            "event for unknown order {order_id}"
        )));
    };
    let step = domain::react(saga, fact);
    let changed = (step.saga != saga).then_some(&step.saga);
    let event = step
        .outcome
        .map(|outcome| announce(order_id, outcome))
        .transpose()?;
    let mut history = vec![(
        incoming.envelope.event_type.as_str(),
        incoming.envelope.time,
    )];
    if let Some(event) = &event {
        history.push((event.event_type(), Utc::now()));
    }
    store::save_step(tx, order_id, changed, &history).await?;
    if event.is_some() {
        tracing::info!(status = step.saga.status.as_str(), "saga finished");
    }
    Ok(event.into_iter().collect())
}

/// The public event announcing an outcome (conversion at the edge).
pub(crate) fn announce(order_id: Uuid, outcome: Outcome) -> Result<Event, HandlerError> {
    Ok(match outcome {
        Outcome::Completed => Event::OrderCompleted(OrderCompleted { order_id }),
        Outcome::Rejected => Event::OrderRejected(OrderRejected {
            order_id,
            reason: RejectReason::OutOfStock,
        }),
        Outcome::Cancelled(reason) => Event::OrderCancelled(OrderCancelled {
            order_id,
            reason: cancel_reason(reason)?,
        }),
        Outcome::CancellationRequested(reason) => {
            Event::OrderCancellationRequested(OrderCancellationRequested {
                order_id,
                reason: cancel_reason(reason)?,
            })
        }
    })
}

fn cancel_reason(reason: Reason) -> Result<CancelReason, HandlerError> {
    Ok(match reason {
        Reason::PaymentDeclined => CancelReason::PaymentDeclined,
        Reason::FulfillmentFailed => CancelReason::FulfillmentFailed,
        Reason::CustomerRequest => CancelReason::CustomerRequest,
        Reason::DeadlineExceeded => CancelReason::DeadlineExceeded,
        Reason::OutOfStock => {
            return Err(HandlerError::Permanent(
                "an order cannot be cancelled for being out of stock".into(),
            ));
        }
    })
}
