//! The API's security rules on the running system: bearer tokens name the customer, who
//! alone sees their order anywhere in the system; product writes need the admin role; a
//! service with no authentication configured refuses to start; `INSECURE_DEV_AUTH` warns
//! once; a client over its rate gets `429` with `Retry-After`; and nothing secret reaches
//! a log or a span during a whole saga.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use e2e::api::{ApiResponse, OrderRequest};
use e2e::faults::{STOCKED_SKU, stock_products};
use e2e::otlp::OtlpReceiver;
use e2e::polling::SAGA_TIMEOUT;
use e2e::ports::free_port;
use e2e::system::{ApiAuth, Service, System, SystemOptions, service_binary_directory};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

/// A request bearing `token`, with `body` if there is one.
async fn with_token(
    system: &System,
    method: Method,
    service: Service,
    path: &str,
    body: Option<&serde_json::Value>,
    token: &str,
) -> anyhow::Result<ApiResponse> {
    let authorization = format!("Bearer {token}");
    system
        .request(
            method,
            service,
            path,
            body,
            &[("Authorization", &authorization)],
        )
        .await
}

/// A `GET` or a body-less `POST` bearing `token`.
async fn as_customer(
    system: &System,
    method: Method,
    service: Service,
    path: &str,
    token: &str,
) -> anyhow::Result<ApiResponse> {
    with_token(system, method, service, path, None, token).await
}

#[tokio::test]
async fn a_customer_sees_only_their_own_order_in_every_service() -> anyhow::Result<()> {
    let system = System::start(SystemOptions {
        api_auth: ApiAuth::Tokens,
        ..SystemOptions::default()
    })
    .await?;
    stock_products(&system).await?;
    let tokens = system.tokens().context("the system checks tokens")?;
    let alice = tokens.token("alice", &[]);
    let mallory = tokens.token("mallory", &[]);

    // Alice's token says who she is; the body need not.
    let mut body = OrderRequest::new(STOCKED_SKU, 1).to_json();
    body.as_object_mut().map(|body| body.remove("customer_id"));
    let placed = with_token(
        &system,
        Method::POST,
        Service::Order,
        "/orders",
        Some(&body),
        &alice,
    )
    .await?;
    ensure!(placed.status == 202, "{}", placed.text);
    let order_id = placed.order_id()?;
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(order.status == "completed", "{order:?}");
    ensure!(order.customer_id == "alice", "{order:?}");
    system
        .wait_notifications(
            order_id,
            &["placed", "shipment_scheduled", "completed"],
            SAGA_TIMEOUT,
        )
        .await?;

    // Every read of the order, in every service: Alice gets it, Mallory gets the same 404
    // as for an order that does not exist, nobody without a token gets anything.
    let unknown = Uuid::now_v7();
    let reads = [
        (Service::Order, "/orders/{}"),
        (Service::Payment, "/payments/{}"),
        (Service::Fulfillment, "/shipments/{}"),
        (Service::Notification, "/notifications?order_id={}"),
    ];
    for (service, template) in reads {
        let path = template.replace("{}", &order_id.to_string());
        let owner = as_customer(&system, Method::GET, service, &path, &alice).await?;
        ensure!(
            owner.status == 200,
            "{service} {path} for the owner: {}",
            owner.text
        );
        let stranger = as_customer(&system, Method::GET, service, &path, &mallory).await?;
        let missing = as_customer(
            &system,
            Method::GET,
            service,
            &template.replace("{}", &unknown.to_string()),
            &mallory,
        )
        .await?;
        ensure!(
            stranger.status == missing.status
                && stranger.text.replace(&order_id.to_string(), "ID")
                    == missing.text.replace(&unknown.to_string(), "ID"),
            "{service} {path} answers a stranger {} {} but an unknown order {} {}",
            stranger.status,
            stranger.text,
            missing.status,
            missing.text
        );
        let anonymous = system
            .http_client()
            .get(format!("{}{path}", system.base_url(service)))
            .send()
            .await?;
        ensure!(
            anonymous.status() == 401,
            "{service} {path} without a token: {}",
            anonymous.status()
        );
        ensure!(
            anonymous.headers().contains_key("www-authenticate"),
            "a 401 says how to authenticate"
        );
    }
    let cancel = format!("/orders/{order_id}/cancel");
    let refused = as_customer(&system, Method::POST, Service::Order, &cancel, &mallory).await?;
    ensure!(refused.status == 404, "{}", refused.text);

    // Writing a product needs the admin role.
    let product = json!({"name": "Mug", "price_cents": 1, "on_hand": 1});
    let write = with_token(
        &system,
        Method::PUT,
        Service::Inventory,
        "/products/CHEAP",
        Some(&product),
        &alice,
    )
    .await?;
    ensure!(write.status == 403, "{}", write.text);
    system.shutdown().await
}

/// Runs a service binary with `env` (and nothing from the suite's environment that could
/// configure it) until it exits, and returns its status and output.
fn run_service(env: &[(&str, &str)]) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let port = free_port()?;
    let mut command = Command::new(service_binary_directory()?.join("order-service"));
    command
        .env_clear()
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        // Nothing listens here: the service must refuse before it connects anywhere.
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("LOG_FORMAT", "pretty")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = command.output().context("failed to run order-service")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status, text))
}

#[test]
fn a_service_with_no_authentication_configured_refuses_to_start() -> anyhow::Result<()> {
    let (status, output) = run_service(&[])?;
    ensure!(!status.success(), "it started: {output}");
    ensure!(
        output.contains("no authentication is configured")
            && output.contains("INSECURE_DEV_AUTH=1"),
        "the refusal says what to set: {output}"
    );

    let directory = tempfile::tempdir()?;
    let secret = directory.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef")?;
    let secret = secret.display().to_string();
    let (status, output) = run_service(&[
        ("AUTH_JWT_SECRET_FILE", &secret),
        ("AUTH_JWT_ISSUER", "https://issuer.test"),
        ("AUTH_JWT_AUDIENCE", "orders"),
        ("INSECURE_DEV_AUTH", "1"),
    ])?;
    ensure!(!status.success(), "it started: {output}");
    ensure!(output.contains("set one or the other"), "{output}");
    Ok(())
}

#[tokio::test]
async fn insecure_dev_auth_is_announced_once_by_every_service() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    for service in Service::ALL {
        let log = std::fs::read_to_string(system.log_path(service))?;
        let warnings = log
            .matches("INSECURE_DEV_AUTH=1: the API checks no token")
            .count();
        ensure!(warnings == 1, "{service} warned {warnings} times:\n{log}");
    }
    system.shutdown().await
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_come_back() -> anyhow::Result<()> {
    let system = System::start(
        SystemOptions::default()
            .with_env(Service::Inventory, "RATE_LIMIT_PER_SECOND", "1")
            .with_env(Service::Inventory, "RATE_LIMIT_BURST", "3"),
    )
    .await?;
    let url = format!("{}/products", system.base_url(Service::Inventory));
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = system.http_client().get(&url).send().await?;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            let body: serde_json::Value = response.json().await?;
            limited = Some((retry_after, body));
        }
    }
    ensure!(
        statuses[..3] == [200, 200, 200],
        "the burst goes through: {statuses:?}"
    );
    let (retry_after, body) = limited.with_context(|| format!("never limited: {statuses:?}"))?;
    ensure!(
        retry_after.is_some_and(|seconds| (1..=2).contains(&seconds)),
        "{retry_after:?}"
    );
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("too many requests")),
        "{body}"
    );
    // Probes and scrapes are never limited.
    let ready = system
        .http_client()
        .get(format!("{}/healthz", system.base_url(Service::Inventory)))
        .send()
        .await?;
    ensure!(ready.status() == 200);
    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
    let again = system.http_client().get(&url).send().await?;
    ensure!(
        again.status() == 200,
        "after Retry-After: {}",
        again.status()
    );
    system.shutdown().await
}

#[tokio::test]
async fn no_secret_reaches_a_log_or_a_span_during_a_saga() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut options = SystemOptions {
        api_auth: ApiAuth::Tokens,
        // Everything the services can say, not just what they say by default.
        rust_log: "debug".to_owned(),
        ..SystemOptions::default()
    };
    for service in Service::ALL {
        options = options
            .with_env(service, "OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
            .with_env(service, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .with_env(service, "OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let system = System::start(options).await?;
    stock_products(&system).await?;
    let tokens = system.tokens().context("the system checks tokens")?;
    let token = tokens.token("c-secretive", &[]);
    let email = "very-private@example.com";
    let address = "Hidden Road 99";
    let mut request = OrderRequest::new(STOCKED_SKU, 1).with_customer("c-secretive", email);
    request.shipping.address = address.to_owned();
    let placed = with_token(
        &system,
        Method::POST,
        Service::Order,
        "/orders",
        Some(&request.to_json()),
        &token,
    )
    .await?;
    ensure!(placed.status == 202, "{}", placed.text);
    let order_id = placed.order_id()?;
    let cancelled_request = OrderRequest::new(STOCKED_SKU, 1)
        .with_customer("c-secretive", email)
        .with_payment_method(e2e::api::PAYMENT_DECLINED);
    let declined = with_token(
        &system,
        Method::POST,
        Service::Order,
        "/orders",
        Some(&cancelled_request.to_json()),
        &token,
    )
    .await?
    .order_id()?;
    system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    system.wait_terminal(declined, SAGA_TIMEOUT).await?;
    system
        .wait_notifications(
            order_id,
            &["placed", "shipment_scheduled", "completed"],
            SAGA_TIMEOUT,
        )
        .await?;
    receiver
        .wait_until(Duration::from_secs(30), |spans| {
            spans.iter().any(|span| {
                span.service_name == "notification-service"
                    && span.name == "process order.completed.*"
            })
        })
        .await?;

    // The token's signature part alone is enough to recognise it.
    let signature = token.rsplit('.').next().unwrap_or(&token).to_owned();
    let mut secrets: Vec<(String, String)> = vec![
        ("the bearer token".into(), signature.clone()),
        ("the e-mail address".into(), email.into()),
        ("the shipping address".into(), address.into()),
        ("the card token".into(), e2e::api::PAYMENT_OK.into()),
        (
            "the declined card token".into(),
            e2e::api::PAYMENT_DECLINED.into(),
        ),
    ];
    // Every credential a service was given: its NATS password and both database passwords.
    for service in Service::ALL {
        secrets.push((
            format!("the {service} NATS password"),
            system.nats_users().password(service.name()).to_owned(),
        ));
        for url in [
            system.app_database_url(service)?,
            system.owner_database_url(service)?,
        ] {
            let password = url::Url::parse(&url)?
                .password()
                .context("the harness gives every role a password")?
                .to_owned();
            secrets.push((format!("a {service} database password"), password));
        }
    }
    let mut places = Vec::new();
    for service in Service::ALL {
        let log = std::fs::read_to_string(system.log_path(service))?;
        places.push((format!("the {service} log"), log));
    }
    for span in receiver.spans() {
        let attributes = span
            .attributes
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        places.push((
            format!("span {} of {}", span.name, span.service_name),
            format!("{} {attributes}", span.name),
        ));
    }
    ensure!(places.len() > Service::ALL.len(), "no span was received");
    for (what, secret) in &secrets {
        for (place, text) in &places {
            if let Some(at) = text.find(secret.as_str()) {
                let start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
                let end = text[at..]
                    .find('\n')
                    .map_or(text.len(), |newline| at + newline);
                anyhow::bail!("{what} is in {place}: {}", &text[start..end]);
            }
        }
    }
    system.shutdown().await
}

#[tokio::test]
async fn oversized_and_overlong_requests_are_refused_with_json_errors() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("LIMIT-MUG", "Mug", 100, 10)
        .await?;

    // A body past 64 KiB: 413, before anything is parsed.
    let mut huge = OrderRequest::new("LIMIT-MUG", 1).to_json();
    huge["shipping"]["address"] = json!("x".repeat(70 * 1024));
    let answer = system.place_order_json(&huge, None).await?;
    ensure!(answer.status == 413, "{} {}", answer.status, answer.text);
    ensure!(answer.body["error"].is_string(), "{}", answer.text);

    // Too many lines, too many units: 422 naming the field.
    let mut many_lines = OrderRequest::new("LIMIT-MUG", 1).to_json();
    many_lines["items"] = json!(
        (0..101)
            .map(|line| json!({"sku": format!("SKU-{line}"), "quantity": 1}))
            .collect::<Vec<_>>()
    );
    let answer = system.place_order_json(&many_lines, None).await?;
    ensure!(
        answer.status == 422 && answer.body["field"] == "items",
        "{} {}",
        answer.status,
        answer.text
    );
    let too_many_units = OrderRequest::new("LIMIT-MUG", 1001).to_json();
    let answer = system.place_order_json(&too_many_units, None).await?;
    ensure!(
        answer.status == 422 && answer.body["field"] == "items[0].quantity",
        "{} {}",
        answer.status,
        answer.text
    );

    // A client that sends its headers and then stalls is cut off: 408, not a held
    // connection.
    let address = format!("127.0.0.1:{}", system.http_port(Service::Order));
    let stalled = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        stream
            .write_all(
                b"POST /orders HTTP/1.1\r\nHost: order\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n{\"items\":",
            )
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .context("the stalled request was never answered")??;
    ensure!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    system.shutdown().await
}
