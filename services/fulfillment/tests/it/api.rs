//! `GET /shipments/{order_id}` against a real database, errors included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{deliver, order_placed, payment_authorized, scratch_database};

async fn get(database: &ScratchDatabase, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    testing::call(fulfillment::http::routes(database.pool.clone()), request).await
}

#[tokio::test]
async fn a_scheduled_shipment_shows_its_carrier_and_no_reason() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "NL"))
        .await
        .unwrap();
    deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();

    let (status, body) = get(&database, &format!("/shipments/{order_id}")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], json!(order_id));
    assert_eq!(body["status"], "scheduled");
    assert_eq!(body["carrier"], "PostNL");
    assert!(body["shipment_id"].is_string(), "{body}");
    assert_eq!(body["reason"], Value::Null);
}

#[tokio::test]
async fn a_failed_shipment_shows_its_reason_and_no_carrier() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "AQ"))
        .await
        .unwrap();
    deliver(&database.pool, payment_authorized(order_id))
        .await
        .unwrap();

    assert_eq!(
        get(&database, &format!("/shipments/{order_id}")).await,
        (
            StatusCode::OK,
            json!({
                "order_id": order_id,
                "status": "failed",
                "shipment_id": null,
                "carrier": null,
                "reason": "cannot ship to AQ"
            })
        )
    );
}

#[tokio::test]
async fn an_order_not_yet_paid_has_no_shipment() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "NL"))
        .await
        .unwrap();
    assert_eq!(
        get(&database, &format!("/shipments/{order_id}")).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": format!("no shipment for order {order_id}")})
        )
    );
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_has_no_shipment_and_gets_a_json_error() {
    let database = scratch_database().await;
    assert_eq!(
        get(&database, "/shipments/abc").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no shipment for order abc"})
        )
    );
    let (status, body) = get(&database, "/shipments/%FF").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");
}
