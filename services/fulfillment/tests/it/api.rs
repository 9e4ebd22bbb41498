//! `GET /shipments/{order_id}` against a real database, errors and access included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase, token};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{deliver, order_placed, payment_authorized, scratch_database};

async fn get(database: &ScratchDatabase, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    testing::call(fulfillment::http::routes(database.pool.clone()), request).await
}

/// The customer `harness::order_placed` places its orders for.
const OWNER: &str = "c-1";

/// `GET uri` on a service that verifies tokens, bearing `token` if there is one.
async fn get_with_token(
    database: &ScratchDatabase,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    testing::get_with_token(fulfillment::http::routes(database.pool.clone()), uri, token).await
}

/// The answer for an order without a shipment.
fn not_found(order_id: Uuid) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"error": format!("no shipment for order {order_id}")}),
    )
}

/// An order placed by [`OWNER`] and paid, so it has a scheduled shipment.
async fn shipped_order(database: &ScratchDatabase) -> Uuid {
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "NL"))
        .await
        .expect("the event is handled");
    deliver(&database.pool, payment_authorized(order_id))
        .await
        .expect("the event is handled");
    order_id
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

#[tokio::test]
async fn a_customer_reads_the_shipment_of_their_own_order() {
    let database = scratch_database().await;
    let order_id = shipped_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/shipments/{order_id}"),
        Some(&token(OWNER, &[])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], json!(order_id));
    assert_eq!(body["status"], "scheduled");
}

#[tokio::test]
async fn another_customers_shipment_is_answered_like_an_unknown_order() {
    let database = scratch_database().await;
    let order_id = shipped_order(&database).await;
    let unknown = Uuid::now_v7();
    let stranger = token("c-2", &[]);
    assert_eq!(
        get_with_token(&database, &format!("/shipments/{unknown}"), Some(&stranger)).await,
        not_found(unknown)
    );
    assert_eq!(
        get_with_token(
            &database,
            &format!("/shipments/{order_id}"),
            Some(&stranger)
        )
        .await,
        not_found(order_id)
    );
}

#[tokio::test]
async fn an_admin_reads_any_customers_shipment() {
    let database = scratch_database().await;
    let order_id = shipped_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/shipments/{order_id}"),
        Some(&token("ops", &["admin"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], json!(order_id));
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_unauthorized() {
    let database = scratch_database().await;
    let order_id = shipped_order(&database).await;
    let uri = format!("/shipments/{order_id}");
    for token in [None, Some("not.a.jwt")] {
        let (status, body) = get_with_token(&database, &uri, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body["error"].is_string(), "{token:?}: {body}");
    }
}

#[tokio::test]
async fn a_shipment_without_a_known_owner_is_shown_only_to_an_admin_or_unverified() {
    let database = scratch_database().await;
    let order_id = shipped_order(&database).await;
    // As an order recorded before the owner was kept.
    sqlx::query("UPDATE destinations SET customer_id = NULL WHERE order_id = $1")
        .bind(order_id)
        .execute(&database.pool)
        .await
        .unwrap();
    let uri = format!("/shipments/{order_id}");
    assert_eq!(
        get_with_token(&database, &uri, Some(&token(OWNER, &[]))).await,
        not_found(order_id)
    );
    let (status, _) = get_with_token(&database, &uri, Some(&token("ops", &["admin"]))).await;
    assert_eq!(status, StatusCode::OK);
    // The default of `testing::call`: INSECURE_DEV_AUTH, which may read everything.
    let (status, _) = get(&database, &uri).await;
    assert_eq!(status, StatusCode::OK);
}
