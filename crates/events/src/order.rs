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
