//! `comet-worker`: loads the settings, starts telemetry, and runs the worker until SIGTERM.

use anyhow::Context as _;
use shared::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    shared::telemetry::init_tracing(settings.log_format);
    let addr = ("0.0.0.0", settings.worker_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to bind WORKER_PORT {}", settings.worker_port))?;
    tracing::info!(addr = %listener.local_addr()?, "worker health and metrics listening");
    comet_worker::run(settings, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
