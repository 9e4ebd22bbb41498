//! Configuration shared by every service, read from the environment (or flags) with a
//! working local default for each value.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

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

    /// Postgres URL of this service's own database, created and migrated at startup if
    /// missing [default: postgres://postgres@127.0.0.1:5432/<service>].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Address the HTTP API listens on [default: 127.0.0.1:<8080..8084 by service>].
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Largest number of database connections this process opens.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Messages each consumer processes at once.
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 8)]
    pub consumer_concurrency: usize,

    /// Deliveries of one message before it is moved to the DLQ stream.
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = 8)]
    pub consumer_max_deliver: i64,

    /// How long JetStream waits for an ack before redelivering a message.
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub consumer_ack_wait: Duration,

    /// How often the outbox relay polls when no notification wakes it.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub outbox_poll_interval: Duration,

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
    /// outbox relay has a publish ack for an event of this type, before marking its row.
    #[arg(long, env = "FAULT_CRASH_AFTER_PUBLISH_ACK", hide = true)]
    pub fault_crash_after_publish_ack: Option<String>,
}

impl Settings {
    /// Reads the settings from flags and the environment; exits with usage on bad input.
    pub fn from_env() -> Settings {
        Settings::parse()
    }

    /// This service's database URL, defaulting to a database named after the service.
    pub fn database_url(&self, identity: &Identity) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("postgres://postgres@127.0.0.1:5432/{}", identity.name))
    }

    /// This service's HTTP address, defaulting to its port on loopback.
    pub fn http_addr(&self, identity: &Identity) -> SocketAddr {
        self.http_addr.unwrap_or(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            identity.default_http_port,
        )))
    }
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
    fn durations_are_human_readable() {
        let settings = Settings::parse_from(["x", "--consumer-ack-wait", "2s"]);
        assert_eq!(settings.consumer_ack_wait, Duration::from_secs(2));
    }
}
