//! The `fulfillment-service` binary: reads its settings from the environment and runs the service.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = runtime::settings::Settings::from_env();
    runtime::telemetry::init(settings.log_format);
    let service = fulfillment::build(settings).await?;
    service
        .run_until_stopped(runtime::service::shutdown_signal())
        .await
}
