//! The event catalogue: every event type and version the system knows, as one enum, with
//! decoding from (type, version, data) and the JSON Schema of each.

use schemars::{JsonSchema, Schema, schema_for};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use uuid::Uuid;

use crate::fulfillment::{FulfillmentCancelled, FulfillmentFailed, FulfillmentScheduled};
use crate::inventory::{InventoryRejected, InventoryReleased, InventoryReserved, ProductUpdated};
use crate::order::{
    OrderCancellationRequested, OrderCancelled, OrderCompleted, OrderPlaced, OrderPlacedV2,
    OrderRejected,
};
use crate::payment::{PaymentAuthorized, PaymentDeclined, PaymentRefunded};

/// Why a message could not be turned into a typed event. Never retried: such a message goes
/// to the dead-letter stream with this as its reason.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("message is not a CloudEvents JSON envelope: {source}")]
    Envelope {
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported CloudEvents specversion {0:?}")]
    SpecVersion(String),
    #[error("dataschema {dataschema:?} does not name a version of {event_type:?}")]
    DataSchema {
        dataschema: String,
        event_type: String,
    },
    #[error("unknown event type {event_type:?} version {version}")]
    UnknownType { event_type: String, version: u32 },
    #[error("data of {event_type:?} v{version} does not match its schema: {violations}")]
    Schema {
        event_type: String,
        version: u32,
        violations: String,
    },
    #[error("data of {event_type:?} v{version} does not match its schema: {source}")]
    Data {
        event_type: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
}

/// Every event in the catalogue, typed and versioned: one variant per type and version.
///
/// Decoding yields the version that was published; [`Event::upcast`] brings an old version up
/// to the latest, which is what consumers handle (`Envelope::event` does both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `order.placed` v1; never reaches a handler, it is upcast to v2.
    OrderPlaced(OrderPlaced),
    OrderPlacedV2(OrderPlacedV2),
    OrderCompleted(OrderCompleted),
    OrderCancelled(OrderCancelled),
    OrderRejected(OrderRejected),
    OrderCancellationRequested(OrderCancellationRequested),
    ProductUpdated(ProductUpdated),
    InventoryReserved(InventoryReserved),
    InventoryRejected(InventoryRejected),
    InventoryReleased(InventoryReleased),
    PaymentAuthorized(PaymentAuthorized),
    PaymentDeclined(PaymentDeclined),
    PaymentRefunded(PaymentRefunded),
    FulfillmentScheduled(FulfillmentScheduled),
    FulfillmentFailed(FulfillmentFailed),
    FulfillmentCancelled(FulfillmentCancelled),
}

/// One entry of the catalogue: a type, a version and the JSON Schema of its `data`.
#[derive(Debug)]
pub struct CatalogueEntry {
    pub event_type: &'static str,
    pub version: u32,
    pub schema: fn() -> Schema,
}

/// The whole catalogue, in a stable order; `schemas/` is generated from it.
pub const CATALOGUE: &[CatalogueEntry] = &[
    entry::<OrderPlaced>("order.placed", 1),
    entry::<OrderPlacedV2>("order.placed", 2),
    entry::<OrderCompleted>("order.completed", 1),
    entry::<OrderCancelled>("order.cancelled", 1),
    entry::<OrderRejected>("order.rejected", 1),
    entry::<OrderCancellationRequested>("order.cancellation_requested", 1),
    entry::<ProductUpdated>("inventory.product_updated", 1),
    entry::<InventoryReserved>("inventory.reserved", 1),
    entry::<InventoryRejected>("inventory.rejected", 1),
    entry::<InventoryReleased>("inventory.released", 1),
    entry::<PaymentAuthorized>("payment.authorized", 1),
    entry::<PaymentDeclined>("payment.declined", 1),
    entry::<PaymentRefunded>("payment.refunded", 1),
    entry::<FulfillmentScheduled>("fulfillment.scheduled", 1),
    entry::<FulfillmentFailed>("fulfillment.failed", 1),
    entry::<FulfillmentCancelled>("fulfillment.cancelled", 1),
];

const fn entry<T: JsonSchema>(event_type: &'static str, version: u32) -> CatalogueEntry {
    CatalogueEntry {
        event_type,
        version,
        schema: || schema_for!(T),
    }
}

impl Event {
    /// The event's type, e.g. `order.placed`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::OrderPlaced(_) | Event::OrderPlacedV2(_) => "order.placed",
            Event::OrderCompleted(_) => "order.completed",
            Event::OrderCancelled(_) => "order.cancelled",
            Event::OrderRejected(_) => "order.rejected",
            Event::OrderCancellationRequested(_) => "order.cancellation_requested",
            Event::ProductUpdated(_) => "inventory.product_updated",
            Event::InventoryReserved(_) => "inventory.reserved",
            Event::InventoryRejected(_) => "inventory.rejected",
            Event::InventoryReleased(_) => "inventory.released",
            Event::PaymentAuthorized(_) => "payment.authorized",
            Event::PaymentDeclined(_) => "payment.declined",
            Event::PaymentRefunded(_) => "payment.refunded",
            Event::FulfillmentScheduled(_) => "fulfillment.scheduled",
            Event::FulfillmentFailed(_) => "fulfillment.failed",
            Event::FulfillmentCancelled(_) => "fulfillment.cancelled",
        }
    }

    /// The schema version of the payload.
    pub fn version(&self) -> u32 {
        match self {
            Event::OrderPlacedV2(_) => 2,
            _ => 1,
        }
    }

    /// The same fact in the latest version of its type: consumers are written against the
    /// latest version only, and history (and producers not yet upgraded) may hold older ones.
    pub fn upcast(self) -> Event {
        match self {
            Event::OrderPlaced(v1) => Event::OrderPlacedV2(v1.into()),
            latest => latest,
        }
    }

    /// The order this event belongs to; `None` for catalogue events.
    pub fn order_id(&self) -> Option<Uuid> {
        Some(match self {
            Event::OrderPlaced(e) => e.order_id,
            Event::OrderPlacedV2(e) => e.order_id,
            Event::OrderCompleted(e) => e.order_id,
            Event::OrderCancelled(e) => e.order_id,
            Event::OrderRejected(e) => e.order_id,
            Event::OrderCancellationRequested(e) => e.order_id,
            Event::ProductUpdated(_) => return None,
            Event::InventoryReserved(e) => e.order_id,
            Event::InventoryRejected(e) => e.order_id,
            Event::InventoryReleased(e) => e.order_id,
            Event::PaymentAuthorized(e) => e.order_id,
            Event::PaymentDeclined(e) => e.order_id,
            Event::PaymentRefunded(e) => e.order_id,
            Event::FulfillmentScheduled(e) => e.order_id,
            Event::FulfillmentFailed(e) => e.order_id,
            Event::FulfillmentCancelled(e) => e.order_id,
        })
    }

    /// The aggregate key that ends the subject: the order id, or the SKU.
    pub fn key(&self) -> String {
        match (self, self.order_id()) {
            (Event::ProductUpdated(e), _) => e.sku.clone(),
            (_, Some(order_id)) => order_id.to_string(),
            (_, None) => String::new(),
        }
    }

    /// The subject this event is published on, e.g. `order.placed.<order id>`.
    pub fn subject(&self) -> String {
        crate::streams::subject(self.event_type(), &self.key())
    }

    /// The payload as JSON.
    pub fn data(&self) -> serde_json::Value {
        match self {
            Event::OrderPlaced(e) => to_value(e),
            Event::OrderPlacedV2(e) => to_value(e),
            Event::OrderCompleted(e) => to_value(e),
            Event::OrderCancelled(e) => to_value(e),
            Event::OrderRejected(e) => to_value(e),
            Event::OrderCancellationRequested(e) => to_value(e),
            Event::ProductUpdated(e) => to_value(e),
            Event::InventoryReserved(e) => to_value(e),
            Event::InventoryRejected(e) => to_value(e),
            Event::InventoryReleased(e) => to_value(e),
            Event::PaymentAuthorized(e) => to_value(e),
            Event::PaymentDeclined(e) => to_value(e),
            Event::PaymentRefunded(e) => to_value(e),
            Event::FulfillmentScheduled(e) => to_value(e),
            Event::FulfillmentFailed(e) => to_value(e),
            Event::FulfillmentCancelled(e) => to_value(e),
        }
    }

    /// Decodes a payload of a given type and version.
    pub fn decode(
        event_type: &str,
        version: u32,
        data: serde_json::Value,
    ) -> Result<Event, DecodeError> {
        let parse = Parser {
            event_type,
            version,
            data,
        };
        match (event_type, version) {
            ("order.placed", 1) => parse.into(Event::OrderPlaced),
            ("order.placed", 2) => parse.into(Event::OrderPlacedV2),
            ("order.completed", 1) => parse.into(Event::OrderCompleted),
            ("order.cancelled", 1) => parse.into(Event::OrderCancelled),
            ("order.rejected", 1) => parse.into(Event::OrderRejected),
            ("order.cancellation_requested", 1) => parse.into(Event::OrderCancellationRequested),
            ("inventory.product_updated", 1) => parse.into(Event::ProductUpdated),
            ("inventory.reserved", 1) => parse.into(Event::InventoryReserved),
            ("inventory.rejected", 1) => parse.into(Event::InventoryRejected),
            ("inventory.released", 1) => parse.into(Event::InventoryReleased),
            ("payment.authorized", 1) => parse.into(Event::PaymentAuthorized),
            ("payment.declined", 1) => parse.into(Event::PaymentDeclined),
            ("payment.refunded", 1) => parse.into(Event::PaymentRefunded),
            ("fulfillment.scheduled", 1) => parse.into(Event::FulfillmentScheduled),
            ("fulfillment.failed", 1) => parse.into(Event::FulfillmentFailed),
            ("fulfillment.cancelled", 1) => parse.into(Event::FulfillmentCancelled),
            _ => Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
                version,
            }),
        }
    }
}

struct Parser<'a> {
    event_type: &'a str,
    version: u32,
    data: serde_json::Value,
}

impl Parser<'_> {
    fn into<T: DeserializeOwned>(self, variant: fn(T) -> Event) -> Result<Event, DecodeError> {
        serde_json::from_value(self.data)
            .map(variant)
            .map_err(|source| DecodeError::Data {
                event_type: self.event_type.to_owned(),
                version: self.version,
                source,
            })
    }
}

fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    // Our payload types are plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderLine, Shipping};

    #[test]
    fn every_catalogue_entry_decodes_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for entry in CATALOGUE {
            assert!(seen.insert((entry.event_type, entry.version)));
            // An empty object is never valid data, but the type itself must be known.
            let err = Event::decode(entry.event_type, entry.version, serde_json::json!({}));
            assert!(
                matches!(err, Err(DecodeError::Data { .. })),
                "{}",
                entry.event_type
            );
        }
    }

    #[test]
    fn a_typed_event_round_trips_through_its_data() {
        let event = Event::OrderPlaced(OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            items: vec![OrderLine {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            total_cents: 2500,
            payment_method: "tok_ok".into(),
            shipping: Shipping {
                country: "NL".into(),
                address: "Damrak 1".into(),
            },
        });
        let decoded = Event::decode(event.event_type(), event.version(), event.data()).unwrap();
        assert_eq!(decoded, event);
        assert_eq!(
            event.subject(),
            "order.placed.00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn product_events_are_keyed_by_sku() {
        let event = Event::ProductUpdated(ProductUpdated {
            sku: "MUG".into(),
            name: "Mug".into(),
            price_cents: 1250,
        });
        assert_eq!(event.subject(), "inventory.product_updated.MUG");
        assert_eq!(event.order_id(), None);
    }
}
