//! The `Idempotency-Key` of `POST /orders`: a retried request gets the same order, a key
//! reused for a different request is refused, and a different key is a different order.

use e2e::api::OrderRequest;
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{System, SystemOptions};
use uuid::Uuid;

#[tokio::test]
async fn the_same_key_and_body_place_one_order_and_a_different_body_is_refused()
-> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("IDEM-MUG", "Mug", 1000, 10)
        .await?;
    let request = OrderRequest::new("IDEM-MUG", 2);
    let key = Uuid::now_v7().to_string();

    let first = system.place_order(&request, Some(&key)).await?;
    let retry = system.place_order(&request, Some(&key)).await?;

    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(retry.status, 202, "{}", retry.text);
    let order_id = first.order_id()?;
    assert_eq!(
        retry.order_id()?,
        order_id,
        "a retry must return the same order"
    );
    assert_eq!(retry.location, first.location);

    let changed = system
        .place_order(&OrderRequest::new("IDEM-MUG", 3), Some(&key))
        .await?;
    assert_eq!(changed.status, 422, "{}", changed.text);
    assert!(changed.error_message().is_some(), "{}", changed.text);

    let other_key = Uuid::now_v7().to_string();
    let another = system.place_order(&request, Some(&other_key)).await?;
    assert_eq!(another.status, 202, "{}", another.text);
    assert_ne!(
        another.order_id()?,
        order_id,
        "another key is another order"
    );

    for id in [order_id, another.order_id()?] {
        let order = system.wait_terminal(id, SAGA_TIMEOUT).await?;
        assert_eq!(order.status, "completed", "{order:?}");
    }
    // Exactly two orders took stock: the retry and the refused body took none.
    system.check_invariants().await?;
    let product = system.product("IDEM-MUG").await?;
    assert_eq!((product.on_hand, product.reserved), (6, 0));
    system.shutdown().await
}
