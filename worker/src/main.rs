//! `comet-worker`: loads the settings, starts telemetry, and runs the worker until SIGTERM.

use anyhow::Context as _;
use shared::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    shared::telemetry::init_tracing(settings.log_format);
    let addr = ("0.0.0.0", settings.worker.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to bind WORKER_PORT {}", settings.worker.port))?;
    tracing::info!(addr = %listener.local_addr()?, "worker health and metrics listening");
    comet_worker::run(settings, listener, shared::shutdown::signal()).await
}
