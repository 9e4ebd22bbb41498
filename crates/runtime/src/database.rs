//! The service's own Postgres database: created if missing and migrated at startup (the
//! shared messaging tables, then the service's own) as the owner role, then a pool for the
//! service's run-time role with its timeouts; and the rules for which errors are worth a retry.
//!
//! Two roles, two URLs (README, "Postgres roles"): the migrations run on one short-lived
//! connection of the owner role (`DATABASE_MIGRATION_URL`), which owns the schema; the pool
//! the service runs on connects as a role that may only read and write rows
//! (`DATABASE_URL`). Locally both are the same superuser URL.

use std::str::FromStr;
use std::time::Duration;

use backon::Retryable;
use futures::TryStreamExt;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres};
use thiserror::Error;

/// The outbox and inbox tables, shared by every service.
static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The history table of [`MESSAGING_MIGRATIONS`], apart from the service's `_sqlx_migrations`.
const MESSAGING_HISTORY_TABLE: &str = "_messaging_migrations";

/// `DB_STATEMENT_TIMEOUT` unless set: JetStream's default ack wait. A statement still running
/// (or still waiting for a lock) after that is work JetStream has already handed out again.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `DB_IDLE_IN_TRANSACTION_TIMEOUT` unless set. A transaction waits on something other than
/// Postgres in two places: the payment service holds its transaction (and the payment's row
/// lock) across the call to the payment gateway (by default at most 3 attempts of 2 s plus
/// backoff, under 7 s; the payment service refuses to start with a timeout shorter than its
/// longest call), and the outbox relay holds its claim while it awaits the publish acks (5 s
/// at most). A minute is well above both, yet releases the locks of a process that hangs.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a caller waits for a pooled connection before the pool gives up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum DatabaseError {
    #[error("{url} is not a valid Postgres URL")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "DATABASE_MIGRATION_URL names the database {migrated:?} but DATABASE_URL names \
         {used:?}: both must name the service's one database"
    )]
    DifferentDatabases { migrated: String, used: String },
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
    #[error(
        "failed to migrate the database as {url} (DATABASE_MIGRATION_URL, else DATABASE_URL: \
         it must be the role that owns the database)"
    )]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("failed to check what the role of {url} may do")]
    CheckPrivileges {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the role {role} may not read and write {relations}: the owner role must grant it \
         SELECT, INSERT, UPDATE, DELETE on tables and USAGE on sequences \
         (deploy/postgres/provision.sql sets that up for every table the owner creates)"
    )]
    MissingPrivileges { role: String, relations: String },
}

impl DatabaseError {
    /// True when the same step may succeed later: Postgres unreachable, starting up, shutting
    /// down or out of connection slots ([`is_transient`]). A wrong URL, password, privilege
    /// or TLS setup is not. A migration cut off halfway is safe to run again: sqlx applies
    /// each migration and its history row in one transaction (none of ours opts out with
    /// `-- no-transaction`).
    pub fn is_transient(&self) -> bool {
        use sqlx::migrate::MigrateError;
        let source = match self {
            DatabaseError::Create { source, .. }
            | DatabaseError::Connect { source, .. }
            | DatabaseError::CheckPrivileges { source, .. }
            | DatabaseError::Migrate {
                source: MigrateError::Execute(source) | MigrateError::ExecuteMigration(source, _),
                ..
            } => source,
            _ => return false,
        };
        // A refused TLS handshake or certificate is the configuration, not the moment.
        !matches!(source, sqlx::Error::Tls(_)) && is_transient(source)
    }
}

/// An error and its causes on one line, for a log. A cause its error already prints (as
/// sqlx's I/O errors do) is not repeated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
    text
}

/// A Postgres URL as configured, which may carry a password: `Debug` shows it [`redact`]ed,
/// so printing the settings never prints a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, password included, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact(&self.0))
    }
}

/// Where the service's database is and how its connections behave. `Debug` redacts the
/// passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// The run-time role's URL (`DATABASE_URL`): the pool connects with it.
    pub url: String,
    /// The owner role's URL (`DATABASE_MIGRATION_URL`): creates the database when it is
    /// missing (if the role may) and runs the migrations.
    pub migration_url: String,
    pub max_connections: u32,
    /// `statement_timeout` of every pooled connection.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every pooled connection.
    pub idle_in_transaction_timeout: Duration,
}

impl std::fmt::Debug for DatabaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseOptions")
            .field("url", &redact(&self.url))
            .field("migration_url", &redact(&self.migration_url))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .finish()
    }
}

impl DatabaseOptions {
    /// One URL for both roles and the default timeouts, as for a local superuser.
    pub fn new(url: &str, max_connections: u32) -> DatabaseOptions {
        DatabaseOptions {
            url: url.to_owned(),
            migration_url: url.to_owned(),
            max_connections,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        }
    }

    /// The options every pooled connection starts with: `url`'s, plus the timeouts (in
    /// milliseconds, the unit both settings take without one).
    fn connect_options(&self, url: &str) -> Result<PgConnectOptions, DatabaseError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| DatabaseError::Url {
            url: redact(url),
            source,
        })?;
        Ok(options.options([
            ("statement_timeout", self.statement_timeout.as_millis()),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout.as_millis(),
            ),
        ]))
    }
}

/// Creates the database if needed and applies all migrations as the owner role, then connects
/// the run-time role's pool and checks that it may read and write every table. While
/// Postgres cannot take the service yet ([`DatabaseError::is_transient`]), it tries again,
/// pausing [`crate::service::STARTUP_PATIENCE`] in all; every step is safe to repeat.
pub async fn connect_and_migrate(
    options: &DatabaseOptions,
    service_migrations: &Migrator,
) -> Result<PgPool, DatabaseError> {
    (|| prepare(options, service_migrations))
        .retry(crate::service::startup_backoff())
        .when(DatabaseError::is_transient)
        .notify(|error, delay| {
            tracing::warn!(error = %with_causes(error), ?delay, "the database cannot take us yet; retrying");
        })
        .await
}

async fn prepare(
    options: &DatabaseOptions,
    service_migrations: &Migrator,
) -> Result<PgPool, DatabaseError> {
    let used = options.connect_options(&options.url)?;
    let migrated = options.connect_options(&options.migration_url)?;
    if used.get_database() != migrated.get_database() {
        return Err(DatabaseError::DifferentDatabases {
            migrated: migrated.get_database().unwrap_or_default().to_owned(),
            used: used.get_database().unwrap_or_default().to_owned(),
        });
    }
    create_if_missing(&options.migration_url).await?;
    migrate(&options.migration_url, service_migrations).await?;
    let pool = connect_pool(options, used, &options.url).await?;
    check_privileges(&pool, &options.url).await?;
    warn_without_autovacuum(&pool).await;
    Ok(pool)
}

/// Says so when the server runs without autovacuum. The outbox and the inbox delete rows all
/// the time: without vacuum their dead rows stay, and without its `ANALYZE` Postgres keeps
/// the plans it made when the tables were nearly empty, sequential scans that grow with every
/// row (measured by saga-bench: 1.28 cores of Postgres at 60 sagas/s where 0.53 do).
async fn warn_without_autovacuum(pool: &PgPool) {
    match sqlx::query_scalar::<_, String>("SELECT current_setting('autovacuum')")
        .fetch_one(pool)
        .await
    {
        Ok(setting) if setting == "off" => tracing::warn!(
            "Postgres runs with autovacuum = off: vacuum and analyze this database regularly, \
             or its tables bloat and its queries slow down as they grow"
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "could not read the autovacuum setting"),
    }
}

/// A pool of the owner role with the run-time timeouts, for what changes the schema while the
/// service runs (a rebuild command switching in a new table).
pub async fn connect_as_owner(options: &DatabaseOptions) -> Result<PgPool, DatabaseError> {
    let owner = options.connect_options(&options.migration_url)?;
    connect_pool(options, owner, &options.migration_url).await
}

async fn connect_pool(
    options: &DatabaseOptions,
    connect_options: PgConnectOptions,
    url: &str,
) -> Result<PgPool, DatabaseError> {
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect_options)
        .await
        .map_err(|source| DatabaseError::Connect {
            url: redact(url),
            source,
        })
}

/// The shared migrations, then the service's, on one connection that is closed afterwards:
/// the owner role's credentials are used for nothing else.
async fn migrate(url: &str, service_migrations: &Migrator) -> Result<(), DatabaseError> {
    let mut connection =
        PgConnection::connect(url)
            .await
            .map_err(|source| DatabaseError::Connect {
                url: redact(url),
                source,
            })?;
    // The shared tables keep their own history table so their versions never collide with
    // a service's.
    let mut messaging = Migrator::with_migrations(MESSAGING_MIGRATIONS.iter().cloned().collect());
    messaging.dangerous_set_table_name(MESSAGING_HISTORY_TABLE);
    let migrate_error = |source| DatabaseError::Migrate {
        url: redact(url),
        source,
    };
    messaging
        .run(&mut connection)
        .await
        .map_err(migrate_error)?;
    service_migrations
        .run(&mut connection)
        .await
        .map_err(migrate_error)?;
    // Closing politely is a courtesy; a failure here changes nothing that was migrated.
    let _ = connection.close().await;
    Ok(())
}

/// Fails, naming them, when the pool's role may not read and write some table or use some
/// sequence of the schema: better at startup than at the first event that touches it. The
/// migration history tables are the owner's business and left out.
async fn check_privileges(pool: &PgPool, url: &str) -> Result<(), DatabaseError> {
    let relations: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class \
         WHERE relnamespace = 'public'::regnamespace \
           AND relname NOT IN ('_sqlx_migrations', $1) \
           AND ((relkind IN ('r', 'p') \
                 AND NOT (has_table_privilege(oid, 'SELECT') \
                      AND has_table_privilege(oid, 'INSERT') \
                      AND has_table_privilege(oid, 'UPDATE') \
                      AND has_table_privilege(oid, 'DELETE'))) \
                OR (relkind = 'S' AND NOT has_sequence_privilege(oid, 'USAGE'))) \
         ORDER BY relname",
    )
    .bind(MESSAGING_HISTORY_TABLE)
    .fetch_all(pool)
    .await
    .map_err(|source| DatabaseError::CheckPrivileges {
        url: redact(url),
        source,
    })?;
    if relations.is_empty() {
        return Ok(());
    }
    Err(DatabaseError::MissingPrivileges {
        role: pool.connect_options().get_username().to_owned(),
        relations: relations.join(", "),
    })
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
/// failures, deadlocks, an administrator shutdown, a server still starting or out of
/// connection slots, a lost connection or an exhausted pool.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some(
                "40001"
                    | "40P01"
                    | "53300"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "08000"
                    | "08003"
                    | "08006"
            )
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

/// A transaction begun and ended with raw SQL, so that `BEGIN` rides with its first
/// statements and `COMMIT` may ride with its last: a round trip or two fewer than sqlx's
/// `Transaction`, which sends each alone. Under load, round trips are what a transaction
/// waits for, and every saga step is one.
///
/// sqlx does not know this connection is in a transaction. So one dropped before
/// [`commit`](RawTransaction::commit) or [`rollback`](RawTransaction::rollback) (a panic, a
/// cancelled future) is closed instead of going back to the pool, and the server rolls its
/// transaction back.
pub struct RawTransaction {
    connection: PoolConnection<Postgres>,
    open: bool,
}

impl RawTransaction {
    /// Acquires a connection and sends `BEGIN` with `first` (statements without parameters)
    /// in one simple query; returns each statement's result.
    pub async fn begin(
        pool: &PgPool,
        first: &str,
    ) -> Result<(RawTransaction, Vec<PgQueryResult>), sqlx::Error> {
        let mut tx = RawTransaction::acquire(pool).await?;
        let results = sqlx::raw_sql(begin_with(first))
            .execute_many(&mut *tx.connection)
            .try_collect()
            .await?;
        Ok((tx, results))
    }

    /// As [`begin`](RawTransaction::begin), returning the rows `first` reads instead.
    pub async fn begin_fetching(
        pool: &PgPool,
        first: &str,
    ) -> Result<(RawTransaction, Vec<PgRow>), sqlx::Error> {
        let mut tx = RawTransaction::acquire(pool).await?;
        let rows = sqlx::raw_sql(begin_with(first))
            .fetch_all(&mut *tx.connection)
            .await?;
        Ok((tx, rows))
    }

    /// A connection that counts as in a transaction from now on: dropped, it is closed.
    async fn acquire(pool: &PgPool) -> Result<RawTransaction, sqlx::Error> {
        Ok(RawTransaction {
            connection: pool.acquire().await?,
            open: true,
        })
    }

    /// Sends `last` (statements without parameters, possibly none) with `COMMIT` in one
    /// simple query. An error leaves the outcome unknown, as any failed commit does.
    pub async fn commit(mut self, last: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(format!("{last}COMMIT")))
            .execute(&mut *self.connection)
            .await?;
        self.open = false;
        Ok(())
    }

    /// Rolls back, and the connection goes back to the pool.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *self.connection)
            .await?;
        self.open = false;
        Ok(())
    }
}

fn begin_with(first: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("BEGIN; {first}"))
}

impl std::ops::Deref for RawTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for RawTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.connection
    }
}

impl Drop for RawTransaction {
    fn drop(&mut self) {
        if self.open {
            self.connection.close_on_drop();
        }
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
    fn printed_options_show_no_password() {
        let options = DatabaseOptions {
            migration_url: "postgres://order_owner:owner-secret@db/order".to_owned(),
            ..DatabaseOptions::new("postgres://order_app:app-secret@db/order", 4)
        };
        let printed = format!("{options:?} {:?}", DatabaseUrl::from(options.url.clone()));
        assert!(!printed.contains("secret"), "{printed}");
        assert!(
            printed.contains("postgres://order_owner:***@db/order"),
            "{printed}"
        );
    }

    #[test]
    fn the_pool_sets_both_timeouts_in_milliseconds() {
        let options = DatabaseOptions {
            statement_timeout: Duration::from_millis(1500),
            ..DatabaseOptions::new("postgres://order_app@db/order", 4)
        };
        let connect = options.connect_options(&options.url).expect("a valid URL");
        assert_eq!(
            connect.get_options(),
            Some("-c statement_timeout=1500 -c idle_in_transaction_session_timeout=60000")
        );
    }

    #[test]
    fn pool_exhaustion_is_worth_a_retry_but_a_bad_query_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn startup_waits_for_an_unreachable_server_but_not_for_a_wrong_setting() {
        let refused = || sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        let url = "postgres://127.0.0.1:1/x".to_owned();
        assert!(
            DatabaseError::Connect {
                url: url.clone(),
                source: refused(),
            }
            .is_transient()
        );
        assert!(
            DatabaseError::Migrate {
                url: url.clone(),
                source: sqlx::migrate::MigrateError::Execute(refused()),
            }
            .is_transient()
        );
        assert!(
            DatabaseError::Migrate {
                url: url.clone(),
                source: sqlx::migrate::MigrateError::ExecuteMigration(refused(), 3),
            }
            .is_transient()
        );
        assert!(
            !DatabaseError::Migrate {
                url: url.clone(),
                source: sqlx::migrate::MigrateError::VersionMismatch(1),
            }
            .is_transient()
        );
        assert!(
            !DatabaseError::Connect {
                url: url.clone(),
                source: sqlx::Error::Tls("server does not support TLS".into()),
            }
            .is_transient()
        );
        assert!(
            !DatabaseError::MissingPrivileges {
                role: "app".into(),
                relations: "orders".into(),
            }
            .is_transient()
        );
        let error = DatabaseError::Connect {
            url,
            source: refused(),
        };
        assert_eq!(
            with_causes(&error),
            "failed to connect to postgres://127.0.0.1:1/x: error communicating with database: \
             connection refused"
        );
    }
}
