//! A crash between commit and ack: the payment service kills itself right after committing
//! its handling of `inventory.reserved`, before acknowledging it. After a restart the
//! message is redelivered, the inbox recognises it, and the customer is charged once. And a
//! crash between a publish ack and marking the outbox row: the row is published again after
//! the restart, JetStream drops the copy by its message id, and the saga goes on once.

use e2e::api::OrderRequest;
use e2e::polling::{SAGA_TIMEOUT, SETTLE_TIMEOUT};
use e2e::system::{Service, System, SystemOptions, describe_exit};

#[tokio::test]
async fn a_payment_crash_after_commit_before_ack_charges_exactly_once() -> anyhow::Result<()> {
    let options = SystemOptions::default().with_env(
        Service::Payment,
        "FAULT_CRASH_AFTER_COMMIT",
        "inventory.reserved",
    );
    let mut system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("CRASH-MUG", "Mug", 900, 10)
        .await?;

    let order_id = system
        .place_accepted_order(&OrderRequest::new("CRASH-MUG", 3))
        .await?;
    let crashed = system.wait_exit(Service::Payment, SAGA_TIMEOUT).await?;
    assert!(
        !crashed.success(),
        "payment should have crashed, but it {}",
        describe_exit(crashed)
    );
    system.restart(Service::Payment, &[]).await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    assert_eq!(order.status, "completed", "{order:?}");
    // The order can complete before its payment consumer has recorded the authorization.
    // (The history keeps one entry per event type, so a count would prove nothing: the
    // stored events below do.)
    system
        .wait_history(order_id, &["payment.authorized"], SETTLE_TIMEOUT)
        .await?;
    let payment = system.payment(order_id).await?.expect("a payment");
    assert_eq!(
        (
            payment.status.as_str(),
            payment.amount_cents,
            payment.refunded_cents
        ),
        ("authorized", 2700, 0)
    );
    let authorizations = system
        .stored_events(&format!("payment.authorized.{order_id}"))
        .await?;
    let distinct: std::collections::HashSet<_> = authorizations
        .iter()
        .map(|event| event.envelope.id)
        .collect();
    assert_eq!(
        distinct.len(),
        1,
        "payment.authorized published once: {authorizations:?}"
    );
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn an_order_crash_after_the_publish_ack_before_marking_the_row_publishes_once()
-> anyhow::Result<()> {
    let options = SystemOptions::default().with_env(
        Service::Order,
        "FAULT_CRASH_AFTER_PUBLISH_ACK",
        "order.placed",
    );
    let mut system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("RELAY-MUG", "Mug", 500, 10)
        .await?;

    let order_id = system
        .place_accepted_order(&OrderRequest::new("RELAY-MUG", 2))
        .await?;
    let crashed = system.wait_exit(Service::Order, SAGA_TIMEOUT).await?;
    assert!(
        !crashed.success(),
        "the order service should have crashed, but it {}",
        describe_exit(crashed)
    );
    system.restart(Service::Order, &[]).await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");

    // The row was published twice, the stream kept it once.
    let stored = system
        .stored_events(&format!("order.placed.{order_id}"))
        .await?;
    assert_eq!(stored.len(), 1, "order.placed stored once: {stored:?}");
    system.check_invariants().await?;
    system.shutdown().await
}
