//! The invitation accept page (`GET`/`POST /invitations/accept`): what the emailed link opens.
//! In headless Chromium from a real email over SMTP, and over plain HTTP for its refusals
//! (unknown, expired, forged), its escaping and its headers.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::{Method, StatusCode, header};
use serde_json::json;
use shared::testing::smtp::SmtpServer;

use crate::helpers::{Browser, TestApp, json_with_status};

const NEW_PASSWORD: &str = "a much better passphrase";

/// Invites `email` (named `name`) as a member, as `boss`; returns the invitation token.
async fn invited(app: &TestApp, boss: &str, email: &str, name: &str) -> String {
    let member = app.role_id(app.project_id(), "member").await;
    let resp = app
        .invite(
            boss,
            &json!({"email": email, "name": name, "roleIds": [member]}),
        )
        .await;
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let user = body["data"]["user"]["id"]
        .as_str()
        .expect("user id")
        .to_owned();
    app.last_invitation_token(&user).await
}

/// `GET /invitations/accept?token=…`: (status, body, the nonce cookie it set if any).
async fn open(app: &TestApp, token: &str) -> (StatusCode, String, Option<String>) {
    let resp = app
        .request(Method::GET, &format!("/invitations/accept?token={token}"))
        .send()
        .await
        .expect("the API answers");
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    for (name, value) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(
            resp.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP")
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.text().await.expect("a page"), cookie)
}

/// The value of the hidden input `name` of a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in {page}"))
        + marker.len();
    page[start..].chars().take_while(|c| *c != '"').collect()
}

/// Posts the form with this cookie (`None`: none) and fields.
async fn post(
    app: &TestApp,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = app
        .request(Method::POST, "/invitations/accept")
        .form(fields);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let resp = req.send().await.expect("the API answers");
    (resp.status(), resp.text().await.expect("a page"))
}

#[tokio::test]
async fn an_invitee_accepts_in_headless_chromium_from_the_emailed_link_and_logs_in() {
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let mut app = TestApp::spawn_with(|s| s.email.smtp_url = Some(smtp_url.clone().into())).await;
    // the emailed link is built from APP_BASE_URL (read by the worker): this API's address
    app.env.settings.users.app_base_url = app.address.clone();
    app.start_worker().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let resp = app
        .invite(
            &boss,
            &json!({"email": "new.hire@example.com", "name": "New <Hire>", "roleIds": [member]}),
        )
        .await;
    json_with_status(resp, StatusCode::ACCEPTED).await;

    // the real email, its real link
    let mail = smtp.wait_for(1, Duration::from_secs(30)).await[0].clone();
    let text = mail.parse().text;
    let prefix = format!("{}/invitations/accept?token=", app.address);
    let start = text
        .find(&prefix)
        .expect("the email links to this API's accept page");
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&link).await.expect("open the link");
    let email = c
        .find(Locator::Id("invitee-email"))
        .await
        .expect("the email");
    assert_eq!(email.text().await.expect("text"), "new.hire@example.com");
    let project = {
        let mut conn = app.env.pool.acquire().await.expect("acquire");
        shared::db::projects::find(&mut conn, app.project_id())
            .await
            .expect("read")
            .expect("the project")
            .name
    };
    let heading = c.find(Locator::Id("outcome")).await.expect("a heading");
    assert!(
        heading.text().await.expect("text").contains(&project),
        "the page names the project"
    );
    let name = c.find(Locator::Id("name")).await.expect("the name field");
    assert_eq!(
        name.prop("value").await.expect("value").as_deref(),
        Some("New <Hire>"),
        "prefilled with the invitation's name, escaped in the HTML"
    );
    browser.screenshot("accept-1-form").await;

    // a common password first: the form comes back saying why, name kept
    let password = c
        .find(Locator::Id("password"))
        .await
        .expect("the password field");
    password.send_keys("password1234").await.expect("type");
    c.find(Locator::Id("submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    // the submit navigates: the refusals are on the answer page, which may not be in yet
    let errors = c
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Id("errors"))
        .await
        .expect("the refusals");
    assert!(
        errors.text().await.expect("text").contains("commonly used"),
        "the policy's refusal is shown"
    );
    browser.screenshot("accept-2-refused").await;

    // a good one, and a new name
    let name = c.find(Locator::Id("name")).await.expect("the name field");
    name.clear().await.expect("clear");
    name.send_keys("New Hire").await.expect("type");
    let password = c
        .find(Locator::Id("password"))
        .await
        .expect("the password field");
    password.send_keys(NEW_PASSWORD).await.expect("type");
    c.find(Locator::Id("submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    // the submit navigates: until the answer page is in, an element found may go stale, so
    // read the outcome again until it is the answer's (or 10 s pass)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let outcome = loop {
        let text = match c.find(Locator::Id("outcome")).await {
            Ok(e) => e.text().await.ok(),
            Err(_) => None,
        };
        if text.as_deref() == Some("You're in") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(outcome.as_deref(), Some("You're in"));
    browser.screenshot("accept-3-done").await;

    // the new password logs in through the API
    let session = app.session_of("new.hire@example.com", NEW_PASSWORD).await;
    assert_eq!(session["user"]["status"], "ACTIVE");
    assert_eq!(session["user"]["name"], "New Hire");

    // the link again: used
    c.goto(&link).await.expect("open the link again");
    let outcome = c.find(Locator::Id("outcome")).await.expect("the outcome");
    assert_eq!(
        outcome.text().await.expect("text"),
        "This invitation link does not work"
    );
    browser.screenshot("accept-4-used").await;
    browser.close().await;
}

#[tokio::test]
async fn the_page_names_an_unknown_an_incomplete_and_an_expired_link_and_escapes_names() {
    let app = TestApp::spawn().await;
    let (status, page, _) = open(&app, "no-such-token").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        page.contains("This invitation link does not work"),
        "{page}"
    );
    let resp = app
        .request(Method::GET, "/invitations/accept")
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.expect("page").contains("incomplete"));

    let (_, boss) = app.admin("boss@example.com").await;
    let token = invited(&app, &boss, "eve@example.com", "<script>alert(1)</script>").await;
    let (status, page, cookie) = open(&app, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("eve@example.com"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;")
            || page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    let cookie = cookie.expect("a nonce cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/invitations"] {
        assert!(cookie.contains(part), "{cookie}");
    }

    sqlx::query("UPDATE user_invitations SET expires_at = now() - interval '1 minute'")
        .execute(&app.env.pool)
        .await
        .expect("expire");
    let (status, page, _) = open(&app, &token).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("expired"), "{page}");
}

#[tokio::test]
async fn a_form_not_posted_from_its_page_in_this_browser_is_refused() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let token = invited(&app, &boss, "ada@example.com", "Ada").await;
    let other = invited(&app, &boss, "bob@example.com", "Bob").await;
    let (_, page, cookie) = open(&app, &token).await;
    let cookie = cookie.expect("a cookie");
    let nonce = cookie.split(';').next().expect("name=value").to_owned();
    let csrf = hidden(&page, "csrf");
    assert_eq!(hidden(&page, "token"), token);

    let good = [
        ("token", token.as_str()),
        ("csrf", csrf.as_str()),
        ("password", NEW_PASSWORD),
    ];
    // no cookie; another browser's cookie; the right cookie for another invitation
    let (status, page) = post(&app, None, &good).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("This form has expired"));
    let (status, _) = post(
        &app,
        Some("comet_form=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        &good,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stolen = [
        ("token", other.as_str()),
        ("csrf", csrf.as_str()),
        ("password", NEW_PASSWORD),
    ];
    let (status, _) = post(&app, Some(&nonce), &stolen).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // nothing was accepted
    let invited_users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE status = 'INVITED'")
            .fetch_one(&app.env.pool)
            .await
            .expect("count");
    assert_eq!(invited_users, 2);

    // a short password: 422, the form again, the field named
    let short = [
        ("token", token.as_str()),
        ("csrf", csrf.as_str()),
        ("name", "Ada L."),
        ("password", "short"),
    ];
    let (status, page) = post(&app, Some(&nonce), &short).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("Password: must be 12 to 128 characters"),
        "{page}"
    );
    assert!(
        page.contains("value=\"Ada L.\""),
        "the name is kept: {page}"
    );

    // from the page, with its cookie: accepted
    let (status, page) = post(&app, Some(&nonce), &good).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("You're in") || page.contains("You&#x27;re in"),
        "{page}"
    );
    app.session_of("ada@example.com", NEW_PASSWORD).await;
}
