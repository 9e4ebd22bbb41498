//! An order's history rebuilt from the streams alone: `sagactl audit` lists every event any
//! service published about the order, oldest first, each caused by one before it, and covers
//! everything `GET /orders/{id}` shows in its history.

use std::collections::HashSet;

use anyhow::{Context as _, ensure};
use e2e::api::{OrderRequest, PAYMENT_DECLINED};
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{System, SystemOptions};

#[tokio::test]
async fn an_orders_history_is_rebuilt_from_the_streams() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("AUDIT-MUG", "Mug", 900, 10)
        .await?;
    let jetstream = sagactl::connect(
        &system.nats_url(),
        &system.nats_users().auth(e2e::nats_server::ADMIN_USER),
    )
    .await?;

    let paths = [
        (
            "happy",
            OrderRequest::new("AUDIT-MUG", 1),
            vec![
                "order.placed",
                "inventory.reserved",
                "payment.authorized",
                "fulfillment.scheduled",
                "order.completed",
            ],
        ),
        (
            "declined",
            OrderRequest::new("AUDIT-MUG", 1).with_payment_method(PAYMENT_DECLINED),
            vec![
                "order.placed",
                "inventory.reserved",
                "payment.declined",
                "inventory.released",
                "order.cancelled",
            ],
        ),
    ];
    for (path, request, expected) in paths {
        let order_id = system.place_accepted_order(&request).await?;
        let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
        let trail = sagactl::audit::trail(&jetstream, order_id).await?;
        let types: Vec<&str> = trail.iter().map(|entry| entry.event_type()).collect();
        ensure!(
            types.first() == Some(&"order.placed"),
            "{path}: the trail starts with {types:?}"
        );
        for event_type in &expected {
            ensure!(
                types.contains(event_type),
                "{path}: {event_type} missing from {types:?}"
            );
        }
        for entry in order.history_types() {
            ensure!(
                types.contains(&entry),
                "{path}: history entry {entry} is not in the trail {types:?}"
            );
        }
        // Each event after the first was caused by one earlier in the trail.
        let mut seen = HashSet::new();
        for entry in &trail {
            let event = entry
                .event
                .as_ref()
                .with_context(|| format!("{path}: {} does not decode", entry.subject))?;
            if let Some(cause) = event.causationid {
                ensure!(
                    seen.contains(&cause),
                    "{path}: {} was caused by {cause}, not earlier in the trail",
                    event.event_type
                );
            } else {
                ensure!(
                    event.event_type == "order.placed",
                    "{path}: {} has no cause",
                    event.event_type
                );
            }
            ensure!(
                seen.insert(event.id),
                "{path}: event {} is in the trail twice",
                event.id
            );
        }
    }
    system.shutdown().await
}
