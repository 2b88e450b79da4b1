//! The API's routes, one module per feature; each exposes `router()` built with utoipa-axum so
//! a route cannot exist without its OpenAPI entry.

pub mod audit;
pub mod auth;
pub mod buckets;
pub mod deliveries;
pub mod events;
pub mod health;
pub mod invitations;
pub mod jobs;
pub mod notifications;
pub mod passwords;
pub mod projects;
pub mod queues;
pub mod roles;
pub mod rules;
pub mod schedules;
pub mod users;
pub mod webhook_endpoints;
