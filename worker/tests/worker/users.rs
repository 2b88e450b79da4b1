//! The user-management jobs with an in-process worker, against real Postgres and Redis and a
//! real SMTP server on loopback: `send_invitation` (sent, written to the outbox, skipped,
//! retried, given up on) and `revoke_sessions`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use secrecy::SecretString;
use serde_json::json;
use shared::testing::smtp::{Mode, SmtpServer};
use shared::{
    auth::Claims,
    db::{self, audit::AuditFilter},
    jobs::{EnqueueOptions, Job, RevokeSessions, SendInvitation},
    queue::{JobRecord, JobState},
    secrets,
    sessions::{Sessions, Verdict},
    testing::{TestEnv, eventually},
};
use uuid::Uuid;

use crate::helpers::{InProcessWorker, lease_by_hand, script};

const INVITEE: &str = "grace@example.com";
const REQUEST_ID: &str = "req-users-test";

/// An invited user with an invitation and the job that sends it.
struct Invite {
    user_id: Uuid,
    invitation_id: Uuid,
    token: String,
    job: SendInvitation,
}

/// Seeds an inviter ("Ada Lovelace"), an invited user (`INVITEE`) holding `admin` and
/// `member`, and an invitation expiring at `expires_at`.
async fn seed_invitation(env: &TestEnv, expires_at: DateTime<Utc>) -> Invite {
    seed_invitation_of(env, INVITEE, expires_at).await
}

/// [`seed_invitation`] for another invitee.
async fn seed_invitation_of(env: &TestEnv, invitee: &str, expires_at: DateTime<Utc>) -> Invite {
    let p = env.project_id;
    let mut conn = env.pool.acquire().await.expect("acquire");
    let inviter_id =
        db::users::ensure_active(&mut conn, p, "ada@example.com", "Ada Lovelace", "unused")
            .await
            .expect("inviter");
    let user_id = db::users::create_invited(&mut conn, p, invitee, None)
        .await
        .expect("invited user");
    for role in ["admin", "member"] {
        let role_id = db::roles::by_name(&mut conn, p, role)
            .await
            .expect("role")
            .expect("default role");
        assert!(
            db::roles::assign(&mut conn, p, user_id, role_id)
                .await
                .expect("assign")
        );
    }
    let token = secrets::new_token();
    let invitation_id = db::invitations::create(
        &mut conn,
        p,
        user_id,
        &secrets::token_hash(&token),
        Some(inviter_id),
        expires_at,
    )
    .await
    .expect("invitation");
    let job = SendInvitation {
        project_id: p,
        invitation_id,
        user_id,
        inviter_id: Some(inviter_id),
        sealed_token: secrets::seal(&env.settings.auth.jwt_secret, &token),
        token_hash: secrets::token_hash(&token),
        resent: false,
    };
    Invite {
        user_id,
        invitation_id,
        token,
        job,
    }
}

fn in_30_days() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(30)
}

async fn enqueue<J: Job>(env: &TestEnv, job: &J, opts: EnqueueOptions) -> Uuid {
    let new = shared::jobs::Job::to_new_job(
        job,
        EnqueueOptions {
            request_id: Some(REQUEST_ID.into()),
            ..opts
        },
    )
    .expect("job");
    env.queues.push(&new).await.expect("enqueue").id
}

/// Waits until the job is completed or dead; returns it.
async fn finished(env: &TestEnv, queue: &str, id: Uuid, timeout: Duration) -> JobRecord {
    eventually(timeout, "the job finished", || async {
        let job = env.queues.job(queue, id).await.ok()??;
        matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
    })
    .await
}

async fn delivery(env: &TestEnv, invitation_id: Uuid) -> String {
    db::invitations::get(&env.pool, env.project_id, invitation_id)
        .await
        .expect("read invitation")
        .expect("invitation")
        .delivery
}

/// Waits for the on-dead hook to have marked the invitation failed; returns its
/// `invitation.failed` audit entries.
async fn marked_failed(env: &TestEnv, invitation_id: Uuid) -> Vec<db::audit::Entry> {
    eventually(
        Duration::from_secs(20),
        "the invitation marked FAILED",
        || async { (delivery(env, invitation_id).await == "FAILED").then_some(()) },
    )
    .await;
    audit(env, "invitation.failed").await
}

/// Waits until no dead `send_invitation` job waits for its on-dead hook.
async fn hooks_done(env: &TestEnv) {
    eventually(Duration::from_secs(10), "the on-dead hooks ran", || async {
        let pending = env
            .queues
            .dead_hooks_pending(SendInvitation::QUEUE)
            .await
            .ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

async fn audit(env: &TestEnv, action: &str) -> Vec<db::audit::Entry> {
    let filter = AuditFilter {
        action: Some(action.into()),
        ..AuditFilter::default()
    };
    db::audit::list(&env.pool, env.project_id, &filter, 0, 50)
        .await
        .expect("audit")
        .0
}

/// Enqueues the invitation's job with one attempt whose worker dies at once (a 1 ms lease that
/// nobody heartbeats), then starts a worker: maintenance takes the lease back and the job goes
/// dead. Returns the worker and the dead job.
async fn die_on_the_only_attempt(env: &TestEnv, invite: &Invite) -> (InProcessWorker, JobRecord) {
    let opts = EnqueueOptions {
        max_attempts: Some(1),
        ..EnqueueOptions::default()
    };
    let id = enqueue(env, &invite.job, opts).await;
    lease_by_hand(env, SendInvitation::QUEUE, "worker-that-dies", 1).await;
    let worker = InProcessWorker::start(env).await;
    let job = finished(env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;
    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    (worker, job)
}

async fn env_with_smtp(server: &SmtpServer) -> TestEnv {
    let url: SecretString = server.url().into();
    TestEnv::with(|s| s.email.smtp_url = Some(url)).await
}

#[tokio::test]
async fn an_invitation_email_arrives_over_smtp_with_the_inviter_roles_and_a_working_link() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    assert_eq!(job.result, Some(json!({ "outcome": "sent" })));
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].from, "no-reply@comet.local");
    assert_eq!(received[0].to, [INVITEE]);
    let email = received[0].parse();
    assert_eq!(
        email.header("Subject"),
        Some("Ada Lovelace invited you to Comet")
    );
    assert_eq!(email.header("To"), Some(INVITEE));
    // fixed per (invitation, token): a resend after a crash repeats it
    let hash = secrets::token_hash(&invite.token);
    assert_eq!(
        email.header("Message-ID"),
        Some(
            format!(
                "<invitation.{}.{}@comet.local>",
                invite.invitation_id,
                &hash[..16]
            )
            .as_str()
        )
    );
    for body in [&email.text, &email.html] {
        assert!(body.contains("Ada Lovelace"), "{body}");
        assert!(body.contains("admin, member"), "{body}");
    }
    assert!(email.html.contains("<strong>Ada Lovelace</strong>"));
    let prefix = "http://localhost:8080/invitations/accept?token=";
    let link_token: String = email
        .text
        .split_once(prefix)
        .expect("the text has the accept link")
        .1
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert_eq!(link_token, invite.token);
    let stored = db::invitations::get(&env.pool, env.project_id, invite.invitation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secrets::token_hash(&link_token), stored.token_hash);
    assert!(
        email
            .html
            .contains(&format!("href=\"{prefix}{link_token}\""))
    );
    assert_eq!(stored.delivery, "SENT");
    let sent = audit(&env, "invitation.sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target_id, Some(invite.user_id.to_string()));
    assert_eq!(sent[0].request_id.as_deref(), Some(REQUEST_ID));
    assert!(!sent[0].metadata.to_string().contains('@'));

    worker.stop().await;
}

#[tokio::test]
async fn without_smtp_the_invitation_is_written_as_an_eml_file_to_the_outbox() {
    let dir = std::env::temp_dir().join(format!("comet-outbox-{}", Uuid::new_v4()));
    let outbox = dir.to_string_lossy().into_owned();
    let env = TestEnv::with(|s| {
        s.email.smtp_url = None;
        s.email.outbox_dir = outbox;
    })
    .await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the outbox exists")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        eml.contains("Subject: Ada Lovelace invited you to Comet"),
        "{eml}"
    );
    assert!(eml.contains(&format!("To: {INVITEE}")), "{eml}");
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert_eq!(delivery(&env, invite.invitation_id).await, "SENT");

    worker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_invitation_resent_since_the_job_was_enqueued_is_not_sent_by_it() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;
    let mut conn = env.pool.acquire().await.unwrap();
    let newer = secrets::token_hash(&secrets::new_token());
    db::invitations::replace_token(&mut conn, env.project_id, invite.user_id, &newer)
        .await
        .unwrap()
        .unwrap();
    drop(conn);

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    assert_eq!(
        job.result,
        Some(json!({ "outcome": "skipped", "reason": "resent" }))
    );
    assert!(server.messages().is_empty());
    assert_eq!(delivery(&env, invite.invitation_id).await, "PENDING");
    assert!(audit(&env, "invitation.sent").await.is_empty());

    worker.stop().await;
}

#[tokio::test]
async fn an_accepted_invitation_is_not_sent() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;
    let mut conn = env.pool.acquire().await.unwrap();
    db::invitations::delete(&mut conn, env.project_id, invite.invitation_id)
        .await
        .unwrap();
    drop(conn);

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    assert_eq!(
        job.result,
        Some(json!({ "outcome": "skipped", "reason": "gone" }))
    );
    assert!(server.messages().is_empty());

    worker.stop().await;
}

#[tokio::test]
async fn an_expired_invitation_is_not_sent() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, Utc::now() - chrono::Duration::minutes(1)).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(
        job.result,
        Some(json!({ "outcome": "skipped", "reason": "expired" }))
    );
    assert!(server.messages().is_empty());

    worker.stop().await;
}

#[tokio::test]
async fn when_smtp_is_down_the_invitation_is_retried_and_sent_once_it_is_back() {
    let mut server = SmtpServer::start().await;
    let port = server.port;
    let env = env_with_smtp(&server).await;
    server.stop().await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let failing = eventually(Duration::from_secs(30), "two failed attempts", || async {
        let job = env.queues.job(SendInvitation::QUEUE, id).await.ok()??;
        (job.errors.len() >= 2).then_some(job)
    })
    .await;
    assert!(
        matches!(
            failing.state,
            JobState::Retrying | JobState::Waiting | JobState::Active
        ),
        "{:?}",
        failing.state
    );
    for e in &failing.errors {
        assert!(
            e.error
                .starts_with("Failed to send the invitation email: smtp:"),
            "{}",
            e.error
        );
    }
    assert_eq!(delivery(&env, invite.invitation_id).await, "PENDING");

    let server = SmtpServer::start_on(port).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(60)).await;

    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    let received = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, [INVITEE]);
    assert_eq!(delivery(&env, invite.invitation_id).await, "SENT");
    assert!(audit(&env, "invitation.failed").await.is_empty());

    worker.stop().await;
}

#[tokio::test]
async fn a_permanent_smtp_rejection_kills_the_job_at_once_and_marks_the_invitation_failed() {
    let server = SmtpServer::start().await;
    server.set_mode(Mode::RejectPermanent);
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, 1);
    assert!(job.errors[0].error.contains("554"), "{:?}", job.errors);
    assert!(server.messages().is_empty());
    let failed = marked_failed(&env, invite.invitation_id).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].target_id, Some(invite.user_id.to_string()));
    assert_eq!(failed[0].request_id.as_deref(), Some(REQUEST_ID));
    let error = failed[0].metadata["error"].as_str().unwrap();
    assert!(
        error.contains("554 5.7.1 rejected") || error.contains("(554)"),
        "{error}"
    );
    assert!(!failed[0].metadata.to_string().contains('@'));

    worker.stop().await;
}

#[tokio::test]
async fn a_transient_smtp_failure_on_the_last_attempt_marks_the_invitation_failed() {
    let server = SmtpServer::start().await;
    server.set_mode(Mode::RejectTransient);
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let opts = EnqueueOptions {
        max_attempts: Some(1),
        ..EnqueueOptions::default()
    };
    let id = enqueue(&env, &invite.job, opts).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    assert!(job.errors[0].error.contains("451"), "{:?}", job.errors);
    let failed = marked_failed(&env, invite.invitation_id).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].metadata["jobId"], id.to_string());
    assert_eq!(failed[0].metadata["attempts"], 1);

    worker.stop().await;
}

/// The handler never sees this death: its worker held the job on its last attempt and died
/// (here: a lease taken by hand that nobody heartbeats). Maintenance takes the lease back, the
/// job goes dead, and the on-dead hook still marks the invitation failed.
#[tokio::test]
async fn an_invitation_whose_worker_died_on_the_last_attempt_is_marked_failed() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let (worker, job) = die_on_the_only_attempt(&env, &invite).await;

    assert!(
        job.errors[0].error.contains("lease expired"),
        "{:?}",
        job.errors
    );
    let failed = marked_failed(&env, invite.invitation_id).await;
    assert_eq!(failed.len(), 1);
    let error = failed[0].metadata["error"].as_str().expect("error");
    assert!(error.contains("worker-that-dies"), "{error}");
    assert_eq!(failed[0].request_id.as_deref(), Some(REQUEST_ID));
    assert!(server.messages().is_empty());
    hooks_done(&env).await;

    worker.stop().await;
}

/// Delivery is at least once: a hook that failed is claimed for [`comet_worker::services::dead_hooks::CLAIM`]
/// and runs again once the claim has passed.
#[tokio::test]
async fn an_on_dead_hook_that_failed_runs_again_once_its_claim_has_passed() {
    let env = TestEnv::new().await;
    let invite = seed_invitation(&env, in_30_days()).await;
    // the hook's write fails until the trigger is dropped
    sqlx::raw_sql(
        r#"CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
           CREATE TRIGGER refuse_update BEFORE UPDATE ON user_invitations
             FOR EACH ROW EXECUTE FUNCTION refuse_update();"#,
    )
    .execute(&env.pool)
    .await
    .expect("trigger");
    let (worker, job) = die_on_the_only_attempt(&env, &invite).await;
    let id = job.id;

    // the hook runs, fails, and stays claimed: its entry is due again a claim later
    let key = format!("{}dead_hooks", env.queues.base(SendInvitation::QUEUE));
    let failed_hooks = || {
        let text = shared::telemetry::metrics_handle().render();
        let labels = [("queue", SendInvitation::QUEUE), ("outcome", "failed")];
        crate::helpers::sample(&text, "comet_dead_hooks_total", &labels)
    };
    eventually(Duration::from_secs(20), "the hook failed", || async {
        failed_hooks().filter(|n| *n >= 1.0)
    })
    .await;
    let due_again: Option<f64> = env
        .queues
        .connection()
        .zscore(&key, id.to_string())
        .await
        .expect("zscore");
    let due_again = due_again.expect("still waiting for its hook");
    assert_eq!(delivery(&env, invite.invitation_id).await, "PENDING");
    sqlx::raw_sql("DROP TRIGGER refuse_update ON user_invitations")
        .execute(&env.pool)
        .await
        .expect("drop trigger");

    let claim = comet_worker::services::dead_hooks::CLAIM + Duration::from_secs(15);
    eventually(claim, "the hook ran again and marked it FAILED", || async {
        (delivery(&env, invite.invitation_id).await == "FAILED").then_some(())
    })
    .await;
    let ran_again_at = Utc::now().timestamp_millis() as f64;
    assert!(
        ran_again_at >= due_again,
        "ran again before its claim had passed"
    );
    assert_eq!(audit(&env, "invitation.failed").await.len(), 1);
    hooks_done(&env).await;
    worker.stop().await;
}

/// Hooks run at least once, so running one again changes nothing; and a dead job retried by an
/// operator before its hook ran is no longer hooked.
#[tokio::test]
async fn the_on_dead_hook_is_idempotent_and_skipped_for_jobs_retried_since() {
    let env = TestEnv::new().await;
    let invite = seed_invitation(&env, in_30_days()).await;
    let ctx = comet_worker::JobContext::new(
        std::sync::Arc::new(env.settings.clone()),
        env.pool.clone(),
        env.queues.clone(),
    )
    .expect("context");
    let dead = shared::queue::DeadJob {
        id: Uuid::now_v7(),
        payload: serde_json::to_string(&invite.job).expect("payload"),
        attempts: 5,
        last_error: "Failed to send the invitation email: connection refused".into(),
        request_id: Some(REQUEST_ID.into()),
    };
    for _ in 0..2 {
        comet_worker::jobs::send_invitation::on_dead(ctx.clone(), invite.job.clone(), dead.clone())
            .await
            .expect("hook");
    }
    assert_eq!(delivery(&env, invite.invitation_id).await, "FAILED");
    let failed = audit(&env, "invitation.failed").await;
    assert_eq!(failed.len(), 1, "a second run audits nothing");
    assert_eq!(failed[0].metadata["attempts"], 5);

    // A job that went dead (no worker runs here: the hook waits) and was retried by an operator:
    // claiming finds nothing to do and drops it.
    let other = SendInvitation {
        invitation_id: Uuid::now_v7(),
        ..invite.job.clone()
    };
    let opts = EnqueueOptions {
        max_attempts: Some(1),
        ..EnqueueOptions::default()
    };
    let id = enqueue(&env, &other, opts).await;
    let base = env.queues.base(SendInvitation::QUEUE);
    let token = lease_by_hand(&env, SendInvitation::QUEUE, "worker-a", 60_000).await;
    let mut conn = env.queues.connection();
    let _: Vec<String> = script("ack")
        .key(shared::queue::queue_keys(&base))
        .arg(25)
        .arg(1)
        .arg(1) // the kind is hooked
        .arg(id.to_string())
        .arg(token)
        .arg("dead")
        .arg(0)
        .arg("boom")
        .arg("")
        .arg("")
        .arg("")
        .invoke_async(&mut conn)
        .await
        .expect("ack");
    assert_eq!(
        env.queues
            .dead_hooks_pending(SendInvitation::QUEUE)
            .await
            .expect("zcard"),
        1
    );
    assert!(
        env.queues
            .retry_dead(SendInvitation::QUEUE, id)
            .await
            .expect("retry")
    );
    let claimed = env
        .queues
        .claim_dead_hooks(SendInvitation::QUEUE, 10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "{claimed:?}");
    assert_eq!(
        env.queues
            .dead_hooks_pending(SendInvitation::QUEUE)
            .await
            .expect("zcard"),
        0
    );
}

#[tokio::test]
/// `JWT_SECRET` changed between enqueue and run: nothing can be sent; the invitation is marked
/// failed with a readable reason (found by the token's hash), unless it was resent since.
async fn a_token_sealed_under_another_key_kills_the_job_and_marks_the_invitation_failed() {
    let server = SmtpServer::start().await;
    let env = env_with_smtp(&server).await;
    let mut invite = seed_invitation(&env, in_30_days()).await;
    let other: SecretString = "another-secret-another-secret-another".into();
    invite.job.sealed_token = secrets::seal(&other, &invite.token);
    let id = enqueue(&env, &invite.job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    assert!(
        job.errors[0].error.contains("does not open"),
        "{:?}",
        job.errors
    );
    assert!(server.messages().is_empty());
    let failed = marked_failed(&env, invite.invitation_id).await;
    assert_eq!(failed.len(), 1);
    let error = failed[0].metadata["error"].as_str().expect("error");
    assert!(error.contains("resend the invitation"), "{error}");

    // the same with a job for an invitation resent since (another token hash): left alone
    let mut stale = seed_invitation_of(&env, "linus@example.com", in_30_days()).await;
    stale.job.sealed_token = secrets::seal(&other, &stale.token);
    stale.job.token_hash = secrets::token_hash("a token the invitation no longer holds");
    let id = enqueue(&env, &stale.job, EnqueueOptions::default()).await;
    let job = finished(&env, SendInvitation::QUEUE, id, Duration::from_secs(30)).await;
    assert_eq!(job.state, JobState::Dead);
    hooks_done(&env).await;
    assert_eq!(delivery(&env, stale.invitation_id).await, "PENDING");
    assert_eq!(audit(&env, "invitation.failed").await.len(), 1);

    worker.stop().await;
}

#[tokio::test]
async fn revoke_sessions_blacklists_every_live_token_of_the_user_for_its_remaining_life() {
    let env = TestEnv::new().await;
    let p = env.project_id;
    let mut conn = env.pool.acquire().await.unwrap();
    let user = db::users::ensure_active(&mut conn, p, "bob@example.com", "Bob", "unused")
        .await
        .unwrap();
    let admin = db::users::ensure_active(&mut conn, p, "ada@example.com", "Ada", "unused")
        .await
        .unwrap();
    drop(conn);
    let sessions = Sessions::new(&env.queues);
    let long = Claims::new(&user.to_string(), p, vec![], 3600);
    let short = Claims::new(&user.to_string(), p, vec![], 600);
    let admins = Claims::new(&admin.to_string(), p, vec![], 3600);
    for (claims, owner) in [(&long, user), (&short, user), (&admins, admin)] {
        sessions
            .create(claims, owner, "test-agent", "127.0.0.1")
            .await
            .unwrap();
    }
    // the revocation happens strictly after those sessions were issued
    tokio::time::sleep(Duration::from_millis(5)).await;
    let job = RevokeSessions {
        project_id: p,
        user_id: user,
        actor_id: Some(admin),
        reason: "deactivated".into(),
        revoked_before_ms: Utc::now().timestamp_millis(),
        also: Vec::new(),
    };
    let id = enqueue(&env, &job, EnqueueOptions::default()).await;

    let worker = InProcessWorker::start(&env).await;
    let done = finished(&env, RevokeSessions::QUEUE, id, Duration::from_secs(30)).await;

    assert_eq!(done.state, JobState::Completed, "{:?}", done.errors);
    assert_eq!(
        done.result,
        Some(json!({ "outcome": "revoked", "count": 2 }))
    );
    assert_eq!(sessions.check(&long).await.unwrap(), Verdict::Revoked);
    assert_eq!(sessions.check(&short).await.unwrap(), Verdict::Revoked);
    assert_eq!(sessions.check(&admins).await.unwrap(), Verdict::Valid);
    assert!(sessions.of_user(user).await.unwrap().is_empty());
    assert_eq!(sessions.of_user(admin).await.unwrap().len(), 1);
    // each token is blacklisted by itself (not only by the marker), for its remaining life
    let mut redis = env.queues.connection();
    let auth = format!("{}:auth:", env.queues.prefix());
    for (claims, life) in [(&long, 3600), (&short, 600)] {
        let ttl: i64 = redis
            .ttl(format!("{auth}revoked-jti:{{u:{user}}}:{}", claims.jti))
            .await
            .unwrap();
        assert!(
            (life - 30..=life).contains(&ttl),
            "ttl {ttl} for a {life} s token"
        );
        let record: bool = redis
            .exists(format!("{auth}session:{{u:{user}}}:{}", claims.jti))
            .await
            .unwrap();
        assert!(!record, "the session record is deleted");
    }
    let marker: Option<i64> = redis
        .get(format!("{auth}revoked-before:{user}"))
        .await
        .unwrap();
    assert_eq!(marker, Some(job.revoked_before_ms));
    let revoked = audit(&env, "sessions.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].actor_id, Some(admin));
    assert_eq!(revoked[0].target_id, Some(user.to_string()));
    assert_eq!(
        revoked[0].metadata,
        json!({ "reason": "deactivated", "count": 2 })
    );
    assert_eq!(revoked[0].request_id.as_deref(), Some(REQUEST_ID));

    // idempotent: running it again revokes nothing more, and a login made after the
    // revocation (the user logged in again before a retried job ran) keeps its session
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = Claims::new(&user.to_string(), p, vec![], 3600);
    sessions
        .create(&fresh, user, "test-agent", "127.0.0.1")
        .await
        .unwrap();
    let again = enqueue(&env, &job, EnqueueOptions::default()).await;
    let done = finished(&env, RevokeSessions::QUEUE, again, Duration::from_secs(30)).await;
    assert_eq!(
        done.result,
        Some(json!({ "outcome": "revoked", "count": 0 }))
    );
    assert_eq!(sessions.check(&admins).await.unwrap(), Verdict::Valid);
    assert_eq!(sessions.check(&fresh).await.unwrap(), Verdict::Valid);
    assert_eq!(sessions.of_user(user).await.unwrap().len(), 1);

    worker.stop().await;
}
