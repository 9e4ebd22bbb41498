//! Inventory's reactions to an order's events against a real Postgres: what `reserve` reads
//! in its one statement (an earlier decision, an earlier cancellation, the stock) decides.

use events::Event;
use events::order::{
    CancelReason, OrderCancellationRequested, OrderCompleted, OrderLine, OrderPlaced, Shipping,
};
use events::payment::PaymentDeclined;
use inventory::reactions::Reactions;
use inventory::store;
use runtime::testing::{self, ScratchDatabase};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

static MIGRATIONS: Migrator = sqlx::migrate!();

async fn database_with_mugs(on_hand: i64) -> ScratchDatabase {
    let database = ScratchDatabase::create("inventory", &MIGRATIONS).await;
    let mut tx = database.pool.begin().await.expect("failed to begin");
    store::upsert_product(&mut tx, "MUG", "Mug", 1250, on_hand)
        .await
        .expect("failed to save the product");
    tx.commit().await.expect("failed to commit");
    database
}

fn placed(order_id: Uuid, sku: &str, quantity: u32) -> Event {
    Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: "c-1".to_owned(),
        email: "c-1@example.com".to_owned(),
        items: vec![OrderLine {
            sku: sku.to_owned(),
            quantity,
            unit_price_cents: 1250,
        }],
        total_cents: 1250 * i64::from(quantity),
        payment_method: "tok_ok".to_owned(),
        shipping: Shipping {
            country: "NL".to_owned(),
            address: "Damrak 1".to_owned(),
        },
    })
}

/// The event types `event` leads to, delivered as the consumer would.
async fn deliver(pool: &PgPool, event: Event) -> Vec<&'static str> {
    testing::deliver(pool, &Reactions, event)
        .await
        .expect("the handler failed")
        .iter()
        .map(Event::event_type)
        .collect()
}

async fn reserved_mugs(pool: &PgPool) -> i64 {
    mugs(pool).await.0
}

/// (reserved, on hand)
async fn mugs(pool: &PgPool) -> (i64, i64) {
    let product = store::product(pool, "MUG")
        .await
        .expect("failed to read the product")
        .expect("the product is gone");
    (product.reserved, product.on_hand)
}

#[tokio::test]
async fn an_order_placed_again_under_a_new_event_id_is_decided_once() {
    let database = database_with_mugs(5).await;
    let order_id = Uuid::now_v7();
    assert_eq!(
        deliver(&database.pool, placed(order_id, "MUG", 3)).await,
        ["inventory.reserved"]
    );
    assert!(
        deliver(&database.pool, placed(order_id, "MUG", 3))
            .await
            .is_empty()
    );
    assert_eq!(reserved_mugs(&database.pool).await, 3);
}

#[tokio::test]
async fn an_order_whose_cancellation_came_first_holds_nothing() {
    let database = database_with_mugs(5).await;
    let order_id = Uuid::now_v7();
    let cancel = Event::OrderCancellationRequested(OrderCancellationRequested {
        order_id,
        reason: CancelReason::CustomerRequest,
    });
    // Nothing was reserved, so there is nothing to release yet, but it is remembered.
    deliver(&database.pool, cancel).await;
    assert!(
        deliver(&database.pool, placed(order_id, "MUG", 3))
            .await
            .is_empty()
    );
    assert_eq!(reserved_mugs(&database.pool).await, 0);
}

#[tokio::test]
async fn an_order_for_products_that_do_not_exist_or_lack_stock_is_rejected() {
    let database = database_with_mugs(5).await;
    assert_eq!(
        deliver(&database.pool, placed(Uuid::now_v7(), "NO-SUCH-SKU", 1)).await,
        ["inventory.rejected"]
    );
    assert_eq!(
        deliver(&database.pool, placed(Uuid::now_v7(), "MUG", 6)).await,
        ["inventory.rejected"]
    );
    assert_eq!(reserved_mugs(&database.pool).await, 0);
}

#[tokio::test]
async fn stock_is_held_then_given_back_or_deducted_with_the_reservation() {
    let database = database_with_mugs(5).await;
    let (declined, completed) = (Uuid::now_v7(), Uuid::now_v7());
    deliver(&database.pool, placed(declined, "MUG", 2)).await;
    deliver(&database.pool, placed(completed, "MUG", 3)).await;
    assert_eq!(mugs(&database.pool).await, (5, 5));

    let decline = Event::PaymentDeclined(PaymentDeclined {
        order_id: declined,
        reason: "insufficient funds".to_owned(),
    });
    assert_eq!(
        deliver(&database.pool, decline.clone()).await,
        ["inventory.released"]
    );
    assert_eq!(mugs(&database.pool).await, (3, 5));
    // Given back once, however often the decline arrives.
    assert!(deliver(&database.pool, decline).await.is_empty());
    assert_eq!(mugs(&database.pool).await, (3, 5));

    let complete = Event::OrderCompleted(OrderCompleted {
        order_id: completed,
    });
    deliver(&database.pool, complete.clone()).await;
    assert_eq!(mugs(&database.pool).await, (0, 2));
    deliver(&database.pool, complete).await;
    assert_eq!(mugs(&database.pool).await, (0, 2));
}
