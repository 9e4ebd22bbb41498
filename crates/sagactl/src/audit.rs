//! The audit trail of one order, read from the streams themselves: every event any service
//! published about it, in the order they happened. It is what `GET /orders/{id}`'s history
//! is derived from, rebuilt without the order service's database.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use events::Envelope;
use events::streams::Context;
use serde::Serialize;
use uuid::Uuid;

use crate::Error;
use crate::stored::{Reader, find_stream};

/// One event about the order, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub stream: String,
    pub sequence: u64,
    /// When the stream stored it.
    pub stored_at: DateTime<Utc>,
    pub subject: String,
    /// From the envelope; `None` for a message that is not an event envelope.
    pub event: Option<EventFacts>,
}

/// What the envelope says of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventFacts {
    #[serde(rename = "type")]
    pub event_type: String,
    pub id: Uuid,
    pub source: String,
    /// When its producer wrote it.
    pub time: DateTime<Utc>,
    pub causationid: Option<Uuid>,
}

impl AuditEntry {
    /// The event type, or the subject's type part for a message that does not decode.
    pub fn event_type(&self) -> &str {
        match &self.event {
            Some(facts) => &facts.event_type,
            None => self
                .subject
                .rsplit_once('.')
                .map_or(self.subject.as_str(), |(event_type, _)| event_type),
        }
    }
}

/// Every event about `order_id` in the four context streams, oldest first (by the time its
/// producer wrote it, then by stream and sequence).
pub async fn trail(
    jetstream: &jetstream::Context,
    order_id: Uuid,
) -> Result<Vec<AuditEntry>, Error> {
    let mut entries = Vec::new();
    for context in Context::ALL {
        let Some(stream) = find_stream(jetstream, context.stream()).await? else {
            continue;
        };
        let subjects = format!("{}.*.{order_id}", context.prefix());
        let mut reader = Reader::of_subjects(&stream, &subjects);
        while let Some(stored) = reader.next().await? {
            let event = Envelope::from_slice(&stored.payload)
                .ok()
                .map(|envelope| EventFacts {
                    event_type: envelope.event_type,
                    id: envelope.id,
                    source: envelope.source,
                    time: envelope.time,
                    causationid: envelope.causationid,
                });
            entries.push(AuditEntry {
                stream: context.stream().to_owned(),
                sequence: stored.sequence,
                stored_at: stored.time,
                subject: stored.subject,
                event,
            });
        }
    }
    entries.sort_by(|a, b| {
        let time = |entry: &AuditEntry| entry.event.as_ref().map_or(entry.stored_at, |e| e.time);
        time(a)
            .cmp(&time(b))
            .then_with(|| a.stream.cmp(&b.stream))
            .then_with(|| a.sequence.cmp(&b.sequence))
    });
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_message_is_named_by_its_subject() {
        let entry = AuditEntry {
            stream: "ORDER".into(),
            sequence: 3,
            stored_at: DateTime::UNIX_EPOCH,
            subject: "order.placed.0191".into(),
            event: None,
        };
        assert_eq!(entry.event_type(), "order.placed");
    }
}
