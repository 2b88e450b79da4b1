//! A partitioned queue (`QUEUE_PARTITIONS`) through the API: pings spread over the partitions
//! (a `partitionKey` keeps its pings in one), and the jobs and queue routes show one queue.

use std::collections::HashSet;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;
use shared::queue::partition_name;

use crate::helpers::{TestApp, assert_error, error_fields, json_with_status};

#[tokio::test]
async fn pings_on_a_partitioned_queue_are_spread_found_listed_cancelled_and_run() {
    let mut app = TestApp::spawn_with(|s| {
        s.queue.partitions.insert("ping".into(), 3);
    })
    .await;
    let token = app.admin_token();
    for bad in [json!(""), json!("x".repeat(201)), json!("nul\u{0}")] {
        let resp = app.ping(&json!({ "partitionKey": bad }), &token).await;
        let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), ["partitionKey"], "{bad}");
    }
    let mut ids = Vec::new();
    for i in 0..30 {
        let body = if i % 3 == 0 {
            json!({ "partitionKey": "customer-7" })
        } else {
            json!({})
        };
        ids.push(app.enqueue_ping(&body).await);
    }
    // which partition holds each job
    let mut conn = app.env.queues.connection();
    let mut part_of = Vec::new();
    for id in &ids {
        let mut holders = Vec::new();
        for p in 0..3 {
            let jobs = format!("{}jobs", app.env.queues.base(&partition_name("ping", p)));
            if conn
                .hexists::<_, _, bool>(&jobs, id)
                .await
                .expect("hexists")
            {
                holders.push(p);
            }
        }
        assert_eq!(holders.len(), 1, "{id} in {holders:?}");
        part_of.push(holders[0]);
    }
    let keyed: HashSet<usize> = part_of.iter().step_by(3).copied().collect();
    assert_eq!(keyed.len(), 1, "one partition key, one partition");
    let used: HashSet<usize> = part_of.iter().copied().collect();
    assert!(used.len() > 1, "30 pings all in one partition");

    // the queue's counts and pages span the partitions
    let queues = json_with_status(app.queues(&token).await, StatusCode::OK).await;
    let ping = queues["data"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == "ping")
        .expect("ping")
        .clone();
    assert_eq!(ping["waiting"], 30, "{ping}");
    assert_eq!(ping["partitions"], 3, "{ping}");
    let others = queues["data"].as_array().expect("queues");
    assert!(
        others
            .iter()
            .filter(|q| q["queue"] != "ping")
            .all(|q| q["partitions"] == 1),
        "{queues}"
    );
    let mut listed = HashSet::new();
    for page in 1..=4 {
        let body = app
            .queue_jobs("ping", &format!("?state=waiting&perPage=8&page={page}"))
            .await;
        for job in body["data"].as_array().expect("page") {
            assert_eq!(job["queue"], "ping");
            assert!(listed.insert(job["id"].as_str().expect("id").to_owned()));
        }
    }
    assert_eq!(listed, ids.iter().cloned().collect::<HashSet<_>>());
    // a page past the merged listing's depth is refused by name, not read
    let resp = app
        .get_queue_jobs(
            &app.platform_token_with(&["queues:read"]),
            "ping",
            "?state=waiting&perPage=100&page=101",
        )
        .await;
    let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(error_fields(&err), ["page"]);
    // a bulk selection reads each partition: every waiting ping matches
    let preview = app
        .authed(reqwest::Method::POST, "/api/v1/jobs/bulk", &token)
        .json(&json!({"action": "cancel", "filter": {"queue": "ping"}, "dryRun": true}))
        .send()
        .await
        .expect("the API answers");
    let preview = json_with_status(preview, StatusCode::OK).await;
    assert_eq!(preview["data"]["matched"], 30, "{preview}");
    // a job of any partition is read and cancelled by id
    let target = &ids[ids.len() - 1];
    let resp = app.cancel_job(target, &token).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    app.wait_for_state(target, "cancelled").await;

    let drained = app.drain_jobs().await;
    assert_eq!(
        drained.in_state(shared::queue::JobState::Completed).len(),
        29
    );
    assert_eq!(
        drained.job(target).state,
        shared::queue::JobState::Cancelled
    );
    for id in &ids[..29] {
        let job = app.wait_for_state(id, "completed").await;
        assert_eq!(job["queue"], "ping");
    }
    app.cleanup().await;
}
