//! `job_webhook`: tells one webhook endpoint that one of its project's jobs completed or went
//! dead (the job lifecycle webhooks a project subscribes its endpoints to: `jobEvents`,
//! `jobQueues` on `/api/v1/webhook-endpoints`).
//!
//! The job archiver enqueues these ([`lifecycle_jobs`]), in the transaction that archives the
//! finished jobs, once per (job, finish, subscribed endpoint): a batch archived again after a
//! crash adds none, as the archive already holds the finish. Unlike other kinds, the payload
//! carries a snapshot of the finished job ([`JobSnapshot`]), not only its id: the message
//! describes that moment, and the archived row may be gone or changed by the time it is sent (a
//! dead job retried, or deleted). Jobs of this queue never feed it, or one message would
//! make another forever.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EnqueueOptions, Job};
use crate::{
    db::webhook_endpoints::Endpoint,
    queue::{JobRecord, JobState, NewJob, RetryPolicy},
};

/// A job lifecycle message's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum JobEvent {
    /// The job completed.
    #[serde(rename = "job.completed")]
    Completed,
    /// The job went dead (out of attempts, or failed for good).
    #[serde(rename = "job.dead")]
    Dead,
}

impl JobEvent {
    /// Every type.
    pub const ALL: [JobEvent; 2] = [JobEvent::Completed, JobEvent::Dead];

    /// Its name (`job.completed`, `job.dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobEvent::Completed => "job.completed",
            JobEvent::Dead => "job.dead",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The message a job finishing in `state` makes, if any (a cancelled job makes none).
    pub fn of(state: JobState) -> Option<Self> {
        match state {
            JobState::Completed => Some(JobEvent::Completed),
            JobState::Dead => Some(JobEvent::Dead),
            _ => None,
        }
    }
}

/// Largest job result carried in a message, serialised; a larger one is left out
/// (`resultOmitted`), and is read from the jobs API.
pub const MAX_RESULT_BYTES: usize = 8 * 1024;
/// Longest error carried, in characters.
pub const MAX_ERROR_CHARS: usize = 2000;

/// The finished job as the message shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSnapshot {
    /// The job's id.
    pub job_id: Uuid,
    /// Its queue (and kind).
    pub queue: String,
    /// Attempts it used.
    pub attempts: u32,
    /// Attempts it was allowed.
    pub max_attempts: u32,
    /// Enqueued.
    pub created_at: Option<DateTime<Utc>>,
    /// Its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Completed or went dead.
    pub finished_at: DateTime<Utc>,
    /// The request that enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Its last error (dead jobs), at most 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it returned (completed jobs), if at most 8 KiB serialised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The result was larger than 8 KiB and left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_omitted: bool,
}

impl JobSnapshot {
    /// The snapshot of a finished job.
    pub fn of(job: &JobRecord, finished_at: DateTime<Utc>) -> Self {
        let result = job.result.clone().filter(|r| !r.is_null());
        let fits = result
            .as_ref()
            .is_none_or(|r| serde_json::to_vec(r).map_or(0, |b| b.len()) <= MAX_RESULT_BYTES);
        Self {
            job_id: job.id,
            queue: job.queue.clone(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at,
            request_id: job.request_id.clone(),
            error: job
                .last_error
                .as_deref()
                .filter(|_| job.state == JobState::Dead)
                .map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
            result: result.filter(|_| fits),
            result_omitted: !fits,
        }
    }
}

/// The `job_webhook` job: one message to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobWebhook {
    /// The tenant (the job's and the endpoint's).
    pub project_id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// What happened.
    pub event: JobEvent,
    /// The job as it finished.
    pub job: JobSnapshot,
}

impl JobWebhook {
    /// The message's `webhook-id`: the same on every attempt, and for every endpoint told of
    /// this finish, so a receiver can drop a duplicate.
    pub fn message_id(&self) -> String {
        format!(
            "msg_{}_{}_{}",
            self.job.job_id.simple(),
            match self.event {
                JobEvent::Completed => "completed",
                JobEvent::Dead => "dead",
            },
            self.job.finished_at.timestamp_millis()
        )
    }

    /// The body every endpoint receives.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.event.as_str(),
            "timestamp": self.job.finished_at,
            "data": {
                "projectId": self.project_id,
                "state": match self.event {
                    JobEvent::Completed => "completed",
                    JobEvent::Dead => "dead",
                },
                "job": self.job,
            }
        })
    }
}

impl Job for JobWebhook {
    const QUEUE: &'static str = "job_webhook";
    // the webhook channel's policy: receivers may be down for a while
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 12,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(3600),
        timeout: Duration::from_secs(60),
        concurrency: 32,
        prefetch: 8,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

/// The `job_webhook` jobs for jobs that just finished: one per (job, subscribed endpoint), for
/// the jobs of `finished` that completed or went dead, have a project and are not themselves
/// `job_webhook` jobs. `subscribers`: the projects' enabled endpoints that take some job
/// message. Each is keyed by its message and endpoint, so a second enqueue adds no job.
///
/// `room`: how many more open jobs each project may have (its quota less its open jobs);
/// `None`: no limit (tests). With a room, a project missing from it has none (it subscribed
/// after the room was read). Messages past a project's room are not made: they are returned as
/// dropped, for the caller to count and log, as a project at its quota gets no new job by any
/// other path either.
pub fn lifecycle_jobs(
    finished: &[&JobRecord],
    subscribers: &[(Uuid, Endpoint)],
    room: Option<&HashMap<Uuid, u64>>,
) -> Result<Lifecycle, serde_json::Error> {
    let mut made = Lifecycle::default();
    let mut left = room.cloned();
    for job in finished {
        let (Some(project), Some(event)) = (job.project_id, JobEvent::of(job.state)) else {
            continue;
        };
        if job.queue == JobWebhook::QUEUE {
            continue;
        }
        let finished_at = job.finished_at.unwrap_or_else(Utc::now);
        for (_, endpoint) in subscribers
            .iter()
            .filter(|(p, e)| *p == project && e.takes_job(event.as_str(), &job.queue))
        {
            if let Some(left) = left.as_mut() {
                let left = left.entry(project).or_default();
                if *left == 0 {
                    *made.dropped.entry(project).or_default() += 1;
                    continue;
                }
                *left -= 1;
            }
            let message = JobWebhook {
                project_id: project,
                endpoint_id: endpoint.endpoint_id,
                event,
                job: JobSnapshot::of(job, finished_at),
            };
            let opts = EnqueueOptions {
                idempotency_key: Some(format!(
                    "job_webhook:{}:{}",
                    message.message_id(),
                    endpoint.endpoint_id
                )),
                request_id: job.request_id.clone(),
                ..EnqueueOptions::default()
            };
            made.jobs.push(message.to_new_job(opts)?);
        }
    }
    Ok(made)
}

/// What [`lifecycle_jobs`] made.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// The messages' jobs.
    pub jobs: Vec<NewJob>,
    /// Messages not made, per project at its open-jobs quota.
    pub dropped: HashMap<Uuid, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: JobState, queue: &str, project: Option<Uuid>) -> JobRecord {
        JobRecord {
            id: Uuid::now_v7(),
            kind: queue.into(),
            queue: queue.into(),
            state,
            attempts: 1,
            max_attempts: 5,
            priority: 0,
            run_at: None,
            errors: vec![],
            last_error: Some("boom".into()),
            payload: None,
            progress: None,
            result: Some(serde_json::json!({"ok": true})),
            project_id: project,
            request_id: None,
            worker: None,
            created_at: None,
            started_at: None,
            finished_at: Some(Utc::now()),
        }
    }

    fn endpoint(events: &[&str], queues: &[&str]) -> Endpoint {
        Endpoint {
            endpoint_id: Uuid::now_v7(),
            url: "https://example.com/hook".into(),
            description: String::new(),
            event_types: vec![],
            enabled: true,
            notifications: true,
            job_events: events.iter().map(|s| (*s).to_owned()).collect(),
            job_queues: queues.iter().map(|s| (*s).to_owned()).collect(),
            secret_sealed: String::new(),
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            failing_since: None,
            last_success_at: None,
            last_failure_at: None,
            disabled_at: None,
            disabled_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn only_subscribed_finishes_of_the_endpoints_project_make_messages() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let subs = vec![
            (a, endpoint(&["job.dead"], &[])),
            (a, endpoint(&["job.completed", "job.dead"], &["ping"])),
            (b, endpoint(&["job.completed"], &[])),
        ];
        let jobs = [
            record(JobState::Dead, "ping", Some(a)),        // both of a's
            record(JobState::Completed, "ping", Some(a)),   // a's second
            record(JobState::Completed, "bulk_jobs", Some(a)), // none (queue filter, event filter)
            record(JobState::Cancelled, "ping", Some(b)),   // none: cancelled
            record(JobState::Completed, "job_webhook", Some(b)), // none: would feed itself
            record(JobState::Dead, "ping", None),           // none: no project
        ];
        let refs: Vec<&JobRecord> = jobs.iter().collect();
        let made = lifecycle_jobs(&refs, &subs, None).unwrap().jobs;
        let messages: Vec<JobWebhook> = made
            .iter()
            .map(|j| serde_json::from_value(j.payload.clone()).unwrap())
            .collect();
        let seen: Vec<(Uuid, Uuid, JobEvent)> = messages
            .iter()
            .map(|m| (m.job.job_id, m.endpoint_id, m.event))
            .collect();
        assert_eq!(
            seen,
            vec![
                (jobs[0].id, subs[0].1.endpoint_id, JobEvent::Dead),
                (jobs[0].id, subs[1].1.endpoint_id, JobEvent::Dead),
                (jobs[1].id, subs[1].1.endpoint_id, JobEvent::Completed),
            ]
        );
        assert!(made.iter().all(|j| j.project_id == a && j.queue == "job_webhook"));
        assert_eq!(messages[0].job.error.as_deref(), Some("boom"));
        assert_eq!(messages[2].job.error, None, "a completed job carries no error");
        assert_eq!(messages[2].job.result, Some(serde_json::json!({"ok": true})));
        // one message id per finish, whichever endpoint; idempotency keys per endpoint
        assert_eq!(messages[0].message_id(), messages[1].message_id());
        assert_ne!(made[0].idempotency_key, made[1].idempotency_key);
    }

    #[test]
    fn a_project_at_its_quota_gets_no_more_messages_and_they_are_counted() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let subs = vec![
            (a, endpoint(&["job.completed"], &[])),
            (a, endpoint(&["job.completed"], &[])),
            (b, endpoint(&["job.completed"], &[])),
        ];
        let jobs: Vec<JobRecord> = (0..3)
            .map(|_| record(JobState::Completed, "ping", Some(a)))
            .chain([record(JobState::Completed, "ping", Some(b))])
            .collect();
        let refs: Vec<&JobRecord> = jobs.iter().collect();
        // a may open 4 more jobs: 4 of its 6 messages; b, 5
        let room = HashMap::from([(a, 4), (b, 5)]);
        let made = lifecycle_jobs(&refs, &subs, Some(&room)).unwrap();
        assert_eq!(made.jobs.iter().filter(|j| j.project_id == a).count(), 4);
        assert_eq!(made.jobs.iter().filter(|j| j.project_id == b).count(), 1);
        assert_eq!(made.dropped, HashMap::from([(a, 2)]));
        // a project missing from the room (it subscribed after it was read) has none
        let none = lifecycle_jobs(&refs, &subs, Some(&HashMap::from([(a, 0)]))).unwrap();
        assert!(none.jobs.is_empty());
        assert_eq!(none.dropped, HashMap::from([(a, 6), (b, 1)]));
    }

    #[test]
    fn a_large_result_is_left_out_and_said_so() {
        let mut job = record(JobState::Completed, "ping", Some(Uuid::now_v7()));
        job.result = Some(serde_json::json!({"blob": "x".repeat(MAX_RESULT_BYTES)}));
        let snap = JobSnapshot::of(&job, Utc::now());
        assert_eq!(snap.result, None);
        assert!(snap.result_omitted);
        let body = serde_json::to_value(&snap).unwrap();
        assert_eq!(body["resultOmitted"], true);
    }
}
