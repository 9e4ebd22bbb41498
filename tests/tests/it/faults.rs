//! The fault suite (issue 3): each scenario places a burst of orders over every saga path
//! (with some customer cancels), injects its fault while the orders are in flight, and then
//! checks invariants I1–I6 over everything, printing one line:
//! `<scenario>: N orders, K faults, 0 stuck, 0 violations (I1..I6)`.

use std::time::Duration;

use anyhow::Context;

use e2e::faults::{
    self, Burst, CancelAnswer, Path, PostgresProxy, Scenario, beyond_ack_wait, finish_burst,
    random_delay, random_kills, start_burst, stock_products, wait_fault_lasted,
};
use e2e::polling::{Check, SAGA_TIMEOUT, wait_for};
use e2e::postgres_server::PostgresServer;
use e2e::system::{Service, System, SystemOptions};
use tokio::time::Instant;
use uuid::Uuid;

/// Starts a system with the burst's products stocked.
async fn stocked_system(options: SystemOptions) -> anyhow::Result<System> {
    let system = System::start(options).await?;
    stock_products(&system).await?;
    Ok(system)
}

/// Judges the scenario, prints its line, shuts the system down, and fails on anything wrong.
/// `started` is when the test began: its duration goes to stderr, beside the one line.
async fn conclude(system: System, scenario: Scenario, started: Instant) -> anyhow::Result<()> {
    let verdict = faults::judge(&system, &scenario).await?;
    eprintln!(
        "{} took {:.1?} ({} cancels accepted, {} refused as already ended)",
        scenario.name,
        started.elapsed(),
        scenario.burst.cancels_accepted.len(),
        scenario.burst.cancels_refused
    );
    verdict.print_and_check()?;
    system.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkill_of_every_service_during_a_burst() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut system = stocked_system(SystemOptions::default()).await?;
    // Long enough for two rounds of kills (each service twice).
    let burst = Burst {
        orders: 40,
        pace: Duration::from_millis(150),
        ..Burst::default()
    };
    let (burst, kills) = random_kills(&mut system, burst).await?;
    conclude(system, Scenario::new("random_kill", kills, burst), started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_paused_beyond_their_ack_wait() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut system = stocked_system(SystemOptions::default()).await?;
    let burst = Burst::default();
    let (customer, placing) = start_burst(&system, burst);
    random_delay(Duration::from_millis(800)).await;
    let paused = [
        Service::Inventory,
        Service::Payment,
        Service::Fulfillment,
        Service::Notification,
    ];
    for service in paused {
        system.pause(service)?;
    }
    let since = Instant::now();
    wait_fault_lasted(&customer, since, beyond_ack_wait(), burst.orders / 2).await?;
    for service in paused {
        system.resume(service)?;
    }
    let record = finish_burst(placing).await?;
    conclude(
        system,
        Scenario::new("sigstop_consumers", paused.len(), record),
        started,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_on_the_same_store() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut system = stocked_system(SystemOptions::default()).await?;
    let (_customer, placing) = start_burst(&system, Burst::default());
    let restarts = 2;
    for _ in 0..restarts {
        random_delay(Duration::from_millis(1500)).await;
        system.restart_nats().await?;
    }
    let record = finish_burst(placing).await?;
    conclude(
        system,
        Scenario::new("nats_restart", restarts, record),
        started,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_while_orders_flow() -> anyhow::Result<()> {
    let started = Instant::now();
    let system = stocked_system(SystemOptions::default()).await?;
    let (_customer, placing) = start_burst(&system, Burst::default());
    random_delay(Duration::from_millis(1000)).await;
    let poison = faults::inject_poison(&system).await?;
    let record = finish_burst(placing).await?;
    let mut scenario = Scenario::new("poison", poison.len(), record);
    scenario.poison = poison;
    conclude(system, scenario, started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_every_service_with_one_killed_each() -> anyhow::Result<()> {
    let started = Instant::now();
    let options = SystemOptions {
        replicas: 2,
        ..SystemOptions::default()
    };
    let mut system = stocked_system(options).await?;
    let (_customer, placing) = start_burst(&system, Burst::default());
    // Competing consumers and two relays per service; one replica of each dies mid-burst
    // (the other carries on) and comes back.
    let mut kills = 0;
    for service in Service::ALL {
        random_delay(Duration::from_millis(500)).await;
        let replica = usize::from(rand_bool());
        system.kill_replica(service, replica);
        kills += 1;
        system.restart_replica(service, replica, &[]).await?;
    }
    let record = finish_burst(placing).await?;
    conclude(
        system,
        Scenario::new("two_replicas", kills, record),
        started,
    )
    .await
}

fn rand_bool() -> bool {
    rand::random::<bool>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_racing_every_step() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut system = stocked_system(SystemOptions::default()).await?;
    let burst = Burst::default();
    let (customer, placing) = start_burst(&system, burst);
    // For each participant: pause it, let an order reach the step before it, cancel while
    // it is frozen, and let it wake up to both the step and the cancellation.
    let steps = [
        (Service::Inventory, "order.placed"),
        (Service::Payment, "inventory.reserved"),
        (Service::Fulfillment, "payment.authorized"),
    ];
    let mut raced = e2e::faults::BurstRecord::default();
    for (index, (participant, before)) in steps.into_iter().enumerate() {
        system.pause(participant)?;
        let path = Path::Happy;
        let request = path.request(1000 + index * 4);
        let order_id = customer.place(&request).await?;
        wait_history(&system, order_id, before).await?;
        let answer = customer.cancel(order_id).await?;
        anyhow::ensure!(
            answer == CancelAnswer::Accepted,
            "a cancel while {participant} is paused before its step was refused"
        );
        system.resume(participant)?;
        raced.orders.push(e2e::faults::PlacedOrder {
            order_id,
            path,
            email: request.email.clone(),
        });
        raced.cancels_accepted.push(order_id);
    }
    let mut record = finish_burst(placing).await?;
    record.extend(raced);
    conclude(
        system,
        Scenario::new("cancel_race", steps.len(), record),
        started,
    )
    .await
}

async fn wait_history(system: &System, order_id: Uuid, event_type: &str) -> anyhow::Result<()> {
    wait_for(
        format!("{event_type} in the history of {order_id}"),
        SAGA_TIMEOUT,
        || async {
            let order = system.order(order_id).await?;
            Ok(if order.history_types().contains(&event_type) {
                Check::Done(())
            } else {
                Check::NotYet(format!("{:?}", order.history_types()))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_by_a_proxy() -> anyhow::Result<()> {
    let started = Instant::now();
    let proxy = PostgresProxy::start("127.0.0.1:5432").await?;
    // The databases and roles are made on the server itself; the services go through the proxy.
    let options = SystemOptions {
        postgres_port_for_services: Some(proxy.port()),
        ..SystemOptions::default()
    };
    let system = stocked_system(options).await?;
    let (_customer, placing) = start_burst(&system, Burst::default());
    let cuts = 2;
    for _ in 0..cuts {
        random_delay(Duration::from_millis(1200)).await;
        proxy.cut(Duration::from_secs(3));
        wait_for(
            "the proxy to let connections through again",
            Duration::from_secs(10),
            || async {
                Ok(if proxy.refusing() {
                    Check::NotYet("refusing".to_owned())
                } else {
                    Check::Done(())
                })
            },
        )
        .await?;
    }
    let record = finish_burst(placing).await?;
    conclude(system, Scenario::new("postgres_cut", cuts, record), started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_itself_restarted() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut postgres = PostgresServer::start().await?;
    let options = SystemOptions {
        postgres_url: Some(postgres.url()),
        // The databases and roles go away with the server's directory.
        drop_databases_at_end: false,
        ..SystemOptions::default()
    };
    let system = stocked_system(options).await?;
    let (_customer, placing) = start_burst(&system, Burst::default());
    let restarts = 2;
    for _ in 0..restarts {
        random_delay(Duration::from_millis(1500)).await;
        postgres.restart().await?;
    }
    let record = finish_burst(placing).await?;
    let mut scenario = Scenario::new("postgres_restart", restarts, record);
    scenario.postgres_url = postgres.url();
    conclude(system, scenario, started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stream_leader_killed_mid_burst() -> anyhow::Result<()> {
    let started = Instant::now();
    let options = SystemOptions {
        nats_servers: 3,
        ..SystemOptions::default()
    };
    let mut system = stocked_system(options).await?;
    let (customer, placing) = start_burst(&system, Burst::default());
    random_delay(Duration::from_millis(1000)).await;
    let leader = system.stream_leader("ORDER").await?;
    let cluster = system
        .nats_cluster()
        .context("the system runs on one NATS server, not a cluster")?;
    let node = cluster
        .index_of(&leader)
        .with_context(|| format!("no NATS server is named {leader}"))?;
    cluster.kill(node);
    // Down while the burst goes on; back once half of it is in.
    wait_fault_lasted(
        &customer,
        Instant::now(),
        Duration::ZERO,
        Burst::default().orders / 2,
    )
    .await?;
    system
        .nats_cluster()
        .context("the system runs on one NATS server, not a cluster")?
        .restart(node)
        .await?;
    system.wait_streams_healthy(Duration::from_secs(60)).await?;
    let record = finish_burst(placing).await?;
    conclude(
        system,
        Scenario::new("cluster_leader_kill", 1, record),
        started,
    )
    .await
}
