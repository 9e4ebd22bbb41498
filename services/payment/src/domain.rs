//! The payment rules, pure: which payment an order needs, when to ask the gateway for an
//! authorization, what its answer means, and when to refund. No IO and no clock: the gateway's
//! answer is an input, so every rule is tested without one.

use events::Event;
use events::order::OrderPlacedV2;
use events::payment::{PaymentAuthorized, PaymentDeclined, PaymentRefunded};
use thiserror::Error;
use uuid::Uuid;

use crate::gateway::GatewayOutcome;

/// Where a payment stands. Each state carries exactly the gateway's facts it implies, so an
/// authorized payment without an authorization cannot be written down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Known from `order.placed`; waiting for the order's stock to be reserved.
    Pending,
    /// The gateway authorized the amount.
    Authorized { authorization_id: String },
    /// The gateway refused; nothing was charged.
    Declined { reason: String },
    /// Authorized, then given back in full.
    Refunded { authorization_id: String },
    /// The order was cancelled before it was charged; it never will be.
    Cancelled,
}

impl PaymentStatus {
    /// The status as the API and the database spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Authorized { .. } => "authorized",
            PaymentStatus::Declined { .. } => "declined",
            PaymentStatus::Refunded { .. } => "refunded",
            PaymentStatus::Cancelled => "cancelled",
        }
    }
}

/// The payment of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// ISO 4217 code of `amount_cents`.
    pub currency: String,
    /// The customer's payment token: handed to the gateway, never logged.
    pub payment_method: String,
    /// The customer who placed the order: the only one (besides an admin) who may read the
    /// payment. `None` for payments recorded before it was kept.
    pub customer_id: Option<String>,
    pub status: PaymentStatus,
}

impl Payment {
    /// How much has been given back to the customer.
    pub fn refunded_cents(&self) -> i64 {
        match self.status {
            PaymentStatus::Refunded { .. } => self.amount_cents,
            _ => 0,
        }
    }
}

/// Why an event cannot become a payment; such an event is never retried.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("order {order_id} has a negative total of {total_cents} cents")]
    NegativeTotal { order_id: Uuid, total_cents: i64 },
}

/// `order.placed`: the payment the order will need, pending until its stock is reserved.
pub fn payment_for(placed: &OrderPlacedV2) -> Result<Payment, Rejection> {
    if placed.total_cents < 0 {
        return Err(Rejection::NegativeTotal {
            order_id: placed.order_id,
            total_cents: placed.total_cents,
        });
    }
    Ok(Payment {
        order_id: placed.order_id,
        amount_cents: placed.total_cents,
        currency: placed.currency.clone(),
        payment_method: placed.payment_method.clone(),
        customer_id: Some(placed.customer_id.clone()),
        status: PaymentStatus::Pending,
    })
}

/// What `inventory.reserved` asks of a payment.
#[derive(Debug, PartialEq, Eq)]
pub enum Charge<'a> {
    /// Ask the gateway to authorize this amount on this payment method.
    Authorize {
        payment_method: &'a str,
        amount_cents: i64,
    },
    /// The gateway has already answered for this order: never charge twice.
    AlreadyDecided,
}

/// `inventory.reserved`: only a pending payment goes to the gateway.
pub fn charge_for_reservation(payment: &Payment) -> Charge<'_> {
    match payment.status {
        PaymentStatus::Pending => Charge::Authorize {
            payment_method: &payment.payment_method,
            amount_cents: payment.amount_cents,
        },
        _ => Charge::AlreadyDecided,
    }
}

/// A payment after a decision, and the facts to publish about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub payment: Payment,
    pub events: Vec<Event>,
}

impl Transition {
    fn unchanged(payment: &Payment) -> Transition {
        Transition {
            payment: payment.clone(),
            events: Vec::new(),
        }
    }
}

/// The gateway's answer to the authorization [`charge_for_reservation`] asked for. A payment
/// that is no longer pending keeps its first answer.
pub fn record_authorization(payment: &Payment, outcome: GatewayOutcome) -> Transition {
    if payment.status != PaymentStatus::Pending {
        return Transition::unchanged(payment);
    }
    let (status, event) = match outcome {
        GatewayOutcome::Authorized { authorization_id } => (
            PaymentStatus::Authorized {
                authorization_id: authorization_id.clone(),
            },
            Event::PaymentAuthorized(PaymentAuthorized {
                order_id: payment.order_id,
                amount_cents: payment.amount_cents,
                authorization_id,
            }),
        ),
        GatewayOutcome::Declined { reason } => (
            PaymentStatus::Declined {
                reason: reason.clone(),
            },
            Event::PaymentDeclined(PaymentDeclined {
                order_id: payment.order_id,
                reason,
            }),
        ),
    };
    Transition {
        payment: Payment {
            status,
            ..payment.clone()
        },
        events: vec![event],
    }
}

/// What `fulfillment.failed` asks of a payment.
#[derive(Debug, PartialEq, Eq)]
pub enum Refund<'a> {
    /// Give the whole authorized amount back.
    Refund {
        authorization_id: &'a str,
        amount_cents: i64,
    },
    /// Nothing was charged, or it was already given back.
    NothingToRefund,
}

/// `fulfillment.failed`: only an authorized payment has money to give back.
pub fn refund_for_failed_fulfillment(payment: &Payment) -> Refund<'_> {
    match &payment.status {
        PaymentStatus::Authorized { authorization_id } => Refund::Refund {
            authorization_id,
            amount_cents: payment.amount_cents,
        },
        _ => Refund::NothingToRefund,
    }
}

/// The gateway gave back what [`refund_for_failed_fulfillment`] asked for.
pub fn record_refund(payment: &Payment) -> Transition {
    let PaymentStatus::Authorized { authorization_id } = &payment.status else {
        return Transition::unchanged(payment);
    };
    Transition {
        payment: Payment {
            status: PaymentStatus::Refunded {
                authorization_id: authorization_id.clone(),
            },
            ..payment.clone()
        },
        events: vec![Event::PaymentRefunded(PaymentRefunded {
            order_id: payment.order_id,
            amount_cents: payment.amount_cents,
        })],
    }
}

/// What `order.cancellation_requested` asks of the payment.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancel<'a> {
    /// Give the authorized amount back, then confirm with the refund.
    Refund {
        authorization_id: &'a str,
        amount_cents: i64,
    },
    /// Nothing is charged: record that nothing ever will be and confirm with a refund of 0.
    Confirm(Transition),
}

/// The order service cancels the order: whatever was charged is refunded, and a payment
/// not charged yet never will be. Either way the order gets a `payment.refunded` saying
/// what was given back (0 when nothing had been charged), so it knows no money is held.
pub fn cancel(payment: &Payment) -> Cancel<'_> {
    let confirmation = |amount_cents| {
        vec![Event::PaymentRefunded(PaymentRefunded {
            order_id: payment.order_id,
            amount_cents,
        })]
    };
    match &payment.status {
        PaymentStatus::Authorized { authorization_id } => Cancel::Refund {
            authorization_id,
            amount_cents: payment.amount_cents,
        },
        PaymentStatus::Pending => Cancel::Confirm(Transition {
            payment: Payment {
                status: PaymentStatus::Cancelled,
                ..payment.clone()
            },
            events: confirmation(0),
        }),
        // Declined or already refunded: nothing is held; confirm so the order need not wait.
        PaymentStatus::Declined { .. } | PaymentStatus::Refunded { .. } => {
            Cancel::Confirm(Transition {
                payment: payment.clone(),
                events: confirmation(0),
            })
        }
        // Already cancelled (a repeated request): confirmed before.
        PaymentStatus::Cancelled => Cancel::Confirm(Transition::unchanged(payment)),
    }
}

#[cfg(test)]
mod tests {
    use events::order::{OrderLineV2, Shipping};

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_0001);

    fn payment(status: PaymentStatus) -> Payment {
        Payment {
            order_id: ORDER,
            amount_cents: 2500,
            currency: "EUR".into(),
            payment_method: "tok_ok".into(),
            customer_id: Some("c-1".into()),
            status,
        }
    }

    fn authorized() -> PaymentStatus {
        PaymentStatus::Authorized {
            authorization_id: "auth_1".into(),
        }
    }

    fn declined() -> PaymentStatus {
        PaymentStatus::Declined {
            reason: "card_declined".into(),
        }
    }

    fn refunded() -> PaymentStatus {
        PaymentStatus::Refunded {
            authorization_id: "auth_1".into(),
        }
    }

    fn placed(total_cents: i64) -> OrderPlacedV2 {
        OrderPlacedV2 {
            order_id: ORDER,
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            currency: "EUR".into(),
            items: vec![OrderLineV2 {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_cents: 1250,
                discount_cents: 0,
            }],
            total_cents,
            payment_method: "tok_ok".into(),
            shipping: Shipping {
                country: "NL".into(),
                address: "Damrak 1".into(),
            },
        }
    }

    /// Given a payment in `given`, when `when` decides, then it ends in `status` and
    /// publishes `events`.
    fn check(
        given: PaymentStatus,
        when: impl FnOnce(&Payment) -> Transition,
        status: PaymentStatus,
        events: Vec<Event>,
    ) {
        let transition = when(&payment(given));
        assert_eq!(transition.payment, payment(status));
        assert_eq!(transition.events, events);
    }

    fn gateway_authorizes(payment: &Payment) -> Transition {
        record_authorization(
            payment,
            GatewayOutcome::Authorized {
                authorization_id: "auth_1".into(),
            },
        )
    }

    fn gateway_declines(payment: &Payment) -> Transition {
        record_authorization(
            payment,
            GatewayOutcome::Declined {
                reason: "card_declined".into(),
            },
        )
    }

    #[test]
    fn an_order_placed_opens_a_pending_payment_for_its_total() {
        assert_eq!(
            payment_for(&placed(2500)),
            Ok(payment(PaymentStatus::Pending))
        );
    }

    #[test]
    fn an_order_with_a_negative_total_is_rejected() {
        assert_eq!(
            payment_for(&placed(-1)),
            Err(Rejection::NegativeTotal {
                order_id: ORDER,
                total_cents: -1
            })
        );
    }

    #[test]
    fn reserved_stock_asks_the_gateway_to_authorize_a_pending_payment() {
        assert_eq!(
            charge_for_reservation(&payment(PaymentStatus::Pending)),
            Charge::Authorize {
                payment_method: "tok_ok",
                amount_cents: 2500
            }
        );
    }

    #[test]
    fn reserved_stock_again_never_charges_an_authorized_payment_twice() {
        assert_eq!(
            charge_for_reservation(&payment(authorized())),
            Charge::AlreadyDecided
        );
    }

    #[test]
    fn reserved_stock_again_never_retries_a_declined_payment() {
        assert_eq!(
            charge_for_reservation(&payment(declined())),
            Charge::AlreadyDecided
        );
    }

    #[test]
    fn reserved_stock_after_a_refund_never_charges_again() {
        assert_eq!(
            charge_for_reservation(&payment(refunded())),
            Charge::AlreadyDecided
        );
    }

    #[test]
    fn an_authorized_card_publishes_payment_authorized() {
        check(
            PaymentStatus::Pending,
            gateway_authorizes,
            authorized(),
            vec![Event::PaymentAuthorized(PaymentAuthorized {
                order_id: ORDER,
                amount_cents: 2500,
                authorization_id: "auth_1".into(),
            })],
        );
    }

    #[test]
    fn a_declined_card_publishes_payment_declined() {
        check(
            PaymentStatus::Pending,
            gateway_declines,
            declined(),
            vec![Event::PaymentDeclined(PaymentDeclined {
                order_id: ORDER,
                reason: "card_declined".into(),
            })],
        );
    }

    #[test]
    fn a_late_gateway_answer_does_not_overturn_the_first_one() {
        check(declined(), gateway_authorizes, declined(), vec![]);
        check(authorized(), gateway_declines, authorized(), vec![]);
        check(refunded(), gateway_authorizes, refunded(), vec![]);
    }

    #[test]
    fn a_failed_fulfillment_refunds_an_authorized_payment_in_full() {
        assert_eq!(
            refund_for_failed_fulfillment(&payment(authorized())),
            Refund::Refund {
                authorization_id: "auth_1",
                amount_cents: 2500
            }
        );
        check(
            authorized(),
            record_refund,
            refunded(),
            vec![Event::PaymentRefunded(PaymentRefunded {
                order_id: ORDER,
                amount_cents: 2500,
            })],
        );
        assert_eq!(payment(refunded()).refunded_cents(), 2500);
    }

    #[test]
    fn a_failed_fulfillment_again_refunds_nothing_more() {
        assert_eq!(
            refund_for_failed_fulfillment(&payment(refunded())),
            Refund::NothingToRefund
        );
        check(refunded(), record_refund, refunded(), vec![]);
    }

    #[test]
    fn a_failed_fulfillment_of_a_declined_payment_refunds_nothing() {
        assert_eq!(
            refund_for_failed_fulfillment(&payment(declined())),
            Refund::NothingToRefund
        );
        check(declined(), record_refund, declined(), vec![]);
    }

    #[test]
    fn a_failed_fulfillment_of_a_pending_payment_refunds_nothing() {
        assert_eq!(
            refund_for_failed_fulfillment(&payment(PaymentStatus::Pending)),
            Refund::NothingToRefund
        );
        check(
            PaymentStatus::Pending,
            record_refund,
            PaymentStatus::Pending,
            vec![],
        );
    }

    #[test]
    fn only_a_refunded_payment_shows_money_given_back() {
        for status in [PaymentStatus::Pending, authorized(), declined()] {
            assert_eq!(payment(status).refunded_cents(), 0);
        }
    }

    #[test]
    fn a_cancel_before_the_charge_means_it_never_happens() {
        let Cancel::Confirm(transition) = cancel(&payment(PaymentStatus::Pending)) else {
            panic!("a pending payment has nothing to refund");
        };
        assert_eq!(transition.payment.status, PaymentStatus::Cancelled);
        assert_eq!(
            transition.events,
            vec![Event::PaymentRefunded(PaymentRefunded {
                order_id: ORDER,
                amount_cents: 0
            })]
        );
        assert_eq!(
            charge_for_reservation(&transition.payment),
            Charge::AlreadyDecided
        );
    }

    #[test]
    fn a_cancel_after_the_charge_refunds_it() {
        assert_eq!(
            cancel(&payment(authorized())),
            Cancel::Refund {
                authorization_id: "auth_1",
                amount_cents: 2500
            }
        );
    }

    #[test]
    fn a_cancel_of_a_declined_payment_only_confirms() {
        let Cancel::Confirm(transition) = cancel(&payment(declined())) else {
            panic!("nothing to refund");
        };
        assert_eq!(transition.payment.status, declined());
        assert_eq!(transition.events.len(), 1);
    }

    #[test]
    fn a_repeated_cancel_changes_nothing() {
        let Cancel::Confirm(transition) = cancel(&payment(PaymentStatus::Cancelled)) else {
            panic!("nothing to refund");
        };
        assert!(transition.events.is_empty());
    }
}
