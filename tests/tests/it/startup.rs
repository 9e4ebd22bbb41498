//! A service started before its broker or its database waits for it instead of exiting
//! (`retry_on_initial_connect` and stream creation retried for NATS, the database's
//! preparation retried for Postgres): it becomes ready once the other comes up, without a
//! restart.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use e2e::databases;
use e2e::logs;
use e2e::nats_server::{NatsServer, NatsUsers};
use e2e::polling::{Check, wait_for};
use e2e::ports::free_port;
use e2e::postgres_server::PostgresServer;
use e2e::system::{service_binary_directory, service_command};
use uuid::Uuid;

#[tokio::test]
async fn a_service_started_before_nats_becomes_ready_when_nats_comes_up() -> anyhow::Result<()> {
    let users = NatsUsers::generate();
    let mut nats = NatsServer::start_with_users(users.clone()).await?;
    nats.stop();

    let database = format!("e2e_{}_startup", Uuid::now_v7().simple());
    let log = tempfile::NamedTempFile::new()?;
    let mut service = Inventory::spawn(
        &nats,
        &users,
        &databases::database_url(&database),
        log.path(),
    )?;

    // The service is up and waiting (its database is already created and migrated).
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
    service.assert_waiting("NATS")?;

    nats.restart().await?;
    let outcome = service.wait_ready().await;

    drop(service);
    databases::drop_databases(std::slice::from_ref(&database)).await?;
    outcome
}

#[tokio::test]
async fn a_service_started_before_postgres_becomes_ready_when_postgres_comes_up()
-> anyhow::Result<()> {
    let users = NatsUsers::generate();
    let nats = NatsServer::start_with_users(users.clone()).await?;
    let mut postgres = PostgresServer::start().await?;
    postgres.stop().await?;

    let log = tempfile::NamedTempFile::new()?;
    let mut service = Inventory::spawn(
        &nats,
        &users,
        &postgres.database_url("inventory"),
        log.path(),
    )?;
    // It says why it waits, and waits: a second refused try means it did not give up on
    // the first.
    wait_for(
        "the service to say twice that it waits for its database",
        Duration::from_secs(30),
        || async {
            let said = logs::since(log.path(), 0);
            Ok(
                if said
                    .matches("the database cannot take us yet; retrying")
                    .count()
                    >= 2
                {
                    Check::Done(())
                } else {
                    Check::NotYet(logs::tail(log.path(), 5))
                },
            )
        },
    )
    .await?;
    service.assert_waiting("Postgres")?;

    postgres.start_again().await?;
    service.wait_ready().await
}

/// An inventory service process, killed on drop.
struct Inventory {
    process: Child,
    http_port: u16,
    log: std::path::PathBuf,
}

impl Inventory {
    fn spawn(
        nats: &NatsServer,
        users: &NatsUsers,
        database_url: &str,
        log: &Path,
    ) -> anyhow::Result<Inventory> {
        let http_port = free_port()?;
        let (stdout, stderr) = logs::open_for_child(log, "starting inventory-service")?;
        let process = service_command(&service_binary_directory()?.join("inventory-service"))
            .env("NATS_URL", nats.url())
            .envs(users.client_environment("inventory"))
            .env("DATABASE_URL", database_url)
            .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("DB_MAX_CONNECTIONS", "2")
            .env("INSECURE_DEV_AUTH", "1")
            .env("LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        Ok(Inventory {
            process,
            http_port,
            log: log.to_path_buf(),
        })
    }

    /// Fails, with the end of the log, unless the process still runs.
    fn assert_waiting(&mut self, for_what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.process.try_wait()?.is_none(),
            "the service must wait for {for_what}, not exit; its log ends:\n{}",
            logs::tail(&self.log, logs::TAIL_LINES)
        );
        Ok(())
    }

    /// Polls `GET /readyz` for up to a minute; fails at once if the process exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let ready_url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_waiting("its dependency")?;
            let last_seen = match reqwest::get(&ready_url).await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!("readyz {}", response.status()),
                Err(error) => error.to_string(),
            };
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the service was not ready within a minute ({last_seen}); its log ends:\n{}",
                logs::tail(&self.log, logs::TAIL_LINES)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Inventory {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
