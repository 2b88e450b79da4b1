//! The audit log: one method per endpoint.

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use super::{TestApp, json_with_status, send};

impl TestApp {
    /// `GET /api/v1/audit-logs` with `query` (`""` or `?action=user.deactivated`...).
    pub async fn get_audit_logs(&self, token: &str, query: &str) -> Response {
        let path = format!("/api/v1/audit-logs{query}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// The page of `GET /api/v1/audit-logs` with `query`, asserting a 200.
    pub async fn audit_logs(&self, token: &str, query: &str) -> Value {
        json_with_status(self.get_audit_logs(token, query).await, StatusCode::OK).await
    }

    /// `GET /api/v1/audit-logs/export` with `query` (CSV).
    pub async fn export_audit_logs(&self, token: &str, query: &str) -> Response {
        let path = format!("/api/v1/audit-logs/export{query}");
        send(self.authed(Method::GET, &path, token)).await
    }
}
