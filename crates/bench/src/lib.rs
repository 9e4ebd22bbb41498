//! `saga-bench`: drives a running system through its public HTTP API and measures complete
//! sagas — throughput, end-to-end latency taken from the terminal events, `POST /orders`
//! latency, errors, CPU and memory of every process — next to the machine's own bound for
//! the same database and broker work, measured in the same run.
//!
//! A run: idle CPU for a moment; a closed loop (fixed customers, each waiting for its saga)
//! to find the maximum throughput; an open loop at half that rate for latencies; then the
//! bound. It writes a JSON report and an SVG plot and prints a summary.

pub mod bound;
pub mod compare;
pub mod load;
pub mod mix;
pub mod plot;
pub mod procs;
pub mod stats;
pub mod watch;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use runtime::database::redact;
use runtime::jetstream::{NatsAuth, Password};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::bound::{Bound, BoundRun, PerSaga, StreamTotals};
use crate::compare::Spread;
use crate::load::Driver;
use crate::mix::Mix;
use crate::procs::{Sampler, Usage};
use crate::stats::PhaseFigures;
use crate::watch::Watcher;

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Closed loop for the maximum, then open loop at half of it.
    Auto,
    /// Open loop at `--rate` only.
    Open,
    /// Closed loop only.
    Closed,
}

/// What to run against and how.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Options {
    /// The order service.
    #[arg(long, env = "BENCH_ORDER_URL", default_value = "http://127.0.0.1:8080")]
    pub order_url: String,
    /// The inventory service (the bench creates its products there).
    #[arg(
        long,
        env = "BENCH_INVENTORY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub inventory_url: String,
    /// The system's NATS server: terminal events are read from its ORDER stream.
    #[arg(long, env = "BENCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The NATS user to connect as: `admin` of deploy/nats/users.conf, since the bound
    /// creates and deletes a scratch stream, which no service may (with
    /// BENCH_NATS_PASSWORD). Unset: no authentication.
    #[arg(
        long,
        env = "BENCH_NATS_USER",
        requires = "nats_password",
        conflicts_with = "nats_creds_file"
    )]
    pub nats_user: Option<String>,
    /// The password of BENCH_NATS_USER; never written to the report.
    #[arg(
        long,
        env = "BENCH_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    #[serde(skip)]
    pub nats_password: Option<Password>,
    /// A NATS credentials file (user JWT and nkey seed) instead of a user and password.
    #[arg(long, env = "BENCH_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// A bearer token the APIs accept: an admin's, since the bench writes its products and
    /// places orders for many customers. Unset: the system must run with INSECURE_DEV_AUTH.
    /// Never written to the report.
    #[arg(long, env = "BENCH_BEARER_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    pub bearer_token: Option<String>,
    /// The system's Postgres server, where the bound's scratch database is created.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Orders a second in the open loop; in `auto` mode, half the closed loop's maximum.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Customers in the closed loop, each with one saga in flight.
    #[arg(long, default_value_t = 256)]
    pub customers: usize,
    /// How long each loading phase places orders.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// How long to measure the idle system's CPU first.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub idle: Duration,
    /// Percentages of happy, declined, out-of-stock and cannot-ship orders.
    #[arg(long, default_value_t = Mix::default())]
    pub mix: Mix,
    /// How long each part of the bound measurement runs; 0 skips the bound.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub bound_duration: Duration,
    /// Concurrent connections of the bound's Postgres client: what the services together
    /// keep busy (5 services × `DB_MAX_CONNECTIONS` of 10 is the ceiling).
    #[arg(long, default_value_t = 32)]
    pub bound_clients: usize,
    /// Saga steps per transaction of the bound's Postgres client, each in a savepoint: the
    /// most a service's consumer batches (`CONSUMER_BATCH`), as it does under full load.
    #[arg(long, default_value_t = 32)]
    pub bound_batch: usize,
    /// Times each part of the bound is measured, in turns; each part's limit is its best run.
    /// A shared machine's noise only ever slows a run down, and one 10-second run of a part
    /// moved by a third from one bench to the next.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub bound_runs: u16,
    /// A database to `VACUUM (ANALYZE)` at the start of each loading phase and while it runs
    /// (`--vacuum-every`), as its owner (repeat for each service's). For a Postgres that runs
    /// without autovacuum: the open loop would otherwise run on the dead rows the closed loop
    /// left (deleted outbox rows, the hot product's old versions), which autovacuum removes
    /// in a deployment. Never written to the report, since a URL may hold a password.
    #[arg(long = "vacuum", value_name = "POSTGRES_URL")]
    #[serde(skip)]
    pub vacuum: Vec<String>,
    /// How often to vacuum those databases again while a phase runs, as autovacuum would
    /// (0s: only at the start). Autovacuum also analyzes: without fresh statistics, Postgres
    /// keeps the plans it made when the tables were nearly empty — sequential scans, each
    /// longer than the last as the tables grow.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub vacuum_every: Duration,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-report.json")]
    pub report: PathBuf,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "bench-report.svg")]
    pub plot: PathBuf,
    /// A few seconds of everything at a low rate, with no thresholds: checks the tool and
    /// the system work (CI runs this).
    #[arg(long)]
    pub smoke: bool,
}

/// Durations in the report as `humantime` text, e.g. `"60s"`.
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

impl Options {
    /// Parses command-line arguments (the first is the program's name).
    pub fn parse_from<I, T>(arguments: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(
            about = "Drives a running order-saga system through its HTTP API and \
                           measures complete sagas against the machine's own bound for the \
                           same work.",
            version
        )]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        <Cli as clap::Parser>::try_parse_from(arguments).map(|cli| cli.options)
    }

    /// The options with `--smoke` applied: short phases at a low rate.
    pub fn effective(mut self) -> Options {
        if self.smoke {
            self.duration = Duration::from_secs(3);
            self.idle = Duration::from_secs(1);
            self.bound_duration = Duration::from_secs(1);
            self.bound_runs = 1;
            self.customers = self.customers.min(8);
            self.rate = Some(self.rate.unwrap_or(20.0).min(20.0));
        }
        self
    }
}

/// One loading phase: what it measured and what the processes used meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub kind: &'static str,
    /// Open loop: orders a second asked for.
    pub target_rate: Option<f64>,
    /// Closed loop: customers.
    pub customers: Option<usize>,
    pub figures: PhaseFigures,
    pub processes: Vec<Usage>,
    /// What one saga cost in the streams and the database during the phase.
    pub per_saga: PerSaga,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub machine: Machine,
    pub options: Options,
    /// The system at rest: CPU each program used while nothing was asked of it.
    pub idle: Vec<Usage>,
    pub phases: Vec<Phase>,
    pub bound: Option<Bound>,
    /// The highest throughput measured over the bound's sagas a second.
    pub achieved_over_bound: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub os: &'static str,
}

/// Runs the bench against a running system and writes its report and plot.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let options = options.effective();
    let started_at = Utc::now();
    let auth = NatsAuth {
        nats_user: options.nats_user.clone(),
        nats_password: options.nats_password.clone(),
        nats_creds_file: options.nats_creds_file.clone(),
        nats_nkey_seed_file: None,
    };
    let client = auth
        .connect_options()
        .await?
        .connect(options.nats_url.as_str())
        .await
        .with_context(|| format!("failed to connect to NATS at {}", options.nats_url))?;
    let jetstream = async_nats::jetstream::new(client);
    let http = http_client(options.bearer_token.as_deref())?;
    load::prepare_products(&http, &options.inventory_url, &options.order_url).await?;

    let sampler = Sampler::start();
    let mark = sampler.mark();
    tokio::time::sleep(options.idle).await;
    let idle = sampler.usage_since(&mark);

    let watcher = Watcher::start(&jetstream).await?;
    let show_progress = !options.smoke;
    let driver = Arc::new(Driver::new(
        http,
        &options.order_url,
        options.mix,
        watcher,
        show_progress,
    ));
    let mut phases = Vec::new();

    if matches!(options.mode, Mode::Auto | Mode::Closed) {
        let load = vacuumed(
            &options.vacuum,
            options.vacuum_every,
            driver.closed_loop(options.customers, options.duration),
        );
        let (figures, processes, per_saga) =
            measure(&jetstream, &sampler, "closed loop", load).await?;
        phases.push(Phase {
            kind: "closed",
            target_rate: None,
            customers: Some(options.customers),
            figures,
            processes,
            per_saga,
        });
    }
    if matches!(options.mode, Mode::Auto | Mode::Open) {
        let rate = match (options.rate, phases.first()) {
            (Some(rate), _) if options.mode == Mode::Open || options.smoke => rate,
            (_, Some(closed)) => (closed.figures.ended_per_s / 2.0).max(1.0),
            (Some(rate), None) => rate,
            (None, None) => anyhow::bail!("--mode open needs --rate"),
        };
        let title = format!("open loop at {rate:.0}/s");
        let load = vacuumed(
            &options.vacuum,
            options.vacuum_every,
            driver.open_loop(rate, options.duration),
        );
        let (figures, processes, per_saga) = measure(&jetstream, &sampler, &title, load).await?;
        phases.push(Phase {
            kind: "open",
            target_rate: Some(rate),
            customers: None,
            figures,
            processes,
            per_saga,
        });
    }

    let bound = if options.bound_duration.is_zero() {
        None
    } else {
        eprintln!(
            "measuring the machine's bound ({} per part, {} runs)",
            humantime::format_duration(options.bound_duration),
            options.bound_runs
        );
        let stream_config = runtime::jetstream::context_stream(events::streams::Context::Order, 1);
        let mut runs = Vec::new();
        for _ in 0..options.bound_runs {
            let postgres_steps_per_s = bound::postgres_steps(
                &options.postgres_url,
                options.bound_clients,
                options.bound_batch,
                options.bound_duration,
            )
            .await?;
            let (jetstream_publishes_per_s, jetstream_consumes_per_s) = bound::jetstream_rates(
                &jetstream,
                stream_config.clone(),
                256,
                options.bound_duration,
            )
            .await?;
            runs.push(BoundRun {
                postgres_steps_per_s,
                jetstream_publishes_per_s,
                jetstream_consumes_per_s,
            });
        }
        let per_saga = phases
            .first()
            .map(|phase| phase.per_saga)
            .unwrap_or_default();
        Some(Bound::best_of(
            runs,
            (options.bound_clients, options.bound_batch),
            per_saga,
        ))
    };
    let achieved = phases
        .iter()
        .map(|phase| phase.figures.ended_per_s)
        .fold(0.0, f64::max);
    let report = Report {
        started_at,
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
        },
        achieved_over_bound: bound
            .as_ref()
            .filter(|bound| bound.sagas_per_s > 0.0)
            .map(|bound| achieved / bound.sagas_per_s),
        bound,
        idle,
        phases,
        options,
    };
    write(&report)?;
    Ok(report)
}

fn write(report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(&report.options.report, json)
        .with_context(|| format!("failed to write {}", report.options.report.display()))?;
    // The open loop's seconds show latency at a steady rate; else the closed loop's.
    if let Some(phase) = report
        .phases
        .iter()
        .find(|phase| phase.kind == "open")
        .or(report.phases.first())
    {
        let title = match phase.target_rate {
            Some(rate) => format!("order-saga: open loop at {rate:.0} orders/s"),
            None => format!(
                "order-saga: closed loop, {} customers",
                phase.customers.unwrap_or(0)
            ),
        };
        plot::draw(&report.options.plot, &title, &phase.figures)
            .with_context(|| format!("failed to draw {}", report.options.plot.display()))?;
    }
    Ok(())
}

/// Runs one loading phase and measures around it what each process used and what a saga
/// cost in the streams; prints the phase's line.
async fn measure(
    jetstream: &async_nats::jetstream::Context,
    sampler: &Sampler,
    title: &str,
    load: impl std::future::Future<Output = anyhow::Result<PhaseFigures>>,
) -> anyhow::Result<(PhaseFigures, Vec<Usage>, PerSaga)> {
    let before = StreamTotals::read(jetstream).await?;
    let mark = sampler.mark();
    let figures = load.await?;
    let processes = sampler.usage_since(&mark);
    let after = StreamTotals::read(jetstream).await?;
    eprintln!("{}", phase_line(title, &figures));
    let per_saga = before.per_saga(&after, figures.placed, figures.ended);
    Ok((figures, processes, per_saga))
}

fn phase_line(title: &str, figures: &PhaseFigures) -> String {
    format!(
        "{title}: {:.0} sagas/s ended, saga p50 {:.1} ms p99 {:.1} ms, POST p99 {:.1} ms, {} errors, {} unexpected, {} unfinished",
        figures.ended_per_s,
        figures.saga_latency.p50_ms,
        figures.saga_latency.p99_ms,
        figures.post_latency.p99_ms,
        figures.errors.values().sum::<u64>(),
        figures.unexpected_outcomes,
        figures.unfinished
    )
}

/// The report as a person reads it.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "saga-bench {} on {} cores, mix {} (happy, declined, out of stock, cannot ship)",
        report.started_at.format("%Y-%m-%d %H:%M UTC"),
        report.machine.cores,
        report.options.mix
    );
    for phase in &report.phases {
        let f = &phase.figures;
        let title = match (phase.target_rate, phase.customers) {
            (Some(rate), _) => format!("open loop at {rate:.0}/s"),
            (_, Some(customers)) => format!("closed loop, {customers} customers"),
            _ => phase.kind.to_owned(),
        };
        let _ = writeln!(out, "\n{title} for {:.0} s", f.duration_s);
        let _ = writeln!(
            out,
            "  sagas      {} placed, {} ended ({:.0}/s), {} unexpected outcomes, {} unfinished, errors {:?}",
            f.placed, f.ended, f.ended_per_s, f.unexpected_outcomes, f.unfinished, f.errors
        );
        let _ = writeln!(
            out,
            "  in flight  {:.0} on average in the load's first half, {:.0} in its second: {}",
            f.backlog.first_half,
            f.backlog.second_half,
            if f.backlog.growing {
                "GROWING, the system fell behind"
            } else {
                "steady"
            }
        );
        for (name, p) in [
            ("saga", &f.saga_latency),
            ("POST", &f.post_latency),
            ("to stream", &f.outbox_to_stream),
        ] {
            let _ = writeln!(
                out,
                "  {name:<10} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>8.2} ms",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        if !f.reactions.is_empty() {
            let _ = writeln!(
                out,
                "  reactions, from the cause stored to the effect written:"
            );
        }
        for (step, p) in &f.reactions {
            let _ = writeln!(
                out,
                "    {step:<46} p50 {:>7.2} ms  p99 {:>7.2} ms  ({})",
                p.p50_ms, p.p99_ms, p.count
            );
        }
        let per_saga = phase.per_saga;
        let _ = writeln!(
            out,
            "  per saga   {:.1} transactions, {:.1} publishes, {:.1} deliveries",
            per_saga.transactions, per_saga.publishes, per_saga.deliveries
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>6} {:>8} {:>7} {:>10}",
            "process", "procs", "cpu s", "cores", "peak MiB"
        );
        for usage in &phase.processes {
            let _ = writeln!(
                out,
                "  {:<24} {:>6} {:>8.1} {:>7.2} {:>10.1}",
                usage.program, usage.processes, usage.cpu_s, usage.cores, usage.peak_rss_mib
            );
        }
    }
    let idle: f64 = report.idle.iter().map(|usage| usage.cores).sum();
    let _ = writeln!(out, "\nidle: the whole system used {idle:.3} cores at rest");
    if let Some(bound) = &report.bound {
        let _ = writeln!(
            out,
            "bound: Postgres {:.0} saga steps/s ({} clients, {} steps a transaction), JetStream {:.0} publishes/s and {:.0} consumes/s",
            bound.postgres_steps_per_s,
            bound.postgres_clients,
            bound.postgres_batch,
            bound.jetstream_publishes_per_s,
            bound.jetstream_consumes_per_s
        );
        if bound.runs.len() > 1 {
            let range = |part: fn(&BoundRun) -> f64| {
                let rates: Vec<f64> = bound.runs.iter().map(part).collect();
                Spread::of(&rates).map_or_else(String::new, |spread| {
                    format!("{:.0}–{:.0}", spread.min, spread.max)
                })
            };
            let _ = writeln!(
                out,
                "       each the best of {} runs: Postgres {}, publishes {}, consumes {}",
                bound.runs.len(),
                range(|run| run.postgres_steps_per_s),
                range(|run| run.jetstream_publishes_per_s),
                range(|run| run.jetstream_consumes_per_s)
            );
        }
        let _ = writeln!(
            out,
            "       → {:.0} sagas/s sharing the machine ({:.0} if each resource had it alone)",
            bound.sagas_per_s, bound.sagas_per_s_each_alone
        );
    }
    if let Some(ratio) = report.achieved_over_bound {
        let _ = writeln!(out, "achieved / bound = {ratio:.2}");
    }
    let _ = writeln!(
        out,
        "report: {}  plot: {}",
        report.options.report.display(),
        report.options.plot.display()
    );
    out
}

/// Runs `load` on databases vacuumed at its start and every `every` while it runs (see
/// `Options::vacuum_every`).
async fn vacuumed<T>(
    urls: &[String],
    every: Duration,
    load: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    vacuum(urls).await?;
    if urls.is_empty() || every.is_zero() {
        return Ok(load.await);
    }
    let keep_vacuuming = async {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = vacuum(urls).await {
                return error;
            }
        }
    };
    tokio::select! {
        biased;
        output = load => Ok(output),
        error = keep_vacuuming => Err(error),
    }
}

/// `VACUUM (ANALYZE)` on each database `urls` name (see `Options::vacuum`).
async fn vacuum(urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        let mut connection = PgConnection::connect(url)
            .await
            .with_context(|| format!("failed to connect to {} to vacuum it", redact(url)))?;
        sqlx::raw_sql("VACUUM (ANALYZE)")
            .execute(&mut connection)
            .await
            .with_context(|| format!("failed to vacuum {}", redact(url)))?;
    }
    Ok(())
}

/// The generator's HTTP client: many connections kept open, each request bearing `token`.
fn http_client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the bearer token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .default_headers(headers)
        .build()
        .context("failed to build the HTTP client")
}
