//! The `notification-service` binary: reads its settings from the environment and runs the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = runtime::settings::Settings::from_env();
    let log_format = settings.log_format;
    runtime::service::run_binary(
        log_format,
        notification::IDENTITY,
        notification::build(settings),
    )
    .await
}
