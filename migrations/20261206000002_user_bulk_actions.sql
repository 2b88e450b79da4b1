-- Bulk actions on users (`POST /api/v1/users/bulk`, the `bulk_users` job): deactivate,
-- reactivate, add or remove a role, or delete (soft: deactivated and hidden from lists) a set of
-- users given by ids or by the user list's filter. The action row is the job's checkpoint: the
-- users are taken in id order, a chunk at a time, each chunk committing its changes, its
-- results and the last id it reached.

ALTER TABLE users ADD COLUMN deleted_at timestamptz;

CREATE TABLE user_bulk_actions (
    action_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    created_by uuid,
    job_id uuid NOT NULL,
    action text NOT NULL
        CHECK (action IN ('deactivate', 'reactivate', 'add-role', 'remove-role', 'delete')),
    role_id uuid,
    -- {"ids": [...]} or {"filter": {"status", "roleId", "search"}}
    targets jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    total bigint NOT NULL DEFAULT 0,
    processed bigint NOT NULL DEFAULT 0,
    succeeded bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    -- the checkpoint: users with an id up to this one are done
    last_user_id uuid,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX user_bulk_actions_project_created ON user_bulk_actions (project_id, created_at DESC);

CREATE TABLE user_bulk_results (
    action_id uuid NOT NULL REFERENCES user_bulk_actions (action_id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- done | skipped | failed
    outcome text NOT NULL CHECK (outcome IN ('done', 'skipped', 'failed')),
    message text,
    PRIMARY KEY (action_id, user_id)
);
