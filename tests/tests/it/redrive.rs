//! Dead letters an operator can act on: a real event that one consumer gave up on is shown by
//! `sagactl dlq show` with its reason and original subject; once its cause is fixed, it is
//! redriven to its subject through `sagactl`'s library and takes effect exactly once, also when
//! it is redriven again. JetStream's max-deliveries advisories land in `ADVISORIES`, where
//! `sagactl dlq advisories` lists them.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream;
use e2e::api::OrderRequest;
use e2e::jetstream::DedupHeader;
use e2e::polling::{Check, SAGA_TIMEOUT, SETTLE_TIMEOUT, wait_for};
use e2e::system::{Service, System, SystemOptions, service_binary_directory};
use futures::StreamExt;
use sagactl::dead_letters::{self, Content, DeadLetter, Selection};

/// Deliveries after which payment dead-letters an event it cannot apply yet: two, so the test
/// waits for one redelivery instead of seven.
const MAX_DELIVER: &str = "2";

/// Runs the `sagactl` binary (built by `cargo build --workspace --bins`) against the system.
async fn sagactl(system: &System, args: &[&str]) -> Result<Output> {
    let binary = service_binary_directory()?.join("sagactl");
    tokio::process::Command::new(&binary)
        .args(args)
        .envs(system.admin_nats_environment())
        .output()
        .await
        .with_context(|| format!("failed to run {}", binary.display()))
}

/// What a successful `sagactl` run printed.
async fn sagactl_stdout(system: &System, args: &[&str]) -> Result<String> {
    let output = sagactl(system, args).await?;
    anyhow::ensure!(
        output.status.success(),
        "`sagactl {}` {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn all_dead_letters(system: &System) -> Result<Vec<DeadLetter>> {
    let jetstream = system.jetstream().await?;
    Ok(dead_letters::list(&jetstream, &Selection::default())
        .await?
        .items)
}

#[tokio::test]
async fn a_redriven_dead_letter_takes_effect_exactly_once() -> Result<()> {
    let mut system = System::start(SystemOptions::default().with_env(
        Service::Payment,
        "CONSUMER_MAX_DELIVER",
        MAX_DELIVER,
    ))
    .await?;
    system
        .put_product_and_wait_catalogue("REDRIVE-MUG", "Mug", 700, 5)
        .await?;
    let jetstream = system.jetstream().await?;

    // Given payment lost an order's `order.placed`: while payment is down, the message is
    // taken from its durable consumer and acknowledged, as if payment had handled it.
    system.wait_consumers_idle(SETTLE_TIMEOUT).await?;
    system.kill(Service::Payment);
    let order_id = system
        .place_accepted_order(&OrderRequest::new("REDRIVE-MUG", 2))
        .await?;
    let placed_subject = format!("order.placed.{order_id}");
    let payment_order = jetstream
        .get_stream("ORDER")
        .await?
        .get_consumer::<pull::Config>("payment-order")
        .await
        .map_err(|error| anyhow!(error))?;
    wait_for(
        "payment's order.placed to be taken from its consumer",
        SETTLE_TIMEOUT,
        || async {
            let mut messages = payment_order
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|error| anyhow!(error))?;
            let Some(message) = messages.next().await else {
                return Ok(Check::NotYet("nothing delivered".to_owned()));
            };
            let message = message.map_err(|error| anyhow!(error))?;
            anyhow::ensure!(
                message.subject.as_str() == placed_subject,
                "payment-order was given {} instead",
                message.subject
            );
            message.double_ack().await.map_err(|error| anyhow!(error))?;
            Ok(Check::Done(()))
        },
    )
    .await?;
    let reserved_subject = format!("inventory.reserved.{order_id}");
    let reserved = wait_for("inventory to reserve the stock", SETTLE_TIMEOUT, || async {
        Ok(Check::Done(system.last_event(&reserved_subject).await?))
    })
    .await?;

    // When payment comes back, it cannot charge an order it never heard of and gives up
    // after two deliveries.
    system
        .restart(Service::Payment, &[("CONSUMER_MAX_DELIVER", MAX_DELIVER)])
        .await?;
    let letter = wait_for(
        "payment to dead-letter inventory.reserved",
        SAGA_TIMEOUT,
        || async {
            let letters = all_dead_letters(&system).await?;
            Ok(match letters.first() {
                Some(letter) => Check::Done(letter.clone()),
                None => Check::NotYet("DLQ is empty".to_owned()),
            })
        },
    )
    .await?;

    // Then the letter says what, where from, who gave up and why.
    assert_eq!(letter.consumer(), Some("payment-inventory"), "{letter:?}");
    assert_eq!(letter.original_subject(), Some(reserved_subject.as_str()));
    assert_eq!(letter.stream_sequence(), Some(reserved.sequence));
    assert_eq!(letter.deliveries(), Some(2));
    let reason = letter.reason().unwrap_or_default();
    assert!(
        reason.contains("gave up after 2 deliveries") && reason.contains("order.placed"),
        "{reason}"
    );
    assert_eq!(
        letter.content(),
        Content::Event {
            event_type: "inventory.reserved".to_owned(),
            id: reserved.envelope.id,
        }
    );
    let shown = sagactl_stdout(&system, &["dlq", "show"]).await?;
    println!("$ sagactl dlq show\n{shown}");
    for expected in [
        format!("#{}", letter.sequence),
        "payment-inventory".to_owned(),
        reserved_subject.clone(),
        "gave up after 2 deliveries".to_owned(),
        format!("inventory.reserved {}", reserved.envelope.id),
        "1 dead letter(s) shown; DLQ holds 1".to_owned(),
    ] {
        assert!(
            shown.contains(&expected),
            "{expected:?} missing from:\n{shown}"
        );
    }
    let shown_json = sagactl_stdout(&system, &["dlq", "show", "--json"]).await?;
    println!("$ sagactl dlq show --json\n{shown_json}");
    let lines: Vec<serde_json::Value> = shown_json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{shown_json}");
    assert_eq!(lines[0]["original_subject"], reserved_subject.as_str());
    assert_eq!(lines[0]["event"]["id"], reserved.envelope.id.to_string());
    // The saga waits for a payment that nobody will make.
    let stuck = system.order(order_id).await?;
    assert!(!stuck.is_terminal(), "{stuck:?}");
    assert!(system.payment(order_id).await?.is_none());

    // When the cause is fixed (payment is given the `order.placed` it lost) and the letter
    // redriven, the order is paid and completes.
    let placed = system.last_event(&placed_subject).await?;
    system.republish(&placed, DedupHeader::Fresh).await?;
    wait_for("payment to learn the order", SETTLE_TIMEOUT, || async {
        Ok(match system.payment(order_id).await? {
            Some(payment) if payment.status == "pending" => Check::Done(()),
            other => Check::NotYet(format!("{other:?}")),
        })
    })
    .await?;
    let redriven = dead_letters::redrive(&jetstream, &letter).await?;
    assert_eq!(redriven.stream, "INVENTORY");
    assert_eq!(redriven.subject, reserved_subject);
    assert!(!redriven.duplicate);
    let order = system.wait_terminal(order_id, SAGA_TIMEOUT).await?;
    assert_eq!(order.status, "completed", "{order:?}");
    let authorized_subject = format!("payment.authorized.{order_id}");
    assert_eq!(system.stored_events(&authorized_subject).await?.len(), 1);
    assert!(all_dead_letters(&system).await?.is_empty());

    // Redriving the same letter again changes nothing. By its sequence, it is gone:
    let again = sagactl(&system, &["dlq", "redrive", &letter.sequence.to_string()]).await?;
    let complaint = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        complaint.contains(&format!("no dead letter with sequence {}", letter.sequence)),
        "{complaint}"
    );
    // a redrive interrupted between its publish and its delete is dropped by JetStream:
    let republished = dead_letters::republish(&jetstream, &letter).await?;
    assert!(republished.duplicate, "{republished:?}");
    // and past the dedup window the copy is stored, but every consumer's inbox drops it.
    let copy = system.last_event(&reserved_subject).await?;
    assert_eq!(copy.envelope.id, reserved.envelope.id);
    let beyond_dedup = system.republish(&copy, DedupHeader::Fresh).await?;
    assert!(!beyond_dedup.duplicate);
    system.wait_consumers_idle(SETTLE_TIMEOUT).await?;
    assert_eq!(system.stored_events(&authorized_subject).await?.len(), 1);
    let payment = system.payment(order_id).await?.context("no payment")?;
    assert_eq!(payment.status, "authorized");
    assert_eq!(payment.amount_cents, 1400);
    assert_eq!(system.order(order_id).await?.status, "completed");

    let shown = sagactl_stdout(&system, &["dlq", "show"]).await?;
    assert_eq!(shown, "0 dead letter(s) shown; DLQ holds 0\n");
    system.check_invariants().await?;
    system.shutdown().await
}

#[tokio::test]
async fn max_deliveries_advisories_are_captured_and_listed() -> Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    let jetstream = system.jetstream().await?;

    // A consumer without the services' loop: it is given a message once and never acks it.
    let stubborn = jetstream
        .create_stream(stream::Config {
            name: "E2E_STUBBORN".to_owned(),
            subjects: vec!["e2e.stubborn".to_owned()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await?;
    let consumer = stubborn
        .create_consumer(pull::Config {
            durable_name: Some("never-acks".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(500),
            max_deliver: 1,
            ..Default::default()
        })
        .await?;
    let sequence = jetstream
        .publish("e2e.stubborn", "hello".into())
        .await?
        .await?
        .sequence;
    let mut messages = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|error| anyhow!(error))?;
    let delivered = messages
        .next()
        .await
        .context("the message was not delivered")?
        .map_err(|error| anyhow!(error))?;
    assert_eq!(delivered.subject.as_str(), "e2e.stubborn");

    // JetStream gives up once its ack wait passes, and says so in an advisory nobody
    // subscribed to: ADVISORIES has it.
    let advisory = wait_for("the advisory in ADVISORIES", SETTLE_TIMEOUT, || async {
        let listing = sagactl::advisories::list(&jetstream, None).await?;
        Ok(
            match listing
                .items
                .into_iter()
                .find(|advisory| advisory.consumer == "never-acks")
            {
                Some(advisory) => Check::Done(advisory),
                None => Check::NotYet("no advisory for never-acks".to_owned()),
            },
        )
    })
    .await?;
    assert_eq!(advisory.stream, "E2E_STUBBORN");
    assert_eq!(advisory.stream_sequence, Some(sequence));
    assert_eq!(advisory.deliveries, Some(1));

    let listed = sagactl_stdout(&system, &["dlq", "advisories"]).await?;
    println!("$ sagactl dlq advisories\n{listed}");
    assert!(
        listed.contains(&format!(
            "stream E2E_STUBBORN  consumer never-acks  stream sequence {sequence}  deliveries 1"
        )),
        "{listed}"
    );
    system.shutdown().await
}
