//! Orders belong to the customer a bearer token names: the order service's API, verifying
//! real tokens, against a real database. A property test over random customers, orders and
//! attempts shows that nobody ever sees or cancels another customer's order.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use runtime::outbox::Outbox;
use runtime::testing::{self, ScratchDatabase, expired_token, token};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

fn router(pool: &PgPool) -> axum::Router {
    testing::verifying_tokens(order::routes(
        order::http::AppState {
            pool: pool.clone(),
            outbox: Outbox::new("order"),
            deadline: Duration::from_secs(30),
            pricing: order::domain::Pricing::default(),
            placed_version: order::domain::PlacedVersion::V2,
        },
        "http://jaeger.test:16686".to_owned(),
    ))
}

/// A database whose catalogue sells `MUG`.
async fn database() -> ScratchDatabase {
    let database = ScratchDatabase::create("order", &MIGRATIONS).await;
    sqlx::query(
        "INSERT INTO catalogue (sku, name, price_cents, updated_at) VALUES ('MUG', 'Mug', 1250, now())",
    )
    .execute(&database.pool)
    .await
    .expect("the catalogue takes a product");
    database
}

fn order_body() -> Value {
    json!({
        "email": "someone@example.com",
        "items": [{"sku": "MUG", "quantity": 1}],
        "payment_method": "tok_ok",
        "shipping": {"country": "NL", "address": "Damrak 1"},
    })
}

async fn call(
    pool: &PgPool,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("a valid request");
    testing::call(router(pool), request).await
}

async fn place(pool: &PgPool, bearer: &str) -> Uuid {
    let (status, body) = call(pool, "POST", "/orders", Some(bearer), Some(&order_body())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["order_id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .expect("an order id")
}

#[tokio::test]
async fn the_token_names_the_customer_and_only_they_see_and_cancel_the_order() {
    let database = database().await;
    let pool = &database.pool;
    let (alice, bob) = (token("alice", &[]), token("bob", &[]));

    let order_id = place(pool, &alice).await;
    let (status, order) = call(
        pool,
        "GET",
        &format!("/orders/{order_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["customer_id"], "alice");

    // To Bob the order does not exist: the very answer an unknown id gets.
    let (status, seen_by_bob) = call(
        pool,
        "GET",
        &format!("/orders/{order_id}"),
        Some(&bob),
        None,
    )
    .await;
    let unknown = Uuid::now_v7();
    let (_, unknown_answer) =
        call(pool, "GET", &format!("/orders/{unknown}"), Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        seen_by_bob["error"]
            .as_str()
            .map(|e| e.replace(&order_id.to_string(), "ID")),
        unknown_answer["error"]
            .as_str()
            .map(|e| e.replace(&unknown.to_string(), "ID")),
    );
    let (status, _) = call(
        pool,
        "POST",
        &format!("/orders/{order_id}/cancel"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, order) = call(
        pool,
        "GET",
        &format!("/orders/{order_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(order["status"], "pending", "Bob's attempt changed nothing");

    // An operator sees and cancels anyone's.
    let operator = token("ops", &["admin"]);
    let (status, _) = call(
        pool,
        "GET",
        &format!("/orders/{order_id}"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        pool,
        "POST",
        &format!("/orders/{order_id}/cancel"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_a_401_saying_why() {
    let database = database().await;
    let pool = &database.pool;
    let (status, body) = call(pool, "POST", "/orders", None, Some(&order_body())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{body}"
    );

    let expired = expired_token("alice");
    let (status, body) = call(
        pool,
        "GET",
        &format!("/orders/{}", Uuid::now_v7()),
        Some(&expired),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{body}"
    );
    // Public reads need no token.
    let (status, _) = call(pool, "GET", "/catalogue", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_naming_another_customer_is_refused_unless_an_operator_places_it() {
    let database = database().await;
    let pool = &database.pool;
    let mut body = order_body();
    body["customer_id"] = json!("bob");
    let (status, answer) = call(
        pool,
        "POST",
        "/orders",
        Some(&token("alice", &[])),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    body["customer_id"] = json!("alice");
    let (status, _) = call(
        pool,
        "POST",
        "/orders",
        Some(&token("alice", &[])),
        Some(&body),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "repeating one's own id is fine"
    );

    body["customer_id"] = json!("bob");
    let (status, placed) = call(
        pool,
        "POST",
        "/orders",
        Some(&token("ops", &["admin"])),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let uri = format!(
        "/orders/{}",
        placed["order_id"].as_str().unwrap_or_default()
    );
    let (status, order) = call(pool, "GET", &uri, Some(&token("bob", &[])), None).await;
    assert_eq!(
        (status, &order["customer_id"]),
        (StatusCode::OK, &json!("bob"))
    );
}

#[tokio::test]
async fn idempotency_keys_are_each_customers_own() {
    let database = database().await;
    let pool = &database.pool;
    let post = |bearer: String| async move {
        let request = Request::post("/orders")
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "checkout-1")
            .body(Body::from(order_body().to_string()))
            .expect("a valid request");
        testing::call(router(pool), request).await
    };
    let (_, alices) = post(token("alice", &[])).await;
    let (_, alices_again) = post(token("alice", &[])).await;
    let (status, bobs) = post(token("bob", &[])).await;
    assert_eq!(alices["order_id"], alices_again["order_id"]);
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(
        bobs["order_id"], alices["order_id"],
        "Bob must not get Alice's order"
    );
}

#[tokio::test]
async fn the_dashboard_is_for_operators() {
    let database = database().await;
    let pool = &database.pool;
    let (status, _) = call(pool, "GET", "/dashboard", Some(&token("alice", &[])), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let request = Request::get("/dashboard")
        .header(
            "authorization",
            format!("Bearer {}", token("ops", &["admin"])),
        )
        .body(Body::empty())
        .expect("a valid request");
    let (status, _) = testing::send(router(pool), request).await;
    assert_eq!(status, StatusCode::OK);
}

/// What a generated case does: customers place orders, then random customers try to read or
/// cancel random orders.
#[derive(Debug, Clone)]
struct Case {
    /// The owner (0..CUSTOMERS) of each order.
    owners: Vec<usize>,
    /// (who tries, which order, cancel rather than read).
    attempts: Vec<(usize, usize, bool)>,
}

const CUSTOMERS: usize = 4;

fn cases() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0..CUSTOMERS, 1..6),
        prop::collection::vec((0..CUSTOMERS, 0..6usize, any::<bool>()), 1..16),
    )
        .prop_map(|(owners, attempts)| Case { owners, attempts })
}

#[test]
fn no_customer_ever_sees_or_cancels_another_customers_order() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let database = runtime.block_on(database());
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let result = runner.run(&cases(), |case| {
        runtime.block_on(check(&database.pool, case))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

async fn check(pool: &PgPool, case: Case) -> Result<(), TestCaseError> {
    // Fresh customer names per case, so that cases never share orders.
    let run = Uuid::now_v7().simple().to_string();
    let tokens: Vec<String> = (0..CUSTOMERS)
        .map(|customer| token(&format!("{run}-{customer}"), &[]))
        .collect();
    let mut orders = Vec::new();
    for owner in &case.owners {
        orders.push((place(pool, &tokens[*owner]).await, *owner));
    }
    let mut cancelled = vec![false; orders.len()];
    for (who, which, cancel) in case.attempts {
        let index = which % orders.len();
        let (order_id, owner) = orders[index];
        let (status, body) = if cancel {
            call(
                pool,
                "POST",
                &format!("/orders/{order_id}/cancel"),
                Some(&tokens[who]),
                None,
            )
            .await
        } else {
            call(
                pool,
                "GET",
                &format!("/orders/{order_id}"),
                Some(&tokens[who]),
                None,
            )
            .await
        };
        if who == owner {
            let expected = if cancel {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            prop_assert_eq!(status, expected, "the owner was refused: {}", body);
            cancelled[index] |= cancel;
        } else {
            prop_assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "customer {} reached {}'s order: {}",
                who,
                owner,
                body
            );
            prop_assert!(
                !body.to_string().contains(&format!("{run}-{owner}")),
                "{}",
                body
            );
        }
    }
    // Only the owners' own cancellations took effect.
    for ((order_id, owner), cancelled) in orders.iter().zip(cancelled) {
        let (_, order) = call(
            pool,
            "GET",
            &format!("/orders/{order_id}"),
            Some(&tokens[*owner]),
            None,
        )
        .await;
        let expected = if cancelled { "cancelling" } else { "pending" };
        prop_assert_eq!(
            order["status"].as_str(),
            Some(expected),
            "order {}",
            order_id
        );
    }
    Ok(())
}
