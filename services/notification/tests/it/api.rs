//! `GET /notifications?order_id=` against a real database, errors and access included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase, token};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{deliver, order_completed, order_placed, scratch_database};

async fn get(database: &ScratchDatabase, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    testing::call(notification::http::routes(database.pool.clone()), request).await
}

/// The customer `harness::order_placed` places its orders for.
const OWNER: &str = "c-1";

/// `GET uri` on a service that verifies tokens, bearing `token` if there is one.
async fn get_with_token(
    database: &ScratchDatabase,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    testing::get_with_token(
        notification::http::routes(database.pool.clone()),
        uri,
        token,
    )
    .await
}

/// An order placed by [`OWNER`], with the notification that it was placed.
async fn placed_order(database: &ScratchDatabase) -> Uuid {
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "c1@example.com"))
        .await
        .expect("the event is handled");
    order_id
}

/// The kinds of the notifications in a listing.
fn kinds(listing: &Value) -> Vec<&str> {
    listing
        .as_array()
        .expect("a list")
        .iter()
        .map(|notification| notification["kind"].as_str().expect("a kind"))
        .collect()
}

#[tokio::test]
async fn an_orders_notifications_are_listed_oldest_first() {
    let database = scratch_database().await;
    let order_id = Uuid::now_v7();
    deliver(&database.pool, order_placed(order_id, "c1@example.com"))
        .await
        .unwrap();
    deliver(&database.pool, order_completed(order_id))
        .await
        .unwrap();

    let (status, body) = get(&database, &format!("/notifications?order_id={order_id}")).await;

    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(&str, &str)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap(),
                n["recipient"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("placed", "c1@example.com"),
            ("completed", "c1@example.com")
        ]
    );
    assert!(body[0]["sent_at"].as_str().unwrap() <= body[1]["sent_at"].as_str().unwrap());
}

#[tokio::test]
async fn an_unknown_order_has_no_notifications() {
    let database = scratch_database().await;
    assert_eq!(
        get(
            &database,
            &format!("/notifications?order_id={}", Uuid::now_v7())
        )
        .await,
        (StatusCode::OK, json!([]))
    );
}

#[tokio::test]
async fn a_missing_or_malformed_order_id_is_a_json_error_naming_it() {
    let database = scratch_database().await;
    for uri in [
        "/notifications",
        "/notifications?order=1",
        "/notifications?order_id=",
        "/notifications?order_id=nope",
        "/notifications?order_id=%FF",
    ] {
        let (status, body) = get(&database, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"].as_str().unwrap().contains("order_id"),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_customer_reads_the_notifications_of_their_own_order() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/notifications?order_id={order_id}"),
        Some(&token(OWNER, &[])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&body), ["placed"]);
}

#[tokio::test]
async fn another_customers_notifications_are_answered_like_an_unknown_order() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let stranger = token("c-2", &[]);
    let unknown = get_with_token(
        &database,
        &format!("/notifications?order_id={}", Uuid::now_v7()),
        Some(&stranger),
    )
    .await;
    assert_eq!(unknown, (StatusCode::OK, json!([])));
    assert_eq!(
        get_with_token(
            &database,
            &format!("/notifications?order_id={order_id}"),
            Some(&stranger)
        )
        .await,
        unknown
    );
}

#[tokio::test]
async fn an_admin_reads_any_customers_notifications() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let (status, body) = get_with_token(
        &database,
        &format!("/notifications?order_id={order_id}"),
        Some(&token("ops", &["admin"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&body), ["placed"]);
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_unauthorized() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let uri = format!("/notifications?order_id={order_id}");
    for token in [None, Some("not.a.jwt")] {
        let (status, body) = get_with_token(&database, &uri, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body["error"].is_string(), "{token:?}: {body}");
    }
}

#[tokio::test]
async fn an_unverified_caller_reads_any_customers_notifications() {
    let database = scratch_database().await;
    let order_id = placed_order(&database).await;
    let (status, body) = get(&database, &format!("/notifications?order_id={order_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&body), ["placed"]);
}
