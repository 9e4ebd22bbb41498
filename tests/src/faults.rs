//! The fault suite's machinery (issue 3): a customer that places a burst of orders over every
//! saga path while a fault is injected, the faults themselves (kills, pauses, a NATS restart,
//! poison, a Postgres connection cutter), and the verdict over invariants I1–I6, printed as
//! one line: `<scenario>: N orders, K faults, 0 stuck, 0 violations (I1..I6)`.
//!
//! The customer runs in its own task and talks to the order service directly (retrying, with
//! an `Idempotency-Key`, while a replica is down), so that the test keeps `&mut System` to
//! kill, pause and restart processes while orders are in flight. Accepted orders are entered
//! in the system's ledger afterwards, where [`System::invariant_violations`] finds them.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use events::envelope::{Envelope, schema_urn};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{COUNTRY_UNSERVED, OrderRequest, OrderView, PAYMENT_DECLINED};
use crate::databases;
use crate::polling::{Check, SETTLE_TIMEOUT, wait_for};
use crate::system::{CONSUMER_ACK_WAIT, ORDER_DEADLINE, Service, System};

/// The SKU every order that should get its goods asks for; stocked far beyond any burst.
pub const STOCKED_SKU: &str = "FAULT-MUG";

/// A SKU with nothing on hand: orders for it are rejected `out_of_stock`.
pub const EMPTY_SKU: &str = "FAULT-EMPTY";

/// Stock of [`STOCKED_SKU`]: enough for a 10-minute soak.
const STOCKED_UNITS: i64 = 1_000_000;

const PRICE_CENTS: i64 = 700;

/// I1: every order ends within the saga deadline plus this.
const TERMINAL_SLACK: Duration = Duration::from_secs(30);

/// How long the customer keeps retrying one request while the order service is down.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// Between two attempts of a request that found the order service down.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// One request of the customer (a paused or half-dead service must not hold it forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The durable consumers of `order.placed`, which must each dead-letter a poison message.
pub const ORDER_PLACED_CONSUMERS: [&str; 4] = [
    "inventory-order",
    "payment-order",
    "fulfillment-order",
    "notification-order",
];

/// The saga path an order of a burst is meant to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Happy,
    OutOfStock,
    Declined,
    Unserved,
}

impl Path {
    /// Paths in turn, so every burst covers all of them.
    pub fn of(index: usize) -> Path {
        match index % 4 {
            0 => Path::Happy,
            1 => Path::OutOfStock,
            2 => Path::Declined,
            _ => Path::Unserved,
        }
    }

    /// The request for the `index`th order of a burst on this path.
    pub fn request(self, index: usize) -> OrderRequest {
        let customer = format!("fault-{index}");
        let email = format!("fault-{index}@example.com");
        let request = match self {
            Path::OutOfStock => OrderRequest::new(EMPTY_SKU, 1),
            _ => OrderRequest::new(STOCKED_SKU, 1 + (index % 3) as u32),
        }
        .with_customer(&customer, &email);
        match self {
            Path::Declined => request.with_payment_method(PAYMENT_DECLINED),
            Path::Unserved => request.with_country(COUNTRY_UNSERVED),
            Path::Happy | Path::OutOfStock => request,
        }
    }

    /// Whether an ended order is what this path leads to (a customer cancel aside).
    fn accepts(self, order: &OrderView) -> bool {
        let outcome = (order.status.as_str(), order.reason.as_deref());
        match self {
            Path::Happy => outcome == ("completed", None),
            Path::OutOfStock => outcome == ("rejected", Some("out_of_stock")),
            Path::Declined => outcome == ("cancelled", Some("payment_declined")),
            Path::Unserved => outcome == ("cancelled", Some("fulfillment_failed")),
        }
    }
}

/// The shape of a burst.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Orders to place.
    pub orders: usize,
    /// Every `cancel_every`th order is cancelled by its customer soon after it is accepted
    /// (0: none).
    pub cancel_every: usize,
    /// Time between two orders, so that the burst spans the faults injected during it.
    pub pace: Duration,
    /// The index of the burst's first order, so that several bursts on one system (a soak)
    /// give their customers distinct names.
    pub first_index: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            orders: 32,
            cancel_every: 5,
            pace: Duration::from_millis(120),
            first_index: 0,
        }
    }
}

/// One order the customer placed.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub order_id: Uuid,
    pub path: Path,
    pub email: String,
}

/// What a burst did.
#[derive(Debug, Default, Clone)]
pub struct BurstRecord {
    pub orders: Vec<PlacedOrder>,
    /// Orders whose cancel was answered `202`: each must end `cancelled` (I6).
    pub cancels_accepted: Vec<Uuid>,
    /// Cancels answered `409` (the order had already ended).
    pub cancels_refused: usize,
}

impl BurstRecord {
    /// Adds another burst's record to this one.
    pub fn extend(&mut self, other: BurstRecord) {
        self.orders.extend(other.orders);
        self.cancels_accepted.extend(other.cancels_accepted);
        self.cancels_refused += other.cancels_refused;
    }
}

/// A client of the order service that survives its crashes: it retries a request that got
/// no answer (or a 5xx) on the next replica until [`ANSWER_TIMEOUT`], and places orders with
/// an `Idempotency-Key`, so a retried order is the same order.
#[derive(Debug)]
pub struct Customer {
    http: reqwest::Client,
    order_urls: Vec<String>,
    next: AtomicUsize,
    /// Orders accepted so far, for a fault that waits for the burst to be under way.
    accepted: AtomicUsize,
}

/// What the order service answered to a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAnswer {
    Accepted,
    AlreadyEnded,
}

impl Customer {
    /// A customer of every order service replica of `system`.
    pub fn of(system: &System) -> Customer {
        Customer {
            http: system.http_client().clone(),
            order_urls: (0..system.replicas())
                .map(|replica| system.replica_base_url(Service::Order, replica))
                .collect(),
            next: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        }
    }

    /// Orders accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    fn next_url(&self) -> &str {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.order_urls.len();
        &self.order_urls[index]
    }

    /// Sends a POST until it gets a final answer: `Ok((status, body))` for anything but a
    /// transport error or a 5xx, which are retried.
    async fn post_until_answered(
        &self,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value, String)> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let url = format!("{}{path}", self.next_url());
            let mut request = self.http.post(&url).timeout(REQUEST_TIMEOUT);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let last_seen = match request.send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status().as_u16();
                    // A process killed between the headers and the body: ask again.
                    match response.text().await {
                        Ok(text) => {
                            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                            return Ok((status, body, text));
                        }
                        Err(error) => format!("reading the body failed: {error}"),
                    }
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(error) => format!("{error}"),
            };
            if Instant::now() >= deadline {
                anyhow::bail!("POST {path} got no answer within {ANSWER_TIMEOUT:?}: {last_seen}");
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Places an order; it must be accepted (202).
    pub async fn place(&self, request: &OrderRequest) -> Result<Uuid> {
        let key = Uuid::now_v7().to_string();
        let (status, body, text) = self
            .post_until_answered("/orders", Some(&request.to_json()), Some(&key))
            .await?;
        anyhow::ensure!(
            status == 202,
            "POST /orders answered {status} instead of 202: {text}"
        );
        let order_id = body["order_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("POST /orders answered 202 without an order id: {text}"))?;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(order_id)
    }

    /// Asks to cancel an order: 202 while it can be, 409 once it has ended.
    pub async fn cancel(&self, order_id: Uuid) -> Result<CancelAnswer> {
        let (status, _, text) = self
            .post_until_answered(&format!("/orders/{order_id}/cancel"), None, None)
            .await?;
        match status {
            202 => Ok(CancelAnswer::Accepted),
            409 => Ok(CancelAnswer::AlreadyEnded),
            _ => anyhow::bail!("POST /orders/{order_id}/cancel answered {status}: {text}"),
        }
    }

    /// Places a burst: one order every `pace`, each on the next path, cancelling some right
    /// away or after a short random delay (so cancels meet the saga at different steps).
    pub async fn run_burst(self: Arc<Self>, burst: Burst) -> Result<BurstRecord> {
        let mut tasks = JoinSet::new();
        let mut pace = tokio::time::interval(burst.pace);
        for index in burst.first_index..burst.first_index + burst.orders {
            pace.tick().await;
            let customer = Arc::clone(&self);
            tasks.spawn(async move {
                let path = Path::of(index);
                let request = path.request(index);
                let order_id = customer
                    .place(&request)
                    .await
                    .with_context(|| format!("order {index} ({path:?})"))?;
                let placed = PlacedOrder {
                    order_id,
                    path,
                    email: request.email.clone(),
                };
                let mut cancel = None;
                if burst.cancel_every > 0 && index % burst.cancel_every == 0 {
                    // A random delay decides which step the cancel meets; a saga takes well
                    // under a second, so most cancels go at once or nearly.
                    if rand::random::<bool>() {
                        let delay = Duration::from_millis(rand::random::<u64>() % 150);
                        tokio::time::sleep(delay).await;
                    }
                    cancel = Some(customer.cancel(order_id).await?);
                }
                anyhow::Ok((placed, cancel))
            });
        }
        let mut record = BurstRecord::default();
        while let Some(joined) = tasks.join_next().await {
            let (placed, cancel) = joined.context("an order task panicked")??;
            match cancel {
                Some(CancelAnswer::Accepted) => record.cancels_accepted.push(placed.order_id),
                Some(CancelAnswer::AlreadyEnded) => record.cancels_refused += 1,
                None => {}
            }
            record.orders.push(placed);
        }
        Ok(record)
    }
}

/// Stocks the two SKUs of the bursts and waits until the order service can sell them.
pub async fn stock_products(system: &System) -> Result<()> {
    system
        .put_product_and_wait_catalogue(STOCKED_SKU, "Mug", PRICE_CENTS, STOCKED_UNITS)
        .await?;
    system
        .put_product_and_wait_catalogue(EMPTY_SKU, "Sold-out mug", PRICE_CENTS, 0)
        .await?;
    Ok(())
}

/// Starts a burst in its own task.
pub fn start_burst(
    system: &System,
    burst: Burst,
) -> (Arc<Customer>, tokio::task::JoinHandle<Result<BurstRecord>>) {
    let customer = Arc::new(Customer::of(system));
    let placing = tokio::spawn(Arc::clone(&customer).run_burst(burst));
    (customer, placing)
}

/// Waits for a burst task to finish.
pub async fn finish_burst(
    placing: tokio::task::JoinHandle<Result<BurstRecord>>,
) -> Result<BurstRecord> {
    placing.await.context("the burst task panicked")?
}

/// A random pause of up to `most`, before a fault (the point of the fault is to land at an
/// arbitrary moment).
pub async fn random_delay(most: Duration) {
    let most = u64::try_from(most.as_millis()).unwrap_or(u64::MAX).max(1);
    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % most)).await;
}

/// SIGKILLs a random replica of every service, in random order, at random moments, each
/// restarted at once, for as long as the burst runs (at least one round). Returns the burst
/// and the number of kills.
pub async fn random_kills(system: &mut System, burst: Burst) -> Result<(BurstRecord, usize)> {
    let (_customer, placing) = start_burst(system, burst);
    let mut kills = 0;
    loop {
        let mut services = Service::ALL.to_vec();
        // A Fisher–Yates shuffle.
        for last in (1..services.len()).rev() {
            let other = usize::try_from(rand::random::<u64>() % (last as u64 + 1))
                .context("a random index out of range")?;
            services.swap(last, other);
        }
        for service in services {
            random_delay(Duration::from_millis(700)).await;
            let replica = usize::try_from(rand::random::<u64>() % system.replicas() as u64)
                .context("a random replica out of range")?;
            system.kill_replica(service, replica);
            kills += 1;
            system
                .restart_replica(service, replica, &[])
                .await
                .with_context(|| format!("failed to restart {service} after a SIGKILL"))?;
        }
        if placing.is_finished() {
            break;
        }
    }
    Ok((finish_burst(placing).await?, kills))
}

/// Waits until at least `at_least` has passed since `since` and the customer has had at
/// least `orders_accepted` orders accepted: how a fault that must last (a pause beyond the
/// ack wait, a NATS server down while orders keep coming) knows it has.
pub async fn wait_fault_lasted(
    customer: &Customer,
    since: Instant,
    at_least: Duration,
    orders_accepted: usize,
) -> Result<()> {
    wait_for(
        format!("{at_least:?} of fault with {orders_accepted} orders accepted"),
        at_least + ANSWER_TIMEOUT,
        || async move {
            let lasted = since.elapsed();
            let accepted = customer.accepted();
            Ok(if lasted >= at_least && accepted >= orders_accepted {
                Check::Done(())
            } else {
                Check::NotYet(format!("{lasted:?} so far, {accepted} orders accepted"))
            })
        },
    )
    .await
}

/// Twice the consumers' ack wait: long enough that JetStream gives up on every message a
/// paused consumer holds.
pub fn beyond_ack_wait() -> Duration {
    CONSUMER_ACK_WAIT * 2
}

/// A poison message of each kind the consumers must dead-letter, on `order.placed.<id>`
/// subjects (seen by four consumers), plus garbage on an `inventory.reserved` subject.
/// Returns the subjects; each must end in the DLQ.
pub async fn inject_poison(system: &System) -> Result<Vec<String>> {
    let jetstream = system.jetstream().await?;
    let envelope = |event_type: &str, version: u32, data: Value| Envelope {
        specversion: "1.0".into(),
        id: Uuid::now_v7(),
        source: "/tests/faults".into(),
        event_type: event_type.into(),
        subject: "poison".into(),
        time: chrono::Utc::now(),
        dataschema: schema_urn(event_type, version),
        datacontenttype: "application/json".into(),
        correlationid: "poison".into(),
        causationid: None,
        data,
    };
    let poison: Vec<(String, Vec<u8>)> = vec![
        (
            format!("order.placed.{}", Uuid::now_v7()),
            b"\x00\xffgarbage, not JSON".to_vec(),
        ),
        (
            format!("order.placed.{}", Uuid::now_v7()),
            envelope("order.teleported", 1, serde_json::json!({ "to": "mars" })).to_vec(),
        ),
        (
            format!("order.placed.{}", Uuid::now_v7()),
            envelope("order.placed", 9, serde_json::json!({ "anything": true })).to_vec(),
        ),
        (
            format!("order.placed.{}", Uuid::now_v7()),
            envelope("order.placed", 1, serde_json::json!({ "order_id": "nope" })).to_vec(),
        ),
        (
            format!("inventory.reserved.{}", Uuid::now_v7()),
            b"{ not even json".to_vec(),
        ),
    ];
    let mut subjects = Vec::new();
    for (subject, payload) in poison {
        jetstream
            .publish(subject.clone(), payload.into())
            .await
            .with_context(|| format!("failed to publish poison on {subject}"))?
            .await
            .with_context(|| format!("JetStream did not acknowledge poison on {subject}"))?;
        subjects.push(subject);
    }
    Ok(subjects)
}

/// A TCP proxy between the services and Postgres that can cut every connection and refuse
/// new ones for a while, as a network partition or a failing-over load balancer would.
#[derive(Debug)]
pub struct PostgresProxy {
    port: u16,
    state: Arc<ProxyState>,
    accepting: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    /// Cancelled to cut every connection open now; replaced by a fresh one for later ones.
    connections: std::sync::Mutex<CancellationToken>,
    /// New connections are closed at once until then.
    refuse_until: std::sync::Mutex<Option<Instant>>,
}

impl ProxyState {
    fn refusing(&self) -> bool {
        let until = *self
            .refuse_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        until.is_some_and(|until| Instant::now() < until)
    }

    fn current_connections(&self) -> CancellationToken {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl PostgresProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Result<PostgresProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind the Postgres proxy")?;
        let port = listener
            .local_addr()
            .context("failed to read the Postgres proxy's address")?
            .port();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            connections: std::sync::Mutex::new(CancellationToken::new()),
            refuse_until: std::sync::Mutex::new(None),
        });
        let accepting = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(PostgresProxy {
            port,
            state,
            accepting,
        })
    }

    /// The port the services connect to instead of Postgres's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every open connection and refuses new ones for `outage`.
    pub fn cut(&self, outage: Duration) {
        *self
            .state
            .refuse_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + outage);
        let old = std::mem::replace(
            &mut *self
                .state
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            CancellationToken::new(),
        );
        old.cancel();
    }

    /// True while new connections are refused.
    pub fn refusing(&self) -> bool {
        self.state.refusing()
    }
}

impl Drop for PostgresProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.state.current_connections().cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        if state.refusing() {
            // Closed at once: to the client, the database is unreachable.
            drop(client);
            continue;
        }
        let cut = state.current_connections();
        let upstream = state.upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = cut.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}

/// The outcome of a scenario: its counts, the orders that never ended and every broken
/// invariant.
#[derive(Debug)]
pub struct Verdict {
    pub scenario: String,
    pub orders: usize,
    pub faults: usize,
    pub stuck: Vec<String>,
    pub violations: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} orders, {} faults, {} stuck, {} violations (I1..I6)",
            self.scenario,
            self.orders,
            self.faults,
            self.stuck.len(),
            self.violations.len()
        )
    }
}

impl Verdict {
    /// Prints the one line, then fails listing every stuck order and violation, if any.
    pub fn print_and_check(&self) -> Result<()> {
        // Straight to stdout, past the test harness's capture, so that every run shows it.
        writeln!(std::io::stdout(), "{self}")?;
        if self.stuck.is_empty() && self.violations.is_empty() {
            return Ok(());
        }
        let mut message = format!("{self}");
        for stuck in &self.stuck {
            message.push_str(&format!("\n  stuck: {stuck}"));
        }
        for violation in &self.violations {
            message.push_str(&format!("\n  violation: {violation}"));
        }
        anyhow::bail!(message)
    }
}

/// What a scenario did, to be judged by [`judge`].
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub faults: usize,
    pub burst: BurstRecord,
    /// Subjects of poison the scenario injected: each must be dead-lettered (and these are
    /// the only dead letters allowed).
    pub poison: Vec<String>,
    /// The Postgres server (without a database) the services' databases live on.
    pub postgres_url: String,
}

impl Scenario {
    pub fn new(name: &str, faults: usize, burst: BurstRecord) -> Scenario {
        Scenario {
            name: name.to_owned(),
            faults,
            burst,
            poison: Vec::new(),
            postgres_url: databases::server_url(),
        }
    }
}

/// Checks I1–I6 over everything the scenario did:
/// - I1 every order ends within the saga deadline plus slack (else it is *stuck*), on the
///   outcome its path leads to or, if its customer cancelled it, `cancelled`;
/// - I2 no event lost: no outbox row left unpublished, every durable consumer has processed
///   and acknowledged every message, and the DLQ holds exactly the injected poison;
/// - I3–I5 as [`System::invariant_violations`] checks them (one reservation, charge,
///   refund, shipment and notification per kind; stock conserved; money);
/// - I6 every order whose cancel was answered 202 ends `cancelled`, with nothing held (its
///   money and shipment by I3/I5, the stock by I4).
pub async fn judge(system: &System, scenario: &Scenario) -> Result<Verdict> {
    {
        let mut ledger = system.ledger();
        for order in &scenario.burst.orders {
            ledger.record_order(order.order_id, Some(&order.email));
        }
    }
    let mut verdict = Verdict {
        scenario: scenario.name.clone(),
        orders: scenario.burst.orders.len(),
        faults: scenario.faults,
        stuck: Vec::new(),
        violations: Vec::new(),
    };

    // I1.
    let ended = wait_ended(system, &scenario.burst.orders, &mut verdict.stuck).await;
    if !verdict.stuck.is_empty() {
        return Ok(verdict);
    }
    for order in &scenario.burst.orders {
        let Some(view) = ended.get(&order.order_id) else {
            continue;
        };
        let cancelled_by_customer =
            scenario.burst.cancels_accepted.contains(&order.order_id) && view.status == "cancelled";
        if !order.path.accepts(view) && !cancelled_by_customer {
            verdict.violations.push(format!(
                "I1: order {} ({:?}) ended {} with history {:?}",
                order.order_id,
                order.path,
                view.outcome(),
                view.history_types()
            ));
        }
    }
    // I6.
    for order_id in &scenario.burst.cancels_accepted {
        if let Some(view) = ended.get(order_id)
            && view.status != "cancelled"
        {
            verdict.violations.push(format!(
                "I6: order {order_id} was accepted for cancellation (202) but ended {} with \
                 history {:?}",
                view.outcome(),
                view.history_types()
            ));
        }
    }

    // I2 (poison): every injected message dead-lettered, by every consumer of order.placed.
    if !scenario.poison.is_empty() {
        let poison = &scenario.poison;
        let missing = wait_for(
            "every poison message in the DLQ",
            SETTLE_TIMEOUT,
            || async {
                let letters = system.dead_letters().await?;
                let missing: Vec<String> = poison
                    .iter()
                    .flat_map(|subject| {
                        let consumers: Vec<&str> = if subject.starts_with("order.placed.") {
                            ORDER_PLACED_CONSUMERS.to_vec()
                        } else {
                            vec![""]
                        };
                        consumers
                            .into_iter()
                            .filter(|consumer| {
                                !letters.iter().any(|letter| {
                                    letter.contains(&format!("Dlq-Original-Subject={subject}"))
                                        && letter.contains(&format!("dlq.{consumer}"))
                                })
                            })
                            .map(move |consumer| format!("{subject} (consumer {consumer:?})"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                Ok(if missing.is_empty() {
                    Check::Done(())
                } else {
                    Check::NotYet(missing.join(", "))
                })
            },
        )
        .await;
        if let Err(error) = missing {
            verdict
                .violations
                .push(format!("I2: poison not dead-lettered: {error:#}"));
        }
    }

    // I2 (outbox): every committed row published.
    for service in Service::ALL {
        let url = format!(
            "{}/{}",
            scenario.postgres_url,
            system.database_name(service)
        );
        let drained = wait_for(
            format!("{service}'s outbox to be published"),
            SETTLE_TIMEOUT,
            || {
                let url = url.clone();
                async move {
                    let pending = unpublished_outbox_rows(&url).await?;
                    Ok(if pending == 0 {
                        Check::Done(())
                    } else {
                        Check::NotYet(format!("{pending} rows unpublished"))
                    })
                }
            },
        )
        .await;
        if let Err(error) = drained {
            verdict.violations.push(format!("I2: {error:#}"));
        }
    }

    // I2 (consumers idle, DLQ), I3, I4, I5.
    match system.invariant_violations().await {
        Ok(violations) => verdict.violations.extend(
            violations
                .into_iter()
                .filter(|violation| {
                    !(violation.starts_with("a message was dead-lettered")
                        && scenario
                            .poison
                            .iter()
                            .any(|subject| violation.contains(subject.as_str())))
                })
                .map(|violation| format!("I2..I5: {violation}")),
        ),
        Err(error) => verdict
            .violations
            .push(format!("I2..I5 could not be checked: {error:#}")),
    }
    Ok(verdict)
}

async fn unpublished_outbox_rows(url: &str) -> Result<i64> {
    let mut connection = PgConnection::connect(url)
        .await
        .with_context(|| format!("failed to connect to {url}"))?;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&mut connection)
        .await
        .context("failed to count unpublished outbox rows")?;
    connection.close().await.ok();
    Ok(pending)
}

/// Polls every order until it has ended or the saga deadline plus slack has passed; the
/// orders that did not end are described in `stuck`.
async fn wait_ended(
    system: &System,
    orders: &[PlacedOrder],
    stuck: &mut Vec<String>,
) -> HashMap<Uuid, OrderView> {
    let deadline = Instant::now() + ORDER_DEADLINE + TERMINAL_SLACK;
    let mut ended: HashMap<Uuid, OrderView> = HashMap::new();
    loop {
        let mut waiting = Vec::new();
        for order in orders {
            if ended.contains_key(&order.order_id) {
                continue;
            }
            // A replica being restarted is not an answer; ask again next round.
            match system.order(order.order_id).await {
                Ok(view) if view.is_terminal() => {
                    ended.insert(order.order_id, view);
                }
                Ok(view) => waiting.push(format!(
                    "{} ({:?}) {} {:?}",
                    order.order_id,
                    order.path,
                    view.status,
                    view.history_types()
                )),
                Err(error) => {
                    waiting.push(format!("{} ({:?}) {error:#}", order.order_id, order.path))
                }
            }
        }
        if waiting.is_empty() {
            return ended;
        }
        if Instant::now() >= deadline {
            stuck.extend(waiting);
            return ended;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(stuck: Vec<String>, violations: Vec<String>) -> Verdict {
        Verdict {
            scenario: "random_kill".into(),
            orders: 32,
            faults: 5,
            stuck,
            violations,
        }
    }

    #[test]
    fn a_clean_verdict_prints_the_suite_line_and_passes() {
        let clean = verdict(Vec::new(), Vec::new());
        assert_eq!(
            clean.to_string(),
            "random_kill: 32 orders, 5 faults, 0 stuck, 0 violations (I1..I6)"
        );
        assert!(clean.print_and_check().is_ok());
    }

    #[test]
    fn a_stuck_order_or_a_violation_fails_and_is_listed() {
        let failed = verdict(vec!["o-1 cancelling".into()], vec!["I6: o-2".into()]);
        let message = format!("{:#}", failed.print_and_check().unwrap_err());
        assert!(message.contains("1 stuck, 1 violations"), "{message}");
        assert!(message.contains("stuck: o-1 cancelling"), "{message}");
        assert!(message.contains("violation: I6: o-2"), "{message}");
    }

    #[test]
    fn every_four_orders_cover_every_path() {
        let paths: Vec<Path> = (0..4).map(Path::of).collect();
        assert_eq!(
            paths,
            [
                Path::Happy,
                Path::OutOfStock,
                Path::Declined,
                Path::Unserved
            ]
        );
        assert_eq!(Path::of(0).request(0).items[0].sku, STOCKED_SKU);
        assert_eq!(Path::of(1).request(1).items[0].sku, EMPTY_SKU);
        assert_eq!(Path::of(2).request(2).payment_method, PAYMENT_DECLINED);
        assert_eq!(Path::of(3).request(3).shipping.country, COUNTRY_UNSERVED);
    }
}
