//! Test support for the services' integration tests, not used at run time (compiled only with
//! the `testing` feature): a scratch database per test, a way to hand events to a service's
//! [`Handler`] as the consumer would, one at a time or overlapping, and a way to call its
//! router and read the JSON answer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use events::Event;
use events::envelope::{Envelope, Metadata};
use events::inventory::ProductUpdated;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

use crate::consumer::{Handler, HandlerError, Incoming};
use crate::outbox::Outbox;

/// The server scratch databases are created on: `TEST_POSTGRES_URL`, else the local
/// trust-auth server.
fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database of one test's own, with the runtime's tables and the service's, dropped when
/// the test ends, pass or fail.
pub struct ScratchDatabase {
    pub pool: PgPool,
    name: String,
}

impl ScratchDatabase {
    /// Creates `scratch_<service>_<uuid>` and applies the runtime's migrations and `migrations`.
    pub async fn create(service: &str, migrations: &Migrator) -> ScratchDatabase {
        let name = format!("scratch_{service}_{}", Uuid::now_v7().simple());
        let url = format!("{}/{name}", server_url());
        let options = crate::database::DatabaseOptions::new(&url, 4);
        let pool = crate::database::connect_and_migrate(&options, migrations)
            .await
            .expect("failed to create the scratch database");
        ScratchDatabase { pool, name }
    }

    /// Where the database is, for a test that needs connections of its own.
    pub fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and blocking inside the test's runtime would panic: use a thread
        // with a runtime of its own. FORCE closes the pool's connections.
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection =
                    PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("failed to drop scratch database {}", self.name);
        }
    }
}

/// Writes `count` catalogue events (`product.updated` of `sku-0`, `sku-1`, …) to the outbox
/// in `tx`.
pub async fn enqueue_product_updates(tx: &mut PgConnection, outbox: &Outbox, count: usize) {
    for n in 0..count {
        let event = Event::ProductUpdated(ProductUpdated {
            sku: format!("sku-{n}"),
            name: format!("Product {n}"),
            price_cents: 100,
        });
        outbox
            .enqueue(tx, &event, None)
            .await
            .expect("failed to enqueue");
    }
}

/// Hands `event` to `handler` in a transaction, committed if the handler succeeds, as the
/// consumer does. Every delivery has a new event id, as a duplicate published twice would.
pub async fn deliver<H: Handler>(
    pool: &PgPool,
    handler: &H,
    event: Event,
) -> Result<Vec<Event>, HandlerError> {
    let envelope = Envelope::wrap(
        &event,
        Metadata {
            id: Uuid::now_v7(),
            source: "/tests".to_owned(),
            time: Utc::now(),
            correlationid: event.key(),
            causationid: None,
        },
    );
    // As the consumer does: validate and decode what was published, upcasting an old version;
    // what the consumer would dead-letter is a permanent error here.
    let decoded = envelope
        .event()
        .map_err(|error| HandlerError::Permanent(error.to_string()))?;
    let incoming = Incoming {
        subject: event.subject(),
        envelope,
        event: decoded,
        delivery: 1,
    };
    let mut tx = pool.begin().await.expect("failed to begin");
    let outcome = handler.handle(&mut tx, &incoming).await;
    if outcome.is_ok() {
        tx.commit().await.expect("failed to commit");
    }
    outcome
}

/// Delivers `events` to `handler` concurrently while the test holds the order's row lock
/// (`lock`, a `SELECT ... FOR UPDATE` taking the order id), and lets go only once every
/// delivery waits on a lock: however the handler is written, the deliveries then overlap.
/// The outcomes come back in the order of `events`.
pub async fn deliver_concurrently<H: Handler>(
    pool: &PgPool,
    handler: Arc<H>,
    lock: &'static str,
    order_id: Uuid,
    events: Vec<Event>,
) -> Vec<Result<Vec<Event>, HandlerError>> {
    let mut holder = pool.begin().await.expect("failed to begin");
    sqlx::query(lock)
        .bind(order_id)
        .execute(&mut *holder)
        .await
        .expect("failed to lock the order");
    let expected = events.len() as i64;
    let deliveries: Vec<_> = events
        .into_iter()
        .map(|event| {
            let pool = pool.clone();
            let handler = Arc::clone(&handler);
            tokio::spawn(async move { deliver(&pool, handler.as_ref(), event).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("failed to look at pg_stat_activity");
        if waiting >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {waiting} of {expected} deliveries ever waited on a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder
        .rollback()
        .await
        .expect("failed to let go of the order");
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.expect("a delivery panicked"));
    }
    outcomes
}

/// Hands `request` to `router`, as the server would, and reads the answer's body. Callers
/// are unverified (`INSECURE_DEV_AUTH`) unless the router installs an authenticator itself.
pub async fn send(router: impl Into<Router>, request: Request<Body>) -> (StatusCode, Bytes) {
    let response = router
        .into()
        .layer(axum::Extension(std::sync::Arc::new(
            crate::auth::Authenticator::insecure(),
        )))
        .oneshot(request)
        .await
        .expect("routers never fail");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("failed to read the body");
    (status, body)
}

/// Hands `request` to `router`, as the server would, and reads the answer's JSON body.
pub async fn call(router: impl Into<Router>, request: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = send(router, request).await;
    (
        status,
        serde_json::from_slice(&body).expect("the body is not JSON"),
    )
}

/// The issuer of the tokens [`token`] signs and [`verifying_tokens`] accepts.
pub const TOKEN_ISSUER: &str = "https://issuer.test";
/// Their audience.
pub const TOKEN_AUDIENCE: &str = "orders";
const TOKEN_SECRET: &[u8] = b"the secret the services' tests sign tokens with";

/// A bearer token for `subject` holding `roles`, valid for five minutes.
pub fn token(subject: &str, roles: &[&str]) -> String {
    sign(subject, roles, jsonwebtoken::get_current_timestamp() + 300)
}

/// A token for `subject`, signed right but an hour past its expiry.
pub fn expired_token(subject: &str) -> String {
    sign(subject, &[], jsonwebtoken::get_current_timestamp() - 3600)
}

fn sign(subject: &str, roles: &[&str], expires_at: u64) -> String {
    let claims = crate::auth::TokenClaims {
        sub: subject,
        iss: TOKEN_ISSUER,
        aud: TOKEN_AUDIENCE,
        exp: expires_at,
        roles,
    };
    crate::auth::sign_hs256(TOKEN_SECRET, &claims).expect("HS256 signing cannot fail")
}

/// `router` verifying the tokens [`token`] signs, instead of letting every caller in.
pub fn verifying_tokens(router: impl Into<Router>) -> Router {
    router.into().layer(axum::Extension(std::sync::Arc::new(
        crate::auth::Authenticator::shared_secret(TOKEN_SECRET, TOKEN_ISSUER, TOKEN_AUDIENCE),
    )))
}

/// `GET uri` on `router` verifying tokens, bearing `token` if there is one.
pub async fn get_with_token(
    router: impl Into<Router>,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    call(
        verifying_tokens(router),
        request.body(Body::empty()).expect("a valid request"),
    )
    .await
}
