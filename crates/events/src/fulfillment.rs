//! Events published by the fulfillment service.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `fulfillment.scheduled` v1: a shipment was booked for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FulfillmentScheduled {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub carrier: String,
}

/// `fulfillment.failed` v1: the order cannot be shipped; the saga must compensate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FulfillmentFailed {
    pub order_id: Uuid,
    /// Why, for people; not a contract.
    pub reason: String,
}

/// `fulfillment.cancelled` v1: in answer to `order.cancellation_requested`, the order's
/// shipment is cancelled, or will never be booked, or had failed: nothing will ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FulfillmentCancelled {
    pub order_id: Uuid,
}
