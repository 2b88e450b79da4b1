//! Projects and API keys: platform tokens, one method per endpoint, a request with an
//! `X-API-Key`, and the key rows as stored.

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use shared::auth::Claims;
use uuid::Uuid;

use super::{TestApp, json_with_status, send};

/// A key's row as Postgres holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Every column as text (to search for a secret in it).
    pub text: String,
    /// `secret_hash`.
    pub secret_hash: Vec<u8>,
    /// `previous_hash`.
    pub previous_hash: Option<Vec<u8>>,
    /// `last_used_at`.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The row version's transaction id: changes with every write of the row.
    pub xmin: String,
}

impl TestApp {
    /// A platform operator's token with these permissions.
    pub fn platform_token_with(&self, permissions: &[&str]) -> String {
        let claims = Claims::platform(
            "ops",
            permissions.iter().map(|p| (*p).to_owned()).collect(),
            600,
        );
        shared::auth::mint(&self.env.settings.auth.jwt_secret, &claims).expect("mint")
    }

    /// A platform operator's token with `projects:manage`.
    pub fn platform_token(&self) -> String {
        self.platform_token_with(&["projects:manage"])
    }

    /// A request with `X-API-Key: <key>`.
    pub fn keyed(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.request(method, path).header("x-api-key", key)
    }

    /// `POST /api/v1/projects`.
    pub async fn create_project(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/projects", token)
                .json(body),
        )
        .await
    }

    /// Creates a project named `name` as a platform operator, asserting a 201: (its `data`,
    /// which holds `project` and `apiKey`; its id; its first key).
    pub async fn new_project(&self, name: &str) -> (Value, Uuid, String) {
        let resp = self
            .create_project(&self.platform_token(), &json!({ "name": name }))
            .await;
        let body = json_with_status(resp, StatusCode::CREATED).await;
        let data = body["data"].clone();
        let id = data["project"]["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("a project id");
        let key = data["apiKey"]["key"].as_str().expect("a key").to_owned();
        (data, id, key)
    }

    /// `GET /api/v1/projects` with `query`.
    pub async fn list_projects(&self, token: &str, query: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/projects{query}"), token)).await
    }

    /// `GET /api/v1/projects/{id}`.
    pub async fn get_project(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/projects/{id}"), token)).await
    }

    /// `PUT /api/v1/projects/{id}`.
    pub async fn update_project(&self, token: &str, id: &str, body: &Value) -> Response {
        let path = format!("/api/v1/projects/{id}");
        send(self.authed(Method::PUT, &path, token).json(body)).await
    }

    /// Sets a project's status as a platform operator, asserting a 200.
    pub async fn set_project_status(&self, id: Uuid, status: &str) {
        let resp = self
            .update_project(
                &self.platform_token(),
                &id.to_string(),
                &json!({ "status": status }),
            )
            .await;
        json_with_status(resp, StatusCode::OK).await;
    }

    /// `DELETE /api/v1/projects/{id}`.
    pub async fn delete_project(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::DELETE, &format!("/api/v1/projects/{id}"), token)).await
    }

    /// `GET /api/v1/projects/{id}/stats`.
    pub async fn project_stats(&self, token: &str, id: &str) -> Response {
        let path = format!("/api/v1/projects/{id}/stats");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// `GET /api/v1/projects/current` with a token.
    pub async fn current_project(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/projects/current", token)).await
    }

    /// `GET /api/v1/projects/current` with an API key.
    pub async fn current_project_by_key(&self, key: &str) -> Response {
        send(self.keyed(Method::GET, "/api/v1/projects/current", key)).await
    }

    /// The status of `GET /api/v1/projects/current` with an API key.
    pub async fn key_status(&self, key: &str) -> StatusCode {
        self.current_project_by_key(key).await.status()
    }

    /// `GET /api/v1/projects/{id}/api-keys` with `query`.
    pub async fn list_api_keys(&self, token: &str, project: &str, query: &str) -> Response {
        let path = format!("/api/v1/projects/{project}/api-keys{query}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// `POST /api/v1/projects/{id}/api-keys`.
    pub async fn create_api_key(&self, token: &str, project: &str, body: &Value) -> Response {
        let path = format!("/api/v1/projects/{project}/api-keys");
        send(self.authed(Method::POST, &path, token).json(body)).await
    }

    /// Creates a key named `name` in `project` as a platform operator, asserting a 201: (its
    /// id, the whole key).
    pub async fn new_api_key(&self, project: Uuid, name: &str) -> (Uuid, String) {
        let resp = self
            .create_api_key(
                &self.platform_token(),
                &project.to_string(),
                &json!({ "name": name }),
            )
            .await;
        let body = json_with_status(resp, StatusCode::CREATED).await;
        let id = body["data"]["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("a key id");
        (id, body["data"]["key"].as_str().expect("a key").to_owned())
    }

    /// `GET /api/v1/projects/{id}/api-keys/{keyId}`.
    pub async fn get_api_key(&self, token: &str, project: &str, key: &str) -> Response {
        let path = format!("/api/v1/projects/{project}/api-keys/{key}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// `POST /api/v1/projects/{id}/api-keys/{keyId}/rotate`.
    pub async fn rotate_api_key(
        &self,
        token: &str,
        project: &str,
        key: &str,
        body: &Value,
    ) -> Response {
        let path = format!("/api/v1/projects/{project}/api-keys/{key}/rotate");
        send(self.authed(Method::POST, &path, token).json(body)).await
    }

    /// `DELETE /api/v1/projects/{id}/api-keys/{keyId}`.
    pub async fn revoke_api_key(&self, token: &str, project: &str, key: &str) -> Response {
        let path = format!("/api/v1/projects/{project}/api-keys/{key}");
        send(self.authed(Method::DELETE, &path, token)).await
    }

    /// The id of the key a whole key belongs to (by its prefix).
    pub async fn key_row_id(&self, key: &str) -> Uuid {
        let prefix = key.split('_').nth(1).expect("ck_<prefix>_<secret>");
        sqlx::query_scalar("SELECT api_key_id FROM api_keys WHERE prefix = $1")
            .bind(prefix)
            .fetch_one(&self.env.pool)
            .await
            .expect("the key's id")
    }

    /// A key's row, straight from Postgres.
    pub async fn key_row(&self, key_id: Uuid) -> KeyRow {
        let (text, secret_hash, previous_hash, last_used_at, xmin) = sqlx::query_as(
            "SELECT k::text, secret_hash, previous_hash, last_used_at, xmin::text
             FROM api_keys k WHERE api_key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&self.env.pool)
        .await
        .expect("the key's row");
        KeyRow {
            text,
            secret_hash,
            previous_hash,
            last_used_at,
            xmin,
        }
    }
}
