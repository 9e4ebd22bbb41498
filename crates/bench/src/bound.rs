//! The machine's own limit for this work, measured in the same run on the same servers: how
//! many saga steps Postgres applies a second (with the statements and the batching of the
//! services' consumers), and how many messages JetStream
//! takes and hands out a second, each driven by a minimal client with no service logic. With
//! what one saga costs in each (counted from the system during the run), that bounds the
//! sagas a second this machine could do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use events::Event;
use events::order::{OrderLineV2, OrderPlacedV2, Shipping};
use futures::StreamExt;
use runtime::outbox::{self, Outbox, Written};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::time::Instant;
use uuid::Uuid;

/// The messaging tables, exactly as every service has them.
static MESSAGING: sqlx::migrate::Migrator = sqlx::migrate!("../runtime/migrations");

/// The size of a typical published envelope (`order.placed` is the largest, ~700 bytes).
const PAYLOAD_BYTES: usize = 700;
/// Rows of saga state the transactions update, spread so they do not queue on one row.
const STATE_ROWS: i64 = 10_000;

/// What one saga costs, counted from the system over a phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerSaga {
    /// Saga steps applied in the database: each consumer delivery, and each order placed.
    pub transactions: f64,
    /// Events published to the streams.
    pub publishes: f64,
    /// Deliveries to the services' durable consumers.
    pub deliveries: f64,
}

/// The machine's limits and the sagas a second they allow.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// Saga steps a second, applied `postgres_batch` to a transaction.
    pub postgres_steps_per_s: f64,
    pub postgres_clients: usize,
    pub postgres_batch: usize,
    pub jetstream_publishes_per_s: f64,
    pub jetstream_consumes_per_s: f64,
    pub per_saga: PerSaga,
    /// Each resource alone: the smallest of commits/s ÷ transactions, publishes/s ÷
    /// publishes and consumes/s ÷ deliveries per saga.
    pub sagas_per_s_each_alone: f64,
    /// The resources sharing the machine, as they do under load: one saga costs the sum of
    /// its share of each (1 / Σ cost/rate). This is the bound the ratio is taken against.
    pub sagas_per_s: f64,
    /// Every measurement of the parts, in the order taken; the rates above are the best of
    /// each part.
    pub runs: Vec<BoundRun>,
}

/// One measurement of each part of the bound.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BoundRun {
    pub postgres_steps_per_s: f64,
    pub jetstream_publishes_per_s: f64,
    pub jetstream_consumes_per_s: f64,
}

impl Bound {
    pub fn new(postgres: (f64, usize, usize), jetstream: (f64, f64), per_saga: PerSaga) -> Bound {
        let (commits, clients, batch) = postgres;
        let (publishes, consumes) = jetstream;
        let share = |cost: f64, rate: f64| {
            if rate > 0.0 {
                cost / rate
            } else {
                f64::INFINITY
            }
        };
        let each = [
            1.0 / share(per_saga.transactions, commits),
            1.0 / share(per_saga.publishes, publishes),
            1.0 / share(per_saga.deliveries, consumes),
        ];
        let combined = share(per_saga.transactions, commits)
            + share(per_saga.publishes, publishes)
            + share(per_saga.deliveries, consumes);
        Bound {
            postgres_steps_per_s: commits,
            postgres_clients: clients,
            postgres_batch: batch,
            jetstream_publishes_per_s: publishes,
            jetstream_consumes_per_s: consumes,
            per_saga,
            sagas_per_s_each_alone: each.into_iter().fold(f64::INFINITY, f64::min),
            sagas_per_s: if combined > 0.0 { 1.0 / combined } else { 0.0 },
            runs: Vec::new(),
        }
    }

    /// The bound from several measurements of each part, `(clients, batch)` being the
    /// Postgres client's: each part at its best run, since on a shared machine noise only
    /// ever slows a run down. Taking the best makes the ratio against it the harder one.
    pub fn best_of(runs: Vec<BoundRun>, postgres: (usize, usize), per_saga: PerSaga) -> Bound {
        let best = |part: fn(&BoundRun) -> f64| runs.iter().map(part).fold(0.0, f64::max);
        let (clients, batch) = postgres;
        let bound = Bound::new(
            (best(|run| run.postgres_steps_per_s), clients, batch),
            (
                best(|run| run.jetstream_publishes_per_s),
                best(|run| run.jetstream_consumes_per_s),
            ),
            per_saga,
        );
        Bound { runs, ..bound }
    }
}

/// Saga steps a second applied the way a service's consumer applies them — per step an
/// inbox insert, one row updated and one outbox insert (handed off, so its trigger notifies
/// no one), in a savepoint when several share a transaction, `batch` steps per transaction,
/// and the rows deleted every 100 ms as the relay deletes what it published — from `clients`
/// concurrent connections for `duration`, in a scratch database on `server_url`.
pub async fn postgres_steps(
    server_url: &str,
    clients: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let server_url = server_url.trim_end_matches('/');
    let name = format!("saga_bench_bound_{}", std::process::id());
    let mut admin = PgConnection::connect(&format!("{server_url}/postgres"))
        .await
        .with_context(|| format!("failed to connect to Postgres at {server_url}"))?;
    let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(AssertSqlSafe(drop_sql.clone()))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let measured = async {
        let pool = PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect(&format!("{server_url}/{name}"))
            .await?;
        MESSAGING.run(&pool).await?;
        sqlx::raw_sql(
            "CREATE TABLE saga_state (id BIGINT PRIMARY KEY, status TEXT NOT NULL, \
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "INSERT INTO saga_state (id, status) SELECT n, 'pending' FROM generate_series(1, $1) n",
        )
        .bind(STATE_ROWS)
        .execute(&pool)
        .await?;
        let steps = Arc::new(AtomicU64::new(0));
        let batch = batch.max(1);
        // Written as the services write now, for their relay to take over a channel (no
        // NOTIFY for such rows), and deleted as their relay deletes them once published.
        let outbox = Outbox::with_handoff("bench");
        let published = Arc::new(Mutex::new(Vec::new()));
        let event = typical_event();
        let deadline = Instant::now() + duration;
        let deleter = tokio::spawn(delete_as_the_relay_does(
            pool.clone(),
            Arc::clone(&published),
            deadline,
        ));
        let workers: Vec<_> = (0..clients)
            .map(|worker| {
                let (pool, steps, outbox, event, published) = (
                    pool.clone(),
                    Arc::clone(&steps),
                    outbox.clone(),
                    event.clone(),
                    Arc::clone(&published),
                );
                tokio::spawn(async move {
                    let mut row = worker as i64;
                    while Instant::now() < deadline {
                        let transaction = async {
                            let mut tx = pool.begin().await?;
                            let mut written = Written::default();
                            for step in 0..batch {
                                row = row % STATE_ROWS + 1;
                                // As a batching consumer does: each step in a savepoint,
                                // started with the previous one's release and its inbox row
                                // in one round trip; COMMIT releases the last.
                                let before = match (batch, step) {
                                    (1, _) => "",
                                    (_, 0) => "SAVEPOINT step; ",
                                    _ => "RELEASE SAVEPOINT step; SAVEPOINT step; ",
                                };
                                written.extend(
                                    apply_step(&mut tx, before, row, &outbox, &event).await?,
                                );
                            }
                            tx.commit().await?;
                            Ok::<_, sqlx::Error>(written)
                        };
                        if let Ok(written) = transaction.await {
                            steps.fetch_add(batch as u64, Ordering::Relaxed);
                            lock(&published).extend(written.ids());
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        for worker in workers {
            let _ = worker.await;
        }
        let _ = deleter.await;
        delete_gathered(&pool, &published).await;
        let elapsed = started.elapsed().as_secs_f64();
        pool.close().await;
        anyhow::Ok(steps.load(Ordering::Relaxed) as f64 / elapsed)
    }
    .await;
    let dropped = sqlx::raw_sql(AssertSqlSafe(drop_sql))
        .execute(&mut admin)
        .await;
    let rate = measured?;
    dropped?;
    Ok(rate)
}

/// One saga step, through the same functions a service's consumer calls: its inbox row
/// (`runtime::inbox::record`, after `before` in the same round trip), a row of saga state
/// updated, an event into the outbox (`Outbox::enqueue_handed_off`, which wraps and
/// serialises the envelope). Returns the outbox row, to delete once "published".
async fn apply_step(
    tx: &mut PgConnection,
    before: &str,
    row: i64,
    outbox: &Outbox,
    event: &Event,
) -> Result<Written, sqlx::Error> {
    runtime::inbox::record(tx, before, "bench", Uuid::now_v7()).await?;
    sqlx::query("UPDATE saga_state SET status = $2, updated_at = now() WHERE id = $1")
        .bind(row)
        .bind("reserved")
        .execute(&mut *tx)
        .await?;
    let (_, written) = outbox.enqueue_handed_off(tx, event, None).await?;
    Ok(written)
}

/// Deletes the rows the workers committed, as a service's relay deletes the rows it
/// published: every `DELETE_DELAY` until `deadline`. The bound publishes nothing here:
/// JetStream's part is measured on its own.
async fn delete_as_the_relay_does(
    pool: sqlx::PgPool,
    published: Arc<Mutex<Vec<i64>>>,
    deadline: Instant,
) {
    let mut tick = tokio::time::interval(outbox::DELETE_DELAY);
    while Instant::now() < deadline {
        tick.tick().await;
        delete_gathered(&pool, &published).await;
    }
}

/// What the workers committed so far, deleted `BATCH_SIZE` rows a statement with the relay's
/// own `runtime::outbox::delete_published`.
async fn delete_gathered(pool: &sqlx::PgPool, published: &Mutex<Vec<i64>>) {
    let ids = std::mem::take(&mut *lock(published));
    for chunk in ids.chunks(outbox::BATCH_SIZE as usize) {
        outbox::delete_published(pool, chunk).await;
    }
}

fn lock(ids: &Mutex<Vec<i64>>) -> std::sync::MutexGuard<'_, Vec<i64>> {
    ids.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An `order.placed` of two lines: the largest event a saga writes.
fn typical_event() -> Event {
    let line = |sku: &str| OrderLineV2 {
        sku: sku.to_owned(),
        quantity: 1,
        unit_price_cents: 1250,
        discount_cents: 0,
    };
    Event::OrderPlacedV2(OrderPlacedV2 {
        order_id: Uuid::now_v7(),
        customer_id: "bench-1".to_owned(),
        email: "bench-1@example.com".to_owned(),
        currency: "EUR".to_owned(),
        items: vec![line("BENCH-A"), line("BENCH-B")],
        total_cents: 2500,
        payment_method: "tok_ok".to_owned(),
        shipping: Shipping {
            country: "NL".to_owned(),
            address: "Damrak 1, Amsterdam".to_owned(),
        },
    })
}

/// Publishes a second (each awaited for its ack, `in_flight` outstanding at once, with a
/// `Nats-Msg-Id` like the relay's) into a scratch file stream configured like the services'
/// streams, then consumes a second (pulled in batches, each acked) of what was published.
pub async fn jetstream_rates(
    jetstream: &jetstream::Context,
    stream_config: stream::Config,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let name = format!("SAGA_BENCH_BOUND_{}", std::process::id());
    let subject = format!("saga-bench-bound-{}", std::process::id());
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..stream_config
    };
    let _ = jetstream.delete_stream(&name).await;
    jetstream
        .create_stream(config)
        .await
        .context("failed to create the bench's scratch stream")?;
    let measured = async {
        let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
        let published = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let publishers: Vec<_> = (0..in_flight)
            .map(|worker| {
                let (jetstream, payload, published) =
                    (jetstream.clone(), payload.clone(), Arc::clone(&published));
                let subject = format!("{subject}.{worker}");
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let message = jetstream::message::PublishMessage::build()
                            .payload(payload.clone())
                            .message_id(Uuid::now_v7().to_string());
                        let Ok(ack) = jetstream.send_publish(subject.clone(), message).await else {
                            continue;
                        };
                        if ack.await.is_ok() {
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for publisher in publishers {
            let _ = publisher.await;
        }
        let publish_rate =
            published.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

        let stream = jetstream.get_stream(&name).await?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("bound".to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(256)
            .messages()
            .await?;
        let started = Instant::now();
        let deadline = started + duration;
        let mut consumed = 0u64;
        while Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
            let Ok(Some(Ok(message))) = next else { break };
            if message.ack_with(AckKind::Ack).await.is_ok() {
                consumed += 1;
            }
        }
        let consume_rate = consumed as f64 / started.elapsed().as_secs_f64();
        anyhow::Ok((publish_rate, consume_rate))
    }
    .await;
    let deleted = jetstream.delete_stream(&name).await;
    let rates = measured?;
    deleted.context("failed to delete the bench's scratch stream")?;
    Ok(rates)
}

/// Totals read from the system's streams: messages stored, and deliveries to its durable
/// consumers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamTotals {
    pub messages: u64,
    pub deliveries: u64,
}

impl StreamTotals {
    pub async fn read(jetstream: &jetstream::Context) -> anyhow::Result<StreamTotals> {
        let mut totals = StreamTotals::default();
        for context in events::streams::Context::ALL {
            let stream = jetstream.get_stream(context.stream()).await?;
            totals.messages += stream.get_info().await?.state.messages;
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info?;
                if info.config.durable_name.is_some() {
                    totals.deliveries += info.delivered.consumer_sequence;
                }
            }
        }
        Ok(totals)
    }

    /// What one saga cost between `self` (before) and `after`, with `placed` orders and
    /// `ended` sagas in between.
    pub fn per_saga(&self, after: &StreamTotals, placed: u64, ended: u64) -> PerSaga {
        let ended = ended.max(1) as f64;
        let deliveries = after.deliveries.saturating_sub(self.deliveries) as f64;
        PerSaga {
            transactions: (deliveries + placed as f64) / ended,
            publishes: after.messages.saturating_sub(self.messages) as f64 / ended,
            deliveries: deliveries / ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_shares_the_machine_between_the_resources() {
        let per_saga = PerSaga {
            transactions: 10.0,
            publishes: 5.0,
            deliveries: 10.0,
        };
        let bound = Bound::new((10_000.0, 32, 1), (50_000.0, 100_000.0), per_saga);
        // Alone: 1,000 (Postgres), 10,000 and 10,000 sagas/s; shared: 1 / (1/1000 + 2/10000).
        assert_eq!(bound.sagas_per_s_each_alone, 1000.0);
        assert!((bound.sagas_per_s - 1.0 / 0.0012).abs() < 1e-6);
    }

    #[test]
    fn each_part_of_the_bound_is_its_best_run() {
        let per_saga = PerSaga {
            transactions: 10.0,
            publishes: 5.0,
            deliveries: 10.0,
        };
        let run = |postgres, publishes, consumes| BoundRun {
            postgres_steps_per_s: postgres,
            jetstream_publishes_per_s: publishes,
            jetstream_consumes_per_s: consumes,
        };
        let runs = vec![
            run(8_000.0, 50_000.0, 60_000.0),
            run(10_000.0, 40_000.0, 100_000.0),
        ];
        let bound = Bound::best_of(runs, (32, 1), per_saga);
        assert_eq!(bound.postgres_steps_per_s, 10_000.0);
        assert_eq!(bound.jetstream_publishes_per_s, 50_000.0);
        assert_eq!(bound.jetstream_consumes_per_s, 100_000.0);
        assert!((bound.sagas_per_s - 1.0 / 0.0012).abs() < 1e-6);
        assert_eq!(bound.runs.len(), 2);
    }
}
