//! HTTP metrics take their labels from closed sets only: a caller cannot create series.

use reqwest::Method;

use crate::helpers::{TestApp, random_id};

#[tokio::test]
async fn random_methods_and_paths_create_no_metric_series() {
    let app = TestApp::spawn().await;
    let marker = random_id();
    for i in 0..50 {
        let method = Method::from_bytes(format!("M{marker}{i}").as_bytes()).expect("a method");
        let _ = app
            .client
            .request(method, format!("{}/api/v1/jobs/{marker}-{i}", app.address))
            .send()
            .await
            .expect("an answer");
        let _ = app
            .client
            .get(format!("{}/no/such/{marker}/{i}", app.address))
            .send()
            .await
            .expect("an answer");
    }
    // a long method name, as an attacker would send to grow the registry
    let long = Method::from_bytes("X".repeat(8_000).as_bytes()).expect("a method");
    let _ = app
        .client
        .request(long, format!("{}/api/v1/health", app.address))
        .send()
        .await;

    let text = app.metrics().await.text().await.expect("a body");
    assert!(
        !text.contains(&marker),
        "a request-controlled value became a label"
    );
    assert!(!text.contains("XXXXXXXX"), "a long method became a label");
    // every series' method comes from the closed set (the recorder is shared by the tests of
    // this process, so other tests' series are here too)
    let known = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    for line in text
        .lines()
        .filter(|l| l.starts_with("comet_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a method label");
        assert!(
            method == "other" || known.contains(&method),
            "method label {method:?} in {line}"
        );
    }
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
}

#[tokio::test]
async fn every_counter_and_histogram_the_readme_documents_is_exported_at_zero_from_start_up() {
    use shared::testing::metrics::{documented_metrics, exports};
    let env = shared::testing::TestEnv::new().await;
    // a process of its own: nothing else has counted anything in it yet
    let api = crate::helpers::ApiProcess::spawn_with_env(&env, &[]).await;
    let readme = include_str!("../../../README.md");
    let documented: Vec<_> = documented_metrics(readme)
        .into_iter()
        .filter(|m| m.from.contains("API") && m.kind != "gauge")
        .collect();
    assert!(
        documented.len() >= 5,
        "the README's table was read: {documented:?}"
    );

    let text = reqwest::get(format!("{}/metrics", api.address))
        .await
        .expect("an answer")
        .text()
        .await
        .expect("a body");

    let missing: Vec<&str> = documented
        .iter()
        .filter(|m| !exports(&text, &m.name))
        .map(|m| m.name.as_str())
        .collect();
    assert!(missing.is_empty(), "not exported at start-up: {missing:?}");
    // at zero, for a route nobody has called yet
    assert!(
        text.lines()
            .any(|l| l.starts_with("comet_http_requests_total{")
                && l.contains(r#"route="/api/v1/roles""#)
                && l.ends_with(" 0")),
        "{text}"
    );
}
