//! The `gateway-simulator` binary: a stand-in payment gateway for local runs and tests.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway_simulator::Config::parse();
    let _telemetry = runtime::telemetry::init(config.log_format, "gateway-simulator");
    let simulator = gateway_simulator::Simulator::bind(config).await?;
    simulator
        .run_until_stopped(runtime::service::shutdown_signal())
        .await
}
