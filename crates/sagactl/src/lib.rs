//! `sagactl`, the operator's tool for what the services cannot settle themselves: the dead
//! letters in the `DLQ` stream (show them, redrive them to their original subject), the
//! max-deliveries advisories JetStream raised, captured in the `ADVISORIES` stream, and the
//! audit trail of an order read from the streams ([`audit`]).
//!
//! Everything lives in this library: [`dead_letters`] and [`advisories`] read and act on the
//! streams, [`render`] prints what they return, and [`cli::run`] executes a parsed command
//! line against a NATS server, writing to any `Write`. The binary only parses and reports, so
//! the e2e suite drives the same code the operator runs.

pub mod advisories;
pub mod audit;
pub mod cli;
pub mod dead_letters;
pub mod render;
mod stored;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{GetStreamError, PublishError};
use async_nats::jetstream::stream::{DeleteMessageError, RawMessageError};
use runtime::jetstream::NatsAuth;
use thiserror::Error;

/// How long connecting to NATS may take before the command gives up: an operator's tool
/// should fail fast, not wait for a server that is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command could not do what it was asked.
#[derive(Debug, Error)]
pub enum Error {
    #[error("failed to connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("failed to prepare the NATS credentials")]
    Credentials(#[source] runtime::jetstream::JetStreamError),
    #[error("failed to look up stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    #[error("failed to read message {sequence} of stream {stream}")]
    Read {
        stream: String,
        sequence: u64,
        #[source]
        source: RawMessageError,
    },
    #[error("DLQ holds no dead letter with sequence {sequence}")]
    NoSuchLetter { sequence: u64 },
    #[error("dead letter {sequence} names no original subject to redrive it to")]
    NoOriginalSubject { sequence: u64 },
    #[error("failed to publish dead letter {sequence} to {subject}")]
    Publish {
        sequence: u64,
        subject: String,
        #[source]
        source: PublishError,
    },
    #[error(
        "redrove dead letter {sequence} but failed to delete it from DLQ; redriving it again is safe"
    )]
    Delete {
        sequence: u64,
        #[source]
        source: DeleteMessageError,
    },
}

/// What a listing found: the items it returns (filtered, at most the limit asked for) and how
/// many messages the stream holds in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub stored: u64,
}

/// Connects to NATS as `auth`, failing after [`CONNECT_TIMEOUT`] rather than waiting for a
/// server.
pub async fn connect(url: &str, auth: &NatsAuth) -> Result<jetstream::Context, Error> {
    let client = auth
        .connect_options()
        .await
        .map_err(Error::Credentials)?
        .name("sagactl")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|source| Error::Connect {
            url: url.to_owned(),
            source,
        })?;
    Ok(jetstream::new(client))
}
