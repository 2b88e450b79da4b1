//! A fresh worker process exports every counter and histogram the README documents for the
//! worker, at zero, before any job has run.

use std::time::Duration;

use shared::testing::{
    TestEnv, eventually,
    metrics::{documented_metrics, exports},
};

use crate::helpers::{WorkerProcess, free_port, metrics};

#[tokio::test]
async fn every_counter_and_histogram_the_readme_documents_is_exported_at_zero_from_start_up() {
    let env = TestEnv::new().await;
    let port = free_port();
    let _w = WorkerProcess::spawn(&env, &[("WORKER_PORT", &port.to_string())]);
    let readme = include_str!("../../../README.md");
    let documented: Vec<_> = documented_metrics(readme)
        .into_iter()
        .filter(|m| m.from.contains("worker") && m.kind != "gauge")
        .collect();
    assert!(
        documented.len() >= 5,
        "the README's table was read: {documented:?}"
    );

    let text = eventually(Duration::from_secs(20), "/metrics answers", || {
        metrics(port)
    })
    .await;

    let missing: Vec<&str> = documented
        .iter()
        .filter(|m| !exports(&text, &m.name))
        .map(|m| m.name.as_str())
        .collect();
    assert!(missing.is_empty(), "not exported at start-up: {missing:?}");
    assert!(
        text.lines().any(|l| l.starts_with("comet_jobs_total{")
            && l.contains(r#"outcome="dead""#)
            && l.ends_with(" 0")),
        "{text}"
    );
}
