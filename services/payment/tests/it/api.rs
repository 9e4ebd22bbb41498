//! `GET /payments/{order_id}` against a real database, errors and access included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase, token};
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

/// The customer `harness::order_placed` places its orders for.
const OWNER: &str = "c-1";

/// `GET uri` on a service that verifies tokens, bearing `token` if there is one.
async fn get_with_token(
    database: &ScratchDatabase,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    testing::get_with_token(payment::http::routes(database.pool.clone()), uri, token).await
}

/// The answer for an order without a payment.
fn not_found(order_id: Uuid) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"error": format!("no payment for order {order_id}")}),
    )
}

/// An order placed by [`OWNER`], with its pending payment.
async fn placed_order(database: &ScratchDatabase) -> Uuid {
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "tok_ok", 2500))
        .await
        .expect("the event is handled");
    order_id
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

#[tokio::test]
async fn a_customer_reads_the_payment_of_their_own_order() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/payments/{order_id}"),
        Some(&token(OWNER, &[])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], json!(order_id));
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn another_customers_payment_is_answered_like_an_unknown_order() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let unknown = Uuid::now_v7();
    let stranger = token("c-2", &[]);
    assert_eq!(
        get_with_token(&database, &format!("/payments/{unknown}"), Some(&stranger)).await,
        not_found(unknown)
    );
    assert_eq!(
        get_with_token(&database, &format!("/payments/{order_id}"), Some(&stranger)).await,
        not_found(order_id)
    );
}

#[tokio::test]
async fn an_admin_reads_any_customers_payment() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/payments/{order_id}"),
        Some(&token("ops", &["admin"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], json!(order_id));
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_unauthorized() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let uri = format!("/payments/{order_id}");
    for token in [None, Some("not.a.jwt")] {
        let (status, body) = get_with_token(&database, &uri, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body["error"].is_string(), "{token:?}: {body}");
    }
}

#[tokio::test]
async fn a_payment_without_a_known_owner_is_shown_only_to_an_admin_or_unverified() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    // As a payment recorded before the owner was kept.
    sqlx::query("UPDATE payments SET customer_id = NULL WHERE order_id = $1")
        .bind(order_id)
        .execute(&database.pool)
        .await
        .unwrap();
    let uri = format!("/payments/{order_id}");
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
