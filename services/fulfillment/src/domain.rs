//! The fulfillment rules, pure: where an order ships to, whether it can be shipped at all,
//! which carrier takes it, and that each order gets one shipment decision. No IO and no
//! randomness: the new shipment's id is passed in.

use events::Event;
use events::fulfillment::{FulfillmentCancelled, FulfillmentFailed, FulfillmentScheduled};
use events::order::OrderPlacedV2;
use uuid::Uuid;

/// Countries no carrier serves (ISO 3166-1 alpha-2).
pub const UNSERVABLE_COUNTRIES: &[&str] = &["AQ"];

/// Where an order ships to, as `order.placed` carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub country: String,
    /// Personal data: used to ship, never logged.
    pub address: String,
}

/// `order.placed`: remember where the order ships to.
pub fn destination_of(placed: &OrderPlacedV2) -> Destination {
    Destination {
        country: placed.shipping.country.clone(),
        address: placed.shipping.address.clone(),
    }
}

/// What became of an order's shipment. Each state carries exactly its facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentStatus {
    Scheduled {
        shipment_id: Uuid,
        carrier: String,
    },
    Failed {
        reason: String,
    },
    /// Cancelled with its order: before it was booked (no id, no carrier) or after.
    Cancelled {
        shipment_id: Option<Uuid>,
        carrier: Option<String>,
    },
}

impl ShipmentStatus {
    /// The status as the API and the database spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShipmentStatus::Scheduled { .. } => "scheduled",
            ShipmentStatus::Failed { .. } => "failed",
            ShipmentStatus::Cancelled { .. } => "cancelled",
        }
    }
}

/// The one shipment decision of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub order_id: Uuid,
    pub status: ShipmentStatus,
}

/// What `payment.authorized` leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new shipment decision, and the facts to publish about it.
    Decided {
        shipment: Shipment,
        events: Vec<Event>,
    },
    /// The order already has its decision: a repeated payment never books a second shipment.
    AlreadyDecided,
}

/// `payment.authorized`: ship the paid order, or say why it cannot be shipped. `existing` is
/// the order's earlier decision, if any; `new_shipment_id` names the shipment if one is booked.
pub fn ship(
    order_id: Uuid,
    destination: &Destination,
    existing: Option<&Shipment>,
    new_shipment_id: Uuid,
) -> Decision {
    if existing.is_some() {
        return Decision::AlreadyDecided;
    }
    let country = destination.country.to_ascii_uppercase();
    if UNSERVABLE_COUNTRIES.contains(&country.as_str()) {
        let reason = format!("cannot ship to {country}");
        return Decision::Decided {
            shipment: Shipment {
                order_id,
                status: ShipmentStatus::Failed {
                    reason: reason.clone(),
                },
            },
            events: vec![Event::FulfillmentFailed(FulfillmentFailed {
                order_id,
                reason,
            })],
        };
    }
    let carrier = carrier_for(&country).to_owned();
    Decision::Decided {
        shipment: Shipment {
            order_id,
            status: ShipmentStatus::Scheduled {
                shipment_id: new_shipment_id,
                carrier: carrier.clone(),
            },
        },
        events: vec![Event::FulfillmentScheduled(FulfillmentScheduled {
            order_id,
            shipment_id: new_shipment_id,
            carrier,
        })],
    }
}

/// What `order.cancellation_requested` does to the order's shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// Record the shipment as cancelled (booked or not) and confirm.
    Cancel { shipment: Shipment, event: Event },
    /// Nothing to undo (the shipment had failed): only confirm.
    Confirm(Event),
    /// Cancelled before: nothing to do.
    AlreadyCancelled,
}

/// The order service cancels the order: a booked shipment is cancelled, one not booked yet
/// never will be (the cancelled record stops a late `payment.authorized`), and the order is
/// told with `fulfillment.cancelled` either way.
pub fn cancel(order_id: Uuid, existing: Option<&Shipment>) -> Cancel {
    let event = Event::FulfillmentCancelled(FulfillmentCancelled { order_id });
    let cancelled = |shipment_id, carrier| Cancel::Cancel {
        shipment: Shipment {
            order_id,
            status: ShipmentStatus::Cancelled {
                shipment_id,
                carrier,
            },
        },
        event: event.clone(),
    };
    match existing.map(|shipment| &shipment.status) {
        None => cancelled(None, None),
        Some(ShipmentStatus::Scheduled {
            shipment_id,
            carrier,
        }) => cancelled(Some(*shipment_id), Some(carrier.clone())),
        Some(ShipmentStatus::Failed { .. }) => Cancel::Confirm(event),
        Some(ShipmentStatus::Cancelled { .. }) => Cancel::AlreadyCancelled,
    }
}

/// The carrier for a (servable, upper-case) country: PostNL at home in the Netherlands, DHL
/// everywhere else.
pub fn carrier_for(country: &str) -> &'static str {
    match country {
        "NL" => "PostNL",
        _ => "DHL",
    }
}

#[cfg(test)]
mod tests {
    use events::order::{OrderLineV2, Shipping};

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_0001);
    const SHIPMENT: Uuid = Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_0002);

    fn destination(country: &str) -> Destination {
        Destination {
            country: country.into(),
            address: "Somewhere 1".into(),
        }
    }

    fn scheduled(carrier: &str) -> Shipment {
        Shipment {
            order_id: ORDER,
            status: ShipmentStatus::Scheduled {
                shipment_id: SHIPMENT,
                carrier: carrier.into(),
            },
        }
    }

    fn failed(reason: &str) -> Shipment {
        Shipment {
            order_id: ORDER,
            status: ShipmentStatus::Failed {
                reason: reason.into(),
            },
        }
    }

    /// Given a destination in `country` and the order's earlier decision, when its payment is
    /// authorized, then `expected`.
    fn check(country: &str, existing: Option<Shipment>, expected: Decision) {
        assert_eq!(
            ship(ORDER, &destination(country), existing.as_ref(), SHIPMENT),
            expected
        );
    }

    #[test]
    fn an_order_placed_tells_where_it_ships() {
        let placed = OrderPlacedV2 {
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
                address: "Damrak 1, Amsterdam".into(),
            },
        };
        assert_eq!(
            destination_of(&placed),
            Destination {
                country: "NL".into(),
                address: "Damrak 1, Amsterdam".into()
            }
        );
    }

    #[test]
    fn a_paid_dutch_order_is_scheduled_with_postnl() {
        check(
            "NL",
            None,
            Decision::Decided {
                shipment: scheduled("PostNL"),
                events: vec![Event::FulfillmentScheduled(FulfillmentScheduled {
                    order_id: ORDER,
                    shipment_id: SHIPMENT,
                    carrier: "PostNL".into(),
                })],
            },
        );
    }

    #[test]
    fn a_paid_order_elsewhere_is_scheduled_with_dhl() {
        check(
            "DE",
            None,
            Decision::Decided {
                shipment: scheduled("DHL"),
                events: vec![Event::FulfillmentScheduled(FulfillmentScheduled {
                    order_id: ORDER,
                    shipment_id: SHIPMENT,
                    carrier: "DHL".into(),
                })],
            },
        );
    }

    #[test]
    fn a_paid_order_to_antarctica_publishes_fulfillment_failed() {
        check(
            "AQ",
            None,
            Decision::Decided {
                shipment: failed("cannot ship to AQ"),
                events: vec![Event::FulfillmentFailed(FulfillmentFailed {
                    order_id: ORDER,
                    reason: "cannot ship to AQ".into(),
                })],
            },
        );
    }

    #[test]
    fn a_lower_case_country_is_judged_like_its_code() {
        check(
            "aq",
            None,
            Decision::Decided {
                shipment: failed("cannot ship to AQ"),
                events: vec![Event::FulfillmentFailed(FulfillmentFailed {
                    order_id: ORDER,
                    reason: "cannot ship to AQ".into(),
                })],
            },
        );
        assert_eq!(carrier_for(&"nl".to_ascii_uppercase()), "PostNL");
    }

    #[test]
    fn a_repeated_payment_never_books_a_second_shipment() {
        check("NL", Some(scheduled("PostNL")), Decision::AlreadyDecided);
    }

    #[test]
    fn a_repeated_payment_for_an_unshippable_order_fails_it_only_once() {
        check(
            "AQ",
            Some(failed("cannot ship to AQ")),
            Decision::AlreadyDecided,
        );
    }

    #[test]
    fn a_cancel_before_payment_means_the_order_is_never_shipped() {
        let Cancel::Cancel { shipment, event } = cancel(ORDER, None) else {
            panic!("expected a cancelled record");
        };
        assert_eq!(shipment.status.as_str(), "cancelled");
        assert_eq!(event.event_type(), "fulfillment.cancelled");
        let late = ship(ORDER, &destination("NL"), Some(&shipment), SHIPMENT);
        assert_eq!(late, Decision::AlreadyDecided);
    }

    #[test]
    fn a_cancel_after_booking_cancels_the_shipment_and_keeps_its_id() {
        let booked = Shipment {
            order_id: ORDER,
            status: ShipmentStatus::Scheduled {
                shipment_id: SHIPMENT,
                carrier: "PostNL".into(),
            },
        };
        let Cancel::Cancel { shipment, .. } = cancel(ORDER, Some(&booked)) else {
            panic!("expected the shipment cancelled");
        };
        assert_eq!(
            shipment.status,
            ShipmentStatus::Cancelled {
                shipment_id: Some(SHIPMENT),
                carrier: Some("PostNL".into())
            }
        );
        assert_eq!(cancel(ORDER, Some(&shipment)), Cancel::AlreadyCancelled);
    }

    #[test]
    fn a_cancel_of_a_failed_shipment_only_confirms() {
        let failed = Shipment {
            order_id: ORDER,
            status: ShipmentStatus::Failed {
                reason: "cannot ship to AQ".into(),
            },
        };
        assert!(matches!(cancel(ORDER, Some(&failed)), Cancel::Confirm(_)));
    }
}
