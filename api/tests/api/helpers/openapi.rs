//! The served OpenAPI document, read as the list of operations the route-wide tests walk.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::{TestApp, json_with_status};

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
    /// `x-platform-token`: its scopes must come with a platform token (the view spans every
    /// project; a project's token holding them is refused).
    pub platform_token: bool,
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
                platform_token: op["x-platform-token"] == true,
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
