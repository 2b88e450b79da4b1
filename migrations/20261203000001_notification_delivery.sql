-- Notification delivery (issue 10): notification kinds (a rule's match, a suppression digest, a
-- system notice), per-channel delivery attempts, and users' channel preferences. The webhook
-- endpoints and the in-app inbox/stream tables come in their own migrations.

-- A notification is a rule's match on an event (`rule`), the digest of a suppressed rule's
-- window (`digest`: no single event), or a notice from Comet itself (`system`: no rule, e.g. a
-- webhook endpoint disabled). A suppressed match is stored (visible in the event's detail) but
-- gets no recipients and no delivery. `dedupe_key` makes a digest or a notice exist once
-- however often the job that writes it runs.
ALTER TABLE notifications
    ADD COLUMN kind text NOT NULL DEFAULT 'rule' CHECK (kind IN ('rule', 'digest', 'system')),
    ADD COLUMN suppressed boolean NOT NULL DEFAULT false,
    ADD COLUMN data jsonb,
    ADD COLUMN dedupe_key text,
    ALTER COLUMN event_id DROP NOT NULL,
    ALTER COLUMN rule_id DROP NOT NULL,
    ADD CONSTRAINT notifications_kind_shape CHECK (
        (kind = 'rule' AND event_id IS NOT NULL AND rule_id IS NOT NULL)
        OR (kind = 'digest' AND rule_id IS NOT NULL AND dedupe_key IS NOT NULL)
        OR (kind = 'system' AND dedupe_key IS NOT NULL)
    );
CREATE UNIQUE INDEX notifications_dedupe ON notifications (project_id, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
-- a suppressed match records its suppression period (`data.period`, Unix ms); the period's
-- digest counts them
CREATE INDEX notifications_suppressed ON notifications (project_id, rule_id, ((data ->> 'period')))
    WHERE suppressed;

-- One row per (job attempt, target): what one `deliver_notification` attempt did for one
-- recipient (email, in-app) or endpoint (webhook). A target with an `ok`, `skipped` or
-- `permanent` row is done, and so is one with `deferred` for the job that deferred it: a retry
-- of the job does not deliver to it again.
CREATE TABLE delivery_attempts (
    project_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    channel text NOT NULL CHECK (channel IN ('inApp', 'email', 'webhook')),
    -- a user id (inApp, email) or a webhook endpoint id
    target_id uuid NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 1),
    job_id uuid NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    -- ok: delivered; retry: failed, will be retried; permanent: failed for good;
    -- skipped: not sent by choice (preferences, no address, endpoint disabled);
    -- deferred: held by the recipient's quiet hours, handed to a job that runs when they end
    outcome text NOT NULL CHECK (outcome IN ('ok', 'retry', 'permanent', 'skipped', 'deferred')),
    http_status integer,
    smtp_reply text,
    error text,
    PRIMARY KEY (project_id, notification_id, channel, target_id, attempt),
    FOREIGN KEY (project_id, notification_id)
        REFERENCES notifications (project_id, notification_id) ON DELETE CASCADE
);

-- A user's channels: on/off per channel, and a window in which email waits (quiet hours, in
-- the user's time zone; the window may cross midnight). No row = every channel on, no quiet
-- hours.
CREATE TABLE notification_preferences (
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    in_app boolean NOT NULL DEFAULT true,
    email boolean NOT NULL DEFAULT true,
    quiet_start time,
    quiet_end time,
    time_zone text NOT NULL DEFAULT 'UTC',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE,
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);
