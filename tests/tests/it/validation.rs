//! Input the order service must refuse at the door: 422 with a JSON error that names the
//! field, no order created; and 404 for an order that does not exist.

use e2e::api::OrderRequest;
use e2e::system::{Service, System, SystemOptions};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn invalid_orders_are_refused_with_an_error_naming_the_field() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("VALID-MUG", "Mug", 1250, 10)
        .await?;
    let valid = OrderRequest::new("VALID-MUG", 1).to_json();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no items",
            changed(&valid, |body| body["items"] = json!([])),
            "items",
        ),
        (
            "quantity 0",
            changed(&valid, |body| body["items"][0]["quantity"] = json!(0)),
            "quantity",
        ),
        (
            "an unknown SKU",
            changed(&valid, |body| {
                body["items"][0]["sku"] = json!("NO-SUCH-THING")
            }),
            "sku",
        ),
        (
            "a malformed email",
            changed(&valid, |body| body["email"] = json!("not-an-email")),
            "email",
        ),
        (
            "no payment_method",
            without(&valid, "payment_method"),
            "payment_method",
        ),
        ("no shipping", without(&valid, "shipping"), "shipping"),
    ];

    for (case, body, field) in cases {
        let response = system.place_order_json(&body, None).await?;
        assert_eq!(response.status, 422, "{case}: {}", response.text);
        let message = response
            .error_message()
            .unwrap_or_else(|| panic!("{case}: no JSON error in {:?}", response.text));
        assert!(
            message.to_lowercase().contains(field),
            "{case}: the error {message:?} does not name {field:?}"
        );
    }

    assert_eq!(
        system.placed_orders(),
        Vec::<Uuid>::new(),
        "no order created"
    );
    let product = system.product("VALID-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (10, 0));
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn an_unknown_order_is_not_found_with_a_json_error() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;

    let response = system
        .get(Service::Order, &format!("/orders/{}", Uuid::now_v7()))
        .await?;

    assert_eq!(response.status, 404, "{}", response.text);
    assert!(response.error_message().is_some(), "{}", response.text);
    let payment = system
        .get(Service::Payment, &format!("/payments/{}", Uuid::now_v7()))
        .await?;
    assert_eq!(payment.status, 404, "{}", payment.text);
    assert!(payment.error_message().is_some(), "{}", payment.text);
    system.shutdown().await
}

/// A copy of `body` with one change.
fn changed(body: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut copy = body.clone();
    change(&mut copy);
    copy
}

/// A copy of `body` without one top-level field.
fn without(body: &Value, field: &str) -> Value {
    changed(body, |copy| {
        if let Some(fields) = copy.as_object_mut() {
            fields.remove(field);
        }
    })
}
