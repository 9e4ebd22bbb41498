//! `GET /notifications?order_id=` against a real database, errors included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::testing::{self, ScratchDatabase};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{deliver, order_completed, order_placed, scratch_database};

async fn get(database: &ScratchDatabase, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    testing::call(notification::http::routes(database.pool.clone()), request).await
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
