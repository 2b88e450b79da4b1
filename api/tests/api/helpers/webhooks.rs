//! Webhooks: a receiver on loopback that records what it is sent and answers as its path says,
//! a Standard Webhooks verifier written from the specification (not from Comet's signing
//! code), and the endpoint routes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response as AxumResponse},
    routing::{any, post},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::{Method, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{TestApp, json_with_status, send};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Received {
    /// A header as text (empty when missing).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A local HTTP receiver. Paths: `/ok` (200, body `thanks`), `/status/{code}`,
/// `/retry-after/{code}/{value}` (that status with `Retry-After: value`), `/slow` (answers after
/// 3 s), `/redirect` (302 to `/ok`), `/big` (200 with a 100 KB body).
pub struct Receiver {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Got = Arc<Mutex<Vec<Received>>>;

fn record(got: &Got, path: String, headers: HeaderMap, body: Bytes) {
    got.lock().expect("lock").push(Received {
        path,
        headers,
        body,
    });
}

async fn ok(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> &'static str {
    record(&got, "/ok".into(), headers, body);
    "thanks"
}

async fn status(
    State(got): State<Got>,
    Path(code): Path<u16>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&got, format!("/status/{code}"), headers, body);
    StatusCode::from_u16(code).expect("a status")
}

async fn retry_after(
    State(got): State<Got>,
    Path((code, value)): Path<(u16, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumResponse {
    record(&got, format!("/retry-after/{code}"), headers, body);
    (
        StatusCode::from_u16(code).expect("a status"),
        [(header::RETRY_AFTER, value)],
    )
        .into_response()
}

async fn slow(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> &'static str {
    record(&got, "/slow".into(), headers, body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn redirect(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> AxumResponse {
    record(&got, "/redirect".into(), headers, body);
    (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response()
}

async fn big(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> String {
    record(&got, "/big".into(), headers, body);
    "x".repeat(100_000)
}

impl Receiver {
    /// Listens on a random loopback port.
    pub async fn start() -> Self {
        let got: Got = Arc::default();
        let app = Router::new()
            .route("/ok", post(ok))
            .route("/status/{code}", post(status))
            .route("/retry-after/{code}/{value}", post(retry_after))
            .route("/slow", post(slow))
            .route("/redirect", any(redirect))
            .route("/big", post(big))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { base, got, task }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

/// HMAC-SHA256 (RFC 2104) over `sha2`, written here so the verifier shares no code with the
/// signing module (which uses the `hmac` crate).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Standard Webhooks 1.0 verification, from the specification: the key is the base64 after
/// `whsec_`; the signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the header is a
/// space-delimited list of `v1,<base64>` signatures, any one of which may match (constant-time
/// comparison is the receiver's business; a test compares plainly). The timestamp must be within
/// five minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = STANDARD.decode(b64) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    verify_at(&key, id, timestamp, signatures, body)
}

/// [`verify`] without the timestamp tolerance, with the raw key.
pub fn verify_at(key: &[u8], id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    let expected = STANDARD.encode(hmac_sha256(key, &content));
    signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .any(|(version, sig)| version == "v1" && sig == expected)
}

/// Whether a received request verifies under `secret`.
pub fn verifies(secret: &str, r: &Received) -> bool {
    verify(
        secret,
        &r.header("webhook-id"),
        &r.header("webhook-timestamp"),
        &r.header("webhook-signature"),
        &r.body,
    )
}

/// A valid endpoint body for `url`.
pub fn endpoint_body(url: &str, event_types: &[&str]) -> Value {
    serde_json::json!({"url": url, "description": "test receiver", "eventTypes": event_types})
}

impl TestApp {
    /// `POST /api/v1/webhook-endpoints`.
    pub async fn create_endpoint(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/webhook-endpoints", token)
                .json(body),
        )
        .await
    }

    /// Creates an endpoint (asserting 201); returns its `data` (with the secret).
    pub async fn endpoint(&self, token: &str, body: &Value) -> Value {
        json_with_status(self.create_endpoint(token, body).await, StatusCode::CREATED).await["data"]
            .clone()
    }

    /// `POST /api/v1/webhook-endpoints/{id}/test`.
    pub async fn test_endpoint(&self, token: &str, id: &str) -> Response {
        send(self.authed(
            Method::POST,
            &format!("/api/v1/webhook-endpoints/{id}/test"),
            token,
        ))
        .await
    }

    /// `POST /api/v1/webhook-endpoints/{id}/rotate-secret`.
    pub async fn rotate_endpoint_secret(&self, token: &str, id: &str, body: &Value) -> Response {
        send(
            self.authed(
                Method::POST,
                &format!("/api/v1/webhook-endpoints/{id}/rotate-secret"),
                token,
            )
            .json(body),
        )
        .await
    }
}
