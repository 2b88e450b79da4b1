//! The API's routes, one module per feature; each exposes `router()` built with utoipa-axum so
//! a route cannot exist without its OpenAPI entry.

pub mod health;
pub mod jobs;
pub mod queues;
