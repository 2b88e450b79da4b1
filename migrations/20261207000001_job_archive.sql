-- The job archive: finished jobs (completed, dead, cancelled) copied from Redis in batches by the
-- workers' archiver, so that operators can search every finished job (`GET /api/v1/jobs`) while
-- Redis keeps only the hot path (open jobs, dead jobs for retry, the most recent completed ones).
-- A row follows its job: a dead job retried is deleted here until it finishes again.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE job_archive (
    job_id uuid PRIMARY KEY,
    queue text NOT NULL,
    kind text NOT NULL,
    -- No foreign key: the archive is a record of what ran, kept for its retention even for a
    -- project deleted since, and the archiver never blocks on a tenant's row.
    project_id uuid,
    state text NOT NULL CHECK (state IN ('completed', 'dead', 'cancelled')),
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    payload jsonb,
    result jsonb,
    progress jsonb,
    errors jsonb NOT NULL DEFAULT '[]',
    last_error text,
    -- The last error with ids, numbers and quoted values masked: dead jobs grouped by cause.
    fingerprint text,
    request_id text,
    worker text,
    run_at timestamptz,
    created_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);

-- Newest first, per state / per queue and state / per project and state: every list page is a
-- keyset scan of one of these.
CREATE INDEX job_archive_state ON job_archive (state, finished_at DESC, job_id DESC);
CREATE INDEX job_archive_queue_state ON job_archive (queue, state, finished_at DESC, job_id DESC);
CREATE INDEX job_archive_project_state
    ON job_archive (project_id, state, finished_at DESC, job_id DESC);
-- Error text search (`error=`): a trigram index serves ILIKE '%text%'.
CREATE INDEX job_archive_error ON job_archive USING gin (last_error gin_trgm_ops)
    WHERE last_error IS NOT NULL;
-- Failure groups: dead jobs by fingerprint.
CREATE INDEX job_archive_fingerprint ON job_archive (fingerprint, finished_at DESC)
    WHERE state = 'dead';
