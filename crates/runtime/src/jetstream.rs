//! JetStream setup: the connection (as the service's own NATS user, see [`NatsAuth`]), the
//! context streams, the dead-letter stream and the stream capturing max-deliveries
//! advisories, created idempotently by whichever service starts first, with the same
//! configuration everywhere.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use backon::Retryable;
use events::streams::{Context, DLQ_PREFIX, DLQ_STREAM};
use thiserror::Error;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish. Longer than the
/// relay can plausibly take to republish a row after a crash.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Error)]
pub enum JetStreamError {
    #[error("failed to connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("failed to read the NATS credentials in {path}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

/// How a process proves who it is to NATS: a user and password, a credentials file (a user
/// JWT and its nkey seed, as `nsc` writes them) or an nkey seed file. None of them connects
/// without authentication, which only a server without users accepts (a development one).
/// The users and what each may do are in `deploy/nats/users.conf`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// NATS user to connect as (with NATS_PASSWORD): the service's own, or `admin` for tools.
    #[arg(
        long,
        env = "NATS_USER",
        global = true,
        requires = "nats_password",
        conflicts_with_all = ["nats_creds_file", "nats_nkey_seed_file"]
    )]
    pub nats_user: Option<String>,

    /// Password of NATS_USER.
    #[arg(
        long,
        env = "NATS_PASSWORD",
        global = true,
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<Password>,

    /// A NATS credentials file (user JWT and nkey seed) to connect with, instead of a user
    /// and password.
    #[arg(
        long,
        env = "NATS_CREDS_FILE",
        global = true,
        conflicts_with = "nats_nkey_seed_file"
    )]
    pub nats_creds_file: Option<PathBuf>,

    /// A file holding the nkey seed (`SU...`) of a NATS user the server knows by its public
    /// key, instead of a user and password.
    #[arg(long, env = "NATS_NKEY_SEED_FILE", global = true)]
    pub nats_nkey_seed_file: Option<PathBuf>,
}

impl NatsAuth {
    /// A user and password.
    pub fn user(user: &str, password: &str) -> NatsAuth {
        NatsAuth {
            nats_user: Some(user.to_owned()),
            nats_password: Some(Password::from(password.to_owned())),
            ..NatsAuth::default()
        }
    }

    /// Who this connects as, for logs: never the password or the seed.
    pub fn describe(&self) -> String {
        if let Some(user) = &self.nats_user {
            format!("user {user}")
        } else if let Some(path) = &self.nats_creds_file {
            format!("credentials file {}", path.display())
        } else if let Some(path) = &self.nats_nkey_seed_file {
            format!("nkey seed file {}", path.display())
        } else {
            "no authentication".to_owned()
        }
    }

    /// Connect options that authenticate this way (reading the file it names, if any).
    pub async fn connect_options(&self) -> Result<async_nats::ConnectOptions, JetStreamError> {
        let options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            return Ok(options.user_and_password(user.clone(), password.expose().to_owned()));
        }
        if let Some(path) = &self.nats_creds_file {
            return options.credentials_file(path).await.map_err(|source| {
                JetStreamError::Credentials {
                    path: path.clone(),
                    source,
                }
            });
        }
        if let Some(path) = &self.nats_nkey_seed_file {
            let seed = tokio::fs::read_to_string(path).await.map_err(|source| {
                JetStreamError::Credentials {
                    path: path.clone(),
                    source,
                }
            })?;
            return Ok(options.nkey(seed.trim().to_owned()));
        }
        Ok(options)
    }
}

/// A password: `Debug` shows that there is one, never what it is, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(password: String) -> Password {
        Password(password)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The inbox prefix of a service's connection, `_INBOX_<service>`: every reply it waits for
/// (JetStream API answers, publish acks, pulled messages) arrives under it, so the server can
/// let each service subscribe to its own replies only (`deploy/nats/users.conf`).
pub fn inbox_prefix(service: &str) -> String {
    format!("_INBOX_{service}")
}

/// Connects service `service` to NATS as `auth`, waiting for the server if it is not up yet
/// (the service starts anyway and reports not ready until connected).
pub async fn connect(
    url: &str,
    service: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, JetStreamError> {
    // A cluster is given as a comma-separated list; the client fails over between them.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect();
    auth.connect_options()
        .await?
        .name(format!("{service}-service"))
        .custom_inbox_prefix(inbox_prefix(service))
        .event_callback(|event| async move { report_refusal(&event) })
        .retry_on_initial_connect()
        .connect(servers.as_slice())
        .await
        .map_err(|source| JetStreamError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Logs what the server refused as an error: a wrong password or a permission the service
/// lacks is a deployment mistake an operator must fix, and the server only says so on the
/// connection (a refused publish or request otherwise just goes unanswered). async-nats logs
/// every connection event at info level itself. A refused login comes as a client error
/// while connecting and as a server error on a live connection.
fn report_refusal(event: &async_nats::Event) {
    let refusal = match event {
        async_nats::Event::ServerError(error) => error.to_string(),
        async_nats::Event::ClientError(error) => error.to_string(),
        _ => return,
    };
    let lowercase = refusal.to_lowercase();
    if lowercase.contains("authorization violation") {
        tracing::error!(
            "NATS refused the credentials (NATS_USER and NATS_PASSWORD, NATS_CREDS_FILE or \
             NATS_NKEY_SEED_FILE)"
        );
    } else if lowercase.contains("permissions violation") {
        tracing::error!(%refusal, "NATS refused an operation this user is not allowed (deploy/nats/users.conf)");
    }
}

/// The configuration of a context's stream. File storage, a dedup window; the same config
/// from every service so that whoever creates it first creates the same thing.
pub fn context_stream(context: Context, replicas: usize) -> stream::Config {
    stream::Config {
        name: context.stream().to_owned(),
        subjects: vec![context.subjects()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The dead-letter stream: messages that could not be processed, with the reason in headers.
pub fn dead_letter_stream(replicas: usize) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec![format!("{DLQ_PREFIX}.>")],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The stream that captures JetStream's max-deliveries advisories.
pub const ADVISORY_STREAM: &str = "ADVISORIES";

/// JetStream publishes `<prefix>.<STREAM>.<CONSUMER>` when a consumer stops delivering a
/// message because it reached `max_deliver`.
pub const MAX_DELIVERIES_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

/// How long captured advisories are kept: long enough to look after a weekend.
pub const ADVISORY_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The advisory stream: JetStream's MAX_DELIVERIES advisories, kept for [`ADVISORY_MAX_AGE`].
///
/// The consumer loop dead-letters a message itself on its last delivery, so an advisory means
/// JetStream gave up on a message that never reached `DLQ` (the service died or stalled during
/// that delivery, or someone's consumer has no such loop). It is the only trace of that
/// message, and it is a fire-and-forget core NATS message: lost unless something listens at
/// that moment. A stream listens all the time.
pub fn advisory_stream(replicas: usize) -> stream::Config {
    stream::Config {
        name: ADVISORY_STREAM.to_owned(),
        subjects: vec![format!("{MAX_DELIVERIES_ADVISORY_PREFIX}.>")],
        storage: stream::StorageType::File,
        max_age: ADVISORY_MAX_AGE,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the given streams if they do not exist; leaves existing ones as they are. Retried
/// with backoff for about a minute: on a cluster a stream may have no leader for a few
/// seconds (an election, or several services creating replicated streams at once).
pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    configs: Vec<stream::Config>,
) -> Result<(), JetStreamError> {
    for config in configs {
        let name = config.name.clone();
        (|| jetstream.get_or_create_stream(config.clone()))
            .retry(crate::service::startup_backoff())
            .notify(|error, delay| {
                tracing::warn!(stream = %name, %error, ?delay, "cannot create stream yet; retrying");
            })
            .await
            .map_err(|source| JetStreamError::Stream {
                stream: name.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::settings::Settings;

    #[test]
    fn the_nats_password_is_never_printed_with_the_settings() {
        let settings = Settings::parse_from([
            "x",
            "--nats-user",
            "order",
            "--nats-password",
            "s3cret-Pa55",
        ]);
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cret-Pa55"), "{printed}");
        assert!(printed.contains("Password(<redacted>)"), "{printed}");
        assert_eq!(settings.nats_auth.describe(), "user order");
        assert_eq!(
            settings
                .nats_auth
                .nats_password
                .map(|p| p.expose().to_owned()),
            Some("s3cret-Pa55".to_owned())
        );
    }

    #[test]
    fn a_user_needs_a_password_and_one_way_to_authenticate_is_taken() {
        assert!(Settings::try_parse_from(["x", "--nats-user", "order"]).is_err());
        assert!(Settings::try_parse_from(["x", "--nats-password", "p"]).is_err());
        assert!(
            Settings::try_parse_from([
                "x",
                "--nats-user",
                "order",
                "--nats-password",
                "p",
                "--nats-creds-file",
                "order.creds"
            ])
            .is_err()
        );
        assert!(
            Settings::try_parse_from([
                "x",
                "--nats-creds-file",
                "order.creds",
                "--nats-nkey-seed-file",
                "order.nk"
            ])
            .is_err()
        );
        let settings = Settings::parse_from(["x", "--nats-creds-file", "order.creds"]);
        assert_eq!(
            settings.nats_auth.describe(),
            "credentials file order.creds"
        );
        assert_eq!(
            Settings::parse_from(["x"]).nats_auth.describe(),
            "no authentication"
        );
    }

    #[tokio::test]
    async fn an_unreadable_credentials_file_is_reported_with_its_path() {
        let auth = NatsAuth {
            nats_nkey_seed_file: Some(PathBuf::from("/nonexistent/order.nk")),
            ..NatsAuth::default()
        };
        let error = auth.connect_options().await.expect_err("no such file");
        assert_eq!(
            error.to_string(),
            "failed to read the NATS credentials in /nonexistent/order.nk"
        );
    }

    #[test]
    fn each_service_has_an_inbox_prefix_of_its_own() {
        assert_eq!(inbox_prefix("payment"), "_INBOX_payment");
    }
}
