//! The `order-service` binary: reads its settings from the environment and runs the service,
//! or one of its commands (`order-service rebuild-catalogue`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = order::Config::parse();
    let log_format = config.runtime.log_format;
    match config.command.take() {
        Some(command) => {
            let _telemetry = runtime::telemetry::init(log_format, order::IDENTITY.name);
            order::run_command(config, command).await
        }
        None => {
            runtime::service::run_binary(log_format, order::IDENTITY, order::build(config)).await
        }
    }
}
