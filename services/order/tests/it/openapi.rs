//! The order service's OpenAPI document: checked in and current, OpenAPI 3.1, and listing
//! exactly the routes the service serves.

use std::time::Duration;

use runtime::openapi::testing::{
    assert_every_operation_is_served, check_checked_in, operations, serve,
};
use runtime::outbox::Outbox;
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!();

#[test]
fn the_checked_in_document_is_the_one_the_code_generates() {
    check_checked_in("order", &order::openapi());
}

#[tokio::test]
async fn the_document_lists_every_route_the_service_serves() {
    let document = order::openapi();
    let expected = [
        "GET /catalogue",
        "GET /catalogue/{sku}",
        "GET /dashboard",
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /orders/{order_id}",
        "GET /readyz",
        "POST /orders",
        "POST /orders/{order_id}/cancel",
    ];
    assert_eq!(
        operations(&document),
        expected.into_iter().map(str::to_owned).collect()
    );

    let database = ScratchDatabase::create("order", &MIGRATIONS).await;
    let routes = order::routes(
        order::http::AppState {
            pool: database.pool.clone(),
            outbox: Outbox::new("order"),
            deadline: Duration::from_secs(30),
            pricing: order::domain::Pricing::default(),
            placed_version: order::domain::PlacedVersion::V2,
        },
        "http://jaeger.test:16686".to_owned(),
    );
    let router = serve(routes, database.pool.clone()).await;
    assert_every_operation_is_served(&router, &document, |name| match name {
        "order_id" => uuid::Uuid::now_v7().to_string(),
        "sku" => "MUG".to_owned(),
        other => panic!("no value for parameter {other}"),
    })
    .await;
}
