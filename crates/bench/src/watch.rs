//! Knowing when each saga ended, from the events themselves: an ordered JetStream consumer on
//! the order stream's terminal subjects (`order.completed.*`, `order.cancelled.*`,
//! `order.rejected.*`), not polling the HTTP API.
//!
//! It also measures how long events take from the outbox to their stream: an ordered consumer
//! on every context's stream compares each message's stream timestamp with the time in its
//! envelope, which `Outbox::enqueue` sets when the event is written, inside the transaction
//! that writes it. So the delay covers the rest of that transaction, its commit, the relay's
//! wake-up and the publish: everything between deciding on an event and its being stored.
//!
//! The same consumers time each reaction: from when an event was stored to when the service
//! that consumed it wrote the event it caused (its envelope's `causationid`). A saga's
//! critical path alternates the two, so together they show where its time goes.

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

/// Nanoseconds since the Unix epoch.
type Nanos = i128;

/// An event stored on a stream, as far as timing its reactions needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: Uuid,
    pub event_type: String,
    pub causationid: Option<Uuid>,
    /// When its service wrote it to the outbox (its envelope's time).
    pub written: Nanos,
    /// When its stream stored it.
    pub stored: Nanos,
}

/// Pairs every event with its cause, whichever of the two the bench sees first: each stream
/// has its own consumer, so an effect can arrive before its cause on another stream.
#[derive(Debug, Default)]
pub struct Reactions {
    /// Recent events that may still have effects to come: their stored time and type.
    causes: HashMap<Uuid, (Nanos, String)>,
    /// Effects whose cause the bench has not seen yet, by cause: written time and type.
    orphans: HashMap<Uuid, Vec<(Nanos, String)>>,
    /// How many entries the tables may hold before the next pruning (at least
    /// `REACTIONS_KEPT`).
    prune_at: usize,
}

/// Events older than this are forgotten once the tables hold more than `REACTIONS_KEPT`
/// entries: a reaction that takes longer is not timed.
const REACTIONS_HORIZON: Nanos = 60_000_000_000;
const REACTIONS_KEPT: usize = 200_000;

impl Reactions {
    /// Takes in an event; returns the reactions it completes, as (`<cause> → <effect>`,
    /// how long after the cause was stored the effect was written).
    pub fn seen(&mut self, event: Stored) -> Vec<(String, Duration)> {
        let mut timed = Vec::new();
        if let Some(effects) = self.orphans.remove(&event.id) {
            for (written, effect_type) in effects {
                timed.push(reaction(
                    &event.event_type,
                    event.stored,
                    &effect_type,
                    written,
                ));
            }
        }
        if let Some(cause) = event.causationid {
            match self.causes.get(&cause) {
                Some((stored, cause_type)) => timed.push(reaction(
                    cause_type,
                    *stored,
                    &event.event_type,
                    event.written,
                )),
                None => self
                    .orphans
                    .entry(cause)
                    .or_default()
                    .push((event.written, event.event_type.clone())),
            }
        }
        self.causes
            .insert(event.id, (event.stored, event.event_type));
        self.forget_before(event.stored - REACTIONS_HORIZON);
        timed
    }

    fn forget_before(&mut self, horizon: Nanos) {
        if self.held() <= self.prune_at.max(REACTIONS_KEPT) {
            return;
        }
        self.causes.retain(|_, (stored, _)| *stored >= horizon);
        self.orphans
            .retain(|_, effects| effects.iter().any(|(written, _)| *written >= horizon));
        // What is within the horizon stays: scan again only once the tables have doubled, or
        // a rate above `REACTIONS_KEPT` a minute would scan them on every event.
        self.prune_at = 2 * self.held();
    }

    fn held(&self) -> usize {
        self.causes.len() + self.orphans.len()
    }
}

fn reaction(
    cause_type: &str,
    stored: Nanos,
    effect_type: &str,
    written: Nanos,
) -> (String, Duration) {
    let delay = Duration::from_nanos(u64::try_from((written - stored).max(0)).unwrap_or(u64::MAX));
    (format!("{cause_type} → {effect_type}"), delay)
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
        let reactions = Arc::new(Mutex::new(Reactions::default()));
        let mut tasks = vec![task];
        for context in events::streams::Context::ALL {
            tasks.push(
                watch_delays(
                    jetstream,
                    context,
                    Arc::clone(&phase),
                    Arc::clone(&reactions),
                )
                .await?,
            );
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
/// envelope's time the stream stored it, and the reactions it completes, in the phase
/// `phase` names.
async fn watch_delays(
    jetstream: &jetstream::Context,
    context: events::streams::Context,
    phase: Arc<Mutex<Option<Arc<Recorder>>>>,
    reactions: Arc<Mutex<Reactions>>,
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
            let stored = info.published.unix_timestamp_nanos();
            let nanos = stored - i128::from(written);
            let delay = Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX));
            let timed = reactions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .seen(Stored {
                    id: envelope.id,
                    event_type: envelope.event_type,
                    causationid: envelope.causationid,
                    written: i128::from(written),
                    stored,
                });
            let recorder = phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(recorder) = recorder {
                recorder.stored(delay);
                for (step, delay) in timed {
                    recorder.reacted(&step, delay);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn event(event_type: &str, causationid: Option<Uuid>, written: Nanos, stored: Nanos) -> Stored {
        Stored {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            causationid,
            written,
            stored,
        }
    }

    #[test]
    fn a_reaction_is_timed_from_its_causes_storing_to_its_own_writing() {
        let mut reactions = Reactions::default();
        let placed = event("order.placed", None, 0, 2 * MS);
        let reserved = event("inventory.reserved", Some(placed.id), 9 * MS, 12 * MS);
        assert!(reactions.seen(placed).is_empty());
        assert_eq!(
            reactions.seen(reserved),
            [(
                "order.placed → inventory.reserved".to_owned(),
                Duration::from_millis(7)
            )]
        );
    }

    #[test]
    fn an_effect_seen_before_its_cause_waits_for_it() {
        let mut reactions = Reactions::default();
        let placed = event("order.placed", None, 0, 2 * MS);
        let reserved = event("inventory.reserved", Some(placed.id), 5 * MS, 6 * MS);
        let rejected = event("inventory.rejected", Some(placed.id), 7 * MS, 8 * MS);
        assert!(reactions.seen(reserved).is_empty());
        assert!(reactions.seen(rejected).is_empty());
        let mut timed = reactions.seen(placed);
        timed.sort();
        assert_eq!(
            timed,
            [
                (
                    "order.placed → inventory.rejected".to_owned(),
                    Duration::from_millis(5)
                ),
                (
                    "order.placed → inventory.reserved".to_owned(),
                    Duration::from_millis(3)
                ),
            ]
        );
    }
}
