//! A service started before its broker waits for it instead of exiting
//! (`retry_on_initial_connect`, and stream creation retried): it becomes ready once NATS is
//! up, without a restart.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::databases;
use e2e::nats_server::{NatsServer, NatsUsers};
use e2e::polling::{Check, wait_for};
use e2e::ports::free_port;
use e2e::system::service_binary_directory;
use uuid::Uuid;

#[tokio::test]
async fn a_service_started_before_nats_becomes_ready_when_nats_comes_up() -> anyhow::Result<()> {
    let users = NatsUsers::generate();
    let mut nats = NatsServer::start_with_users(users.clone()).await?;
    nats.stop();

    let database = format!("e2e_{}_startup", Uuid::now_v7().simple());
    let http_port = free_port()?;
    let mut service = Command::new(service_binary_directory()?.join("inventory-service"))
        .env("NATS_URL", nats.url())
        .envs(users.client_environment("inventory"))
        .env("DATABASE_URL", databases::database_url(&database))
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("DB_MAX_CONNECTIONS", "2")
        .env("INSECURE_DEV_AUTH", "1")
        .env("LOG_FORMAT", "pretty")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    // The service is up and waiting (its database is already created and migrated).
    let ready_url = format!("http://127.0.0.1:{http_port}/readyz");
    wait_for(
        "the service to create its database",
        Duration::from_secs(30),
        || async {
            let mut connection: sqlx::PgConnection =
                <sqlx::PgConnection as sqlx::Connection>::connect(&databases::database_url(
                    "postgres",
                ))
                .await?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&database)
                    .fetch_one(&mut connection)
                    .await?;
            Ok(if exists {
                Check::Done(())
            } else {
                Check::NotYet("no database yet".into())
            })
        },
    )
    .await?;
    assert!(
        service.try_wait()?.is_none(),
        "the service must wait for NATS, not exit"
    );

    nats.restart().await?;
    let outcome = wait_for(
        "the service to become ready",
        Duration::from_secs(60),
        || async {
            let status = reqwest::get(&ready_url).await?.status();
            Ok(if status.is_success() {
                Check::Done(())
            } else {
                Check::NotYet(format!("readyz {status}"))
            })
        },
    )
    .await;

    let _ = service.kill();
    let _ = service.wait();
    databases::drop_databases(std::slice::from_ref(&database)).await?;
    outcome
}
