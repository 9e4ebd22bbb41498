//! The fulfillment reactions against a real database: each path, duplicates, a payment that
//! arrives before its order, and concurrent deliveries for one order.

use std::sync::Arc;

use events::Event;
use events::fulfillment::{FulfillmentFailed, FulfillmentScheduled};
use fulfillment::domain::ShipmentStatus;
use fulfillment::store;
use runtime::consumer::HandlerError;
use runtime::testing;
use uuid::Uuid;

use crate::harness::{deliver, order_placed, payment_authorized, reactions, scratch_database};

#[tokio::test]
async fn a_paid_order_is_scheduled_once_however_often_the_payment_arrives() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    assert_eq!(
        deliver(&database.pool, order_placed(order_id, "NL"))
            .await
            .unwrap(),
        vec![]
    );

    let first = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();
    let again = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();

    let [
        Event::FulfillmentScheduled(FulfillmentScheduled {
            shipment_id,
            carrier,
            ..
        }),
    ] = first.as_slice()
    else {
        panic!("expected one fulfillment.scheduled, got {first:?}");
    };
    assert_eq!(carrier, "PostNL");
    assert_eq!(again, vec![]);
    let (shipment, customer_id) = store::find_shipment(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shipment.status,
        ShipmentStatus::Scheduled {
            shipment_id: *shipment_id,
            carrier: "PostNL".to_owned()
        }
    );
    assert_eq!(customer_id.as_deref(), Some("c-1"));
}

#[tokio::test]
async fn a_paid_order_to_antarctica_fails_once() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "AQ"))
        .await
        .unwrap();

    let first = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();
    let again = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();

    assert_eq!(
        first,
        vec![Event::FulfillmentFailed(FulfillmentFailed {
            order_id,
            reason: "cannot ship to AQ".to_owned(),
        })]
    );
    assert_eq!(again, vec![]);
}

#[tokio::test]
async fn a_payment_before_the_order_is_known_is_retried_until_it_is() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();

    let early = deliver(&database.pool, payment_authorized(order_id)).await;
    assert!(matches!(early, Err(HandlerError::NotYet(_))), "{early:?}");

    deliver(&database.pool, order_placed(order_id, "DE"))
        .await
        .unwrap();
    let retried = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();
    assert!(
        matches!(retried.as_slice(), [Event::FulfillmentScheduled(FulfillmentScheduled { carrier, .. })] if carrier == "DHL"),
        "{retried:?}"
    );
}

#[tokio::test]
async fn a_repeated_order_placed_keeps_the_first_destination() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "NL"))
        .await
        .unwrap();
    deliver(&database.pool, order_placed(order_id, "AQ"))
        .await
        .unwrap();

    let shipped = deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();
    assert!(
        matches!(shipped.as_slice(), [Event::FulfillmentScheduled(_)]),
        "{shipped:?}"
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_a_payment_book_one_shipment() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "NL"))
        .await
        .unwrap();

    let outcomes = testing::deliver_concurrently(
        &database.pool,
        Arc::new(reactions()),
        "SELECT 1 FROM destinations WHERE order_id = $1 FOR UPDATE",
        order_id,
        vec![payment_authorized(order_id), payment_authorized(order_id)],
    )
    .await;

    // Both succeed (neither needs a retry), and only one books.
    let published: usize = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap().len())
        .sum();
    assert_eq!(published, 1);
}
