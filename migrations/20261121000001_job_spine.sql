-- The job spine: tenants and the transactional outbox.

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE projects (
    project_id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Jobs written in the same transaction as the change they follow; a relay moves them to Redis.
CREATE TABLE job_outbox (
    job_id uuid PRIMARY KEY,
    queue text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    run_at timestamptz,
    priority smallint NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL CHECK (max_attempts > 0),
    idempotency_key text,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_outbox_created_at ON job_outbox (created_at, job_id);
CREATE INDEX job_outbox_project ON job_outbox (project_id);
