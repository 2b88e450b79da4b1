-- The scheduler (shared::schedule, the worker's services::scheduler) and the sweeps it runs.

-- One row per declared schedule: its pause (held by every worker, across restarts) and the
-- fleet's cursor. Every worker computes ticks from `last_tick_at` under this row's lock, so a
-- tick is accounted for (fired, skipped or missed) once, whichever worker sees it first.
CREATE TABLE schedules (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    paused_at timestamptz,
    paused_by text,
    -- the latest tick accounted for: ticks after it are still to come (or were missed)
    last_tick_at timestamptz NOT NULL DEFAULT now(),
    -- the latest run (a tick's or a manual trigger's)
    last_fired_at timestamptz,
    last_job_id uuid,
    -- ticks no worker fired in time (downtime), as comet_schedule_missed_total counts them
    missed_total bigint NOT NULL DEFAULT 0 CHECK (missed_total >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER schedules_updated_at BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One row per run, written in the transaction that puts the run's job in the outbox. The unique
-- (schedule, tick_at) is what makes a tick enqueue one job however many workers race for it;
-- a manual trigger has no tick (NULL, which never conflicts).
CREATE TABLE schedule_runs (
    job_id uuid PRIMARY KEY,
    schedule text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    tick_at timestamptz,
    cause text NOT NULL CHECK (cause IN ('tick', 'manual')),
    -- ticks missed before this run (catch-up `once` carries them in its job)
    missed bigint NOT NULL DEFAULT 0 CHECK (missed >= 0),
    fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT schedule_runs_tick_key UNIQUE (schedule, tick_at),
    CHECK ((cause = 'tick') = (tick_at IS NOT NULL))
);
CREATE INDEX schedule_runs_schedule_fired ON schedule_runs (schedule, fired_at DESC);
CREATE INDEX schedule_runs_fired ON schedule_runs (fired_at);

-- Invitations expire: the expire_invitations sweep marks pending ones past their expiry.
ALTER TABLE user_invitations
    ADD COLUMN status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'EXPIRED')),
    ADD COLUMN expired_at timestamptz,
    ADD CONSTRAINT user_invitations_expired_shape CHECK ((status = 'EXPIRED') = (expired_at IS NOT NULL));
CREATE INDEX user_invitations_pending_expiry ON user_invitations (expires_at)
    WHERE status = 'PENDING';

-- API keys past their expiry are disabled (sweep_api_keys); the previous secret of a rotation
-- is erased once its grace period is over.
ALTER TABLE api_keys
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text,
    ADD CONSTRAINT api_keys_disabled_shape CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL));
CREATE INDEX api_keys_to_disable ON api_keys (expires_at)
    WHERE disabled_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX api_keys_grace ON api_keys (previous_valid_until)
    WHERE previous_valid_until IS NOT NULL;

-- Retention (apply_retention) deletes by age across projects, in small batches.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX notifications_created ON notifications (created_at);

-- Scheduled sweeps are platform-wide jobs: their project id is the nil id, which is no
-- project's row. The outbox keeps the id (the quota counts a project's rows by it) without
-- the foreign key; projects are only ever soft-deleted, so its cascade never ran.
ALTER TABLE job_outbox DROP CONSTRAINT job_outbox_project_id_fkey;
