-- Dead jobs grouped into alerts: per (project, queue, error fingerprint) and window of
-- `JOB_DEAD_ALERT_WINDOW_SECS`, how many jobs went dead, counted by the archiver as it copies
-- them (each death once: a dead job archived again after a crash is not counted twice). Once a
-- window has closed, one `job.dead` event carrying the count goes into the project's event
-- pipeline (its rules decide who is told) and `event_id` records it: a thousand identical
-- failures make one alert, not a thousand.

CREATE TABLE job_dead_alerts (
    project_id uuid NOT NULL,
    queue text NOT NULL,
    fingerprint text NOT NULL,
    window_start timestamptz NOT NULL,
    window_seconds integer NOT NULL CHECK (window_seconds > 0),
    dead integer NOT NULL CHECK (dead > 0),
    first_job_id uuid NOT NULL,
    last_job_id uuid NOT NULL,
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    -- the error of the window's first dead job, as written (the fingerprint masks it)
    sample_error text NOT NULL,
    -- the `job.dead` event once raised
    event_id uuid,
    PRIMARY KEY (project_id, queue, fingerprint, window_start)
);

-- The windows still to raise, oldest first.
CREATE INDEX job_dead_alerts_pending ON job_dead_alerts (window_start) WHERE event_id IS NULL;
