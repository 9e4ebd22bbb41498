//! NATS permissions (`deploy/nats/users.conf`): each service connects as its own user, which
//! may create and read its streams, publish its own context's events and its dead letters,
//! and pull and ack through its own durable consumers — and nothing else: not another
//! context's events, not another service's consumer, not deleting or purging a stream, not
//! listening on event subjects or on another service's inbox. Most tests check every
//! service against the deployed configuration on a private server; the last one checks a
//! running system. (Every other System-based test runs the services under these permissions
//! too, and `System::shutdown` fails if NATS refused a service anything.)

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use async_nats::jetstream::{self, AckKind, consumer::AckPolicy, consumer::pull};
use e2e::api::OrderRequest;
use e2e::nats_server::{ADMIN_USER, NatsServer, NatsUsers};
use e2e::polling::SAGA_TIMEOUT;
use e2e::system::{System, SystemOptions};
use events::participants::Participant;
use events::streams::{Context, DLQ_STREAM, dlq_subject, type_filter};
use futures::StreamExt;
use runtime::jetstream::{advisory_stream, context_stream, dead_letter_stream, ensure_streams};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long the server may take to refuse an operation.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a JetStream API call may take here: a refused one is never answered.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// A client connected as one user (with the user's inbox prefix, as the service connects),
/// and what the server refused it.
struct Probe {
    user: String,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    refusals: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn connect(users: &NatsUsers, urls: &[String], user: &str) -> Result<Probe> {
        let (sender, refusals) = mpsc::unbounded_channel();
        let client = users
            .connect_options(user)
            .name(format!("e2e-permission-probe-{user}"))
            .event_callback(move |event| {
                let sender = sender.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = sender.send(error.to_string());
                    }
                }
            })
            .connect(urls)
            .await
            .with_context(|| format!("failed to connect as {user}"))?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(API_TIMEOUT);
        Ok(Probe {
            user: user.to_owned(),
            client,
            jetstream,
            refusals,
        })
    }

    /// Publishes to `subject` (a core publish, with a reply inbox as a request has) and
    /// waits for the server to refuse it.
    async fn publish_is_refused(&mut self, subject: &str) -> Result<()> {
        let inbox = self.client.new_inbox();
        self.client
            .publish_with_reply(subject.to_owned(), inbox, "{}".into())
            .await?;
        self.client.flush().await?;
        self.refused("Publish", subject).await
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    async fn subscribe_is_refused(&mut self, subject: &str) -> Result<()> {
        let _subscription = self.client.subscribe(subject.to_owned()).await?;
        self.client.flush().await?;
        self.refused("Subscription", subject).await
    }

    /// Waits for the server to refuse `operation` ("Publish" or "Subscription") on `subject`,
    /// skipping refusals of anything else.
    async fn refused(&mut self, operation: &str, subject: &str) -> Result<()> {
        let expected =
            format!("permissions violation for {operation} to \"{subject}\"").to_lowercase();
        let deadline = tokio::time::Instant::now() + REFUSAL_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.refusals.recv()).await {
                Ok(Some(message)) if message.to_lowercase().contains(&expected) => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the connection of {} closed", self.user),
                Err(_) => bail!(
                    "NATS did not refuse {} a {operation} to {subject} within {REFUSAL_TIMEOUT:?}",
                    self.user
                ),
            }
        }
    }

    /// Fails if the server refused this user anything so far.
    fn nothing_refused(&mut self) -> Result<()> {
        if let Ok(message) = self.refusals.try_recv() {
            bail!("NATS refused {}: {message}", self.user);
        }
        Ok(())
    }
}

/// A private server with the deployed users and permissions.
async fn server() -> Result<(NatsServer, NatsUsers, Vec<String>)> {
    let users = NatsUsers::generate();
    let server = NatsServer::start_with_users(users.clone()).await?;
    let urls = vec![server.url()];
    Ok((server, users, urls))
}

/// The durable consumer a service reads a stream with, as the runtime names it
/// (`Consumer::durable_name`): `<service>-<context>`.
fn durable_name(participant: Participant, stream: Context) -> String {
    format!("{}-{}", participant.name(), stream.prefix())
}

/// A service's durable consumers: `(stream, name, event types)`.
fn durables(participant: Participant) -> Vec<(Context, String, Vec<&'static str>)> {
    participant
        .subscriptions()
        .into_iter()
        .map(|(stream, event_types)| (stream, durable_name(participant, stream), event_types))
        .collect()
}

/// Creates (or updates) a durable consumer as the service's consumer loop does.
async fn create_durable(
    jetstream: &jetstream::Context,
    stream: Context,
    name: &str,
    event_types: &[&str],
) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let consumer = jetstream
        .get_stream(stream.stream())
        .await
        .with_context(|| format!("failed to look up {}", stream.stream()))?
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subjects: event_types.iter().map(|t| type_filter(t)).collect(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to create consumer {name}"))?;
    Ok(consumer)
}

/// Every stream, and every service's durable consumers, created by admin.
async fn streams_and_consumers(users: &NatsUsers, urls: &[String]) -> Result<Probe> {
    let admin = Probe::connect(users, urls, ADMIN_USER).await?;
    let mut configs: Vec<_> = Context::ALL
        .into_iter()
        .map(|context| context_stream(context, 1))
        .collect();
    configs.push(dead_letter_stream(1));
    configs.push(advisory_stream(1));
    ensure_streams(&admin.jetstream, configs).await?;
    for participant in Participant::ALL {
        for (stream, name, event_types) in durables(participant) {
            create_durable(&admin.jetstream, stream, &name, &event_types).await?;
        }
    }
    Ok(admin)
}

/// An event subject of `event_type` about a new order.
fn event_subject(event_type: &str) -> String {
    format!("{event_type}.{}", Uuid::now_v7())
}

/// What `stream` holds, as admin sees it.
async fn stored(admin: &Probe, stream: &str) -> Result<u64> {
    Ok(admin
        .jetstream
        .get_stream(stream)
        .await?
        .get_info()
        .await?
        .state
        .messages)
}

#[tokio::test]
async fn nothing_connects_without_a_user_or_with_another_users_password() -> Result<()> {
    let (server, users, _) = server().await?;
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(API_TIMEOUT)
        .connect(server.url())
        .await;
    ensure!(anonymous.is_err(), "a client without a user was admitted");
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password(
            Participant::Order.name().to_owned(),
            users.password(ADMIN_USER).to_owned(),
        )
        .connection_timeout(API_TIMEOUT)
        .connect(server.url())
        .await;
    ensure!(wrong.is_err(), "order was admitted with admin's password");
    Ok(())
}

#[tokio::test]
async fn each_service_may_set_up_its_streams_publish_its_events_and_use_its_consumers() -> Result<()>
{
    let (_server, users, urls) = server().await?;
    for participant in Participant::ALL {
        let mut probe = Probe::connect(&users, &urls, participant.name()).await?;
        // The streams it creates at start, as `Service::build` lists them.
        let mut configs: Vec<_> = participant.publishes().into_iter().collect::<Vec<_>>();
        for (stream, _) in participant.subscriptions() {
            if !configs.contains(&stream) {
                configs.push(stream);
            }
        }
        let mut configs: Vec<_> = configs
            .into_iter()
            .map(|context| context_stream(context, 1))
            .collect();
        configs.push(dead_letter_stream(1));
        configs.push(advisory_stream(1));
        ensure_streams(&probe.jetstream, configs)
            .await
            .with_context(|| format!("{} cannot create its streams", participant.name()))?;

        if let Some(context) = participant.publishes() {
            let ack = probe
                .jetstream
                .publish(
                    event_subject(&format!("{}.probed", context.prefix())),
                    "{}".into(),
                )
                .await?
                .await
                .with_context(|| format!("{} cannot publish its events", participant.name()))?;
            ensure!(ack.stream == context.stream(), "{ack:?}");
        }

        for (stream, name, event_types) in durables(participant) {
            let mut consumer = create_durable(&probe.jetstream, stream, &name, &event_types)
                .await
                .with_context(|| format!("{} cannot create its consumer", participant.name()))?;
            // /metrics reads its lag.
            consumer.info().await?;
            // Its dead letters.
            probe
                .jetstream
                .publish(
                    dlq_subject(&name, &event_subject(event_types[0])),
                    "{}".into(),
                )
                .await?
                .await
                .with_context(|| format!("{name} cannot dead-letter"))?;
            // A delivery, pulled and acked (the ack confirmed by the server).
            let admin = Probe::connect(&users, &urls, ADMIN_USER).await?;
            admin
                .jetstream
                .publish(event_subject(event_types[0]), "{}".into())
                .await?
                .await?;
            // Not `fetch`: its no-wait request can reach the consumer before the server has
            // told it of the message just stored, and be answered with nothing.
            let mut messages = consumer
                .batch()
                .max_messages(1)
                .expires(API_TIMEOUT)
                .messages()
                .await?;
            let message = messages
                .next()
                .await
                .with_context(|| format!("{name} delivered nothing"))?
                .map_err(|error| anyhow::anyhow!("{name} cannot pull: {error}"))?;
            message
                .ack_with(AckKind::Progress)
                .await
                .map_err(|error| anyhow::anyhow!("{name} cannot ack: {error}"))?;
            message
                .double_ack()
                .await
                .map_err(|error| anyhow::anyhow!("{name} cannot ack: {error}"))?;
        }
        probe.client.flush().await?;
        probe.nothing_refused()?;
    }
    Ok(())
}

#[tokio::test]
async fn a_service_cannot_publish_another_contexts_events_or_anothers_dead_letters() -> Result<()> {
    let (_server, users, urls) = server().await?;
    let admin = streams_and_consumers(&users, &urls).await?;
    for participant in Participant::ALL {
        let mut probe = Probe::connect(&users, &urls, participant.name()).await?;
        for context in Context::ALL {
            if participant.publishes() == Some(context) {
                continue;
            }
            probe
                .publish_is_refused(&event_subject(&format!("{}.forged", context.prefix())))
                .await?;
        }
        for other in Participant::ALL.into_iter().filter(|p| *p != participant) {
            for (_, name, event_types) in durables(other) {
                probe
                    .publish_is_refused(&dlq_subject(&name, &event_subject(event_types[0])))
                    .await?;
            }
        }
    }

    // Through JetStream, as the relay publishes: no ack, and nothing stored.
    let inventory = Probe::connect(&users, &urls, Participant::Inventory.name()).await?;
    let forged = inventory
        .jetstream
        .publish(event_subject("payment.authorized"), "{}".into())
        .await?
        .await;
    ensure!(
        forged.is_err(),
        "inventory published payment.authorized: {forged:?}"
    );
    for context in Context::ALL {
        ensure!(
            stored(&admin, context.stream()).await? == 0,
            "{} holds a forged event",
            context.stream()
        );
    }
    ensure!(stored(&admin, DLQ_STREAM).await? == 0);
    Ok(())
}

#[tokio::test]
async fn a_service_cannot_read_ack_or_change_another_services_consumer() -> Result<()> {
    let (_server, users, urls) = server().await?;
    let admin = streams_and_consumers(&users, &urls).await?;
    admin
        .jetstream
        .publish(event_subject("order.placed"), "{}".into())
        .await?
        .await?;

    for participant in Participant::ALL {
        let mut probe = Probe::connect(&users, &urls, participant.name()).await?;
        for other in Participant::ALL.into_iter().filter(|p| *p != participant) {
            for (stream, name, _) in durables(other) {
                let stream = stream.stream();
                for call in ["MSG.NEXT", "INFO", "CREATE", "DELETE"] {
                    probe
                        .publish_is_refused(&format!("$JS.API.CONSUMER.{call}.{stream}.{name}"))
                        .await?;
                }
                probe
                    .publish_is_refused(&format!("$JS.ACK.{stream}.{name}.1.1.1.0.0"))
                    .await?;
            }
        }
        // Nor a consumer of its own choosing, on any stream.
        for context in Context::ALL {
            let stream = context.stream();
            probe
                .publish_is_refused(&format!("$JS.API.CONSUMER.CREATE.{stream}"))
                .await?;
        }
        // Nor listen to the events, or to another service's replies and deliveries.
        for context in Context::ALL {
            probe.subscribe_is_refused(&context.subjects()).await?;
        }
        let other = if participant == Participant::Order {
            Participant::Payment
        } else {
            Participant::Order
        };
        probe
            .subscribe_is_refused(&format!("_INBOX_{}.>", other.name()))
            .await?;
        probe.subscribe_is_refused("_INBOX.>").await?;
    }

    // Through JetStream's API, as a client library would: not even the consumer's info.
    let inventory = Probe::connect(&users, &urls, Participant::Inventory.name()).await?;
    let order_stream = inventory
        .jetstream
        .get_stream(Context::Order.stream())
        .await?;
    let looked_up = order_stream
        .get_consumer::<pull::Config>(&durable_name(Participant::Payment, Context::Order))
        .await;
    ensure!(
        looked_up.is_err(),
        "inventory reached payment's consumer on ORDER"
    );

    // Every consumer still has the event to deliver: none was taken from it.
    for participant in Participant::ALL {
        for (stream, name, event_types) in durables(participant) {
            if !event_types.contains(&"order.placed") {
                continue;
            }
            let info = admin
                .jetstream
                .get_stream(stream.stream())
                .await?
                .consumer_info(&name)
                .await?
                .clone();
            ensure!(
                info.num_pending == 1 && info.delivered.consumer_sequence == 0,
                "{name}: {} pending, {} delivered",
                info.num_pending,
                info.delivered.consumer_sequence
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn no_service_can_delete_or_purge_a_stream_or_its_messages() -> Result<()> {
    let (_server, users, urls) = server().await?;
    let admin = streams_and_consumers(&users, &urls).await?;
    admin
        .jetstream
        .publish(event_subject("order.placed"), "{}".into())
        .await?
        .await?;

    let streams: Vec<&str> = Context::ALL
        .iter()
        .map(|context| context.stream())
        .chain([DLQ_STREAM, runtime::jetstream::ADVISORY_STREAM])
        .collect();
    for participant in Participant::ALL {
        let mut probe = Probe::connect(&users, &urls, participant.name()).await?;
        for stream in &streams {
            for call in ["DELETE", "PURGE", "UPDATE", "MSG.DELETE"] {
                probe
                    .publish_is_refused(&format!("$JS.API.STREAM.{call}.{stream}"))
                    .await?;
            }
        }
        // Through JetStream's API too: the calls fail.
        let deleted = probe.jetstream.delete_stream(Context::Order.stream()).await;
        ensure!(deleted.is_err(), "{} deleted ORDER", participant.name());
        if let Ok(stream) = probe.jetstream.get_stream(Context::Order.stream()).await {
            let purged = stream.purge().await;
            ensure!(
                purged.is_err(),
                "{} purged ORDER: {purged:?}",
                participant.name()
            );
        }
    }
    ensure!(
        stored(&admin, Context::Order.stream()).await? == 1,
        "ORDER lost its event"
    );
    Ok(())
}

#[tokio::test]
async fn in_a_running_system_a_service_cannot_forge_anothers_events_or_take_its_deliveries()
-> Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    system
        .put_product_and_wait_catalogue("PERM-MUG", "Mug", 900, 10)
        .await?;
    let order_id = system
        .place_accepted_order(&OrderRequest::new("PERM-MUG", 1))
        .await?;
    let outcome = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    ensure!(outcome.status == "completed", "{outcome:?}");

    let users = system.nats_users();
    let urls = system.nats_urls();
    // Inventory's credentials decline the payment of a completed order.
    let mut inventory = Probe::connect(users, &urls, Participant::Inventory.name()).await?;
    let forged = format!("payment.declined.{order_id}");
    inventory.publish_is_refused(&forged).await?;
    let published = inventory
        .jetstream
        .publish(forged.clone(), "{}".into())
        .await?
        .await;
    ensure!(published.is_err(), "{published:?}");
    // Payment's credentials take a delivery of inventory's consumer.
    let mut payment = Probe::connect(users, &urls, Participant::Payment.name()).await?;
    payment
        .publish_is_refused(&format!(
            "$JS.API.CONSUMER.MSG.NEXT.ORDER.{}",
            durable_name(Participant::Inventory, Context::Order)
        ))
        .await?;
    // Order's credentials delete its own stream.
    let mut order = Probe::connect(users, &urls, Participant::Order.name()).await?;
    order
        .publish_is_refused(&format!(
            "$JS.API.STREAM.DELETE.{}",
            Context::Order.stream()
        ))
        .await?;

    ensure!(
        system.stored_events("payment.declined.*").await?.is_empty(),
        "the forged event reached PAYMENT"
    );
    ensure!(!system.stored_events("order.placed.*").await?.is_empty());
    let after = system.order(order_id).await?;
    ensure!(after.status == "completed", "{after:?}");
    system.check_invariants().await?;
    system.shutdown().await
}
