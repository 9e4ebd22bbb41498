//! Rebuilding a read model from the streams: replay every stored event it is made of, from the
//! start of the stream, into a fresh copy of its table, then switch the copy in. The streams
//! keep every event (limits retention without an age limit), so a read model is never the
//! only record of what happened and can be thrown away and rebuilt.
//!
//! The copy lives in the schema `rebuild` under the table's own name; a projection's SQL names
//! its table unqualified, and the replay sets `search_path` to `rebuild`, so the very same
//! statements the live consumer runs fill the copy. The switch locks the live table against
//! writers, catches up with what was stored meanwhile, and swaps the tables in one
//! transaction: the service keeps serving reads throughout, and a live update blocked by the
//! lock fails after the swap and is redelivered into the new table.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use events::Envelope;
use events::streams::{Context, type_filter};
use futures::StreamExt;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

use crate::consumer::{HandlerError, Incoming};
use crate::database::connect_as_owner;
use crate::jetstream::{context_stream, ensure_streams};
use crate::service::Platform;
use crate::settings::{Identity, Settings};

/// Events applied per transaction while replaying.
const BATCH: usize = 500;

/// How long one fetch waits for more messages before the replay counts the stream as read.
const FETCH_EXPIRY: Duration = Duration::from_secs(1);

/// A read model that can be rebuilt: which events make it, and how one is applied.
pub trait Projection: Send + Sync {
    /// The table, unqualified, in the `public` schema.
    const TABLE: &'static str;
    /// Creates an empty `rebuild.<TABLE>` shaped like the live one (the schema `rebuild` exists
    /// and is empty), e.g. `CREATE TABLE rebuild.catalogue (LIKE public.catalogue INCLUDING ALL)`.
    const CREATE_COPY: &'static str;
    /// Replaces the live table with the copy, e.g. `DROP TABLE public.catalogue; ALTER TABLE
    /// rebuild.catalogue SET SCHEMA public`, plus whatever refers to the table (foreign keys).
    const SWITCH: &'static str;
    /// Locks the live table against writers while the switch catches up, e.g. `LOCK TABLE
    /// public.catalogue IN EXCLUSIVE MODE` (reads go on).
    const LOCK: &'static str;

    fn stream(&self) -> Context;
    fn event_types(&self) -> Vec<&'static str>;

    /// Applies one event with unqualified table names; it must be idempotent and
    /// order-insensitive, as the live consumer's is.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events applied to the copy, the catch-up included.
    pub events: u64,
    /// The last stream sequence the copy reflects.
    pub up_to_sequence: u64,
}

/// The name of the consumer `service` replays `table`'s stream with, `<service>-rebuild-<table>`:
/// a name known in advance, so that the service's NATS user can be allowed this consumer and
/// no other (`deploy/nats/users.conf`). Two rebuilds of one table at once would share it, as
/// they would share the schema `rebuild`: run one at a time.
pub fn replay_consumer_name(service: &str, table: &str) -> String {
    format!("{service}-rebuild-{table}")
}

/// Rebuilds `projection`'s table from the start of its stream and switches it in, replaying
/// with the consumer `service`'s rebuilds use.
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    jetstream: &jetstream::Context,
    service: &str,
    projection: &P,
) -> anyhow::Result<Rebuilt> {
    let consumer = replay_consumer_name(service, P::TABLE);
    sqlx::raw_sql("DROP SCHEMA IF EXISTS rebuild CASCADE; CREATE SCHEMA rebuild")
        .execute(pool)
        .await
        .context("cannot create the schema for the copy")?;
    sqlx::raw_sql(P::CREATE_COPY)
        .execute(pool)
        .await
        .with_context(|| format!("cannot create the copy of {}", P::TABLE))?;

    // Most of the history, a batch per transaction, without holding up the live consumer.
    let stream = jetstream.get_stream(projection.stream().stream()).await?;
    let mut replay = Replay::start(&stream, &consumer, projection, 1).await?;
    let mut rebuilt = Rebuilt {
        events: 0,
        up_to_sequence: 0,
    };
    while let Some(batch) = replay.next_batch().await? {
        let mut tx = pool.begin().await?;
        apply_to_copy(&mut tx, projection, &batch, &mut rebuilt).await?;
        tx.commit().await?;
    }
    replay.finish().await?;
    tracing::info!(
        table = P::TABLE,
        events = rebuilt.events,
        up_to = rebuilt.up_to_sequence,
        "replayed"
    );

    // The rest under the lock, then the switch, in one transaction.
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(P::LOCK).execute(&mut *tx).await?;
    let mut catch_up =
        Replay::start(&stream, &consumer, projection, rebuilt.up_to_sequence + 1).await?;
    while let Some(batch) = catch_up.next_batch().await? {
        apply_to_copy(&mut tx, projection, &batch, &mut rebuilt).await?;
    }
    catch_up.finish().await?;
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(P::SWITCH).execute(&mut *tx).await?;
    sqlx::raw_sql("DROP SCHEMA rebuild")
        .execute(&mut *tx)
        .await?;
    tx.commit()
        .await
        .context("cannot switch the rebuilt table in")?;
    tracing::info!(
        table = P::TABLE,
        events = rebuilt.events,
        "rebuilt and switched in"
    );
    Ok(rebuilt)
}

/// A service binary's rebuild command: connects with the service's own settings (migrating
/// its database like a start would), makes sure the stream exists, rebuilds `projection` as
/// the owner role (`DATABASE_MIGRATION_URL`), and prints what it did.
pub async fn rebuild_command<P: Projection>(
    identity: Identity,
    settings: Settings,
    migrations: &Migrator,
    projection: &P,
) -> anyhow::Result<()> {
    let platform = Platform::connect_without_api(identity, settings, migrations).await?;
    let replicas = platform.settings.stream_replicas;
    ensure_streams(
        &platform.jetstream,
        vec![context_stream(projection.stream(), replicas)],
    )
    .await?;
    // The copy is created and switched in with DDL: the owner role's work, which the run-time
    // role (DATABASE_URL) may not do.
    let owner = connect_as_owner(&platform.settings.database(&identity))
        .await
        .context("failed to connect as the database's owner")?;
    let rebuilt = rebuild(&owner, &platform.jetstream, identity.name, projection).await?;
    println!(
        "{} rebuilt from {} events ({} up to sequence {}) and switched in",
        P::TABLE,
        rebuilt.events,
        projection.stream().stream(),
        rebuilt.up_to_sequence
    );
    Ok(())
}

/// Applies a batch to the copy inside `tx`.
async fn apply_to_copy<P: Projection>(
    tx: &mut PgConnection,
    projection: &P,
    batch: &[(u64, Incoming)],
    rebuilt: &mut Rebuilt,
) -> anyhow::Result<()> {
    sqlx::query("SET LOCAL search_path TO rebuild")
        .execute(&mut *tx)
        .await?;
    for (_, incoming) in batch {
        projection
            .apply(&mut *tx, incoming)
            .await
            .map_err(anyhow_of)?;
    }
    rebuilt.events += batch.len() as u64;
    if let Some((sequence, _)) = batch.last() {
        rebuilt.up_to_sequence = *sequence;
    }
    Ok(())
}

/// Reads the stored events of a projection's types from a stream sequence on, a batch at a
/// time, until the end of the stream as it was when the batch was fetched.
struct Replay {
    stream: jetstream::stream::Stream,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    name: String,
    drained: bool,
}

impl Replay {
    /// Creates the (ephemeral) consumer `name` reading from `start` on.
    async fn start<P: Projection>(
        stream: &jetstream::stream::Stream,
        name: &str,
        projection: &P,
        start: u64,
    ) -> anyhow::Result<Replay> {
        // One left by a rebuild that died (it would expire after its inactive threshold)
        // would refuse the new start sequence. Usually there is none: the error is expected.
        let _ = stream.delete_consumer(name).await;
        let consumer = stream
            .create_consumer(pull::Config {
                name: Some(name.to_owned()),
                filter_subjects: projection
                    .event_types()
                    .iter()
                    .map(|event_type| type_filter(event_type))
                    .collect(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .context("cannot create a consumer to replay the stream")?;
        // Nothing to read: say so at once instead of waiting out a fetch (under the lock).
        let drained = consumer.cached_info().num_pending == 0;
        Ok(Replay {
            stream: stream.clone(),
            consumer,
            name: name.to_owned(),
            drained,
        })
    }

    /// Deletes the consumer, so that the name is free for the next replay.
    async fn finish(self) -> anyhow::Result<()> {
        self.stream
            .delete_consumer(&self.name)
            .await
            .with_context(|| format!("cannot delete the replay consumer {}", self.name))?;
        Ok(())
    }

    /// The next events with their stream sequences; `None` once the stream is read. An event
    /// that does not decode is skipped with a warning: the live consumer dead-lettered it,
    /// so the read model never had it either.
    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<(u64, Incoming)>>> {
        if self.drained {
            return Ok(None);
        }
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(BATCH)
            .expires(FETCH_EXPIRY)
            .messages()
            .await?;
        let mut events = Vec::new();
        let mut fetched = 0;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| anyhow::anyhow!(error))?;
            fetched += 1;
            let info = message.info().map_err(|error| anyhow::anyhow!(error))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            match decode(&message) {
                Ok(incoming) => events.push((sequence, incoming)),
                Err(error) => {
                    tracing::warn!(sequence, %error, "skipping an event that does not decode");
                }
            }
            self.drained = pending == 0;
        }
        if fetched == 0 {
            self.drained = true;
            return Ok(None);
        }
        Ok(Some(events))
    }
}

fn decode(message: &jetstream::Message) -> anyhow::Result<Incoming> {
    let envelope = Envelope::from_slice(&message.payload)?;
    let event = envelope.event()?;
    Ok(Incoming {
        envelope,
        event,
        subject: message.subject.to_string(),
        delivery: 1,
    })
}

fn anyhow_of(error: HandlerError) -> anyhow::Error {
    match error {
        HandlerError::Transient(error) => error,
        HandlerError::NotYet(reason) | HandlerError::Permanent(reason) => anyhow::anyhow!(reason),
    }
}
