//! A real API fuzzer against the running order service: schemathesis reads the OpenAPI
//! document the service serves, generates valid and invalid requests for every operation
//! (with a customer's bearer token, and without one), and fails on any 5xx and on any answer
//! the document does not allow (status, headers, content type, body schema).

use std::process::Command;

use anyhow::{Context as _, ensure};
use e2e::system::{ApiAuth, Service, System, SystemOptions};

/// Examples per operation: enough to reach the validation rules of every field, few enough
/// for the suite's time on two cores.
const EXAMPLES: &str = "40";

#[tokio::test]
async fn the_order_api_survives_a_fuzzer_without_a_5xx_or_breaking_its_document()
-> anyhow::Result<()> {
    let binary = std::env::var("SCHEMATHESIS_BIN")
        .context("SCHEMATHESIS_BIN is not set: run the tests through scripts/test")?;
    let system = System::start(SystemOptions {
        api_auth: ApiAuth::Tokens,
        ..SystemOptions::default()
    })
    .await?;
    let token = system
        .tokens()
        .context("the system checks tokens")?
        .token("c-fuzz", &[]);
    let reports = tempfile::tempdir()?;
    let document = format!("{}/openapi.json", system.base_url(Service::Order));
    let run = tokio::task::spawn_blocking({
        let reports = reports.path().to_owned();
        move || {
            Command::new(&binary)
                .args(["run", &document])
                .args(["--checks", "all"])
                // A request the schema allows may still be refused by a business rule (an
                // unknown SKU is a 422): that is no defect.
                .args(["--exclude-checks", "positive_data_acceptance"])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                .args([
                    "--max-examples",
                    EXAMPLES,
                    "--workers",
                    "1",
                    "--seed",
                    "20261126",
                ])
                .args(["--request-timeout", "10"])
                .args(["--report", "junit", "--report-dir"])
                .arg(&reports)
                .env("NO_COLOR", "1")
                .output()
        }
    })
    .await?
    .with_context(|| "failed to run schemathesis (is it installed? run scripts/setup)")?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(
        run.status.success(),
        "schemathesis found problems:\n{output}"
    );
    // It must really have exercised the API, not stopped at the document.
    ensure!(
        output.contains("POST /orders"),
        "no operation was tested:\n{output}"
    );
    // The summary, for whoever runs the test with --nocapture.
    let summary: Vec<&str> = output.lines().rev().take(30).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    system.shutdown().await
}
