//! How the payment service reacts to other services' facts: remember each order's payment
//! from `order.placed`, charge it when `inventory.reserved` arrives, refund it on
//! `fulfillment.failed`. Each reaction runs in the consumer's transaction, which also holds the
//! inbox row and the outgoing events.

use events::Event;
use events::order::OrderPlacedV2;
use runtime::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Charge, Refund};
use crate::gateway::{Gateway, GatewayError};
use crate::store;

/// The payment service's event handler.
#[derive(Debug, Clone)]
pub struct Reactions {
    pub gateway: Gateway,
}

impl Handler for Reactions {
    async fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> Result<Vec<Event>, HandlerError> {
        match &incoming.event {
            Event::OrderPlacedV2(placed) => order_placed(tx, placed).await,
            Event::InventoryReserved(reserved) => {
                self.inventory_reserved(tx, reserved.order_id).await
            }
            Event::FulfillmentFailed(failed) => self.fulfillment_failed(tx, failed.order_id).await,
            Event::OrderCancellationRequested(request) => self.cancel(tx, request.order_id).await,
            _ => Ok(vec![]),
        }
    }
}

impl Reactions {
    /// Charges the order's payment once its stock is held, unless the gateway already answered.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn inventory_reserved(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Vec<Event>, HandlerError> {
        let payment = load(tx, order_id).await?;
        let (payment_method, amount_cents) = match domain::charge_for_reservation(&payment) {
            Charge::Authorize {
                payment_method,
                amount_cents,
            } => (payment_method, amount_cents),
            Charge::AlreadyDecided => {
                tracing::info!(
                    status = payment.status.as_str(),
                    "payment already decided; not charging again"
                );
                return Ok(vec![]);
            }
        };
        let outcome = self
            .gateway
            .authorize(order_id, payment_method, amount_cents, &payment.currency)
            .await
            .map_err(unavailable)?;
        let transition = domain::record_authorization(&payment, outcome);
        store::save(tx, &transition.payment).await?;
        tracing::info!(
            status = transition.payment.status.as_str(),
            amount_cents,
            "payment decided"
        );
        Ok(transition.events)
    }

    /// Gives an authorized payment back when the order cannot be shipped.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn fulfillment_failed(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Vec<Event>, HandlerError> {
        let payment = load(tx, order_id).await?;
        let (authorization_id, amount_cents) = match domain::refund_for_failed_fulfillment(&payment)
        {
            Refund::Refund {
                authorization_id,
                amount_cents,
            } => (authorization_id, amount_cents),
            Refund::NothingToRefund => {
                tracing::info!(
                    status = payment.status.as_str(),
                    "nothing charged to refund"
                );
                return Ok(vec![]);
            }
        };
        self.gateway
            .refund(order_id, authorization_id, amount_cents)
            .await
            .map_err(unavailable)?;
        let transition = domain::record_refund(&payment);
        store::save(tx, &transition.payment).await?;
        tracing::info!(amount_cents, "payment refunded");
        Ok(transition.events)
    }
}

impl Reactions {
    /// Undoes the charge of a cancelled order, or makes sure it never happens.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn cancel(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Vec<Event>, HandlerError> {
        let payment = load(tx, order_id).await?;
        let transition = match domain::cancel(&payment) {
            domain::Cancel::Refund {
                authorization_id,
                amount_cents,
            } => {
                self.gateway
                    .refund(order_id, authorization_id, amount_cents)
                    .await
                    .map_err(unavailable)?;
                tracing::info!(amount_cents, "payment refunded on cancellation");
                domain::record_refund(&payment)
            }
            domain::Cancel::Confirm(transition) => transition,
        };
        if transition.payment != payment {
            store::save(tx, &transition.payment).await?;
        }
        Ok(transition.events)
    }
}

/// Remembers what the order will cost and how it will be paid. Nothing to publish yet.
#[tracing::instrument(skip_all, fields(order_id = %placed.order_id))]
async fn order_placed(
    tx: &mut PgConnection,
    placed: &OrderPlacedV2,
) -> Result<Vec<Event>, HandlerError> {
    let payment =
        domain::payment_for(placed).map_err(|error| HandlerError::Permanent(error.to_string()))?;
    store::insert(tx, &payment).await?;
    Ok(vec![])
}

/// A gateway without an answer: the event is retried later (with backoff, then dead-lettered);
/// the idempotency key makes the retry safe.
fn unavailable(error: GatewayError) -> HandlerError {
    HandlerError::Transient(error.into())
}

/// The order's payment, locked for this transaction; not known yet is worth a retry, because
/// `order.placed` travels on another stream and may simply be late.
async fn load(tx: &mut PgConnection, order_id: Uuid) -> Result<domain::Payment, HandlerError> {
    store::load_for_update(tx, order_id).await?.ok_or_else(|| {
        HandlerError::NotYet(format!(
            "no payment for order {order_id} yet: order.placed has not arrived"
        ))
    })
}
