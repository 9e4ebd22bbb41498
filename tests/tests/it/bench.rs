//! The benchmark tool in its smoke mode (a few seconds at a low rate, no thresholds): it
//! drives a real system, sees every saga end through the terminal events, measures the
//! machine's bound and writes its report and plot.

use anyhow::{Context as _, ensure};
use e2e::nats_server::ADMIN_USER;
use e2e::system::{Service, System, SystemOptions};

#[tokio::test]
async fn the_bench_measures_sagas_and_the_bound_in_smoke_mode() -> anyhow::Result<()> {
    let system = System::start(SystemOptions::default()).await?;
    let directory = tempfile::tempdir()?;
    let report_path = directory.path().join("report.json");
    let plot_path = directory.path().join("plot.svg");
    // Each phase starts with the services' databases vacuumed, as `scripts/bench` has it, and
    // vacuums them again while it runs (every second here, so a smoke run does it too).
    let mut vacuum = vec!["--vacuum-every=1s".to_owned()];
    for url in system.owner_database_urls()? {
        vacuum.push(format!("--vacuum={url}"));
    }
    let options = bench::Options::parse_from(
        [
            "saga-bench".to_owned(),
            "--smoke".to_owned(),
            format!("--order-url={}", system.base_url(Service::Order)),
            format!("--inventory-url={}", system.base_url(Service::Inventory)),
            format!("--nats-url={}", system.nats_url()),
            format!("--nats-user={ADMIN_USER}"),
            format!(
                "--nats-password={}",
                system.nats_users().password(ADMIN_USER)
            ),
            format!("--report={}", report_path.display()),
            format!("--plot={}", plot_path.display()),
        ]
        .into_iter()
        .chain(vacuum),
    )?;
    let report = bench::run(options).await?;

    ensure!(report.phases.len() == 2, "{:?}", report.phases);
    for phase in &report.phases {
        let figures = &phase.figures;
        ensure!(
            figures.ended > 0 && figures.ended == figures.placed,
            "{} loop: {} placed, {} ended",
            phase.kind,
            figures.placed,
            figures.ended
        );
        ensure!(
            figures.errors.is_empty() && figures.unexpected_outcomes == 0,
            "{} loop: errors {:?}, {} unexpected outcomes",
            phase.kind,
            figures.errors,
            figures.unexpected_outcomes
        );
        ensure!(figures.saga_latency.p50_ms > 0.0);
        // Every saga starts with inventory's answer to its order, timed from the streams.
        let reserved = figures
            .reactions
            .get("order.placed → inventory.reserved")
            .with_context(|| format!("{:?}", figures.reactions.keys()))?;
        ensure!(reserved.count > 0 && reserved.p50_ms > 0.0, "{reserved:?}");
        let per_saga = phase.per_saga;
        ensure!(
            per_saga.publishes >= 2.0 && per_saga.deliveries >= per_saga.publishes,
            "{per_saga:?}"
        );
        ensure!(
            phase
                .processes
                .iter()
                .any(|usage| usage.program == "order-service" && usage.peak_rss_mib > 0.0),
            "{:?}",
            phase.processes
        );
    }
    let bound = report.bound.as_ref().context("a bound")?;
    ensure!(
        bound.postgres_steps_per_s > 0.0
            && bound.jetstream_publishes_per_s > 0.0
            && bound.jetstream_consumes_per_s > 0.0
            && bound.sagas_per_s > 0.0,
        "{bound:?}"
    );
    ensure!(report.achieved_over_bound.is_some_and(|ratio| ratio > 0.0));

    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    ensure!(written["phases"][1]["figures"]["seconds"].is_array());
    let plot = std::fs::read_to_string(&plot_path)?;
    ensure!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(100)]);
    system.check_invariants().await?;
    system.shutdown().await
}
