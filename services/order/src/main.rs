//! The `order-service` binary: reads its settings from the environment and runs the service.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = order::Config::parse();
    let log_format = config.runtime.log_format;
    runtime::service::run_binary(log_format, order::IDENTITY, order::build(config)).await
}
