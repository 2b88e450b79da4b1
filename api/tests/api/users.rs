//! Users: invitations (create, resend, accept, expiry, one use), domain restrictions, rate
//! limits, the transactional outbox, listing and export, role changes, tenant isolation and
//! activity tracking.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use shared::{config::RateLimit, testing::eventually};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, assert_error, json_with_status, member_permissions, random_id,
    request_id_of, send, time,
};

async fn user_count(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&app.env.pool)
        .await
        .expect("count")
}

// ---------------------------------------------------------------------------------------------
// Invite
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_invitation_creates_an_invited_user_an_invitation_and_one_send_job() {
    let mut app = TestApp::spawn().await;
    let (admin_id, token) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;

    let resp = app.invite(&token,
        &json!({"email": "  New.Person@Example.ORG ", "name": "New Person", "roleIds": [member]}),
    )
    .await;

    let request_id = request_id_of(&resp);
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    let data = &body["data"];
    let job_id = data["jobId"].as_str().expect("a job id");
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/jobs/{job_id}").as_str())
    );
    let user = &data["user"];
    assert_eq!(user["email"], "new.person@example.org");
    assert_eq!(user["name"], "New Person");
    assert_eq!(user["status"], "INVITED");
    assert_eq!(user["roles"], json!([{"id": member, "name": "member"}]));
    let expires = time(&data["invitation"]["expiresAt"]);
    let expected = Utc::now() + chrono::Duration::days(30);
    assert!((expires - expected).num_seconds().abs() < 60, "{expires}");
    // one job, in the outbox, carrying ids, the sealed token and the request id
    let jobs = app.outbox().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.id.to_string(), job_id);
    assert_eq!(job.queue, "send_invitation");
    assert_eq!(job.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(job.payload["projectId"], app.project_id().to_string());
    assert_eq!(job.payload["userId"], user["id"]);
    assert_eq!(job.payload["invitationId"], data["invitation"]["id"]);
    assert_eq!(job.payload["inviterId"], admin_id.to_string());
    assert_eq!(job.payload["resent"], false);
    // Postgres keeps only the token's hash; the response never shows the token
    let raw = app.token_in(job);
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM user_invitations")
        .fetch_one(&app.env.pool)
        .await
        .expect("one invitation");
    assert_eq!(stored, shared::secrets::token_hash(&raw));
    assert!(!text.contains(&raw), "the raw token is not in the response");
    let audit: String = sqlx::query_scalar(
        "SELECT metadata::text FROM audit_log WHERE action = 'invitation.created'",
    )
    .fetch_one(&app.env.pool)
    .await
    .expect("an invitation.created entry");
    assert!(!audit.contains(&raw) && !audit.contains(&stored), "{audit}");
    // the job can be followed while it waits in the outbox, and runs once relayed
    let status = app.job(job_id).await;
    assert_eq!(status["kind"], "send_invitation");
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.kinds(), ["send_invitation"]);
    assert_eq!(app.job(job_id).await["state"], "completed");
}

#[tokio::test]
async fn invitations_are_refused_to_addresses_outside_the_allowed_domains() {
    let app = TestApp::spawn_with(|s| {
        s.users.allowed_invite_domains = vec!["example.com".into(), "corp.example".into()];
    })
    .await;
    let (_, token) = app.admin("boss@example.com").await;

    let outside = app.invite(&token,
        &json!({"email": "someone@gmail.com", "roleIds": [app.role_id(app.project_id(), "member").await]}),
    )
    .await;
    let error = assert_error(
        outside,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("example.com"),
        "the message names the allowed domains: {error}"
    );
    // a subdomain is another domain
    let member = app.role_id(app.project_id(), "member").await;
    let sub = app
        .invite(
            &token,
            &json!({"email": "a@eu.example.com", "roleIds": [member]}),
        )
        .await;
    assert_error(sub, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    app.invite_member(&token, "colleague@CORP.example").await;
    assert_eq!(user_count(&app, "someone@gmail.com").await, 0);
}

#[tokio::test]
async fn an_inviter_outside_the_allowed_domains_cannot_invite() {
    let app =
        TestApp::spawn_with(|s| s.users.allowed_invite_domains = vec!["example.com".into()]).await;
    let (_, token) = app.admin("contractor@elsewhere.net").await;
    let member = app.role_id(app.project_id(), "member").await;

    let resp = app
        .invite(
            &token,
            &json!({"email": "new@example.com", "roleIds": [member]}),
        )
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("yours"),
        "the message says the inviter's own address is at fault: {error}"
    );
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn without_allowed_domains_any_domain_can_invite_and_be_invited() {
    let app = TestApp::spawn().await;
    assert!(app.env.settings.users.allowed_invite_domains.is_empty());
    let (_, token) = app.admin("boss@first.example").await;

    app.invite_member(&token, "friend@second.example").await;
    app.invite_member(&token, "other@third.example").await;

    assert_eq!(app.outbox().await.len(), 2);
}

#[tokio::test]
async fn inviting_an_email_that_is_already_a_user_returns_409() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    app.invite_member(&token, "dup@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;

    let again = app
        .invite(
            &token,
            &json!({"email": "DUP@example.com", "roleIds": [member]}),
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "conflict").await;
    // an existing active user too
    let boss = app
        .invite(
            &token,
            &json!({"email": "boss@example.com", "roleIds": [member]}),
        )
        .await;
    assert_error(boss, StatusCode::CONFLICT, "conflict").await;

    assert_eq!(
        app.outbox().await.len(),
        1,
        "the refused invitations queued nothing"
    );
}

#[tokio::test]
async fn a_failure_inside_the_invitation_transaction_leaves_no_user_and_no_job() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let unknown = Uuid::new_v4();

    let resp = app
        .invite(
            &token,
            &json!({"email": "ghost@example.com", "roleIds": [member, unknown]}),
        )
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&unknown.to_string()),
        "the unknown role is named: {error}"
    );
    assert_eq!(error["details"][0]["field"], "roleIds", "{error}");
    assert_eq!(
        user_count(&app, "ghost@example.com").await,
        0,
        "the user was rolled back"
    );
    assert!(app.outbox().await.is_empty(), "the job was rolled back");
    let invitations: i64 = sqlx::query_scalar("SELECT count(*) FROM user_invitations")
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(invitations, 0);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'invitation.created'")
            .fetch_one(&app.env.pool)
            .await
            .expect("count");
    assert_eq!(audited, 0);
}

#[tokio::test]
async fn invalid_invitations_get_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let other = app.env.other_project("other").await;
    let foreign_role = app.role_id(other, "member").await;
    let long = format!("{}@example.com", "a".repeat(250));

    for (body, field) in [
        (
            json!({"email": "not-an-email", "roleIds": [member]}),
            "email",
        ),
        (
            json!({"email": "Name <a@example.com>", "roleIds": [member]}),
            "email",
        ),
        (json!({"email": long, "roleIds": [member]}), "email"),
        (json!({"email": "a@example.com", "roleIds": []}), "roleIds"),
        (
            json!({"email": "a@example.com", "roleIds": [foreign_role]}),
            "roleIds",
        ),
        (
            json!({"email": "a@example.com", "name": "x\u{7}", "roleIds": [member]}),
            "name",
        ),
    ] {
        let resp = app.invite(&token, &body).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            error["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["field"] == field)),
            "{body}: the error names {field}: {error}"
        );
    }
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn a_service_token_cannot_invite_because_an_invitation_names_its_inviter() {
    let app = TestApp::spawn().await;
    let member = app.role_id(app.project_id(), "member").await;

    let resp = app
        .invite(
            &app.token(&["user:create"]),
            &json!({"email": "a@example.com", "roleIds": [member]}),
        )
        .await;

    let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(error["message"], "invitations must be sent by a user");
}

#[tokio::test]
async fn invitations_past_the_per_inviter_limit_get_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.users.invite_per_user = RateLimit {
            count: 2,
            window: Duration::from_secs(3600),
        };
    })
    .await;
    let (_, token) = app.admin("boss@example.com").await;
    let (_, other) = app.admin("deputy@example.com").await;
    app.invite_member(&token, "one@example.com").await;
    app.invite_member(&token, "two@example.com").await;

    let member = app.role_id(app.project_id(), "member").await;
    let third = app
        .invite(
            &token,
            &json!({"email": "three@example.com", "roleIds": [member]}),
        )
        .await;

    let retry_after: u64 = third
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // another inviter has its own budget
    app.invite_member(&other, "three@example.com").await;
}

#[tokio::test]
async fn invitations_and_resends_past_the_per_project_limit_get_429() {
    let app = TestApp::spawn_with(|s| {
        s.users.invite_per_project = RateLimit {
            count: 2,
            window: Duration::from_secs(600),
        };
    })
    .await;
    let (_, first) = app.admin("boss@example.com").await;
    let (_, second) = app.admin("deputy@example.com").await;
    let invited = app.invite_member(&first, "one@example.com").await;
    app.invite_member(&second, "two@example.com").await;

    let resp = app
        .resend_invitation(&second, invited["user"]["id"].as_str().expect("id"))
        .await;

    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(app.outbox().await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Resend and accept
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_resend_keeps_the_expiry_and_only_the_new_token_works() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&token, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let old_token = app.last_invitation_token(&user).await;

    let resp = app.resend_invitation(&token, &user).await;

    let location = resp.headers().get(header::LOCATION).cloned();
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let data = &body["data"];
    assert_eq!(
        location.and_then(|l| l.to_str().ok().map(str::to_owned)),
        Some(format!(
            "/api/v1/jobs/{}",
            data["jobId"].as_str().expect("job id")
        ))
    );
    assert_eq!(data["invitation"]["id"], invited["invitation"]["id"]);
    assert_eq!(
        time(&data["invitation"]["expiresAt"]),
        time(&invited["invitation"]["expiresAt"]),
        "the expiry is not extended"
    );
    let jobs = app.outbox().await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].payload["resent"], true);
    assert_eq!(
        jobs[1].id.to_string(),
        data["jobId"].as_str().expect("job id")
    );
    let new_token = app.token_in(&jobs[1]);
    assert_ne!(new_token, old_token);

    assert_error(
        app.accept(&old_token, PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let accepted = json_with_status(app.accept(&new_token, PASSWORD).await, StatusCode::OK).await;
    assert_eq!(accepted["data"]["status"], "ACTIVE");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'invitation.resend_requested' AND target_id = $1",
    )
    .bind(&user)
    .fetch_one(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn only_invited_users_can_be_sent_their_invitation_again() {
    let app = TestApp::spawn().await;
    let (boss, token) = app.admin("boss@example.com").await;

    let resp = app.resend_invitation(&token, &boss.to_string()).await;
    assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    let resp = app.resend_invitation(&token, &random_id()).await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn an_accepted_invitation_lets_the_user_log_in_and_cannot_be_used_again() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&token, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let invitation_token = app.last_invitation_token(&user).await;

    let resp = app
        .accept_invitation(&json!({
            "token": invitation_token, "password": PASSWORD, "name": "Ada Lovelace"
        }))
        .await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["id"], user.as_str());
    assert_eq!(body["data"]["status"], "ACTIVE");
    assert_eq!(body["data"]["name"], "Ada Lovelace");
    let new_token = app.token_of("new@example.com").await;
    let me = json_with_status(app.me(&new_token).await, StatusCode::OK).await;
    assert_eq!(me["data"]["email"], "new@example.com");
    assert_eq!(me["data"]["roles"][0]["name"], "member");
    assert_eq!(me["data"]["permissions"], json!(member_permissions()));
    // one use only
    let again = app.accept(&invitation_token, PASSWORD).await;
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'invitation.accepted' AND target_id = $1",
    )
    .bind(&user)
    .fetch_one(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn an_expired_invitation_returns_410_and_activates_nobody() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&token, "late@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let invitation_token = app.last_invitation_token(&user).await;
    sqlx::query("UPDATE user_invitations SET expires_at = now() - interval '1 minute'")
        .execute(&app.env.pool)
        .await
        .expect("expire it");

    let resp = app.accept(&invitation_token, PASSWORD).await;

    assert_error(resp, StatusCode::GONE, "gone").await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM users WHERE email = 'late@example.com'")
            .fetch_one(&app.env.pool)
            .await
            .expect("the user");
    assert_eq!(status, "INVITED");
    // resending it issues a new invitation, with a new expiry; the old link stays dead
    let resent = json_with_status(
        app.resend_invitation(&token, &user).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let invitation = &resent["data"]["invitation"];
    assert_ne!(invitation["id"], invited["invitation"]["id"], "{resent}");
    let expires: DateTime<Utc> =
        serde_json::from_value(invitation["expiresAt"].clone()).expect("expiresAt");
    assert!(
        expires > Utc::now() + chrono::Duration::days(29),
        "{resent}"
    );
    let old = app.accept(&invitation_token, PASSWORD).await;
    assert_error(old, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn accepting_with_a_bad_password_or_token_is_refused() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&token, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let invitation_token = app.last_invitation_token(&user).await;

    for password in ["short", &"x".repeat(129)] {
        let resp = app.accept(&invitation_token, password).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            error["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["field"] == "password")),
            "{error}"
        );
    }
    let unknown = app.accept(&shared::secrets::new_token(), PASSWORD).await;
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    // still usable after the refusals (128 characters is the most; one character repeated
    // would be refused by the policy)
    let ok = app.accept(&invitation_token, &"pq".repeat(64)).await;
    json_with_status(ok, StatusCode::OK).await;
}

// ---------------------------------------------------------------------------------------------
// List and export
// ---------------------------------------------------------------------------------------------

fn emails(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u["email"].as_str().expect("email").to_owned())
        .collect()
}

#[tokio::test]
async fn the_user_list_is_paginated_filtered_and_counts_active_users() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    app.active_user(app.project_id(), "member.one@example.com", "member")
        .await;
    let invited = app.invite_member(&token, "invitee@example.com").await;
    let gone = app
        .active_user(app.project_id(), "gone@example.com", "member")
        .await;
    json_with_status(
        app.deactivate(&token, &gone.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let other = app.env.other_project("other").await;
    app.active_user(other, "stranger@example.com", "admin")
        .await;

    let all = app.users(&token, "").await;
    assert_eq!(
        emails(&all),
        [
            "boss@example.com",
            "member.one@example.com",
            "invitee@example.com",
            "gone@example.com"
        ]
    );
    assert_eq!(all["meta"]["totalActive"], 2);
    assert_eq!(all["meta"]["pagination"]["total"], 4);
    let first = &all["data"][0];
    for field in [
        "id",
        "email",
        "name",
        "status",
        "roles",
        "lastSeenAt",
        "createdAt",
    ] {
        assert!(first.get(field).is_some(), "a user has {field}: {first}");
    }

    let page = app.users(&token, "?page=2&perPage=3").await;
    assert_eq!(emails(&page), ["gone@example.com"]);
    assert_eq!(page["meta"]["pagination"]["hasPrev"], true);
    assert_eq!(page["meta"]["pagination"]["hasNext"], false);
    assert_eq!(page["meta"]["totalActive"], 2);

    let invited_only = app.users(&token, "?status=invited").await;
    assert_eq!(emails(&invited_only), ["invitee@example.com"]);
    assert_eq!(invited_only["data"][0]["id"], invited["user"]["id"]);
    let admins = app.role_id(app.project_id(), "admin").await;
    assert_eq!(
        emails(&app.users(&token, &format!("?role={admins}")).await),
        ["boss@example.com"]
    );
    assert_eq!(
        emails(&app.users(&token, "?search=MEMBER.O").await),
        ["member.one@example.com"]
    );
    // `%` and `_` are literal in a search
    assert!(emails(&app.users(&token, "?search=%25").await).is_empty());
    assert_eq!(
        emails(&app.users(&token, "?status=ACTIVE&search=example").await),
        ["boss@example.com", "member.one@example.com"]
    );

    for query in ["?status=SLEEPING", "?role=admins", "?perPage=0", "?page=0"] {
        let resp = app.get_users(&token, query).await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let resp = app.get_users(&token, "?page=x").await;
    assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn walking_the_list_by_cursor_visits_every_user_once_in_the_order_of_the_pages() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    for i in 0..7 {
        app.active_user(app.project_id(), &format!("user{i}@example.com"), "member")
            .await;
    }
    app.active_user(
        app.env.other_project("other").await,
        "stranger@example.com",
        "admin",
    )
    .await;

    let mut by_page = Vec::new();
    for page in 1..=3 {
        by_page.extend(emails(
            &app.users(&token, &format!("?perPage=3&page={page}")).await,
        ));
    }
    assert_eq!(by_page.len(), 8);

    let first = app.users(&token, "?perPage=3").await;
    let mut walked = emails(&first);
    let mut cursor = first["meta"]["nextCursor"].as_str().map(str::to_owned);
    let mut pages = 1;
    while let Some(c) = cursor {
        let page = app.users(&token, &format!("?perPage=3&after={c}")).await;
        let meta = &page["meta"];
        assert_eq!(meta["pagination"]["total"], 8);
        assert_eq!(meta["pagination"]["hasPrev"], true);
        assert!(meta["pagination"].get("page").is_none(), "{meta}");
        assert_eq!(
            meta["pagination"]["hasNext"],
            meta["nextCursor"].is_string()
        );
        walked.extend(emails(&page));
        cursor = meta["nextCursor"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(walked, by_page);
    assert_eq!(pages, 3);

    // filters apply to cursor pages too
    let cursor = first["meta"]["nextCursor"].as_str().expect("a cursor");
    let members = app
        .users(&token, &format!("?perPage=50&after={cursor}&search=user"))
        .await;
    assert_eq!(emails(&members), by_page[3..].to_vec());

    for query in [
        format!("?after={cursor}&page=2"),
        "?after=not-a-cursor".to_owned(),
    ] {
        let resp = app.get_users(&token, &query).await;
        let body = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(body.to_string().contains("after"), "{body}");
    }
}

/// The project's users by status, counted row by row (what `user_counts` must agree with).
async fn counted(app: &TestApp, project: Uuid) -> [i64; 3] {
    let mut out = [0; 3];
    for (i, status) in ["INVITED", "ACTIVE", "DEACTIVATED"].iter().enumerate() {
        out[i] =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE project_id = $1 AND status = $2")
                .bind(project)
                .bind(status)
                .fetch_one(&app.env.pool)
                .await
                .expect("count");
    }
    out
}

/// The list's totals for each status filter and none, as the API answers them.
async fn listed_totals(app: &TestApp, token: &str) -> ([i64; 3], i64, i64) {
    let mut by_status = [0; 3];
    for (i, status) in ["INVITED", "ACTIVE", "DEACTIVATED"].iter().enumerate() {
        let body = app
            .users(token, &format!("?status={status}&perPage=1"))
            .await;
        by_status[i] = body["meta"]["pagination"]["total"].as_i64().expect("total");
    }
    let all = app.users(token, "?perPage=1").await;
    (
        by_status,
        all["meta"]["pagination"]["total"].as_i64().expect("total"),
        all["meta"]["totalActive"].as_i64().expect("totalActive"),
    )
}

#[tokio::test]
async fn the_list_totals_stay_exact_through_concurrent_invites_status_changes_and_deletes() {
    let app = TestApp::spawn_with(|s| {
        let plenty = RateLimit {
            count: 1000,
            window: Duration::from_secs(60),
        };
        s.users.invite_per_user = plenty;
        s.users.invite_per_project = plenty;
    })
    .await;
    let project = app.project_id();
    let (_, token) = app.admin("boss@example.com").await;
    let other = app.env.other_project("other").await;
    app.active_user(other, "stranger@example.com", "admin")
        .await;

    // 24 invitations at once through the API (concurrent transactions on the counters)
    let invites = (0..24).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            app.invite_member(token, &format!("invitee{i}@example.com"))
                .await
        }
    });
    let invited: Vec<Value> = futures::future::join_all(invites).await;
    // deactivations through the API, and bulk writes in SQL: an insert of many rows, a status
    // change of many rows, updates that change no status, deletes
    for user in &invited[..3] {
        let id = user["user"]["id"].as_str().expect("id");
        json_with_status(app.deactivate(&token, id).await, StatusCode::OK).await;
    }
    let pool = &app.env.pool;
    let writes = [
        "INSERT INTO users (user_id, project_id, email, status)
         SELECT gen_random_uuid(), $1, 'bulk' || g || '@example.com',
                CASE WHEN g % 3 = 0 THEN 'ACTIVE' ELSE 'INVITED' END
         FROM generate_series(1, 300) g",
        "UPDATE users SET status = 'ACTIVE' WHERE project_id = $1 AND email LIKE 'bulk1%' AND status = 'INVITED'",
        "UPDATE users SET name = 'Renamed', last_seen_at = now() WHERE project_id = $1",
        "DELETE FROM users WHERE project_id = $1 AND email LIKE 'bulk2%'",
    ];
    let runs = writes.iter().map(|sql| async move {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .bind(project)
            .execute(pool)
            .await
            .expect("write")
    });
    futures::future::join_all(runs).await;
    // a rolled-back write changes no count
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("UPDATE users SET status = 'DEACTIVATED' WHERE project_id = $1")
        .bind(project)
        .execute(&mut *tx)
        .await
        .expect("update");
    tx.rollback().await.expect("rollback");
    // deleting another project (its users go by cascade) leaves this one's counts alone
    sqlx::query("DELETE FROM projects WHERE project_id = $1")
        .bind(other)
        .execute(pool)
        .await
        .expect("delete the other project");

    let expected = counted(&app, project).await;
    assert!(
        expected.iter().all(|n| *n > 0),
        "every status is represented: {expected:?}"
    );
    let (by_status, total, active) = listed_totals(&app, &token).await;
    assert_eq!(by_status, expected);
    assert_eq!(total, expected.iter().sum::<i64>());
    assert_eq!(active, expected[1]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM user_counts WHERE project_id = $1")
        .bind(other)
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "a deleted project's counters go with it");
}

#[tokio::test]
async fn the_csv_export_has_a_header_and_one_row_per_matching_user() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    app.invite_member(&token, "invitee@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    // a name a spreadsheet would run as a formula
    let resp = app.invite(&token,
        &json!({"email": "sneaky@example.com", "name": "=HYPERLINK(\"x\")", "roleIds": [member]}),
    )
    .await;
    json_with_status(resp, StatusCode::ACCEPTED).await;
    let other = app.env.other_project("other").await;
    app.active_user(other, "stranger@example.com", "admin")
        .await;

    let resp = app.export_users(&token, "").await;

    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let disposition = resp.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let text = resp.text().await.expect("a body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,email,name,status,roles,lastSeenAt,createdAt");
    assert_eq!(lines.len(), 4, "a header and three users: {text}");
    assert!(
        lines[1].contains("boss@example.com") && lines[1].contains(",ACTIVE,admin,"),
        "{text}"
    );
    assert!(
        lines[2].contains("invitee@example.com") && lines[2].contains(",INVITED,member,"),
        "{text}"
    );
    assert!(
        lines[3].contains(",\"'=HYPERLINK(\"\"x\"\")\","),
        "a formula is defused: {text}"
    );
    assert!(
        !text.contains("stranger"),
        "other projects' users are not exported"
    );

    let filtered = app.export_users(&token, "?status=ACTIVE").await;
    let text = filtered.text().await.expect("a body");
    assert_eq!(text.lines().count(), 2, "{text}");
    let none = app.export_users(&token, "?search=nobody").await;
    assert_eq!(none.status(), StatusCode::OK);
    let text = none.text().await.expect("a body");
    assert_eq!(
        text, "id,email,name,status,roles,lastSeenAt,createdAt\n",
        "only the header"
    );
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_role_change_revokes_an_active_users_tokens_and_the_next_login_has_the_new_permissions() {
    let mut app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "member@example.com", "member")
        .await;
    let old = app.token_of("member@example.com").await;
    json_with_status(app.me(&old).await, StatusCode::OK).await;
    let (member, admin_role) = (
        app.role_id(app.project_id(), "member").await,
        app.role_id(app.project_id(), "admin").await,
    );

    let resp = app
        .change_role(&boss, &user.to_string(), member, admin_role)
        .await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(
        body["data"]["roles"],
        json!([{"id": admin_role, "name": "admin"}])
    );
    assert_error(app.me(&old).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let fresh = app.token_of("member@example.com").await;
    let me_now = json_with_status(app.me(&fresh).await, StatusCode::OK).await;
    let permissions = me_now["data"]["permissions"]
        .as_array()
        .expect("permissions")
        .clone();
    assert!(
        permissions.contains(&json!("user:deactivate")),
        "{permissions:?}"
    );
    // the clean-up job is queued with the reason, and the change is audited
    let jobs = app.outbox().await;
    let revoke: Vec<_> = jobs
        .iter()
        .filter(|j| j.queue == "revoke_sessions")
        .collect();
    assert_eq!(revoke.len(), 1, "{jobs:?}");
    assert_eq!(revoke[0].payload["reason"], "role_changed");
    assert_eq!(revoke[0].payload["userId"], user.to_string());
    let audited: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'role.changed' AND target_id = $1",
    )
    .bind(user.to_string())
    .fetch_one(&app.env.pool)
    .await
    .expect("a role.changed entry");
    assert_eq!(audited["fromRoleName"], "member");
    assert_eq!(audited["toRoleName"], "admin");
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.kinds(), ["revoke_sessions"]);
}

#[tokio::test]
async fn adding_and_removing_roles_of_an_active_user_revokes_each_time() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "member@example.com", "member")
        .await;
    let admin_role = app.role_id(app.project_id(), "admin").await;
    let first = app.token_of("member@example.com").await;

    let added = json_with_status(
        app.add_role(&boss, &user.to_string(), admin_role).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(added["data"]["roles"].as_array().map(Vec::len), Some(2));
    assert_error(
        app.me(&first).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    let second = app.token_of("member@example.com").await;
    let removed = app.remove_role(&boss, &user.to_string(), admin_role).await;
    let removed = json_with_status(removed, StatusCode::OK).await;
    assert_eq!(removed["data"]["roles"][0]["name"], "member");
    assert_error(
        app.me(&second).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // removing a role it does not hold any more
    let again = app.remove_role(&boss, &user.to_string(), admin_role).await;
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE target_id = $1 AND action LIKE 'role.%' ORDER BY at",
    )
    .bind(user.to_string())
    .fetch_all(&app.env.pool)
    .await
    .expect("audit");
    assert_eq!(actions, ["role.assigned", "role.removed"]);
}

#[tokio::test]
async fn a_role_change_of_an_invited_user_revokes_nothing() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&boss, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("id").to_owned();
    let admin_role = app.role_id(app.project_id(), "admin").await;

    let resp = app.add_role(&boss, &user, admin_role).await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "INVITED");
    assert_eq!(body["data"]["roles"].as_array().map(Vec::len), Some(2));
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
async fn roles_of_deactivated_users_and_unknown_roles_are_refused() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "member@example.com", "member")
        .await;
    let admin_role = app.role_id(app.project_id(), "admin").await;

    let unknown = app.add_role(&boss, &user.to_string(), Uuid::new_v4()).await;
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let bad_body = send(
        app.authed(Method::POST, &format!("/api/v1/users/{user}/roles"), &boss)
            .json(&json!({"roleId": "admin"})),
    )
    .await;
    assert_error(
        bad_body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    json_with_status(
        app.deactivate(&boss, &user.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let resp = app.add_role(&boss, &user.to_string(), admin_role).await;
    assert_error(resp, StatusCode::CONFLICT, "conflict").await;
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_of_another_project_are_invisible_and_untouchable() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let other = app.env.other_project("other").await;
    let stranger = app
        .active_user(other, "stranger@example.com", "member")
        .await;
    let stranger_token = app.token_of("stranger@example.com").await;
    let their_admin_role = app.role_id(other, "admin").await;
    let their_member_role = app.role_id(other, "member").await;
    let ours = app
        .active_user(app.project_id(), "ours@example.com", "member")
        .await;
    let s = stranger.to_string();

    assert!(!emails(&app.users(&boss, "").await).contains(&"stranger@example.com".to_owned()));
    let attempts = [
        (Method::POST, format!("/api/v1/users/{s}/deactivate"), None),
        (
            Method::POST,
            format!("/api/v1/users/{s}/resend-invitation"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{s}/roles"),
            Some(json!({"roleId": app.role_id(app.project_id(), "admin").await})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{s}/roles/{their_member_role}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{s}/roles/{their_member_role}"),
            Some(json!({"roleId": their_admin_role})),
        ),
        // and our user cannot be given their role
        (
            Method::POST,
            format!("/api/v1/users/{ours}/roles"),
            Some(json!({"roleId": their_admin_role})),
        ),
    ];
    for (method, path, body) in attempts {
        let mut req = app.authed(method.clone(), &path, &boss);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = send(req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    // nothing changed for the stranger: still active, its token still works
    json_with_status(app.me(&stranger_token).await, StatusCode::OK).await;
    assert!(app.outbox().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Activity
// ---------------------------------------------------------------------------------------------

async fn last_seen(app: &TestApp, user: Uuid) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT last_seen_at FROM users WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.env.pool)
        .await
        .expect("the user")
}

#[tokio::test]
async fn last_seen_is_set_by_an_authenticated_post_and_not_rewritten_within_five_minutes() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    // reads do not count
    json_with_status(app.me(&boss).await, StatusCode::OK).await;

    app.invite_member(&boss, "one@example.com").await;

    let seen = eventually(Duration::from_secs(5), "lastSeenAt to be set", || async {
        last_seen(&app, boss_id).await
    })
    .await;
    assert!((Utc::now() - seen).num_seconds().abs() < 30);
    let listed = app.users(&boss, "?search=boss").await;
    assert_eq!(time(&listed["data"][0]["lastSeenAt"]), seen);

    app.invite_member(&boss, "two@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        last_seen(&app, boss_id).await,
        Some(seen),
        "not rewritten within 5 minutes"
    );
}
