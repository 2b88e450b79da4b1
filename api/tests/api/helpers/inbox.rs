//! The inbox: users with their own tokens, notifications written and delivered in-app as the
//! `deliver_notification` job does (`shared::inbox::deliver_in_app`), the inbox's endpoints,
//! and a small Server-Sent Events reader over real HTTP.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use shared::{auth::Claims, inbox::InAppOutcome, testing::TestEnv};
use uuid::Uuid;

use super::{TestApp, json_with_status, send};

/// Makes an ACTIVE member of `project` straight in the database (no password to hash); returns
/// its id and a token of its own.
pub async fn inbox_user(env: &TestEnv, project: Uuid, email: &str) -> (Uuid, String) {
    let mut conn = env.pool.acquire().await.expect("acquire");
    let hash = shared::secrets::dummy_password_hash();
    let id = shared::db::users::ensure_active(&mut conn, project, email, "Inbox user", hash)
        .await
        .expect("create a user");
    let role = shared::db::roles::by_name(&mut conn, project, "member")
        .await
        .expect("role look-up")
        .expect("a member role");
    shared::db::roles::assign(&mut conn, project, id, role)
        .await
        .expect("assign");
    (id, user_token(env, project, id))
}

/// The user turns their in-app channel off.
pub async fn in_app_off(env: &TestEnv, project: Uuid, user: Uuid) {
    sqlx::query(
        "INSERT INTO notification_preferences (project_id, user_id, in_app) VALUES ($1, $2, false)",
    )
    .bind(project)
    .bind(user)
    .execute(&env.pool)
    .await
    .expect("the user turns in-app off");
}

/// A token of the user (no permissions: the inbox needs none).
pub fn user_token(env: &TestEnv, project: Uuid, user: Uuid) -> String {
    let claims = Claims::new(&user.to_string(), project, vec![], 600);
    shared::auth::mint(&env.settings.auth.jwt_secret, &claims).expect("mint")
}

/// Writes a notification of `project` for `users` (a rule's digest when `rule` is given, else
/// a system notice), not yet delivered; returns its id.
pub async fn new_notification(
    env: &TestEnv,
    project: Uuid,
    rule: Option<Uuid>,
    body: &str,
    users: &[Uuid],
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        r#"
        INSERT INTO notifications (project_id, notification_id, rule_id, title, body, priority,
                                   channels, kind, dedupe_key)
        VALUES ($1, $2, $3, 'Title ' || $2::text, $4, 0, ARRAY['inApp'],
                CASE WHEN $3::uuid IS NULL THEN 'system' ELSE 'digest' END, $2::text)
        "#,
    )
    .bind(project)
    .bind(id)
    .bind(rule)
    .bind(body)
    .execute(&env.pool)
    .await
    .expect("insert a notification");
    sqlx::query(
        "INSERT INTO notification_recipients (project_id, notification_id, user_id) \
         SELECT $1, $2, unnest($3::uuid[])",
    )
    .bind(project)
    .bind(id)
    .bind(users)
    .execute(&env.pool)
    .await
    .expect("insert its recipients");
    id
}

/// Delivers in-app as the job does.
pub async fn deliver(
    env: &TestEnv,
    project: Uuid,
    notification: Uuid,
    users: &[Uuid],
) -> Vec<(Uuid, InAppOutcome)> {
    shared::inbox::deliver_in_app(&env.pool, &env.queues, project, notification, users)
        .await
        .expect("deliver in-app")
}

/// A notification written and delivered to `users`; returns its id.
pub async fn notify(env: &TestEnv, project: Uuid, rule: Option<Uuid>, users: &[Uuid]) -> Uuid {
    let id = new_notification(env, project, rule, "body", users).await;
    let outcomes = deliver(env, project, id, users).await;
    assert!(
        outcomes.iter().all(|(_, o)| o.is_delivered()),
        "{outcomes:?}"
    );
    id
}

impl TestApp {
    /// `GET /api/v1/notifications{query}`.
    pub async fn inbox(&self, token: &str, query: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/notifications{query}"), token)).await
    }

    /// The ids of the page of `GET /api/v1/notifications{query}`, and its next cursor.
    pub async fn inbox_ids(&self, token: &str, query: &str) -> (Vec<String>, Option<String>) {
        let page = json_with_status(self.inbox(token, query).await, StatusCode::OK).await;
        let ids = page["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n["id"].as_str().expect("an id").to_owned())
            .collect();
        (ids, page["meta"]["nextCursor"].as_str().map(str::to_owned))
    }

    /// `GET /api/v1/notifications/{id}`.
    pub async fn inbox_item(&self, token: &str, id: Uuid) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/notifications/{id}"), token)).await
    }

    /// `GET /api/v1/notifications/unread-count`, asserting a 200.
    pub async fn unread(&self, token: &str) -> i64 {
        let resp = send(self.authed(Method::GET, "/api/v1/notifications/unread-count", token));
        json_with_status(resp.await, StatusCode::OK).await["data"]["unread"]
            .as_i64()
            .expect("a count")
    }

    /// `PUT /api/v1/notifications/{id}/acknowledge`.
    pub async fn acknowledge(&self, token: &str, id: Uuid) -> Response {
        let path = format!("/api/v1/notifications/{id}/acknowledge");
        send(self.authed(Method::PUT, &path, token)).await
    }

    /// `POST /api/v1/notifications/acknowledge-all`.
    pub async fn acknowledge_all(&self, token: &str) -> Response {
        let path = "/api/v1/notifications/acknowledge-all";
        send(self.authed(Method::POST, path, token)).await
    }

    /// `DELETE /api/v1/notifications/{id}`.
    pub async fn delete_notification(&self, token: &str, id: Uuid) -> Response {
        send(self.authed(
            Method::DELETE,
            &format!("/api/v1/notifications/{id}"),
            token,
        ))
        .await
    }

    /// `POST /api/v1/notifications/{id}/webview-action`.
    pub async fn webview_action(&self, token: &str, id: Uuid, body: &Value) -> Response {
        let path = format!("/api/v1/notifications/{id}/webview-action");
        send(self.authed(Method::POST, &path, token).json(body)).await
    }

    /// `POST /api/v1/notifications/stream-ticket`, asserting a 200; returns the ticket.
    pub async fn stream_ticket(&self, token: &str) -> String {
        let resp = send(self.authed(Method::POST, "/api/v1/notifications/stream-ticket", token));
        json_with_status(resp.await, StatusCode::OK).await["data"]["ticket"]
            .as_str()
            .expect("a ticket")
            .to_owned()
    }
}

/// Opens `GET /api/v1/notifications/stream` on `address` with a token (or none), extra query
/// and an optional `Last-Event-ID`.
pub async fn open_stream(
    address: &str,
    token: Option<&str>,
    query: &str,
    last_event_id: Option<i64>,
) -> Response {
    let client = reqwest::Client::builder().build().expect("a client");
    let mut req = client.get(format!("{address}/api/v1/notifications/stream{query}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    req.send().await.expect("the API answers")
}

/// One SSE field set: an event, or a comment (keep-alive).
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<i64>,
    /// `event:`.
    pub event: String,
    /// `data:` (parsed).
    pub data: Value,
    /// A comment line only (`:`).
    pub comment: bool,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    resp: Response,
    buf: String,
}

impl SseReader {
    /// Reads from `resp` (asserting a 200 `text/event-stream`).
    pub fn new(resp: Response) -> Self {
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = super::content_type(&resp);
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event or comment within `within`; None at the end of the stream or on timeout.
    pub async fn next_any(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse_block(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next event (comments skipped) within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_any(left).await {
                Some(e) if e.comment => continue,
                other => return other,
            }
        }
    }

    /// Whether the stream ended (the server closed it) within `within`, events read meanwhile
    /// being returned.
    pub async fn until_end(&mut self, within: Duration) -> (bool, Vec<SseEvent>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                seen.push(parse_block(&block));
                continue;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None) | Err(_)) => return (true, seen),
                Err(_) => return (false, seen),
            }
        }
    }
}

fn parse_block(block: &str) -> SseEvent {
    let mut e = SseEvent::default();
    let mut data = String::new();
    let mut fields = 0;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            e.id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            e.event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        } else {
            continue;
        }
        fields += 1;
    }
    e.comment = fields == 0;
    e.data = serde_json::from_str(&data).unwrap_or(Value::Null);
    e
}
