//! The `payment-service` binary: reads its settings from the environment and runs the service.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment::Config::parse();
    runtime::telemetry::init(config.runtime.log_format);
    let service = payment::build(config).await?;
    service
        .run_until_stopped(runtime::service::shutdown_signal())
        .await
}
