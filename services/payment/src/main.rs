//! The `payment-service` binary: reads its settings from the environment and runs the service.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment::Config::parse();
    let log_format = config.runtime.log_format;
    runtime::service::run_binary(log_format, payment::IDENTITY, payment::build(config)).await
}
