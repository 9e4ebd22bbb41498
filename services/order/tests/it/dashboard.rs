//! `GET /dashboard` against a real database: orders in every state, inserted directly, show
//! up in the page's figures.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use runtime::testing::ScratchDatabase;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tower::ServiceExt;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

const TRACE_UI: &str = "http://jaeger.test:16686";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One order as the saga would have left it: placed `placed_ago` seconds ago, last changed
/// `took` seconds after that, its deadline `deadline_in` seconds from now (negative: past).
struct Order {
    status: &'static str,
    reason: Option<&'static str>,
    placed_ago: f64,
    took: f64,
    deadline_in: f64,
    traceparent: Option<String>,
}

impl Order {
    fn new(
        status: &'static str,
        reason: Option<&'static str>,
        placed_ago: f64,
        took: f64,
    ) -> Order {
        Order {
            status,
            reason,
            placed_ago,
            took,
            deadline_in: 30.0,
            traceparent: None,
        }
    }
}

/// Inserts `order` with a fresh UUIDv7, as `POST /orders` mints them, and returns the id.
async fn insert(pool: &PgPool, order: Order) -> Uuid {
    let order_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, email, items, total_cents, payment_method, \
         shipping, status, reason, created_at, updated_at, deadline_at, traceparent) \
         VALUES ($1, 'c-1', 'c1@example.com', '[]', 2500, 'tok_ok', \
         '{\"country\": \"NL\", \"address\": \"Damrak 1\"}', $2, $3, \
         now() - make_interval(secs => $4), \
         now() - make_interval(secs => $4) + make_interval(secs => $5), \
         now() + make_interval(secs => $6), $7)",
    )
    .bind(order_id)
    .bind(order.status)
    .bind(order.reason)
    .bind(order.placed_ago)
    .bind(order.took)
    .bind(order.deadline_in)
    .bind(order.traceparent)
    .execute(pool)
    .await
    .expect("failed to insert an order");
    order_id
}

/// `GET /dashboard` through the service's router: status, content type and page.
async fn dashboard(pool: &PgPool) -> (StatusCode, String, String) {
    let router = axum::Router::from(order::dashboard::routes(pool.clone(), TRACE_UI.to_owned()))
        .layer(axum::Extension(std::sync::Arc::new(
            runtime::auth::Authenticator::insecure(),
        )));
    let request = Request::get("/dashboard")
        .body(Body::empty())
        .expect("a valid request");
    let response = router.oneshot(request).await.expect("routers never fail");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("failed to read the body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("the page is UTF-8"),
    )
}

/// The markup from `id="<id>"` up to the end of its element, to check one figure at a time.
fn element<'a>(page: &'a str, id: &str, end: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in the page:\n{page}"));
    let length = page[start..]
        .find(end)
        .unwrap_or_else(|| panic!("element {id} does not end with {end}"));
    &page[start..start + length]
}

#[tokio::test]
async fn the_overview_counts_orders_in_every_state() {
    let database = ScratchDatabase::create("order", &MIGRATIONS).await;
    let pool = &database.pool;
    // Ended long ago: outside every window, but still a recent order if few are newer.
    insert(pool, Order::new("completed", None, 7200.0, 1.0)).await;
    for took in [1.0, 2.0, 3.0] {
        insert(pool, Order::new("completed", None, 120.0, took)).await;
    }
    let traced = insert(
        pool,
        Order {
            traceparent: Some(format!("00-{TRACE_ID}-00f067aa0ba902b7-01")),
            ..Order::new("completed", None, 60.0, 2.0)
        },
    )
    .await;
    insert(
        pool,
        Order::new("rejected", Some("out_of_stock"), 50.0, 0.5),
    )
    .await;
    insert(
        pool,
        Order::new("cancelled", Some("payment_declined"), 40.0, 1.5),
    )
    .await;
    insert(
        pool,
        Order::new("cancelled", Some("deadline_exceeded"), 80.0, 31.0),
    )
    .await;
    insert(pool, Order::new("pending", None, 1.0, 0.0)).await;
    insert(
        pool,
        Order {
            deadline_in: -5.0,
            ..Order::new("paid", None, 35.0, 0.2)
        },
    )
    .await;
    let untraced = insert(
        pool,
        Order::new("cancelling", Some("customer_request"), 2.0, 1.0),
    )
    .await;

    let (status, content_type, page) = dashboard(pool).await;

    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for (tile, value) in [
        ("placed", 10),
        ("completed", 4),
        ("rejected", 1),
        ("cancelled", 2),
        ("in-flight", 3),
        ("stuck", 1),
    ] {
        assert_eq!(
            element(&page, &format!("tile-{tile}"), "</b>"),
            format!("id=\"tile-{tile}\">{value}"),
            "tile {tile}"
        );
    }
    assert!(
        page.contains(
            "7 sagas ended in the last 10 minutes: 4 completed · 1 rejected · 2 cancelled"
        ),
        "{page}"
    );
    // p50 of 1, 2, 2, 3 s; p99 interpolated between 2 and 3 s.
    let completed = element(&page, "durations-completed", "</tr>");
    assert!(
        completed.contains("<td class=\"number\">4</td><td class=\"number\">2.00 s</td><td class=\"number\">2.70 s</td><td class=\"number\">2.97 s</td>"),
        "{completed}"
    );
    let cancelled = element(&page, "durations-cancelled", "</tr>");
    assert!(
        cancelled.contains("<td class=\"number\">2</td>"),
        "{cancelled}"
    );
    assert!(page.contains("<code>deadline_exceeded</code>"));
    assert!(page.contains("<code>out_of_stock</code>"));
    let paid = element(&page, "in-flight-paid", "</tr>");
    assert!(
        paid.contains("<span class=\"alert-text\">1</span>"),
        "{paid}"
    );

    assert!(page.contains(&format!("href=\"{TRACE_UI}/trace/{TRACE_ID}\"")));
    assert_eq!(page.matches("/trace/").count(), 1);
    // Newest first: the cancelling order (no trace) heads the list, the traced one is there.
    let first_row = page
        .find(&format!("/orders/{untraced}"))
        .expect("the newest order is listed");
    assert!(
        first_row
            < page
                .find(&format!("/orders/{traced}"))
                .expect("the traced order is listed")
    );
}

#[tokio::test]
async fn an_empty_database_gives_a_page_of_zeros() {
    let database = ScratchDatabase::create("order", &MIGRATIONS).await;

    let (status, _, page) = dashboard(&database.pool).await;

    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"tile-placed\">0</b>"), "{page}");
    assert!(page.contains("id=\"tile-stuck\">0</b>"));
    assert!(page.contains("0 sagas ended in the last 10 minutes"));
    assert!(page.contains("no order placed yet"));
    assert_eq!(page.matches("<g><title>").count(), 60);
}
