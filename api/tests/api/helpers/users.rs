//! Sessions, users, invitations and roles: one method per endpoint, the users tests make
//! straight in the database, and the job rows their writes leave in the outbox.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{TestApp, json_with_status, send};

/// The password of every user these tests make.
pub const PASSWORD: &str = "correct horse battery staple";

/// A job row still in the outbox (no worker relays it unless the test runs one).
#[derive(Debug, Clone)]
pub struct OutboxJob {
    /// Job id.
    pub id: Uuid,
    /// Queue.
    pub queue: String,
    /// Payload.
    pub payload: Value,
    /// The request that enqueued it.
    pub request_id: Option<String>,
}

impl TestApp {
    // -----------------------------------------------------------------------------------------
    // Sessions

    /// `POST /api/v1/auth/login`.
    pub async fn login(&self, body: &Value) -> Response {
        send(self.request(Method::POST, "/api/v1/auth/login").json(body)).await
    }

    /// Logs in with [`PASSWORD`], asserting a 200; returns the access token.
    pub async fn token_of(&self, email: &str) -> String {
        let resp = self
            .login(&json!({"email": email, "password": PASSWORD}))
            .await;
        let body = json_with_status(resp, StatusCode::OK).await;
        body["data"]["accessToken"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Logs in with `password`, asserting a 200; returns `data` (tokens and user).
    pub async fn session_of(&self, email: &str, password: &str) -> Value {
        let resp = self
            .login(&json!({"email": email, "password": password}))
            .await;
        json_with_status(resp, StatusCode::OK).await["data"].take()
    }

    /// `POST /api/v1/auth/refresh` with this refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        send(
            self.request(Method::POST, "/api/v1/auth/refresh")
                .json(&json!({"refreshToken": refresh_token})),
        )
        .await
    }

    /// `POST /api/v1/auth/change-password` with this body.
    pub async fn change_password(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/auth/change-password", token)
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/auth/password-reset` with this body.
    pub async fn password_reset(&self, body: &Value) -> Response {
        send(
            self.request(Method::POST, "/api/v1/auth/password-reset")
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/auth/password-reset/confirm` with a token and a password.
    pub async fn confirm_reset(&self, token: &str, password: &str) -> Response {
        send(
            self.request(Method::POST, "/api/v1/auth/password-reset/confirm")
                .json(&json!({"token": token, "password": password})),
        )
        .await
    }

    /// `POST /api/v1/auth/logout`.
    pub async fn logout(&self, token: &str) -> Response {
        send(self.authed(Method::POST, "/api/v1/auth/logout", token)).await
    }

    /// `GET /api/v1/users/me`.
    pub async fn me(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/users/me", token)).await
    }

    /// Whether the user has a "tokens before T are revoked" marker in Redis.
    pub async fn has_revocation_marker(&self, user: Uuid) -> bool {
        let sessions = shared::sessions::Sessions::new(&self.env.queues);
        let mut old = shared::auth::Claims::new(&user.to_string(), self.project_id(), vec![], 60);
        old.iat_ms = 0;
        sessions.check(&old).await.expect("redis") == shared::sessions::Verdict::Revoked
    }

    // -----------------------------------------------------------------------------------------
    // Users made straight in the database

    /// Makes an ACTIVE user of `project` with [`PASSWORD`] and the named role, straight in the
    /// database; returns its id.
    pub async fn active_user(&self, project: Uuid, email: &str, role: &str) -> Uuid {
        let hash = shared::secrets::hash_password(PASSWORD).expect("hash");
        let mut conn = self.env.pool.acquire().await.expect("acquire");
        let id = shared::db::users::ensure_active(&mut conn, project, email, "Test user", &hash)
            .await
            .expect("create an active user");
        let role = self.role_id(project, role).await;
        assert!(
            shared::db::roles::assign(&mut conn, project, id, role)
                .await
                .expect("assign")
        );
        id
    }

    /// A role of the project by name.
    pub async fn role_id(&self, project: Uuid, name: &str) -> Uuid {
        let mut conn = self.env.pool.acquire().await.expect("acquire");
        shared::db::roles::by_name(&mut conn, project, name)
            .await
            .expect("role look-up")
            .unwrap_or_else(|| panic!("the project has a {name} role"))
    }

    /// An ACTIVE admin of the demo project, logged in: (user id, token).
    pub async fn admin(&self, email: &str) -> (Uuid, String) {
        let id = self.active_user(self.project_id(), email, "admin").await;
        (id, self.token_of(email).await)
    }

    // -----------------------------------------------------------------------------------------
    // Users

    /// `GET /api/v1/users` with `query` (`""` or `?status=ACTIVE&perPage=3`...).
    pub async fn get_users(&self, token: &str, query: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/users{query}"), token)).await
    }

    /// The page of `GET /api/v1/users` with `query`, asserting a 200.
    pub async fn users(&self, token: &str, query: &str) -> Value {
        json_with_status(self.get_users(token, query).await, StatusCode::OK).await
    }

    /// `GET /api/v1/users/export` with `query` (CSV).
    pub async fn export_users(&self, token: &str, query: &str) -> Response {
        let path = format!("/api/v1/users/export{query}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// `POST /api/v1/users/{id}/deactivate`.
    pub async fn deactivate(&self, token: &str, user: &str) -> Response {
        let path = format!("/api/v1/users/{user}/deactivate");
        send(self.authed(Method::POST, &path, token)).await
    }

    // -----------------------------------------------------------------------------------------
    // Invitations

    /// `POST /api/v1/users/invite`.
    pub async fn invite(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/users/invite", token)
                .json(body),
        )
        .await
    }

    /// Invites `email` as a member, asserting the 202; returns `data`.
    pub async fn invite_member(&self, token: &str, email: &str) -> Value {
        let member = self.role_id(self.project_id(), "member").await;
        let resp = self
            .invite(token, &json!({"email": email, "roleIds": [member]}))
            .await;
        json_with_status(resp, StatusCode::ACCEPTED).await["data"].take()
    }

    /// `POST /api/v1/users/{id}/resend-invitation`.
    pub async fn resend_invitation(&self, token: &str, user: &str) -> Response {
        let path = format!("/api/v1/users/{user}/resend-invitation");
        send(self.authed(Method::POST, &path, token)).await
    }

    /// `POST /api/v1/invitations/accept` with this body.
    pub async fn accept_invitation(&self, body: &Value) -> Response {
        send(
            self.request(Method::POST, "/api/v1/invitations/accept")
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/invitations/accept` with an invitation token and a password.
    pub async fn accept(&self, token: &str, password: &str) -> Response {
        self.accept_invitation(&json!({"token": token, "password": password}))
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Roles

    /// `POST /api/v1/users/{id}/roles`: gives the user another role.
    pub async fn add_role(&self, token: &str, user: &str, role: Uuid) -> Response {
        let path = format!("/api/v1/users/{user}/roles");
        send(
            self.authed(Method::POST, &path, token)
                .json(&json!({"roleId": role})),
        )
        .await
    }

    /// `DELETE /api/v1/users/{id}/roles/{roleId}`.
    pub async fn remove_role(&self, token: &str, user: &str, role: Uuid) -> Response {
        let path = format!("/api/v1/users/{user}/roles/{role}");
        send(self.authed(Method::DELETE, &path, token)).await
    }

    /// `PATCH /api/v1/users/{id}/roles/{roleId}`: replaces role `from` with `to`.
    pub async fn change_role(&self, token: &str, user: &str, from: Uuid, to: Uuid) -> Response {
        let path = format!("/api/v1/users/{user}/roles/{from}");
        send(
            self.authed(Method::PATCH, &path, token)
                .json(&json!({"roleId": to})),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // The outbox

    /// Every job in the outbox, oldest first.
    pub async fn outbox(&self) -> Vec<OutboxJob> {
        let rows: Vec<(Uuid, String, Value, Option<String>)> = sqlx::query_as(
            "SELECT job_id, queue, payload, request_id FROM job_outbox ORDER BY created_at, job_id",
        )
        .fetch_all(&self.env.pool)
        .await
        .expect("read the outbox");
        rows.into_iter()
            .map(|(id, queue, payload, request_id)| OutboxJob {
                id,
                queue,
                payload,
                request_id,
            })
            .collect()
    }

    /// The invitation token a `send_invitation` job carries (test-only: unseals it).
    pub fn token_in(&self, job: &OutboxJob) -> String {
        assert_eq!(job.queue, "send_invitation");
        let sealed = job.payload["sealedToken"].as_str().expect("a sealed token");
        shared::secrets::open(&self.env.settings.auth.jwt_secret, sealed).expect("the token opens")
    }

    /// The token of the last `send_invitation` job for `user`.
    pub async fn last_invitation_token(&self, user: &str) -> String {
        let jobs = self.outbox().await;
        let job = jobs
            .iter()
            .rev()
            .find(|j| j.queue == "send_invitation" && j.payload["userId"] == user)
            .expect("a send_invitation job for the user");
        self.token_in(job)
    }
}
