//! The four saga paths a client can drive from outside (DESIGN §3): happy, out of stock,
//! card declined, cannot ship — each to its terminal status and reason, with every step
//! before a failure compensated.

use e2e::api::{COUNTRY_UNSERVED, OrderRequest, PAYMENT_DECLINED};
use e2e::polling::{Check, SAGA_TIMEOUT, SETTLE_TIMEOUT, wait_for};
use e2e::system::{System, SystemOptions};

#[tokio::test]
async fn a_happy_order_completes_charged_once_shipped_once_and_notified() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("HAPPY-MUG", "Mug", 1250, 10)
        .await?;

    let order_id = system
        .place_accepted_order(&OrderRequest::new("HAPPY-MUG", 2))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    assert_eq!(order.status, "completed", "{order:?}");
    assert_eq!(order.reason, None);
    assert_eq!(order.customer_id, "c-1");
    assert_eq!(order.total_cents, 2500);
    assert_eq!(order.items.len(), 1);
    assert_eq!(order.items[0].unit_price_cents, 1250);
    system
        .wait_history(
            order_id,
            &[
                "order.placed",
                "inventory.reserved",
                "payment.authorized",
                "fulfillment.scheduled",
                "order.completed",
            ],
            SETTLE_TIMEOUT,
        )
        .await?;
    let payment = system.payment(order_id).await?.expect("a payment");
    assert_eq!(
        (
            payment.status.as_str(),
            payment.amount_cents,
            payment.refunded_cents
        ),
        ("authorized", 2500, 0)
    );
    let shipment = system.shipment(order_id).await?.expect("a shipment");
    assert_eq!(shipment.status, "scheduled");
    assert!(
        shipment.shipment_id.is_some() && shipment.carrier.is_some(),
        "{shipment:?}"
    );
    system
        .wait_notifications(
            order_id,
            &["placed", "shipment_scheduled", "completed"],
            SETTLE_TIMEOUT,
        )
        .await?;

    system.check_invariants().await?;
    let product = system.product("HAPPY-MUG").await?;
    assert_eq!(
        (product.on_hand, product.reserved, product.available),
        (8, 0, 8)
    );
    system.shutdown().await
}

#[tokio::test]
async fn an_order_for_more_than_is_on_hand_is_rejected_and_nothing_is_charged() -> anyhow::Result<()>
{
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("SCARCE-LAMP", "Lamp", 4999, 1)
        .await?;

    let order_id = system
        .place_accepted_order(&OrderRequest::new("SCARCE-LAMP", 3))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    assert_eq!(order.status, "rejected", "{order:?}");
    assert_eq!(order.reason.as_deref(), Some("out_of_stock"));
    assert!(
        order.history_follows(&["order.placed", "inventory.rejected"]),
        "history {:?}",
        order.history_types()
    );
    assert_eq!(order.count_in_history("inventory.reserved"), 0);
    // Payment may know the order from order.placed (a pending payment), but never charges it.
    if let Some(payment) = system.payment(order_id).await? {
        assert_eq!(
            payment.status, "pending",
            "nothing may be charged: {payment:?}"
        );
        assert_eq!(payment.net_charged_cents(), 0);
    }
    assert_eq!(system.shipment(order_id).await?, None);
    system
        .wait_notifications(order_id, &["placed", "rejected"], SETTLE_TIMEOUT)
        .await?;

    system.check_invariants().await?;
    let product = system.product("SCARCE-LAMP").await?;
    assert_eq!(
        (product.on_hand, product.reserved),
        (1, 0),
        "stock untouched"
    );
    system.shutdown().await
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_releases_the_reservation() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("DECLINE-MUG", "Mug", 1250, 10)
        .await?;

    let order_id = system
        .place_accepted_order(
            &OrderRequest::new("DECLINE-MUG", 2).with_payment_method(PAYMENT_DECLINED),
        )
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    assert_eq!(order.status, "cancelled", "{order:?}");
    assert_eq!(order.reason.as_deref(), Some("payment_declined"));
    system
        .wait_history(
            order_id,
            &[
                "order.placed",
                "inventory.reserved",
                "payment.declined",
                "inventory.released",
            ],
            SETTLE_TIMEOUT,
        )
        .await?;
    if let Some(payment) = system.payment(order_id).await? {
        assert_eq!(payment.status, "declined");
        assert_eq!(payment.net_charged_cents(), 0);
    }
    assert_eq!(system.shipment(order_id).await?, None);
    system
        .wait_notifications(order_id, &["placed", "cancelled"], SETTLE_TIMEOUT)
        .await?;

    system.check_invariants().await?;
    let product = system.product("DECLINE-MUG").await?;
    assert_eq!(
        (product.on_hand, product.reserved),
        (10, 0),
        "the reservation is released and nothing deducted"
    );
    system.shutdown().await
}

#[tokio::test]
async fn an_order_that_cannot_ship_is_refunded_in_full_and_released() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("POLAR-MUG", "Mug", 1250, 10)
        .await?;

    let order_id = system
        .place_accepted_order(&OrderRequest::new("POLAR-MUG", 2).with_country(COUNTRY_UNSERVED))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    assert_eq!(order.status, "cancelled", "{order:?}");
    assert_eq!(order.reason.as_deref(), Some("fulfillment_failed"));
    system
        .wait_history(
            order_id,
            &["order.placed", "inventory.reserved", "payment.authorized"],
            SETTLE_TIMEOUT,
        )
        .await?;
    // Each compensation reaches the order; in whatever order, as they travel on three
    // streams.
    for compensation in [
        "fulfillment.failed",
        "payment.refunded",
        "inventory.released",
    ] {
        system
            .wait_history(order_id, &[compensation], SETTLE_TIMEOUT)
            .await?;
    }
    let payment = system.payment(order_id).await?.expect("a payment");
    assert_eq!(
        (
            payment.status.as_str(),
            payment.amount_cents,
            payment.refunded_cents
        ),
        ("refunded", 2500, 2500),
        "refunded in full"
    );
    let shipment = system.shipment(order_id).await?.expect("a failed shipment");
    assert_eq!(shipment.status, "failed");
    system
        .wait_notifications(order_id, &["placed", "cancelled"], SETTLE_TIMEOUT)
        .await?;

    system.check_invariants().await?;
    let product = system.product("POLAR-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (10, 0));
    system.shutdown().await
}

#[tokio::test]
async fn an_order_of_several_products_moves_all_of_their_stock_or_none() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    for (sku, on_hand) in [("PAIR-CUP", 10), ("PAIR-SAUCER", 10), ("PAIR-SPOON", 1)] {
        system
            .put_product_and_wait_catalogue(sku, "Piece", 500, on_hand)
            .await?;
    }

    // Completed: every line is deducted, once the completion reaches inventory.
    let completed = system
        .place_accepted_order(&OrderRequest::new("PAIR-CUP", 3).with_item("PAIR-SAUCER", 3))
        .await?;
    let order = system.wait_terminal(completed, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");
    wait_for_stock(&system, &[("PAIR-CUP", 7, 0), ("PAIR-SAUCER", 7, 0)]).await?;

    // Rejected: one line cannot be held, so none is.
    let rejected = system
        .place_accepted_order(&OrderRequest::new("PAIR-CUP", 1).with_item("PAIR-SPOON", 2))
        .await?;
    let order = system.wait_terminal(rejected, SAGA_TIMEOUT).await?;
    assert_eq!(
        (order.status.as_str(), order.reason.as_deref()),
        ("rejected", Some("out_of_stock")),
        "{order:?}"
    );
    wait_for_stock(&system, &[("PAIR-CUP", 7, 0), ("PAIR-SPOON", 1, 0)]).await?;

    // Cancelled after the card is declined: every line held is given back.
    let declined = system
        .place_accepted_order(
            &OrderRequest::new("PAIR-CUP", 1)
                .with_item("PAIR-SAUCER", 1)
                .with_payment_method(PAYMENT_DECLINED),
        )
        .await?;
    let order = system.wait_terminal(declined, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "cancelled", "{order:?}");
    wait_for_stock(&system, &[("PAIR-CUP", 7, 0), ("PAIR-SAUCER", 7, 0)]).await?;

    system.check_invariants().await?;
    system.shutdown().await
}

/// Waits until each `(sku, on_hand, reserved)` holds.
async fn wait_for_stock(system: &System, expected: &[(&str, i64, i64)]) -> anyhow::Result<()> {
    wait_for("the stock to settle", SETTLE_TIMEOUT, || async {
        let mut seen = Vec::new();
        for (sku, _, _) in expected {
            let product = system.product(sku).await?;
            seen.push((*sku, product.on_hand, product.reserved));
        }
        Ok(if seen == expected {
            Check::Done(())
        } else {
            Check::NotYet(format!("{seen:?}"))
        })
    })
    .await
}
