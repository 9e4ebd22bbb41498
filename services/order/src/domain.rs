//! The order saga's decisions, pure: validating and pricing a new order, and how each fact
//! from the participants moves an order towards its terminal state.
//!
//! Facts may arrive in any order (they come from different streams) and more than once, so
//! the saga records what it has learnt and derives its status from that; a compensation
//! outcome is decided only once every compensation the failure needs is confirmed.

use std::collections::{HashMap, HashSet};

use events::Event;
use events::order::{NotExpressibleInV1, OrderLineV2, OrderPlacedV2, Shipping};
use events::streams::is_subject_token;
use runtime::openapi::{NUL, non_blank_text, subject_token, whitespace_class};
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one SKU one order may ask for.
pub const MAX_QUANTITY: u32 = 1000;
/// Longest `customer_id`, in characters.
pub const MAX_CUSTOMER_ID_CHARS: usize = 100;
/// Longest `email`, in characters (RFC 5321's limit on a path).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest `payment_method`, in characters.
pub const MAX_PAYMENT_METHOD_CHARS: usize = 100;
/// Longest `shipping.address`, in characters.
pub const MAX_ADDRESS_CHARS: usize = 500;

/// Where an order is in its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Reserved,
    Paid,
    Cancelling,
    Completed,
    Rejected,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Reserved,
        Status::Paid,
        Status::Cancelling,
        Status::Completed,
        Status::Rejected,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Reserved => "reserved",
            Status::Paid => "paid",
            Status::Cancelling => "cancelling",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// Every status as the API spells it, as a JSON Schema.
    pub fn schema() -> Object {
        runtime::openapi::string_enum(Status::ALL.map(Status::as_str))
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Rejected | Status::Cancelled
        )
    }
}

/// Why an order was rejected or cancelled; part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    OutOfStock,
    PaymentDeclined,
    FulfillmentFailed,
    CustomerRequest,
    DeadlineExceeded,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::OutOfStock,
        Reason::PaymentDeclined,
        Reason::FulfillmentFailed,
        Reason::CustomerRequest,
        Reason::DeadlineExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OutOfStock => "out_of_stock",
            Reason::PaymentDeclined => "payment_declined",
            Reason::FulfillmentFailed => "fulfillment_failed",
            Reason::CustomerRequest => "customer_request",
            Reason::DeadlineExceeded => "deadline_exceeded",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    /// Every reason as the API spells it, or null, as a JSON Schema.
    pub fn nullable_schema() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .enum_values(Some(
                Reason::ALL
                    .map(|reason| Some(reason.as_str()))
                    .into_iter()
                    .chain([None]),
            ))
            .build()
    }
}

/// Why the order service itself stops a saga: both go through the same compensation path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    CustomerRequest,
    DeadlineExceeded,
}

impl Cancellation {
    fn reason(self) -> Reason {
        match self {
            Cancellation::CustomerRequest => Reason::CustomerRequest,
            Cancellation::DeadlineExceeded => Reason::DeadlineExceeded,
        }
    }
}

/// What the order service knows about one order's saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saga {
    pub status: Status,
    pub reason: Option<Reason>,
    pub inventory_released: bool,
    pub payment_refunded: bool,
    pub fulfillment_cancelled: bool,
}

impl Saga {
    /// A freshly placed order.
    pub fn placed() -> Saga {
        Saga {
            status: Status::Pending,
            reason: None,
            inventory_released: false,
            payment_refunded: false,
            fulfillment_cancelled: false,
        }
    }
}

/// A fact a participant published about the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    InventoryReserved,
    InventoryRejected,
    InventoryReleased,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
    FulfillmentScheduled,
    FulfillmentFailed,
    FulfillmentCancelled,
}

/// What the order service announces: a terminal outcome, or the request to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Rejected for lack of stock, the only reason an order is rejected.
    Rejected,
    Cancelled(Reason),
    /// Every participant must undo what it did and not do its step later.
    CancellationRequested(Reason),
}

/// The saga after a fact or a command, and what to announce, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub saga: Saga,
    pub outcome: Option<Outcome>,
}

/// Why an order cannot be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyFinished(pub Status);

/// A customer's cancel or the deadline. Allowed until the order is terminal; an order that
/// is already being undone stays on its path (the request is answered, nothing new starts).
pub fn cancel(saga: Saga, cancellation: Cancellation) -> Result<Step, AlreadyFinished> {
    if saga.status.is_terminal() {
        return Err(AlreadyFinished(saga.status));
    }
    if saga.status == Status::Cancelling {
        return Ok(Step {
            saga,
            outcome: None,
        });
    }
    let reason = cancellation.reason();
    Ok(Step {
        saga: Saga {
            status: Status::Cancelling,
            reason: Some(reason),
            ..saga
        },
        outcome: Some(Outcome::CancellationRequested(reason)),
    })
}

/// How one fact moves the saga. A terminal saga only records compensations; a fact that
/// arrives late (e.g. `payment.authorized` after the failure it led to) changes nothing.
pub fn react(saga: Saga, fact: Fact) -> Step {
    let mut next = saga;
    match fact {
        Fact::InventoryReleased => next.inventory_released = true,
        Fact::PaymentRefunded => next.payment_refunded = true,
        Fact::FulfillmentCancelled => next.fulfillment_cancelled = true,
        _ if saga.status.is_terminal() || saga.status == Status::Cancelling => {}
        Fact::InventoryReserved => next.status = later(saga.status, Status::Reserved),
        Fact::PaymentAuthorized => next.status = later(saga.status, Status::Paid),
        Fact::InventoryRejected => {
            next.status = Status::Rejected;
            next.reason = Some(Reason::OutOfStock);
            return Step {
                saga: next,
                outcome: Some(Outcome::Rejected),
            };
        }
        Fact::FulfillmentScheduled => {
            next.status = Status::Completed;
            return Step {
                saga: next,
                outcome: Some(Outcome::Completed),
            };
        }
        Fact::PaymentDeclined => {
            next.status = Status::Cancelling;
            next.reason = Some(Reason::PaymentDeclined);
        }
        Fact::FulfillmentFailed => {
            next.status = Status::Cancelling;
            next.reason = Some(Reason::FulfillmentFailed);
        }
    }
    finish_cancelling(next)
}

/// The later of two forward statuses: facts can overtake each other.
fn later(current: Status, candidate: Status) -> Status {
    let rank = |status| match status {
        Status::Pending => 0,
        Status::Reserved => 1,
        _ => 2,
    };
    if rank(candidate) > rank(current) {
        candidate
    } else {
        current
    }
}

/// A cancelling saga is cancelled once the compensations its failure needs are confirmed:
/// a declined payment leaves a reservation to release; a failed shipment leaves a
/// reservation to release and a payment to refund. A cancellation the order service
/// requested may have reached any step, so every participant confirms it has undone its own
/// (a release of nothing, a refund of nothing, a cancelled or never-made shipment).
fn finish_cancelling(saga: Saga) -> Step {
    let done = match (saga.status, saga.reason) {
        (Status::Cancelling, Some(Reason::PaymentDeclined)) => saga.inventory_released,
        (Status::Cancelling, Some(Reason::FulfillmentFailed)) => {
            saga.inventory_released && saga.payment_refunded
        }
        (Status::Cancelling, Some(Reason::CustomerRequest | Reason::DeadlineExceeded)) => {
            saga.inventory_released && saga.payment_refunded && saga.fulfillment_cancelled
        }
        _ => false,
    };
    match (done, saga.reason) {
        (true, Some(reason)) => Step {
            saga: Saga {
                status: Status::Cancelled,
                ..saga
            },
            outcome: Some(Outcome::Cancelled(reason)),
        },
        _ => Step {
            saga,
            outcome: None,
        },
    }
}

/// An order to place.
// The body of `POST /orders` as the client sent it; its schema in the API document says
// what `validate` accepts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({
    "customer_id": "c-1",
    "email": "c1@example.com",
    "items": [{"sku": "MUG", "quantity": 2}],
    "payment_method": "tok_ok",
    "shipping": {"country": "NL", "address": "Damrak 1, Amsterdam"},
}))]
pub struct OrderRequest {
    /// With a bearer token the customer is the token's subject, and this may be left out
    /// (if given, it must be the same); with `INSECURE_DEV_AUTH` it is required.
    #[serde(default)]
    #[schema(schema_with = customer_id_schema, required = false)]
    pub customer_id: String,
    #[schema(schema_with = email_schema)]
    pub email: String,
    #[schema(schema_with = items_schema)]
    pub items: Vec<ItemRequest>,
    #[schema(schema_with = payment_method_schema)]
    pub payment_method: String,
    pub shipping: ShippingRequest,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ItemRequest {
    #[schema(schema_with = sku_schema)]
    pub sku: String,
    #[schema(schema_with = quantity_schema)]
    pub quantity: u32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ShippingRequest {
    #[schema(schema_with = country_schema)]
    pub country: String,
    #[schema(schema_with = address_schema)]
    pub address: String,
}

// What `validate` accepts, field by field, as JSON Schema for the API document.

fn customer_id_schema() -> Object {
    let mut schema = non_blank_text(MAX_CUSTOMER_ID_CHARS);
    schema.description = Some(
        "Taken from the bearer token's subject, which it must equal if given; required only \
         with INSECURE_DEV_AUTH"
            .to_owned(),
    );
    schema
}

fn payment_method_schema() -> Object {
    let mut schema = non_blank_text(MAX_PAYMENT_METHOD_CHARS);
    schema.description = Some("`tok_ok` is authorized, `tok_decline` declined".to_owned());
    schema
}

fn address_schema() -> Object {
    non_blank_text(MAX_ADDRESS_CHARS)
}

/// A local part without `@`, then a domain with a dot that does not start with one; no
/// whitespace anywhere.
fn email_schema() -> Object {
    let space = whitespace_class();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_EMAIL_CHARS))
        .pattern(Some(format!(
            "^[^@{NUL}{space}]+@[^.{NUL}{space}][^{NUL}{space}]*\\.[^{NUL}{space}]*$"
        )))
        .build()
}

fn items_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .description(Some("One line per SKU"))
        .items(ItemRequest::schema())
        .min_items(Some(1))
        .max_items(Some(MAX_LINES))
}

fn quantity_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_QUANTITY))
        .build()
}

fn sku_schema() -> Object {
    let mut schema = subject_token();
    schema.description = Some("A SKU the catalogue knows, at most once per order".to_owned());
    schema
}

fn country_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("ISO 3166-1 alpha-2 code; `AQ` cannot be served"))
        .pattern(Some("^[A-Z]{2}$"))
        .build()
}

/// A request field that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A line priced from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// Taken off the line's list price.
    pub discount_cents: i64,
}

/// How the shop prices orders: the currency of its catalogue and its discount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// ISO 4217 code of every catalogue price.
    pub currency: String,
    pub volume_discount: Option<VolumeDiscount>,
}

/// A percentage off every line of at least `min_quantity` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeDiscount {
    pub min_quantity: u32,
    /// 1 to 100.
    pub percent: u8,
}

impl VolumeDiscount {
    /// Parses `<min quantity>:<percent>`, e.g. `10:5` for 5% off lines of 10 units or more.
    pub fn parse(text: &str) -> Result<VolumeDiscount, String> {
        let usage = || format!("{text:?} is not <min quantity>:<percent>, e.g. 10:5");
        let (min_quantity, percent) = text.split_once(':').ok_or_else(usage)?;
        let min_quantity: u32 = min_quantity.trim().parse().map_err(|_| usage())?;
        let percent: u8 = percent.trim().parse().map_err(|_| usage())?;
        if min_quantity == 0 || !(1..=100).contains(&percent) {
            return Err(format!(
                "{text:?}: the quantity must be at least 1 and the percent 1 to 100"
            ));
        }
        Ok(VolumeDiscount {
            min_quantity,
            percent,
        })
    }

    /// The discount on a line with this list price and quantity, rounded down to the cent.
    fn on(self, list_price_cents: i64, quantity: u32) -> i64 {
        if quantity < self.min_quantity {
            return 0;
        }
        // Multiplying first keeps the cents exact; list prices are far below i64::MAX / 100.
        list_price_cents.saturating_mul(i64::from(self.percent)) / 100
    }
}

impl Default for Pricing {
    fn default() -> Pricing {
        Pricing {
            currency: events::order::V1_CURRENCY.to_owned(),
            volume_discount: None,
        }
    }
}

/// A valid order, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: String,
    pub email: String,
    pub currency: String,
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
    pub payment_method: String,
    pub country: String,
    pub address: String,
}

impl NewOrder {
    /// The lines in their wire shape, as events carry them and the order keeps them.
    pub fn wire_lines(&self) -> Vec<OrderLineV2> {
        self.lines
            .iter()
            .map(|line| OrderLineV2 {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
                discount_cents: line.discount_cents,
            })
            .collect()
    }
}

/// Which version of `order.placed` the service publishes. V2 normally; V1 while a consumer that
/// reads only v1 is still deployed, since consumers are upgraded before producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacedVersion {
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

impl PlacedVersion {
    /// Whether orders priced this way can be told in this version: v1 has no currency
    /// (it is euros) and no discounts.
    pub fn can_carry(self, pricing: &Pricing) -> bool {
        self == PlacedVersion::V2
            || (pricing.currency == events::order::V1_CURRENCY && pricing.volume_discount.is_none())
    }
}

/// The `order.placed` that starts the saga of a new order, in the version the service publishes.
pub fn placed_event(
    order_id: Uuid,
    order: &NewOrder,
    version: PlacedVersion,
) -> Result<Event, NotExpressibleInV1> {
    let placed = OrderPlacedV2 {
        order_id,
        customer_id: order.customer_id.clone(),
        email: order.email.clone(),
        currency: order.currency.clone(),
        items: order.wire_lines(),
        total_cents: order.total_cents,
        payment_method: order.payment_method.clone(),
        shipping: Shipping {
            country: order.country.clone(),
            address: order.address.clone(),
        },
    };
    Ok(match version {
        PlacedVersion::V1 => Event::OrderPlaced(placed.to_v1()?),
        PlacedVersion::V2 => Event::OrderPlacedV2(placed),
    })
}

/// Checks everything that does not need the catalogue; the first problem found is reported
/// with the path of its field.
pub fn validate(request: &OrderRequest) -> Result<(), Invalid> {
    check_text("customer_id", &request.customer_id, MAX_CUSTOMER_ID_CHARS)?;
    check_text("email", &request.email, MAX_EMAIL_CHARS)?;
    let well_formed_email = request
        .email
        .split_once('@')
        .is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
    if !well_formed_email || request.email.chars().any(char::is_whitespace) {
        return Err(invalid("email", "must be an e-mail address"));
    }
    if request.items.is_empty() {
        return Err(invalid("items", "must contain at least one line"));
    }
    if request.items.len() > MAX_LINES {
        return Err(invalid(
            "items",
            format!("must contain at most {MAX_LINES} lines"),
        ));
    }
    let mut seen = HashSet::new();
    for (index, item) in request.items.iter().enumerate() {
        if !is_subject_token(&item.sku) {
            return Err(invalid(
                format!("items[{index}].sku"),
                "must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if !seen.insert(item.sku.as_str()) {
            return Err(invalid(
                format!("items[{index}].sku"),
                format!("{} appears twice; combine the quantities", item.sku),
            ));
        }
        if item.quantity == 0 || item.quantity > MAX_QUANTITY {
            return Err(invalid(
                format!("items[{index}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
    }
    check_text(
        "payment_method",
        &request.payment_method,
        MAX_PAYMENT_METHOD_CHARS,
    )?;
    let country = &request.shipping.country;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "shipping.country",
            "must be an ISO 3166-1 alpha-2 code such as NL",
        ));
    }
    check_text(
        "shipping.address",
        &request.shipping.address,
        MAX_ADDRESS_CHARS,
    )
}

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    // Postgres text cannot hold NUL; storing it would fail the request with a 500.
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// Prices a validated request from the catalogue (SKU → unit price) and the shop's pricing;
/// an unknown SKU is reported with the path of its line. The total is after discounts.
pub fn price(
    request: &OrderRequest,
    catalogue: &HashMap<String, i64>,
    pricing: &Pricing,
) -> Result<NewOrder, Invalid> {
    let mut lines = Vec::with_capacity(request.items.len());
    let mut total_cents: i64 = 0;
    for (index, item) in request.items.iter().enumerate() {
        let Some(&unit_price_cents) = catalogue.get(&item.sku) else {
            return Err(invalid(
                format!("items[{index}].sku"),
                format!("unknown SKU {:?}", item.sku),
            ));
        };
        let too_large = || invalid("items", "the order total is too large");
        let list_price_cents = unit_price_cents
            .checked_mul(i64::from(item.quantity))
            .ok_or_else(too_large)?;
        let discount_cents = pricing
            .volume_discount
            .map_or(0, |discount| discount.on(list_price_cents, item.quantity));
        total_cents = total_cents
            .checked_add(list_price_cents - discount_cents)
            .ok_or_else(too_large)?;
        lines.push(PricedLine {
            sku: item.sku.clone(),
            quantity: item.quantity,
            unit_price_cents,
            discount_cents,
        });
    }
    Ok(NewOrder {
        customer_id: request.customer_id.trim().to_owned(),
        email: request.email.clone(),
        currency: pricing.currency.clone(),
        lines,
        total_cents,
        payment_method: request.payment_method.clone(),
        country: request.shipping.country.clone(),
        address: request.shipping.address.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Given the saga after `given` facts, when `when` arrives, expect this status and outcome.
    fn check(given: &[Fact], when: Fact, status: Status, outcome: Option<Outcome>) {
        let saga = given
            .iter()
            .fold(Saga::placed(), |saga, fact| react(saga, *fact).saga);
        let step = react(saga, when);
        assert_eq!(
            (step.saga.status, step.outcome),
            (status, outcome),
            "given {given:?} when {when:?}"
        );
    }

    use Fact::*;

    #[test]
    fn the_happy_path_completes_when_the_shipment_is_scheduled() {
        check(&[], InventoryReserved, Status::Reserved, None);
        check(&[InventoryReserved], PaymentAuthorized, Status::Paid, None);
        check(
            &[InventoryReserved, PaymentAuthorized],
            FulfillmentScheduled,
            Status::Completed,
            Some(Outcome::Completed),
        );
    }

    #[test]
    fn out_of_stock_rejects_the_order() {
        check(
            &[],
            InventoryRejected,
            Status::Rejected,
            Some(Outcome::Rejected),
        );
    }

    #[test]
    fn a_declined_payment_waits_for_the_release_before_cancelling() {
        check(
            &[InventoryReserved],
            PaymentDeclined,
            Status::Cancelling,
            None,
        );
        check(
            &[InventoryReserved, PaymentDeclined],
            InventoryReleased,
            Status::Cancelled,
            Some(Outcome::Cancelled(Reason::PaymentDeclined)),
        );
    }

    #[test]
    fn a_release_that_overtakes_the_decline_still_cancels_once() {
        check(
            &[InventoryReserved, InventoryReleased],
            PaymentDeclined,
            Status::Cancelled,
            Some(Outcome::Cancelled(Reason::PaymentDeclined)),
        );
    }

    #[test]
    fn a_failed_shipment_needs_both_refund_and_release() {
        let before = [InventoryReserved, PaymentAuthorized, FulfillmentFailed];
        check(&before, PaymentRefunded, Status::Cancelling, None);
        check(&before, InventoryReleased, Status::Cancelling, None);
        check(
            &[
                InventoryReserved,
                PaymentAuthorized,
                FulfillmentFailed,
                InventoryReleased,
            ],
            PaymentRefunded,
            Status::Cancelled,
            Some(Outcome::Cancelled(Reason::FulfillmentFailed)),
        );
    }

    #[test]
    fn facts_that_overtake_each_other_move_forward_only() {
        check(&[PaymentAuthorized], InventoryReserved, Status::Paid, None);
        check(
            &[],
            FulfillmentScheduled,
            Status::Completed,
            Some(Outcome::Completed),
        );
    }

    #[test]
    fn a_terminal_order_ignores_late_and_repeated_facts() {
        let completed = [InventoryReserved, PaymentAuthorized, FulfillmentScheduled];
        check(&completed, FulfillmentScheduled, Status::Completed, None);
        check(&completed, PaymentDeclined, Status::Completed, None);
        check(
            &[InventoryRejected],
            InventoryRejected,
            Status::Rejected,
            None,
        );
        let cancelled = [InventoryReserved, PaymentDeclined, InventoryReleased];
        check(&cancelled, InventoryReleased, Status::Cancelled, None);
    }

    #[test]
    fn a_cancelling_order_is_not_completed_by_a_late_shipment() {
        check(
            &[InventoryReserved, PaymentDeclined],
            FulfillmentScheduled,
            Status::Cancelling,
            None,
        );
    }

    fn cancelled_by(given: &[Fact], cancellation: Cancellation) -> Saga {
        let saga = given
            .iter()
            .fold(Saga::placed(), |saga, fact| react(saga, *fact).saga);
        cancel(saga, cancellation).expect("cancellable").saga
    }

    #[test]
    fn a_customer_cancel_asks_every_participant_to_undo() {
        let step = cancel(Saga::placed(), Cancellation::CustomerRequest).unwrap();
        assert_eq!(step.saga.status, Status::Cancelling);
        assert_eq!(
            step.outcome,
            Some(Outcome::CancellationRequested(Reason::CustomerRequest))
        );
    }

    #[test]
    fn a_cancelled_order_waits_for_all_three_confirmations() {
        let saga = cancelled_by(&[InventoryReserved], Cancellation::DeadlineExceeded);
        let saga = react(saga, InventoryReleased).saga;
        let saga = react(saga, PaymentRefunded).saga;
        assert_eq!(saga.status, Status::Cancelling);
        let step = react(saga, FulfillmentCancelled);
        assert_eq!(step.saga.status, Status::Cancelled);
        assert_eq!(
            step.outcome,
            Some(Outcome::Cancelled(Reason::DeadlineExceeded))
        );
    }

    #[test]
    fn late_steps_after_a_cancel_neither_complete_nor_change_the_reason() {
        let saga = cancelled_by(&[InventoryReserved], Cancellation::CustomerRequest);
        for fact in [
            PaymentAuthorized,
            FulfillmentScheduled,
            PaymentDeclined,
            FulfillmentFailed,
        ] {
            let step = react(saga, fact);
            assert_eq!(step.saga.status, Status::Cancelling, "{fact:?}");
            assert_eq!(step.saga.reason, Some(Reason::CustomerRequest), "{fact:?}");
            assert_eq!(step.outcome, None, "{fact:?}");
        }
    }

    #[test]
    fn a_terminal_order_cannot_be_cancelled() {
        let completed = react(Saga::placed(), FulfillmentScheduled).saga;
        assert_eq!(
            cancel(completed, Cancellation::CustomerRequest),
            Err(AlreadyFinished(Status::Completed))
        );
        let rejected = react(Saga::placed(), InventoryRejected).saga;
        assert!(cancel(rejected, Cancellation::DeadlineExceeded).is_err());
    }

    #[test]
    fn cancelling_twice_requests_once() {
        let saga = cancelled_by(&[], Cancellation::CustomerRequest);
        let again = cancel(saga, Cancellation::CustomerRequest).unwrap();
        assert_eq!(again.outcome, None);
        let declined = react(
            react(Saga::placed(), InventoryReserved).saga,
            PaymentDeclined,
        )
        .saga;
        let step = cancel(declined, Cancellation::CustomerRequest).unwrap();
        assert_eq!(step.saga.reason, Some(Reason::PaymentDeclined));
        assert_eq!(step.outcome, None);
    }

    fn request() -> OrderRequest {
        OrderRequest {
            customer_id: "c-1".into(),
            email: "c1@example.com".into(),
            items: vec![ItemRequest {
                sku: "MUG".into(),
                quantity: 2,
            }],
            payment_method: "tok_ok".into(),
            shipping: ShippingRequest {
                country: "NL".into(),
                address: "Damrak 1, Amsterdam".into(),
            },
        }
    }

    fn field_of(request: &OrderRequest) -> String {
        validate(request).unwrap_err().field
    }

    #[test]
    fn a_well_formed_order_is_valid() {
        assert_eq!(validate(&request()), Ok(()));
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut r = request();
        r.email = "not-an-email".into();
        assert_eq!(field_of(&r), "email");

        let mut r = request();
        r.items.clear();
        assert_eq!(field_of(&r), "items");

        let mut r = request();
        r.items[0].quantity = 0;
        assert_eq!(field_of(&r), "items[0].quantity");

        let mut r = request();
        r.items.push(r.items[0].clone());
        assert_eq!(field_of(&r), "items[1].sku");

        let mut r = request();
        r.items[0].sku = "a.b".into();
        assert_eq!(field_of(&r), "items[0].sku");

        let mut r = request();
        r.shipping.country = "nl".into();
        assert_eq!(field_of(&r), "shipping.country");

        let mut r = request();
        r.customer_id = "  ".into();
        assert_eq!(field_of(&r), "customer_id");
    }

    #[test]
    fn text_postgres_cannot_store_is_invalid() {
        let mut r = request();
        r.customer_id = "c-\0".into();
        assert_eq!(field_of(&r), "customer_id");

        let mut r = request();
        r.shipping.address = "Damrak 1\0".into();
        assert_eq!(field_of(&r), "shipping.address");
    }

    #[test]
    fn an_order_is_priced_from_the_catalogue() {
        let catalogue = HashMap::from([("MUG".to_string(), 1250)]);
        let order = price(&request(), &catalogue, &Pricing::default()).unwrap();
        assert_eq!(order.total_cents, 2500);
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.lines[0].unit_price_cents, 1250);
        assert_eq!(order.lines[0].discount_cents, 0);
    }

    #[test]
    fn a_volume_discount_applies_from_its_quantity_and_rounds_down() {
        let catalogue = HashMap::from([("MUG".to_string(), 999), ("TEE".to_string(), 1500)]);
        let mut r = request();
        r.items = vec![
            ItemRequest {
                sku: "MUG".into(),
                quantity: 3,
            },
            ItemRequest {
                sku: "TEE".into(),
                quantity: 1,
            },
        ];
        let pricing = Pricing {
            currency: "USD".into(),
            volume_discount: Some(VolumeDiscount::parse("3:10").unwrap()),
        };
        let order = price(&r, &catalogue, &pricing).unwrap();
        // 10% of 3 × 9.99 = 2.997, rounded down; the single TEE is below the quantity.
        assert_eq!(order.lines[0].discount_cents, 299);
        assert_eq!(order.lines[1].discount_cents, 0);
        assert_eq!(order.total_cents, 2997 - 299 + 1500);
        assert_eq!(order.currency, "USD");
    }

    #[test]
    fn a_volume_discount_is_parsed_or_refused_with_the_reason() {
        assert_eq!(
            VolumeDiscount::parse("10:5"),
            Ok(VolumeDiscount {
                min_quantity: 10,
                percent: 5
            })
        );
        for bad in ["10", "x:5", "10:0", "0:5", "10:101"] {
            assert!(VolumeDiscount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unknown_sku_is_named_with_its_line() {
        let error = price(&request(), &HashMap::new(), &Pricing::default()).unwrap_err();
        assert_eq!(error.field, "items[0].sku");
        assert!(error.message.contains("unknown SKU"));
    }
}
