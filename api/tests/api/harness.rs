//! The harness itself: clean-up owned by `TestEnv`/`TestApp` (also when a test panics), and
//! draining the jobs a test caused, failing on what is left or went dead.

use std::time::Duration;

use serde_json::json;
use shared::{
    jobs::{Job as _, Ping},
    queue::JobState,
    testing::TestEnv,
};

use crate::helpers::{TestApp, later};

/// Whether the test server has this database.
async fn database_exists(name: &str) -> bool {
    let admin = sqlx::PgPool::connect(&shared::testing::server_url())
        .await
        .expect("connect to the test server");
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await
        .expect("look the database up");
    admin.close().await;
    found.is_some()
}

/// The Redis keys under `prefix`.
async fn redis_keys(prefix: &str) -> Vec<String> {
    let client =
        shared::redis_client::RedisClient::open(&shared::testing::redis_url()).expect("redis url");
    let mut conn = client.connection().expect("connect to Redis");
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn a_test_env_that_is_dropped_leaves_no_database_and_no_redis_keys() {
    let env = TestEnv::new().await;
    let (db_name, prefix) = (env.db_name.clone(), env.settings.redis.prefix.clone());
    Ping::new(env.project_id)
        .enqueue_now(&env.queues, Default::default())
        .await
        .expect("enqueue");
    assert!(database_exists(&db_name).await);
    assert!(!redis_keys(&prefix).await.is_empty(), "premise: keys exist");

    drop(env);

    assert!(!database_exists(&db_name).await, "{db_name} was dropped");
    assert_eq!(redis_keys(&prefix).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_test_that_panics_still_drops_its_database_and_redis_keys() {
    // a test of its own, on a thread and runtime of its own, as libtest runs one
    let (seen, report) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let mut app = TestApp::spawn().await;
            app.start_worker().await;
            app.enqueue_ping(&json!({"runAt": later()})).await;
            // and a bare environment, as the worker's tests use
            let env = TestEnv::new().await;
            let names =
                [&app.env, &env].map(|e| (e.db_name.clone(), e.settings.redis.prefix.clone()));
            seen.send(names).expect("report");
            panic!("a failed assertion");
        })
    });

    let panicked = test.join().is_err();
    let names = report.recv().expect("the test reported its names");

    assert!(panicked, "premise: the test failed");
    for (db_name, prefix) in names {
        assert!(!database_exists(&db_name).await, "{db_name} was dropped");
        assert_eq!(redis_keys(&prefix).await, Vec::<String>::new());
    }
}

#[tokio::test]
async fn cleaning_up_early_drops_everything_at_once_and_dropping_after_it_is_harmless() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let (db_name, prefix) = (
        app.env.db_name.clone(),
        app.env.settings.redis.prefix.clone(),
    );
    app.enqueue_ping(&json!({})).await;

    // a second instance shares the environment: dropping it cleans nothing
    drop(second);
    assert!(database_exists(&db_name).await);
    assert!(!redis_keys(&prefix).await.is_empty());
    app.cleanup().await;

    assert!(!database_exists(&db_name).await, "{db_name} was dropped");
    assert_eq!(redis_keys(&prefix).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_drain_runs_every_job_caused_and_returns_each_finished_job_once() {
    let mut app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&boss, "new@example.com").await;
    let ok = app.enqueue_ping(&json!({})).await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;

    let drained = app.drain_jobs().await;

    assert_eq!(drained.kinds(), ["ping", "ping", "send_invitation"]);
    let invitation = &drained.of_kind("send_invitation")[0];
    assert_eq!(
        invitation.id.to_string(),
        invited["jobId"].as_str().expect("a job id")
    );
    assert_eq!(invitation.state, JobState::Completed);
    assert_eq!(drained.job(&ok).state, JobState::Completed);
    let dead = drained.in_state(JobState::Dead);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id.to_string(), bad);
    // the worker it started is stopped: a new job waits, and the next drain returns only it
    let next = app.enqueue_ping(&json!({})).await;
    assert_eq!(app.job(&next).await["state"], "waiting");
    let again = app.run_pending_jobs().await;
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.job(&next).state, JobState::Completed);
}

#[tokio::test]
#[should_panic(expected = "jobs did not complete")]
async fn running_pending_jobs_fails_on_a_job_that_went_dead() {
    let mut app = TestApp::spawn().await;
    app.enqueue_ping(&json!({"failPermanently": true})).await;

    app.run_pending_jobs().await;
}

#[tokio::test]
#[should_panic(expected = "1 delayed in ping")]
async fn a_drain_fails_naming_a_job_left_unfinished() {
    let mut app = TestApp::spawn().await;
    app.enqueue_ping(&json!({"runAt": later()})).await;

    app.drain_jobs_within(Duration::from_secs(1)).await;
}
