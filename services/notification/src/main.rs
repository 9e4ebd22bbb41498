//! The `notification-service` binary: reads its settings from the environment and runs the
//! service, or one of its commands (`notification-service rebuild-contacts`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = notification::Config::parse();
    let log_format = config.runtime.log_format;
    match config.command.take() {
        Some(command) => {
            let _telemetry = runtime::telemetry::init(log_format, notification::IDENTITY.name);
            notification::run_command(config.runtime, command).await
        }
        None => {
            let service = notification::build(config.runtime);
            runtime::service::run_binary(log_format, notification::IDENTITY, service).await
        }
    }
}
