//! The service's own Postgres database: created if missing, migrated at startup (the shared
//! messaging tables, then the service's own), and the rules for which errors are worth a retry.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use thiserror::Error;

/// The outbox and inbox tables, shared by every service.
static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Error)]
pub enum DatabaseError {
    #[error("failed to create database {url}")]
    Create {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database if needed, connects a pool and applies all migrations.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    service_migrations: &Migrator,
) -> Result<PgPool, DatabaseError> {
    create_if_missing(url).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|source| DatabaseError::Connect {
            url: redact(url),
            source,
        })?;
    // The shared tables keep their own history table so their versions never collide with
    // a service's.
    let mut messaging = Migrator::with_migrations(MESSAGING_MIGRATIONS.iter().cloned().collect());
    messaging.dangerous_set_table_name("_messaging_migrations");
    messaging.run(&pool).await?;
    service_migrations.run(&pool).await?;
    Ok(pool)
}

async fn create_if_missing(url: &str) -> Result<(), DatabaseError> {
    let create_error = |source| DatabaseError::Create {
        url: redact(url),
        source,
    };
    if Postgres::database_exists(url).await.map_err(create_error)? {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // Another replica created it between our check and our CREATE.
        Err(error) if is_duplicate_database(&error) => Ok(()),
        Err(error) => Err(create_error(error)),
    }
}

fn is_duplicate_database(error: &sqlx::Error) -> bool {
    matches!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42P04" | "23505")
    )
}

/// A CLIENT span around one database transaction, named for what it does (`apply event`), so
/// database work shows in the saga's trace. Statement text is left out: it carries no
/// business meaning here and could carry customer data.
pub fn transaction_span(pool: &PgPool, summary: &'static str) -> tracing::Span {
    tracing::info_span!(
        "transaction",
        otel.name = %format_args!("postgresql {summary}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.namespace = pool.connect_options().get_database().unwrap_or_default(),
        db.operation.name = "transaction",
        db.query.summary = summary,
    )
}

/// True for errors where running the whole transaction again may succeed: serialization
/// failures, deadlocks, an administrator shutdown, a lost connection or an exhausted pool.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006")
        ),
        _ => false,
    }
}

/// The URL without its password, fit for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/order"),
            "postgres://app:***@db:5432/order"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/order"),
            "postgres://postgres@127.0.0.1/order"
        );
    }

    #[test]
    fn pool_exhaustion_is_worth_a_retry_but_a_bad_query_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
