//! Read models are rebuilt from the streams: `order-service rebuild-catalogue` replays every
//! `inventory.product_updated` from the start of `INVENTORY` into a fresh table and switches
//! it in, while the service runs and products keep changing; `notification-service
//! rebuild-contacts` does the same for the contacts from `order.placed`.

use std::process::Stdio;

use anyhow::{Context as _, ensure};
use e2e::api::OrderRequest;
use e2e::databases::database_url;
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{Service, System, SystemOptions, service_binary_directory};
use sqlx::Connection as _;

/// Runs a service binary's rebuild command against the system's database and NATS.
pub(crate) async fn rebuild(
    system: &System,
    service: Service,
    command: &str,
) -> anyhow::Result<String> {
    let binary = service_binary_directory()?.join(service.binary_name());
    let output = tokio::process::Command::new(&binary)
        .arg(command)
        .envs(system.database_environment(service)?)
        .envs(system.nats_environment(service.name()))
        .env("LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("failed to run {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{command} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

#[tokio::test]
async fn the_catalogue_is_rebuilt_from_the_stream_while_products_keep_changing()
-> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    for (sku, price) in [("REPLAY-A", 100), ("REPLAY-B", 200), ("REPLAY-A", 150)] {
        system.put_product(sku, "Replayed", price, 50).await?;
    }
    system.wait_catalogue("REPLAY-A", 150).await?;
    system.wait_catalogue("REPLAY-B", 200).await?;

    // The read model is lost or corrupted: a row gone, a price wrong.
    let mut db =
        sqlx::PgConnection::connect(&database_url(system.database_name(Service::Order))).await?;
    sqlx::query("DELETE FROM catalogue WHERE sku = 'REPLAY-B'")
        .execute(&mut db)
        .await?;
    sqlx::query("UPDATE catalogue SET price_cents = 1 WHERE sku = 'REPLAY-A'")
        .execute(&mut db)
        .await?;

    // Rebuild while inventory keeps publishing updates of other products.
    let updates = async {
        for price in 1..=20 {
            system
                .put_product("REPLAY-C", "Changing", price * 10, 50)
                .await?;
        }
        anyhow::Ok(())
    };
    let (rebuilt, updated) = tokio::join!(
        rebuild(&system, Service::Order, "rebuild-catalogue"),
        updates
    );
    let printed = rebuilt?;
    updated?;
    ensure!(
        printed.contains("catalogue rebuilt from"),
        "printed: {printed}"
    );

    system.wait_catalogue("REPLAY-A", 150).await?;
    system.wait_catalogue("REPLAY-B", 200).await?;
    // No update made during the rebuild is lost: the last one wins in the new table.
    system.wait_catalogue("REPLAY-C", 200).await?;

    // The service goes on with the rebuilt table: an order is priced from it.
    let order_id = system
        .place_accepted_order(&OrderRequest::new("REPLAY-B", 2))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(
        order.status == "completed" && order.total_cents == 400,
        "the order after the rebuild ended {} at {} cents",
        order.outcome(),
        order.total_cents
    );
    let leftover: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'rebuild'")
            .fetch_optional(&mut db)
            .await?;
    ensure!(leftover.is_none(), "the rebuild schema was left behind");
    db.close().await?;
    system.shutdown().await
}

#[tokio::test]
async fn the_contacts_are_rebuilt_from_the_stream_and_notifications_go_on() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("REPLAY-MUG", "Mug", 500, 50)
        .await?;
    let mut placed = Vec::new();
    for index in 0..3 {
        let email = format!("replay-{index}@example.com");
        let request =
            OrderRequest::new("REPLAY-MUG", 1).with_customer(&format!("c-{index}"), &email);
        let order_id = system.place_accepted_order(&request).await?;
        system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
        placed.push((order_id, email));
    }
    system
        .wait_notifications(
            placed[2].0,
            &["placed", "shipment_scheduled", "completed"],
            SAGA_TIMEOUT,
        )
        .await?;

    // The read model is corrupted: every e-mail address wrong.
    let mut db =
        sqlx::PgConnection::connect(&database_url(system.database_name(Service::Notification)))
            .await?;
    sqlx::query("UPDATE contacts SET email = 'wrong@example.com'")
        .execute(&mut db)
        .await?;

    let printed = rebuild(&system, Service::Notification, "rebuild-contacts").await?;
    ensure!(
        printed.contains("contacts rebuilt from"),
        "printed: {printed}"
    );
    for (order_id, email) in &placed {
        let stored: String = sqlx::query_scalar("SELECT email FROM contacts WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&mut db)
            .await?;
        ensure!(
            stored == *email,
            "order {order_id}: contact {stored}, expected {email}"
        );
    }

    // Notifications go on against the new table, its foreign key back in place.
    let request = OrderRequest::new("REPLAY-MUG", 1).with_customer("c-after", "after@example.com");
    let order_id = system.place_accepted_order(&request).await?;
    system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    system
        .wait_notifications(
            order_id,
            &["placed", "shipment_scheduled", "completed"],
            SAGA_TIMEOUT,
        )
        .await?;
    let foreign_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'notifications_order_id_fkey'",
    )
    .fetch_one(&mut db)
    .await?;
    ensure!(foreign_keys == 1, "the notifications' foreign key is gone");
    db.close().await?;
    system.shutdown().await
}
