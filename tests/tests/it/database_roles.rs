//! Each service runs as a Postgres role of its own (`deploy/postgres/provision.sql`, which the
//! harness runs for every test system, so the whole suite runs this way): the role reaches its
//! own database only, reads and writes its rows, and cannot change its schema, which is the
//! owner role's (migrations); the pool it runs on ends long statements and idle transactions.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use e2e::databases::{self, ServiceDatabase};
use e2e::polling::{Check, wait_for};
use e2e::system::{Service, System, SystemOptions};
use runtime::database::{DatabaseError, DatabaseOptions, connect_and_migrate};
use sqlx::migrate::Migrator;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// The SQLSTATE of a database error, if it is one.
fn code(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned())
}

/// `insufficient_privilege`: permission denied, or must be the owner.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[tokio::test]
async fn a_services_role_reads_and_writes_its_own_rows_and_changes_nothing_else()
-> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    let app_url = system.app_database_url(Service::Order)?;
    let mut app = PgConnection::connect(&app_url).await?;

    // Its rows: read and write them (a serial id and the outbox's trigger included), undone.
    let mut tx = app.begin().await?;
    sqlx::query("SELECT count(*) FROM orders")
        .execute(&mut *tx)
        .await?;
    for statement in [
        "INSERT INTO inbox (consumer, event_id) VALUES ('database-roles', gen_random_uuid())",
        "UPDATE inbox SET processed_at = now() WHERE consumer = 'database-roles'",
        "DELETE FROM inbox WHERE consumer = 'database-roles'",
        "INSERT INTO outbox (event_id, subject, payload) \
         VALUES (gen_random_uuid(), 'database-roles.test', '')",
    ] {
        sqlx::raw_sql(statement)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("the service's role may not: {statement}"))?;
    }
    tx.rollback().await?;

    // Its schema: the owner's.
    for statement in [
        "CREATE TABLE intruder (id int)",
        "CREATE SCHEMA intruder",
        "CREATE TEMPORARY TABLE intruder (id int)",
        "ALTER TABLE orders ADD COLUMN intruder int",
        "CREATE INDEX intruder ON inbox (consumer)",
        "DROP TABLE inbox",
        "TRUNCATE inbox",
    ] {
        let error = sqlx::raw_sql(statement)
            .execute(&mut app)
            .await
            .err()
            .with_context(|| format!("the service's role could: {statement}"))?;
        ensure!(
            code(&error).as_deref() == Some(INSUFFICIENT_PRIVILEGE),
            "{statement} failed otherwise than for want of privilege: {error}"
        );
    }
    app.close().await?;

    // Another service's database: not even a connection, for either of its roles.
    for role_url in [&app_url, &system.owner_database_url(Service::Order)?] {
        for other in [
            Service::Inventory,
            Service::Payment,
            Service::Fulfillment,
            Service::Notification,
        ] {
            let mut url = reqwest::Url::parse(role_url)?;
            url.set_path(system.database_name(other));
            let error = PgConnection::connect(url.as_str())
                .await
                .err()
                .with_context(|| format!("{role_url} reached {other}'s database"))?;
            ensure!(
                code(&error).as_deref() == Some(INSUFFICIENT_PRIVILEGE),
                "connecting to {other}'s database failed otherwise: {error}"
            );
        }
    }

    // The owner role is the one that changes the schema (the service's migrations ran as it).
    let mut owner = PgConnection::connect(&system.owner_database_url(Service::Order)?).await?;
    let mut tx = owner.begin().await?;
    sqlx::raw_sql("CREATE TABLE allowed (id int)")
        .execute(&mut *tx)
        .await
        .context("the owner role may not create a table")?;
    tx.rollback().await?;
    owner.close().await?;

    system.shutdown().await
}

#[tokio::test]
async fn the_run_time_pool_ends_long_statements_and_idle_transactions() -> anyhow::Result<()> {
    let database = ScratchDatabase::provision("timeouts").await?;
    let defaults = database.options()?;
    let pool = connect_and_migrate(&defaults, &Migrator::DEFAULT).await?;
    ensure!(show(&pool, "statement_timeout").await? == "30s");
    ensure!(show(&pool, "idle_in_transaction_session_timeout").await? == "1min");
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await?;
    ensure!(role == database.service.app_role, "the pool runs as {role}");
    pool.close().await;

    let short = DatabaseOptions {
        statement_timeout: Duration::from_millis(200),
        idle_in_transaction_timeout: Duration::from_millis(500),
        ..defaults
    };
    let pool = connect_and_migrate(&short, &Migrator::DEFAULT).await?;
    ensure!(show(&pool, "statement_timeout").await? == "200ms");
    ensure!(show(&pool, "idle_in_transaction_session_timeout").await? == "500ms");

    let error = sqlx::query("SELECT pg_sleep(30)")
        .execute(&pool)
        .await
        .err()
        .context("a 30 s statement ran to its end")?;
    ensure!(
        code(&error).as_deref() == Some("57014"),
        "the statement failed otherwise than by its timeout: {error}"
    );

    // A transaction that waits for its next statement (a process that hangs holding locks)
    // is ended by Postgres: its backend goes away, and the next statement fails.
    let mut tx = pool.begin().await?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await?;
    let superuser = PgPool::connect(&databases::database_url(&database.service.name)).await?;
    wait_for(
        "Postgres to end the idle transaction",
        Duration::from_secs(10),
        || async {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)")
                    .bind(backend)
                    .fetch_one(&superuser)
                    .await?;
            Ok(if alive {
                Check::NotYet(format!("backend {backend} still there"))
            } else {
                Check::Done(())
            })
        },
    )
    .await?;
    ensure!(
        sqlx::query("SELECT 1").execute(&mut *tx).await.is_err(),
        "the transaction went on after its session was ended"
    );
    drop(tx);
    pool.close().await;
    superuser.close().await;
    Ok(())
}

#[tokio::test]
async fn a_service_whose_role_may_not_write_every_table_refuses_to_start() -> anyhow::Result<()> {
    let database = ScratchDatabase::provision("ungranted").await?;
    // As if the provisioning had left out the default privileges: what the owner creates
    // stays the owner's alone.
    let mut superuser =
        PgConnection::connect(&databases::database_url(&database.service.name)).await?;
    for objects in ["TABLES", "SEQUENCES"] {
        let statement = format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"{}\" REVOKE ALL ON {objects} FROM \"{}\"",
            database.service.owner_role, database.service.app_role
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut superuser)
            .await?;
    }
    superuser.close().await?;

    let error = connect_and_migrate(&database.options()?, &Migrator::DEFAULT)
        .await
        .err()
        .context("the service started without privileges on its tables")?;
    match &error {
        DatabaseError::MissingPrivileges { role, relations } => {
            ensure!(role == &database.service.app_role, "{error}");
            ensure!(relations == "inbox, outbox, outbox_id_seq", "{error}");
        }
        _ => anyhow::bail!("failed otherwise: {error:#}"),
    }
    Ok(())
}

async fn show(pool: &PgPool, setting: &str) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT current_setting($1)")
        .bind(setting)
        .fetch_one(pool)
        .await?)
}

/// A database and its roles made by the provisioning script, as a test system's are, without
/// a system; dropped when the test ends, pass or fail.
struct ScratchDatabase {
    service: ServiceDatabase,
}

impl ScratchDatabase {
    async fn provision(purpose: &str) -> anyhow::Result<ScratchDatabase> {
        let random = Uuid::now_v7().simple().to_string();
        let service = ServiceDatabase::new(&format!("e2e_{}_{purpose}", &random[24..]));
        let database = ScratchDatabase { service };
        databases::provision(
            &databases::server_url(),
            std::slice::from_ref(&database.service),
        )
        .await?;
        Ok(database)
    }

    /// The options a service would run with: the app role's URL for the pool, the owner's for
    /// the migrations, default timeouts.
    fn options(&self) -> anyhow::Result<DatabaseOptions> {
        let server = databases::server_url();
        Ok(DatabaseOptions {
            migration_url: self.service.owner_url(&server)?,
            ..DatabaseOptions::new(&self.service.app_url(&server)?, 2)
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Err(error) = databases::drop_service_databases_blocking(
            databases::server_url(),
            vec![self.service.clone()],
        ) {
            eprintln!("could not drop {}: {error:#}", self.service.name);
        }
    }
}
