//! A project's own event rate (`settings.eventsPerSecond`): applied to its ingestion on every
//! API process, other projects unaffected, and a change applied within the settings cache's
//! max age (at once, when the change's publish arrives).

use std::time::{Duration, Instant};

use comet_api::project_settings::MAX_AGE;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, send};

fn event() -> Value {
    json!({"type": "transfer.failed", "payload": {"amount": 1}})
}

async fn batch(app: &TestApp, key: &str, n: usize) -> Response {
    send(
        app.keyed(Method::POST, "/api/v1/events/batch", key)
            .json(&json!({ "events": vec![event(); n] })),
    )
    .await
}

/// Fills the project's one-second window (`limit` events), then sends one more: the answers
/// (retried when the window was not fresh, or rolled over between the two requests; the
/// window is shared by every process).
async fn fill_then_one_more(app: &TestApp, key: &str, limit: usize) -> (Response, Response) {
    for _ in 0..5 {
        let full = batch(app, key, limit).await;
        let more = send(
            app.keyed(Method::POST, "/api/v1/events", key)
                .json(&event()),
        )
        .await;
        if full.status() == StatusCode::ACCEPTED && more.status() != StatusCode::ACCEPTED {
            return (full, more);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    panic!("the one-second window never held");
}

#[tokio::test]
async fn a_projects_own_event_rate_applies_on_every_process_and_a_change_within_the_cache_age() {
    let app = TestApp::spawn().await;
    let other_process = app.second_instance().await;
    let ops = app.platform_token();
    let (_, id, key) = app.new_project("Slow sender").await;
    let (_, _, other_key) = app.new_project("Fast sender").await;
    let resp = app
        .update_project(
            &ops,
            &id.to_string(),
            &json!({"settings": {"eventsPerSecond": 3}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    for instance in [&app, &other_process] {
        let (full, refused) = fill_then_one_more(instance, &key, 3).await;
        assert_eq!(full.status(), StatusCode::ACCEPTED);
        assert_eq!(full.headers()["ratelimit-limit"], "3");
        assert_eq!(full.headers()["ratelimit-remaining"], "0");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry <= 1, "a one-second window: {retry}");
        assert_eq!(refused.headers()["ratelimit-limit"], "3");
        assert_eq!(refused.headers()["ratelimit-remaining"], "0");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }

    // another project keeps the platform's default rate
    let resp = batch(&other_process, &other_key, 10).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_ne!(resp.headers()["ratelimit-limit"], "3");

    // raised on one process: the other (which cached 3) applies it within the cache's max age
    let changed = Instant::now();
    let resp = app
        .update_project(
            &ops,
            &id.to_string(),
            &json!({"settings": {"eventsPerSecond": 50}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    loop {
        let resp = batch(&other_process, &key, 10).await;
        if resp.status() == StatusCode::ACCEPTED {
            assert_eq!(resp.headers()["ratelimit-limit"], "50");
            break;
        }
        assert!(
            changed.elapsed() < MAX_AGE,
            "the new rate was not applied within {MAX_AGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = batch(&app, &key, 10).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["ratelimit-limit"], "50");
}
