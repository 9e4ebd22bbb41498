//! The suite's own view of the streams: reading what the services published, injecting
//! duplicates of it, waiting for the durable consumers to drain, and listing dead letters.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::Stream as JetStream;
use async_nats::jetstream::{self, ErrorCode};
use events::Envelope;
use events::streams::{Context as EventContext, DLQ_STREAM};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::nats_server::ADMIN_USER;
use crate::polling::{Check, wait_for};
use crate::system::System;

/// Consumers the suite creates to read streams are named with this, so that
/// [`System::wait_consumers_idle`] can tell them from the services' own.
const PROBE_CONSUMER_PREFIX: &str = "e2e-probe-";

/// How long reading a stream is tried again on errors (see [`System::read_stream`]).
const READ_RETRY: Duration = Duration::from_secs(15);

/// The header JetStream deduplicates on.
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// One event as stored in a stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub stream: String,
    pub sequence: u64,
    pub subject: String,
    pub headers: HeaderMap,
    pub envelope: Envelope,
    /// True if the suite published it (an injected duplicate), not a service.
    pub injected: bool,
}

impl StoredEvent {
    /// The `Nats-Msg-Id` header it was published with.
    pub fn message_id(&self) -> Option<&str> {
        self.headers
            .get(MESSAGE_ID_HEADER)
            .map(|value| value.as_str())
    }
}

/// What `Nats-Msg-Id` a republished copy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupHeader {
    /// No header: JetStream cannot recognise the copy, which reaches every consumer.
    Omitted,
    /// A fresh random id: the same, by a different route.
    Fresh,
    /// The event id, as the services publish it: JetStream drops the copy (within its
    /// dedup window), which is worth asserting too.
    EventId,
}

/// The outcome of publishing a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub stream: String,
    pub sequence: u64,
    /// JetStream recognised the copy as a duplicate and did not store it.
    pub duplicate: bool,
    /// The envelope id of the copy.
    pub event_id: Uuid,
}

impl System {
    /// A client of this system's NATS as `admin`, connected once and shared: the suite
    /// injects and reads whatever it needs. On a cluster it knows every server, so it carries
    /// on when one of them is killed.
    pub async fn nats_client(&self) -> Result<async_nats::Client> {
        let urls = self.nats_urls();
        let client = self
            .nats_client
            .get_or_try_init(|| async {
                self.nats_users()
                    .connect_options(ADMIN_USER)
                    .connect(urls.as_slice())
                    .await
                    .with_context(|| format!("failed to connect to {}", urls.join(",")))
            })
            .await?;
        Ok(client.clone())
    }

    /// Waits until every stream has a leader and every replica of it is current: on a
    /// cluster, after a server came back, the point from which JetStream serves every stream
    /// again.
    pub async fn wait_streams_healthy(&self, timeout: Duration) -> Result<()> {
        wait_for(
            "every stream to have a leader and every replica current",
            timeout,
            || async {
                let jetstream = self.jetstream().await?;
                let names: Vec<String> = jetstream.stream_names().try_collect().await?;
                let mut unhealthy = Vec::new();
                for name in names {
                    let info = jetstream.get_stream(&name).await?.info().await?.clone();
                    let Some(cluster) = info.cluster else {
                        continue;
                    };
                    let lagging: Vec<&str> = cluster
                        .replicas
                        .iter()
                        .filter(|peer| !peer.current || peer.offline)
                        .map(|peer| peer.name.as_str())
                        .collect();
                    if cluster.leader.is_none() || !lagging.is_empty() {
                        unhealthy.push(format!(
                            "{name}: leader {:?}, replicas not current {lagging:?}",
                            cluster.leader
                        ));
                    }
                }
                Ok(if unhealthy.is_empty() {
                    Check::Done(())
                } else {
                    Check::NotYet(unhealthy.join("; "))
                })
            },
        )
        .await
    }

    /// The name of the NATS server that leads a stream (`n1`, ...), on a cluster.
    pub async fn stream_leader(&self, stream: &str) -> Result<String> {
        let mut stream_handle = self
            .jetstream()
            .await?
            .get_stream(stream)
            .await
            .with_context(|| format!("failed to look up stream {stream}"))?;
        let info = stream_handle
            .info()
            .await
            .with_context(|| format!("failed to read the info of stream {stream}"))?;
        info.cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone())
            .with_context(|| format!("stream {stream} reports no cluster leader"))
    }

    /// A JetStream context on this system's NATS server.
    pub async fn jetstream(&self) -> Result<jetstream::Context> {
        Ok(jetstream::new(self.nats_client().await?))
    }

    /// The last message on a subject (e.g. `order.placed.<order id>`).
    pub async fn last_event(&self, subject: &str) -> Result<StoredEvent> {
        let stream_name = stream_of_subject(subject)?;
        let stream = self
            .jetstream()
            .await?
            .get_stream(stream_name)
            .await
            .with_context(|| format!("failed to look up stream {stream_name}"))?;
        let message = stream
            .get_last_raw_message_by_subject(subject)
            .await
            .with_context(|| format!("no message on {subject} in stream {stream_name}"))?;
        let envelope = Envelope::from_slice(&message.payload)
            .with_context(|| format!("the last message on {subject} is not an envelope"))?;
        Ok(StoredEvent {
            injected: self.ledger().is_injected(stream_name, message.sequence),
            stream: stream_name.to_owned(),
            sequence: message.sequence,
            subject: message.subject.to_string(),
            headers: message.headers,
            envelope,
        })
    }

    /// Every event stored on subjects matching `subject_filter` (e.g.
    /// `payment.authorized.*`), in stream order.
    pub async fn stored_events(&self, subject_filter: &str) -> Result<Vec<StoredEvent>> {
        let stream_name = stream_of_subject(subject_filter)?;
        let Some(messages) = self.read_stream(stream_name, subject_filter).await? else {
            return Ok(Vec::new());
        };
        let ledger = self.ledger();
        messages
            .into_iter()
            .map(|(sequence, message)| {
                let envelope = Envelope::from_slice(&message.payload).with_context(|| {
                    format!(
                        "message {sequence} on {} is not an envelope",
                        message.subject
                    )
                })?;
                Ok(StoredEvent {
                    injected: ledger.is_injected(stream_name, sequence),
                    stream: stream_name.to_owned(),
                    sequence,
                    subject: message.subject.to_string(),
                    headers: message.headers.unwrap_or_default(),
                    envelope,
                })
            })
            .collect()
    }

    /// Publishes a copy of a stored event with the same envelope (same event id), carrying
    /// the given `Nats-Msg-Id`. With [`DedupHeader::Omitted`] or [`DedupHeader::Fresh`] it
    /// gets past JetStream's dedup, so consumers see the same event id twice and their inbox
    /// must drop it.
    pub async fn republish(&self, event: &StoredEvent, dedup: DedupHeader) -> Result<Injection> {
        let message_id = match dedup {
            DedupHeader::Omitted => None,
            DedupHeader::Fresh => Some(Uuid::now_v7().to_string()),
            DedupHeader::EventId => Some(event.envelope.id.to_string()),
        };
        self.inject(event, &event.envelope, message_id).await
    }

    /// Publishes the same fact again as a new event: a new UUIDv7 id (also its
    /// `Nats-Msg-Id`), the same type, subject and data. No inbox can recognise it; the
    /// domain must make it harmless.
    pub async fn republish_as_new_event(&self, event: &StoredEvent) -> Result<Injection> {
        let mut envelope = event.envelope.clone();
        envelope.id = Uuid::now_v7();
        let message_id = envelope.id.to_string();
        self.inject(event, &envelope, Some(message_id)).await
    }

    async fn inject(
        &self,
        original: &StoredEvent,
        envelope: &Envelope,
        message_id: Option<String>,
    ) -> Result<Injection> {
        // Keep the original's other headers (trace context) so the copy looks like it.
        let mut headers = HeaderMap::new();
        for (name, values) in original.headers.iter() {
            let name_text: &str = name.as_ref();
            if name_text.eq_ignore_ascii_case(MESSAGE_ID_HEADER) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(message_id) = message_id {
            headers.insert(MESSAGE_ID_HEADER, message_id.as_str());
        }
        let ack = self
            .jetstream()
            .await?
            .publish_with_headers(original.subject.clone(), headers, envelope.to_vec().into())
            .await
            .with_context(|| format!("failed to publish a copy on {}", original.subject))?
            .await
            .with_context(|| {
                format!(
                    "JetStream did not acknowledge a copy on {}",
                    original.subject
                )
            })?;
        if !ack.duplicate {
            self.ledger().record_injection(&ack.stream, ack.sequence);
        }
        Ok(Injection {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
            event_id: envelope.id,
        })
    }

    /// Waits until every durable consumer on the four event streams has been delivered
    /// everything and has acknowledged it — that is, every service has committed its
    /// handling of every stored event.
    pub async fn wait_consumers_idle(&self, timeout: Duration) -> Result<()> {
        wait_for(
            "every service consumer to process and acknowledge every event",
            timeout,
            || async {
                let mut busy = Vec::new();
                for context in EventContext::ALL {
                    let Some(stream) = self.find_stream(context.stream()).await? else {
                        continue;
                    };
                    let mut consumers = stream.consumers();
                    while let Some(info) = consumers.try_next().await? {
                        if info.name.starts_with(PROBE_CONSUMER_PREFIX) {
                            continue;
                        }
                        if info.num_pending > 0 || info.num_ack_pending > 0 {
                            busy.push(format!(
                                "{}/{}: {} undelivered, {} unacknowledged",
                                info.stream_name, info.name, info.num_pending, info.num_ack_pending
                            ));
                        }
                    }
                }
                Ok(if busy.is_empty() {
                    Check::Done(())
                } else {
                    Check::NotYet(busy.join("; "))
                })
            },
        )
        .await
    }

    /// Every message in the dead-letter stream, described for a person (subject, headers
    /// and the start of the payload). Empty when the stream does not exist.
    pub async fn dead_letters(&self) -> Result<Vec<String>> {
        let Some(messages) = self.read_stream(DLQ_STREAM, "").await? else {
            return Ok(Vec::new());
        };
        Ok(messages
            .into_iter()
            .map(|(sequence, message)| {
                let headers: Vec<String> = message
                    .headers
                    .iter()
                    .flat_map(|headers| headers.iter())
                    .map(|(name, values)| {
                        let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                        let name: &str = name.as_ref();
                        format!("{name}={}", values.join(","))
                    })
                    .collect();
                let payload = String::from_utf8_lossy(&message.payload);
                let payload: String = payload.chars().take(300).collect();
                format!(
                    "#{sequence} {} [{}] {payload}",
                    message.subject,
                    headers.join(" ")
                )
            })
            .collect())
    }

    /// [`read_messages`] of a stream, or `None` if the stream does not exist. Tried again for
    /// a while on errors: on a cluster, a stream or its probe consumer has no leader for a
    /// few seconds after a server is lost, and JetStream answers "no responders" meanwhile.
    async fn read_stream(
        &self,
        name: &str,
        subject_filter: &str,
    ) -> Result<Option<Vec<(u64, async_nats::Message)>>> {
        wait_for(format!("stream {name} to be read"), READ_RETRY, || async {
            Ok(Check::Done(match self.find_stream(name).await? {
                Some(stream) => Some(read_messages(&stream, subject_filter).await?),
                None => None,
            }))
        })
        .await
    }

    /// The stream, or `None` if no service has created it (yet).
    async fn find_stream(&self, name: &str) -> Result<Option<JetStream>> {
        match self.jetstream().await?.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error) => match error.kind() {
                GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(error).with_context(|| format!("failed to look up stream {name}")),
            },
        }
    }
}

/// The stream holding the events of a subject, e.g. `ORDER` for `order.placed.<id>`.
pub fn stream_of_subject(subject: &str) -> Result<&'static str> {
    EventContext::of_event_type(subject)
        .map(EventContext::stream)
        .with_context(|| format!("no stream holds subject {subject:?}"))
}

/// Reads every message of a stream matching `subject_filter` (all when empty) through a
/// short-lived consumer that acknowledges nothing, so the services' consumers are not
/// affected. Returns `(stream sequence, message)` in stream order.
async fn read_messages(
    stream: &JetStream,
    subject_filter: &str,
) -> Result<Vec<(u64, async_nats::Message)>> {
    let name = format!("{PROBE_CONSUMER_PREFIX}{}", Uuid::now_v7().simple());
    let consumer = stream
        .create_consumer(pull::Config {
            name: Some(name.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            filter_subject: subject_filter.to_owned(),
            // Removed by the server if we fail to delete it ourselves.
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to create a probe consumer for {subject_filter:?}"))?;
    // At creation the consumer knows how many stored messages match its filter.
    let expected = usize::try_from(consumer.cached_info().num_pending)
        .context("more pending messages than memory")?;
    let mut read = Vec::with_capacity(expected);
    if expected > 0 {
        let mut messages = consumer
            .messages()
            .await
            .context("failed to pull from a probe consumer")?
            .take(expected);
        let reading = async {
            while let Some(message) = messages.next().await {
                let message = message.map_err(|error| anyhow::anyhow!(error))?;
                let sequence = message
                    .info()
                    .map_err(|error| anyhow::anyhow!(error))?
                    .stream_sequence;
                read.push((sequence, message.message));
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .with_context(|| {
                format!("timed out reading {expected} messages of {subject_filter:?}")
            })??;
    }
    // Best effort: the inactivity threshold removes it anyway.
    let _ = stream.delete_consumer(&name).await;
    Ok(read)
}
