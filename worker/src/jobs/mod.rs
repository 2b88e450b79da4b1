//! Job handlers: one module per job kind, named as in [`shared::with_job_kinds!`], each
//! implementing [`Handler`] for its kind.
//!
//! The handler modules are declared here, and registered by the registry, from that one list: a
//! kind added to the list without a module here, or whose module does not implement [`Handler`],
//! does not compile.

use std::future::Future;

use apalis_core::error::BoxDynError;
use futures::future::BoxFuture;
use serde::Serialize;
use shared::{
    jobs::Job,
    queue::{DeadJob, backend::JobHandle},
};

use crate::context::JobContext;

/// Declares one handler module per job kind of the list.
macro_rules! declare_handlers {
    ($($module:ident::$kind:ident),* $(,)?) => {
        $(pub mod $module;)*
    };
}

shared::with_job_kinds!(declare_handlers);

/// An on-dead hook: what a kind does once one of its jobs has gone dead (run by the worker's
/// on-dead hooks service).
pub type OnDead<J> = fn(JobContext, J, DeadJob) -> BoxFuture<'static, anyhow::Result<()>>;

/// How the worker runs one job kind.
pub trait Handler: Job {
    /// What a successful run returns (stored as the job's result).
    type Output: Serialize + Send + Sync + 'static;

    /// Runs one attempt. An error fails the attempt (retried with backoff); an
    /// `apalis_core::error::AbortError` anywhere in its chain sends the job dead at once.
    fn run(
        self,
        ctx: &JobContext,
        handle: &JobHandle,
    ) -> impl Future<Output = Result<Self::Output, BoxDynError>> + Send;

    /// The kind's on-dead hook, if it has one: run at least once for every job of the kind that
    /// goes dead, however it died (last attempt failed, timed out or panicked, or its worker
    /// was lost). Hooks must be idempotent.
    const ON_DEAD: Option<OnDead<Self>> = None;
}
