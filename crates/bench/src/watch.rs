//! Knowing when each saga ended, from the events themselves: an ordered JetStream consumer on
//! the order stream's terminal subjects (`order.completed.*`, `order.cancelled.*`,
//! `order.rejected.*`), not polling the HTTP API.
//!
//! It also measures how long events take from the outbox to their stream: an ordered consumer
//! on every context's stream compares each message's stream timestamp with the time in its
//! envelope, which `Outbox::enqueue` sets when the event is written, inside the transaction
//! that writes it. So the delay covers the rest of that transaction, its commit, the relay's
//! wake-up and the publish: everything between deciding on an event and its being stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use events::Event;
use events::envelope::Envelope;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::mix::Path;
use crate::stats::Recorder;

/// An order whose saga has not ended yet.
struct Awaited {
    due: Instant,
    path: Path,
    recorder: Arc<Recorder>,
    done: oneshot::Sender<()>,
}

/// How a saga ended: its terminal event type and reason, and when the bench saw it.
#[derive(Debug, Clone)]
struct Ending {
    at: Instant,
    event_type: &'static str,
    reason: Option<&'static str>,
}

#[derive(Default)]
struct Table {
    awaited: HashMap<Uuid, Awaited>,
    /// Endings seen before the `202` that names their order reached the bench.
    early: HashMap<Uuid, Ending>,
}

/// Watches the terminal events and matches them to the orders the bench placed.
pub struct Watcher {
    table: Arc<Mutex<Table>>,
    /// The phase the outbox-to-stream delays count in, if one is running.
    phase: Arc<Mutex<Option<Arc<Recorder>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching from now on (earlier history is not replayed).
    pub async fn start(jetstream: &jetstream::Context) -> anyhow::Result<Watcher> {
        let stream = jetstream
            .get_stream(events::streams::Context::Order.stream())
            .await
            .context("the ORDER stream is missing: is the order service running?")?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subjects: ["order.completed", "order.cancelled", "order.rejected"]
                    .iter()
                    .map(|event_type| events::streams::type_filter(event_type))
                    .collect(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .context("failed to create the bench's ordered consumer on ORDER")?;
        let mut messages = consumer.messages().await?;
        let table = Arc::new(Mutex::new(Table::default()));
        let shared = Arc::clone(&table);
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Ok(message) = message else {
                    // The ordered consumer recreates itself after a gap; errors are transient.
                    continue;
                };
                let at = Instant::now();
                if let Some((order_id, ending)) = ending_of(&message.payload, at) {
                    settle(&shared, order_id, ending);
                }
            }
        });
        let phase = Arc::new(Mutex::new(None));
        let mut tasks = vec![task];
        for context in events::streams::Context::ALL {
            tasks.push(watch_delays(jetstream, context, Arc::clone(&phase)).await?);
        }
        Ok(Watcher {
            table,
            phase,
            tasks,
        })
    }

    /// Counts the outbox-to-stream delay of every event stored from now on in `recorder`.
    pub fn count_delays_in(&self, recorder: &Arc<Recorder>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(recorder));
    }

    /// Waits for the saga of `order_id`; the receiver fires when it has ended (and has been
    /// recorded in `recorder`).
    pub fn expect(
        &self,
        order_id: Uuid,
        due: Instant,
        path: Path,
        recorder: Arc<Recorder>,
    ) -> oneshot::Receiver<()> {
        let (done, receiver) = oneshot::channel();
        let awaited = Awaited {
            due,
            path,
            recorder,
            done,
        };
        let mut table = lock(&self.table);
        match table.early.remove(&order_id) {
            Some(ending) => {
                drop(table);
                finish(awaited, ending);
            }
            None => {
                table.awaited.insert(order_id, awaited);
            }
        }
        receiver
    }

    /// How many sagas of `recorder`'s phase have not ended yet.
    pub fn outstanding(&self, recorder: &Arc<Recorder>) -> u64 {
        lock(&self.table)
            .awaited
            .values()
            .filter(|awaited| Arc::ptr_eq(&awaited.recorder, recorder))
            .count() as u64
    }

    /// Stops waiting for the phase's sagas that have not ended, and forgets endings of orders
    /// nobody placed (another client's, or a phase's that gave up).
    pub fn abandon(&self, recorder: &Arc<Recorder>) {
        let mut table = lock(&self.table);
        table
            .awaited
            .retain(|_, awaited| !Arc::ptr_eq(&awaited.recorder, recorder));
        table.early.clear();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Records, for every event stored on `context`'s stream from now on, how long after its
/// envelope's time the stream stored it, in the phase `phase` names.
async fn watch_delays(
    jetstream: &jetstream::Context,
    context: events::streams::Context,
    phase: Arc<Mutex<Option<Arc<Recorder>>>>,
) -> anyhow::Result<JoinHandle<()>> {
    let stream = jetstream
        .get_stream(context.stream())
        .await
        .with_context(|| format!("the {} stream is missing", context.stream()))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .with_context(|| {
            format!(
                "failed to create the bench's ordered consumer on {}",
                context.stream()
            )
        })?;
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let Ok(message) = message else {
                continue;
            };
            let (Ok(info), Ok(envelope)) = (message.info(), Envelope::from_slice(&message.payload))
            else {
                continue;
            };
            let Some(written) = envelope.time.timestamp_nanos_opt() else {
                continue;
            };
            let nanos = info.published.unix_timestamp_nanos() - i128::from(written);
            let delay = Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX));
            let recorder = phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(recorder) = recorder {
                recorder.stored(delay);
            }
        }
    }))
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // Nothing panics while holding the lock; should it, the table is still consistent.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn settle(table: &Mutex<Table>, order_id: Uuid, ending: Ending) {
    let mut table = lock(table);
    match table.awaited.remove(&order_id) {
        Some(awaited) => {
            drop(table);
            finish(awaited, ending);
        }
        None => {
            table.early.insert(order_id, ending);
        }
    }
}

fn finish(awaited: Awaited, ending: Ending) {
    let as_expected = awaited.path.expected_end() == (ending.event_type, ending.reason);
    let latency = ending.at.saturating_duration_since(awaited.due);
    awaited
        .recorder
        .ended(ending.at, awaited.path, latency, as_expected);
    // The placing task may have stopped waiting (closed loop timed out); nothing to tell then.
    let _ = awaited.done.send(());
}

/// The order and ending a terminal event tells of; `None` for anything else.
fn ending_of(payload: &[u8], at: Instant) -> Option<(Uuid, Ending)> {
    let event = Envelope::from_slice(payload).ok()?.event().ok()?;
    let (order_id, event_type, reason) = match event {
        Event::OrderCompleted(e) => (e.order_id, "order.completed", None),
        Event::OrderCancelled(e) => (e.order_id, "order.cancelled", Some(e.reason.as_str())),
        Event::OrderRejected(e) => (e.order_id, "order.rejected", Some(e.reason.as_str())),
        _ => return None,
    };
    Some((
        order_id,
        Ending {
            at,
            event_type,
            reason,
        },
    ))
}
