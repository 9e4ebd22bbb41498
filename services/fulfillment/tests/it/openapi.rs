//! The fulfillment service's OpenAPI document: checked in and current, OpenAPI 3.1, and
//! listing exactly the routes the service serves.

use runtime::openapi::testing::{
    assert_every_operation_is_served, check_checked_in, operations, serve,
};

use crate::harness::scratch_database;

#[test]
fn the_checked_in_document_is_the_one_the_code_generates() {
    check_checked_in("fulfillment", &fulfillment::openapi());
}

#[tokio::test]
async fn the_document_lists_every_route_the_service_serves() {
    let document = fulfillment::openapi();
    let expected = [
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /readyz",
        "GET /shipments/{order_id}",
    ];
    assert_eq!(
        operations(&document),
        expected.into_iter().map(str::to_owned).collect()
    );

    let database = scratch_database().await;
    let routes = fulfillment::http::routes(database.pool.clone());
    let router = serve(routes, database.pool.clone()).await;
    assert_every_operation_is_served(&router, &document, |name| match name {
        "order_id" => uuid::Uuid::now_v7().to_string(),
        other => panic!("no value for parameter {other}"),
    })
    .await;
}
