//! A payment gateway simulator: the HTTP API the payment service calls to authorize and
//! refund, with answers decided by the payment token (`tok_ok` authorizes, `tok_decline` is
//! declined), idempotency keys honoured like a real gateway, and faults that can be set while
//! it runs (`PUT /control`): added latency, an error rate, or being down altogether.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use runtime::settings::LogFormat;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

/// The token the simulator authorizes.
pub const TOKEN_AUTHORIZED: &str = "tok_ok";
/// The token the simulator declines as a refused card.
pub const TOKEN_DECLINED: &str = "tok_decline";

/// The simulator's settings; the faults can also be changed at run time.
#[derive(Debug, Clone, Parser)]
#[command(about, version)]
pub struct Config {
    /// Address the gateway API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8090")]
    pub http_addr: SocketAddr,

    /// Latency added to every call.
    #[arg(long, env = "GATEWAY_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Share of calls (0.0 to 1.0) answered with 503 before doing anything.
    #[arg(long, env = "GATEWAY_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Log format: `json` or `pretty`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// The faults in force; `PUT /control` replaces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    pub latency_ms: u64,
    pub error_rate: f64,
    /// Every call answered 503.
    pub down: bool,
}

/// What the simulator has done, for tests and people: `GET /stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Calls received, including failed and repeated ones.
    pub calls: u64,
    /// Distinct authorizations granted (a repeated key does not count again).
    pub authorizations: u64,
    /// Distinct refunds made.
    pub refunds: u64,
}

#[derive(Debug, Deserialize)]
pub struct AuthorizationRequest {
    pub idempotency_key: String,
    pub payment_method: String,
    pub amount_cents: i64,
}

#[derive(Debug, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub authorization_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Default)]
struct Ledger {
    faults: Faults,
    stats: Stats,
    /// Answers by idempotency key: a repeated request gets the first answer.
    answers: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
struct AppState {
    ledger: Arc<Mutex<Ledger>>,
}

impl AppState {
    fn faults(&self) -> Faults {
        self.with_ledger(|ledger| ledger.faults)
    }

    fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        // A poisoned lock only means a handler panicked mid-update of plain counters.
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut ledger)
    }

    /// Counts the call, waits the latency, and fails it if a fault says so.
    async fn suffer_faults(&self) -> Result<(), Response> {
        self.with_ledger(|ledger| ledger.stats.calls += 1);
        let faults = self.faults();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if faults.down || rand::random::<f64>() < faults.error_rate {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "gateway unavailable (simulated)" })),
            )
                .into_response());
        }
        Ok(())
    }
}

/// A bound simulator, ready to run.
#[derive(Debug)]
pub struct Simulator {
    listener: TcpListener,
    state: AppState,
}

impl Simulator {
    /// Binds the listener (port 0 works) with the configured faults.
    pub async fn bind(config: Config) -> anyhow::Result<Simulator> {
        let listener = TcpListener::bind(config.http_addr).await?;
        let ledger = Ledger {
            faults: Faults {
                latency_ms: u64::try_from(config.latency.as_millis()).unwrap_or(u64::MAX),
                error_rate: config.error_rate.clamp(0.0, 1.0),
                down: false,
            },
            ..Ledger::default()
        };
        Ok(Simulator {
            listener,
            state: AppState {
                ledger: Arc::new(Mutex::new(ledger)),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "gateway simulator listening");
        axum::serve(self.listener, routes(self.state))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/authorizations", post(authorize))
        .route("/v1/refunds", post(refund))
        .route("/control", get(get_control).put(put_control))
        .route("/stats", get(get_stats))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .with_state(state)
}

async fn authorize(
    State(state): State<AppState>,
    Json(request): Json<AuthorizationRequest>,
) -> Response {
    if let Err(unavailable) = state.suffer_faults().await {
        return unavailable;
    }
    let answer = state.with_ledger(|ledger| {
        if let Some(answer) = ledger.answers.get(&request.idempotency_key) {
            return answer.clone();
        }
        let answer = match request.payment_method.as_str() {
            TOKEN_AUTHORIZED => {
                ledger.stats.authorizations += 1;
                json!({
                    "status": "authorized",
                    "authorization_id": format!("auth_{}", request.idempotency_key.replace('-', "")),
                    "amount_cents": request.amount_cents,
                })
            }
            TOKEN_DECLINED => json!({ "status": "declined", "reason": "card_declined" }),
            _ => json!({ "status": "declined", "reason": "unsupported_payment_method" }),
        };
        ledger
            .answers
            .insert(request.idempotency_key.clone(), answer.clone());
        answer
    });
    Json(answer).into_response()
}

async fn refund(State(state): State<AppState>, Json(request): Json<RefundRequest>) -> Response {
    if let Err(unavailable) = state.suffer_faults().await {
        return unavailable;
    }
    let answer = state.with_ledger(|ledger| {
        if let Some(answer) = ledger.answers.get(&request.idempotency_key) {
            return answer.clone();
        }
        ledger.stats.refunds += 1;
        let answer = json!({
            "status": "refunded",
            "authorization_id": request.authorization_id,
            "amount_cents": request.amount_cents,
        });
        ledger
            .answers
            .insert(request.idempotency_key.clone(), answer.clone());
        answer
    });
    Json(answer).into_response()
}

async fn get_control(State(state): State<AppState>) -> Json<Faults> {
    Json(state.faults())
}

async fn put_control(State(state): State<AppState>, Json(faults): Json<Faults>) -> Response {
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({ "error": "error_rate must be between 0.0 and 1.0", "field": "error_rate" }),
            ),
        )
            .into_response();
    }
    state.with_ledger(|ledger| ledger.faults = faults);
    tracing::info!(?faults, "faults changed");
    Json(faults).into_response()
}

async fn get_stats(State(state): State<AppState>) -> Json<Stats> {
    Json(state.with_ledger(|ledger| ledger.stats))
}
