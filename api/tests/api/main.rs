//! The API's integration tests: the real app served in-process on a random port, each test over
//! its own database and Redis prefix (see `helpers`), with an in-process worker where jobs must
//! run.

mod audit;
mod auth;
mod buckets;
mod clock;
mod contract;
mod deliveries;
mod envelope;
mod event_rates;
mod events;
mod flow;
mod hardening;
mod harness;
mod health;
mod helpers;
mod inbox;
mod inbox_stream;
mod jobs;
mod login_limits;
mod metrics;
mod openapi;
mod permissions;
mod projects;
mod queues;
mod quota;
mod rules;
mod sessions;
mod tenancy;
mod users;
mod validation;
mod webhook_deliveries;
mod webhooks;
