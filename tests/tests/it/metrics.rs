//! The Prometheus metrics every service serves on `/metrics`: after one order per saga path
//! the key series hold the right values, and every metric a Grafana dashboard in
//! `deploy/grafana/dashboards` charts exists in a live scrape, so the dashboards cannot rot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context as _;
use e2e::api::{COUNTRY_UNSERVED, OrderRequest, PAYMENT_DECLINED};
use e2e::jetstream::DedupHeader;
use e2e::polling::{Check, SAGA_TIMEOUT, SETTLE_TIMEOUT, wait_for};
use e2e::system::{Service, System, SystemOptions};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

/// One sample of a scrape: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug)]
struct Scrape {
    service: Service,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The samples of `name` whose labels include all of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
    }

    /// The sum of the matching samples; 0 when there are none.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }

    /// The sum of the matching samples, or `None` when no sample matches.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.matching(name, labels).peekable();
        matching.peek()?;
        Some(matching.map(|sample| sample.value).sum())
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.name == name)
    }

    fn names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|sample| sample.name.clone())
            .collect()
    }
}

async fn scrape(system: &System, service: Service) -> anyhow::Result<Scrape> {
    let answer = system.get(service, "/metrics").await?;
    anyhow::ensure!(
        answer.status == 200,
        "GET /metrics of {} answered {}: {}",
        service.name(),
        answer.status,
        answer.text
    );
    let samples = answer
        .text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_sample)
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("the metrics of {}", service.name()))?;
    Ok(Scrape { service, samples })
}

/// Parses `name{key="value",...} value` (labels optional). Route templates contain braces,
/// so the label set ends at the last `}` before the value.
fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line
        .rsplit_once(' ')
        .with_context(|| format!("no value in {line:?}"))?;
    let value: f64 = value
        .parse()
        .with_context(|| format!("bad value in {line:?}"))?;
    let Some((name, rest)) = series.split_once('{') else {
        return Ok(Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let body = rest
        .strip_suffix('}')
        .with_context(|| format!("unclosed labels in {line:?}"))?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        anyhow::ensure!(chars.next() == Some('"'), "bad label in {line:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        if chars.peek() == Some(&',') {
            chars.next();
        }
        labels.insert(key.trim().to_owned(), value);
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

async fn scrape_all(system: &System) -> anyhow::Result<Vec<Scrape>> {
    let mut scrapes = Vec::new();
    for service in Service::ALL {
        scrapes.push(scrape(system, service).await?);
    }
    Ok(scrapes)
}

/// Waits until `event_type` shows in the order's history.
async fn wait_history(system: &System, order_id: Uuid, event_type: &str) -> anyhow::Result<()> {
    wait_for(
        format!("{event_type} in the history of {order_id}"),
        SAGA_TIMEOUT,
        || async {
            let order = system.order(order_id).await?;
            Ok(if order.history_types().contains(&event_type) {
                Check::Done(())
            } else {
                Check::NotYet(format!("{:?}", order.history_types()))
            })
        },
    )
    .await
}

/// Places one order per saga path a client can drive (happy, out of stock, card declined,
/// cannot ship, customer cancels) and waits until each has ended. Returns the order ids.
async fn one_order_per_saga_path(system: &mut System) -> anyhow::Result<Vec<Uuid>> {
    system
        .put_product_and_wait_catalogue("METRIC-MUG", "Mug", 1250, 20)
        .await?;
    system
        .put_product_and_wait_catalogue("METRIC-LAMP", "Lamp", 4999, 1)
        .await?;
    let mut orders = Vec::new();
    for order in [
        OrderRequest::new("METRIC-MUG", 1),
        OrderRequest::new("METRIC-LAMP", 3),
        OrderRequest::new("METRIC-MUG", 1).with_payment_method(PAYMENT_DECLINED),
        OrderRequest::new("METRIC-MUG", 1).with_country(COUNTRY_UNSERVED),
    ] {
        orders.push(system.place_accepted_order(&order).await?);
    }
    for order_id in &orders {
        system.wait_terminal(*order_id, SAGA_TIMEOUT).await?;
    }

    // The customer cancels while payment cannot move.
    system.pause(Service::Payment)?;
    let cancelled = system
        .place_accepted_order(&OrderRequest::new("METRIC-MUG", 1))
        .await?;
    wait_history(system, cancelled, "inventory.reserved").await?;
    let answer = system
        .request(
            Method::POST,
            Service::Order,
            &format!("/orders/{cancelled}/cancel"),
            None,
            &[],
        )
        .await?;
    anyhow::ensure!(answer.status == 202, "cancel answered {}", answer.text);
    system.resume(Service::Payment)?;
    let order = system.wait_terminal(cancelled, SAGA_TIMEOUT).await?;
    anyhow::ensure!(
        order.outcome() == "cancelled (customer_request)",
        "{order:?}"
    );
    orders.push(cancelled);
    Ok(orders)
}

/// Ok when nothing is left to move (every outbox drained, every consumer caught up);
/// otherwise what still moves.
fn settled(scrapes: &[Scrape]) -> Result<(), String> {
    for scrape in scrapes {
        let name = scrape.service.name();
        if !scrape.has("consumer_pending_messages") {
            return Err(format!("{name}: no consumer lag read yet"));
        }
        let backlog = scrape.sum("outbox_pending_events", &[]);
        let lag = scrape.sum("consumer_pending_messages", &[])
            + scrape.sum("consumer_ack_pending_messages", &[]);
        if backlog != 0.0 || lag != 0.0 {
            return Err(format!("{name}: outbox {backlog}, consumer lag {lag}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn after_one_order_per_saga_path_every_services_metrics_tell_what_happened()
-> anyhow::Result<()> {
    let mut system = System::start(SystemOptions::default()).await?;
    let orders = one_order_per_saga_path(&mut system).await?;

    let scrapes = wait_for(
        "every outbox and consumer to settle",
        SETTLE_TIMEOUT,
        || async {
            let scrapes = scrape_all(&system).await?;
            Ok(match settled(&scrapes) {
                Ok(()) => Check::Done(scrapes),
                Err(seen) => Check::NotYet(seen),
            })
        },
    )
    .await?;
    let by_service = |service: Service| {
        scrapes
            .iter()
            .find(|scrape| scrape.service == service)
            .expect("every service was scraped")
    };

    // The order service: one outcome per path, with its reason, and nothing left in flight.
    let order = by_service(Service::Order);
    for (status, reason) in [
        ("completed", "none"),
        ("rejected", "out_of_stock"),
        ("cancelled", "payment_declined"),
        ("cancelled", "fulfillment_failed"),
        ("cancelled", "customer_request"),
    ] {
        assert_eq!(
            order.sum(
                "saga_outcomes_total",
                &[("status", status), ("reason", reason)]
            ),
            1.0,
            "saga_outcomes_total{{status={status},reason={reason}}}"
        );
    }
    assert_eq!(order.sum("saga_outcomes_total", &[]), 5.0);
    assert_eq!(
        order.sum("saga_duration_seconds_count", &[("status", "cancelled")]),
        3.0
    );
    assert_eq!(order.sum("saga_duration_seconds_count", &[]), 5.0);
    assert!(order.sum("saga_duration_seconds_sum", &[]) > 0.0);
    // Every open status is reported, at 0 once everything has ended.
    for status in ["pending", "reserved", "paid", "cancelling"] {
        assert_eq!(
            order.value("sagas_in_flight", &[("status", status)]),
            Some(0.0),
            "sagas_in_flight{{status={status}}}"
        );
        assert_eq!(
            order.value("saga_in_flight_oldest_age_seconds", &[("status", status)]),
            Some(0.0),
            "saga_in_flight_oldest_age_seconds{{status={status}}}"
        );
    }
    for (event_type, published) in [
        ("order.placed", 5.0),
        ("order.completed", 1.0),
        ("order.rejected", 1.0),
        ("order.cancelled", 3.0),
        ("order.cancellation_requested", 1.0),
    ] {
        assert_eq!(
            order.sum(
                "events_published_total",
                &[("type", event_type), ("outcome", "ok")]
            ),
            published,
            "{event_type} published by the order service"
        );
    }
    assert_eq!(
        order.sum(
            "http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/orders"),
                ("status_class", "2xx")
            ]
        ),
        5.0
    );
    assert!(
        order.sum(
            "http_requests_total",
            &[("method", "GET"), ("route", "/orders/{order_id}")]
        ) > 0.0,
        "reads are counted by their route template"
    );

    // Every participant applied each order.placed exactly once, whatever the path.
    for service in [
        Service::Inventory,
        Service::Payment,
        Service::Fulfillment,
        Service::Notification,
    ] {
        let consumer = format!("{}-order", service.name());
        assert_eq!(
            by_service(service).sum(
                "events_processed_total",
                &[
                    ("consumer", &consumer),
                    ("type", "order.placed"),
                    ("outcome", "ok")
                ]
            ),
            5.0,
            "{consumer} applied every order.placed once"
        );
    }

    for scrape in &scrapes {
        let name = scrape.service.name();
        assert!(
            scrape.sum("events_processed_total", &[("outcome", "ok")]) > 0.0,
            "{name} processed events"
        );
        assert!(
            scrape.sum("event_handler_duration_seconds_count", &[]) > 0.0,
            "{name} timed its handlers"
        );
        assert_eq!(
            scrape.sum("events_processed_total", &[("outcome", "dead_lettered")]),
            0.0,
            "{name} dead-lettered nothing"
        );
        assert_eq!(
            scrape.value("dead_letters", &[]),
            Some(0.0),
            "{name} DLQ depth"
        );
        assert_eq!(
            scrape.sum("events_published_total", &[("outcome", "failed")]),
            0.0
        );
        assert_eq!(scrape.value("outbox_pending_events", &[]), Some(0.0));
        assert_eq!(
            scrape.value("outbox_oldest_pending_age_seconds", &[]),
            Some(0.0)
        );
        assert!(scrape.sum("db_pool_max_connections", &[]) > 0.0);
        assert!(scrape.has("db_pool_connections"), "{name} pool series");
        if scrape.service != Service::Notification {
            assert!(
                scrape.sum("events_published_total", &[("outcome", "ok")]) > 0.0,
                "{name} published events"
            );
        }
        // Bounded labels: no series names an order.
        for sample in &scrape.samples {
            for order_id in &orders {
                let id = order_id.to_string();
                assert!(
                    !sample.labels.values().any(|value| value.contains(&id)),
                    "{name}: {sample:?} carries an order id"
                );
            }
        }
    }
    system.shutdown().await
}

#[tokio::test]
async fn duplicates_and_poison_are_counted_by_outcome_and_the_dead_letters_show()
-> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("METRIC-CUP", "Cup", 700, 5)
        .await?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("METRIC-CUP", 1))
        .await?;
    system.wait_terminal(order_id, SAGA_TIMEOUT).await?;

    // The same order.placed again, past JetStream's dedup: every inbox drops it. Then a
    // message that is not an envelope: every consumer dead-letters it.
    let placed = system
        .last_event(&format!("order.placed.{order_id}"))
        .await?;
    system.republish(&placed, DedupHeader::Fresh).await?;
    system
        .jetstream()
        .await?
        .publish(
            format!("order.placed.{}", Uuid::now_v7()),
            "not an envelope".into(),
        )
        .await?
        .await?;

    for service in [
        Service::Inventory,
        Service::Payment,
        Service::Fulfillment,
        Service::Notification,
    ] {
        let consumer = format!("{}-order", service.name());
        wait_for(
            format!("{consumer} to count the duplicate and the dead letter"),
            SETTLE_TIMEOUT,
            || async {
                let scrape = scrape(&system, service).await?;
                let outcome = |outcome: &str| {
                    scrape.sum(
                        "events_processed_total",
                        &[
                            ("consumer", consumer.as_str()),
                            ("type", "order.placed"),
                            ("outcome", outcome),
                        ],
                    )
                };
                let seen = (
                    outcome("ok"),
                    outcome("duplicate"),
                    outcome("dead_lettered"),
                    scrape.sum("dead_letters", &[("consumer", consumer.as_str())]),
                );
                Ok(if seen == (1.0, 1.0, 1.0, 1.0) {
                    Check::Done(())
                } else {
                    Check::NotYet(format!(
                        "(ok, duplicate, dead_lettered, DLQ depth) {seen:?}"
                    ))
                })
            },
        )
        .await?;
    }
    system.shutdown().await
}

#[tokio::test]
async fn every_metric_a_dashboard_charts_is_in_a_live_scrape() -> anyhow::Result<()> {
    let dashboards = dashboard_metric_names()?;
    anyhow::ensure!(
        dashboards.len() >= 2,
        "expected the saga overview and the per-service dashboard, found {:?}",
        dashboards.keys()
    );

    let mut system = System::start(SystemOptions::default()).await?;
    one_order_per_saga_path(&mut system).await?;
    let served: BTreeSet<String> = scrape_all(&system)
        .await?
        .iter()
        .flat_map(Scrape::names)
        .collect();

    for (dashboard, names) in &dashboards {
        anyhow::ensure!(!names.is_empty(), "{dashboard} charts no metric");
        let missing: Vec<&String> = names.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{dashboard} queries metrics no service serves: {missing:?}"
        );
    }
    system.shutdown().await
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_variables() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{service="$service",route=~"/orders.*"}[$__rate_interval]))) / scalar(sum(rate(saga_outcomes_total[5m]))) + max by (consumer) (consumer_pending_messages)"#,
    );
    let expected: BTreeSet<String> = [
        "http_request_duration_seconds_bucket",
        "saga_outcomes_total",
        "consumer_pending_messages",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}

fn dashboards_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards")
}

/// Every metric name each dashboard's queries (`expr`) and variables (`label_values`) use.
fn dashboard_metric_names() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut dashboards = BTreeMap::new();
    let directory = dashboards_directory();
    for entry in std::fs::read_dir(&directory)
        .with_context(|| format!("cannot list {}", directory.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut names = BTreeSet::new();
        collect_metric_names(&json, &mut names);
        dashboards.insert(path.display().to_string(), names);
    }
    Ok(dashboards)
}

fn collect_metric_names(json: &Value, names: &mut BTreeSet<String>) {
    match json {
        Value::Object(fields) => {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => names.extend(promql_metric_names(expr)),
                    ("definition", Value::String(definition)) => {
                        // `label_values(metric, label)`: the metric is the first argument.
                        if let Some(arguments) = definition
                            .strip_prefix("label_values(")
                            .and_then(|rest| rest.split(',').next())
                        {
                            names.insert(arguments.trim().to_owned());
                        }
                    }
                    _ => collect_metric_names(value, names),
                }
            }
        }
        Value::Array(values) => {
            for value in values {
                collect_metric_names(value, names);
            }
        }
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, Grafana variables, label names inside `{}`/`by ()`, or durations in `[]`.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "inf"];
    // Aggregations may put `by (...)` between their name and their argument.
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|c| *c == close)
            .map_or(chars.len(), |offset| from + offset + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_to(i + 1, '"');
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, a number or a duration: the whole word goes.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPING.contains(&word.as_str()) {
                // Skip the label list that follows.
                if let Some(open) = chars[i..].iter().position(|c| *c == '(') {
                    i = skip_to(i + open + 1, ')');
                }
            } else if next != Some(&'(')
                && !KEYWORDS.contains(&word.to_lowercase().as_str())
                && !AGGREGATIONS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}
