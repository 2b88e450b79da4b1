//! Transfer buckets: one method per endpoint, and the `bucket_monitor` sweep run in-process.

use std::sync::Arc;

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use super::{TestApp, json_with_status, send};

impl TestApp {
    /// `POST /api/v1/transfer-buckets`.
    pub async fn create_bucket(&self, token: &str, body: &Value) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/transfer-buckets", token)
                .json(body),
        )
        .await
    }

    /// Creates a bucket, asserting the 201; returns `data`.
    pub async fn bucket(&self, token: &str, body: &Value) -> Value {
        let resp = self.create_bucket(token, body).await;
        json_with_status(resp, StatusCode::CREATED).await["data"].clone()
    }

    /// `GET /api/v1/transfer-buckets{query}`.
    pub async fn list_buckets(&self, token: &str, query: &str) -> Response {
        send(self.authed(
            Method::GET,
            &format!("/api/v1/transfer-buckets{query}"),
            token,
        ))
        .await
    }

    /// `GET /api/v1/transfer-buckets/{id}`.
    pub async fn get_bucket(&self, token: &str, id: &str) -> Response {
        send(self.authed(
            Method::GET,
            &format!("/api/v1/transfer-buckets/{id}"),
            token,
        ))
        .await
    }

    /// The bucket's `data`, asserting the 200.
    pub async fn bucket_now(&self, token: &str, id: &str) -> Value {
        json_with_status(self.get_bucket(token, id).await, StatusCode::OK).await["data"].clone()
    }

    /// `PUT /api/v1/transfer-buckets/{id}/threshold`.
    pub async fn set_threshold(&self, token: &str, id: &str, body: &Value) -> Response {
        send(
            self.authed(
                Method::PUT,
                &format!("/api/v1/transfer-buckets/{id}/threshold"),
                token,
            )
            .json(body),
        )
        .await
    }

    /// `POST /api/v1/transfer-buckets/{id}/transactions`.
    pub async fn move_balance(&self, token: &str, id: &str, body: &Value) -> Response {
        send(
            self.authed(
                Method::POST,
                &format!("/api/v1/transfer-buckets/{id}/transactions"),
                token,
            )
            .json(body),
        )
        .await
    }

    /// A credit or debit with a fresh key, asserting the 201; returns `data`.
    pub async fn moved(&self, token: &str, id: &str, kind: &str, amount: &str) -> Value {
        let body = serde_json::json!({"type": kind, "amount": amount,
                                      "idempotencyKey": uuid::Uuid::now_v7().to_string()});
        let resp = self.move_balance(token, id, &body).await;
        json_with_status(resp, StatusCode::CREATED).await["data"].clone()
    }

    /// `GET /api/v1/transfer-buckets/{id}/transactions{query}`.
    pub async fn list_movements(&self, token: &str, id: &str, query: &str) -> Response {
        send(self.authed(
            Method::GET,
            &format!("/api/v1/transfer-buckets/{id}/transactions{query}"),
            token,
        ))
        .await
    }

    /// A worker's job context over this app's environment, to run a handler in-process.
    pub fn job_context(&self) -> comet_worker::JobContext {
        comet_worker::JobContext::new(
            Arc::new(self.env.settings.clone()),
            self.env.pool.clone(),
            self.env.queues.clone(),
        )
        .expect("a job context")
    }
}
