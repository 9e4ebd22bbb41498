//! The AsyncAPI 3.0 document of the event system, generated from the catalogue, the streams and
//! the table of who sends and receives each event: what `schemas/asyncapi.json` holds.

use serde_json::{Map, Value, json};

use crate::catalogue::CATALOGUE;
use crate::envelope::{Envelope, schema_urn};
use crate::participants::{EventFlow, FLOWS, Participant};
use crate::streams::{Context, type_filter};

/// The AsyncAPI version the document is written in.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// Structured-mode CloudEvents: the whole envelope, `data` included, is the JSON body.
pub const MESSAGE_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The whole document. Deterministic: the same code always gives the same document.
pub fn document() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut schemas = Map::new();

    add_schema(
        &mut schemas,
        "envelope",
        schemars::schema_for!(Envelope).to_value(),
    );
    schemas.insert("natsHeaders".to_owned(), nats_headers());

    for flow in FLOWS {
        let channel_id = camel_case(flow.event_type);
        let context = Context::of_event_type(flow.event_type);
        let stream = context.map_or("", Context::stream);
        let stream_subjects = context.map(Context::subjects).unwrap_or_default();

        let mut channel_messages = Map::new();
        let mut message_refs = Vec::new();
        for entry in CATALOGUE.iter().filter(|e| e.event_type == flow.event_type) {
            let message_id = format!("{channel_id}V{}", entry.version);
            let schema_id = format!("{}.v{}", entry.event_type, entry.version);
            let data = (entry.schema)().to_value();
            let description = data.get("description").cloned();
            add_schema(&mut schemas, &schema_id, data);
            messages.insert(
                message_id.clone(),
                message(
                    flow.event_type,
                    entry.version,
                    flow,
                    &schema_id,
                    description,
                ),
            );
            channel_messages.insert(
                message_id.clone(),
                json!({ "$ref": format!("#/components/messages/{message_id}") }),
            );
            message_refs.push(json!({
                "$ref": format!("#/channels/{channel_id}/messages/{message_id}")
            }));
        }

        channels.insert(
            channel_id.clone(),
            json!({
                "address": format!("{}.{{key}}", flow.event_type),
                "title": flow.event_type,
                "description": format!(
                    "`{}` events, one subject per key. Kept in the JetStream stream `{stream}` \
                     (subjects `{stream_subjects}`); each consumer reads them through its durable \
                     consumer on that stream, filtered on `{}`.",
                    flow.event_type,
                    type_filter(flow.event_type),
                ),
                "parameters": { "key": { "description": flow.key.description() } },
                "messages": channel_messages,
                "x-jetstream-stream": stream,
            }),
        );

        let channel_ref = json!({ "$ref": format!("#/channels/{channel_id}") });
        operations.insert(
            format!(
                "{}Sends{}",
                flow.producer.name(),
                pascal_case(flow.event_type)
            ),
            json!({
                "action": "send",
                "channel": channel_ref,
                "messages": message_refs,
                "title": format!("{} publishes {}", flow.producer.name(), flow.event_type),
                "summary": format!(
                    "The {} service publishes `{}` through its transactional outbox, with \
                     `Nats-Msg-Id` set to the event id.",
                    flow.producer.name(),
                    flow.event_type
                ),
                "tags": [service_tag_ref(flow.producer)],
            }),
        );
        for consumer in flow.consumers {
            operations.insert(
                format!(
                    "{}Receives{}",
                    consumer.name(),
                    pascal_case(flow.event_type)
                ),
                json!({
                    "action": "receive",
                    "channel": channel_ref,
                    "messages": message_refs,
                    "title": format!("{} consumes {}", consumer.name(), flow.event_type),
                    "summary": format!(
                        "The {} service reacts to `{}` (durable pull consumer on `{stream}`, \
                         acknowledged after its effect commits).",
                        consumer.name(),
                        flow.event_type
                    ),
                    "tags": [service_tag_ref(*consumer)],
                }),
            );
        }
    }

    let tags: Map<String, Value> = Participant::ALL
        .into_iter()
        .map(|participant| {
            (
                participant.name().to_owned(),
                json!({
                    "name": participant.name(),
                    "description": format!("The {} service.", participant.name()),
                }),
            )
        })
        .collect();

    sort_keys(json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Order saga events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The facts the order saga's five services publish on NATS JetStream, \
                and which service sends and receives each. Every message is a CloudEvents 1.0 \
                envelope in structured JSON mode; its `dataschema` names the payload's type and \
                version. Generated from the `events` crate; see schemas/README.md.",
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "defaultContentType": MESSAGE_CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The services' default `NATS_URL`; JetStream enabled.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "tags": tags,
        },
    }))
}

/// The same value with every object's keys in sorted order, whether or not some crate in the
/// build turns on serde_json's `preserve_order`: the checked-in file must not depend on that.
fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sort_keys(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

fn message(
    event_type: &str,
    version: u32,
    flow: &EventFlow,
    schema_id: &str,
    description: Option<Value>,
) -> Value {
    let mut message = json!({
        "name": format!("{event_type}.v{version}"),
        "title": format!("{event_type} v{version}"),
        "contentType": MESSAGE_CONTENT_TYPE,
        "headers": { "$ref": "#/components/schemas/natsHeaders" },
        "payload": {
            "allOf": [
                { "$ref": "#/components/schemas/envelope" },
                {
                    "type": "object",
                    "properties": {
                        "type": { "const": event_type },
                        "dataschema": { "const": schema_urn(event_type, version) },
                        "source": { "const": flow.producer.source() },
                        "subject": {
                            "description": format!(
                                "{} Also the last token of the NATS subject.",
                                flow.key.description()
                            ),
                        },
                        "data": { "$ref": format!("#/components/schemas/{schema_id}") },
                    },
                },
            ],
        },
        "correlationId": {
            "description": "The saga the event belongs to: the order id, on every event of \
                one order.",
            "location": "$message.payload#/correlationid",
        },
    });
    if let (Some(description), Some(object)) = (description, message.as_object_mut()) {
        object.insert("description".to_owned(), description);
    }
    message
}

/// The NATS headers a message carries beside its body.
fn nats_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The envelope's `id`: JetStream drops a second publish of the \
                    same event within the stream's dedup window. A redriven dead letter carries \
                    `redrive:<DLQ sequence>` instead (its envelope id is unchanged).",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the publishing span, when tracing is on.",
            },
            "tracestate": {
                "type": "string",
                "description": "W3C trace state that goes with `traceparent`, if any.",
            },
        },
        "required": ["Nats-Msg-Id"],
    })
}

fn service_tag_ref(participant: Participant) -> Value {
    json!({ "$ref": format!("#/components/tags/{}", participant.name()) })
}

/// Adds a schemars schema under `id` in `components/schemas`, with each of its `$defs` as a
/// sibling component `<id>.<name>`: in an AsyncAPI document `#/$defs/...` would point at the
/// document's root, so every reference is rewritten to the component it became.
fn add_schema(schemas: &mut Map<String, Value>, id: &str, mut schema: Value) {
    let mut definitions = Map::new();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        if let Some(Value::Object(defs)) = object.remove("$defs") {
            definitions = defs;
        }
    }
    rewrite_references(&mut schema, id);
    schemas.insert(id.to_owned(), schema);
    for (name, mut definition) in definitions {
        rewrite_references(&mut definition, id);
        schemas.insert(format!("{id}.{name}"), definition);
    }
}

fn rewrite_references(schema: &mut Value, id: &str) {
    match schema {
        Value::Object(object) => {
            for (keyword, value) in object.iter_mut() {
                match (keyword.as_str(), value) {
                    ("$ref", Value::String(reference)) => {
                        *reference = component_reference(reference, id);
                    }
                    (_, value) => rewrite_references(value, id),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, id)),
        _ => {}
    }
}

/// `#/$defs/OrderLine` in schema `id` → `#/components/schemas/<id>.OrderLine`; `#` (the
/// schema itself) → `#/components/schemas/<id>`.
fn component_reference(reference: &str, id: &str) -> String {
    if reference == "#" {
        return format!("#/components/schemas/{id}");
    }
    match reference.strip_prefix("#/$defs/") {
        Some(rest) => format!("#/components/schemas/{id}.{rest}"),
        None => reference.to_owned(),
    }
}

/// `order.cancellation_requested` → `orderCancellationRequested`.
fn camel_case(event_type: &str) -> String {
    let pascal = pascal_case(event_type);
    let mut chars = pascal.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// `order.cancellation_requested` → `OrderCancellationRequested`.
fn pascal_case(event_type: &str) -> String {
    event_type
        .split(['.', '_'])
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                for (keyword, value) in object {
                    match (keyword.as_str(), value) {
                        ("$ref", Value::String(reference)) => found.push(reference.clone()),
                        (_, value) => references(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_points_into_the_document() {
        let document = document();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            let pointer = reference.strip_prefix('#').unwrap_or("not local");
            assert!(document.pointer(pointer).is_some(), "{reference} dangles");
        }
    }

    #[test]
    fn every_event_type_has_a_channel_on_its_stream_with_its_messages() {
        let document = document();
        for flow in FLOWS {
            let channel = &document["channels"][camel_case(flow.event_type)];
            assert_eq!(channel["address"], format!("{}.{{key}}", flow.event_type));
            assert!(channel["parameters"]["key"].is_object());
            let versions = CATALOGUE
                .iter()
                .filter(|e| e.event_type == flow.event_type)
                .count();
            assert_eq!(
                channel["messages"].as_object().map(Map::len),
                Some(versions)
            );
            let stream = Context::of_event_type(flow.event_type).map(Context::stream);
            assert_eq!(channel["x-jetstream-stream"].as_str(), stream);
        }
    }

    #[test]
    fn the_producer_sends_and_each_consumer_receives() {
        let document = document();
        let operations = document["operations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let expected: usize = FLOWS.iter().map(|flow| 1 + flow.consumers.len()).sum();
        assert_eq!(operations.len(), expected);
        let placed = &operations["orderSendsOrderPlaced"];
        assert_eq!(placed["action"], "send");
        assert_eq!(placed["channel"]["$ref"], "#/channels/orderPlaced");
        let received = &operations["notificationReceivesFulfillmentScheduled"];
        assert_eq!(received["action"], "receive");
        assert_eq!(
            received["messages"][0]["$ref"],
            "#/channels/fulfillmentScheduled/messages/fulfillmentScheduledV1"
        );
    }

    #[test]
    fn a_payload_is_the_envelope_with_its_events_data() {
        let document = document();
        let payload = &document["components"]["messages"]["orderPlacedV1"]["payload"];
        assert_eq!(payload["allOf"][0]["$ref"], "#/components/schemas/envelope");
        let own = &payload["allOf"][1]["properties"];
        assert_eq!(own["type"]["const"], "order.placed");
        assert_eq!(
            own["dataschema"]["const"],
            "urn:order-saga:events:order.placed:v1"
        );
        assert_eq!(own["source"]["const"], "/services/order");
        assert_eq!(own["data"]["$ref"], "#/components/schemas/order.placed.v1");
        let data = &document["components"]["schemas"]["order.placed.v1"];
        assert_eq!(
            data["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/order.placed.v1.OrderLine"
        );
        assert!(data.get("$defs").is_none() && data.get("$schema").is_none());
    }

    #[test]
    fn references_to_definitions_become_component_references() {
        assert_eq!(
            component_reference("#/$defs/OrderLine", "order.placed.v1"),
            "#/components/schemas/order.placed.v1.OrderLine"
        );
        assert_eq!(
            component_reference("#", "x.v1"),
            "#/components/schemas/x.v1"
        );
        assert_eq!(
            camel_case("order.cancellation_requested"),
            "orderCancellationRequested"
        );
        assert_eq!(
            pascal_case("inventory.product_updated"),
            "InventoryProductUpdated"
        );
    }
}
