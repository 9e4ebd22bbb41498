//! The CloudEvents 1.0 envelope (structured JSON mode) with the saga's correlation and
//! causation extension attributes.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalogue::{DecodeError, Event};

/// The only CloudEvents version this system speaks.
pub const SPEC_VERSION: &str = "1.0";
/// Payloads are always JSON.
pub const CONTENT_TYPE: &str = "application/json";

/// One event as it travels on the wire: CloudEvents attributes plus `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// CloudEvents version, always `1.0`.
    pub specversion: String,
    /// Unique event id (UUIDv7); also the `Nats-Msg-Id` header, so JetStream drops
    /// duplicate publishes of the same event.
    pub id: Uuid,
    /// The service that produced the event, e.g. `/services/order`.
    pub source: String,
    /// Event type, `<context>.<fact-in-past-tense>`, e.g. `order.placed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The aggregate the event is about: an order id or a SKU.
    pub subject: String,
    /// When the fact happened.
    pub time: DateTime<Utc>,
    /// URN naming the schema (type and version) that `data` conforms to.
    pub dataschema: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The saga this event belongs to: the order id for every event of one order.
    pub correlationid: String,
    /// The event that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
    /// The event payload, as described by `dataschema`.
    pub data: serde_json::Value,
}

/// Who and when: the attributes of an envelope that are not derived from the event itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub id: Uuid,
    pub source: String,
    pub time: DateTime<Utc>,
    pub correlationid: String,
    pub causationid: Option<Uuid>,
}

impl Envelope {
    /// Wraps a typed event into its wire envelope.
    pub fn wrap(event: &Event, metadata: Metadata) -> Envelope {
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: metadata.id,
            source: metadata.source,
            event_type: event.event_type().to_owned(),
            subject: event.key(),
            time: metadata.time,
            dataschema: schema_urn(event.event_type(), event.version()),
            datacontenttype: CONTENT_TYPE.to_owned(),
            correlationid: metadata.correlationid,
            causationid: metadata.causationid,
            data: event.data(),
        }
    }

    /// Decodes the payload into its typed event in the latest version of its type: checks type
    /// and schema version, checks the payload against that version's JSON Schema, decodes it,
    /// and upcasts an older version ([`Event::upcast`]).
    pub fn event(&self) -> Result<Event, DecodeError> {
        self.event_as_published().map(Event::upcast)
    }

    /// Decodes the payload into its typed event in the version it was published in.
    pub fn event_as_published(&self) -> Result<Event, DecodeError> {
        let version = parse_schema_urn(&self.dataschema, &self.event_type)?;
        crate::validation::check(&self.event_type, version, &self.data)?;
        Event::decode(&self.event_type, version, self.data.clone())
    }

    /// Parses an envelope from the bytes of a message.
    pub fn from_slice(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|source| DecodeError::Envelope { source })?;
        if envelope.specversion != SPEC_VERSION {
            return Err(DecodeError::SpecVersion(envelope.specversion));
        }
        Ok(envelope)
    }

    /// Serialises the envelope as structured-mode CloudEvents JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising a struct of strings, ids, a timestamp and a JSON value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `dataschema` URN of an event type and version, e.g.
/// `urn:order-saga:events:order.placed:v1`; it names `schemas/events/order.placed/v1.json`.
pub fn schema_urn(event_type: &str, version: u32) -> String {
    format!("urn:order-saga:events:{event_type}:v{version}")
}

fn parse_schema_urn(urn: &str, event_type: &str) -> Result<u32, DecodeError> {
    let invalid = || DecodeError::DataSchema {
        dataschema: urn.to_owned(),
        event_type: event_type.to_owned(),
    };
    let version = urn
        .strip_prefix("urn:order-saga:events:")
        .and_then(|rest| rest.strip_prefix(event_type))
        .and_then(|rest| rest.strip_prefix(":v"))
        .ok_or_else(invalid)?;
    version.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::OrderCompleted;

    fn metadata() -> Metadata {
        Metadata {
            id: Uuid::nil(),
            source: "/services/order".to_owned(),
            time: DateTime::UNIX_EPOCH,
            correlationid: "c".to_owned(),
            causationid: None,
        }
    }

    #[test]
    fn an_envelope_round_trips_through_json() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: Uuid::nil(),
        });
        let envelope = Envelope::wrap(&event, metadata());
        let parsed = Envelope::from_slice(&envelope.to_vec()).unwrap();
        assert_eq!(parsed, envelope);
        assert_eq!(parsed.event().unwrap(), event);
        assert_eq!(
            parsed.dataschema,
            "urn:order-saga:events:order.completed:v1"
        );
    }

    #[test]
    fn an_old_version_is_upcast_and_still_readable_as_published() {
        use crate::order::{OrderLine, OrderPlaced, Shipping};
        let v1 = Event::OrderPlaced(OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            items: vec![OrderLine {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            total_cents: 2500,
            payment_method: "tok_ok".into(),
            shipping: Shipping {
                country: "NL".into(),
                address: "Damrak 1".into(),
            },
        });
        let envelope = Envelope::wrap(&v1, metadata());
        assert_eq!(envelope.dataschema, "urn:order-saga:events:order.placed:v1");
        assert_eq!(envelope.event_as_published().unwrap(), v1);
        let Event::OrderPlacedV2(v2) = envelope.event().unwrap() else {
            panic!("order.placed v1 was not upcast to v2");
        };
        assert_eq!(v2.currency, "EUR");
        assert_eq!(v2.items[0].discount_cents, 0);
        assert_eq!(v2.total_cents, 2500);
    }

    #[test]
    fn an_unknown_version_is_a_decode_error() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: Uuid::nil(),
        });
        let mut envelope = Envelope::wrap(&event, metadata());
        envelope.dataschema = schema_urn("order.completed", 9);
        assert!(matches!(
            envelope.event(),
            Err(DecodeError::UnknownType { version: 9, .. })
        ));
    }

    #[test]
    fn a_schema_of_another_type_is_rejected() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: Uuid::nil(),
        });
        let mut envelope = Envelope::wrap(&event, metadata());
        envelope.dataschema = schema_urn("order.placed", 1);
        assert!(matches!(
            envelope.event(),
            Err(DecodeError::DataSchema { .. })
        ));
    }

    #[test]
    fn garbage_is_an_envelope_error() {
        assert!(matches!(
            Envelope::from_slice(b"not json"),
            Err(DecodeError::Envelope { .. })
        ));
    }
}
