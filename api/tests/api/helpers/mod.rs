//! `TestApp`: the real API served in-process on a random port, over its own database and Redis
//! prefix, with one method per endpoint and an optional in-process worker.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde_json::Value;
use shared::{
    auth::Claims,
    config::Settings,
    testing::{TestEnv, eventually},
};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// How long a job may take to reach a state a test waits for.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(20);

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
    guard: CleanupGuard,
}

/// Drops the test's database and Redis keys if the test ends without [`TestApp::cleanup`]
/// (a failed assertion panics before it): failing tests leave nothing behind either.
struct CleanupGuard {
    /// `None` once the regular clean-up ran.
    armed: Option<(Settings, String)>,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let Some((settings, db_name)) = self.armed.take() else {
            return;
        };
        // the test's runtime is unwinding; clean up on a runtime of our own
        let cleaner = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for clean-up");
            rt.block_on(async move {
                let (Ok(pool), Ok(client)) = (shared::db::pool(&settings), settings.redis_client())
                else {
                    return;
                };
                let Ok(queues) = shared::queue::Queues::new(
                    client,
                    &settings.redis_prefix,
                    settings.queue.clone(),
                ) else {
                    return;
                };
                let env = TestEnv {
                    settings,
                    pool,
                    queues,
                    project_id: Uuid::nil(),
                    db_name,
                };
                let _ = tokio::time::timeout(Duration::from_secs(20), env.cleanup()).await;
            });
        });
        let _ = cleaner.join();
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
        let guard = CleanupGuard {
            armed: Some((env.settings.clone(), env.db_name.clone())),
        };
        Self {
            address,
            client,
            env,
            guard,
            server_stop: Some(server_stop),
            server: Some(server),
            worker: None,
        }
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

    /// Stops the worker and the server, then drops the database and the Redis keys.
    pub async fn cleanup(mut self) {
        self.stop_worker().await;
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        let Self { env, mut guard, .. } = self;
        env.cleanup().await;
        guard.armed = None;
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
        shared::auth::mint(&self.env.settings.jwt_secret, &claims).expect("mint")
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

    /// `GET /api/v1/queues`.
    pub async fn queues(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/queues", token)).await
    }

    /// `POST /api/v1/jobs/ping` with a JSON body.
    pub async fn ping(&self, body: &Value, token: &str) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/jobs/ping", token)
                .json(body),
        )
        .await
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn get_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/jobs/{id}"), token)).await
    }

    /// `POST /api/v1/jobs/{id}/retry`.
    pub async fn retry_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::POST, &format!("/api/v1/jobs/{id}/retry"), token)).await
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), token)).await
    }

    /// Pings with `body` and returns the new job's id (asserting the 202).
    pub async fn enqueue_ping(&self, body: &Value) -> String {
        let resp = self.ping(body, &self.admin_token()).await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        body["data"]["jobId"]
            .as_str()
            .expect("data.jobId is a string")
            .to_owned()
    }

    /// The job's record (`data` of `GET /api/v1/jobs/{id}`), asserting a 200.
    pub async fn job(&self, id: &str) -> Value {
        let resp = self.get_job(id, &self.admin_token()).await;
        json_with_status(resp, StatusCode::OK).await["data"].take()
    }

    /// Polls the job until `done` holds for its record, and returns that record; on time-out
    /// the panic shows the last record seen.
    pub async fn wait_for_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        let found = tokio::time::timeout(
            JOB_TIMEOUT,
            // the outer timeout fires first, so the panic below can show the last record
            eventually(JOB_TIMEOUT + Duration::from_secs(5), what, || async {
                let job = self.job(id).await;
                let ok = done(&job);
                *last.borrow_mut() = job.clone();
                ok.then_some(job)
            }),
        )
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "timed out after {JOB_TIMEOUT:?} waiting for: {what}; last seen: {:#}",
                last.borrow()
            )
        })
    }

    /// Polls the job until it is in `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_for_job(id, &format!("job {id} to be {state}"), |j| {
            j["state"] == state
        })
        .await
    }
}

/// Sends a request, panicking on transport errors (the server is local and must answer).
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("the API answers")
}

/// The response's body as JSON, after asserting its status.
pub async fn json_with_status(resp: Response, status: StatusCode) -> Value {
    let actual = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let text = resp.text().await.expect("a body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("the {actual} is not JSON ({e}); content-type {content_type}, body {text:?}")
    })
}

/// Asserts an error envelope with this status and code, whose `requestId` is the response's
/// `x-request-id`; returns the `error` object.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let request_id = request_id_of(&resp);
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The HTTP method.
    pub method: Method,
    /// The documented path, e.g. `/api/v1/jobs/{id}`.
    pub path: String,
    /// The path with every parameter replaced by a random UUID.
    pub concrete_path: String,
    /// The scopes of its `bearer` security requirement (`None`: no bearer requirement).
    pub bearer_scopes: Option<Vec<String>>,
    /// Whether it declares a request body.
    pub has_body: bool,
    /// The documented response statuses.
    pub responses: Vec<String>,
}

impl Operation {
    /// A request for this operation (with `{}` as body when it takes one).
    pub fn request(&self, app: &TestApp, token: Option<&str>) -> RequestBuilder {
        let mut req = app.request(self.method.clone(), &self.concrete_path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if self.has_body {
            req = req.json(&serde_json::json!({}));
        }
        req
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Every operation of an OpenAPI document.
pub fn operations(spec: &Value) -> Vec<Operation> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let paths = spec["paths"].as_object().expect("the document has paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (method, op) in item {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let concrete_path = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') && seg.ends_with('}') {
                        Uuid::new_v4().to_string()
                    } else {
                        seg.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let bearer_scopes = op["security"].as_array().and_then(|reqs| {
                reqs.iter().find_map(|r| {
                    r["bearer"].as_array().map(|scopes| {
                        scopes
                            .iter()
                            .map(|s| s.as_str().expect("a scope is a string").to_owned())
                            .collect()
                    })
                })
            });
            out.push(Operation {
                method: Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method"),
                path: path.clone(),
                concrete_path,
                bearer_scopes,
                has_body: op.get("requestBody").is_some(),
                responses: op["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The served OpenAPI document.
pub async fn served_spec(app: &TestApp) -> Value {
    json_with_status(app.openapi().await, StatusCode::OK).await
}
