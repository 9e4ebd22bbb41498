//! How `sagactl` prints what it finds and does: an aligned block per dead letter and a line
//! per advisory for people, one JSON object per line for scripts (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::advisories::MaxDeliveriesAdvisory;
use crate::audit::AuditEntry;
use crate::dead_letters::{Content, DeadLetter, Redriven};

/// Shown where a dead letter lacks a header.
const MISSING: &str = "-";

fn human_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

fn json_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn or_missing(value: Option<impl ToString>) -> String {
    value.map_or_else(|| MISSING.to_owned(), |value| value.to_string())
}

/// A dead letter for people: its `DLQ` sequence and time, then one labelled line per fact.
pub fn dead_letter_text(letter: &DeadLetter) -> String {
    let mut lines = vec![
        ("consumer", or_missing(letter.consumer())),
        ("original subject", or_missing(letter.original_subject())),
        ("reason", or_missing(letter.reason())),
        (
            "deliveries",
            format!(
                "{} (stream sequence {})",
                or_missing(letter.deliveries()),
                or_missing(letter.stream_sequence())
            ),
        ),
    ];
    match letter.content() {
        Content::Event { event_type, id } => lines.push(("event", format!("{event_type} {id}"))),
        Content::Opaque { preview, truncated } => lines.push((
            "payload",
            format!("{preview:?}{}", if truncated { " ..." } else { "" }),
        )),
    }
    for (name, value) in letter.other_headers() {
        lines.push(("header", format!("{name}: {value}")));
    }
    let mut text = format!("#{}  {}\n", letter.sequence, human_time(letter.time));
    for (label, value) in lines {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "    {label:<18}{value}");
    }
    text
}

/// A dead letter for scripts: one JSON object. `event` is null and `payload_preview` set
/// when the payload is not an envelope.
pub fn dead_letter_json(letter: &DeadLetter) -> Value {
    let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in letter.other_headers() {
        headers.entry(name).or_default().push(value);
    }
    let (event, payload_preview) = match letter.content() {
        Content::Event { event_type, id } => (json!({ "type": event_type, "id": id }), None),
        Content::Opaque { preview, .. } => (Value::Null, Some(preview)),
    };
    json!({
        "sequence": letter.sequence,
        "time": json_time(letter.time),
        "subject": letter.subject,
        "consumer": letter.consumer(),
        "original_subject": letter.original_subject(),
        "reason": letter.reason(),
        "stream_sequence": letter.stream_sequence(),
        "deliveries": letter.deliveries(),
        "headers": headers,
        "event": event,
        "payload_preview": payload_preview,
    })
}

/// An advisory for people, on one line.
pub fn advisory_text(advisory: &MaxDeliveriesAdvisory) -> String {
    format!(
        "#{}  {}  stream {}  consumer {}  stream sequence {}  deliveries {}",
        advisory.sequence,
        human_time(advisory.time),
        advisory.stream,
        advisory.consumer,
        or_missing(advisory.stream_sequence),
        or_missing(advisory.deliveries),
    )
}

/// An advisory for scripts: one JSON object.
pub fn advisory_json(advisory: &MaxDeliveriesAdvisory) -> Value {
    json!({
        "sequence": advisory.sequence,
        "time": json_time(advisory.time),
        "stream": advisory.stream,
        "consumer": advisory.consumer,
        "stream_sequence": advisory.stream_sequence,
        "deliveries": advisory.deliveries,
    })
}

/// What one redrive did, on one line.
pub fn redriven_text(redriven: &Redriven, consumer: Option<&str>) -> String {
    let stored = if redriven.duplicate {
        format!(
            "already in {} as #{} (an earlier redrive of it), not stored again",
            redriven.stream, redriven.stream_sequence
        )
    } else {
        format!(
            "stored in {} as #{}",
            redriven.stream, redriven.stream_sequence
        )
    };
    format!(
        "redrove #{} ({}) to {}: {stored}; deleted from DLQ",
        redriven.dlq_sequence,
        or_missing(consumer),
        redriven.subject
    )
}

/// One event of an order's audit trail for people: when, what, from whom, where it is stored.
pub fn audit_text(entry: &AuditEntry) -> String {
    match &entry.event {
        Some(event) => format!(
            "{}  {:<30} {}  from {}  ({} #{})",
            human_time(event.time),
            event.event_type,
            event.id,
            event.source,
            entry.stream,
            entry.sequence
        ),
        None => format!(
            "{}  {:<30} (not an event envelope)  ({} #{})",
            human_time(entry.stored_at),
            entry.event_type(),
            entry.stream,
            entry.sequence
        ),
    }
}

/// One event of an order's audit trail as a JSON object.
pub fn audit_json(entry: &AuditEntry) -> Value {
    serde_json::to_value(entry).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter {
            sequence: 4,
            time: DateTime::from_timestamp(1_794_652_267, 123_000_000).unwrap(),
            subject: "dlq.payment-inventory.inventory.reserved.o-1".into(),
            headers: vec![
                ("Dlq-Consumer".into(), "payment-inventory".into()),
                ("Dlq-Deliveries".into(), "2".into()),
                (
                    "Dlq-Original-Subject".into(),
                    "inventory.reserved.o-1".into(),
                ),
                ("Dlq-Reason".into(), "gave up after 2 deliveries".into()),
                ("Dlq-Stream-Sequence".into(), "7".into()),
                ("Nats-Msg-Id".into(), "payment-inventory:7".into()),
                ("traceparent".into(), "00-abc-def-01".into()),
            ],
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn a_dead_letter_reads_as_a_labelled_block() {
        let text = dead_letter_text(&letter(b"this is not json"));
        assert_eq!(
            text,
            "#4  2026-11-14 10:31:07.123 UTC\n\
             \x20   consumer          payment-inventory\n\
             \x20   original subject  inventory.reserved.o-1\n\
             \x20   reason            gave up after 2 deliveries\n\
             \x20   deliveries        2 (stream sequence 7)\n\
             \x20   payload           \"this is not json\"\n\
             \x20   header            Nats-Msg-Id: payment-inventory:7\n\
             \x20   header            traceparent: 00-abc-def-01\n"
        );
    }

    #[test]
    fn missing_facts_are_shown_as_a_dash() {
        let bare = DeadLetter {
            headers: Vec::new(),
            subject: "dlq.x".into(),
            ..letter(b"")
        };
        let text = dead_letter_text(&bare);
        assert!(text.contains("    consumer          -\n"), "{text}");
        assert!(
            text.contains("    deliveries        - (stream sequence -)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_dead_letter_as_json_has_its_facts_and_other_headers() {
        let value = dead_letter_json(&letter(b"garbage"));
        assert_eq!(value["sequence"], 4);
        assert_eq!(value["time"], "2026-11-14T10:31:07.123Z");
        assert_eq!(value["consumer"], "payment-inventory");
        assert_eq!(value["original_subject"], "inventory.reserved.o-1");
        assert_eq!(value["reason"], "gave up after 2 deliveries");
        assert_eq!(value["stream_sequence"], 7);
        assert_eq!(value["deliveries"], 2);
        assert_eq!(
            value["headers"],
            json!({ "Nats-Msg-Id": ["payment-inventory:7"], "traceparent": ["00-abc-def-01"] })
        );
        assert_eq!(value["event"], Value::Null);
        assert_eq!(value["payload_preview"], "garbage");
        // One line per letter.
        assert!(!value.to_string().contains('\n'));
    }

    #[test]
    fn an_advisory_reads_as_one_line() {
        let advisory = MaxDeliveriesAdvisory {
            sequence: 3,
            time: DateTime::UNIX_EPOCH,
            stream: "ORDER".into(),
            consumer: "payment-order".into(),
            stream_sequence: Some(17),
            deliveries: None,
        };
        assert_eq!(
            advisory_text(&advisory),
            "#3  1970-01-01 00:00:00.000 UTC  stream ORDER  consumer payment-order  \
             stream sequence 17  deliveries -"
        );
        assert_eq!(advisory_json(&advisory)["deliveries"], Value::Null);
    }

    #[test]
    fn a_redrive_says_where_the_letter_went_and_whether_it_was_new() {
        let redriven = Redriven {
            dlq_sequence: 4,
            subject: "inventory.reserved.o-1".into(),
            stream: "INVENTORY".into(),
            stream_sequence: 12,
            duplicate: false,
        };
        assert_eq!(
            redriven_text(&redriven, Some("payment-inventory")),
            "redrove #4 (payment-inventory) to inventory.reserved.o-1: stored in INVENTORY as \
             #12; deleted from DLQ"
        );
        let again = Redriven {
            duplicate: true,
            ..redriven
        };
        assert!(
            redriven_text(&again, None).contains("not stored again"),
            "{}",
            redriven_text(&again, None)
        );
    }
}
