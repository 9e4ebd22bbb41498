//! The max-deliveries advisories captured in the `ADVISORIES` stream: each says that a
//! consumer reached its `max_deliver` on a message and JetStream stopped delivering it. The
//! services' consumer loop dead-letters a message on its last delivery, so an advisory points
//! at a message that may have been dropped without a dead letter (see
//! `runtime::jetstream::advisory_stream`).

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use runtime::jetstream::{ADVISORY_STREAM, MAX_DELIVERIES_ADVISORY_PREFIX};
use serde::Deserialize;

use crate::stored::{self, Reader, Stored};
use crate::{Error, Listing};

/// One `io.nats.jetstream.advisory.v1.max_deliver` advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxDeliveriesAdvisory {
    /// Its sequence in `ADVISORIES`.
    pub sequence: u64,
    /// When it was captured.
    pub time: DateTime<Utc>,
    /// The stream and consumer that gave up on a message.
    pub stream: String,
    pub consumer: String,
    /// The message's sequence in `stream`; `None` if the advisory could not be read.
    pub stream_sequence: Option<u64>,
    /// How many times it had been delivered.
    pub deliveries: Option<u64>,
}

/// The fields of the advisory's JSON body this tool uses.
#[derive(Debug, Default, Deserialize)]
struct Body {
    stream: Option<String>,
    consumer: Option<String>,
    stream_seq: Option<u64>,
    deliveries: Option<u64>,
}

impl MaxDeliveriesAdvisory {
    /// Reads an advisory from its subject (`<prefix>.<STREAM>.<CONSUMER>`) and JSON body; the
    /// subject still names stream and consumer when the body cannot be read.
    pub fn parse(sequence: u64, time: DateTime<Utc>, subject: &str, body: &[u8]) -> Self {
        let body: Body = serde_json::from_slice(body).unwrap_or_default();
        let (subject_stream, subject_consumer) = subject
            .strip_prefix(MAX_DELIVERIES_ADVISORY_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .unwrap_or(("", ""));
        MaxDeliveriesAdvisory {
            sequence,
            time,
            stream: body.stream.unwrap_or_else(|| subject_stream.to_owned()),
            consumer: body.consumer.unwrap_or_else(|| subject_consumer.to_owned()),
            stream_sequence: body.stream_seq,
            deliveries: body.deliveries,
        }
    }
}

impl From<Stored> for MaxDeliveriesAdvisory {
    fn from(stored: Stored) -> Self {
        MaxDeliveriesAdvisory::parse(
            stored.sequence,
            stored.time,
            &stored.subject,
            &stored.payload,
        )
    }
}

/// The captured advisories, oldest first, at most `limit`. Empty when the stream does not
/// exist yet (no service has started since it was introduced).
pub async fn list(
    jetstream: &jetstream::Context,
    limit: Option<usize>,
) -> Result<Listing<MaxDeliveriesAdvisory>, Error> {
    let Some(stream) = stored::find_stream(jetstream, ADVISORY_STREAM).await? else {
        return Ok(Listing {
            items: Vec::new(),
            stored: 0,
        });
    };
    let mut reader = Reader::new(&stream);
    let mut items = Vec::new();
    while limit.is_none_or(|limit| items.len() < limit) {
        let Some(stored) = reader.next().await? else {
            break;
        };
        items.push(stored.into());
    }
    Ok(Listing {
        items,
        stored: stream.cached_info().state.messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advisory_is_read_from_its_json_body() {
        // As nats-server 2.15 publishes it.
        let body = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"Zq0","timestamp":"2026-11-14T10:31:07.1Z","stream":"ORDER","consumer":"payment-order","stream_seq":17,"deliveries":8}"#;
        let advisory = MaxDeliveriesAdvisory::parse(
            3,
            DateTime::UNIX_EPOCH,
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORDER.payment-order",
            body,
        );
        assert_eq!(
            advisory,
            MaxDeliveriesAdvisory {
                sequence: 3,
                time: DateTime::UNIX_EPOCH,
                stream: "ORDER".into(),
                consumer: "payment-order".into(),
                stream_sequence: Some(17),
                deliveries: Some(8),
            }
        );
    }

    #[test]
    fn an_unreadable_body_still_names_stream_and_consumer_from_the_subject() {
        let advisory = MaxDeliveriesAdvisory::parse(
            1,
            DateTime::UNIX_EPOCH,
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.INVENTORY.order-inventory",
            b"not json",
        );
        assert_eq!(advisory.stream, "INVENTORY");
        assert_eq!(advisory.consumer, "order-inventory");
        assert_eq!(advisory.stream_sequence, None);
        assert_eq!(advisory.deliveries, None);
    }
}
