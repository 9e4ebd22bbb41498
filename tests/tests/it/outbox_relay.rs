//! The outbox relay. With two replicas on one database: rows written while both relays run
//! are each published exactly once (`FOR UPDATE SKIP LOCKED`), not merely stored once
//! thanks to JetStream's dedup — a plain NATS subscriber counts every publish on the wire.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use e2e::nats_server::NatsServer;
use e2e::polling::{Check, SETTLE_TIMEOUT, wait_for};
use events::Event;
use events::order::OrderCompleted;
use events::streams::Context;
use futures::StreamExt;
use runtime::jetstream::{context_stream, ensure_streams};
use runtime::outbox::{Outbox, Relay};
use runtime::testing::ScratchDatabase;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TRANSACTIONS: usize = 20;
const EVENTS_PER_TRANSACTION: usize = 25;

#[tokio::test]
async fn two_relays_publish_every_row_exactly_once() -> anyhow::Result<()> {
    let nats_server = NatsServer::start().await?;
    let client = async_nats::connect(nats_server.url()).await?;
    let jetstream = jetstream::new(client.clone());
    ensure_streams(&jetstream, vec![context_stream(Context::Order, 1)]).await?;
    let database = ScratchDatabase::create("relay", &Migrator::with_migrations(Vec::new())).await;

    let mut wire = client.subscribe("order.>").await?;
    client.flush().await?;

    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        // Each replica has a pool of its own, as two processes would.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database.url())
            .await?;
        let relay = Relay {
            pool,
            jetstream: jetstream.clone(),
            poll_interval: Duration::from_millis(50),
            metrics: runtime::metrics::Metrics::new(),
            crash_after_publish_ack: None,
            handed_off: None,
        };
        relays.push(tokio::spawn(relay.run(stop.clone())));
    }

    // Write while both relays run, in transactions of several rows.
    let outbox = Outbox::new("relay-test");
    let mut written = Vec::new();
    for _ in 0..TRANSACTIONS {
        let mut tx = database.pool.begin().await?;
        for _ in 0..EVENTS_PER_TRANSACTION {
            let event = Event::OrderCompleted(OrderCompleted {
                order_id: Uuid::now_v7(),
            });
            written.push(outbox.enqueue(&mut tx, &event, None).await?.id);
        }
        tx.commit().await?;
    }

    wait_for("the outbox to be empty", SETTLE_TIMEOUT, || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&database.pool)
                .await?;
        Ok(if pending == 0 {
            Check::Done(())
        } else {
            Check::NotYet(format!("{pending} rows pending"))
        })
    })
    .await?;
    stop.cancel();
    for relay in relays {
        relay.await?;
    }
    // The relays publish on this connection: once it has flushed, every publish has been
    // delivered to the subscriber ahead of the server's answer.
    client.flush().await?;
    wire.unsubscribe().await?;
    let mut publishes: HashMap<String, usize> = HashMap::new();
    while let Some(message) = wire.next().await {
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|id| id.to_string())
            .unwrap_or_default();
        *publishes.entry(id).or_default() += 1;
    }

    let twice: Vec<_> = publishes.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    assert_eq!(publishes.len(), written.len(), "every row published");
    for id in &written {
        assert!(
            publishes.contains_key(&id.to_string()),
            "{id} never published"
        );
    }
    let stored = jetstream
        .get_stream("ORDER")
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(stored, written.len() as u64);
    Ok(())
}

/// LISTEN/NOTIFY is only a wake-up hint: when the listening connection is cut, rows written
/// meanwhile are still published promptly (the relay listens again and drains everything),
/// long before its timer poll would come round.
#[tokio::test]
async fn a_lost_listening_connection_is_replaced_and_nothing_waits_for_the_poll()
-> anyhow::Result<()> {
    let nats_server = NatsServer::start().await?;
    let client = async_nats::connect(nats_server.url()).await?;
    let jetstream = jetstream::new(client.clone());
    ensure_streams(&jetstream, vec![context_stream(Context::Order, 1)]).await?;
    let database = ScratchDatabase::create("listen", &Migrator::with_migrations(Vec::new())).await;
    let relay_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&database.url())
        .await?;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        Relay {
            pool: relay_pool,
            jetstream: jetstream.clone(),
            // Far beyond the test's patience: only a notification or a reconnect drains.
            poll_interval: Duration::from_secs(3600),
            metrics: runtime::metrics::Metrics::new(),
            crash_after_publish_ack: None,
            handed_off: None,
        }
        .run(stop.clone()),
    );
    let outbox = Outbox::new("listen-test");
    let listeners = "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query ILIKE 'LISTEN%'";

    for round in 0..2 {
        wait_for("the relay to listen", SETTLE_TIMEOUT, || async {
            let listening: i64 = sqlx::query_scalar(listeners)
                .fetch_one(&database.pool)
                .await?;
            Ok(if listening > 0 {
                Check::Done(())
            } else {
                Check::NotYet("no LISTEN connection".into())
            })
        })
        .await?;
        if round == 1 {
            // Cut the listening connection, as a failover or an administrator would.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .execute(&database.pool)
            .await?;
        }
        let mut tx = database.pool.begin().await?;
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: Uuid::now_v7(),
        });
        outbox.enqueue(&mut tx, &event, None).await?;
        tx.commit().await?;
        wait_for(
            format!("round {round} to be published"),
            SETTLE_TIMEOUT,
            || async {
                let pending: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                        .fetch_one(&database.pool)
                        .await?;
                Ok(if pending == 0 {
                    Check::Done(())
                } else {
                    Check::NotYet(format!("{pending} pending"))
                })
            },
        )
        .await?;
    }
    stop.cancel();
    relay.await?;
    Ok(())
}
