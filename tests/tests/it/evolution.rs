//! A breaking change to an event, rolled out without stopping the saga: `order.placed` v2 adds
//! a currency and per-line discounts. Consumers read both versions (v1 is upcast to v2), so
//! they are upgraded first while the order service still publishes v1; then the order service
//! moves to v2. Orders of both versions complete, and history of both is replayed.

use std::process::Stdio;

use anyhow::{Context as _, ensure};
use e2e::api::{COUNTRY_UNSERVED, OrderRequest, PAYMENT_DECLINED};
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{Service, System, SystemOptions, service_binary_directory};
use uuid::Uuid;

use crate::replay::rebuild;

/// The schema version the `order.placed` of an order was published in.
async fn published_version(system: &System, order_id: Uuid) -> anyhow::Result<String> {
    let placed = system
        .last_event(&format!("order.placed.{order_id}"))
        .await?;
    Ok(placed
        .envelope
        .dataschema
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn consumers_upgraded_first_read_the_old_producer_and_then_the_new_one() -> anyhow::Result<()>
{
    // The mixed deployment: every consumer on the new code, the order service still on the
    // old code path, publishing order.placed v1.
    let options = SystemOptions::default().with_env(Service::Order, "ORDER_PLACED_VERSION", "1");
    let mut system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("EVOLVE-MUG", "Mug", 1000, 20)
        .await?;

    let v1_orders = [
        (OrderRequest::new("EVOLVE-MUG", 2), "completed"),
        (
            OrderRequest::new("EVOLVE-MUG", 1).with_payment_method(PAYMENT_DECLINED),
            "cancelled (payment_declined)",
        ),
        (
            OrderRequest::new("EVOLVE-MUG", 500),
            "rejected (out_of_stock)",
        ),
        (
            OrderRequest::new("EVOLVE-MUG", 1).with_country(COUNTRY_UNSERVED),
            "cancelled (fulfillment_failed)",
        ),
    ];
    let mut placed = Vec::new();
    for (request, _) in &v1_orders {
        placed.push(system.place_accepted_order(request).await?);
    }
    for (order_id, (_, expected)) in placed.iter().zip(&v1_orders) {
        let order = system.wait_terminal(*order_id, SAGA_TIMEOUT).await?;
        ensure!(
            order.outcome() == *expected,
            "v1 order {order_id} ended {}, expected {expected}",
            order.outcome()
        );
        ensure!(published_version(&system, *order_id).await? == "v1");
    }
    let happy_v1 = placed[0];
    let payment = system.payment(happy_v1).await?.context("a payment")?;
    ensure!(
        (payment.amount_cents, payment.currency.as_str()) == (2000, "EUR"),
        "the v1 order was charged {payment:?}; v1 means euros"
    );

    // The order service is upgraded: v2, with a discount v1 could not carry.
    system
        .restart(Service::Order, &[("VOLUME_DISCOUNT", "2:10")])
        .await?;
    let happy_v2 = system
        .place_accepted_order(&OrderRequest::new("EVOLVE-MUG", 2))
        .await?;
    let order = system.wait_terminal(happy_v2, SAGA_TIMEOUT).await?;
    ensure!(order.outcome() == "completed", "{order:?}");
    ensure!(published_version(&system, happy_v2).await? == "v2");
    ensure!(
        (order.total_cents, order.items[0].discount_cents) == (1800, 200),
        "10% off 2 × 10.00 should be 18.00: {order:?}"
    );
    let payment = system.payment(happy_v2).await?.context("a payment")?;
    ensure!(
        (payment.amount_cents, payment.currency.as_str()) == (1800, "EUR"),
        "the v2 order was charged {payment:?}"
    );

    // History holds both versions; a rebuild from the start of the stream reads them all.
    let printed = rebuild(&system, Service::Notification, "rebuild-contacts").await?;
    ensure!(
        printed.contains("contacts rebuilt from 5 events"),
        "printed: {printed}"
    );
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn the_old_producer_path_refuses_orders_v1_cannot_carry() -> anyhow::Result<()> {
    let binary = service_binary_directory()?.join(Service::Order.binary_name());
    let output = tokio::process::Command::new(&binary)
        .env("ORDER_PLACED_VERSION", "1")
        .env("CURRENCY", "USD")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/never")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("failed to run {}", binary.display()))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(!output.status.success(), "it started: {printed}");
    ensure!(
        printed.contains("ORDER_PLACED_VERSION=1") && printed.contains("CURRENCY=EUR"),
        "the error does not say what to do: {printed}"
    );
    Ok(())
}
