//! The cross-service invariants of DESIGN §8, checked from outside once every order of a
//! test has ended: stock conserved, nobody charged for an order that did not complete, at
//! most one shipment per order, exactly one notification per (order, kind), and nothing
//! dead-lettered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{MutexGuard, PoisonError};

use anyhow::Result;
use futures::stream::{self, StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::api::{Notification, OrderView, Payment, Shipment};
use crate::polling::{Check, SAGA_TIMEOUT, SETTLE_TIMEOUT, wait_for};
use crate::system::System;

/// What a test did to a system, recorded by the helpers as it happens, so the invariants
/// know the baseline without the test repeating it.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Stock each SKU was given by `PUT /products/{sku}`.
    initial_on_hand: BTreeMap<String, i64>,
    /// Accepted orders, once each (an idempotent replay returns the same id), in order.
    orders: Vec<PlacedOrder>,
    /// `(stream, sequence)` of messages the test published itself (duplicates it injected):
    /// they are not the services' own publications.
    injected: HashSet<(String, u64)>,
}

#[derive(Debug, Clone)]
struct PlacedOrder {
    order_id: Uuid,
    email: Option<String>,
}

impl Ledger {
    pub(crate) fn record_stock(&mut self, sku: &str, on_hand: i64) {
        self.initial_on_hand.insert(sku.to_owned(), on_hand);
    }

    pub(crate) fn record_order(&mut self, order_id: Uuid, email: Option<&str>) {
        if !self.orders.iter().any(|order| order.order_id == order_id) {
            self.orders.push(PlacedOrder {
                order_id,
                email: email.map(str::to_owned),
            });
        }
    }

    pub(crate) fn record_injection(&mut self, stream: &str, sequence: u64) {
        self.injected.insert((stream.to_owned(), sequence));
    }

    pub(crate) fn is_injected(&self, stream: &str, sequence: u64) -> bool {
        self.injected.contains(&(stream.to_owned(), sequence))
    }
}

/// The notification kinds an order must have, given how it ended.
pub fn expected_notification_kinds(status: &str) -> &'static [&'static str] {
    match status {
        "completed" => &["placed", "shipment_scheduled", "completed"],
        "rejected" => &["placed", "rejected"],
        "cancelled" => &["placed", "cancelled"],
        _ => &[],
    }
}

/// Everything known about one ended order, gathered from the services and the streams.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    pub order: OrderView,
    pub email: Option<String>,
    pub payment: Option<Payment>,
    pub shipment: Option<Shipment>,
    pub notifications: Vec<Notification>,
    /// Distinct `payment.authorized` events the payment service published for the order.
    pub authorizations_published: usize,
    /// Distinct `fulfillment.scheduled` events the fulfillment service published.
    pub shipments_published: usize,
}

/// The invariants one ended order breaks; empty when it keeps them all.
pub fn order_violations(facts: &OrderFacts) -> Vec<String> {
    let order = &facts.order;
    let id = order.order_id;
    let completed = order.status == "completed";
    let mut violations = Vec::new();

    let priced_total: i64 = order
        .items
        .iter()
        .map(|item| i64::from(item.quantity) * item.unit_price_cents - item.discount_cents)
        .sum();
    if priced_total != order.total_cents {
        violations.push(format!(
            "order {id}: total_cents {} is not the sum of its lines {priced_total}",
            order.total_cents
        ));
    }
    let mut seen_types = HashSet::new();
    for event_type in order.history_types() {
        if !seen_types.insert(event_type) {
            violations.push(format!(
                "order {id}: {event_type} appears more than once in its history {:?}",
                order.history_types()
            ));
        }
    }

    // No order charged without being completed; a completed one charged its total, once.
    if let Some(payment) = &facts.payment
        && payment.currency != order.currency
    {
        violations.push(format!(
            "order {id} is in {} but its payment in {}",
            order.currency, payment.currency
        ));
    }
    let net_charged = facts.payment.as_ref().map_or(0, Payment::net_charged_cents);
    match (&facts.payment, completed) {
        (Some(payment), true)
            if payment.status == "authorized"
                && payment.amount_cents == order.total_cents
                && payment.refunded_cents == 0 => {}
        (payment, true) => violations.push(format!(
            "order {id} is completed but its payment is {payment:?} instead of authorized for {}",
            order.total_cents
        )),
        (_, false) if net_charged != 0 => violations.push(format!(
            "order {id} is {} but {net_charged} cents stay charged: {:?}",
            order.outcome(),
            facts.payment
        )),
        (_, false) => {}
    }
    if facts.authorizations_published > 1 || (completed && facts.authorizations_published != 1) {
        violations.push(format!(
            "order {id} ({}): payment published {} distinct payment.authorized events",
            order.outcome(),
            facts.authorizations_published
        ));
    }

    // At most one shipment per order, and a scheduled one only for a completed order.
    let scheduled = facts
        .shipment
        .as_ref()
        .is_some_and(|shipment| shipment.status == "scheduled");
    if completed != scheduled {
        violations.push(format!(
            "order {id} is {} but its shipment is {:?}",
            order.outcome(),
            facts.shipment
        ));
    }
    if facts.shipments_published > 1 || (completed && facts.shipments_published != 1) {
        violations.push(format!(
            "order {id} ({}): fulfillment published {} distinct fulfillment.scheduled events",
            order.outcome(),
            facts.shipments_published
        ));
    }

    // Exactly one notification per (order, kind), the expected kinds and no others.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for notification in &facts.notifications {
        *counts.entry(notification.kind.as_str()).or_insert(0) += 1;
        if let Some(email) = &facts.email
            && &notification.recipient != email
        {
            violations.push(format!(
                "order {id}: notification {} went to {} instead of {email}",
                notification.kind, notification.recipient
            ));
        }
    }
    let expected = expected_notification_kinds(&order.status);
    // A cancelled order may have told the customer about a shipment that was later undone.
    let tolerated = |kind: &str| {
        order.status == "cancelled" && kind == "shipment_scheduled" && facts.shipments_published > 0
    };
    for (kind, count) in &counts {
        if *count > 1 {
            violations.push(format!("order {id}: {count} notifications of kind {kind}"));
        }
        if !expected.contains(kind) && !tolerated(kind) {
            violations.push(format!(
                "order {id} is {} but has a {kind} notification",
                order.outcome()
            ));
        }
    }
    for kind in expected {
        if !counts.contains_key(kind) {
            violations.push(format!(
                "order {id} is {} but has no {kind} notification",
                order.outcome()
            ));
        }
    }
    violations
}

impl System {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ids of the orders this system accepted, in the order they were placed.
    pub fn placed_orders(&self) -> Vec<Uuid> {
        self.ledger()
            .orders
            .iter()
            .map(|order| order.order_id)
            .collect()
    }

    /// Waits for every order placed through this system to end and for the consumers to
    /// drain, then checks DESIGN §8's invariants over all of them and all SKUs stocked
    /// through [`System::put_product`]. Every violation is listed in the error.
    pub async fn check_invariants(&self) -> Result<()> {
        let order_count = self.ledger().orders.len();
        let violations = self.invariant_violations().await?;
        if violations.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} invariant violations over {order_count} orders:\n  - {}",
            violations.len(),
            violations.join("\n  - ")
        )
    }

    /// What [`System::check_invariants`] checks, as the list of violations it finds (empty
    /// when every invariant holds). An error means the check itself could not run (an order
    /// did not end in time, a service did not answer).
    pub async fn invariant_violations(&self) -> Result<Vec<String>> {
        let (initial_on_hand, placed) = {
            let ledger = self.ledger();
            (ledger.initial_on_hand.clone(), ledger.orders.clone())
        };
        let order_ids: Vec<Uuid> = placed.iter().map(|order| order.order_id).collect();
        let orders = self.wait_all_terminal(&order_ids, SAGA_TIMEOUT * 3).await?;
        self.wait_consumers_idle(SETTLE_TIMEOUT).await?;
        let mut violations = Vec::new();

        // Stock conserved: what left the shelf is exactly what completed orders took, and
        // nothing stays reserved. Inventory turns a reservation into a deduction when it
        // handles order.completed, after the order shows completed: poll for it.
        let mut expected_stock: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (sku, on_hand) in &initial_on_hand {
            let taken: i64 = orders
                .iter()
                .filter(|order| order.status == "completed")
                .map(|order| order.units_of(sku))
                .sum();
            expected_stock.insert(sku.clone(), (on_hand - taken, 0));
        }
        let expected_stock = &expected_stock;
        let stock = wait_for(
            "stock to equal the initial stock less completed orders, with nothing reserved",
            SETTLE_TIMEOUT,
            || async move {
                let mut wrong = Vec::new();
                for (sku, (on_hand, reserved)) in expected_stock {
                    let product = self.product(sku).await?;
                    if (product.on_hand, product.reserved) != (*on_hand, *reserved) {
                        wrong.push(format!(
                            "{sku}: on_hand {} reserved {} (expected {on_hand} and {reserved})",
                            product.on_hand, product.reserved
                        ));
                    }
                }
                Ok(if wrong.is_empty() {
                    Check::Done(())
                } else {
                    Check::NotYet(wrong.join("; "))
                })
            },
        )
        .await;
        if let Err(error) = stock {
            violations.push(format!("stock not conserved: {error:#}"));
        }

        // Notifications are the last consequences to land; wait until every expected kind is
        // there (a duplicate, if any, would already be visible or is the fence's job).
        let orders_ref = &orders;
        let notifications = wait_for(
            "every ended order's expected notifications",
            SETTLE_TIMEOUT,
            || async move {
                let all = self.notifications_of(orders_ref).await?;
                let missing: Vec<String> = orders_ref
                    .iter()
                    .zip(&all)
                    .filter(|(order, notifications)| {
                        expected_notification_kinds(&order.status)
                            .iter()
                            .any(|kind| !notifications.iter().any(|n| n.kind == *kind))
                    })
                    .take(5)
                    .map(|(order, notifications)| {
                        let kinds: Vec<&str> =
                            notifications.iter().map(|n| n.kind.as_str()).collect();
                        format!("{} ({}) has {kinds:?}", order.order_id, order.outcome())
                    })
                    .collect();
                Ok(if missing.is_empty() {
                    Check::Done(all)
                } else {
                    Check::NotYet(missing.join("; "))
                })
            },
        )
        .await;
        let notifications = match notifications {
            Ok(all) => all,
            // Carry on with what is there: the per-order check names what is missing.
            Err(_) => self.notifications_of(&orders).await?,
        };

        let authorizations = self.published_per_order("payment.authorized.*").await?;
        let shipments = self.published_per_order("fulfillment.scheduled.*").await?;
        let emails: HashMap<Uuid, Option<String>> = placed
            .into_iter()
            .map(|order| (order.order_id, order.email))
            .collect();
        let payments_and_shipments: Vec<(Option<Payment>, Option<Shipment>)> =
            stream::iter(&orders)
                .map(|order| async move {
                    let payment = self.payment(order.order_id).await?;
                    let shipment = self.shipment(order.order_id).await?;
                    anyhow::Ok((payment, shipment))
                })
                .buffered(8)
                .try_collect()
                .await?;
        for ((order, notifications), (payment, shipment)) in
            orders.iter().zip(notifications).zip(payments_and_shipments)
        {
            let facts = OrderFacts {
                email: emails.get(&order.order_id).cloned().flatten(),
                payment,
                shipment,
                notifications,
                authorizations_published: authorizations
                    .get(&order.order_id)
                    .map_or(0, HashSet::len),
                shipments_published: shipments.get(&order.order_id).map_or(0, HashSet::len),
                order: order.clone(),
            };
            violations.extend(order_violations(&facts));
        }

        for dead_letter in self.dead_letters().await? {
            violations.push(format!("a message was dead-lettered: {dead_letter}"));
        }
        Ok(violations)
    }

    async fn notifications_of(&self, orders: &[OrderView]) -> Result<Vec<Vec<Notification>>> {
        stream::iter(orders)
            .map(|order| self.notifications(order.order_id))
            .buffered(8)
            .try_collect()
            .await
    }

    /// Distinct event ids the services themselves published on `<type>.*`, by order id
    /// (the last subject token). Injected duplicates are left out.
    async fn published_per_order(
        &self,
        subject_filter: &str,
    ) -> Result<HashMap<Uuid, HashSet<Uuid>>> {
        let mut per_order: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        for event in self.stored_events(subject_filter).await? {
            if event.injected {
                continue;
            }
            if let Some(order_id) = event
                .subject
                .rsplit('.')
                .next()
                .and_then(|token| token.parse().ok())
            {
                per_order
                    .entry(order_id)
                    .or_default()
                    .insert(event.envelope.id);
            }
        }
        Ok(per_order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HistoryEntry, OrderItemView};

    fn order(status: &str, reason: Option<&str>, history: &[&str]) -> OrderView {
        OrderView {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            status: status.into(),
            reason: reason.map(str::to_owned),
            items: vec![OrderItemView {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_cents: 500,
                discount_cents: 0,
            }],
            total_cents: 1000,
            currency: "EUR".into(),
            trace_id: None,
            history: history
                .iter()
                .map(|event_type| HistoryEntry {
                    event_type: (*event_type).to_owned(),
                    at: "2026-01-01T00:00:00Z".into(),
                })
                .collect(),
        }
    }

    fn notifications(kinds: &[&str]) -> Vec<Notification> {
        kinds
            .iter()
            .map(|kind| Notification {
                kind: (*kind).to_owned(),
                recipient: "c1@example.com".into(),
                sent_at: "2026-01-01T00:00:00Z".into(),
            })
            .collect()
    }

    fn completed_facts() -> OrderFacts {
        OrderFacts {
            order: order(
                "completed",
                None,
                &["order.placed", "inventory.reserved", "payment.authorized"],
            ),
            email: Some("c1@example.com".into()),
            payment: Some(Payment {
                order_id: Uuid::nil(),
                status: "authorized".into(),
                amount_cents: 1000,
                currency: "EUR".into(),
                refunded_cents: 0,
            }),
            shipment: Some(Shipment {
                order_id: Uuid::nil(),
                status: "scheduled".into(),
                shipment_id: Some("s-1".into()),
                carrier: Some("PostNL".into()),
                reason: None,
            }),
            notifications: notifications(&["placed", "shipment_scheduled", "completed"]),
            authorizations_published: 1,
            shipments_published: 1,
        }
    }

    #[test]
    fn a_clean_completed_order_breaks_nothing() {
        assert_eq!(order_violations(&completed_facts()), Vec::<String>::new());
    }

    #[test]
    fn a_second_authorization_or_notification_is_a_violation() {
        let mut facts = completed_facts();
        facts.authorizations_published = 2;
        facts.notifications =
            notifications(&["placed", "shipment_scheduled", "completed", "placed"]);
        let violations = order_violations(&facts);
        assert_eq!(violations.len(), 2, "{violations:?}");
    }

    #[test]
    fn a_cancelled_order_that_stays_charged_is_a_violation() {
        let facts = OrderFacts {
            order: order("cancelled", Some("fulfillment_failed"), &["order.placed"]),
            payment: Some(Payment {
                order_id: Uuid::nil(),
                status: "authorized".into(),
                amount_cents: 1000,
                currency: "EUR".into(),
                refunded_cents: 0,
            }),
            shipment: None,
            notifications: notifications(&["placed", "cancelled"]),
            authorizations_published: 1,
            shipments_published: 0,
            ..completed_facts()
        };
        let violations = order_violations(&facts);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("stay charged"), "{violations:?}");
    }

    #[test]
    fn a_rejected_order_with_nothing_done_breaks_nothing() {
        let facts = OrderFacts {
            order: order(
                "rejected",
                Some("out_of_stock"),
                &["order.placed", "inventory.rejected"],
            ),
            payment: None,
            shipment: None,
            notifications: notifications(&["placed", "rejected"]),
            authorizations_published: 0,
            shipments_published: 0,
            ..completed_facts()
        };
        assert_eq!(order_violations(&facts), Vec::<String>::new());
    }

    #[test]
    fn a_duplicated_history_entry_is_a_violation() {
        let mut facts = completed_facts();
        facts.order = order(
            "completed",
            None,
            &["order.placed", "payment.authorized", "payment.authorized"],
        );
        let violations = order_violations(&facts);
        assert_eq!(violations.len(), 1, "{violations:?}");
    }
}
