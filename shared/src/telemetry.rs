//! Telemetry: the tracing subscriber (JSON in production, readable in development) and the
//! Prometheus recorder shared by the API and the worker.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber once. `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,apalis=warn,apalis_core=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
}

/// Installs tracing for tests: silent unless `TEST_LOG` is set.
pub fn init_test_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        init_tracing(LogFormat::Pretty);
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // A second recorder (tests running two apps in one process) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            // Histograms keep raw samples until upkeep folds them: do it even when nobody
            // scrapes `/metrics`, so memory stays bounded.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// What a metric exported from start-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A counter, exported at 0.
    Counter,
    /// A histogram, exported with empty buckets.
    Histogram,
}

/// Describes a metric and registers each of its label sets, so `/metrics` shows it from
/// start-up at zero (a rate alert on a counter then sees 0, not "no data", until it first
/// moves). Registering an existing series leaves its value alone.
pub fn export_at_zero(
    kind: MetricKind,
    name: &'static str,
    help: &'static str,
    label_sets: impl IntoIterator<Item = Vec<(&'static str, String)>>,
) {
    match kind {
        MetricKind::Counter => metrics::describe_counter!(name, help),
        MetricKind::Histogram => metrics::describe_histogram!(name, help),
    }
    for set in label_sets {
        let labels: Vec<metrics::Label> = set
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        match kind {
            MetricKind::Counter => metrics::counter!(name, labels).increment(0),
            MetricKind::Histogram => drop(metrics::histogram!(name, labels)),
        }
    }
}

/// One label set per queue: `[("queue", q)]`.
pub fn per_queue(queues: &[&str]) -> Vec<Vec<(&'static str, String)>> {
    queues
        .iter()
        .map(|q| vec![("queue", (*q).to_owned())])
        .collect()
}

/// One label set per queue and value of `label`.
pub fn per_queue_and(
    queues: &[&str],
    label: &'static str,
    values: &[&str],
) -> Vec<Vec<(&'static str, String)>> {
    queues
        .iter()
        .flat_map(|q| {
            values
                .iter()
                .map(move |v| vec![("queue", (*q).to_owned()), (label, (*v).to_owned())])
        })
        .collect()
}

/// The single, label-less series.
pub fn unlabelled() -> Vec<Vec<(&'static str, String)>> {
    vec![Vec::new()]
}
