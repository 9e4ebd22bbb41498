//! The inventory service's OpenAPI document: checked in and current, OpenAPI 3.1, and
//! listing exactly the routes the service serves.

use runtime::openapi::testing::{
    assert_every_operation_is_served, check_checked_in, operations, serve,
};
use runtime::outbox::Outbox;
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!();

#[test]
fn the_checked_in_document_is_the_one_the_code_generates() {
    check_checked_in("inventory", &inventory::openapi());
}

#[tokio::test]
async fn the_document_lists_every_route_the_service_serves() {
    let document = inventory::openapi();
    let expected = [
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /products",
        "GET /products/{sku}",
        "GET /readyz",
        "PUT /products/{sku}",
    ];
    assert_eq!(
        operations(&document),
        expected.into_iter().map(str::to_owned).collect()
    );

    let database = ScratchDatabase::create("inventory", &MIGRATIONS).await;
    let routes = inventory::http::routes(inventory::http::AppState {
        pool: database.pool.clone(),
        outbox: Outbox::new("inventory"),
    });
    let router = serve(routes, database.pool.clone()).await;
    assert_every_operation_is_served(&router, &document, |name| match name {
        "sku" => "MUG".to_owned(),
        other => panic!("no value for parameter {other}"),
    })
    .await;
}
