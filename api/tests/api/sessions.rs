//! Sessions: login, logout, `GET /users/me`, login rate limits, and deactivation, whose
//! revocation is effective on every API process before it answers.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use shared::config::RateLimit;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_error, json_with_status, member_permissions, send};

async fn login_failures(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(a) FROM audit_log a WHERE action = 'login.failed' ORDER BY at, audit_id",
    )
    .fetch_all(&app.env.pool)
    .await
    .expect("audit")
}

#[tokio::test]
async fn login_returns_a_bearer_token_with_the_users_permissions_and_records_a_session() {
    let app = TestApp::spawn().await;
    let user = app
        .active_user(app.project_id(), "ada@example.com", "member")
        .await;

    let resp = send(
        app.request(Method::POST, "/api/v1/auth/login")
            .header(header::USER_AGENT, "comet-tests/1")
            .json(&json!({"email": "  ADA@example.com", "password": PASSWORD})),
    )
    .await;

    let body = json_with_status(resp, StatusCode::OK).await;
    let data = &body["data"];
    assert_eq!(data["tokenType"], "Bearer");
    assert!(data["expiresAt"].is_string());
    assert_eq!(data["user"]["id"], user.to_string());
    assert_eq!(data["user"]["email"], "ada@example.com");
    assert_eq!(data["user"]["permissions"], json!(member_permissions()));
    let token = data["accessToken"].as_str().expect("a token");
    let claims =
        shared::auth::verify(&app.env.settings.auth.jwt_secret, token).expect("a valid JWT");
    assert_eq!(claims.sub, user.to_string());
    assert_eq!(claims.project_id, app.project_id());
    assert_eq!(claims.permissions, member_permissions());
    assert_eq!(claims.jti.get_version_num(), 4);
    let sessions = shared::sessions::Sessions::new(&app.env.queues)
        .of_user(user)
        .await
        .expect("redis");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].jti, claims.jti);
    // the token works, with exactly the permissions of the user's roles
    let me_body = json_with_status(app.me(token).await, StatusCode::OK).await;
    assert_eq!(me_body["data"]["projectId"], app.project_id().to_string());
    let users = app.get_users(token, "").await;
    assert_eq!(users.status(), StatusCode::OK);
    let audit = app.get_audit_logs(token, "").await;
    assert_error(audit, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn every_bad_login_gets_the_same_401_and_is_audited_without_the_email() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&boss, "invited@example.com").await;
    let gone = app
        .active_user(app.project_id(), "gone@example.com", "member")
        .await;
    json_with_status(
        app.deactivate(&boss, &gone.to_string()).await,
        StatusCode::OK,
    )
    .await;

    let mut messages = Vec::new();
    for body in [
        json!({"email": "boss@example.com", "password": "wrong password!"}),
        json!({"email": "nobody@example.com", "password": PASSWORD}),
        json!({"email": "nobody@example.com", "password": PASSWORD, "projectId": app.project_id()}),
        json!({"email": "invited@example.com", "password": PASSWORD}),
        json!({"email": "gone@example.com", "password": PASSWORD}),
    ] {
        let error = assert_error(
            app.login(&body).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        messages.push(error["message"].clone());
    }

    assert!(
        messages.iter().all(|m| *m == messages[0]),
        "one message: {messages:?}"
    );
    let failures = login_failures(&app).await;
    let reasons: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| {
            (
                f["target_id"].as_str().unwrap_or("-"),
                f["metadata"]["reason"].as_str().expect("a reason"),
            )
        })
        .collect();
    let boss_id = boss_id.to_string();
    let gone = gone.to_string();
    assert_eq!(
        reasons,
        [
            (boss_id.as_str(), "wrong_password"),
            ("-", "unknown_user"),
            (invited["user"]["id"].as_str().expect("id"), "not_active"),
            (gone.as_str(), "not_active"),
        ]
    );
    for f in &failures {
        let text = f.to_string();
        assert!(
            !text.contains("@example.com"),
            "no email in the audit: {text}"
        );
        assert!(
            !text.contains("wrong password"),
            "no password in the audit: {text}"
        );
        assert!(f["actor_id"].is_null());
        // a failure naming no user of the project is the caller's claim: no caller-chosen
        // request id is stored with it (see login_limits.rs)
        if f["metadata"]["reason"] == "unknown_user" {
            assert!(f["request_id"].is_null(), "{f}");
        } else {
            assert!(f["request_id"].is_string(), "{f}");
        }
    }
}

#[tokio::test]
async fn an_email_in_several_projects_logs_into_its_most_recently_active_account_unless_named() {
    let app = TestApp::spawn().await;
    let other = app.env.other_project("other").await;
    let here = app
        .active_user(app.project_id(), "both@example.com", "member")
        .await;
    let there = app.active_user(other, "both@example.com", "admin").await;
    let credentials = json!({"email": "both@example.com", "password": PASSWORD});
    let seen = |user: Uuid, ago_secs: i64| {
        let pool = app.env.pool.clone();
        async move {
            sqlx::query("UPDATE users SET last_seen_at = now() - make_interval(secs => $2) WHERE user_id = $1")
                .bind(user)
                .bind(ago_secs as f64)
                .execute(&pool)
                .await
                .expect("update last_seen_at");
        }
    };
    let app = &app;
    let logged_into = |body: Value| async move {
        let ok = json_with_status(app.login(&body).await, StatusCode::OK).await;
        ok["data"]["user"]["id"].as_str().expect("an id").to_owned()
    };

    // one Argon2 verification per attempt: the most recently active account is the one tried
    seen(there, 10).await;
    assert_eq!(logged_into(credentials.clone()).await, there.to_string());
    seen(here, 5).await;
    assert_eq!(logged_into(credentials.clone()).await, here.to_string());

    // `projectId` names the other one
    for (project, user) in [(app.project_id(), here), (other, there)] {
        let mut body = credentials.clone();
        body["projectId"] = json!(project);
        assert_eq!(logged_into(body).await, user.to_string());
    }

    // a wrong password is the one 401, whoever has the email
    let wrong = json!({"email": "both@example.com", "password": "not the password"});
    assert_error(
        app.login(&wrong).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn logout_revokes_the_token_at_once() {
    let app = TestApp::spawn().await;
    let user = app
        .active_user(app.project_id(), "ada@example.com", "member")
        .await;
    let token = app.token_of("ada@example.com").await;
    let other_session = app.token_of("ada@example.com").await;

    let resp = app.logout(&token).await;

    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.me(&token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let again = app.logout(&token).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // the user's other session is untouched
    json_with_status(app.me(&other_session).await, StatusCode::OK).await;
    let sessions = shared::sessions::Sessions::new(&app.env.queues)
        .of_user(user)
        .await
        .expect("redis");
    assert_eq!(sessions.len(), 1);
}

#[tokio::test]
async fn me_is_403_user_token_required_for_a_service_token() {
    let app = TestApp::spawn().await;

    let resp = app.me(&app.token(&["jobs:read"])).await;

    assert_error(resp, StatusCode::FORBIDDEN, "user_token_required").await;
    assert_error(
        app.me("nope").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn deactivation_refuses_the_old_token_at_once_on_every_api_instance_and_refuses_login() {
    let mut app = TestApp::spawn().await;
    let other_instance = app.second_instance().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "leaver@example.com", "admin")
        .await;
    let token = app.token_of("leaver@example.com").await;
    json_with_status(other_instance.me(&token).await, StatusCode::OK).await;

    let resp = app.deactivate(&boss, &user.to_string()).await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "DEACTIVATED");
    for instance in [&app, &other_instance] {
        assert_error(
            instance.me(&token).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        let write = send(instance.authed(
            Method::POST,
            &format!("/api/v1/users/{user}/deactivate"),
            &token,
        ))
        .await;
        assert_error(write, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let refused = other_instance
        .login(&json!({"email": "leaver@example.com", "password": PASSWORD}))
        .await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let jobs = app.outbox().await;
    let revoke: Vec<_> = jobs
        .iter()
        .filter(|j| j.queue == "revoke_sessions")
        .collect();
    assert_eq!(revoke.len(), 1, "{jobs:?}");
    assert_eq!(revoke[0].payload["reason"], "deactivated");
    assert_eq!(revoke[0].payload["userId"], user.to_string());
    assert!(revoke[0].payload["revokedBeforeMs"].as_i64().is_some());
    // the admin's own token is untouched
    json_with_status(other_instance.me(&boss).await, StatusCode::OK).await;
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.kinds(), ["revoke_sessions"]);
}

#[tokio::test]
async fn deactivation_is_idempotent_and_not_for_yourself() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "leaver@example.com", "member")
        .await;

    let own = app.deactivate(&boss, &boss_id.to_string()).await;
    let error = assert_error(own, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("yourself"),
        "{error}"
    );
    json_with_status(app.me(&boss).await, StatusCode::OK).await;

    json_with_status(
        app.deactivate(&boss, &user.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let again = json_with_status(
        app.deactivate(&boss, &user.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["data"]["status"], "DEACTIVATED");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'user.deactivated'")
            .fetch_one(&app.env.pool)
            .await
            .expect("count");
    assert_eq!(audited, 1, "the second call changed nothing");
    let unknown = app.deactivate(&boss, &Uuid::new_v4().to_string()).await;
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let malformed = app.deactivate(&boss, "nope").await;
    assert_error(malformed, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn deactivating_an_invited_user_deletes_its_invitation() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&boss, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let invitation_token = app.last_invitation_token(&user).await;

    json_with_status(app.deactivate(&boss, &user).await, StatusCode::OK).await;

    assert_error(
        app.accept(&invitation_token, PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|j| j.queue != "revoke_sessions")
    );
    assert!(
        !app.has_revocation_marker(Uuid::parse_str(&user).expect("uuid"))
            .await
    );
}

#[tokio::test]
async fn when_redis_cannot_take_the_revocation_the_deactivation_is_rolled_back_with_503() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "leaver@example.com", "member")
        .await;
    // the same database, but a Redis that does not answer
    let mut settings = app.env.settings.clone();
    settings.redis.url = "redis://127.0.0.1:1".to_owned().into();
    let down = TestApp::serve(app.env.share(settings.clone()), settings).await;

    let resp = down.deactivate(&boss, &user.to_string()).await;

    assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
    let status: String = sqlx::query_scalar("SELECT status FROM users WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.env.pool)
        .await
        .expect("the user");
    assert_eq!(status, "ACTIVE");
    assert!(app.outbox().await.is_empty(), "no job without the change");
}

#[tokio::test]
async fn logins_past_the_per_email_limit_get_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.auth.login_per_email = RateLimit {
            count: 3,
            window: Duration::from_secs(300),
        };
    })
    .await;
    app.active_user(app.project_id(), "ada@example.com", "member")
        .await;
    let wrong = json!({"email": "ada@example.com", "password": "not the password"});
    for _ in 0..3 {
        assert_error(
            app.login(&wrong).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }

    // even the right password, and whatever the case of the address
    let resp = app
        .login(&json!({"email": "ADA@example.com", "password": PASSWORD}))
        .await;

    let retry_after: u64 = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // other addresses are not limited by it
    let other = app
        .login(&json!({"email": "bob@example.com", "password": PASSWORD}))
        .await;
    assert_error(other, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// An API allowing 2 logins per client IP a minute, believing `X-Forwarded-For` from
/// `trusted_proxies`, with the active user `ada@example.com`.
async fn two_logins_per_ip(trusted_proxies: &[&str]) -> TestApp {
    let app = TestApp::spawn_with(|s| {
        s.auth.login_per_ip = RateLimit {
            count: 2,
            window: Duration::from_secs(60),
        };
        s.http.trusted_proxies = trusted_proxies
            .iter()
            .map(|p| p.parse().expect("cidr"))
            .collect();
    })
    .await;
    app.active_user(app.project_id(), "ada@example.com", "member")
        .await;
    app
}

#[tokio::test]
async fn logins_past_the_per_ip_limit_get_429() {
    let app = two_logins_per_ip(&[]).await;
    app.token_of("ada@example.com").await;
    let wrong = app
        .login(&json!({"email": "x@example.com", "password": "whatever"}))
        .await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let resp = app
        .login(&json!({"email": "y@example.com", "password": "whatever"}))
        .await;

    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// A failed login (a wrong password for `ada@example.com`) from `forwarded` (as
/// `X-Forwarded-For`); returns the status.
async fn login_from(app: &TestApp, forwarded: &str) -> StatusCode {
    let resp = send(
        app.request(Method::POST, "/api/v1/auth/login")
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": "ada@example.com", "password": "wrong password"})),
    )
    .await;
    resp.status()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_per_ip_limit_counts_the_forwarded_client() {
    let app = two_logins_per_ip(&["127.0.0.0/8"]).await;
    // one client, whatever it writes left of what the proxy appended
    for forged in ["198.51.100.1", "6.6.6.6, 198.51.100.1"] {
        assert_eq!(login_from(&app, forged).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_from(&app, "7.7.7.7, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // another client behind the same proxy has its own budget
    assert_eq!(
        login_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );
    let ips: Vec<Value> = login_failures(&app)
        .await
        .iter()
        .map(|a| a["metadata"]["ip"].clone())
        .collect();
    assert_eq!(ips, ["198.51.100.1", "198.51.100.1", "198.51.100.2"]);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_cannot_dodge_the_per_ip_limit() {
    let app = two_logins_per_ip(&[]).await;
    for forwarded in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_from(&app, forwarded).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_from(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let ips: Vec<Value> = login_failures(&app)
        .await
        .iter()
        .map(|a| a["metadata"]["ip"].clone())
        .collect();
    assert_eq!(ips, ["127.0.0.1", "127.0.0.1"]);
}

/// What Redis Cluster hashes of a key: the text inside its first `{…}` when not empty, else the
/// whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|s| {
            let rest = &key[s + 1..];
            rest.find('}').filter(|e| *e > 0).map(|e| &rest[..e])
        })
        .unwrap_or(key)
}

#[tokio::test]
async fn a_users_session_keys_share_one_cluster_slot_and_untagged_ones_from_before_still_count() {
    use redis::AsyncCommands;
    use shared::{
        auth::Claims,
        sessions::{Sessions, Verdict},
    };
    let app = TestApp::spawn().await;
    let sessions = Sessions::new(&app.env.queues);
    let user = Uuid::now_v7();
    let claims = || Claims::new(&user.to_string(), app.project_id(), vec![], 600);
    let (kept, revoked) = (claims(), claims());
    for c in [&kept, &revoked] {
        sessions
            .create(c, user, "test", "127.0.0.1")
            .await
            .expect("session");
    }
    sessions
        .revoke_jti(Some(user), revoked.jti, revoked.exp)
        .await
        .expect("revoke");
    let auth = format!("{}:auth:", app.env.settings.redis.prefix);
    let mut conn = app.env.queues.connection();
    let keys: Vec<String> = conn.keys(format!("{auth}*")).await.expect("keys");
    let mine: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains(&user.to_string()))
        .collect();
    // the record, the set and the marker: what a login and a revocation write in one MULTI
    let kinds: Vec<&str> = mine
        .iter()
        .map(|k| k.trim_start_matches(&auth).split(':').next().unwrap_or(""))
        .collect();
    for kind in ["session", "user-sessions", "revoked-jti"] {
        assert!(kinds.contains(&kind), "no {kind} key in {mine:?}");
    }
    let tag = format!("u:{user}");
    for key in &mine {
        assert_eq!(hash_tag(key), tag, "{key} is not on the user's slot");
    }
    assert_eq!(sessions.check(&revoked).await.unwrap(), Verdict::Revoked);
    assert_eq!(sessions.check(&kept).await.unwrap(), Verdict::Valid);
    // API processes of the previous release read the untagged marker only: it is written too
    // (a rolling upgrade runs both)
    let legacy_marker: bool = conn
        .exists(format!("{auth}revoked-jti:{}", revoked.jti))
        .await
        .expect("exists");
    assert!(
        legacy_marker,
        "the untagged marker for the previous release"
    );

    // keys written before the tags (untagged): a revocation still refuses its token, a session
    // is still listed, and revoking it cleans it up
    let (old_revoked, old_session) = (claims(), claims());
    let _: () = conn
        .set_ex(format!("{auth}revoked-jti:{}", old_revoked.jti), 1, 600)
        .await
        .expect("set");
    assert_eq!(
        sessions.check(&old_revoked).await.unwrap(),
        Verdict::Revoked
    );
    let record = format!("{auth}session:{}", old_session.jti);
    let set = format!("{auth}user-sessions:{user}");
    let _: () = conn
        .hset_multiple(
            &record,
            &[
                ("user", user.to_string()),
                ("expires", old_session.exp.to_string()),
                ("issued", old_session.iat.to_string()),
            ],
        )
        .await
        .expect("hset");
    let _: () = conn
        .sadd(&set, old_session.jti.to_string())
        .await
        .expect("sadd");
    let listed: Vec<Uuid> = sessions
        .of_user(user)
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| s.jti)
        .collect();
    assert!(
        listed.contains(&old_session.jti) && listed.contains(&kept.jti),
        "{listed:?}"
    );
    sessions
        .revoke_jti(Some(user), old_session.jti, old_session.exp)
        .await
        .expect("revoke");
    assert_eq!(
        sessions.check(&old_session).await.unwrap(),
        Verdict::Revoked
    );
    let left: bool = conn.exists(&record).await.expect("exists");
    assert!(!left, "the untagged record is deleted");
    let members: Vec<String> = conn.smembers(&set).await.expect("smembers");
    assert!(members.is_empty(), "{members:?}");
}
