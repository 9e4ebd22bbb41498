//! Stopping a saga from the order service's side: a customer's cancel at any step before
//! the end, and the saga deadline, driven by a durable timer that survives a restart. Each
//! participant undoes what it did and never performs its step later.

use e2e::api::{OrderRequest, OrderView};
use e2e::polling::{Check, SAGA_TIMEOUT, wait_for};
use e2e::system::{Service, System, SystemOptions};
use uuid::Uuid;

/// Waits until the order's history shows `event_type`.
async fn wait_history(
    system: &System,
    order_id: Uuid,
    event_type: &str,
) -> anyhow::Result<OrderView> {
    wait_for(
        format!("{event_type} in the history of {order_id}"),
        SAGA_TIMEOUT,
        || async {
            let order = system.order(order_id).await?;
            Ok(if order.history_types().contains(&event_type) {
                Check::Done(order)
            } else {
                Check::NotYet(format!("{:?}", order.history_types()))
            })
        },
    )
    .await
}

#[tokio::test]
async fn a_cancel_while_payment_is_stuck_releases_stock_and_charges_nothing() -> anyhow::Result<()>
{
    let mut system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("CANCEL-MUG", "Mug", 800, 5)
        .await?;
    system.pause(Service::Payment)?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("CANCEL-MUG", 2))
        .await?;
    wait_history(&system, order_id, "inventory.reserved").await?;

    let accepted = system.cancel_order(order_id).await?;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "cancelling");
    let again = system.cancel_order(order_id).await?;
    assert_eq!(
        again.status, 202,
        "a repeated cancel is accepted: {}",
        again.text
    );

    // The payment service wakes up to both the reservation and the cancellation.
    system.resume(Service::Payment)?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(
        (order.status.as_str(), order.reason.as_deref()),
        ("cancelled", Some("customer_request")),
        "{order:?}"
    );
    let payment = system.payment(order_id).await?.expect("a payment record");
    assert_eq!(payment.net_charged_cents(), 0, "{payment:?}");
    let product = system.product("CANCEL-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (5, 0));
    let shipment = system
        .shipment(order_id)
        .await?
        .expect("a cancelled shipment record");
    assert_eq!(shipment.status, "cancelled");

    let finished = system.cancel_order(order_id).await?;
    assert_eq!(finished.status, 409, "{}", finished.text);
    assert!(finished.body["error"].is_string());
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn a_cancel_after_payment_refunds_it_and_no_shipment_ever_goes_out() -> anyhow::Result<()> {
    let mut system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("LATE-MUG", "Mug", 600, 5)
        .await?;
    system.pause(Service::Fulfillment)?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("LATE-MUG", 1))
        .await?;
    wait_history(&system, order_id, "payment.authorized").await?;
    let accepted = system.cancel_order(order_id).await?;
    assert_eq!(accepted.status, 202, "{}", accepted.text);

    // Fulfillment wakes up to the payment and the cancellation, in whichever order: a
    // shipment booked late is cancelled, or never booked.
    system.resume(Service::Fulfillment)?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(
        (order.status.as_str(), order.reason.as_deref()),
        ("cancelled", Some("customer_request")),
        "{order:?}"
    );
    let payment = system.payment(order_id).await?.expect("a payment");
    assert_eq!(
        (payment.status.as_str(), payment.refunded_cents),
        ("refunded", 600)
    );
    let shipment = system.shipment(order_id).await?.expect("a shipment record");
    assert_eq!(shipment.status, "cancelled");
    let product = system.product("LATE-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (5, 0));
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn an_order_past_its_deadline_is_cancelled_even_across_a_restart() -> anyhow::Result<()> {
    let options = SystemOptions::default().with_env(Service::Order, "ORDER_DEADLINE", "3s");
    let mut system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("SLOW-MUG", "Mug", 900, 4)
        .await?;
    // A payment service that never answers in time.
    system.pause(Service::Payment)?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("SLOW-MUG", 1))
        .await?;
    // The timer must be durable: restart the order service while the order waits.
    system.kill(Service::Order);
    system
        .restart(Service::Order, &[("ORDER_DEADLINE", "3s")])
        .await?;
    wait_for("the deadline to pass", SAGA_TIMEOUT, || async {
        let order = system.order(order_id).await?;
        Ok(if order.reason.as_deref() == Some("deadline_exceeded") {
            Check::Done(())
        } else {
            Check::NotYet(format!("{} {:?}", order.status, order.reason))
        })
    })
    .await?;
    system.resume(Service::Payment)?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(
        (order.status.as_str(), order.reason.as_deref()),
        ("cancelled", Some("deadline_exceeded")),
        "{order:?}"
    );
    assert!(
        order
            .history_types()
            .contains(&"order.cancellation_requested")
    );
    let payment = system.payment(order_id).await?.expect("a payment record");
    assert_eq!(payment.net_charged_cents(), 0, "{payment:?}");
    let product = system.product("SLOW-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (4, 0));
    system.check_invariants().await?;
    system.shutdown().await
}
