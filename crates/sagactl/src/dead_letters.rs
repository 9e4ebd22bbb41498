//! Dead letters: what the `DLQ` stream holds, and redriving a letter back to its original
//! subject.
//!
//! A consumer that gives up on a message publishes it to `dlq.<consumer>.<original subject>`
//! with the original payload, the original headers (without JetStream's `Nats-*` ones) and
//! `Dlq-Reason`, `Dlq-Original-Subject`, `Dlq-Consumer`, `Dlq-Stream-Sequence`,
//! `Dlq-Deliveries`; see `runtime::consumer`.
//!
//! # Redriving, exactly once in effect
//!
//! [`redrive`] does two things, in this order:
//!
//! 1. it publishes the payload to the original subject with the letter's headers minus the
//!    `Dlq-*` and `Nats-*` ones, and `Nats-Msg-Id: redrive:<DLQ sequence>`, and waits for the
//!    stream's ack;
//! 2. then it deletes the letter from `DLQ`.
//!
//! Deleting first would lose the letter if the publish then failed. Publishing first means a
//! crash in between leaves the letter in `DLQ`, already redriven; redriving it again publishes
//! the same `Nats-Msg-Id`, which the target stream drops as a duplicate within its dedup
//! window (10 minutes for the context streams), and then deletes the letter.
//!
//! Past that window a second copy is stored, and in any case a redriven event reaches every
//! consumer of its subject, not only the one that gave up on it. Neither matters: the envelope
//! is unchanged, so its event id is the one every consumer's inbox already holds if it applied
//! the event, and a consumer drops what its inbox holds. Inboxes forget after
//! `INBOX_RETENTION` (an hour by default), so a letter redriven later than that reaches
//! consumers that applied it without their knowing; it changes nothing there, every reaction
//! being idempotent on the state. Hence exactly once in effect.
//!
//! The message id is not the event id on purpose: the event was first published under that
//! id, and within the window JetStream would drop the redrive as a duplicate of it.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use events::Envelope;
use events::streams::{DLQ_PREFIX, DLQ_STREAM};
use runtime::consumer::dead_letter_headers;
use uuid::Uuid;

use crate::stored::{self, Reader, Stored};
use crate::{Error, Listing};

/// How much of a payload that is not an envelope is shown.
pub const PREVIEW_BYTES: usize = 64;

/// The `Nats-Msg-Id` of a redriven letter: `redrive:<DLQ sequence>`.
pub fn redrive_message_id(dlq_sequence: u64) -> String {
    format!("redrive:{dlq_sequence}")
}

/// One message in the `DLQ` stream.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its sequence in `DLQ`: what `redrive` takes.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: DateTime<Utc>,
    /// `dlq.<consumer>.<original subject>`.
    pub subject: String,
    /// Every header it carries, sorted by name.
    pub headers: Vec<(String, String)>,
    /// The original message's payload, unchanged.
    pub payload: Bytes,
}

/// What a dead letter's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A CloudEvents envelope (its data may still be what could not be processed).
    Event { event_type: String, id: Uuid },
    /// Anything else: the first [`PREVIEW_BYTES`] bytes, as text.
    Opaque { preview: String, truncated: bool },
}

impl DeadLetter {
    /// The first value of a header, by name regardless of case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Why the consumer gave up.
    pub fn reason(&self) -> Option<&str> {
        self.header(dead_letter_headers::REASON)
    }

    /// The durable consumer that gave up, e.g. `payment-inventory`; from the header, else
    /// from the subject.
    pub fn consumer(&self) -> Option<&str> {
        self.header(dead_letter_headers::CONSUMER)
            .or_else(|| self.subject_parts().map(|(consumer, _)| consumer))
    }

    /// Where the message was first published; from the header, else from the subject.
    pub fn original_subject(&self) -> Option<&str> {
        self.header(dead_letter_headers::ORIGINAL_SUBJECT)
            .or_else(|| self.subject_parts().map(|(_, original)| original))
    }

    /// The original message's sequence in its own stream.
    pub fn stream_sequence(&self) -> Option<u64> {
        self.header(dead_letter_headers::STREAM_SEQUENCE)?
            .parse()
            .ok()
    }

    /// How many times the consumer had been given the message.
    pub fn deliveries(&self) -> Option<u64> {
        self.header(dead_letter_headers::DELIVERIES)?.parse().ok()
    }

    /// The headers other than the `Dlq-*` ones (which have their own accessors).
    pub fn other_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(name, _)| !is_dead_letter_header(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The envelope's type and id, or the start of the payload when it is not one.
    pub fn content(&self) -> Content {
        match Envelope::from_slice(&self.payload) {
            Ok(envelope) => Content::Event {
                event_type: envelope.event_type,
                id: envelope.id,
            },
            Err(_) => {
                let shown = &self.payload[..self.payload.len().min(PREVIEW_BYTES)];
                Content::Opaque {
                    preview: String::from_utf8_lossy(shown).into_owned(),
                    truncated: self.payload.len() > PREVIEW_BYTES,
                }
            }
        }
    }

    /// `(consumer, original subject)` from `dlq.<consumer>.<original subject>`. Durable
    /// names hold no dots, so the consumer is exactly the second token.
    fn subject_parts(&self) -> Option<(&str, &str)> {
        self.subject
            .strip_prefix(DLQ_PREFIX)?
            .strip_prefix('.')?
            .split_once('.')
            .filter(|(consumer, original)| !consumer.is_empty() && !original.is_empty())
    }
}

impl From<Stored> for DeadLetter {
    fn from(stored: Stored) -> Self {
        DeadLetter {
            sequence: stored.sequence,
            time: stored.time,
            subject: stored.subject,
            headers: stored.headers,
            payload: stored.payload,
        }
    }
}

fn is_dead_letter_header(name: &str) -> bool {
    name.get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("Dlq-"))
}

fn is_jetstream_header(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("Nats-"))
}

/// The headers a letter is redriven with: its own minus the `Dlq-*` ones (ours, about the
/// failure) and the `Nats-*` ones (JetStream's, such as the letter's own dedup id in `DLQ`).
/// What is left are the original message's headers, e.g. its trace context.
pub fn redrive_headers(headers: &[(String, String)]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if !is_dead_letter_header(name) && !is_jetstream_header(name) {
            kept.append(name.as_str(), value.as_str());
        }
    }
    kept
}

/// Which letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only the letters of this durable consumer.
    pub consumer: Option<String>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

impl Selection {
    fn admits(&self, letter: &DeadLetter) -> bool {
        self.consumer
            .as_deref()
            .is_none_or(|wanted| letter.consumer() == Some(wanted))
    }
}

/// The dead letters in `DLQ`, oldest first, as far as `selection` admits them. Empty when the
/// stream does not exist yet.
pub async fn list(
    jetstream: &jetstream::Context,
    selection: &Selection,
) -> Result<Listing<DeadLetter>, Error> {
    let Some(stream) = stored::find_stream(jetstream, DLQ_STREAM).await? else {
        return Ok(Listing {
            items: Vec::new(),
            stored: 0,
        });
    };
    let mut reader = Reader::new(&stream);
    let mut items = Vec::new();
    while selection.limit.is_none_or(|limit| items.len() < limit) {
        let Some(stored) = reader.next().await? else {
            break;
        };
        let letter = DeadLetter::from(stored);
        if selection.admits(&letter) {
            items.push(letter);
        }
    }
    Ok(Listing {
        items,
        stored: stream.cached_info().state.messages,
    })
}

/// One dead letter by its `DLQ` sequence.
pub async fn get(jetstream: &jetstream::Context, sequence: u64) -> Result<DeadLetter, Error> {
    let Some(stream) = stored::find_stream(jetstream, DLQ_STREAM).await? else {
        return Err(Error::NoSuchLetter { sequence });
    };
    match stored::get(&stream, sequence).await? {
        Some(stored) => Ok(stored.into()),
        None => Err(Error::NoSuchLetter { sequence }),
    }
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// The letter's sequence in `DLQ` (it is gone from there now).
    pub dlq_sequence: u64,
    /// Where it was published.
    pub subject: String,
    /// The stream that stored it, and at which sequence.
    pub stream: String,
    pub stream_sequence: u64,
    /// True if the stream had it already (an earlier redrive of the same letter, interrupted
    /// before the delete): nothing new was stored.
    pub duplicate: bool,
}

/// Step 1 of [`redrive`] alone: publishes the letter to its original subject and waits for
/// the stream's ack, leaving the letter in `DLQ`. On its own it is what a redrive interrupted
/// before its delete has done.
pub async fn republish(
    jetstream: &jetstream::Context,
    letter: &DeadLetter,
) -> Result<PublishAck, Error> {
    let subject = letter
        .original_subject()
        .ok_or(Error::NoOriginalSubject {
            sequence: letter.sequence,
        })?
        .to_owned();
    let publish = PublishMessage::build()
        .payload(letter.payload.clone())
        .headers(redrive_headers(&letter.headers))
        .message_id(redrive_message_id(letter.sequence));
    let publish_error = |source| Error::Publish {
        sequence: letter.sequence,
        subject: subject.clone(),
        source,
    };
    jetstream
        .send_publish(subject.clone(), publish)
        .await
        .map_err(publish_error)?
        .await
        .map_err(publish_error)
}

/// Publishes the letter back to its original subject, waits for the ack, then deletes it from
/// `DLQ` (the module documentation says why in that order).
pub async fn redrive(
    jetstream: &jetstream::Context,
    letter: &DeadLetter,
) -> Result<Redriven, Error> {
    let ack = republish(jetstream, letter).await?;
    let dlq = jetstream
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|source| Error::Stream {
            stream: DLQ_STREAM.to_owned(),
            source,
        })?;
    dlq.delete_message(letter.sequence)
        .await
        .map_err(|source| Error::Delete {
            sequence: letter.sequence,
            source,
        })?;
    Ok(Redriven {
        dlq_sequence: letter.sequence,
        subject: letter.original_subject().unwrap_or_default().to_owned(),
        stream: ack.stream,
        stream_sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use events::envelope::schema_urn;

    use super::*;

    fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn letter(subject: &str, headers: &[(&str, &str)], payload: &[u8]) -> DeadLetter {
        DeadLetter {
            sequence: 4,
            time: DateTime::UNIX_EPOCH,
            subject: subject.to_owned(),
            headers: pairs(headers),
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn redriven_headers_are_the_original_ones_without_dlq_or_jetstream_headers() {
        let headers = pairs(&[
            ("Dlq-Consumer", "payment-inventory"),
            ("Dlq-Reason", "gave up"),
            ("dlq-deliveries", "2"),
            ("Nats-Msg-Id", "payment-inventory:7"),
            ("traceparent", "00-abc-def-01"),
            ("X-Tag", "one"),
            ("X-Tag", "two"),
        ]);
        let kept = redrive_headers(&headers);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(
            kept.get("traceparent").map(|v| v.as_str()),
            Some("00-abc-def-01")
        );
        let tags: Vec<&str> = kept.get_all("X-Tag").map(|value| value.as_str()).collect();
        assert_eq!(tags, ["one", "two"]);
    }

    #[test]
    fn a_redrive_is_deduplicated_by_the_letters_dlq_sequence() {
        assert_eq!(redrive_message_id(42), "redrive:42");
    }

    #[test]
    fn the_headers_name_the_consumer_and_original_subject() {
        let letter = letter(
            "dlq.payment-inventory.inventory.reserved.o-1",
            &[
                ("Dlq-Consumer", "payment-inventory"),
                ("Dlq-Original-Subject", "inventory.reserved.o-1"),
                ("Dlq-Stream-Sequence", "7"),
                ("Dlq-Deliveries", "2"),
                ("Dlq-Reason", "gave up after 2 deliveries"),
            ],
            b"{}",
        );
        assert_eq!(letter.consumer(), Some("payment-inventory"));
        assert_eq!(letter.original_subject(), Some("inventory.reserved.o-1"));
        assert_eq!(letter.stream_sequence(), Some(7));
        assert_eq!(letter.deliveries(), Some(2));
        assert_eq!(letter.reason(), Some("gave up after 2 deliveries"));
        assert_eq!(letter.other_headers().count(), 0);
    }

    #[test]
    fn without_headers_the_subject_names_the_consumer_and_original_subject() {
        let letter = letter("dlq.order-inventory.inventory.reserved.o-1", &[], b"{}");
        assert_eq!(letter.consumer(), Some("order-inventory"));
        assert_eq!(letter.original_subject(), Some("inventory.reserved.o-1"));
        assert_eq!(letter.reason(), None);

        let stray = super::tests::letter("dlq.lonely", &[], b"{}");
        assert_eq!(stray.original_subject(), None);
        assert_eq!(stray.consumer(), None);
    }

    #[test]
    fn an_envelope_is_shown_by_type_and_id() {
        let id = Uuid::from_u128(7);
        let envelope = Envelope {
            specversion: "1.0".into(),
            id,
            source: "/services/inventory".into(),
            event_type: "inventory.reserved".into(),
            subject: "o-1".into(),
            time: DateTime::UNIX_EPOCH,
            dataschema: schema_urn("inventory.reserved", 1),
            datacontenttype: "application/json".into(),
            correlationid: "o-1".into(),
            causationid: None,
            data: serde_json::json!({}),
        };
        let letter = letter("dlq.a.b", &[], &envelope.to_vec());
        assert_eq!(
            letter.content(),
            Content::Event {
                event_type: "inventory.reserved".into(),
                id
            }
        );
    }

    #[test]
    fn anything_else_is_shown_by_its_first_bytes() {
        let short = letter("dlq.a.b", &[], b"this is not json");
        assert_eq!(
            short.content(),
            Content::Opaque {
                preview: "this is not json".into(),
                truncated: false
            }
        );
        let long = letter("dlq.a.b", &[], &[b'x'; 100]);
        assert_eq!(
            long.content(),
            Content::Opaque {
                preview: "x".repeat(PREVIEW_BYTES),
                truncated: true
            }
        );
    }

    #[test]
    fn a_selection_by_consumer_admits_only_its_letters() {
        let mine = letter("dlq.payment-inventory.inventory.reserved.o-1", &[], b"");
        let theirs = letter("dlq.order-inventory.inventory.reserved.o-1", &[], b"");
        let selection = Selection {
            consumer: Some("payment-inventory".into()),
            limit: None,
        };
        assert!(selection.admits(&mine));
        assert!(!selection.admits(&theirs));
        assert!(Selection::default().admits(&theirs));
    }
}
