//! `demo`: runs the whole system locally on the default ports (order 8080 … notification
//! 8084) with its own nats-server, and tells the story of one order down each saga path.
//!
//! Usage: `cargo build --workspace --bins && cargo run -p e2e --bin demo [-- --once] [--orders N]`.
//! Without `--once` the system keeps running for curl until Ctrl-C; with it, the demo exits
//! after the story: 0 if every path ended as expected, 1 if one did not, 2 on an error.
//! `--orders N` then places N more orders down each path, for the saga overview
//! (`GET /dashboard` on the order service) to have something to show.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use e2e::api::{
    COUNTRY_UNSERVED, HistoryEntry, OrderRequest, OrderView, PAYMENT_DECLINED, Product,
};
use e2e::invariants::expected_notification_kinds;
use e2e::nats_server::ADMIN_USER;
use e2e::polling::{Check, SAGA_TIMEOUT, wait_for};
use e2e::system::{Service, System, SystemOptions};
use tokio::time::Instant;
use uuid::Uuid;

const USAGE: &str = "\
usage: demo [--once] [--orders N]

Starts nats-server and the five services on ports 8080-8084 (databases demo_<service>,
recreated), places one order down each saga path and prints what happens.

  --once       exit after the story (0 if every path ended as expected) instead of
               running until Ctrl-C
  --orders N   after the story, place N more orders down each of five paths (happy, out
               of stock, card declined, cannot ship, customer cancels), shuffled, a few
               a second, and wait for them to end: traffic for the saga overview at
               http://127.0.0.1:8080/dashboard
Needs the service binaries (`cargo build --workspace --bins`) and a nats-server >= 2.10
(NATS_SERVER_BIN, or on PATH).";

/// One saga path to show: the order to place and how it must end.
struct SagaPath {
    title: &'static str,
    request: OrderRequest,
    expected_status: &'static str,
    expected_reason: Option<&'static str>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut once = false;
    let mut orders_per_path = 0;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--once" => once = true,
            "--orders" => match arguments.next().map(|count| count.parse::<usize>()) {
                Some(Ok(count)) => orders_per_path = count,
                _ => {
                    eprintln!("--orders needs a number of orders per path\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match run(once, orders_per_path).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Starts the system, tells the story, places `orders_per_path` more orders down each path,
/// waits for Ctrl-C unless `once`, shuts down. Returns whether every path of the story ended
/// as expected.
async fn run(once: bool, orders_per_path: usize) -> Result<bool> {
    let log_directory = std::env::temp_dir().join("order-saga-demo");
    let options = SystemOptions {
        rust_log: "warn".to_owned(),
        fixed_http_ports: true,
        database_prefix: Some("demo".to_owned()),
        drop_databases_first: true,
        // Left in place after the demo, to be looked at with psql.
        drop_databases_at_end: false,
        log_directory: Some(log_directory),
        // Ctrl-C must reach the demo only, which then stops the services in order.
        own_process_group: true,
        ..SystemOptions::default()
    };
    println!("Starting nats-server and the five services…");
    let system = tokio::select! {
        started = System::start(options) => started?,
        _ = tokio::signal::ctrl_c() => {
            println!("Interrupted while starting.");
            return Ok(false);
        }
    };
    describe_system(&system);

    let story = tokio::select! {
        told = tell_the_story_and_place_more(&system, orders_per_path) => Some(told),
        _ = tokio::signal::ctrl_c() => None,
    };
    let all_as_expected = match story {
        Some(Ok((all_as_expected, happy_order))) => {
            print_try_it_yourself(happy_order);
            all_as_expected
        }
        Some(Err(error)) => {
            system.shutdown().await?;
            return Err(error);
        }
        None => {
            println!("\nInterrupted; stopping the services…");
            system.shutdown().await?;
            return Ok(false);
        }
    };

    if !once {
        println!("\nThe system keeps running; press Ctrl-C to stop it.");
        tokio::signal::ctrl_c().await?;
    }
    println!("\nStopping the services…");
    system.shutdown().await?;
    println!("Stopped.");
    Ok(all_as_expected)
}

fn describe_system(system: &System) {
    println!(
        "\n{:<14}{}   log: {}",
        "nats-server",
        system.nats_url(),
        system.nats_log_path().display()
    );
    println!(
        "{:<14}NATS_USER={ADMIN_USER} NATS_PASSWORD={}   (for sagactl; made up for this run)",
        "",
        system.nats_users().password(ADMIN_USER)
    );
    for service in Service::ALL {
        println!(
            "{:<14}{}   log: {}",
            service.name(),
            system.base_url(service),
            system.log_path(service).display()
        );
    }
    println!(
        "{:<14}{}   (faults: PUT /control, counts: GET /stats)",
        "gateway",
        system.gateway_url()
    );
    println!("databases demo_<service> on the local Postgres, recreated at start");
}

/// The story, then `orders_per_path` more orders down each path (none: just the story).
async fn tell_the_story_and_place_more(
    system: &System,
    orders_per_path: usize,
) -> Result<(bool, Option<Uuid>)> {
    let told = tell_the_story(system).await?;
    if orders_per_path > 0 {
        place_more_orders(system, orders_per_path).await?;
    }
    Ok(told)
}

/// The paths `--orders` places orders down.
#[derive(Debug, Clone, Copy)]
enum LoadPath {
    Happy,
    OutOfStock,
    CardDeclined,
    CannotShip,
    CustomerCancels,
}

/// Places `per_path` orders down each [`LoadPath`], shuffled and a few a second, then waits
/// for all of them to end and prints how they ended.
async fn place_more_orders(system: &System, per_path: usize) -> Result<()> {
    let paths = [
        LoadPath::Happy,
        LoadPath::OutOfStock,
        LoadPath::CardDeclined,
        LoadPath::CannotShip,
        LoadPath::CustomerCancels,
    ];
    println!(
        "\nPlacing {} more orders, {per_path} down each of happy, out of stock, card declined, \
         cannot ship and customer cancels, shuffled, a few a second:",
        per_path * paths.len()
    );
    // Enough mugs for every mug order (at most two each), so that only the lamp orders run
    // out of stock.
    let mugs = 10 + 2 * i64::try_from(per_path * paths.len())?;
    system
        .put_product_and_wait_catalogue("DEMO-MUG", "Mug", 1250, mugs)
        .await?;
    let mut load: Vec<LoadPath> = paths
        .iter()
        .flat_map(|path| std::iter::repeat_n(*path, per_path))
        .collect();
    // Fisher-Yates, so that every stretch of time sees a mix of paths, as real traffic would.
    for last in (1..load.len()).rev() {
        let other = usize::try_from(rand::random::<u64>() % (last as u64 + 1))?;
        load.swap(last, other);
    }
    let started = Instant::now();
    let mut order_ids = Vec::with_capacity(load.len());
    for (number, path) in load.iter().enumerate() {
        let customer = format!("c-load-{number}");
        let email = format!("{customer}@example.com");
        let request = match path {
            LoadPath::Happy | LoadPath::CustomerCancels => OrderRequest::new("DEMO-MUG", 2),
            LoadPath::OutOfStock => OrderRequest::new("DEMO-LAMP", 3),
            LoadPath::CardDeclined => {
                OrderRequest::new("DEMO-MUG", 1).with_payment_method(PAYMENT_DECLINED)
            }
            LoadPath::CannotShip => OrderRequest::new("DEMO-MUG", 1).with_country(COUNTRY_UNSERVED),
        }
        .with_customer(&customer, &email);
        let order_id = system.place_accepted_order(&request).await?;
        if let LoadPath::CustomerCancels = path {
            // Sent at once, it usually catches the saga in flight; a saga that has already
            // completed answers 409 and stays completed, which the tally below shows.
            system.cancel_order(order_id).await?;
        }
        order_ids.push(order_id);
        // Uneven gaps, so that the overview's throughput bars differ as real traffic does.
        tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 700)).await;
    }
    let orders = system.wait_all_terminal(&order_ids, SAGA_TIMEOUT).await?;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for order in &orders {
        *outcomes.entry(order.outcome()).or_default() += 1;
    }
    println!(
        "  {} orders ended within {:.0} s:",
        orders.len(),
        started.elapsed().as_secs_f64()
    );
    for (outcome, count) in outcomes {
        println!("  {count:>5}  {outcome}");
    }
    println!(
        "  the saga overview: {}/dashboard",
        system.base_url(Service::Order)
    );
    Ok(())
}

/// Stocks two products and walks one order down each path. Returns whether all ended as
/// expected, and the happy order's id for the curl examples.
async fn tell_the_story(system: &System) -> Result<(bool, Option<Uuid>)> {
    println!("\nStocking the shelves (PUT /products/{{sku}} on inventory):");
    for (sku, name, price_cents, on_hand) in [
        ("DEMO-MUG", "Mug", 1250, 10),
        ("DEMO-LAMP", "Desk lamp", 4999, 1),
    ] {
        system
            .put_product_and_wait_catalogue(sku, name, price_cents, on_hand)
            .await?;
        println!(
            "  {sku:<10} {name:<10} {:>8}  {on_hand} on hand",
            money(price_cents)
        );
    }

    let paths = [
        SagaPath {
            title: "happy path: 2 mugs, a good card, shipped to the Netherlands",
            request: OrderRequest::new("DEMO-MUG", 2),
            expected_status: "completed",
            expected_reason: None,
        },
        SagaPath {
            title: "out of stock: 3 lamps when 1 is on hand",
            request: OrderRequest::new("DEMO-LAMP", 3).with_customer("c-2", "c2@example.com"),
            expected_status: "rejected",
            expected_reason: Some("out_of_stock"),
        },
        SagaPath {
            title: "card declined: 1 mug paid with tok_decline",
            request: OrderRequest::new("DEMO-MUG", 1)
                .with_customer("c-3", "c3@example.com")
                .with_payment_method(PAYMENT_DECLINED),
            expected_status: "cancelled",
            expected_reason: Some("payment_declined"),
        },
        SagaPath {
            title: "cannot ship: 1 mug to Antarctica",
            request: OrderRequest::new("DEMO-MUG", 1)
                .with_customer("c-4", "c4@example.com")
                .with_country(COUNTRY_UNSERVED),
            expected_status: "cancelled",
            expected_reason: Some("fulfillment_failed"),
        },
    ];

    let mut all_as_expected = true;
    let mut happy_order = None;
    for (number, path) in paths.iter().enumerate() {
        let (as_expected, order_id) = tell_one_path(system, number + 1, path).await?;
        all_as_expected &= as_expected;
        if number == 0 {
            happy_order = order_id;
        }
    }
    println!(
        "\n{}",
        if all_as_expected {
            "Every path ended as expected."
        } else {
            "Some path did NOT end as expected (see ✘ above)."
        }
    );
    Ok((all_as_expected, happy_order))
}

/// Places one order, prints its history as it grows, then its outcome and consequences.
async fn tell_one_path(
    system: &System,
    number: usize,
    path: &SagaPath,
) -> Result<(bool, Option<Uuid>)> {
    let request = &path.request;
    println!("\n── {number}. {}", path.title);
    let lines: Vec<String> = request
        .items
        .iter()
        .map(|item| format!("{} × {}", item.quantity, item.sku))
        .collect();
    println!(
        "   POST /orders  {} · pays with {} · ships to {}",
        lines.join(", "),
        request.payment_method,
        request.shipping.country
    );
    let response = system.place_order(request, None).await?;
    if response.status != 202 {
        println!(
            "   ✘ answered {} instead of 202: {}",
            response.status, response.text
        );
        return Ok((false, None));
    }
    let order_id = response.order_id()?;
    println!(
        "   202 Accepted, Location: {}",
        response.location.as_deref().unwrap_or("(none)")
    );

    let Some(order) = follow_history(system, order_id).await? else {
        println!("   ✘ no terminal status within {SAGA_TIMEOUT:?}");
        return Ok((false, Some(order_id)));
    };
    match &order.reason {
        Some(reason) => println!("   ⇒ {} · reason {reason}", order.status),
        None => println!("   ⇒ {}", order.status),
    }

    match system.payment(order_id).await? {
        Some(payment) => println!(
            "   payment        {} {} (refunded {})",
            payment.status,
            money(payment.amount_cents),
            money(payment.refunded_cents)
        ),
        None => println!("   payment        none"),
    }
    match system.shipment(order_id).await? {
        Some(shipment) if shipment.status == "scheduled" => println!(
            "   shipment       scheduled with {}, id {}",
            shipment.carrier.as_deref().unwrap_or("?"),
            shipment.shipment_id.as_deref().unwrap_or("?")
        ),
        Some(shipment) => println!(
            "   shipment       {}: {}",
            shipment.status,
            shipment.reason.as_deref().unwrap_or("no reason given")
        ),
        None => println!("   shipment       none"),
    }
    let expected_kinds = expected_notification_kinds(&order.status);
    let notifications = match system
        .wait_notifications(order_id, expected_kinds, Duration::from_secs(10))
        .await
    {
        Ok(notifications) => notifications,
        Err(_) => system.notifications(order_id).await?,
    };
    let told: Vec<String> = notifications
        .iter()
        .map(|notification| format!("{} → {}", notification.kind, notification.recipient))
        .collect();
    println!("   notifications  {}", told.join(", "));
    for sku in request.items.iter().map(|item| item.sku.as_str()) {
        let product = settled_product(system, sku).await?;
        println!(
            "   stock          {sku}: {} on hand, {} reserved",
            product.on_hand, product.reserved
        );
    }

    let as_expected =
        order.status == path.expected_status && order.reason.as_deref() == path.expected_reason;
    if as_expected {
        println!("   ✔ as expected");
    } else {
        println!(
            "   ✘ expected {}{}",
            path.expected_status,
            path.expected_reason
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        );
    }
    Ok((as_expected, Some(order_id)))
}

/// Polls the order and prints each new history entry as it appears, with its time relative
/// to the first; returns the order once terminal, `None` if it does not end in time.
async fn follow_history(system: &System, order_id: Uuid) -> Result<Option<OrderView>> {
    let deadline = Instant::now() + SAGA_TIMEOUT;
    let mut printed = 0;
    let mut first_at: Option<DateTime<Utc>> = None;
    loop {
        let order = system.order(order_id).await?;
        for entry in order.history.iter().skip(printed) {
            let at = parse_time(entry);
            let first = *first_at.get_or_insert_with(|| at.unwrap_or_else(Utc::now));
            let offset = at
                .map(|at| format!("+{:.3}s", (at - first).num_milliseconds() as f64 / 1000.0))
                .unwrap_or_else(|| entry.at.clone());
            println!("   {offset:>9}  {}", entry.event_type);
        }
        printed = order.history.len();
        if order.is_terminal() {
            return Ok(Some(order));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn parse_time(entry: &HistoryEntry) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&entry.at)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The product once nothing is reserved for it (a completed order's reservation becomes a
/// deduction a moment after the order completes), or as it is after a few seconds.
async fn settled_product(system: &System, sku: &str) -> Result<Product> {
    let settled = wait_for(
        format!("{sku} to have nothing reserved"),
        Duration::from_secs(5),
        || async move {
            let product = system.product(sku).await?;
            Ok(if product.reserved == 0 {
                Check::Done(product)
            } else {
                Check::NotYet(format!("{} reserved", product.reserved))
            })
        },
    )
    .await;
    match settled {
        Ok(product) => Ok(product),
        Err(_) => system.product(sku).await,
    }
}

fn print_try_it_yourself(happy_order: Option<Uuid>) {
    let order = happy_order.map_or_else(|| "<order id>".to_owned(), |id| id.to_string());
    println!("\nTry it yourself:");
    println!("  open http://127.0.0.1:8080/dashboard   # the saga overview, in a browser");
    println!("  curl -s localhost:8081/products");
    println!("  curl -s localhost:8080/catalogue/DEMO-MUG");
    println!("  curl -s localhost:8080/orders/{order}");
    println!("  curl -s localhost:8082/payments/{order}");
    println!("  curl -s localhost:8083/shipments/{order}");
    println!("  curl -s 'localhost:8084/notifications?order_id={order}'");
    println!("  curl -s -X POST localhost:8080/orders/{order}/cancel   # 409: it is completed");
    println!(
        "  curl -si localhost:8080/orders -H 'content-type: application/json' -d \
         '{{\"customer_id\":\"c-9\",\"email\":\"c9@example.com\",\"items\":[{{\"sku\":\"DEMO-MUG\",\"quantity\":1}}],\
         \"payment_method\":\"tok_ok\",\"shipping\":{{\"country\":\"NL\",\"address\":\"Damrak 1, Amsterdam\"}}}}'"
    );
}

/// Cents as `12.50`.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}
