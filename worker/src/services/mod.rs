//! The worker's long-running loops besides the job runners, and their one supervisor.
//!
//! Every loop is a [`Service`]: an async function that runs until its [`Stop`] resolves and
//! returns `Ok(())` then. [`Services`] starts them from one list (see `crate::run`), and gives one
//! shutdown path: [`Services::stop`] asks every service to stop and waits for all of them. A
//! service that ends on its own (an error, a panic, or an early `Ok`) is fatal: the process stops
//! its job runners and exits non-zero with the service's name and error, so a supervisor (systemd,
//! the platform) restarts it instead of leaving a worker that silently stopped relaying.
//!
//! - [`http`]: `/health`, `/ready`, `/metrics` on `WORKER_PORT`.
//! - [`relay`]: the outbox relay, Postgres → Redis.
//! - [`dead_hooks`]: the on-dead hooks of the kinds this process runs.
//! - [`scheduler`]: fires the schedules' ticks (`SCHEDULER_ENABLED`, default on).
//! - [`pauses`]: copies the paused queues from Postgres into Redis.
//! - [`archiver`]: copies finished jobs from Redis into the Postgres job archive.

pub mod archiver;
pub mod dead_hooks;
pub mod http;
pub mod pauses;
pub mod relay;
pub mod scheduler;

use std::{collections::HashMap, future::Future, time::Duration};

use tokio::{
    sync::watch,
    task::{Id, JoinError, JoinSet},
};

/// Resolves once the process is shutting down; cheap to clone, one per service.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits for the stop request.
    pub async fn requested(mut self) {
        // an error means the sender is gone: the process is ending either way
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Whether stop was requested already.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// A service that ended on its own, before it was asked to stop.
#[derive(Debug)]
pub struct Failure {
    /// The service's name.
    pub service: &'static str,
    /// What it ended with.
    pub error: anyhow::Error,
}

/// The running services: see the module docs.
#[derive(Debug)]
pub struct Services {
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    /// Each task's service name, for tasks that panicked.
    names: HashMap<Id, &'static str>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    /// No services yet.
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// A stop signal for a service or for the job runners.
    pub fn stop_signal(&self) -> Stop {
        Stop(self.stop.subscribe())
    }

    /// Starts service `name`, built from its stop signal.
    pub fn start<F, Fut>(&mut self, name: &'static str, service: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let fut = service(self.stop_signal());
        let task = self.tasks.spawn(async move { (name, fut.await) });
        self.names.insert(task.id(), name);
    }

    /// A task that panicked (or was aborted), as a failure of its service.
    fn crashed(&self, e: JoinError) -> Failure {
        Failure {
            service: self.names.get(&e.id()).copied().unwrap_or("unknown"),
            error: anyhow::anyhow!("{e}"),
        }
    }

    /// Resolves when the first service ends (pending forever while all run, or with none). A
    /// service ending before stop was requested is a [`Failure`]; panics included.
    pub async fn first_failure(&mut self) -> Failure {
        loop {
            let Some(joined) = self.tasks.join_next().await else {
                return std::future::pending().await;
            };
            let stopping = *self.stop.borrow();
            let failure = match joined {
                Ok((_, Ok(()))) if stopping => continue,
                Ok((service, Ok(()))) => Failure {
                    service,
                    error: anyhow::anyhow!("stopped before it was asked to"),
                },
                Ok((service, Err(error))) => Failure { service, error },
                Err(e) => self.crashed(e),
            };
            return failure;
        }
    }

    /// Asks every service to stop and waits up to `timeout` for them; returns the failures
    /// (services that errored or panicked, or did not stop in time).
    pub async fn stop(mut self, timeout: Duration) -> Vec<Failure> {
        let _ = self.stop.send(true);
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => return failures,
                Ok(Some(Ok((_, Ok(()))))) => {}
                Ok(Some(Ok((service, Err(error))))) => failures.push(Failure { service, error }),
                Ok(Some(Err(e))) => failures.push(self.crashed(e)),
                Err(_) => {
                    failures.push(Failure {
                        service: "some",
                        error: anyhow::anyhow!(
                            "{} service(s) did not stop within {timeout:?}",
                            self.tasks.len()
                        ),
                    });
                    self.tasks.abort_all();
                    return failures;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_errors_is_reported_by_name() {
        let mut services = Services::new();
        services.start("steady", |stop| async move {
            stop.requested().await;
            Ok(())
        });
        services.start("broken", |_| async { anyhow::bail!("boom") });
        let failure = services.first_failure().await;
        assert_eq!(failure.service, "broken");
        assert_eq!(failure.error.to_string(), "boom");
        assert!(services.stop(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn a_service_that_panics_or_returns_early_is_a_failure() {
        let mut services = Services::new();
        services.start("quits", |_| async { Ok(()) });
        let failure = services.first_failure().await;
        assert_eq!(failure.service, "quits");

        let mut services = Services::new();
        services.start("panics", |_| async { panic!("kaboom") });
        let failure = services.first_failure().await;
        assert_eq!(failure.service, "panics");
        assert!(
            failure.error.to_string().contains("kaboom"),
            "{}",
            failure.error
        );
    }

    #[tokio::test]
    async fn services_that_stop_when_asked_are_not_failures() {
        let mut services = Services::new();
        for name in ["a", "b"] {
            services.start(name, |stop| async move {
                stop.requested().await;
                Ok(())
            });
        }
        assert!(services.stop(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn a_service_that_ignores_stop_is_reported() {
        let mut services = Services::new();
        services.start("deaf", |_| std::future::pending());
        let failures = services.stop(Duration::from_millis(50)).await;
        assert_eq!(failures.len(), 1);
    }
}
