//! Many customers racing for scarce stock: 200 orders of one unit for 50 units on hand.
//! Exactly 50 complete, the rest are rejected, and the shelf ends empty with nothing held;
//! with the consumers' default slots, and with one slot each as the compose file runs them
//! (everything that queues meanwhile shares a transaction).

use std::io::Write as _;
use std::time::Duration;

use e2e::api::OrderRequest;
use e2e::system::{System, SystemOptions};
use futures::future::try_join_all;

const ORDERS: usize = 200;
const ON_HAND: i64 = 50;

#[tokio::test]
async fn two_hundred_orders_for_fifty_units_complete_exactly_fifty() -> anyhow::Result<()> {
    race_for_the_last_units(SystemOptions::default(), "last_units").await
}

#[tokio::test]
async fn with_one_transaction_at_a_time_per_consumer_exactly_fifty_complete_too()
-> anyhow::Result<()> {
    race_for_the_last_units(
        SystemOptions::default().with_consumer_slots_as_compose(),
        "last_units_one_slot",
    )
    .await
}

async fn race_for_the_last_units(options: SystemOptions, label: &str) -> anyhow::Result<()> {
    let system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("RACE-MUG", "Mug", 300, ON_HAND)
        .await?;
    let requests: Vec<OrderRequest> = (0..ORDERS)
        .map(|customer| {
            OrderRequest::new("RACE-MUG", 1).with_customer(
                &format!("c-{customer}"),
                &format!("c{customer}@example.com"),
            )
        })
        .collect();

    let responses = try_join_all(
        requests
            .iter()
            .map(|request| system.place_order(request, None)),
    )
    .await?;
    let mut order_ids = Vec::new();
    for response in &responses {
        assert_eq!(response.status, 202, "{}", response.text);
        order_ids.push(response.order_id()?);
    }
    let orders = system
        .wait_all_terminal(&order_ids, Duration::from_secs(180))
        .await?;

    let completed = orders
        .iter()
        .filter(|order| order.status == "completed")
        .count();
    let rejected: Vec<_> = orders
        .iter()
        .filter(|order| order.status == "rejected")
        .collect();
    assert_eq!(completed, 50);
    assert_eq!(rejected.len(), ORDERS - 50);
    assert!(
        rejected
            .iter()
            .all(|order| order.reason.as_deref() == Some("out_of_stock")),
        "every rejection is out_of_stock"
    );
    system.check_invariants().await?;
    let product = system.product("RACE-MUG").await?;
    assert_eq!(
        (product.on_hand, product.reserved, product.available),
        (0, 0, 0)
    );
    // Stuck orders or violations fail the assertions above; reaching here means none.
    // Straight to stdout, past the test harness's capture, so that every run shows it.
    writeln!(
        std::io::stdout(),
        "{label}: {ORDERS} orders, 0 faults, 0 stuck, 0 violations (I1..I6)"
    )?;
    system.shutdown().await
}
