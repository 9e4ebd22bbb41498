//! The payment gateway client: the one synchronous call in the system, because the payment
//! service cannot decide without the answer. Each call has a timeout, is retried with backoff
//! under the same idempotency key (so a retry never charges twice), and goes through a circuit
//! breaker so that a gateway that is down fails fast instead of tying up consumers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use thiserror::Error;
use tracing::Instrument;
use uuid::Uuid;

use crate::breaker::Breaker;

/// The gateway's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOutcome {
    Authorized { authorization_id: String },
    Declined { reason: String },
}

/// Why the gateway gave no answer. All of these are worth trying again later.
#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("the payment gateway is failing; its circuit breaker is open")]
    CircuitOpen,
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
    #[error("the payment gateway answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// The delay before the first retry of a call; each later one doubles, up to
/// [`RETRY_MAX_DELAY`], and jitter adds up to as much again.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(60);

/// How the client talks to the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub url: String,
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub attempts: usize,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

impl GatewayOptions {
    /// The longest one call can take: every attempt running into the timeout, with the
    /// longest backoff between them. The reaction that calls holds its transaction open that
    /// long, so the database must not end idle transactions sooner.
    pub fn longest_call(&self) -> Duration {
        let attempts = self.attempts.max(1);
        let mut longest = self
            .timeout
            .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX));
        let mut delay = RETRY_MIN_DELAY;
        for _ in 1..attempts {
            longest = longest.saturating_add(delay.saturating_mul(2));
            delay = delay.saturating_mul(2).min(RETRY_MAX_DELAY);
        }
        longest
    }
}

/// The payment gateway, over HTTP.
#[derive(Debug, Clone)]
pub struct Gateway {
    client: reqwest::Client,
    base_url: String,
    attempts: usize,
    breaker: Arc<Mutex<Breaker>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum AuthorizationAnswer {
    Authorized { authorization_id: String },
    Declined { reason: String },
}

#[derive(Debug, Deserialize)]
struct RefundAnswer {}

impl Gateway {
    pub fn new(options: &GatewayOptions) -> Result<Gateway, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()?;
        Ok(Gateway {
            client,
            base_url: options.url.trim_end_matches('/').to_owned(),
            attempts: options.attempts.max(1),
            breaker: Arc::new(Mutex::new(Breaker::new(
                options.breaker_failures,
                options.breaker_open_for,
            ))),
        })
    }

    /// Authorizes `amount_cents` of `currency` on `payment_method`. The order id is the idempotency key:
    /// asking again (a retry, a redelivery) answers with the same authorization.
    pub async fn authorize(
        &self,
        order_id: Uuid,
        payment_method: &str,
        amount_cents: i64,
        currency: &str,
    ) -> Result<GatewayOutcome, GatewayError> {
        let answer: AuthorizationAnswer = self
            .call(
                "/v1/authorizations",
                json!({
                    "idempotency_key": order_id.to_string(),
                    "payment_method": payment_method,
                    "amount_cents": amount_cents,
                    "currency": currency,
                }),
            )
            .await?;
        Ok(match answer {
            AuthorizationAnswer::Authorized { authorization_id } => {
                GatewayOutcome::Authorized { authorization_id }
            }
            AuthorizationAnswer::Declined { reason } => GatewayOutcome::Declined { reason },
        })
    }

    /// Gives `amount_cents` of the order's authorization back, once however often it is asked.
    pub async fn refund(
        &self,
        order_id: Uuid,
        authorization_id: &str,
        amount_cents: i64,
    ) -> Result<(), GatewayError> {
        let _: RefundAnswer = self
            .call(
                "/v1/refunds",
                json!({
                    "idempotency_key": format!("refund-{order_id}"),
                    "authorization_id": authorization_id,
                    "amount_cents": amount_cents,
                }),
            )
            .await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, GatewayError> {
        (|| self.call_once(path, &body))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(RETRY_MIN_DELAY)
                    .with_max_delay(RETRY_MAX_DELAY)
                    .with_max_times(self.attempts - 1)
                    .with_jitter(),
            )
            .when(|error| matches!(error, GatewayError::Unavailable(_)))
            .notify(|error, delay| tracing::warn!(%error, ?delay, "gateway call failed; retrying"))
            .await
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, GatewayError> {
        if !self.with_breaker(|breaker| breaker.allow(Instant::now())) {
            return Err(GatewayError::CircuitOpen);
        }
        let result = self.send(path, body).await;
        // A refusal (4xx) is an answer: the gateway itself is fine.
        let healthy = !matches!(result, Err(GatewayError::Unavailable(_)));
        self.with_breaker(|breaker| breaker.record(healthy, Instant::now()));
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.base_url);
        // A CLIENT span per attempt; the body (payment method, amount) stays out of it.
        let span = tracing::info_span!(
            "gateway call",
            otel.name = %format_args!("POST {path}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.full = %url,
            http.response.status_code = tracing::field::Empty,
        );
        let mut request = self.client.post(&url).json(body);
        for (name, value) in runtime::telemetry::context_headers(&span) {
            request = request.header(name, value);
        }
        let unavailable = |error: reqwest::Error| GatewayError::Unavailable(error.to_string());
        let sent = request.send().instrument(span.clone()).await;
        let response = sent.map_err(|error| {
            span.record("otel.status_code", "ERROR");
            unavailable(error)
        })?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            return Err(GatewayError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(GatewayError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        response.json().await.map_err(unavailable)
    }

    fn with_breaker<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        // The breaker is plain state; a panic elsewhere cannot leave it half-written.
        let mut breaker = self
            .breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut breaker)
    }
}
