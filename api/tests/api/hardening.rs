//! Inputs that used to answer 5xx or leave a request half-done (the outside audit's findings):
//! each answers a clear status and does what it says.

use chrono::Utc;
use reqwest::StatusCode;
use shared::auth::Claims;

use crate::helpers::{TestApp, all_permissions, json_with_status};

#[tokio::test]
async fn an_empty_state_or_a_page_past_the_end_lists_no_jobs_instead_of_failing() {
    let app = TestApp::spawn().await;
    let token = app.token(&["queues:read"]);
    for query in ["?state=dead", "?state=waiting&page=50"] {
        let body = json_with_status(
            app.get_queue_jobs(&token, "ping", query).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(body["data"], serde_json::json!([]), "{query}: {body}");
    }
}

#[tokio::test]
async fn logging_out_a_token_that_expires_in_the_far_future_revokes_it() {
    let app = TestApp::spawn().await;
    // a token minted with an absurd lifetime (`comet-api token --ttl`): 3 million millennia
    let mut claims = Claims::new(
        "ops-robot",
        app.project_id(),
        all_permissions().iter().map(|p| (*p).to_owned()).collect(),
        3600,
    );
    claims.exp = Utc::now().timestamp() + 100_000_000_000_000_000;
    let token = shared::auth::mint(&app.env.settings.auth.jwt_secret, &claims).expect("mint");
    assert_eq!(app.queues(&token).await.status(), StatusCode::OK);

    let out = app.logout(&token).await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);

    let after = app.queues(&token).await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the token still works"
    );
}
