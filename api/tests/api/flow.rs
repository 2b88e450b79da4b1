//! The user-management panel end to end, every part real: the API, the worker running
//! `send_invitation` and `revoke_sessions`, an SMTP server on loopback, a second API instance.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shared::testing::smtp::SmtpServer;

use crate::helpers::{TestApp, assert_error, json_with_status};

const BASE_URL: &str = "https://dash.example.test";

#[tokio::test]
async fn an_invited_teammate_gets_a_working_email_link_logs_in_and_is_locked_out_by_deactivation() {
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let mut app = TestApp::spawn_with(|s| {
        s.email.smtp_url = Some(smtp_url.clone().into());
        s.users.app_base_url = BASE_URL.into();
    })
    .await;
    app.start_worker().await;
    let other_instance = app.second_instance().await;
    let (_, boss) = app.admin("boss@example.com").await;

    // invite → the email arrives over SMTP
    let invited = app.invite_member(&boss, "new.hire@example.com").await;
    let user_id = invited["user"]["id"].as_str().expect("user id").to_owned();
    let job_id = invited["jobId"].as_str().expect("job id").to_owned();
    let mail = smtp.wait_for(1, Duration::from_secs(30)).await[0].clone();
    assert_eq!(mail.to, vec!["new.hire@example.com".to_owned()]);
    let parsed = mail.parse();
    let prefix = format!("{BASE_URL}/invitations/accept?token=");
    let start = parsed
        .text
        .find(&prefix)
        .expect("the text part has the accept link")
        + prefix.len();
    let token: String = parsed.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "a 32-byte base64url token: {token}");
    assert!(
        parsed.html.contains(&token),
        "the HTML part links the same token"
    );
    app.wait_for_state(&job_id, "completed").await;

    // the link works once
    let accepted = app.accept(&token, "a long enough password").await;
    let body = json_with_status(accepted, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "ACTIVE");
    assert_error(
        app.accept(&token, "a long enough password").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // log in, use the token on both instances
    let creds = json!({"email": "new.hire@example.com", "password": "a long enough password"});
    let logged_in = json_with_status(app.login(&creds).await, StatusCode::OK).await;
    let access = logged_in["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    for instance in [&app, &other_instance] {
        let me_body = json_with_status(instance.me(&access).await, StatusCode::OK).await;
        assert_eq!(me_body["data"]["id"], user_id.as_str());
    }

    // deactivate → the old token is refused at once by both instances, login is refused
    json_with_status(app.deactivate(&boss, &user_id).await, StatusCode::OK).await;
    for instance in [&other_instance, &app] {
        assert_error(
            instance.me(&access).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    assert_error(
        other_instance.login(&creds).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // the revocation job runs and the audit log tells the story, each with its request id
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.kinds(), ["revoke_sessions", "send_invitation"]);
    let audit = app.audit_logs(&boss, "?perPage=100").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for expected in [
        "invitation.created",
        "invitation.sent",
        "invitation.accepted",
        "user.deactivated",
        "sessions.revoked",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(
        audit["data"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["requestId"].is_string()),
        "every entry carries a request id"
    );
}
