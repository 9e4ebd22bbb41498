//! `bench`: starts the whole system — its own nats-server, the five services with their
//! production settings, fresh databases on the local Postgres — and runs `saga-bench`
//! against it. `scripts/bench` builds everything in release mode and runs this.
//!
//! Usage: `bench [--repeat N] [--versus DIR] [--versus-settings S] [saga-bench options]`; the
//! URLs are the started system's. `--repeat` runs it again on a fresh system, `--versus` runs
//! another build's services in turns with this one's and `--versus-settings` this build's
//! with other settings; each run's report is written (tagged with its build and run) and the
//! end prints each figure's median and range per build. Exits 0 when sagas ended in every
//! run, 1 when a run ended none, 2 on an error.
//!
//! Durability is as deployed: nats-server with `sync_interval: always`, Postgres with
//! `synchronous_commit` on. To measure what they cost, `BENCH_NATS_SYNC_INTERVAL=2m` (the
//! server's default) and `PGOPTIONS='-c synchronous_commit=off'` (read by every Postgres
//! client, the services' and the bound's) relax them. `scripts/bench` sets `PGSSLMODE=disable`
//! unless it is set: the system and the bound share the machine with their Postgres, as in
//! the compose file, and TLS over loopback protects nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use bench::Report;
use clap::Parser;
use e2e::nats_server::ADMIN_USER;
use e2e::system::{
    ApiAuth, Service, System, SystemOptions, service_binaries, service_binary_directory,
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    about = "Starts the whole system in release mode and runs saga-bench against it; with \
             --repeat or --versus, several times, summed up as each figure's median and range.",
    version
)]
struct Cli {
    #[command(flatten)]
    bench: bench::Options,
    /// Runs of each build, each on a fresh system; more than one prints every figure's
    /// median and range (one build's throughput moves by up to 20% within minutes on a shared
    /// machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// A directory of other service binaries (another checkout's `target/release`), run in
    /// turns with this build's (A B, then B A, …). Compare latencies at one rate
    /// (`--mode open --rate R`): in `auto` mode each run's open loop runs at half its own
    /// closed loop's rate.
    #[arg(long, value_name = "DIR")]
    versus: Option<PathBuf>,
    /// Settings for the second build only (with no --versus, this build again), as in
    /// BENCH_SERVICE_ENV: `<service>:<KEY>=<value>` separated by spaces, `all:` for every
    /// service; e.g. `--versus-settings 'all:DB_MAX_CONNECTIONS=4'`.
    #[arg(long, value_name = "SETTINGS")]
    versus_settings: Option<String>,
}

/// Service binaries to run: their directory, settings of its own, and how the summary names
/// them.
struct Build {
    name: String,
    directory: PathBuf,
    settings: Vec<Setting>,
}

/// One environment variable for one service.
#[derive(Debug, PartialEq, Eq)]
struct Setting {
    service: Service,
    key: String,
    value: String,
}

/// The summary file: the comparison, and where each run's report and plot are.
#[derive(Serialize)]
struct Summary<'a> {
    comparison: &'a bench::compare::Comparison,
    runs: Vec<RunFiles>,
}

#[derive(Serialize)]
struct RunFiles {
    build: usize,
    run: u32,
    report: PathBuf,
    plot: PathBuf,
}

/// `<service>:<KEY>=<value>` separated by spaces; `all:` sets it for every service.
fn parse_settings(text: &str) -> Result<Vec<Setting>> {
    let mut settings = Vec::new();
    for setting in text.split_whitespace() {
        let parsed = setting.split_once(':').and_then(|(name, assignment)| {
            let services: Vec<Service> = match name {
                "all" => Service::ALL.to_vec(),
                name => vec![Service::ALL.into_iter().find(|s| s.name() == name)?],
            };
            let (key, value) = assignment.split_once('=')?;
            Some((services, key, value))
        });
        let Some((services, key, value)) = parsed else {
            anyhow::bail!("{setting:?} is not <service>:<KEY>=<value> (or all:<KEY>=<value>)");
        };
        for service in services {
            settings.push(Setting {
                service,
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Every run of every build; false when one of them ended no saga.
async fn run(cli: Cli) -> Result<bool> {
    let builds = builds(&cli)?;
    let several = cli.repeat > 1 || builds.len() > 1;
    let mut runs: Vec<(usize, Report)> = Vec::new();
    let mut files = Vec::new();
    for round in 1..=cli.repeat {
        // Alternating the order evens out a machine that speeds up or slows down meanwhile.
        let mut order: Vec<(usize, &Build)> = builds.iter().enumerate().collect();
        if round.is_multiple_of(2) {
            order.reverse();
        }
        for (index, build) in order {
            let mut options = cli.bench.clone();
            if several {
                let tag = format!("build{}-run{round}", index + 1);
                options.report = tagged(&options.report, &tag);
                options.plot = tagged(&options.plot, &tag);
                eprintln!(
                    "run {round} of {} of build {}: {}",
                    cli.repeat,
                    index + 1,
                    build.name
                );
            }
            files.push(RunFiles {
                build: index + 1,
                run: round,
                report: options.report.clone(),
                plot: options.plot.clone(),
            });
            let report = run_once(options, build)
                .await
                .with_context(|| format!("run {round} of build {}", index + 1))?;
            print!("{}", bench::summary(&report));
            runs.push((index, report));
        }
    }
    if several {
        let names: Vec<String> = builds.iter().map(|build| build.name.clone()).collect();
        let comparison = bench::compare::compare(&names, &runs);
        print!("\n{}", bench::compare::render(&comparison));
        let path = tagged(&cli.bench.report, "summary");
        let summary = Summary {
            comparison: &comparison,
            runs: files,
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("summary: {}", path.display());
    }
    Ok(runs
        .iter()
        .all(|(_, report)| report.phases.iter().any(|phase| phase.figures.ended > 0)))
}

/// This build's services, and the other build's or this one's with other settings.
fn builds(cli: &Cli) -> Result<Vec<Build>> {
    let this = service_binary_directory()?;
    let mut builds = vec![Build {
        name: this.display().to_string(),
        directory: this.clone(),
        settings: Vec::new(),
    }];
    if cli.versus.is_none() && cli.versus_settings.is_none() {
        return Ok(builds);
    }
    let directory = cli.versus.clone().unwrap_or(this);
    // Found now rather than after the first build's first run.
    service_binaries(&directory).context("--versus")?;
    let text = cli.versus_settings.as_deref().unwrap_or_default();
    let settings = parse_settings(text).context("--versus-settings")?;
    let mut name = directory.display().to_string();
    if !settings.is_empty() {
        name = format!("{name} with {text}");
    }
    builds.push(Build {
        name,
        directory,
        settings,
    });
    Ok(builds)
}

/// `bench-report.json` with `tag`: `bench-report-<tag>.json`.
fn tagged(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(extension) => format!("{stem}-{tag}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{tag}"),
    };
    path.with_file_name(name)
}

/// One run on a fresh system of the build, shut down afterwards.
async fn run_once(mut options: bench::Options, build: &Build) -> Result<Report> {
    let system = start(build).await.context("failed to start the system")?;
    let outcome = async {
        // This machine class runs Postgres without autovacuum: each phase starts vacuumed
        // and is vacuumed again while it runs (`--vacuum-every`), as a deployment's
        // autovacuum keeps it.
        options.vacuum.extend(system.owner_database_urls()?);
        bench::run(aimed_at(&system, options)).await
    }
    .await;
    if let Err(error) = system.shutdown().await {
        eprintln!("bench: the system did not shut down cleanly: {error:#}");
    }
    outcome
}

/// The options with the system's addresses and credentials.
fn aimed_at(system: &System, mut options: bench::Options) -> bench::Options {
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
    options
}

/// The system as it would be deployed: the services' own defaults rather than the test
/// harness's short timeouts and small pools.
async fn start(build: &Build) -> Result<System> {
    // JetStream writes to disk before it acknowledges, as the deploy files configure it;
    // `BENCH_NATS_SYNC_INTERVAL` (e.g. `2m`, nats-server's default) measures the trade-off.
    let sync_interval =
        std::env::var("BENCH_NATS_SYNC_INTERVAL").unwrap_or_else(|_| "always".to_owned());
    let mut options = SystemOptions {
        own_process_group: true,
        api_auth: ApiAuth::Tokens,
        nats_sync_interval: Some(sync_interval),
        service_binary_directory: Some(build.directory.clone()),
        ..SystemOptions::default()
    };
    for service in Service::ALL {
        for (key, value) in [
            ("DB_MAX_CONNECTIONS", "10"),
            ("CONSUMER_ACK_WAIT", "30s"),
            ("ORDER_DEADLINE", "30s"),
            // As deployed: Kubernetes' one-CPU limit gives tokio one worker thread, and the
            // compose file sets one.
            ("TOKIO_WORKER_THREADS", "1"),
        ] {
            options = options.with_env(service, key, value);
        }
    }
    options = options.with_consumer_slots_as_compose();
    // Settings to try, e.g. `inventory:CONSUMER_BATCH=64`, separated by spaces; then the
    // build's own.
    let tried = std::env::var("BENCH_SERVICE_ENV").unwrap_or_default();
    let tried = parse_settings(&tried).map_err(|error| error.context("BENCH_SERVICE_ENV"))?;
    for setting in tried.iter().chain(&build.settings) {
        options = options.with_env(setting.service, &setting.key, &setting.value);
    }
    eprintln!(
        "starting nats-server (sync_interval {}) and the five services of {} (PGOPTIONS {:?}, PGSSLMODE {:?}, BENCH_SERVICE_ENV {:?})",
        options.nats_sync_interval.as_deref().unwrap_or("default"),
        build.name,
        std::env::var("PGOPTIONS").unwrap_or_default(),
        std::env::var("PGSSLMODE").unwrap_or_default(),
        std::env::var("BENCH_SERVICE_ENV").unwrap_or_default()
    );
    System::start(options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_writes_files_of_its_own() {
        assert_eq!(
            tagged(Path::new("out/bench.json"), "build2-run3"),
            PathBuf::from("out/bench-build2-run3.json")
        );
        assert_eq!(
            tagged(Path::new("report"), "summary"),
            PathBuf::from("report-summary")
        );
    }

    #[test]
    fn settings_name_a_service_or_all() -> Result<()> {
        let settings = parse_settings("inventory:CONSUMER_BATCH=64  all:DB_MAX_CONNECTIONS=4")?;
        assert_eq!(settings.len(), 1 + Service::ALL.len());
        assert_eq!(
            settings[0],
            Setting {
                service: Service::Inventory,
                key: "CONSUMER_BATCH".to_owned(),
                value: "64".to_owned(),
            }
        );
        assert!(parse_settings("nobody:KEY=1").is_err());
        assert!(parse_settings("inventory:KEY").is_err());
        assert!(parse_settings("").map(|s| s.is_empty())?);
        Ok(())
    }
}
