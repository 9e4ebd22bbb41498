//! The payment gateway as a real, unreliable dependency: a flaky gateway still charges each
//! order exactly once (retries reuse the idempotency key), and a gateway that stays down
//! past the saga deadline ends in a cancelled order with nothing charged.

use e2e::api::OrderRequest;
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{Service, System, SystemOptions};
use gateway_simulator::Faults;

#[tokio::test]
async fn a_flaky_gateway_still_charges_each_order_exactly_once() -> anyhow::Result<()> {
    // What is tested is retrying a gateway that fails half its calls, not the breaker: five
    // failed attempts in a row (likely among some twenty-four at 50%) would open it, and the
    // messages it turns away are redelivered with a backoff that reaches 30 s, past the
    // time this test waits. The breaker has tests of its own.
    let options = SystemOptions::default().with_env(
        Service::Payment,
        "PAYMENT_GATEWAY_BREAKER_FAILURES",
        "1000",
    );
    let system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("FLAKY-MUG", "Mug", 300, 50)
        .await?;
    system
        .set_gateway_faults(Faults {
            latency_ms: 20,
            error_rate: 0.5,
            down: false,
        })
        .await?;
    let mut orders = Vec::new();
    for _ in 0..8 {
        orders.push(
            system
                .place_accepted_order(&OrderRequest::new("FLAKY-MUG", 1))
                .await?,
        );
    }
    for order_id in &orders {
        let order = system.wait_terminal(*order_id, SAGA_TIMEOUT).await?;
        assert_eq!(order.status, "completed", "{order:?}");
    }
    system.set_gateway_faults(Faults::default()).await?;
    let stats = system.gateway_stats().await?;
    assert_eq!(
        stats.authorizations, 8,
        "one authorization per order: {stats:?}"
    );
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn a_gateway_down_past_the_deadline_cancels_the_order_with_nothing_charged()
-> anyhow::Result<()> {
    let options = SystemOptions::default().with_env(Service::Order, "ORDER_DEADLINE", "4s");
    let system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("DOWN-MUG", "Mug", 300, 5)
        .await?;
    system
        .set_gateway_faults(Faults {
            latency_ms: 0,
            error_rate: 0.0,
            down: true,
        })
        .await?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("DOWN-MUG", 2))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(
        (order.status.as_str(), order.reason.as_deref()),
        ("cancelled", Some("deadline_exceeded")),
        "{order:?}"
    );
    let payment = system.payment(order_id).await?.expect("a payment record");
    assert_eq!(payment.net_charged_cents(), 0, "{payment:?}");
    let product = system.product("DOWN-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (5, 0));

    system.set_gateway_faults(Faults::default()).await?;
    assert_eq!(system.gateway_stats().await?.authorizations, 0);
    system.check_invariants().await?;
    system.shutdown().await
}
