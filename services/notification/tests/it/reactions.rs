//! The notification reactions against a real database: one notification per order and kind
//! however often its fact arrives, outcomes that arrive before the order, and concurrent
//! deliveries for one order.

use std::sync::Arc;

use notification::domain::NotificationKind;
use notification::store;
use runtime::consumer::HandlerError;
use runtime::testing::{self, ScratchDatabase};
use uuid::Uuid;

use crate::harness::{
    deliver, fulfillment_scheduled, order_completed, order_placed, order_rejected, reactions,
    scratch_database,
};

async fn kinds(database: &ScratchDatabase, order_id: Uuid) -> Vec<NotificationKind> {
    store::list(&database.pool, order_id)
        .await
        .expect("failed to list notifications")
        .into_iter()
        .map(|sent| sent.kind)
        .collect()
}

#[tokio::test]
async fn each_kind_is_sent_once_to_the_orders_contact() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();

    for event in [
        order_placed(order_id, "c1@example.com"),
        order_placed(order_id, "c1@example.com"),
        fulfillment_scheduled(order_id),
        fulfillment_scheduled(order_id),
        order_completed(order_id),
        order_completed(order_id),
    ] {
        assert_eq!(deliver(&database.pool, event).await.unwrap(), vec![]);
    }

    assert_eq!(
        kinds(&database, order_id).await,
        vec![
            NotificationKind::Placed,
            NotificationKind::ShipmentScheduled,
            NotificationKind::Completed
        ]
    );
    let sent = store::list(&database.pool, order_id).await.unwrap();
    assert!(sent.iter().all(|sent| sent.recipient == "c1@example.com"));
}

#[tokio::test]
async fn an_outcome_before_the_order_is_known_is_retried_until_it_is() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();

    let early = deliver(&database.pool, order_rejected(order_id)).await;
    assert!(matches!(early, Err(HandlerError::NotYet(_))), "{early:?}");
    assert_eq!(kinds(&database, order_id).await, vec![]);

    deliver(&database.pool, order_placed(order_id, "c1@example.com"))
        .await
        .unwrap();
    deliver(&database.pool, order_rejected(order_id))
        .await
        .unwrap();
    assert_eq!(
        kinds(&database, order_id).await,
        vec![NotificationKind::Placed, NotificationKind::Rejected]
    );
}

#[tokio::test]
async fn a_repeated_order_placed_keeps_the_first_contact() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "first@example.com"))
        .await
        .unwrap();
    deliver(&database.pool, order_placed(order_id, "second@example.com"))
        .await
        .unwrap();
    deliver(&database.pool, order_completed(order_id))
        .await
        .unwrap();

    let sent = store::list(&database.pool, order_id).await.unwrap();
    assert!(
        sent.iter()
            .all(|sent| sent.recipient == "first@example.com"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_an_outcome_notify_once() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "c1@example.com"))
        .await
        .unwrap();

    let outcomes = testing::deliver_concurrently(
        &database.pool,
        Arc::new(reactions()),
        "SELECT 1 FROM contacts WHERE order_id = $1 FOR UPDATE",
        order_id,
        vec![order_completed(order_id), order_completed(order_id)],
    )
    .await;

    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        kinds(&database, order_id).await,
        vec![NotificationKind::Placed, NotificationKind::Completed]
    );
}
