//! Jobs and queues: one method per endpoint, waiting for a job's state, and draining: running
//! every job a test caused to its end with an in-process worker, then asserting on what ran.

use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use shared::{
    jobs::QUEUES,
    queue::{JobRecord, JobState},
    testing::eventually,
};

use super::{TestApp, json_with_status, send};

/// How long a job may take to reach a state a test waits for.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(20);

impl TestApp {
    /// `GET /api/v1/queues`.
    pub async fn queues(&self, token: &str) -> Response {
        send(self.authed(Method::GET, "/api/v1/queues", token)).await
    }

    /// `GET /api/v1/queues/projects` with `query` (`""` or `?limit=5`).
    pub async fn busiest_projects(&self, token: &str, query: &str) -> Response {
        let path = format!("/api/v1/queues/projects{query}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// `POST /api/v1/jobs/ping` with a JSON body.
    pub async fn ping(&self, body: &Value, token: &str) -> Response {
        send(
            self.authed(Method::POST, "/api/v1/jobs/ping", token)
                .json(body),
        )
        .await
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn get_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/jobs/{id}"), token)).await
    }

    /// `POST /api/v1/jobs/{id}/retry`.
    pub async fn retry_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::POST, &format!("/api/v1/jobs/{id}/retry"), token)).await
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str, token: &str) -> Response {
        send(self.authed(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), token)).await
    }

    /// Pings with `body` and returns the new job's id (asserting the 202).
    pub async fn enqueue_ping(&self, body: &Value) -> String {
        self.enqueue_ping_as(body, &self.admin_token()).await
    }

    /// [`TestApp::enqueue_ping`] with another caller's token.
    pub async fn enqueue_ping_as(&self, body: &Value, token: &str) -> String {
        let resp = self.ping(body, token).await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        body["data"]["jobId"]
            .as_str()
            .expect("data.jobId is a string")
            .to_owned()
    }

    /// The job's record (`data` of `GET /api/v1/jobs/{id}`), asserting a 200.
    pub async fn job(&self, id: &str) -> Value {
        let resp = self.get_job(id, &self.admin_token()).await;
        json_with_status(resp, StatusCode::OK).await["data"].take()
    }

    /// Polls the job until `done` holds for its record, and returns that record; on time-out
    /// the panic shows the last record seen.
    pub async fn wait_for_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        let found = tokio::time::timeout(
            JOB_TIMEOUT,
            // the outer timeout fires first, so the panic below can show the last record
            eventually(JOB_TIMEOUT + Duration::from_secs(5), what, || async {
                let job = self.job(id).await;
                let ok = done(&job);
                *last.borrow_mut() = job.clone();
                ok.then_some(job)
            }),
        )
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "timed out after {JOB_TIMEOUT:?} waiting for: {what}; last seen: {:#}",
                last.borrow()
            )
        })
    }

    /// Polls the job until it is in `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_for_job(id, &format!("job {id} to be {state}"), |j| {
            j["state"] == state
        })
        .await
    }

    /// `GET /api/v1/queues/{queue}/jobs` with `query` (e.g. `?state=dead&perPage=5`).
    pub async fn get_queue_jobs(&self, token: &str, queue: &str, query: &str) -> Response {
        let path = format!("/api/v1/queues/{queue}/jobs{query}");
        send(self.authed(Method::GET, &path, token)).await
    }

    /// The page of `GET /api/v1/queues/{queue}/jobs` (as a `queues:read` operator), asserting a
    /// 200.
    pub async fn queue_jobs(&self, queue: &str, query: &str) -> Value {
        let resp = self
            .get_queue_jobs(&self.platform_token_with(&["queues:read"]), queue, query)
            .await;
        json_with_status(resp, StatusCode::OK).await
    }

    /// Runs every job the test caused to its end, as the registry backend's tests do before
    /// asserting on side effects: with the in-process worker (started for the drain and
    /// stopped after it, unless the test runs one), until the outbox and every queue of the
    /// test's prefix hold no waiting, delayed, retrying or active job and no dead job waits
    /// for its on-dead hook. Returns the jobs that finished since the last drain; panics,
    /// naming them, if jobs are still unfinished after [`JOB_TIMEOUT`].
    pub async fn drain_jobs(&mut self) -> Drained {
        self.drain_jobs_within(JOB_TIMEOUT).await
    }

    /// [`TestApp::drain_jobs`], then asserts that every job it returns completed (none went
    /// dead or was cancelled).
    pub async fn run_pending_jobs(&mut self) -> Drained {
        let drained = self.drain_jobs().await;
        drained.assert_all_completed();
        drained
    }

    /// [`TestApp::drain_jobs`] with another deadline.
    pub async fn drain_jobs_within(&mut self, timeout: Duration) -> Drained {
        let own_worker = self.worker.is_none();
        if own_worker {
            self.start_worker().await;
        }
        let deadline = Instant::now() + timeout;
        // a job in flight between the outbox, a queue and its handler's own outbox write can
        // slip between two reads of one round: only two empty rounds in a row count
        let mut empty_rounds = 0;
        while empty_rounds < 2 {
            let left = self.unfinished().await;
            if left.is_empty() {
                empty_rounds += 1;
            } else {
                empty_rounds = 0;
                assert!(
                    Instant::now() < deadline,
                    "jobs left unfinished after {timeout:?}: {}",
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if own_worker {
            self.stop_worker().await;
        }
        let mut jobs = Vec::new();
        for queue in QUEUES {
            let c = self.env.queues.counts(queue).await.expect("queue counts");
            for (state, n) in [
                (JobState::Completed, c.completed),
                (JobState::Dead, c.dead),
                (JobState::Cancelled, c.cancelled),
            ] {
                if n == 0 {
                    continue;
                }
                let (page, _) = self
                    .env
                    .queues
                    .list(queue, state, 0, n as usize)
                    .await
                    .expect("list the finished jobs");
                jobs.extend(page.into_iter().filter(|j| self.drained.insert(j.id)));
            }
        }
        jobs.sort_by_key(|j| (j.finished_at, j.id));
        Drained { jobs }
    }

    /// What keeps a drain going: the outbox's rows, each queue's unfinished jobs, dead jobs
    /// whose on-dead hook has not run (empty once everything ran).
    async fn unfinished(&self) -> Vec<String> {
        let mut left = Vec::new();
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM job_outbox")
            .fetch_one(&self.env.pool)
            .await
            .expect("count the outbox");
        if outbox > 0 {
            left.push(format!("{outbox} in the outbox"));
        }
        let queues = &self.env.queues;
        for queue in QUEUES {
            let c = queues.counts(queue).await.expect("queue counts");
            for (n, state) in [
                (c.waiting, "waiting"),
                (c.delayed, "delayed"),
                (c.retrying, "retrying"),
                (c.active, "active"),
            ] {
                if n > 0 {
                    left.push(format!("{n} {state} in {queue}"));
                }
            }
            let hooks = queues.dead_hooks_pending(queue).await.expect("dead hooks");
            if hooks > 0 {
                left.push(format!("{hooks} on-dead hooks of {queue} to run"));
            }
        }
        left
    }
}

/// The jobs a drain saw finish, oldest first.
#[derive(Debug)]
pub struct Drained {
    /// Their records, as the queue keeps them.
    pub jobs: Vec<JobRecord>,
}

impl Drained {
    /// The kinds of the jobs, one entry per job, sorted (`["ping", "ping", "send_invitation"]`).
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.jobs.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds
    }

    /// The jobs of one kind.
    pub fn of_kind(&self, kind: &str) -> Vec<&JobRecord> {
        self.jobs.iter().filter(|j| j.kind == kind).collect()
    }

    /// The jobs that ended in `state`.
    pub fn in_state(&self, state: JobState) -> Vec<&JobRecord> {
        self.jobs.iter().filter(|j| j.state == state).collect()
    }

    /// The job with this id (panics if the drain did not see it finish).
    pub fn job(&self, id: &str) -> &JobRecord {
        self.jobs
            .iter()
            .find(|j| j.id.to_string() == id)
            .unwrap_or_else(|| panic!("job {id} did not finish in this drain: {self:#?}"))
    }

    /// Panics, naming them, if any job went dead or was cancelled.
    pub fn assert_all_completed(&self) {
        let failed: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| j.state != JobState::Completed)
            .map(|j| {
                format!(
                    "{} {} went {}: {}",
                    j.kind,
                    j.id,
                    j.state.as_str(),
                    j.last_error.as_deref().unwrap_or("no error")
                )
            })
            .collect();
        assert!(failed.is_empty(), "jobs did not complete: {failed:#?}");
    }
}
