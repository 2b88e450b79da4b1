//! Tenancy of the events-and-rules routes, walked from the OpenAPI document: with another
//! project's token, every route that names one of this project's events or rules answers 404
//! (never 403: existence is not revealed) and every list is empty. A route added under these
//! paths is walked without a change here.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, operations, rule_body, send, served_spec};

#[tokio::test]
async fn another_projects_token_finds_none_of_this_projects_events_or_rules() {
    let app = TestApp::spawn().await;
    let mine = app.admin_token();
    let rule = app
        .rule(&mine, &rule_body("mine", &["a.b"], None, &[]))
        .await;
    let event = app
        .event(&mine, &json!({"type": "a.b", "payload": {"x": 1}}))
        .await["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);

    let spec = served_spec(&app).await;
    let mut walked = 0;
    for op in operations(&spec) {
        let id = if op.path.starts_with("/api/v1/events") {
            &event
        } else if op.path.starts_with("/api/v1/rules") {
            &rule
        } else {
            continue;
        };
        let path = op.path.replace("{id}", id);
        let body: Option<Value> = match (op.method.clone(), op.path.as_str()) {
            (Method::PUT, _) => Some(rule_body("theirs", &["a.b"], None, &[])),
            (Method::POST, "/api/v1/rules/test") => {
                Some(json!({"ruleId": rule, "event": {"type": "a.b", "payload": {}}}))
            }
            // creating in one's own project is not a look-up of ours
            (Method::POST, _) if !op.path.contains('{') => continue,
            _ => None,
        };
        let mut req = app.authed(op.method.clone(), &path, &theirs);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = send(req).await;
        walked += 1;
        if op.path.contains('{') || body.is_some() {
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{op}");
        } else {
            assert_eq!(resp.status(), StatusCode::OK, "{op}");
            let page: Value = resp.json().await.unwrap();
            assert_eq!(
                page["data"],
                json!([]),
                "{op} lists another project's items"
            );
        }
    }
    assert!(walked >= 7, "walked only {walked} operations");
    // ours are untouched
    let r = app.get_rule(&mine, &rule).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["data"]["name"], "mine");
}
