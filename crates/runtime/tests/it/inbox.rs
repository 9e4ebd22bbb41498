//! The inbox against a real Postgres: an event is recorded once per consumer, whatever the
//! consumer's name holds (the name is written into the statement as a quoted literal), and
//! the statements sent before it in the same round trip take effect.

use runtime::inbox;
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;
use uuid::Uuid;

#[tokio::test]
async fn an_event_is_recorded_once_per_consumer_whatever_the_name_holds() {
    let database = ScratchDatabase::create("inbox", &Migrator::with_migrations(Vec::new())).await;
    let mut tx = database.pool.begin().await.expect("failed to begin");
    let event_id = Uuid::now_v7();
    let names = [
        "payment-order",
        r"it's a \ name",
        r"\'; DELETE FROM inbox; --",
        "ünïcode",
    ];
    for name in names {
        assert!(
            inbox::record(&mut tx, "", name, event_id)
                .await
                .expect("failed to record"),
            "{name:?} was taken for a duplicate on its first delivery"
        );
        assert!(
            !inbox::record(&mut tx, "", name, event_id)
                .await
                .expect("failed to record again"),
            "{name:?} applied the same event twice"
        );
    }
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT consumer FROM inbox WHERE event_id = $1 ORDER BY consumer")
            .bind(event_id)
            .fetch_all(&mut *tx)
            .await
            .expect("failed to read the inbox");
    let mut expected: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "a name was not stored exactly as given");
}

#[tokio::test]
async fn the_statements_before_the_insert_share_its_round_trip_and_take_effect() {
    let database = ScratchDatabase::create("inbox", &Migrator::with_migrations(Vec::new())).await;
    let mut tx = database.pool.begin().await.expect("failed to begin");
    let first = Uuid::now_v7();
    assert!(
        inbox::record(&mut tx, "SAVEPOINT message; ", "consumer", first)
            .await
            .expect("failed to record")
    );
    // Rolled back to the savepoint the first call started: its row is gone, so the second
    // event is recorded and the first counts as new again.
    let second = Uuid::now_v7();
    let before = "ROLLBACK TO SAVEPOINT message; RELEASE SAVEPOINT message; SAVEPOINT message; ";
    assert!(
        inbox::record(&mut tx, before, "consumer", second)
            .await
            .expect("failed to record after the rollback")
    );
    let recorded: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM inbox")
        .fetch_all(&mut *tx)
        .await
        .expect("failed to read the inbox");
    assert_eq!(recorded, vec![second]);
}
