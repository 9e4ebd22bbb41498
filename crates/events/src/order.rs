//! Events published by the order service: the saga's start and its terminal outcomes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One line of an order, priced from the order service's catalogue when it was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// Where an order ships to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shipping {
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    pub address: String,
}

/// `order.placed` v1: a customer placed an order. Carries everything the participants need
/// (lines, total, payment method, shipping, contact), so nobody has to call the order service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub email: String,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
    pub payment_method: String,
    pub shipping: Shipping,
}

/// The currency of every amount in `order.placed` v1, which predates currencies: the shop only
/// sold in euros then. Upcasting a v1 event fills it in.
pub const V1_CURRENCY: &str = "EUR";

/// One line of `order.placed` v2: v1's line plus the discount taken off it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLineV2 {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// Taken off the line's list price (`unit_price_cents` × `quantity`); 0 for none.
    pub discount_cents: i64,
}

/// `order.placed` v2 (v1 events are still read, upcast to this): v1 plus the ISO 4217 currency of every amount and a discount per line.
/// `total_cents` is what the customer pays: the lines' list prices less their discounts.
///
/// A new version rather than new optional fields, because an amount without its currency, or
/// a total that no longer equals the lines' prices, would be misread by a v1 consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedV2 {
    pub order_id: Uuid,
    pub customer_id: String,
    pub email: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub items: Vec<OrderLineV2>,
    pub total_cents: i64,
    pub payment_method: String,
    pub shipping: Shipping,
}

/// Why an `order.placed` v2 cannot be published as v1 for consumers still on v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotExpressibleInV1 {
    #[error("v1 amounts are in {V1_CURRENCY}, this order is in {0}")]
    Currency(String),
    #[error("v1 has no discounts, line {0:?} has one")]
    Discount(String),
}

impl From<OrderPlaced> for OrderPlacedV2 {
    /// The upcast: a v1 event says the same as a v2 event in euros without discounts.
    fn from(v1: OrderPlaced) -> OrderPlacedV2 {
        OrderPlacedV2 {
            order_id: v1.order_id,
            customer_id: v1.customer_id,
            email: v1.email,
            currency: V1_CURRENCY.to_owned(),
            items: v1
                .items
                .into_iter()
                .map(|line| OrderLineV2 {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                    discount_cents: 0,
                })
                .collect(),
            total_cents: v1.total_cents,
            payment_method: v1.payment_method,
            shipping: v1.shipping,
        }
    }
}

impl OrderPlacedV2 {
    /// The same order as v1, for a producer that still publishes v1 while consumers upgrade;
    /// only orders v1 can express (euros, no discounts) have one.
    pub fn to_v1(&self) -> Result<OrderPlaced, NotExpressibleInV1> {
        if self.currency != V1_CURRENCY {
            return Err(NotExpressibleInV1::Currency(self.currency.clone()));
        }
        if let Some(line) = self.items.iter().find(|line| line.discount_cents != 0) {
            return Err(NotExpressibleInV1::Discount(line.sku.clone()));
        }
        Ok(OrderPlaced {
            order_id: self.order_id,
            customer_id: self.customer_id.clone(),
            email: self.email.clone(),
            items: self
                .items
                .iter()
                .map(|line| OrderLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                })
                .collect(),
            total_cents: self.total_cents,
            payment_method: self.payment_method.clone(),
            shipping: self.shipping.clone(),
        })
    }
}

/// `order.completed` v1: the order was reserved, paid and scheduled for shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCompleted {
    pub order_id: Uuid,
}

/// Why an order was cancelled; part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    PaymentDeclined,
    FulfillmentFailed,
    CustomerRequest,
    DeadlineExceeded,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::FulfillmentFailed => "fulfillment_failed",
            CancelReason::CustomerRequest => "customer_request",
            CancelReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// Why an order was rejected; part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    OutOfStock,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfStock => "out_of_stock",
        }
    }
}

/// `order.cancelled` v1: every compensation the order needed has been confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub reason: CancelReason,
}

/// `order.rejected` v1: the order could not start (nothing to compensate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRejected {
    pub order_id: Uuid,
    pub reason: RejectReason,
}

/// `order.cancellation_requested` v1: each participant must undo what it did for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancellationRequested {
    pub order_id: Uuid,
    pub reason: CancelReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(currency: &str, discount_cents: i64) -> OrderPlacedV2 {
        OrderPlacedV2 {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            currency: currency.into(),
            items: vec![OrderLineV2 {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_cents: 1250,
                discount_cents,
            }],
            total_cents: 2500 - discount_cents,
            payment_method: "tok_ok".into(),
            shipping: Shipping {
                country: "NL".into(),
                address: "Damrak 1".into(),
            },
        }
    }

    #[test]
    fn a_euro_order_without_discounts_goes_to_v1_and_back_unchanged() {
        let order = v2("EUR", 0);
        let v1 = order.to_v1().unwrap();
        assert_eq!(v1.total_cents, 2500);
        assert_eq!(OrderPlacedV2::from(v1), order);
    }

    #[test]
    fn what_v1_cannot_say_is_refused_not_dropped() {
        assert_eq!(
            v2("USD", 0).to_v1(),
            Err(NotExpressibleInV1::Currency("USD".into()))
        );
        assert_eq!(
            v2("EUR", 250).to_v1(),
            Err(NotExpressibleInV1::Discount("MUG".into()))
        );
    }
}
