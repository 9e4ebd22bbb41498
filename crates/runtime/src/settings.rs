//! Configuration shared by every service, read from the environment (or flags) with a
//! working local default for each value.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use thiserror::Error;

use crate::auth::AuthSettings;
use crate::database::{DatabaseOptions, DatabaseUrl};
use crate::jetstream::{DUPLICATE_WINDOW, NatsAuth};

/// Who a service is: its name (used for its database, consumers and event source) and its
/// default HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub name: &'static str,
    pub default_http_port: u16,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings every service reads. Each has a flag and an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(about, version)]
pub struct Settings {
    /// NATS server URL (2.10 or newer, with JetStream enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Who the service is to NATS: its own user, allowed only what the service does.
    #[command(flatten)]
    pub nats_auth: NatsAuth,

    /// Postgres URL of this service's own database as the role the service runs as: its
    /// pool connects with it. The database is created if missing and migrated at startup,
    /// as DATABASE_MIGRATION_URL's role [default: postgres://postgres@127.0.0.1:5432/<service>].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,

    /// Postgres URL of the role that owns this service's database: it runs the migrations (on
    /// a connection of its own, closed afterwards) and creates the database if missing and
    /// allowed. DATABASE_URL's role then needs only to read and write rows (README, "Postgres
    /// roles") [default: DATABASE_URL].
    #[arg(long, env = "DATABASE_MIGRATION_URL")]
    pub database_migration_url: Option<DatabaseUrl>,

    /// `statement_timeout` of every pooled connection: a statement running (or waiting for a
    /// lock) longer is cancelled and its transaction retried later. At least 1ms.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_database_timeout)]
    pub db_statement_timeout: Duration,

    /// `idle_in_transaction_session_timeout` of every pooled connection: Postgres ends a
    /// session whose transaction waits this long for its next statement, releasing its locks.
    /// Transactions wait on the payment gateway (payment service) and on publish acks (outbox
    /// relay), so this must exceed both; the payment service checks. At least 1ms.
    #[arg(long, env = "DB_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_database_timeout)]
    pub db_idle_in_transaction_timeout: Duration,

    /// Address the HTTP API listens on [default: 127.0.0.1:<8080..8084 by service>].
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Largest number of database connections this process opens.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Transactions each consumer runs at once (each message of one key waits for the one
    /// before it).
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 8)]
    pub consumer_concurrency: usize,

    /// Most messages a consumer applies in one transaction. Messages that become ready while
    /// every transaction slot is busy share the next transaction (each in its own savepoint),
    /// so under load one commit — one WAL flush — serves many; an idle consumer applies each
    /// message alone, at once. 1 turns batching off.
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_batch: u16,

    /// Deliveries of one message before it is moved to the DLQ stream.
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = 8)]
    pub consumer_max_deliver: i64,

    /// How long JetStream waits for an ack before redelivering a message.
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub consumer_ack_wait: Duration,

    /// How often the outbox relay polls when no notification wakes it.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub outbox_poll_interval: Duration,

    /// Whether the consumers, the APIs and the deadline timer hand the events they commit
    /// straight to the relay, which publishes them at once, instead of leaving them to its
    /// next claim (after a notification from Postgres). Off: every event goes through a claim.
    #[arg(long, env = "OUTBOX_HANDOFF", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub outbox_handoff: bool,

    /// How long a consumer's inbox remembers an applied event, so as to drop another copy of
    /// it; older rows are deleted. Copies with the same id come from redeliveries of a message
    /// whose ack was lost (up to CONSUMER_MAX_DELIVER × CONSUMER_ACK_WAIT later) and from a
    /// relay that crashed between a publish ack and deleting the outbox row. JetStream drops
    /// the latter only within its duplicate window (10m); past it the inbox is what catches
    /// them, so a value below the window (or below the redeliveries) is refused. A copy older
    /// than this is no longer recognised by id, and changes nothing because every reaction
    /// is idempotent on the state.
    #[arg(long, env = "INBOX_RETENTION", default_value = "1h", value_parser = parse_inbox_retention)]
    pub inbox_retention: Duration,

    /// How often each replica deletes the inbox rows older than INBOX_RETENTION (10,000 rows
    /// per statement, so no statement holds locks for long).
    #[arg(long, env = "INBOX_PRUNE_INTERVAL", default_value = "1m", value_parser = parse_prune_interval)]
    pub inbox_prune_interval: Duration,

    /// Replicas of each stream this service creates (3 on a JetStream cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// How long a stopping service waits for in-flight work before it exits anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format: `json` for machines, `pretty` for people.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Fault injection for the crash tests: the process kills itself with SIGKILL right after
    /// committing the handling of the first event of this type, before acking it.
    #[arg(long, env = "FAULT_CRASH_AFTER_COMMIT", hide = true)]
    pub fault_crash_after_commit: Option<String>,

    /// Fault injection for the crash tests: the process kills itself with SIGKILL once the
    /// outbox relay has a publish ack for an event of this type, before deleting its row.
    #[arg(long, env = "FAULT_CRASH_AFTER_PUBLISH_ACK", hide = true)]
    pub fault_crash_after_publish_ack: Option<String>,

    /// Requests a second each client address may send to the API on average (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,

    /// Requests a client may send at once before the average rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// How callers authenticate.
    #[command(flatten)]
    pub auth: AuthSettings,
}

/// Settings that are each valid but wrong together.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error(
        "INBOX_RETENTION ({retention}) is shorter than the redeliveries of a message, \
         CONSUMER_MAX_DELIVER × CONSUMER_ACK_WAIT ({redeliveries}): the inbox must remember an \
         event for as long as a copy of it can be redelivered"
    )]
    InboxRetentionBelowRedeliveries {
        retention: humantime::FormattedDuration,
        redeliveries: humantime::FormattedDuration,
    },
}

impl Settings {
    /// Reads the settings from flags and the environment; exits with usage on bad input.
    pub fn from_env() -> Settings {
        Settings::parse()
    }

    /// Checks what parsing each setting alone cannot (a service calls it before connecting).
    pub fn validate(&self) -> Result<(), SettingsError> {
        let redeliveries = self.redelivery_span();
        if self.inbox_retention < redeliveries {
            return Err(SettingsError::InboxRetentionBelowRedeliveries {
                retention: humantime::format_duration(self.inbox_retention),
                redeliveries: humantime::format_duration(redeliveries),
            });
        }
        Ok(())
    }

    /// How long after applying a message a consumer can still be handed it again, if the ack
    /// is lost each time: the JetStream consumer allows `max_deliver + 1` deliveries (see
    /// `consumer.rs`), each after `ack_wait` without an ack, so `max_deliver` × `ack_wait`
    /// after the one that applied it.
    fn redelivery_span(&self) -> Duration {
        let deliveries = u32::try_from(self.consumer_max_deliver.max(0)).unwrap_or(u32::MAX);
        self.consumer_ack_wait.saturating_mul(deliveries)
    }

    /// This service's database URL, defaulting to a database named after the service.
    pub fn database_url(&self, identity: &Identity) -> String {
        self.database_url.as_ref().map_or_else(
            || format!("postgres://postgres@127.0.0.1:5432/{}", identity.name),
            |url| url.expose().to_owned(),
        )
    }

    /// The owner role's URL, which migrates: DATABASE_URL unless set.
    pub fn database_migration_url(&self, identity: &Identity) -> String {
        self.database_migration_url.as_ref().map_or_else(
            || self.database_url(identity),
            |url| url.expose().to_owned(),
        )
    }

    /// Everything [`crate::database::connect_and_migrate`] needs.
    pub fn database(&self, identity: &Identity) -> DatabaseOptions {
        DatabaseOptions {
            url: self.database_url(identity),
            migration_url: self.database_migration_url(identity),
            max_connections: self.db_max_connections,
            statement_timeout: self.db_statement_timeout,
            idle_in_transaction_timeout: self.db_idle_in_transaction_timeout,
        }
    }

    /// This service's HTTP address, defaulting to its port on loopback.
    pub fn http_addr(&self, identity: &Identity) -> SocketAddr {
        self.http_addr.unwrap_or(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            identity.default_http_port,
        )))
    }
}

/// `INBOX_RETENTION`: a duration, at least JetStream's duplicate window.
fn parse_inbox_retention(value: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if retention < DUPLICATE_WINDOW {
        return Err(format!(
            "{} is shorter than JetStream's duplicate window ({}): a copy of an event that \
             JetStream no longer drops must still find its inbox row",
            humantime::format_duration(retention),
            humantime::format_duration(DUPLICATE_WINDOW),
        ));
    }
    Ok(retention)
}

/// `DB_STATEMENT_TIMEOUT` and `DB_IDLE_IN_TRANSACTION_TIMEOUT`: Postgres takes whole
/// milliseconds up to `i32::MAX`, and 0 would turn the timeout off.
fn parse_database_timeout(value: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(1) {
        return Err("must be at least 1ms (0 would turn the timeout off)".to_owned());
    }
    let longest = Duration::from_millis(i32::MAX.unsigned_abs().into());
    if timeout > longest {
        return Err(format!(
            "must be at most {} (Postgres counts it in milliseconds in an int)",
            humantime::format_duration(longest)
        ));
    }
    Ok(timeout)
}

/// `INBOX_PRUNE_INTERVAL`: a duration more than zero.
fn parse_prune_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if interval.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: Identity = Identity {
        name: "order",
        default_http_port: 8080,
    };

    #[test]
    fn defaults_work_locally() {
        let settings = Settings::parse_from(["order-service"]);
        assert_eq!(
            settings.database_url(&IDENTITY),
            "postgres://postgres@127.0.0.1:5432/order"
        );
        assert_eq!(settings.http_addr(&IDENTITY).to_string(), "127.0.0.1:8080");
        assert_eq!(settings.consumer_ack_wait, Duration::from_secs(30));
    }

    #[test]
    fn the_inbox_is_kept_an_hour_and_pruned_every_minute_by_default() {
        let settings = Settings::parse_from(["x"]);
        assert_eq!(settings.inbox_retention, Duration::from_secs(60 * 60));
        assert_eq!(settings.inbox_prune_interval, Duration::from_secs(60));
        settings.validate().expect("the defaults are valid");
    }

    #[test]
    fn an_inbox_retention_below_the_duplicate_window_is_refused() {
        let error = Settings::try_parse_from(["x", "--inbox-retention", "9m 59s"])
            .expect_err("a retention below the duplicate window was accepted");
        let message = error.to_string();
        assert!(
            message.contains("shorter than JetStream's duplicate window (10m)"),
            "{message}"
        );
        let settings = Settings::try_parse_from(["x", "--inbox-retention", "10m"])
            .expect("the duplicate window itself is enough");
        assert_eq!(settings.inbox_retention, DUPLICATE_WINDOW);
    }

    #[test]
    fn an_inbox_retention_below_the_redeliveries_is_refused() {
        // 8 redeliveries 10 minutes apart: a copy can arrive 80 minutes after the first.
        let settings =
            Settings::parse_from(["x", "--consumer-ack-wait", "10m", "--inbox-retention", "1h"]);
        let error = settings
            .validate()
            .expect_err("a retention below the redeliveries was accepted");
        assert!(
            error.to_string().starts_with(
                "INBOX_RETENTION (1h) is shorter than the redeliveries of a message, \
                 CONSUMER_MAX_DELIVER × CONSUMER_ACK_WAIT (1h 20m)"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_zero_prune_interval_is_refused() {
        assert!(Settings::try_parse_from(["x", "--inbox-prune-interval", "0s"]).is_err());
    }

    #[test]
    fn one_database_url_serves_migrations_and_run_time_by_default() {
        let database = Settings::parse_from(["order-service"]).database(&IDENTITY);
        assert_eq!(database.url, "postgres://postgres@127.0.0.1:5432/order");
        assert_eq!(database.migration_url, database.url);
        assert_eq!(
            database.statement_timeout,
            crate::database::DEFAULT_STATEMENT_TIMEOUT
        );
        assert_eq!(
            database.idle_in_transaction_timeout,
            crate::database::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT
        );
        assert_eq!(
            database,
            crate::database::DatabaseOptions::new(&database.url, 10)
        );
    }

    #[test]
    fn migrations_run_as_the_owner_role_when_it_has_a_url_of_its_own() {
        let settings = Settings::parse_from([
            "order-service",
            "--database-url",
            "postgres://order_app:app-secret@db/order",
            "--database-migration-url",
            "postgres://order_owner:owner-secret@db/order",
            "--db-statement-timeout",
            "5s",
            "--db-idle-in-transaction-timeout",
            "2m",
        ]);
        let database = settings.database(&IDENTITY);
        assert_eq!(database.url, "postgres://order_app:app-secret@db/order");
        assert_eq!(
            database.migration_url,
            "postgres://order_owner:owner-secret@db/order"
        );
        assert_eq!(database.statement_timeout, Duration::from_secs(5));
        assert_eq!(
            database.idle_in_transaction_timeout,
            Duration::from_secs(120)
        );
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("app-secret") && !printed.contains("owner-secret"),
            "{printed}"
        );
    }

    #[test]
    fn a_database_timeout_must_be_one_postgres_can_set() {
        for flag in ["--db-statement-timeout", "--db-idle-in-transaction-timeout"] {
            for refused in ["0s", "999us", "25days", "soon"] {
                assert!(
                    Settings::try_parse_from(["x", flag, refused]).is_err(),
                    "{flag} {refused} was accepted"
                );
            }
            let error = Settings::try_parse_from(["x", flag, "0s"])
                .expect_err("zero was accepted")
                .to_string();
            assert!(error.contains("would turn the timeout off"), "{error}");
            assert!(Settings::try_parse_from(["x", flag, "1ms"]).is_ok());
            assert!(Settings::try_parse_from(["x", flag, "24days"]).is_ok());
        }
    }

    #[test]
    fn durations_are_human_readable() {
        let settings = Settings::parse_from(["x", "--consumer-ack-wait", "2s"]);
        assert_eq!(settings.consumer_ack_wait, Duration::from_secs(2));
    }
}
