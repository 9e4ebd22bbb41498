//! Events published by the payment service.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `payment.authorized` v1: the gateway authorized the order's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentAuthorized {
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// The gateway's reference for the authorization.
    pub authorization_id: String,
}

/// `payment.declined` v1: the gateway refused the payment; nothing was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    /// The gateway's decline reason, for people; not a contract.
    pub reason: String,
}

/// `payment.refunded` v1: an authorized amount was given back (compensation). In answer to
/// `order.cancellation_requested` it also confirms that no money is held: `amount_cents` is
/// then 0 when nothing had been charged (and nothing ever will be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub amount_cents: i64,
}
