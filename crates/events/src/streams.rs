//! Where events travel: one JetStream stream per bounded context, subjects
//! `<context>.<event>.<aggregate-id>`, and the dead-letter stream.

/// A bounded context that owns a stream of its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Order,
    Inventory,
    Payment,
    Fulfillment,
}

impl Context {
    pub const ALL: [Context; 4] = [
        Context::Order,
        Context::Inventory,
        Context::Payment,
        Context::Fulfillment,
    ];

    /// The JetStream stream holding this context's events.
    pub fn stream(self) -> &'static str {
        match self {
            Context::Order => "ORDER",
            Context::Inventory => "INVENTORY",
            Context::Payment => "PAYMENT",
            Context::Fulfillment => "FULFILLMENT",
        }
    }

    /// The subject prefix of this context's events.
    pub fn prefix(self) -> &'static str {
        match self {
            Context::Order => "order",
            Context::Inventory => "inventory",
            Context::Payment => "payment",
            Context::Fulfillment => "fulfillment",
        }
    }

    /// The wildcard covering every subject of the stream, e.g. `order.>`.
    pub fn subjects(self) -> String {
        format!("{}.>", self.prefix())
    }

    /// The context an event type (`order.placed`) belongs to.
    pub fn of_event_type(event_type: &str) -> Option<Context> {
        let prefix = event_type.split('.').next()?;
        Context::ALL.into_iter().find(|c| c.prefix() == prefix)
    }
}

/// The stream for messages that could not be processed.
pub const DLQ_STREAM: &str = "DLQ";
/// Subject prefix of dead letters: `dlq.<consumer>.<original subject>`.
pub const DLQ_PREFIX: &str = "dlq";

/// The subject filter matching every event of one type, e.g. `order.placed.*`.
pub fn type_filter(event_type: &str) -> String {
    format!("{event_type}.*")
}

/// The subject an event is published on: `<type>.<aggregate id>`.
pub fn subject(event_type: &str, key: &str) -> String {
    format!("{event_type}.{key}")
}

/// The dead-letter subject for a message a consumer gave up on.
pub fn dlq_subject(consumer: &str, original_subject: &str) -> String {
    format!("{DLQ_PREFIX}.{consumer}.{original_subject}")
}

/// True when `key` can be used as the last token of a subject (and so as a SKU).
pub fn is_subject_token(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_maps_to_its_context() {
        assert_eq!(Context::of_event_type("order.placed"), Some(Context::Order));
        assert_eq!(
            Context::of_event_type("fulfillment.failed"),
            Some(Context::Fulfillment)
        );
        assert_eq!(Context::of_event_type("shipping.lost"), None);
    }

    #[test]
    fn subject_tokens_exclude_wildcards_and_separators() {
        assert!(is_subject_token("MUG-01_b"));
        assert!(!is_subject_token("a.b"));
        assert!(!is_subject_token("*"));
        assert!(!is_subject_token(">"));
        assert!(!is_subject_token(""));
        assert!(!is_subject_token("with space"));
    }
}
