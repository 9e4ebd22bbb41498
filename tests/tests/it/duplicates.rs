//! At-least-once delivery made harmless: copies of a finished order's events are published
//! again — the same event id past JetStream's dedup (the consumers' inboxes must drop it) and
//! the same fact under a new id (the domain must make it a no-op) — and nothing changes.

use e2e::api::OrderRequest;
use e2e::jetstream::DedupHeader;
use e2e::polling::{SAGA_TIMEOUT, SETTLE_TIMEOUT};
use e2e::system::{System, SystemOptions};

/// The events whose copies would do damage if handled twice: a second reservation, a second
/// charge, a second shipment.
const REPLAYED_EVENT_TYPES: [&str; 3] =
    ["order.placed", "inventory.reserved", "payment.authorized"];

#[tokio::test]
async fn copies_of_a_completed_orders_events_change_nothing() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("DUP-MUG", "Mug", 700, 10)
        .await?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("DUP-MUG", 2))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");
    system
        .wait_notifications(
            order_id,
            &["placed", "shipment_scheduled", "completed"],
            SETTLE_TIMEOUT,
        )
        .await?;
    system.wait_consumers_idle(SETTLE_TIMEOUT).await?;

    let order_before = system.order(order_id).await?;
    let payment_before = system.payment(order_id).await?;
    let shipment_before = system.shipment(order_id).await?;
    let notifications_before = system.notification_counts(order_id).await?;

    for event_type in REPLAYED_EVENT_TYPES {
        let stored = system
            .last_event(&format!("{event_type}.{order_id}"))
            .await?;
        assert_eq!(stored.envelope.event_type, event_type);
        assert_eq!(
            stored.message_id(),
            Some(stored.envelope.id.to_string().as_str()),
            "services publish with the event id as Nats-Msg-Id (DESIGN §4)"
        );

        let same_header = system.republish(&stored, DedupHeader::EventId).await?;
        assert!(
            same_header.duplicate,
            "JetStream must drop a {event_type} copy with the same Nats-Msg-Id"
        );
        for dedup in [DedupHeader::Omitted, DedupHeader::Fresh] {
            let copy = system.republish(&stored, dedup).await?;
            assert!(
                !copy.duplicate,
                "a {event_type} copy with {dedup:?} must be stored"
            );
            assert_eq!(copy.event_id, stored.envelope.id);
        }
        let new_event = system.republish_as_new_event(&stored).await?;
        assert!(!new_event.duplicate);
        assert_ne!(new_event.event_id, stored.envelope.id);
    }

    // A fence: a second order through every service after the copies, so that each
    // consumer has handled the copies before it handles the fence's events; then wait for
    // every consumer to have acknowledged everything.
    let fence_id = system
        .place_accepted_order(
            &OrderRequest::new("DUP-MUG", 1).with_customer("c-2", "c2@example.com"),
        )
        .await?;
    let fence = system.wait_terminal(fence_id, SAGA_TIMEOUT).await?;
    assert_eq!(fence.status, "completed", "{fence:?}");
    system
        .wait_notifications(
            fence_id,
            &["placed", "shipment_scheduled", "completed"],
            SETTLE_TIMEOUT,
        )
        .await?;
    system.wait_consumers_idle(SETTLE_TIMEOUT).await?;

    assert_eq!(
        system.order(order_id).await?,
        order_before,
        "the order, its history included, is unchanged"
    );
    assert_eq!(
        system.payment(order_id).await?,
        payment_before,
        "charged once"
    );
    assert_eq!(
        system.shipment(order_id).await?,
        shipment_before,
        "one shipment"
    );
    assert_eq!(
        system.notification_counts(order_id).await?,
        notifications_before,
        "one notification per kind"
    );
    for (subject, published) in [
        (format!("payment.authorized.{order_id}"), 1),
        (format!("fulfillment.scheduled.{order_id}"), 1),
        (format!("inventory.reserved.{order_id}"), 1),
    ] {
        let by_services = system
            .stored_events(&subject)
            .await?
            .into_iter()
            .filter(|event| !event.injected)
            .count();
        assert_eq!(
            by_services, published,
            "events the services published on {subject}"
        );
    }
    system.check_invariants().await?;
    let product = system.product("DUP-MUG").await?;
    assert_eq!(
        (product.on_hand, product.reserved),
        (7, 0),
        "only the order and the fence took stock"
    );
    system.shutdown().await
}
