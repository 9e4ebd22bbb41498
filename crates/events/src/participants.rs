//! Who sends and who receives each event type: the saga's wiring as data, from which the
//! AsyncAPI document is generated and from which services can derive their subscriptions.

use crate::streams::Context;

/// A service that takes part in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    Order,
    Inventory,
    Payment,
    Fulfillment,
    Notification,
}

impl Participant {
    pub const ALL: [Participant; 5] = [
        Participant::Order,
        Participant::Inventory,
        Participant::Payment,
        Participant::Fulfillment,
        Participant::Notification,
    ];

    /// The service's name, as in its identity, database and `/services/<name>` source.
    pub fn name(self) -> &'static str {
        match self {
            Participant::Order => "order",
            Participant::Inventory => "inventory",
            Participant::Payment => "payment",
            Participant::Fulfillment => "fulfillment",
            Participant::Notification => "notification",
        }
    }

    /// The CloudEvents `source` of the events this service publishes.
    pub fn source(self) -> String {
        format!("/services/{}", self.name())
    }

    /// The context whose stream this service publishes to, if it publishes at all.
    pub fn publishes(self) -> Option<Context> {
        match self {
            Participant::Order => Some(Context::Order),
            Participant::Inventory => Some(Context::Inventory),
            Participant::Payment => Some(Context::Payment),
            Participant::Fulfillment => Some(Context::Fulfillment),
            Participant::Notification => None,
        }
    }

    /// The event types this service consumes, grouped by the stream they live in (streams in
    /// [`Context::ALL`] order, event types in [`FLOWS`] order): one durable consumer each.
    pub fn subscriptions(self) -> Vec<(Context, Vec<&'static str>)> {
        Context::ALL
            .into_iter()
            .filter_map(|context| {
                let event_types: Vec<&'static str> = FLOWS
                    .iter()
                    .filter(|flow| flow.consumers.contains(&self))
                    .filter(|flow| Context::of_event_type(flow.event_type) == Some(context))
                    .map(|flow| flow.event_type)
                    .collect();
                (!event_types.is_empty()).then_some((context, event_types))
            })
            .collect()
    }
}

/// What the last token of an event's subject (`<type>.<key>`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKey {
    /// The order the event is about (a UUID); every saga event.
    OrderId,
    /// The product the event is about; catalogue events.
    Sku,
}

impl SubjectKey {
    /// The payload field that holds the key.
    pub fn field(self) -> &'static str {
        match self {
            SubjectKey::OrderId => "order_id",
            SubjectKey::Sku => "sku",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            SubjectKey::OrderId => "The order the event is about (its UUID).",
            SubjectKey::Sku => "The SKU of the product the event is about.",
        }
    }
}

/// One event type's route: the one service that produces it and every service that consumes it.
#[derive(Debug, Clone, Copy)]
pub struct EventFlow {
    pub event_type: &'static str,
    pub key: SubjectKey,
    pub producer: Participant,
    pub consumers: &'static [Participant],
}

use Participant::{Fulfillment, Inventory, Notification, Order, Payment};

/// Every event type's producer and consumers, in catalogue order. Adding a consumer means
/// adding it here; the producer never changes for that.
pub const FLOWS: &[EventFlow] = &[
    flow(
        "order.placed",
        Order,
        &[Inventory, Payment, Fulfillment, Notification],
    ),
    flow("order.completed", Order, &[Inventory, Notification]),
    flow("order.cancelled", Order, &[Notification]),
    flow("order.rejected", Order, &[Notification]),
    flow(
        "order.cancellation_requested",
        Order,
        &[Inventory, Payment, Fulfillment],
    ),
    EventFlow {
        event_type: "inventory.product_updated",
        key: SubjectKey::Sku,
        producer: Inventory,
        consumers: &[Order],
    },
    flow("inventory.reserved", Inventory, &[Order, Payment]),
    flow("inventory.rejected", Inventory, &[Order]),
    flow("inventory.released", Inventory, &[Order]),
    flow("payment.authorized", Payment, &[Order, Fulfillment]),
    flow("payment.declined", Payment, &[Order, Inventory]),
    flow("payment.refunded", Payment, &[Order]),
    flow("fulfillment.scheduled", Fulfillment, &[Order, Notification]),
    flow(
        "fulfillment.failed",
        Fulfillment,
        &[Order, Inventory, Payment],
    ),
    flow("fulfillment.cancelled", Fulfillment, &[Order]),
];

const fn flow(
    event_type: &'static str,
    producer: Participant,
    consumers: &'static [Participant],
) -> EventFlow {
    EventFlow {
        event_type,
        key: SubjectKey::OrderId,
        producer,
        consumers,
    }
}

/// The route of one event type, if it is in the table.
pub fn flow_of(event_type: &str) -> Option<&'static EventFlow> {
    FLOWS.iter().find(|flow| flow.event_type == event_type)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;
    use crate::catalogue::CATALOGUE;

    #[test]
    fn every_catalogue_event_type_has_exactly_one_flow_and_no_flow_is_unknown() {
        let catalogue: BTreeSet<&str> = CATALOGUE.iter().map(|entry| entry.event_type).collect();
        let mut flows = BTreeSet::new();
        for flow in FLOWS {
            assert!(
                flows.insert(flow.event_type),
                "{} appears twice in FLOWS",
                flow.event_type
            );
        }
        assert_eq!(flows, catalogue);
    }

    #[test]
    fn each_event_is_produced_into_its_own_contexts_stream() {
        for flow in FLOWS {
            assert_eq!(
                flow.producer.publishes(),
                Context::of_event_type(flow.event_type),
                "{} is produced by {}",
                flow.event_type,
                flow.producer.name()
            );
        }
    }

    #[test]
    fn consumers_are_listed_once_and_never_include_the_producer() {
        for flow in FLOWS {
            let unique: HashSet<_> = flow.consumers.iter().collect();
            assert_eq!(unique.len(), flow.consumers.len(), "{}", flow.event_type);
            assert!(!unique.contains(&flow.producer), "{}", flow.event_type);
            // A fact nobody reacts to would be dead weight in the streams.
            assert!(!flow.consumers.is_empty(), "{}", flow.event_type);
        }
    }

    #[test]
    fn every_payload_carries_its_subject_key() {
        for entry in CATALOGUE {
            let Some(flow) = flow_of(entry.event_type) else {
                panic!("{} has no flow", entry.event_type);
            };
            let schema = (entry.schema)().to_value();
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            assert!(
                required.contains(&serde_json::json!(flow.key.field())),
                "{} v{} must require `{}`",
                entry.event_type,
                entry.version,
                flow.key.field()
            );
        }
    }

    #[test]
    fn subscriptions_group_a_services_event_types_by_stream() {
        assert_eq!(
            Participant::Payment.subscriptions(),
            vec![
                (
                    Context::Order,
                    vec!["order.placed", "order.cancellation_requested"]
                ),
                (Context::Inventory, vec!["inventory.reserved"]),
                (Context::Fulfillment, vec!["fulfillment.failed"]),
            ]
        );
        assert_eq!(
            Participant::Notification.subscriptions(),
            vec![
                (
                    Context::Order,
                    vec![
                        "order.placed",
                        "order.completed",
                        "order.cancelled",
                        "order.rejected"
                    ]
                ),
                (Context::Fulfillment, vec!["fulfillment.scheduled"]),
            ]
        );
        assert_eq!(Participant::Notification.publishes(), None);
    }

    #[test]
    fn the_order_service_consumes_every_other_contexts_outcomes() {
        let consumed: Vec<&str> = Participant::Order
            .subscriptions()
            .into_iter()
            .flat_map(|(_, event_types)| event_types)
            .collect();
        assert_eq!(consumed.len(), 10);
        assert!(consumed.iter().all(|t| !t.starts_with("order.")));
    }
}
