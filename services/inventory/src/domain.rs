//! Inventory's decisions, pure: whether an order can be reserved in full, and what a
//! compensation or a completion does to a reservation.

use std::collections::{BTreeMap, HashMap};

use events::Event;
use events::inventory::{InventoryRejected, InventoryReleased, InventoryReserved, StockLine};
use uuid::Uuid;

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Units are held for the order.
    Reserved,
    /// Nothing was held: stock was short.
    Rejected,
    /// The held units were given back (compensation).
    Released,
    /// The order completed: the held units left the warehouse.
    Committed,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "reserved",
            ReservationStatus::Rejected => "rejected",
            ReservationStatus::Released => "released",
            ReservationStatus::Committed => "committed",
        }
    }

    pub fn parse(text: &str) -> Option<ReservationStatus> {
        match text {
            "reserved" => Some(ReservationStatus::Reserved),
            "rejected" => Some(ReservationStatus::Rejected),
            "released" => Some(ReservationStatus::Released),
            "committed" => Some(ReservationStatus::Committed),
            _ => None,
        }
    }
}

/// A reservation: what is (or was) held for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    pub items: Vec<StockLine>,
}

/// What to do with an order's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveDecision {
    /// Hold these quantities (one line per SKU, sorted by SKU) and publish the event.
    Reserve {
        reservation: Reservation,
        event: Event,
    },
    /// Hold nothing and publish the rejection.
    Reject {
        reservation: Reservation,
        event: Event,
    },
}

/// Lines merged per SKU and sorted by SKU, the order in which rows are locked (so two
/// reservations never deadlock).
pub fn merge_lines<'a>(lines: impl IntoIterator<Item = (&'a str, u32)>) -> Vec<StockLine> {
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for (sku, quantity) in lines {
        let total = merged.entry(sku).or_default();
        *total = total.saturating_add(quantity);
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| StockLine {
            sku: sku.to_owned(),
            quantity,
        })
        .collect()
}

/// All or nothing: reserve when every line has enough available units (an unknown SKU has
/// none), otherwise reject naming the short SKUs.
pub fn reserve(
    order_id: Uuid,
    lines: Vec<StockLine>,
    available: &HashMap<String, i64>,
) -> ReserveDecision {
    let unavailable_skus: Vec<String> = lines
        .iter()
        .filter(|line| available.get(&line.sku).copied().unwrap_or(0) < i64::from(line.quantity))
        .map(|line| line.sku.clone())
        .collect();
    if unavailable_skus.is_empty() {
        ReserveDecision::Reserve {
            event: Event::InventoryReserved(InventoryReserved {
                order_id,
                items: lines.clone(),
            }),
            reservation: Reservation {
                order_id,
                status: ReservationStatus::Reserved,
                items: lines,
            },
        }
    } else {
        ReserveDecision::Reject {
            event: Event::InventoryRejected(InventoryRejected {
                order_id,
                unavailable_skus,
            }),
            reservation: Reservation {
                order_id,
                status: ReservationStatus::Rejected,
                items: lines,
            },
        }
    }
}

/// A compensation (payment declined, fulfillment failed): give back what is held, once.
/// Returns the released reservation and its event, or `None` when there is nothing to give
/// back (already released, rejected, or committed).
pub fn release(reservation: &Reservation) -> Option<(Reservation, Event)> {
    if reservation.status != ReservationStatus::Reserved {
        return None;
    }
    let released = Reservation {
        status: ReservationStatus::Released,
        ..reservation.clone()
    };
    let event = Event::InventoryReleased(InventoryReleased {
        order_id: reservation.order_id,
        items: reservation.items.clone(),
    });
    Some((released, event))
}

/// The order service asked to cancel: give back whatever is held and confirm with
/// `inventory.released` — with no lines when nothing was held (not reserved yet, rejected,
/// or released already) — so the order knows inventory holds nothing for it. Returns the
/// released reservation, if one was held, and the confirmation.
pub fn cancel(order_id: Uuid, reservation: Option<&Reservation>) -> (Option<Reservation>, Event) {
    if let Some((released, event)) = reservation.and_then(release) {
        return (Some(released), event);
    }
    let confirmation = Event::InventoryReleased(InventoryReleased {
        order_id,
        items: Vec::new(),
    });
    (None, confirmation)
}

/// The order completed: the held units are deducted from stock, once.
pub fn commit(reservation: &Reservation) -> Option<Reservation> {
    (reservation.status == ReservationStatus::Reserved).then(|| Reservation {
        status: ReservationStatus::Committed,
        ..reservation.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32) -> StockLine {
        StockLine {
            sku: sku.into(),
            quantity,
        }
    }

    fn stock(levels: &[(&str, i64)]) -> HashMap<String, i64> {
        levels
            .iter()
            .map(|(sku, n)| (sku.to_string(), *n))
            .collect()
    }

    fn reservation(status: ReservationStatus) -> Reservation {
        Reservation {
            order_id: Uuid::nil(),
            status,
            items: vec![line("MUG", 2)],
        }
    }

    #[test]
    fn an_order_with_enough_stock_for_every_line_is_reserved() {
        let decision = reserve(
            Uuid::nil(),
            vec![line("CUP", 1), line("MUG", 2)],
            &stock(&[("MUG", 2), ("CUP", 5)]),
        );
        let ReserveDecision::Reserve { reservation, event } = decision else {
            panic!("expected a reservation, got {decision:?}");
        };
        assert_eq!(reservation.status, ReservationStatus::Reserved);
        assert_eq!(event.event_type(), "inventory.reserved");
    }

    #[test]
    fn one_short_line_rejects_the_whole_order() {
        let decision = reserve(
            Uuid::nil(),
            vec![line("CUP", 1), line("MUG", 3)],
            &stock(&[("MUG", 2), ("CUP", 5)]),
        );
        let ReserveDecision::Reject { reservation, event } = decision else {
            panic!("expected a rejection, got {decision:?}");
        };
        assert_eq!(reservation.status, ReservationStatus::Rejected);
        assert_eq!(
            event,
            Event::InventoryRejected(InventoryRejected {
                order_id: Uuid::nil(),
                unavailable_skus: vec!["MUG".into()],
            })
        );
    }

    #[test]
    fn an_unknown_sku_has_no_stock() {
        let decision = reserve(Uuid::nil(), vec![line("GHOST", 1)], &stock(&[]));
        assert!(matches!(decision, ReserveDecision::Reject { .. }));
    }

    #[test]
    fn lines_are_merged_per_sku_and_sorted() {
        assert_eq!(
            merge_lines([("MUG", 1), ("CUP", 2), ("MUG", 3)]),
            vec![line("CUP", 2), line("MUG", 4)]
        );
    }

    #[test]
    fn a_compensation_releases_a_held_reservation_once() {
        let (released, event) = release(&reservation(ReservationStatus::Reserved)).unwrap();
        assert_eq!(released.status, ReservationStatus::Released);
        assert_eq!(event.event_type(), "inventory.released");
        assert_eq!(release(&released), None);
    }

    #[test]
    fn nothing_is_released_for_a_rejected_or_completed_order() {
        assert_eq!(release(&reservation(ReservationStatus::Rejected)), None);
        assert_eq!(release(&reservation(ReservationStatus::Committed)), None);
    }

    #[test]
    fn a_cancel_releases_what_is_held() {
        let held = reservation(ReservationStatus::Reserved);
        let (released, event) = cancel(Uuid::nil(), Some(&held));
        assert_eq!(released.unwrap().status, ReservationStatus::Released);
        assert_eq!(
            event,
            Event::InventoryReleased(InventoryReleased {
                order_id: Uuid::nil(),
                items: vec![line("MUG", 2)],
            })
        );
    }

    #[test]
    fn a_cancel_before_anything_is_held_confirms_with_no_lines() {
        for before in [
            None,
            Some(reservation(ReservationStatus::Rejected)),
            Some(reservation(ReservationStatus::Released)),
        ] {
            let (released, event) = cancel(Uuid::nil(), before.as_ref());
            assert_eq!(released, None);
            assert_eq!(
                event,
                Event::InventoryReleased(InventoryReleased {
                    order_id: Uuid::nil(),
                    items: vec![],
                })
            );
        }
    }

    #[test]
    fn completion_commits_a_held_reservation_once() {
        let committed = commit(&reservation(ReservationStatus::Reserved)).unwrap();
        assert_eq!(committed.status, ReservationStatus::Committed);
        assert_eq!(commit(&committed), None);
        assert_eq!(commit(&reservation(ReservationStatus::Released)), None);
    }
}
