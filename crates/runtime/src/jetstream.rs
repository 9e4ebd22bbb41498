//! JetStream setup: the connection, the context streams and the dead-letter stream, created
//! idempotently by whichever service starts first, with the same configuration everywhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
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
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(url)
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

/// Creates the given streams if they do not exist; leaves existing ones as they are.
pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    configs: Vec<stream::Config>,
) -> Result<(), JetStreamError> {
    for config in configs {
        let name = config.name.clone();
        jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|source| JetStreamError::Stream {
                stream: name,
                source,
            })?;
    }
    Ok(())
}
