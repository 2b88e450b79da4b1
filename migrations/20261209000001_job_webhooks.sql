-- Job lifecycle webhooks (issue 14): a project subscribes its webhook endpoints to
-- `job.completed` and `job.dead` of its own jobs. The job archiver, in the transaction that
-- archives a finished job, enqueues one `job_webhook` job per subscribed endpoint (opt-in: an
-- endpoint subscribes to nothing until `job_events` is set).
--
-- `notifications` lets an endpoint take job messages only: false and it receives no
-- notifications, whatever `event_types` says.

ALTER TABLE webhook_endpoints
    ADD COLUMN job_events text[] NOT NULL DEFAULT '{}'
        CHECK (job_events <@ ARRAY['job.completed', 'job.dead']::text[]),
    -- empty: every queue of the project (but `job_webhook`, which would feed itself)
    ADD COLUMN job_queues text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(job_queues) <= 32),
    ADD COLUMN notifications boolean NOT NULL DEFAULT true;

-- the archiver's look-up, per batch: the enabled endpoints of these projects that subscribe
CREATE INDEX webhook_endpoints_job_subscribers ON webhook_endpoints (project_id)
    WHERE enabled AND cardinality(job_events) > 0;
