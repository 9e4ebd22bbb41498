//! `bench`: starts the whole system — its own nats-server, the five services with their
//! production settings, fresh databases on the local Postgres — and runs `saga-bench`
//! against it. `scripts/bench` builds everything in release mode and runs this.
//!
//! Usage: `bench [saga-bench options]`; the URLs are the started system's. Exits 0 when sagas
//! ended, 1 when none did, 2 on an error.
//!
//! Durability is as deployed: nats-server with `sync_interval: always`, Postgres with
//! `synchronous_commit` on. To measure what they cost, `BENCH_NATS_SYNC_INTERVAL=2m` (the
//! server's default) and `PGOPTIONS='-c synchronous_commit=off'` (read by every Postgres
//! client, the services' and the bound's) relax them.

use std::process::ExitCode;

use anyhow::Result;
use e2e::nats_server::ADMIN_USER;
use e2e::system::{ApiAuth, Service, System, SystemOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let mut options = match bench::Options::parse_from(std::env::args_os()) {
        Ok(options) => options,
        Err(error) => error.exit(),
    };
    let system = match start().await {
        Ok(system) => system,
        Err(error) => {
            eprintln!("bench: failed to start the system: {error:#}");
            return ExitCode::from(2);
        }
    };
    // This machine class runs Postgres without autovacuum: each phase starts vacuumed and is
    // vacuumed again while it runs (`--vacuum-every`), as a deployment's autovacuum keeps it.
    match system.owner_database_urls() {
        Ok(urls) => options.vacuum.extend(urls),
        Err(error) => {
            eprintln!("bench: {error:#}");
            return ExitCode::from(2);
        }
    }
    options.order_url = system.base_url(Service::Order);
    options.inventory_url = system.base_url(Service::Inventory);
    options.nats_url = system.nats_url();
    options.nats_user = Some(ADMIN_USER.to_owned());
    options.nats_password = Some(system.nats_users().password(ADMIN_USER).to_owned().into());
    // The APIs verify tokens, as deployed; the generator acts as an operator placing orders
    // for its customers.
    options.bearer_token = system
        .tokens()
        .map(|tokens| tokens.token("saga-bench", &["admin"]));
    let outcome = bench::run(options).await;
    if let Err(error) = system.shutdown().await {
        eprintln!("bench: the system did not shut down cleanly: {error:#}");
    }
    match outcome {
        Ok(report) => {
            print!("{}", bench::summary(&report));
            if report.phases.iter().all(|phase| phase.figures.ended == 0) {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The system as it would be deployed: the services' own defaults rather than the test
/// harness's short timeouts and small pools.
async fn start() -> Result<System> {
    // JetStream writes to disk before it acknowledges, as the deploy files configure it;
    // `BENCH_NATS_SYNC_INTERVAL` (e.g. `2m`, nats-server's default) measures the trade-off.
    let sync_interval =
        std::env::var("BENCH_NATS_SYNC_INTERVAL").unwrap_or_else(|_| "always".to_owned());
    let mut options = SystemOptions {
        own_process_group: true,
        api_auth: ApiAuth::Tokens,
        nats_sync_interval: Some(sync_interval),
        ..SystemOptions::default()
    };
    for service in Service::ALL {
        for (key, value) in [
            ("DB_MAX_CONNECTIONS", "10"),
            ("CONSUMER_ACK_WAIT", "30s"),
            ("ORDER_DEADLINE", "30s"),
        ] {
            options = options.with_env(service, key, value);
        }
    }
    // Settings to try on one service, e.g. `inventory:CONSUMER_BATCH=64`, separated by spaces.
    if let Ok(settings) = std::env::var("BENCH_SERVICE_ENV") {
        for setting in settings.split_whitespace() {
            let parsed = setting.split_once(':').and_then(|(name, assignment)| {
                let service = Service::ALL.into_iter().find(|s| s.name() == name)?;
                let (key, value) = assignment.split_once('=')?;
                Some((service, key, value))
            });
            let Some((service, key, value)) = parsed else {
                anyhow::bail!("BENCH_SERVICE_ENV: {setting:?} is not <service>:<KEY>=<value>");
            };
            options = options.with_env(service, key, value);
        }
    }
    eprintln!(
        "starting nats-server (sync_interval {}) and the five services (PGOPTIONS {:?}, BENCH_SERVICE_ENV {:?})",
        options.nats_sync_interval.as_deref().unwrap_or("default"),
        std::env::var("PGOPTIONS").unwrap_or_default(),
        std::env::var("BENCH_SERVICE_ENV").unwrap_or_default()
    );
    System::start(options).await
}
