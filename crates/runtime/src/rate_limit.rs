//! Per-client rate limiting of a service's API: each client address may send
//! `RATE_LIMIT_PER_SECOND` requests a second on average, in bursts of up to
//! `RATE_LIMIT_BURST`; past that it is answered `429` with `Retry-After`. Health, readiness,
//! metrics and the OpenAPI document are not limited: probes and scrapers must always get in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::ApiError;

/// Every this many requests the limiter forgets clients whose bucket is full again, so its
/// memory follows the clients active now, not every address ever seen.
const FORGET_EVERY: u64 = 4096;

/// The limiter of one service process.
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    requests: AtomicU64,
}

impl RateLimit {
    /// `per_second` requests a second per client, bursts of `burst`; `None` when
    /// `per_second` is 0 (limiting off).
    pub fn new(per_second: u32, burst: u32) -> Option<Arc<RateLimit>> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        Some(Arc::new(RateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
            requests: AtomicU64::new(0),
        }))
    }

    /// Lets a request from `client` through, or says how many whole seconds to wait.
    fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Rounded up: a client that waits what it is told must get in.
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware: answers `429` to a client over its rate.
pub async fn limit(State(limit): State<Arc<RateLimit>>, request: Request, next: Next) -> Response {
    // In-process tests call the router without a connection; they are one client.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    match limit.check(client) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => ApiError::TooManyRequests { retry_after }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_burst_waits_while_others_go_on() {
        let limit = RateLimit::new(1, 3).expect("limiting is on");
        let first = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert_eq!(limit.check(first), Ok(()));
        }
        assert_eq!(limit.check(first), Err(1));
        assert_eq!(limit.check(IpAddr::from([10, 0, 0, 2])), Ok(()));
    }

    #[test]
    fn zero_turns_limiting_off() {
        assert!(RateLimit::new(0, 10).is_none());
    }
}
