//! `GET /payments/{order_id}` against a real database, errors included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    deliver, fulfillment_failed, inventory_reserved, order_placed, scratch_database,
};

async fn get(database: &ScratchDatabase, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    testing::call(payment::http::routes(database.pool.clone()), request).await
}

#[tokio::test]
async fn a_payment_shows_its_status_and_amounts() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .unwrap();
    assert_eq!(
        get(&database, &format!("/payments/{order_id}")).await,
        (
            StatusCode::OK,
            json!({"order_id": order_id, "status": "pending", "amount_cents": 2500, "currency": "EUR", "refunded_cents": 0})
        )
    );

    deliver(&database.pool, inventory_reserved(order_id))
        .await
        .unwrap();
    deliver(&database.pool, fulfillment_failed(order_id))
        .await
        .unwrap();
    assert_eq!(
        get(&database, &format!("/payments/{order_id}")).await,
        (
            StatusCode::OK,
            json!({"order_id": order_id, "status": "refunded", "amount_cents": 2500, "currency": "EUR", "refunded_cents": 2500})
        )
    );
}

#[tokio::test]
async fn an_unknown_order_has_no_payment() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    assert_eq!(
        get(&database, &format!("/payments/{order_id}")).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": format!("no payment for order {order_id}")})
        )
    );
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_has_no_payment_and_gets_a_json_error() {
    let database = scratch_database().await;
    assert_eq!(
        get(&database, "/payments/nope").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no payment for order nope"})
        )
    );
    // Not even UTF-8 once decoded: still a JSON 404, never a plain-text rejection.
    let (status, body) = get(&database, "/payments/%FF").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");
}
