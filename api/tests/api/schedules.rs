//! The schedules' routes (list, trigger, pause, resume) and the sweeps they run, end to end:
//! the API, the in-process worker running the scheduler and the sweep jobs, Postgres, Redis and,
//! for invitations, an SMTP server on loopback.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shared::{
    auth::Claims,
    config::Settings,
    db::schedules,
    sessions::Sessions,
    testing::{eventually, smtp::SmtpServer},
};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status, new_notification, send};

/// Every schedule but `keep` switched off; the scheduler on when `keep` names any.
fn only(s: &mut Settings, keep: &[(&str, &str)]) {
    let names: Vec<&str> = shared::schedule::ALL
        .iter()
        .map(|d| d.schedule.name)
        .collect();
    for name in names {
        let expr = keep
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("off", |(_, e)| e);
        s.scheduler.set(name, expr).expect("a valid override");
    }
    s.scheduler.enabled = !keep.is_empty();
}

impl TestApp {
    /// An operator's token with the schedule permissions and `jobs:read` (its project is the
    /// nil one, the scheduled jobs' own).
    fn operator(&self) -> String {
        self.platform_token_with(&["schedules:read", "schedules:manage", "jobs:read"])
    }

    async fn schedules_call(&self, method: Method, path: &str, token: &str) -> Response {
        send(self.authed(method, &format!("/api/v1/schedules{path}"), token)).await
    }

    /// `GET /api/v1/schedules`, as an operator: the schedule `name`.
    async fn schedule(&self, name: &str) -> Value {
        let list = json_with_status(
            self.schedules_call(Method::GET, "", &self.operator()).await,
            StatusCode::OK,
        )
        .await;
        list["data"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect("the schedule is listed")
    }

    /// Triggers `name` as an operator and waits for its job to complete; returns the job.
    async fn run_sweep(&self, name: &str) -> Value {
        let token = self.operator();
        let resp = self
            .schedules_call(Method::POST, &format!("/{name}/trigger"), &token)
            .await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        let id = body["data"]["jobId"].as_str().expect("a job id").to_owned();
        eventually(Duration::from_secs(30), "the sweep completes", || async {
            let resp = self.get_job(&id, &token).await;
            let job = json_with_status(resp, StatusCode::OK).await["data"].take();
            assert_ne!(job["state"], "dead", "{job}");
            (job["state"] == "completed").then_some(job)
        })
        .await
    }

    async fn run_count(&self, name: &str) -> usize {
        schedules::runs(&self.env.pool, name)
            .await
            .expect("runs")
            .len()
    }
}

#[tokio::test]
async fn schedules_are_for_platform_operators_and_list_their_policies_and_next_tick() {
    let app = TestApp::spawn().await;
    let list = json_with_status(
        app.schedules_call(Method::GET, "", &app.operator()).await,
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "expire_invitations",
            "sweep_sessions",
            "apply_retention",
            "sweep_api_keys",
            "bucket_monitor",
            "canary"
        ]
    );
    let monitor = app.schedule("bucket_monitor").await;
    assert_eq!(monitor["expression"], "*/30 * * * * *");
    assert_eq!(monitor["catchUp"], "once");
    assert_eq!(monitor["overlap"], "skip");
    let expire = app.schedule("expire_invitations").await;
    assert_eq!(expire["expression"], "*/5 * * * *");
    assert_eq!(expire["timeZone"], "UTC");
    assert_eq!(expire["catchUp"], "once");
    assert_eq!(expire["overlap"], "skip");
    assert_eq!(expire["enabled"], true);
    assert_eq!(expire["missedCount"], 0);
    assert!(expire["lastJob"].is_null());
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(expire["nextFireAt"].clone()).expect("nextFireAt");
    assert!(next > chrono::Utc::now() && next <= chrono::Utc::now() + chrono::Duration::minutes(5));

    // a tenant's token, even with every project permission, and a reader, may not change them
    let tenant = app.admin_token();
    assert_error(
        app.schedules_call(Method::GET, "", &tenant).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let reader = app.platform_token_with(&["schedules:read"]);
    for action in ["trigger", "pause", "resume"] {
        let path = format!("/canary/{action}");
        assert_error(
            app.schedules_call(Method::POST, &path, &reader).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_error(
            app.schedules_call(Method::POST, &path, &tenant).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    assert_error(
        app.schedules_call(Method::POST, "/nope/pause", &app.operator())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_pause_holds_across_restarts_of_the_worker_and_the_api_until_resumed() {
    let mut app = TestApp::spawn_with(|s| only(s, &[("canary", "* * * * * *")])).await;
    app.start_worker().await;
    eventually(Duration::from_secs(20), "the canary fires", || async {
        (app.run_count("canary").await >= 2).then_some(())
    })
    .await;

    let paused = json_with_status(
        app.schedules_call(Method::POST, "/canary/pause", &app.operator())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["data"]["paused"], true);
    assert_eq!(paused["data"]["enabled"], false);
    assert_eq!(paused["data"]["pausedBy"], "ops");
    assert!(paused["data"]["nextFireAt"].is_null());
    // a tick being fired as the pause commits may still land
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_pause = app.run_count("canary").await;

    app.stop_worker().await;
    app.start_worker().await;
    let other = app.second_instance().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.run_count("canary").await, at_pause, "no tick fires");
    let seen = other.schedule("canary").await;
    assert_eq!(seen["paused"], true, "{seen}");
    let missed = seen["missedCount"].as_i64().expect("count");
    assert_eq!(missed, 0, "paused ticks are not missed");

    json_with_status(
        other
            .schedules_call(Method::POST, "/canary/resume", &app.operator())
            .await,
        StatusCode::OK,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the canary fires again",
        || async { (app.run_count("canary").await >= at_pause + 2).then_some(()) },
    )
    .await;
    assert_eq!(app.schedule("canary").await["paused"], false);
}

#[tokio::test]
async fn a_trigger_runs_a_sweep_once_now_outside_the_tick_sequence() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let job = app.run_sweep("expire_invitations").await;
    assert_eq!(job["projectId"], Uuid::nil().to_string());
    assert_eq!(job["result"], json!({"expired": 0, "missedTicks": 0}));
    let runs = schedules::runs(&app.env.pool, "expire_invitations")
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].tick_at, None, "outside the tick sequence");
    assert_eq!(runs[0].job_id.to_string(), job["id"].as_str().expect("id"));
    let listed = app.schedule("expire_invitations").await;
    assert_eq!(listed["lastJob"]["id"], job["id"]);
    assert_eq!(listed["lastJob"]["state"], "completed");
    assert!(listed["lastFireAt"].is_string());
    // and no tick ran besides it: the test's workers run no scheduler
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.run_count("expire_invitations").await, 1);
}

#[tokio::test]
async fn the_bucket_monitor_schedule_settles_a_bucket_made_stale_by_sql_once() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    let bucket = app
        .bucket(
            &token,
            &json!({"name": "float", "currency": "USD", "initialBalance": "50",
                    "lowBalanceThreshold": "10"}),
        )
        .await;
    let id = bucket["id"].as_str().expect("id").to_owned();
    sqlx::query("UPDATE transfer_buckets SET balance = 9.99 WHERE bucket_id = $1")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .execute(&app.env.pool)
        .await
        .expect("stale by SQL");

    let job = app.run_sweep("bucket_monitor").await;
    assert_eq!(job["projectId"], Uuid::nil().to_string());
    assert_eq!(job["result"]["changed"], 1, "{job}");
    assert_eq!(job["result"]["alerted"], 1, "{job}");
    assert_eq!(app.bucket_now(&token, &id).await["alerting"], true);
    let again = app.run_sweep("bucket_monitor").await;
    assert_eq!(again["result"]["changed"], 0, "{again}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE project_id = $1 AND type = 'bucket.low_balance'",
    )
    .bind(app.project_id())
    .fetch_one(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(events, 1, "one crossing, one event");
    assert_eq!(app.run_count("bucket_monitor").await, 2);
}

/// The token of an invitation email's accept link.
fn link_token(text: &str) -> String {
    let start = text.find("token=").expect("an accept link") + "token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn an_expired_invitation_is_swept_and_its_invitee_invited_again_end_to_end_over_smtp() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let mut app = TestApp::spawn_with(|s| s.email.smtp_url = Some(url.into())).await;
    app.start_worker().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let first = app.invite_member(&boss, "late@example.com").await;
    let user = first["user"]["id"].as_str().expect("id").to_owned();
    let old_token = link_token(
        &smtp.wait_for(1, Duration::from_secs(30)).await[0]
            .parse()
            .text,
    );
    // today a re-invite of a pending invitee is a conflict
    let member = app.role_id(app.project_id(), "member").await;
    let again = json!({"email": "late@example.com", "roleIds": [member]});
    assert_error(
        app.invite(&boss, &again).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // the email arrived, but the worker records it (delivery SENT) just after, holding the
    // invitation's row meanwhile, and the sweep skips locked rows (the next run takes them):
    // wait for the record, as a sweep an hour later would
    eventually(
        Duration::from_secs(30),
        "the invitation is marked sent",
        || async {
            let delivery: String = sqlx::query_scalar("SELECT delivery FROM user_invitations")
                .fetch_one(&app.env.pool)
                .await
                .ok()?;
            (delivery == "SENT").then_some(())
        },
    )
    .await;
    sqlx::query("UPDATE user_invitations SET expires_at = now() - interval '1 minute'")
        .execute(&app.env.pool)
        .await
        .expect("expire it");
    let job = app.run_sweep("expire_invitations").await;
    assert_eq!(job["result"]["expired"], 1);
    let status: String = sqlx::query_scalar("SELECT status FROM user_invitations")
        .fetch_one(&app.env.pool)
        .await
        .expect("status");
    assert_eq!(status, "EXPIRED");
    let audit = app.audit_logs(&boss, "?action=invitation.expired").await;
    let entries = audit["data"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["targetId"], user.as_str());
    // a second run changes nothing
    assert_eq!(
        app.run_sweep("expire_invitations").await["result"]["expired"],
        0
    );

    let reinvited = json_with_status(app.invite(&boss, &again).await, StatusCode::ACCEPTED).await;
    assert_eq!(
        reinvited["data"]["user"]["id"],
        user.as_str(),
        "the same user"
    );
    assert_ne!(
        reinvited["data"]["invitation"]["id"],
        first["invitation"]["id"]
    );
    let mails = smtp.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mails[1].to, vec!["late@example.com".to_owned()]);
    let new_token = link_token(&mails[1].parse().text);
    assert_ne!(new_token, old_token, "a new link");
    assert_error(
        app.accept(&old_token, crate::helpers::PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let accepted = app.accept(&new_token, crate::helpers::PASSWORD).await;
    assert_eq!(
        json_with_status(accepted, StatusCode::OK).await["data"]["status"],
        "ACTIVE"
    );
}

#[tokio::test]
async fn api_keys_past_expiry_are_disabled_and_ended_rotation_graces_erased_audited() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let project = app.project_id();
    let (expiring, expiring_key) = app.new_api_key(project, "expiring").await;
    let (rotated, _) = app.new_api_key(project, "rotated").await;
    let (kept, kept_key) = app.new_api_key(project, "kept").await;
    let operator = app.platform_token();
    json_with_status(
        app.rotate_api_key(
            &operator,
            &project.to_string(),
            &rotated.to_string(),
            &json!({"graceSeconds": 3600}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    sqlx::query(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE api_key_id = $1",
    )
    .bind(expiring)
    .execute(&app.env.pool)
    .await
    .expect("expire");
    sqlx::query(
        "UPDATE api_keys SET previous_valid_until = now() - interval '1 second' WHERE api_key_id = $1",
    )
    .bind(rotated)
    .execute(&app.env.pool)
    .await
    .expect("end grace");

    let job = app.run_sweep("sweep_api_keys").await;
    assert_eq!(
        job["result"],
        json!({"disabled": 1, "graceEnded": 1, "missedTicks": 0})
    );
    assert!(app.key_row(expiring).await.previous_hash.is_none());
    let shown = json_with_status(
        app.get_api_key(&operator, &project.to_string(), &expiring.to_string())
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(shown["data"]["disabledAt"].is_string(), "{shown}");
    assert!(app.key_row(rotated).await.previous_hash.is_none());
    assert_eq!(
        app.key_status(&expiring_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.key_status(&kept_key).await, StatusCode::OK);
    let kept_row = app.key_row(kept).await;
    assert!(kept_row.previous_hash.is_none());
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action || ':' || target_id FROM audit_log WHERE action IN ('api_key.disabled', 'api_key.rotation_grace_ended') ORDER BY action",
    )
    .fetch_all(&app.env.pool)
    .await
    .expect("audit");
    assert_eq!(
        actions,
        [
            format!("api_key.disabled:{expiring}"),
            format!("api_key.rotation_grace_ended:{rotated}")
        ]
    );
    // idempotent
    assert_eq!(
        app.run_sweep("sweep_api_keys").await["result"],
        json!({"disabled": 0, "graceEnded": 0, "missedTicks": 0})
    );
}

#[tokio::test]
async fn retention_deletes_in_batches_only_what_is_older_than_its_setting() {
    let mut app = TestApp::spawn_with(|s| {
        s.retention.audit_days = Some(30);
        s.retention.event_days = Some(30);
        s.retention.notification_days = Some(30);
        s.retention.batch = 10;
    })
    .await;
    app.start_worker().await;
    let project = app.project_id();
    let pool = &app.env.pool;
    // 25 old audit entries and 1 recent
    sqlx::query(
        "INSERT INTO audit_log (audit_id, project_id, action, at)
         SELECT gen_random_uuid(), $1, 'test.old', now() - interval '40 days' FROM generate_series(1, 25)",
    )
    .bind(project)
    .execute(pool)
    .await
    .expect("old audit");
    sqlx::query("INSERT INTO audit_log (audit_id, project_id, action) VALUES (gen_random_uuid(), $1, 'test.new')")
        .bind(project)
        .execute(pool)
        .await
        .expect("new audit");
    // events: old and processed with an old notification; old with a recent notification; new
    let event = |age_days: i64| {
        let id = Uuid::now_v7();
        async move {
            sqlx::query(
                "INSERT INTO events (project_id, event_id, type, payload, occurred_at, received_at,
                                     job_id, rules_version, processed_at)
                 VALUES ($1, $2, 't.x', '{}', now(), now() - make_interval(days => $3::int), $2, 0, now())",
            )
            .bind(project)
            .bind(id)
            .bind(age_days as i32)
            .execute(pool)
            .await
            .expect("event");
            id
        }
    };
    let (old_gone, old_kept, new) = (event(40).await, event(40).await, event(0).await);
    let (user, _) = crate::helpers::inbox_user(&app.env, project, "r@example.com").await;
    let env = &app.env;
    let attach = |event: Uuid, age_days: i64| async move {
        let n = new_notification(env, project, None, "b", &[user]).await;
        sqlx::query(
            "UPDATE notifications SET kind = 'rule', rule_id = gen_random_uuid(), event_id = $2,
                    created_at = now() - make_interval(days => $3::int)
             WHERE notification_id = $1",
        )
        .bind(n)
        .bind(event)
        .bind(age_days as i32)
        .execute(pool)
        .await
        .expect("attach");
        n
    };
    let old_notification = attach(old_gone, 40).await;
    let recent_notification = attach(old_kept, 1).await;

    // archived jobs: completed kept JOB_COMPLETED_RETENTION_SECS (1 day), dead and cancelled
    // JOB_DEAD_RETENTION_SECS (7 days)
    let archived = |state: &'static str, age_hours: i32| async move {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO job_archive (job_id, queue, kind, project_id, state, attempts, max_attempts,
                                      finished_at)
             VALUES ($1, 'ping', 'ping', $2, $3, 1, 1, now() - make_interval(hours => $4))",
        )
        .bind(id)
        .bind(project)
        .bind(state)
        .bind(age_hours)
        .execute(pool)
        .await
        .expect("archived job");
        id
    };
    let kept_jobs = [
        archived("completed", 1).await,
        archived("dead", 48).await,
        archived("cancelled", 48).await,
    ];
    for (state, hours) in [("completed", 30), ("dead", 8 * 24), ("cancelled", 8 * 24)] {
        archived(state, hours).await;
    }

    // dead-job alert windows: raised ones past JOB_DEAD_RETENTION_SECS go; a recent one, and an
    // old one not raised yet, stay (that one still open: the worker's archiver raises a closed
    // window within a period, which would make it an old raised one before the sweep)
    let window = |age_hours: i32, raised: bool, fingerprint: &'static str| async move {
        let open_for = if raised { 60 } else { 9 * 86_400 };
        sqlx::query(
            "INSERT INTO job_dead_alerts (project_id, queue, fingerprint, window_start,
                 window_seconds, dead, first_job_id, last_job_id, first_at, last_at, sample_error,
                 event_id)
             VALUES ($1, 'ping', $2, now() - make_interval(hours => $3), $5, 1,
                     gen_random_uuid(), gen_random_uuid(), now(), now(), 'boom',
                     CASE WHEN $4 THEN gen_random_uuid() END)",
        )
        .bind(project)
        .bind(fingerprint)
        .bind(age_hours)
        .bind(raised)
        .bind(open_for)
        .execute(pool)
        .await
        .expect("alert window");
    };
    window(8 * 24, true, "old raised").await;
    window(8 * 24, false, "old pending").await;
    window(1, true, "recent").await;

    let job = app.run_sweep("apply_retention").await;
    let r = &job["result"];
    assert_eq!(r["archivedJobs"], 3, "{r}");
    assert_eq!(r["deadJobAlerts"], 1, "{r}");
    let mut windows: Vec<String> = sqlx::query_scalar("SELECT fingerprint FROM job_dead_alerts")
        .fetch_all(pool)
        .await
        .expect("windows left");
    windows.sort();
    assert_eq!(windows, ["old pending", "recent"]);
    let mut left: Vec<Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM job_archive WHERE finished_at < now() - interval '30 minutes'",
    )
    .fetch_all(pool)
    .await
    .expect("archive left");
    left.sort_unstable();
    assert_eq!(left, kept_jobs, "the recent ones stay");
    assert_eq!(r["auditLog"], 25, "{r}");
    assert_eq!(r["notifications"], 1, "{r}");
    assert_eq!(r["notificationRecipients"], 1, "{r}");
    assert_eq!(r["events"], 1, "{r}");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'test.%'")
            .fetch_all(pool)
            .await
            .expect("audit left");
    assert_eq!(left, ["test.new"]);
    let events: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .expect("events");
    assert_eq!(
        events,
        [old_kept, new],
        "an event outlives its notifications"
    );
    let notifications: Vec<Uuid> = sqlx::query_scalar("SELECT notification_id FROM notifications")
        .fetch_all(pool)
        .await
        .expect("notifications");
    assert_eq!(notifications, [recent_notification]);
    assert_ne!(old_notification, recent_notification);
    // idempotent
    let again = app.run_sweep("apply_retention").await;
    assert_eq!(again["result"]["auditLog"], 0);
    assert_eq!(again["result"]["events"], 0);
}

#[tokio::test]
async fn the_session_sweep_removes_only_dead_ids_from_the_users_session_sets() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let sessions = Sessions::new(&app.env.queues);
    let user = Uuid::now_v7();
    let mut jtis = Vec::new();
    for _ in 0..3 {
        let claims = Claims::new(&user.to_string(), app.project_id(), vec![], 600);
        sessions
            .create(&claims, user, "test", "127.0.0.1")
            .await
            .expect("session");
        jtis.push(claims.jti);
    }
    // one session's record expired with its token (the set member stays behind)
    let prefix = app.env.settings.redis.prefix.clone();
    let mut conn = app.env.queues.connection();
    let _: i64 = redis::AsyncCommands::del(
        &mut conn,
        format!("{prefix}:auth:session:{{u:{user}}}:{}", jtis[0]),
    )
    .await
    .expect("del");

    let job = app.run_sweep("sweep_sessions").await;
    assert_eq!(job["result"]["removed"], 1, "{job}");
    assert_eq!(job["result"]["completedPass"], true);
    let mut left: Vec<Uuid> = sessions
        .of_user(user)
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| s.jti)
        .collect();
    let members: Vec<String> = redis::AsyncCommands::smembers(
        &mut conn,
        format!("{prefix}:auth:user-sessions:{{u:{user}}}"),
    )
    .await
    .expect("members");
    assert_eq!(members.len(), 2, "{members:?}");
    left.sort();
    let mut live = jtis[1..].to_vec();
    live.sort();
    assert_eq!(left, live);
    assert_eq!(
        app.run_sweep("sweep_sessions").await["result"]["removed"],
        0
    );
}
