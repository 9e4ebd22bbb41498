//! Events published by the inventory service: catalogue changes and reservation outcomes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `inventory.product_updated` v1: a product was created or its catalogue data changed.
/// Carries the state other services keep in their own read models (event-carried state
/// transfer). Stock levels are deliberately absent: they change with every order and no
/// other service may decide on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductUpdated {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// One reserved (or released) line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLine {
    pub sku: String,
    pub quantity: u32,
}

/// `inventory.reserved` v1: every line of the order is held for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReserved {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// `inventory.rejected` v1: the order could not be reserved; nothing is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRejected {
    pub order_id: Uuid,
    /// The SKUs that did not have enough available stock.
    pub unavailable_skus: Vec<String>,
}

/// `inventory.released` v1: a reservation was given back (compensation). In answer to
/// `order.cancellation_requested` it also confirms that nothing is held: `items` is then
/// empty when nothing had been reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReleased {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}
