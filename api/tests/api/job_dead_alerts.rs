//! `job.dead` alerts end to end: jobs of a project die, the archiver counts them into a window,
//! the closed window raises one `job.dead` event, and the project's own rule decides who is
//! told: here a signed webhook to a loopback receiver whose endpoint subscribes to `job.dead`,
//! saying how many died.

use std::time::Duration;

use serde_json::{Value, json};
use shared::testing::eventually;

use crate::helpers::{Receiver, TestApp, endpoint_body, rule_body, verifies};

#[tokio::test]
async fn dead_jobs_reach_a_projects_webhook_as_one_signed_job_dead_alert_with_the_count() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn_with(|s| s.queue.dead_alert_window = Duration::from_secs(1)).await;
    let token = app.admin_token();
    let hook = app
        .endpoint(&token, &endpoint_body(&receiver.url("/ok"), &["job.dead"]))
        .await;
    // an endpoint for other types hears nothing
    app.endpoint(
        &token,
        &endpoint_body(&receiver.url("/ok"), &["transfer.*"]),
    )
    .await;
    let admin = app.role_id(app.project_id(), "admin").await.to_string();
    let mut rule = rule_body(
        "dead jobs",
        &["job.dead"],
        Some(r#"event.payload.queue == "ping" && event.payload.dead >= 1"#),
        &[admin],
    );
    rule["channels"] = json!(["webhook"]);
    rule["title"] = json!("{{ event.payload.dead }} {{ event.payload.queue }} jobs died");
    app.rule(&token, &rule).await;

    for _ in 0..4 {
        app.enqueue_ping(&json!({"failPermanently": true})).await;
    }
    app.start_worker().await;

    let got = eventually(Duration::from_secs(60), "the alert's webhook", || async {
        let got = receiver.received();
        let dead: i64 = got
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .map(|b| b["data"]["event"]["payload"]["dead"].as_i64().unwrap_or(0))
            .sum();
        (dead >= 4).then_some(got)
    })
    .await;
    // four deaths, one or two windows (a burst may straddle a window's edge): never four
    // messages
    assert!(
        (1..=2).contains(&got.len()),
        "{} messages for 4 deaths",
        got.len()
    );
    let secret = hook["secret"].as_str().expect("the secret, once");
    for message in &got {
        assert!(verifies(secret, message), "signed");
        let body: Value = serde_json::from_slice(&message.body).expect("json");
        let event = &body["data"]["event"];
        assert_eq!(event["type"], "job.dead", "{body:#}");
        assert!(
            event["payload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("fail permanently")),
            "{body:#}"
        );
        assert!(
            body["data"]["title"]
                .as_str()
                .is_some_and(|t| t.ends_with("ping jobs died")),
            "{body:#}"
        );
    }
    app.cleanup().await;
}
