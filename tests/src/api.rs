//! The services' HTTP contract as the suite sees it: request and response types (only the
//! fields the contract promises; more may appear) and typed helpers on [`System`].

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::polling::{Check, SETTLE_TIMEOUT, wait_for};
use crate::system::{Service, System};

/// The payment method the gateway authorizes.
pub const PAYMENT_OK: &str = "tok_ok";
/// The payment method the gateway declines.
pub const PAYMENT_DECLINED: &str = "tok_decline";
/// A country fulfillment serves.
pub const COUNTRY_SERVED: &str = "NL";
/// The country fulfillment cannot serve.
pub const COUNTRY_UNSERVED: &str = "AQ";

/// The order statuses that end a saga.
pub const TERMINAL_STATUSES: [&str; 3] = ["completed", "rejected", "cancelled"];

/// How many requests the harness keeps in flight when it looks at many orders at once;
/// enough to be quick, few enough not to starve the services of the two cores.
const LOOKUP_CONCURRENCY: usize = 8;

/// The body of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderRequest {
    pub customer_id: String,
    pub email: String,
    pub items: Vec<OrderItemRequest>,
    pub payment_method: String,
    pub shipping: ShippingRequest,
}

/// One line of an order request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderItemRequest {
    pub sku: String,
    pub quantity: u32,
}

/// Where an order request ships to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShippingRequest {
    pub country: String,
    pub address: String,
}

impl OrderRequest {
    /// `quantity` × `sku` for customer `c-1`, paid with [`PAYMENT_OK`], shipped to
    /// [`COUNTRY_SERVED`]: the happy path, changed with the `with_*` methods.
    pub fn new(sku: &str, quantity: u32) -> OrderRequest {
        OrderRequest {
            customer_id: "c-1".to_owned(),
            email: "c1@example.com".to_owned(),
            items: vec![OrderItemRequest {
                sku: sku.to_owned(),
                quantity,
            }],
            payment_method: PAYMENT_OK.to_owned(),
            shipping: ShippingRequest {
                country: COUNTRY_SERVED.to_owned(),
                address: "Damrak 1, Amsterdam".to_owned(),
            },
        }
    }

    /// Adds a line.
    pub fn with_item(mut self, sku: &str, quantity: u32) -> OrderRequest {
        self.items.push(OrderItemRequest {
            sku: sku.to_owned(),
            quantity,
        });
        self
    }

    /// Pays with another method, e.g. [`PAYMENT_DECLINED`].
    pub fn with_payment_method(mut self, payment_method: &str) -> OrderRequest {
        self.payment_method = payment_method.to_owned();
        self
    }

    /// Ships to another country, e.g. [`COUNTRY_UNSERVED`].
    pub fn with_country(mut self, country: &str) -> OrderRequest {
        self.shipping.country = country.to_owned();
        self
    }

    /// Places the order for another customer.
    pub fn with_customer(mut self, customer_id: &str, email: &str) -> OrderRequest {
        self.customer_id = customer_id.to_owned();
        self.email = email.to_owned();
        self
    }

    /// The request as JSON, to be broken on purpose by validation tests.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `GET /orders/{id}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub reason: Option<String>,
    pub items: Vec<OrderItemView>,
    pub total_cents: i64,
    pub currency: String,
    /// The saga's trace; null unless the services export traces.
    #[serde(default)]
    pub trace_id: Option<String>,
    pub history: Vec<HistoryEntry>,
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderItemView {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub discount_cents: i64,
}

/// One step of an order's history: an event type and when it happened.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    pub at: String,
}

impl OrderView {
    /// True once the saga has ended.
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATUSES.contains(&self.status.as_str())
    }

    /// The event types of the history, in order.
    pub fn history_types(&self) -> Vec<&str> {
        self.history
            .iter()
            .map(|entry| entry.event_type.as_str())
            .collect()
    }

    /// True if the history contains these event types in this order (others may come
    /// between them: participants' bookkeeping events are not the contract).
    pub fn history_follows(&self, expected: &[&str]) -> bool {
        let mut types = self.history.iter().map(|entry| entry.event_type.as_str());
        expected
            .iter()
            .all(|wanted| types.any(|event_type| event_type == *wanted))
    }

    /// How often an event type appears in the history.
    pub fn count_in_history(&self, event_type: &str) -> usize {
        self.history
            .iter()
            .filter(|entry| entry.event_type == event_type)
            .count()
    }

    /// Units of a SKU in this order.
    pub fn units_of(&self, sku: &str) -> i64 {
        self.items
            .iter()
            .filter(|item| item.sku == sku)
            .map(|item| i64::from(item.quantity))
            .sum()
    }

    /// `status` and `(reason)`, for messages.
    pub fn outcome(&self) -> String {
        match &self.reason {
            Some(reason) => format!("{} ({reason})", self.status),
            None => self.status.clone(),
        }
    }
}

/// `GET /products/{sku}` on inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// `GET /catalogue/{sku}` on order: its read model of a product.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogueEntry {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// `GET /payments/{order_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Payment {
    pub order_id: Uuid,
    /// `pending`, `authorized`, `declined` or `refunded`.
    pub status: String,
    pub amount_cents: i64,
    /// ISO 4217 code of the amounts.
    pub currency: String,
    pub refunded_cents: i64,
}

impl Payment {
    /// What the customer is out of pocket: the authorized amount less refunds; nothing for a
    /// pending or declined payment.
    pub fn net_charged_cents(&self) -> i64 {
        match self.status.as_str() {
            "authorized" | "refunded" => self.amount_cents - self.refunded_cents,
            _ => 0,
        }
    }
}

/// `GET /shipments/{order_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Shipment {
    pub order_id: Uuid,
    /// `scheduled` or `failed`.
    pub status: String,
    pub shipment_id: Option<String>,
    pub carrier: Option<String>,
    pub reason: Option<String>,
}

/// One entry of `GET /notifications?order_id=`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Notification {
    /// `placed`, `shipment_scheduled`, `completed`, `cancelled` or `rejected`.
    pub kind: String,
    pub recipient: String,
    pub sent_at: String,
}

/// Any HTTP answer, for tests that look at status codes and error bodies.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    /// The body as JSON; `Null` when it is not JSON.
    pub body: Value,
    /// The body as text.
    pub text: String,
    pub location: Option<String>,
}

impl ApiResponse {
    /// The `error` message of a JSON error body.
    pub fn error_message(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// The `order_id` of an accepted order.
    pub fn order_id(&self) -> Result<Uuid> {
        let id = self
            .body
            .get("order_id")
            .and_then(Value::as_str)
            .with_context(|| format!("no order_id in HTTP {} {}", self.status, self.text))?;
        id.parse()
            .with_context(|| format!("order_id {id:?} is not a UUID"))
    }

    /// The body as a type, if the status is `expected`.
    pub fn json<T: DeserializeOwned>(&self, expected: u16) -> Result<T> {
        anyhow::ensure!(
            self.status == expected,
            "expected HTTP {expected}, got {}: {}",
            self.status,
            self.text
        );
        serde_json::from_value(self.body.clone())
            .with_context(|| format!("unexpected body: {}", self.text))
    }
}

impl System {
    /// Sends one request to a service and reads the whole answer.
    pub async fn request(
        &self,
        method: Method,
        service: Service,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse> {
        let url = format!("{}{path}", self.base_url(service));
        let mut request = self.http_client().request(method.clone(), &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let authorized = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if let (Some(tokens), false) = (self.tokens(), authorized) {
            request = request.bearer_auth(tokens.token("e2e-operator", &["admin"]));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .with_context(|| format!("failed to read the answer of {method} {url}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(ApiResponse {
            status,
            body,
            text,
            location,
        })
    }

    /// `GET` on a service.
    pub async fn get(&self, service: Service, path: &str) -> Result<ApiResponse> {
        self.request(Method::GET, service, path, None, &[]).await
    }

    /// `PUT /products/{sku}` on inventory. The stock set here is the baseline the stock
    /// invariant checks against, so set it before placing orders for the SKU.
    pub async fn put_product(
        &self,
        sku: &str,
        name: &str,
        price_cents: i64,
        on_hand: i64,
    ) -> Result<Product> {
        let body =
            serde_json::json!({ "name": name, "price_cents": price_cents, "on_hand": on_hand });
        let response = self
            .request(
                Method::PUT,
                Service::Inventory,
                &format!("/products/{sku}"),
                Some(&body),
                &[],
            )
            .await?;
        let product: Product = response
            .json(200)
            .with_context(|| format!("PUT /products/{sku}"))?;
        self.ledger().record_stock(sku, on_hand);
        Ok(product)
    }

    /// [`System::put_product`], then [`System::wait_catalogue`]: the product can be ordered.
    pub async fn put_product_and_wait_catalogue(
        &self,
        sku: &str,
        name: &str,
        price_cents: i64,
        on_hand: i64,
    ) -> Result<Product> {
        let product = self.put_product(sku, name, price_cents, on_hand).await?;
        self.wait_catalogue(sku, price_cents).await?;
        Ok(product)
    }

    /// `GET /products/{sku}` on inventory.
    pub async fn product(&self, sku: &str) -> Result<Product> {
        self.get(Service::Inventory, &format!("/products/{sku}"))
            .await?
            .json(200)
            .with_context(|| format!("GET /products/{sku}"))
    }

    /// `GET /catalogue/{sku}` on order; `None` while it does not know the SKU.
    pub async fn catalogue(&self, sku: &str) -> Result<Option<CatalogueEntry>> {
        let response = self
            .get(Service::Order, &format!("/catalogue/{sku}"))
            .await?;
        if response.status == 404 {
            return Ok(None);
        }
        response
            .json(200)
            .map(Some)
            .with_context(|| format!("GET /catalogue/{sku}"))
    }

    /// Waits until the order service's catalogue has the SKU at this price. It learns
    /// products from inventory's events, so an order placed right after a PUT could be
    /// refused as an unknown SKU without this.
    pub async fn wait_catalogue(&self, sku: &str, price_cents: i64) -> Result<()> {
        wait_for(
            format!("the order service's catalogue to show {sku} at {price_cents} cents"),
            SETTLE_TIMEOUT,
            || async move {
                Ok(match self.catalogue(sku).await? {
                    Some(entry) if entry.price_cents == price_cents => Check::Done(()),
                    Some(entry) => Check::NotYet(format!("price {}", entry.price_cents)),
                    None => Check::NotYet("404".to_owned()),
                })
            },
        )
        .await
    }

    /// `POST /orders`, with an optional `Idempotency-Key`. Any answer is returned; accepted
    /// orders are remembered for [`System::check_invariants`].
    pub async fn place_order(
        &self,
        order: &OrderRequest,
        idempotency_key: Option<&str>,
    ) -> Result<ApiResponse> {
        self.place_order_json(&order.to_json(), idempotency_key)
            .await
    }

    /// `POST /orders` with any JSON body, for validation tests.
    pub async fn place_order_json(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<ApiResponse> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|key| ("Idempotency-Key", key))
            .into_iter()
            .collect();
        let response = self
            .request(
                Method::POST,
                Service::Order,
                "/orders",
                Some(body),
                &headers,
            )
            .await?;
        if response.status == 202 {
            let email = body.get("email").and_then(Value::as_str);
            self.ledger().record_order(response.order_id()?, email);
        }
        Ok(response)
    }

    /// `POST /orders` that must be accepted (202 with a `Location`); returns the order id.
    pub async fn place_accepted_order(&self, order: &OrderRequest) -> Result<Uuid> {
        let response = self.place_order(order, None).await?;
        anyhow::ensure!(
            response.status == 202,
            "POST /orders answered {} instead of 202: {}",
            response.status,
            response.text
        );
        let order_id = response.order_id()?;
        let expected_location = format!("/orders/{order_id}");
        anyhow::ensure!(
            response.location.as_deref() == Some(expected_location.as_str()),
            "POST /orders answered Location {:?} instead of {expected_location:?}",
            response.location
        );
        Ok(order_id)
    }

    /// `POST /orders/{id}/cancel`, whatever it answers.
    pub async fn cancel_order(&self, order_id: Uuid) -> Result<ApiResponse> {
        self.request(
            Method::POST,
            Service::Order,
            &format!("/orders/{order_id}/cancel"),
            None,
            &[],
        )
        .await
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: Uuid) -> Result<OrderView> {
        self.get(Service::Order, &format!("/orders/{order_id}"))
            .await?
            .json(200)
            .with_context(|| format!("GET /orders/{order_id}"))
    }

    /// Polls `GET /orders/{id}` until the order is completed, rejected or cancelled.
    pub async fn wait_terminal(&self, order_id: Uuid, timeout: Duration) -> Result<OrderView> {
        wait_for(
            format!("order {order_id} to reach a terminal status"),
            timeout,
            || async move {
                let order = self.order(order_id).await?;
                Ok(if order.is_terminal() {
                    Check::Done(order)
                } else {
                    Check::NotYet(format!(
                        "status {}, history {:?}",
                        order.status,
                        order.history_types()
                    ))
                })
            },
        )
        .await
    }

    /// Polls `GET /orders/{id}` until its history holds these event types in this order
    /// ([`OrderView::history_follows`]). The order service writes a step into the history
    /// when it consumes the step's event, and its consumers of different streams keep no
    /// order between them: the order can be terminal before, say, `payment.authorized` is
    /// in its history (the history is sorted by the events' own times, so it lands in its
    /// place).
    pub async fn wait_history(
        &self,
        order_id: Uuid,
        expected: &[&str],
        timeout: Duration,
    ) -> Result<OrderView> {
        wait_for(
            format!("order {order_id}'s history to hold {expected:?}"),
            timeout,
            || async move {
                let order = self.order(order_id).await?;
                Ok(if order.history_follows(expected) {
                    Check::Done(order)
                } else {
                    Check::NotYet(format!("history {:?}", order.history_types()))
                })
            },
        )
        .await
    }

    /// [`System::wait_terminal`] for many orders, polled in rounds so that hundreds of
    /// waiting orders do not flood the order service. Views come back in the order of `ids`.
    pub async fn wait_all_terminal(
        &self,
        order_ids: &[Uuid],
        timeout: Duration,
    ) -> Result<Vec<OrderView>> {
        let deadline = Instant::now() + timeout;
        let mut terminal: HashMap<Uuid, OrderView> = HashMap::new();
        loop {
            let waiting: Vec<Uuid> = order_ids
                .iter()
                .copied()
                .filter(|id| !terminal.contains_key(id))
                .collect();
            let views: Vec<OrderView> = stream::iter(waiting)
                .map(|order_id| self.order(order_id))
                .buffer_unordered(LOOKUP_CONCURRENCY)
                .try_collect()
                .await?;
            let mut still_waiting = Vec::new();
            for view in views {
                if view.is_terminal() {
                    terminal.insert(view.order_id, view);
                } else {
                    still_waiting.push(view);
                }
            }
            if still_waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let examples: Vec<String> = still_waiting
                    .iter()
                    .take(10)
                    .map(|view| {
                        format!(
                            "{} {} {:?}",
                            view.order_id,
                            view.status,
                            view.history_types()
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "{} of {} orders not terminal after {timeout:?}, e.g.:\n{}",
                    still_waiting.len(),
                    order_ids.len(),
                    examples.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        order_ids
            .iter()
            .map(|id| {
                terminal
                    .remove(id)
                    .with_context(|| format!("order {id} listed twice"))
            })
            .collect()
    }

    /// `GET path` answered 200 with JSON, or `None` for a 404.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
    ) -> Result<Option<T>> {
        let response = self.get(service, path).await?;
        if response.status == 404 {
            return Ok(None);
        }
        response
            .json(200)
            .map(Some)
            .with_context(|| format!("GET {path}"))
    }

    /// `GET /payments/{order_id}`; `None` if payment never heard of the order.
    pub async fn payment(&self, order_id: Uuid) -> Result<Option<Payment>> {
        self.get_optional(Service::Payment, &format!("/payments/{order_id}"))
            .await
    }

    /// `GET /shipments/{order_id}`; `None` if fulfillment never heard of the order.
    pub async fn shipment(&self, order_id: Uuid) -> Result<Option<Shipment>> {
        self.get_optional(Service::Fulfillment, &format!("/shipments/{order_id}"))
            .await
    }

    /// `GET /notifications?order_id=`.
    pub async fn notifications(&self, order_id: Uuid) -> Result<Vec<Notification>> {
        self.get(
            Service::Notification,
            &format!("/notifications?order_id={order_id}"),
        )
        .await?
        .json(200)
        .with_context(|| format!("GET /notifications?order_id={order_id}"))
    }

    /// Polls the notifications of an order until every kind in `kinds` is present.
    pub async fn wait_notifications(
        &self,
        order_id: Uuid,
        kinds: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Notification>> {
        wait_for(
            format!("notifications {kinds:?} for order {order_id}"),
            timeout,
            || async move {
                let notifications = self.notifications(order_id).await?;
                let missing: Vec<&str> = kinds
                    .iter()
                    .copied()
                    .filter(|kind| !notifications.iter().any(|n| n.kind == *kind))
                    .collect();
                Ok(if missing.is_empty() {
                    Check::Done(notifications)
                } else {
                    Check::NotYet(format!("missing {missing:?}, have {notifications:?}"))
                })
            },
        )
        .await
    }

    /// Notifications of an order counted by kind.
    pub async fn notification_counts(&self, order_id: Uuid) -> Result<HashMap<String, usize>> {
        let mut counts = HashMap::new();
        for notification in self.notifications(order_id).await? {
            *counts.entry(notification.kind).or_insert(0) += 1;
        }
        Ok(counts)
    }
}
