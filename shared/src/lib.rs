//! Comet's shared library: everything the API and the worker have in common.
//!
//! # Layout
//! - [`config`]: the typed [`config::Settings`], read from the environment once.
//! - [`domain`]: values validated where they enter (email addresses, names, …) and the
//!   field errors that name every invalid input.
//! - [`queue`]: the Redis queue (key layout, Lua scripts, client, apalis backend).
//! - [`jobs`]: job definitions, their queues and retry policies.
//! - [`rules`]: the rules language: event-type patterns, CEL conditions, notification
//!   templates, each compiled when a rule is saved and evaluated by `process_event`.
//! - [`permissions`]: every permission, declared once; the table and default roles follow.
//! - [`db`]: the Postgres pool, migrations, and all SQL (outbox, projects, API keys, users…).
//! - [`auth`]: access-token claims (project and platform tokens), minting and verification.
//! - [`api_keys`]: projects' API keys: the `ck_<prefix>_<secret>` format, hashing, checking.
//! - [`secrets`]: random tokens, their hashes, sealed job secrets, password hashing.
//! - [`sessions`]: sessions, revocation and rate limits in Redis.
//! - [`suppression`]: rules' alert suppression, decided atomically in Redis.
//! - [`shutdown`]: the SIGINT/SIGTERM signal both binaries stop on.
//! - [`email`]: the email templates (embedded, rendered with tera) and the mailer (SMTP or
//!   `.eml` files).
//! - [`group_commit`]: concurrent writes batched into one transaction and one commit
//!   (`process_event`'s results, single ingested events).
//! - [`inbox`]: the in-app inbox: delivery into recipients' inboxes, acknowledgements and
//!   deletions, each pushed live (Redis pub/sub) to the users' streams; stream tickets.
//! - [`telemetry`]: logging and metrics set-up.
//! - [`webhooks`]: signed webhook deliveries: Standard Webhooks signing, the SSRF guard, the
//!   delivery client.

pub mod api_keys;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod group_commit;
pub mod imports;
pub mod inbox;
pub mod jobs;
pub mod permissions;
pub mod queue;
pub mod redis_client;
pub mod rules;
pub mod schedule;
pub mod secrets;
pub mod sessions;
pub mod shutdown;
pub mod suppression;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod webhooks;

pub use db::MIGRATOR;
