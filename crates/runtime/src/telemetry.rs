//! Logs: `tracing` to stdout as JSON (or pretty for local runs), filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global log subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (e.g. two services in one test process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
