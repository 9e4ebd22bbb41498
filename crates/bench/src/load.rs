//! Placing orders: open loop at a fixed rate (each order has a due time, and every latency is
//! measured from it, so a slow system cannot hide its queueing by slowing the generator: no
//! coordinated omission), and closed loop (a fixed number of customers, each placing its next
//! order once the last saga ended) to find the maximum throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use tokio::time::{Instant, sleep_until, timeout};
use uuid::Uuid;

use crate::mix::Mix;
use crate::stats::{PhaseFigures, Recorder};
use crate::watch::Watcher;

/// How long a phase waits, after its last order, for the sagas still running.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closed-loop customer waits for its saga before giving up on it.
const SAGA_TIMEOUT: Duration = Duration::from_secs(30);
/// Most orders in flight in the open loop; beyond it the generator counts an error instead
/// of piling up tasks (the system is far past saturation by then).
const MAX_IN_FLIGHT: u64 = 50_000;

#[derive(Deserialize)]
struct Accepted {
    order_id: Uuid,
}

/// Places orders against one system and waits for their sagas.
pub struct Driver {
    http: reqwest::Client,
    orders_url: String,
    mix: Mix,
    watcher: Watcher,
    next: AtomicU64,
    show_progress: bool,
}

impl Driver {
    pub fn new(
        http: reqwest::Client,
        order_url: &str,
        mix: Mix,
        watcher: Watcher,
        show_progress: bool,
    ) -> Driver {
        Driver {
            http,
            orders_url: format!("{}/orders", order_url.trim_end_matches('/')),
            mix,
            watcher,
            next: AtomicU64::new(0),
            show_progress,
        }
    }

    /// Places one order due at `due`; the receiver fires when its saga has ended.
    async fn place(
        &self,
        due: Instant,
        recorder: &Arc<Recorder>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.mix.path_of(n);
        let sent = self
            .http
            .post(&self.orders_url)
            .json(&path.request(n))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                recorder.error("POST /orders timed out");
                return None;
            }
            Err(_) => {
                recorder.error("POST /orders failed to connect or send");
                return None;
            }
        };
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            recorder.error(format!("POST /orders answered {status}"));
            return None;
        }
        let answered = Instant::now();
        let Ok(accepted) = response.json::<Accepted>().await else {
            recorder.error("POST /orders answered 202 without an order id");
            return None;
        };
        recorder.placed(answered, answered.saturating_duration_since(due));
        Some(
            self.watcher
                .expect(accepted.order_id, due, path, Arc::clone(recorder)),
        )
    }

    /// Open loop: `rate` orders a second for `duration`, then waits for the sagas to end.
    pub async fn open_loop(self: &Arc<Self>, rate: f64, duration: Duration) -> PhaseFigures {
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start));
        self.watcher.count_delays_in(&recorder);
        let progress = self.progress(&format!("open loop at {rate:.0}/s"), duration, &recorder);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let in_flight = Arc::new(AtomicU64::new(0));
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            sleep_until(due).await;
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                recorder.error("generator: too many orders in flight");
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (driver, recorder, in_flight) = (
                Arc::clone(self),
                Arc::clone(&recorder),
                Arc::clone(&in_flight),
            );
            tokio::spawn(async move {
                if let Some(ended) = driver.place(due, &recorder).await {
                    let _ = ended.await;
                }
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        sleep_until(start + duration).await;
        self.drain(&recorder, progress, duration).await
    }

    /// Closed loop: `customers` each place an order and wait for its saga, for `duration`.
    pub async fn closed_loop(
        self: &Arc<Self>,
        customers: usize,
        duration: Duration,
    ) -> PhaseFigures {
        let start = Instant::now();
        let deadline = start + duration;
        let recorder = Arc::new(Recorder::new(start));
        self.watcher.count_delays_in(&recorder);
        let progress = self.progress(
            &format!("closed loop, {customers} customers"),
            duration,
            &recorder,
        );
        let customers: Vec<_> = (0..customers)
            .map(|_| {
                let (driver, recorder) = (Arc::clone(self), Arc::clone(&recorder));
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let due = Instant::now();
                        match driver.place(due, &recorder).await {
                            Some(ended) => {
                                if timeout(SAGA_TIMEOUT, ended).await.is_err() {
                                    recorder.error("saga did not end within 30 s");
                                }
                            }
                            // Do not spin on a failing API.
                            None => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                })
            })
            .collect();
        for customer in customers {
            let _ = customer.await;
        }
        self.drain(&recorder, progress, duration).await
    }

    async fn drain(
        &self,
        recorder: &Arc<Recorder>,
        progress: ProgressBar,
        measured: Duration,
    ) -> PhaseFigures {
        let give_up = Instant::now() + DRAIN_TIMEOUT;
        while self.watcher.outstanding(recorder) > 0 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unfinished = self.watcher.outstanding(recorder);
        self.watcher.abandon(recorder);
        progress.finish_and_clear();
        recorder.finish(measured, unfinished)
    }

    /// A progress bar over the phase's duration with the live rate and percentiles; hidden
    /// when stderr is not a terminal.
    fn progress(&self, title: &str, duration: Duration, recorder: &Arc<Recorder>) -> ProgressBar {
        let bar = if self.show_progress {
            ProgressBar::new(duration.as_secs().max(1))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(title.to_owned());
        let (ticker, recorder) = (bar.clone(), Arc::clone(recorder));
        let start = Instant::now();
        tokio::spawn(async move {
            while !ticker.is_finished() {
                let live = recorder.live();
                ticker.set_position(start.elapsed().as_secs().min(duration.as_secs()));
                ticker.set_message(format!(
                    "{} sagas/s  p50 {:.1} ms  p99 {:.1} ms  placed {}  ended {}  errors {}",
                    live.ended_last_second,
                    live.saga_p50_ms,
                    live.saga_p99_ms,
                    live.placed,
                    live.ended,
                    live.errors
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        bar
    }
}

/// Creates the bench's products (idempotent) and waits until the order service's catalogue
/// has them.
pub async fn prepare_products(
    http: &reqwest::Client,
    inventory_url: &str,
    order_url: &str,
) -> anyhow::Result<()> {
    use crate::mix::{EMPTY_SKU, STOCK, STOCKED_SKU};
    for (sku, on_hand) in [(STOCKED_SKU, STOCK), (EMPTY_SKU, 0)] {
        let url = format!("{}/products/{sku}", inventory_url.trim_end_matches('/'));
        let response = http
            .put(&url)
            .json(&serde_json::json!({"name": "Bench product", "price_cents": 1250, "on_hand": on_hand}))
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "PUT {url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    for sku in [STOCKED_SKU, EMPTY_SKU] {
        let url = format!("{}/catalogue/{sku}", order_url.trim_end_matches('/'));
        loop {
            let known = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if known {
                break;
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "the order service's catalogue never learnt of {sku}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
