//! The payment reactions against a real database: each path, duplicates, facts that arrive
//! early, and concurrent deliveries for one order.

use std::sync::Arc;

use events::Event;
use events::payment::{PaymentAuthorized, PaymentDeclined, PaymentRefunded};
use payment::domain::PaymentStatus;
use payment::store;
use runtime::consumer::HandlerError;
use runtime::testing;
use uuid::Uuid;

use crate::harness::{
    deliver, fulfillment_failed, inventory_reserved, order_placed, reactions, scratch_database,
};

#[tokio::test]
async fn reserved_stock_charges_the_order_once_however_often_it_arrives() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    assert!(
        deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
            .await
            .unwrap()
            .is_empty()
    );

    let first = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();
    let again = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();

    assert_eq!(
        first,
        vec![Event::PaymentAuthorized(PaymentAuthorized {
            order_id,
            amount_cents: 2500,
            authorization_id: format!("auth_{}", order_id.simple()),
        })]
    );
    assert_eq!(again, vec![]);
    let payment = store::find(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.status.as_str(), "authorized");
}

#[tokio::test]
async fn a_declined_card_is_recorded_and_published_once() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_decline", 2500))
        .await
        .unwrap();

    let first = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();
    let again = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();

    assert_eq!(
        first,
        vec![Event::PaymentDeclined(PaymentDeclined {
            order_id,
            reason: "card_declined".to_owned(),
        })]
    );
    assert_eq!(again, vec![]);
    let payment = store::find(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        payment.status,
        PaymentStatus::Declined {
            reason: "card_declined".to_owned()
        }
    );
}

#[tokio::test]
async fn reserved_stock_before_the_order_is_known_is_retried_until_it_is() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();

    let early = deliver(&database.pool, inventory_reserved(order_id)).await;
    assert!(matches!(early, Err(HandlerError::NotYet(_))), "{early:?}");

    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .unwrap();
    let retried = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();
    assert!(
        matches!(retried.as_slice(), [Event::PaymentAuthorized(_)]),
        "{retried:?}"
    );
}

#[tokio::test]
async fn a_failed_fulfillment_refunds_the_authorized_amount_once() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .unwrap();
    deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();

    let first = deliver(&database.pool, fulfillment_failed(order_id))
        .await
        .unwrap();
    let again = deliver(&database.pool, fulfillment_failed(order_id))
        .await
        .unwrap();
    let late_reservation = deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();

    assert_eq!(
        first,
        vec![Event::PaymentRefunded(PaymentRefunded {
            order_id,
            amount_cents: 2500,
        })]
    );
    assert_eq!(again, vec![]);
    assert_eq!(late_reservation, vec![]);
    let payment = store::find(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.status.as_str(), "refunded");
    assert_eq!(payment.refunded_cents(), 2500);
}

#[tokio::test]
async fn a_failed_fulfillment_before_the_order_is_known_is_retried_until_it_is() {
    let database = scratch_database().await;
    let early = deliver(&database.pool, fulfillment_failed(Uuid::now_v7())).await;
    assert!(matches!(early, Err(HandlerError::NotYet(_))), "{early:?}");
}

#[tokio::test]
async fn a_failed_fulfillment_of_a_declined_payment_refunds_nothing() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_decline", 2500))
        .await
        .unwrap();
    deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();

    let refunds = deliver(&database.pool, fulfillment_failed(order_id))
        .await
        .unwrap();

    assert_eq!(refunds, vec![]);
    let payment = store::find(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.refunded_cents(), 0);
}

#[tokio::test]
async fn a_repeated_order_placed_keeps_the_first_payment() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .unwrap();
    deliver(&database.pool, order_placed(order_id, "tok_decline", 9999))
        .await
        .unwrap();

    let payment = store::find(&database.pool, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.amount_cents, 2500);
    assert_eq!(payment.payment_method, "tok_ok");
}

#[tokio::test]
async fn an_order_with_a_negative_total_is_never_retried() {
    let database = scratch_database().await;
    let placed = deliver(&database.pool, order_placed(Uuid::now_v7(), "tok_ok", -2)).await;
    assert!(
        matches!(placed, Err(HandlerError::Permanent(_))),
        "{placed:?}"
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_reserved_stock_charge_once() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .unwrap();

    let outcomes = testing::deliver_concurrently(
        &database.pool,
        Arc::new(reactions().await),
        "SELECT 1 FROM payments WHERE order_id = $1 FOR UPDATE",
        order_id,
        vec![inventory_reserved(order_id), inventory_reserved(order_id)],
    )
    .await;

    let published: usize = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap().len())
        .sum();
    assert_eq!(published, 1);
}
