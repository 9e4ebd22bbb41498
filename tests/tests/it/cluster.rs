//! The system as it runs in production, on loopback: a 3-node JetStream cluster with R3
//! streams and two replicas of every service. During a burst of orders down every saga path,
//! one replica of each service and the NATS server leading the `ORDER` stream are killed
//! (SIGKILL) and started again. Every saga still ends, exactly once and as its path says, and
//! the invariants hold.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use e2e::api::{COUNTRY_UNSERVED, OrderRequest, OrderView, PAYMENT_DECLINED};
use e2e::system::{Service, System, SystemOptions};
use futures::future::try_join_all;
use tokio::time::Instant;
use uuid::Uuid;

const NATS_SERVERS: usize = 3;
const REPLICAS: usize = 2;
/// Orders placed in each of the three waves: before the faults, while they last, after.
const ORDERS_PER_WAVE: usize = 40;
/// Units of the scarce product; orders of one unit compete for them.
const SCARCE_STOCK: i64 = 5;
/// How long the cluster may take to serve every stream again once the killed server is back.
const STREAMS_RECOVER: Duration = Duration::from_secs(30);
/// How long every placed order has to end once the last wave is in.
const SETTLE: Duration = Duration::from_secs(90);

/// The saga path an order is meant to take, and so how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Path {
    Happy,
    PaymentDeclined,
    CannotShip,
    OutOfStock,
    /// One unit of the scarce product: completed while stock lasts, then out of stock.
    Scarce,
}

impl Path {
    /// Round robin over the paths, with the happy path twice as often.
    fn of(index: usize) -> Path {
        match index % 6 {
            0 | 1 => Path::Happy,
            2 => Path::PaymentDeclined,
            3 => Path::CannotShip,
            4 => Path::OutOfStock,
            _ => Path::Scarce,
        }
    }

    fn request(self, index: usize) -> OrderRequest {
        let customer = format!("c-{index}");
        let email = format!("c{index}@example.com");
        let request = match self {
            Path::Happy => OrderRequest::new("CLUSTER-MUG", 1 + (index % 3) as u32),
            Path::PaymentDeclined => {
                OrderRequest::new("CLUSTER-MUG", 1).with_payment_method(PAYMENT_DECLINED)
            }
            Path::CannotShip => OrderRequest::new("CLUSTER-MUG", 1).with_country(COUNTRY_UNSERVED),
            // More than there will ever be.
            Path::OutOfStock => OrderRequest::new("CLUSTER-LAMP", 50),
            Path::Scarce => OrderRequest::new("CLUSTER-LAMP", 1),
        };
        request.with_customer(&customer, &email)
    }

    /// Whether an order of this path ended as the path requires.
    fn accepts(self, order: &OrderView) -> bool {
        let outcome = (order.status.as_str(), order.reason.as_deref());
        match self {
            Path::Happy => outcome == ("completed", None),
            Path::PaymentDeclined => outcome == ("cancelled", Some("payment_declined")),
            Path::CannotShip => outcome == ("cancelled", Some("fulfillment_failed")),
            Path::OutOfStock => outcome == ("rejected", Some("out_of_stock")),
            Path::Scarce => {
                outcome == ("completed", None) || outcome == ("rejected", Some("out_of_stock"))
            }
        }
    }
}

#[tokio::test]
async fn a_burst_survives_killed_replicas_and_a_killed_nats_server() -> anyhow::Result<()> {
    let options = SystemOptions {
        nats_servers: NATS_SERVERS,
        replicas: REPLICAS,
        ..SystemOptions::default()
    };
    let mut system = System::start(options).await?;
    system
        .put_product_and_wait_catalogue("CLUSTER-MUG", "Mug", 800, 10_000)
        .await?;
    system
        .put_product_and_wait_catalogue("CLUSTER-LAMP", "Lamp", 4500, SCARCE_STOCK)
        .await?;

    let mut placed = place_wave(&system, 0).await?;

    // The faults, while the first wave's sagas are in flight: the server leading the stream
    // every saga starts on (its publishes and consumers must move to a new leader), and one
    // replica of every service.
    let leader = system.stream_leader("ORDER").await?;
    let cluster = system
        .nats_cluster()
        .context("the system runs on one NATS server, not a cluster")?;
    let nats_node = cluster
        .index_of(&leader)
        .with_context(|| format!("no NATS server is named {leader}"))?;
    cluster.kill(nats_node);
    let mut faults = 1;
    for service in Service::ALL {
        system.kill_replica(service, 0);
        faults += 1;
    }

    placed.extend(place_wave(&system, 1).await?);

    system
        .nats_cluster()
        .context("the system runs on one NATS server, not a cluster")?
        .restart(nats_node)
        .await?;
    // A service exits if JetStream does not answer while it declares its streams at start
    // (it does not retry; a supervisor would start it again). Start the killed replicas once
    // the cluster serves every stream again, as an operator would.
    system.wait_streams_healthy(STREAMS_RECOVER).await?;
    for service in Service::ALL {
        system.restart_replica(service, 0, &[]).await?;
    }

    placed.extend(place_wave(&system, 2).await?);

    let (ended, stuck) = wait_until_ended(&system, &placed).await?;
    let mut violations = Vec::new();
    if stuck.is_empty() {
        violations.extend(wrong_outcomes(&placed, &ended));
        violations.extend(outcomes_not_announced_once(&system, &ended).await?);
        violations.extend(system.invariant_violations().await?);
    }
    // Straight to stdout, past the test harness's capture, so that every run shows it.
    writeln!(
        std::io::stdout(),
        "cluster: {} orders, {faults} faults, {} stuck, {} violations",
        placed.len(),
        stuck.len(),
        violations.len()
    )?;
    anyhow::ensure!(
        stuck.is_empty(),
        "{} of {} orders did not end within {SETTLE:?} of the last wave, e.g.:\n{}",
        stuck.len(),
        placed.len(),
        stuck
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    anyhow::ensure!(
        violations.is_empty(),
        "{} violations over {} orders:\n  - {}",
        violations.len(),
        placed.len(),
        violations.join("\n  - ")
    );
    system.shutdown().await
}

/// Places one wave of orders at once, over the order service's live replicas; each must be
/// accepted.
async fn place_wave(system: &System, wave: usize) -> anyhow::Result<Vec<(Uuid, Path)>> {
    let indices = wave * ORDERS_PER_WAVE..(wave + 1) * ORDERS_PER_WAVE;
    try_join_all(indices.map(|index| async move {
        let path = Path::of(index);
        let order_id = system
            .place_accepted_order(&path.request(index))
            .await
            .with_context(|| format!("order {index} of wave {}", wave + 1))?;
        anyhow::Ok((order_id, path))
    }))
    .await
}

/// Polls every order until all have ended or [`SETTLE`] passes; returns the ended ones by id
/// and, for each one that did not end, what was last seen of it.
async fn wait_until_ended(
    system: &System,
    placed: &[(Uuid, Path)],
) -> anyhow::Result<(HashMap<Uuid, OrderView>, Vec<String>)> {
    let deadline = Instant::now() + SETTLE;
    let mut ended: HashMap<Uuid, OrderView> = HashMap::new();
    loop {
        let mut stuck = Vec::new();
        for (order_id, _) in placed {
            if ended.contains_key(order_id) {
                continue;
            }
            match system.order(*order_id).await {
                Ok(order) if order.is_terminal() => {
                    ended.insert(*order_id, order);
                }
                Ok(order) => stuck.push(format!(
                    "{order_id} {} {:?}",
                    order.status,
                    order.history_types()
                )),
                // A replica may refuse connections for a moment: not an answer, not an end.
                Err(error) => stuck.push(format!("{order_id}: {error:#}")),
            }
        }
        if stuck.is_empty() || Instant::now() >= deadline {
            return Ok((ended, stuck));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Orders that ended otherwise than their path requires, and a scarce product that sold
/// other than exactly its stock.
fn wrong_outcomes(placed: &[(Uuid, Path)], ended: &HashMap<Uuid, OrderView>) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut scarce_completed = 0;
    let mut scarce_orders = 0;
    for (order_id, path) in placed {
        let Some(order) = ended.get(order_id) else {
            continue;
        };
        if !path.accepts(order) {
            wrong.push(format!(
                "order {order_id} ({path:?}) ended {} with history {:?}",
                order.outcome(),
                order.history_types()
            ));
        }
        if *path == Path::Scarce {
            scarce_orders += 1;
            scarce_completed += usize::from(order.status == "completed");
        }
    }
    let expected = scarce_orders.min(usize::try_from(SCARCE_STOCK).unwrap_or(usize::MAX));
    if scarce_completed != expected {
        wrong.push(format!(
            "{scarce_completed} of {scarce_orders} orders for the scarce product completed, \
             instead of {expected}"
        ));
    }
    wrong
}

/// Every order's outcome announced exactly once: one distinct `order.completed`,
/// `order.cancelled` or `order.rejected` event, of the kind its status says.
async fn outcomes_not_announced_once(
    system: &System,
    ended: &HashMap<Uuid, OrderView>,
) -> anyhow::Result<Vec<String>> {
    let mut announced: HashMap<Uuid, HashSet<(String, Uuid)>> = HashMap::new();
    for outcome in ["completed", "cancelled", "rejected"] {
        for event in system.stored_events(&format!("order.{outcome}.*")).await? {
            let order_id: Option<Uuid> = event
                .subject
                .rsplit('.')
                .next()
                .and_then(|token| token.parse().ok());
            if let Some(order_id) = order_id {
                announced
                    .entry(order_id)
                    .or_default()
                    .insert((outcome.to_owned(), event.envelope.id));
            }
        }
    }
    let mut wrong = Vec::new();
    for (order_id, order) in ended {
        let events = announced.remove(order_id).unwrap_or_default();
        let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
        if kinds != [order.status.as_str()] {
            wrong.push(format!(
                "order {order_id} is {} but its outcome was announced as {kinds:?}",
                order.outcome()
            ));
        }
    }
    Ok(wrong)
}
