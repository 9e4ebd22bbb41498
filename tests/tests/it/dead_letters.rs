//! Messages that can never be processed go to the `DLQ` stream at once, with the reason and
//! the original subject in headers, and the consumers carry on with the next message.

use e2e::api::OrderRequest;
use e2e::polling::{Check, SAGA_TIMEOUT, SETTLE_TIMEOUT, wait_for};
use e2e::system::{System, SystemOptions};
use events::envelope::{Envelope, schema_urn};
use uuid::Uuid;

/// The services that consume `order.placed`, by durable consumer name.
const ORDER_PLACED_CONSUMERS: [&str; 4] = [
    "inventory-order",
    "payment-order",
    "fulfillment-order",
    "notification-order",
];

fn envelope(event_type: &str, version: u32, data: serde_json::Value) -> Envelope {
    Envelope {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: "/tests/dead-letters".into(),
        event_type: event_type.into(),
        subject: "x".into(),
        time: chrono::Utc::now(),
        dataschema: schema_urn(event_type, version),
        datacontenttype: "application/json".into(),
        correlationid: "x".into(),
        causationid: None,
        data,
    }
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("DLQ-MUG", "Mug", 500, 5)
        .await?;
    let jetstream = system.jetstream().await?;

    // Not an envelope at all; an unknown version; data that violates the v1 schema.
    let garbage_subject = format!("order.placed.{}", Uuid::now_v7());
    let future_subject = format!("order.placed.{}", Uuid::now_v7());
    let invalid_subject = format!("order.placed.{}", Uuid::now_v7());
    let future = envelope("order.placed", 9, serde_json::json!({ "anything": true }));
    let invalid = envelope("order.placed", 1, serde_json::json!({ "order_id": "nope" }));
    for (subject, payload) in [
        (&garbage_subject, b"this is not json".to_vec()),
        (&future_subject, future.to_vec()),
        (&invalid_subject, invalid.to_vec()),
    ] {
        jetstream
            .publish(subject.clone(), payload.into())
            .await?
            .await?;
    }

    let expected = [
        (&garbage_subject, "not a CloudEvents JSON envelope"),
        (
            &future_subject,
            "unknown event type \"order.placed\" version 9",
        ),
        (
            &invalid_subject,
            "does not match its schema: at /: \"customer_id\" is a required property",
        ),
    ];
    let letters = wait_for(
        "every poison message in the DLQ",
        SETTLE_TIMEOUT,
        || async {
            let letters = system.dead_letters().await?;
            let all_there = expected.iter().all(|(subject, _)| {
                ORDER_PLACED_CONSUMERS.iter().all(|consumer| {
                    letters
                        .iter()
                        .any(|letter| letter.contains(&format!("dlq.{consumer}.{subject}")))
                })
            });
            Ok(if all_there {
                Check::Done(letters)
            } else {
                Check::NotYet(format!("{letters:#?}"))
            })
        },
    )
    .await?;
    for (subject, reason) in expected {
        for letter in letters
            .iter()
            .filter(|letter| letter.contains(subject.as_str()))
        {
            assert!(
                letter.contains(reason),
                "reason {reason:?} missing: {letter}"
            );
            assert!(
                letter.contains(&format!("Dlq-Original-Subject={subject}")),
                "original subject missing: {letter}"
            );
            assert!(
                letter.contains("Dlq-Deliveries=1"),
                "dead-lettered at once: {letter}"
            );
        }
    }

    // The consumers were not stuck on the poison: a real order still goes through.
    let order_id = system
        .place_accepted_order(&OrderRequest::new("DLQ-MUG", 1))
        .await?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");
    system.shutdown().await
}
