//! JetStream setup: the connection, the context streams, the dead-letter stream and the
//! stream capturing max-deliveries advisories, created idempotently by whichever service
//! starts first, with the same configuration everywhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use backon::{ExponentialBuilder, Retryable};
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
    #[error("failed to create stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

/// Connects to NATS, waiting for the server if it is not up yet (the service starts anyway
/// and reports not ready until connected).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, JetStreamError> {
    // A cluster is given as a comma-separated list; the client fails over between them.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect();
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(servers.as_slice())
        .await
        .map_err(|source| JetStreamError::Connect {
            url: url.to_owned(),
            source,
        })
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
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_total_delay(Some(Duration::from_secs(60)))
                    .without_max_times()
                    .with_jitter(),
            )
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
