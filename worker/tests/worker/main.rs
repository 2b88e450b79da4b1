//! The worker's integration tests, against real Postgres and Redis (each test isolated by its
//! own database and Redis prefix) and, where the behaviour is about processes, the real
//! `comet-worker` binary.

mod capacity;
mod cluster;
mod dead_alerts;
mod helpers;
mod imports;
mod metrics;
mod open_counts;
mod outbox;
mod partitions;
mod pauses;
mod processes;
mod queue;
mod scheduler;
mod users;
