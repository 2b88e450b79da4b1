//! Events and rules: one method per endpoint.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{TestApp, json_with_status, send};

impl TestApp {
    /// `POST /api/v1/events`.
    pub async fn send_event(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/events", token)
                .json(body),
        )
        .await
    }

    /// Sends an event, asserting the 202; returns `data` (`eventId`, `jobId`, `created`).
    pub async fn event(&self, token: &str, body: &Value) -> Value {
        let resp = self.send_event(token, body).await;
        json_with_status(resp, StatusCode::ACCEPTED).await["data"].clone()
    }

    /// `POST /api/v1/events/batch` with these events.
    pub async fn send_batch(&self, token: &str, events: &[Value]) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/events/batch", token)
                .json(&json!({ "events": events })),
        )
        .await
    }

    /// `GET /api/v1/events` with `query`.
    pub async fn list_events(&self, token: &str, query: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/events{query}"), token)).await
    }

    /// `GET /api/v1/events/{id}`.
    pub async fn get_event(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/events/{id}"), token)).await
    }

    /// `POST /api/v1/rules`.
    pub async fn create_rule(&self, token: &str, body: &Value) -> Response {
        send(self.authed(Method::POST, "/api/v1/rules", token).json(body)).await
    }

    /// Creates a rule, asserting the 201; returns its id.
    pub async fn rule(&self, token: &str, body: &Value) -> String {
        let resp = self.create_rule(token, body).await;
        json_with_status(resp, StatusCode::CREATED).await["data"]["id"]
            .as_str()
            .expect("a rule id")
            .to_owned()
    }

    /// `PUT /api/v1/rules/{id}`.
    pub async fn update_rule(&self, token: &str, id: &str, body: &Value) -> Response {
        send(
            self.authed(Method::PUT, &format!("/api/v1/rules/{id}"), token)
                .json(body),
        )
        .await
    }

    /// `GET /api/v1/rules/{id}`.
    pub async fn get_rule(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/rules/{id}"), token)).await
    }

    /// `DELETE /api/v1/rules/{id}`.
    pub async fn delete_rule(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::DELETE, &format!("/api/v1/rules/{id}"), token)).await
    }

    /// `GET /api/v1/rules` with `query`.
    pub async fn list_rules(&self, token: &str, query: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/rules{query}"), token)).await
    }

    /// `POST /api/v1/rules/test`.
    pub async fn test_rule(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/rules/test", token)
                .json(body),
        )
        .await
    }
}

/// A rule body: these types, this condition (if any), to these roles, in-app.
pub fn rule_body(name: &str, types: &[&str], condition: Option<&str>, roles: &[String]) -> Value {
    let mut body = json!({
        "name": name,
        "eventTypes": types,
        "title": "{{ event.type }}: {{ event.payload.amount | default(value=0) }}",
        "body": "from {{ event.source | default(value=\"?\") }}",
        "targetRoleIds": roles,
        "channels": ["inApp"],
    });
    if let Some(c) = condition {
        body["condition"] = json!(c);
    }
    body
}
