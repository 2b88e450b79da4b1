//! `TestApp`: the real API served in-process on a random port, over its own database and Redis
//! prefix, with one method per endpoint and an optional in-process worker. Dropping it stops
//! the server and the worker and drops the database and the Redis keys (see `TestEnv`), so no
//! test cleans up by hand, and a failing one leaves nothing behind either.
//!
//! The endpoints' methods live by feature: `jobs` (jobs, queues, and draining the jobs a test
//! caused), `users` (sessions, users, invitations, roles, and the users made straight in the
//! database), `audit`, `imports` (bulk imports and the files they upload), `buckets` (transfer buckets, and the monitor run in-process), `inbox` (users' inboxes, in-app delivery, an SSE reader), `projects`
//! (platform tokens, projects, API keys and their rows); `webhooks` (the endpoint routes, a
//! loopback receiver and a signature verifier); `openapi` reads the served document.

mod audit;
mod browser;
mod buckets;
mod events;
mod imports;
mod inbox;
mod jobs;
mod openapi;
mod process;
mod projects;
mod roles;
mod users;
mod webhooks;

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde_json::Value;
use shared::{auth::Claims, config::Settings, testing::TestEnv};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

pub use browser::Browser;
pub use events::rule_body;
pub use imports::{ONE_CELL_SHEET, XLSX, workbook_parts, xlsx, zip};
pub use inbox::{
    SseReader, deliver, in_app_off, inbox_user, new_notification, notify, open_stream, user_token,
};
pub use openapi::{operations, served_spec};
pub use process::ApiProcess;
pub use users::PASSWORD;
pub use webhooks::{Received, Receiver, endpoint_body, verifies, verify_at};

/// The permissions of the default `member` role, sorted as the API lists them.
pub fn member_permissions() -> Vec<&'static str> {
    let mut p = shared::permissions::of_default_role("member");
    p.sort_unstable();
    p
}

/// Every permission the API knows.
pub fn all_permissions() -> Vec<&'static str> {
    comet_api::auth::ALL.to_vec()
}

/// An in-process worker and the means to stop it.
struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The API under test.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A client that follows no redirects.
    pub client: reqwest::Client,
    /// The test's own database, Redis prefix and settings.
    pub env: TestEnv,
    server_stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<Worker>,
    /// Jobs an earlier drain already returned.
    drained: HashSet<Uuid>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // the server and the worker are tasks of the test's runtime, which is finishing (or
        // unwinding); stop them before `env` drops the database and the keys under them
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.stop.send(());
            worker.task.abort();
        }
    }
}

impl TestApp {
    /// Serves the API over a fresh environment (no worker).
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Serves the API over a fresh environment whose settings `tweak` adjusted.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let env = TestEnv::with(tweak).await;
        let settings = env.settings.clone();
        Self::serve(env, settings).await
    }

    /// Serves the API with `settings` (which may differ from the environment's, e.g. point at
    /// a dependency that is down) while the environment still owns the database for cleanup.
    pub async fn serve(env: TestEnv, settings: Settings) -> Self {
        let state = comet_api::state(settings).expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a random port");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
        let (server_stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(comet_api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(40))
            .build()
            .expect("http client");
        Self {
            address,
            client,
            env,
            server_stop: Some(server_stop),
            server: Some(server),
            worker: None,
            drained: HashSet::new(),
        }
    }

    /// A second API process over the same database and Redis (its own state, pools and
    /// revocation cache), as behind a load balancer.
    pub async fn second_instance(&self) -> TestApp {
        let settings = self.env.settings.clone();
        TestApp::serve(self.env.share(settings.clone()), settings).await
    }

    /// Starts a full worker in this process over the same environment.
    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "the worker already runs");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the worker's port");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(comet_worker::run(
            self.env.settings.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        self.worker = Some(Worker { stop, task });
    }

    /// Stops the worker (if any) and waits for it to finish.
    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.stop.send(());
            let res = tokio::time::timeout(Duration::from_secs(30), w.task)
                .await
                .expect("the worker stops within 30 s")
                .expect("the worker task does not panic");
            res.expect("the worker stops cleanly");
        }
    }

    /// Stops the worker (asserting a clean stop) and the server now, then drops the database
    /// and the Redis keys. Optional: dropping the app cleans up too.
    pub async fn cleanup(mut self) {
        self.stop_worker().await;
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    /// The demo project every test starts with.
    pub fn project_id(&self) -> Uuid {
        self.env.project_id
    }

    /// A token for the demo project with these permissions.
    pub fn token(&self, permissions: &[&str]) -> String {
        self.env.token(self.env.project_id, permissions)
    }

    /// A token for the demo project with every permission.
    pub fn admin_token(&self) -> String {
        self.token(&all_permissions())
    }

    /// A token for `project` with every permission.
    pub fn admin_token_for(&self, project: Uuid) -> String {
        self.env.token(project, &all_permissions())
    }

    /// A token with every permission that expired `ago_secs` ago.
    pub fn expired_token(&self, ago_secs: i64) -> String {
        let claims = Claims::new(
            "test",
            self.env.project_id,
            all_permissions().iter().map(|p| (*p).to_owned()).collect(),
            -ago_secs,
        );
        shared::auth::mint(&self.env.settings.auth.jwt_secret, &claims).expect("mint")
    }

    /// A token with every permission signed with another secret.
    pub fn foreign_token(&self) -> String {
        let claims = Claims::new(
            "test",
            self.env.project_id,
            all_permissions().iter().map(|p| (*p).to_owned()).collect(),
            600,
        );
        let secret = "not-the-server-secret-not-the-server-secret".into();
        shared::auth::mint(&secret, &claims).expect("mint")
    }

    /// A request to `path` (relative to the server), without credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    /// A request to `path` with `Authorization: Bearer <token>`.
    pub fn authed(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(token)
    }

    /// `GET /health`.
    pub async fn health(&self) -> Response {
        send(self.request(Method::GET, "/health")).await
    }

    /// `GET /ready`.
    pub async fn ready(&self) -> Response {
        send(self.request(Method::GET, "/ready")).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Response {
        send(self.request(Method::GET, "/metrics")).await
    }

    /// `GET /api/v1/openapi.json`.
    pub async fn openapi(&self) -> Response {
        send(self.request(Method::GET, "/api/v1/openapi.json")).await
    }
}

/// Sends a request, panicking on transport errors (the server is local and must answer).
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("the API answers")
}

/// The response's body as JSON, after asserting its status.
pub async fn json_with_status(resp: Response, status: StatusCode) -> Value {
    let actual = resp.status();
    let content_type = content_type(&resp);
    let text = resp.text().await.expect("a body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("the {actual} is not JSON ({e}); content-type {content_type:?}, body {text:?}")
    })
}

/// Asserts an error envelope with this status and code, whose `requestId` is the response's
/// `x-request-id`; returns the `error` object.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let request_id = request_id_of(&resp);
    let content_type = content_type(&resp);
    let body = json_with_status(resp, status).await;
    assert!(
        content_type.starts_with("application/json"),
        "an error is JSON, got content-type {content_type:?}"
    );
    let error = &body["error"];
    assert!(error.is_object(), "an error envelope: {body:#}");
    assert_eq!(error["code"], code, "error code of {body:#}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error message: {body:#}"
    );
    assert_eq!(
        error["requestId"].as_str(),
        Some(request_id.as_str()),
        "error.requestId equals the x-request-id header: {body:#}"
    );
    assert!(
        body.as_object().is_some_and(|o| o.len() == 1),
        "nothing but `error` at the top: {body:#}"
    );
    error.clone()
}

/// The fields a `validation_failed` error names, in order.
pub fn error_fields(err: &Value) -> Vec<&str> {
    err["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("a field"))
        .collect()
}

/// The response's `Content-Type` (empty without one).
pub fn content_type(resp: &Response) -> String {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The response's `x-request-id` (asserting there is one).
pub fn request_id_of(resp: &Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("every response carries x-request-id")
        .to_str()
        .expect("an ASCII request id")
        .to_owned()
}

/// A random UUID as a string (a job id that does not exist).
/// A `runAt` that is not due during any test yet within the scheduling horizon: midnight UTC
/// 30 days from now, as RFC 3339.
pub fn later() -> String {
    let day = (Utc::now() + chrono::Duration::days(30)).date_naive();
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

/// The same instant as [`later`], written with a `+02:00` offset.
pub fn later_at_offset() -> String {
    let day = (Utc::now() + chrono::Duration::days(30)).date_naive();
    format!("{}T02:00:00+02:00", day.format("%Y-%m-%d"))
}

pub fn random_id() -> String {
    Uuid::new_v4().to_string()
}

/// Base64url without padding (to hand-craft tokens).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An RFC 3339 time of a JSON body, as a `DateTime` (panicking on anything else).
pub fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("an RFC 3339 time: {v}"))
        .with_timezone(&Utc)
}
