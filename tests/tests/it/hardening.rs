//! The plumbing survives what production does to it: a durable consumer deleted under a
//! running service is recreated, and database connections cut mid-burst (an administrator's
//! `pg_terminate_backend`, a failover) are retried without losing or doubling anything.

use e2e::api::OrderRequest;
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{Service, System, SystemOptions};
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn a_deleted_consumer_is_recreated_and_the_saga_goes_on() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("GONE-MUG", "Mug", 400, 10)
        .await?;
    let jetstream = system.jetstream().await?;
    for (stream, consumer) in [
        ("INVENTORY", "payment-inventory"),
        ("ORDER", "inventory-order"),
    ] {
        jetstream
            .get_stream(stream)
            .await?
            .delete_consumer(consumer)
            .await?;
    }
    let order_id = system
        .place_accepted_order(&OrderRequest::new("GONE-MUG", 1))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn cut_database_connections_are_retried_without_loss_or_duplicates() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("CUT-MUG", "Mug", 250, 100)
        .await?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres", e2e::databases::server_url()))
        .await?;

    let mut orders = Vec::new();
    for round in 0..6 {
        for _ in 0..5 {
            let order = if round % 2 == 0 {
                OrderRequest::new("CUT-MUG", 1)
            } else {
                OrderRequest::new("CUT-MUG", 1).with_payment_method("tok_decline")
            };
            orders.push(system.place_accepted_order(&order).await?);
        }
        // Cut every connection of every service, listener and pools alike.
        for service in Service::ALL {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(system.database_name(service))
            .execute(&admin)
            .await?;
        }
    }
    system.wait_all_terminal(&orders, SAGA_TIMEOUT).await?;
    system.check_invariants().await?;
    system.shutdown().await
}
