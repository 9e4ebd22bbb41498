//! The notification rules, pure: which facts the customer is told about, to whom, and that
//! each kind of notification goes out once per order. No IO and no clock.

use events::Event;
use events::order::OrderPlacedV2;
use uuid::Uuid;

/// What a notification tells the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    Placed,
    ShipmentScheduled,
    Completed,
    Cancelled,
    Rejected,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 5] = [
        NotificationKind::Placed,
        NotificationKind::ShipmentScheduled,
        NotificationKind::Completed,
        NotificationKind::Cancelled,
        NotificationKind::Rejected,
    ];

    /// The kind as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Placed => "placed",
            NotificationKind::ShipmentScheduled => "shipment_scheduled",
            NotificationKind::Completed => "completed",
            NotificationKind::Cancelled => "cancelled",
            NotificationKind::Rejected => "rejected",
        }
    }

    /// The kind spelled `name`, if there is one.
    pub fn from_name(name: &str) -> Option<NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// Whom to tell about an order, as `order.placed` carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub customer_id: String,
    /// Personal data: used to notify, never logged.
    pub email: String,
}

/// `order.placed`: remember whom to tell about the order.
pub fn contact_of(placed: &OrderPlacedV2) -> Contact {
    Contact {
        customer_id: placed.customer_id.clone(),
        email: placed.email.clone(),
    }
}

/// What the service knows of one order: its contact, once `order.placed` has arrived, and
/// the kinds of notification already sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correspondence {
    pub contact: Option<Contact>,
    pub sent: Vec<NotificationKind>,
}

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub order_id: Uuid,
    pub kind: NotificationKind,
    pub recipient: String,
}

/// What an event means for the customer's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Tell the customer.
    Send(Notification),
    /// They were told already: exactly one notification per order and kind.
    AlreadySent,
    /// Whom to tell is not known yet (`order.placed` is late): try again later.
    ContactUnknown,
    /// Nothing the customer is told about.
    Irrelevant,
}

/// The order and notification kind an event calls for, if any.
pub fn notification_kind(event: &Event) -> Option<(Uuid, NotificationKind)> {
    match event {
        Event::OrderPlacedV2(e) => Some((e.order_id, NotificationKind::Placed)),
        Event::FulfillmentScheduled(e) => Some((e.order_id, NotificationKind::ShipmentScheduled)),
        Event::OrderCompleted(e) => Some((e.order_id, NotificationKind::Completed)),
        Event::OrderCancelled(e) => Some((e.order_id, NotificationKind::Cancelled)),
        Event::OrderRejected(e) => Some((e.order_id, NotificationKind::Rejected)),
        _ => None,
    }
}

/// Given what is known of the event's order, whether and whom to tell about the event.
pub fn decide(correspondence: &Correspondence, event: &Event) -> Decision {
    let Some((order_id, kind)) = notification_kind(event) else {
        return Decision::Irrelevant;
    };
    let Some(contact) = &correspondence.contact else {
        return Decision::ContactUnknown;
    };
    if correspondence.sent.contains(&kind) {
        return Decision::AlreadySent;
    }
    Decision::Send(Notification {
        order_id,
        kind,
        recipient: contact.email.clone(),
    })
}

#[cfg(test)]
mod tests {
    use events::fulfillment::FulfillmentScheduled;
    use events::inventory::InventoryReserved;
    use events::order::{
        CancelReason, OrderCancelled, OrderCompleted, OrderLineV2, OrderRejected, RejectReason,
        Shipping,
    };

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_0001);

    fn placed() -> OrderPlacedV2 {
        OrderPlacedV2 {
            order_id: ORDER,
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            currency: "EUR".into(),
            items: vec![OrderLineV2 {
                sku: "MUG".into(),
                quantity: 1,
                unit_price_cents: 1250,
                discount_cents: 0,
            }],
            total_cents: 1250,
            payment_method: "tok_ok".into(),
            shipping: Shipping {
                country: "NL".into(),
                address: "Damrak 1".into(),
            },
        }
    }

    fn known(sent: &[NotificationKind]) -> Correspondence {
        Correspondence {
            contact: Some(contact_of(&placed())),
            sent: sent.to_vec(),
        }
    }

    fn send(kind: NotificationKind) -> Decision {
        Decision::Send(Notification {
            order_id: ORDER,
            kind,
            recipient: "c1@example.com".into(),
        })
    }

    /// Given what is known of the order, when `event` arrives, then `expected`.
    fn check(given: Correspondence, when: Event, expected: Decision) {
        assert_eq!(decide(&given, &when), expected);
    }

    fn completed() -> Event {
        Event::OrderCompleted(OrderCompleted { order_id: ORDER })
    }

    #[test]
    fn an_order_placed_tells_the_customer_it_was_placed() {
        check(
            known(&[]),
            Event::OrderPlacedV2(placed()),
            send(NotificationKind::Placed),
        );
    }

    #[test]
    fn a_scheduled_shipment_tells_the_customer_it_ships() {
        check(
            known(&[NotificationKind::Placed]),
            Event::FulfillmentScheduled(FulfillmentScheduled {
                order_id: ORDER,
                shipment_id: Uuid::nil(),
                carrier: "PostNL".into(),
            }),
            send(NotificationKind::ShipmentScheduled),
        );
    }

    #[test]
    fn a_completed_order_tells_the_customer_it_is_complete() {
        check(
            known(&[
                NotificationKind::Placed,
                NotificationKind::ShipmentScheduled,
            ]),
            completed(),
            send(NotificationKind::Completed),
        );
    }

    #[test]
    fn a_cancelled_order_tells_the_customer_it_is_cancelled() {
        check(
            known(&[NotificationKind::Placed]),
            Event::OrderCancelled(OrderCancelled {
                order_id: ORDER,
                reason: CancelReason::PaymentDeclined,
            }),
            send(NotificationKind::Cancelled),
        );
    }

    #[test]
    fn a_rejected_order_tells_the_customer_it_is_rejected() {
        check(
            known(&[NotificationKind::Placed]),
            Event::OrderRejected(OrderRejected {
                order_id: ORDER,
                reason: RejectReason::OutOfStock,
            }),
            send(NotificationKind::Rejected),
        );
    }

    #[test]
    fn a_repeated_event_sends_nothing_more() {
        check(
            known(&[NotificationKind::Placed, NotificationKind::Completed]),
            completed(),
            Decision::AlreadySent,
        );
        check(
            known(&[NotificationKind::Placed]),
            Event::OrderPlacedV2(placed()),
            Decision::AlreadySent,
        );
    }

    #[test]
    fn an_outcome_before_the_order_placed_waits_for_the_contact() {
        check(
            Correspondence::default(),
            completed(),
            Decision::ContactUnknown,
        );
    }

    #[test]
    fn an_outcome_before_the_placed_notification_is_still_sent() {
        check(known(&[]), completed(), send(NotificationKind::Completed));
    }

    #[test]
    fn other_facts_are_not_notified() {
        check(
            known(&[]),
            Event::InventoryReserved(InventoryReserved {
                order_id: ORDER,
                items: vec![],
            }),
            Decision::Irrelevant,
        );
    }

    #[test]
    fn every_kind_is_spelled_as_the_database_and_api_expect() {
        for kind in NotificationKind::ALL {
            assert_eq!(NotificationKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(
            NotificationKind::ShipmentScheduled.as_str(),
            "shipment_scheduled"
        );
        assert_eq!(NotificationKind::from_name("sms"), None);
    }
}
