//! Checking a payload against the JSON Schema of its type and version before it is decoded,
//! so a consumer rejects what breaks the contract with a reason that names the broken field,
//! formats (UUIDs, timestamps) included.

use std::collections::HashMap;
use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

use crate::catalogue::{CATALOGUE, DecodeError};

/// Schema violations named in one error, at most: the first few say what to fix.
const MAX_REPORTED: usize = 3;

/// A compiled schema, or why it did not compile.
type Compiled = Result<Validator, String>;

/// Every catalogue schema, compiled once per process. A schema that does not compile is a bug
/// of this crate (a unit test compiles them all); its events are then rejected with the reason.
static VALIDATORS: LazyLock<HashMap<(&'static str, u32), Compiled>> = LazyLock::new(|| {
    CATALOGUE
        .iter()
        .map(|entry| {
            let schema = serde_json::to_value((entry.schema)()).unwrap_or(Value::Null);
            // Formats are asserted too: an order id that is no UUID or a time that is no
            // RFC 3339 timestamp breaks the contract as much as a missing field.
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|error| error.to_string());
            ((entry.event_type, entry.version), validator)
        })
        .collect()
});

/// Checks `data` against the schema of `event_type` version `version`.
pub fn check(event_type: &str, version: u32, data: &Value) -> Result<(), DecodeError> {
    let Some(validator) = VALIDATORS.get(&(event_type, version)) else {
        return Err(DecodeError::UnknownType {
            event_type: event_type.to_owned(),
            version,
        });
    };
    let violation = |violations: String| DecodeError::Schema {
        event_type: event_type.to_owned(),
        version,
        violations,
    };
    let validator = validator
        .as_ref()
        .map_err(|error| violation(format!("the schema does not compile: {error}")))?;
    let mut errors = validator.iter_errors(data).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    let mut reported: Vec<String> = Vec::new();
    let mut more = 0;
    for error in errors {
        if reported.len() < MAX_REPORTED {
            let path = error.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            reported.push(format!("at {path}: {error}"));
        } else {
            more += 1;
        }
    }
    let mut violations = reported.join("; ");
    if more > 0 {
        violations.push_str(&format!("; and {more} more"));
    }
    Err(violation(violations))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::Event;
    use crate::payment::PaymentRefunded;

    #[test]
    fn every_catalogue_schema_compiles() {
        for entry in CATALOGUE {
            let compiled = VALIDATORS.get(&(entry.event_type, entry.version));
            assert!(
                matches!(compiled, Some(Ok(_))),
                "{} v{}: {:?}",
                entry.event_type,
                entry.version,
                compiled.map(|c| c.as_ref().err())
            );
        }
    }

    #[test]
    fn a_payload_an_event_of_this_crate_wrote_passes() {
        let event = Event::PaymentRefunded(PaymentRefunded {
            order_id: Uuid::nil(),
            amount_cents: 1250,
        });
        assert!(check(event.event_type(), event.version(), &event.data()).is_ok());
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let data = json!({ "order_id": Uuid::nil(), "amount_cents": 1 });
        assert!(matches!(
            check("payment.refunded", 99, &data),
            Err(DecodeError::UnknownType { version: 99, .. })
        ));
    }

    #[test]
    fn a_format_violation_is_one() {
        let data = json!({ "order_id": "nope", "amount_cents": 1 });
        let message = check("payment.refunded", 1, &data)
            .expect_err("no uuid")
            .to_string();
        assert!(message.contains("at /order_id"), "{message}");
    }

    #[test]
    fn a_violation_names_the_field_and_what_is_wrong() {
        let data = json!({ "order_id": Uuid::nil(), "amount_cents": "lots" });
        let message = check("payment.refunded", 1, &data)
            .expect_err("a string is no amount")
            .to_string();
        assert!(message.contains("does not match its schema"), "{message}");
        assert!(message.contains("at /amount_cents"), "{message}");
    }
}
