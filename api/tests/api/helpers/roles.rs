//! Roles, the permission catalogue, one user's detail and profile, reactivation and direct
//! creation: one method per endpoint.

use reqwest::{Method, Response};
use serde_json::Value;
use uuid::Uuid;

use super::{TestApp, send};

impl TestApp {
    /// `GET /api/v1/roles`.
    pub async fn get_roles(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/roles", token)).await
    }

    /// `GET /api/v1/roles/{id}`.
    pub async fn get_role(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/roles/{id}"), token)).await
    }

    /// `POST /api/v1/roles`.
    pub async fn create_role(&self, token: &str, body: &Value) -> Response {
        send(self.authed(Method::POST, "/api/v1/roles", token).json(body)).await
    }

    /// `PUT /api/v1/roles/{id}`.
    pub async fn update_role(&self, token: &str, id: &str, body: &Value) -> Response {
        let path = format!("/api/v1/roles/{id}");
        send(self.authed(Method::PUT, &path, token).json(body)).await
    }

    /// `DELETE /api/v1/roles/{id}` with `query` (`""` or `?reassignTo=…`).
    pub async fn delete_role(&self, token: &str, id: &str, query: &str) -> Response {
        let path = format!("/api/v1/roles/{id}{query}");
        send(self.authed(Method::DELETE, &path, token)).await
    }

    /// `GET /api/v1/permissions`.
    pub async fn get_permissions(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/permissions", token)).await
    }

    /// `GET /api/v1/users/{id}`.
    pub async fn get_user(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/users/{id}"), token)).await
    }

    /// `PUT /api/v1/users/{id}`.
    pub async fn update_user(&self, token: &str, id: &str, body: &Value) -> Response {
        let path = format!("/api/v1/users/{id}");
        send(self.authed(Method::PUT, &path, token).json(body)).await
    }

    /// `PUT /api/v1/users/me`.
    pub async fn update_me(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::PUT, "/api/v1/users/me", token)
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/users/{id}/reactivate`.
    pub async fn reactivate(&self, token: &str, id: &str) -> Response {
        let path = format!("/api/v1/users/{id}/reactivate");
        send(self.authed(Method::POST, &path, token)).await
    }

    /// `POST /api/v1/users`.
    pub async fn create_user(&self, token: &str, body: &Value) -> Response {
        send(self.authed(Method::POST, "/api/v1/users", token).json(body)).await
    }

    /// Audit actions about `target` (a user or role id), oldest first, logins left out.
    pub async fn audit_actions(&self, target: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT action FROM audit_log WHERE target_id = $1 AND action NOT LIKE 'login.%' ORDER BY at, audit_id",
        )
        .bind(target.to_string())
        .fetch_all(&self.env.pool)
        .await
        .expect("read the audit log")
    }
}
