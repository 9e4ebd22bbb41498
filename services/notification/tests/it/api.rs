//! `GET /notifications?order_id=` against a real database, errors included.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use crate::harness::{TestDatabase, deliver, order_completed, order_placed};

async fn get(database: &TestDatabase, uri: &str) -> (StatusCode, Value) {
    let response = notification::http::routes(database.pool.clone())
        .oneshot(
            Request::get(uri)
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await
        .expect("routers never fail");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("failed to read the body");
    (
        status,
        serde_json::from_slice(&body).expect("the body is not JSON"),
    )
}

#[tokio::test]
async fn an_orders_notifications_are_listed_oldest_first() {
    let database = TestDatabase::create().await;
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
    let database = TestDatabase::create().await;
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
    let database = TestDatabase::create().await;
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
